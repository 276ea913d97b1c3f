//! Running hooks bounded by their own timeout and the stop's deadlines.

use std::future::{Future, pending};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{Either, join_all};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::Runner;
use crate::control::{Control, Escalation};
use crate::deadline::{Deadlines, after};
use crate::errors::{chain, panic_message};
use crate::hook::HookContext;
use crate::outcome::HookResult;
use crate::phase::Phase;
use crate::plan::PlannedHook;
use crate::signals::Signal;

/// How a hook's run is bounded beyond its own timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bound {
    /// Before the exit side (startup included): once a stop is triggered, the drain deadline;
    /// at any time, a second signal.
    Drain,
    /// After `wait`: the end of the budget.
    Exit,
}

/// Why a batch of hooks does not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    /// It runs.
    No,
    /// Its turn came too late or was overtaken (deadline, escalation, failed startup).
    Skipped,
    /// An exit-side hook whose turn came after the end of the budget: a failure.
    OutOfBudget,
}

impl Runner<'_> {
    fn bound(&self, index: usize) -> Bound {
        if index >= self.plan.exit_side {
            Bound::Exit
        } else {
            Bound::Drain
        }
    }

    pub(super) async fn run_hooks(&mut self, index: usize) {
        let planned = &self.plan.phases[index];
        if planned.hooks.is_empty() {
            return;
        }
        let bound = self.bound(index);
        let first = self.plan.first_hook(index);
        let mut at = 0;
        while at < planned.hooks.len() {
            // One hook at a time, or a whole dependency level when the phase is concurrent.
            let end = if planned.concurrent {
                let level = planned.hooks[at].level;
                at + planned.hooks[at..]
                    .iter()
                    .take_while(|h| h.level == level)
                    .count()
            } else {
                at + 1
            };
            let batch = &planned.hooks[at..end];
            let control = self.control();
            let skip = match bound {
                _ if self.startup_failed && index < self.plan.running => Skip::Skipped,
                Bound::Drain if self.cut_off() => Skip::Skipped,
                Bound::Exit if control.deadlines.is_some_and(|d| Instant::now() >= d.end()) => {
                    Skip::OutOfBudget
                }
                _ => Skip::No,
            };
            let results: Vec<(HookResult, Duration, Option<String>)> = if skip != Skip::No {
                if skip == Skip::OutOfBudget {
                    for hook in batch {
                        let what = format!(
                            "hook `{}` ({}) never ran: the budget was used up before its turn",
                            hook.name, planned.phase
                        );
                        tracing::error!(target: "lifecycle_hooks", hook = %hook.name, "{what}");
                        self.shared.failures.lock().push(what);
                    }
                }
                batch
                    .iter()
                    .map(|_| (HookResult::Skipped, Duration::ZERO, None))
                    .collect()
            } else {
                let deadlines = control.deadlines;
                let mut runs = batch.iter().map(|hook| {
                    let unstarted = hook
                        .teardown_of
                        .as_ref()
                        .is_some_and(|startup| !self.started.contains(startup));
                    if unstarted {
                        Either::Left(async { (HookResult::Skipped, Duration::ZERO, None) })
                    } else {
                        Either::Right(self.run_hook(&planned.phase, hook, bound, deadlines))
                    }
                });
                if batch.len() == 1 {
                    // One hook at a time (the usual case): no `join_all` bookkeeping.
                    let run = runs.next().expect("a batch of one");
                    vec![run.await]
                } else {
                    join_all(runs).await
                }
            };
            for (offset, (hook, (result, elapsed, note))) in batch.iter().zip(results).enumerate() {
                if index < self.plan.running {
                    if result == HookResult::Ok {
                        self.started.insert(hook.name.clone());
                    } else if result != HookResult::Skipped {
                        self.startup_failed = true;
                    }
                }
                self.record(
                    first + at + offset,
                    &planned.phase,
                    hook,
                    result,
                    elapsed,
                    note,
                );
            }
            at = end;
        }
    }

    fn run_hook(
        &self,
        phase: &Phase,
        hook: &PlannedHook,
        bound: Bound,
        deadlines: Option<Deadlines>,
    ) -> impl Future<Output = (HookResult, Duration, Option<String>)> + use<> {
        let start = Instant::now();
        let own_deadline = hook.timeout.map(|t| after(start, t));
        let bound_deadline = deadlines.map(|d| match bound {
            Bound::Drain => d.drain(),
            Bound::Exit => d.end(),
        });
        let deadline = match (own_deadline, bound_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ctx = HookContext {
            phase: phase.clone(),
            name: hook.name.clone(),
            deadline,
            handle: self.handle.clone(),
            note: Default::default(),
        };
        let note = std::sync::Arc::clone(&ctx.note);
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| hook.hook.run(ctx)));
        let interrupted = interrupted_by(self.shared, bound, deadlines);
        async move {
            let result = match started {
                Err(panic) => HookResult::Panicked(panic_message(&*panic)),
                Ok(fut) => tokio::select! {
                    biased;
                    result = AssertUnwindSafe(fut).catch_unwind() => match result {
                        Ok(Ok(())) => HookResult::Ok,
                        Ok(Err(error)) => HookResult::Error(chain(&*error)),
                        Err(panic) => HookResult::Panicked(panic_message(&*panic)),
                    },
                    () = sleep_until_some(own_deadline) => HookResult::TimedOut,
                    result = interrupted => result,
                },
            };
            let note = note.lock().take();
            (result, start.elapsed(), note)
        }
    }
}

/// Completes when a hook (or a wait) with this bound must be cut off, with the result to report:
/// `Abandoned` on escalation, `TimedOut` at the deadline. `deadlines` are the stop's, if it had
/// begun when the hook started; otherwise they are awaited from the control channel.
pub(super) fn interrupted_by(
    shared: &crate::handle::Shared,
    bound: Bound,
    deadlines: Option<Deadlines>,
) -> impl Future<Output = HookResult> + use<> {
    let mut control = shared.control.subscribe();
    let mut escalation = control.clone();
    async move {
        let deadline = async {
            let deadlines = match deadlines {
                Some(deadlines) => deadlines,
                None => wait_control(&mut control, |c| c.deadlines).await,
            };
            sleep_until(match bound {
                Bound::Drain => deadlines.drain(),
                Bound::Exit => deadlines.end(),
            })
            .await;
        };
        match bound {
            Bound::Drain => tokio::select! {
                () = deadline => HookResult::TimedOut,
                () = wait_control(&mut escalation, |c| c.escalated().then_some(())) => {
                    HookResult::Abandoned
                }
            },
            Bound::Exit => {
                deadline.await;
                HookResult::TimedOut
            }
        }
    }
}

/// Waits until `read` finds something in the control state and returns it; pends forever if the
/// lifecycle is gone (nothing can change any more). The value is copied out under one borrow.
pub(super) async fn wait_control<T>(
    control: &mut watch::Receiver<Control>,
    read: impl Fn(&Control) -> Option<T>,
) -> T {
    let found = match control.wait_for(|c| read(c).is_some()).await {
        Ok(seen) => read(&seen),
        Err(_) => None,
    };
    match found {
        Some(value) => value,
        None => pending().await,
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => pending().await,
    }
}

/// Completes with the signal once a third terminating signal asks to end at once.
pub(crate) async fn immediate(shared: &crate::handle::Shared) -> Signal {
    let mut control = shared.control.subscribe();
    wait_control(&mut control, |c| match c.escalation {
        Escalation::Immediate(signal) => Some(signal),
        _ => None,
    })
    .await
}
