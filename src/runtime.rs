//! Running the phase graph. See [`Lifecycle::run`].
//!
//! # Invariants
//!
//! 1. Phases run in the order of the plan, each at most once; a phase that does not run is
//!    reported as skipped, and every hook appears in the outcome exactly once.
//! 2. No phase after `wait` begins while tracked work is in flight, unless that work was cancelled
//!    (drain deadline or escalation) and its grace has passed: exit hooks run after all work.
//! 3. Exit-side phases (after `wait`) always run, even after failures, timeouts or escalation;
//!    only a third signal ends the run before them.
//! 4. Every wait is a notification (task tracker, cancellation token, `watch` channel or timer at
//!    a deadline): nothing polls.
//! 5. The budget starts at the trigger: the drain deadline is `trigger + budget - reserve`, the
//!    end of the exit phase is `trigger + budget`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::{Future, pending};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::join_all;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::builder::Builder;
use crate::control::{Control, Escalation};
use crate::errors::{chain, panic_message};
use crate::event::Event;
use crate::handle::{LifecycleHandle, Shared};
use crate::hook::{Hook, HookContext, HookResult};
use crate::outcome::{HookReport, Outcome, PhaseReport, PhaseStatus, Reason};
use crate::phase::{Builtin, Phase};
use crate::signals::Signal;

/// A validated phase graph with its hooks, in run order.
pub(crate) struct Plan {
    pub(crate) phases: Vec<PlannedPhase>,
    /// Index of `running`: phases before it are the startup side.
    pub(crate) running: usize,
    /// Index of the first phase after `wait`: from here on phases always run.
    pub(crate) exit_side: usize,
}

pub(crate) struct PlannedPhase {
    pub(crate) phase: Phase,
    pub(crate) builtin: Option<Builtin>,
    pub(crate) concurrent: bool,
    pub(crate) hooks: Vec<PlannedHook>,
}

pub(crate) struct PlannedHook {
    pub(crate) name: Cow<'static, str>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) teardown_of: Option<Cow<'static, str>>,
    pub(crate) hook: Arc<dyn Hook>,
    pub(crate) on_skipped: Option<crate::hook::SkippedCallback>,
    pub(crate) level: usize,
}

/// A service's lifecycle: a validated phase graph, ready to [`run`](Lifecycle::run).
///
/// ```
/// use std::time::Duration;
/// use lifecycle_hooks::{Lifecycle, Signal, Signals};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = Lifecycle::builder()
///     .signals(Signals::none())
///     .on_shutdown("announce", |_ctx| async { println!("shutting down") })
///     .on_exit("close_producer", |_ctx| async { Ok::<(), std::io::Error>(()) })
///     .build()
///     .expect("a valid lifecycle graph");
/// let handle = lifecycle.handle();
/// handle.spawn({
///     let handle = handle.clone();
///     async move { handle.draining().await }
/// });
/// handle.trigger(Signal::Usr2);
/// let outcome = lifecycle.run().await;
/// assert_eq!(outcome.exit_code(), 4); // a clean restart
/// # }
/// ```
pub struct Lifecycle {
    handle: LifecycleHandle,
    plan: Option<Plan>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Lifecycle {
    /// A builder with the defaults: 25 s budget, default signals, no hooks.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn new(handle: LifecycleHandle, plan: Plan) -> Self {
        Lifecycle {
            handle,
            plan: Some(plan),
        }
    }

    /// A handle to this lifecycle; clone it freely.
    pub fn handle(&self) -> LifecycleHandle {
        self.handle.clone()
    }

    /// Runs the whole graph: startup, running until a trigger, then stop intake, drain,
    /// shutdown hooks, wait, exit hooks. Returns the [`Outcome`].
    ///
    /// Orders it guarantees: exit hooks start only after all tracked work has ended or was
    /// cancelled at the drain deadline; shutdown hooks run while work may still be in flight;
    /// every exit-side hook runs even if earlier hooks failed or the stop was escalated.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future abandons the hook that is running and leaves the
    /// remaining hooks unrun. Let it finish; stop it with a trigger.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime. Hook panics are caught and reported.
    pub async fn run(mut self) -> Outcome {
        let plan = self.plan.take().expect("run consumes the lifecycle");
        let shared = &self.handle.shared;
        let listener = match shared.config.signals.listen(self.handle.clone()) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(target: "lifecycle_hooks", %error, "could not install signal handlers");
                None
            }
        };
        let watchdog = shared
            .config
            .notifier
            .as_ref()
            .and_then(|n| n.watchdog)
            .map(|period| {
                let handle = self.handle.clone();
                // Fed from the runtime itself: if the runtime stalls, systemd stops hearing it.
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    loop {
                        tick.tick().await;
                        if let Some(notifier) = &handle.shared.config.notifier {
                            notifier.send("WATCHDOG=1");
                        }
                    }
                })
            });
        let mut runner = Runner::new(&self.handle, &plan);
        let third = tokio::select! {
            biased;
            signal = immediate(shared) => Some(signal),
            () = runner.run_graph() => None,
        };
        for task in [listener, watchdog].into_iter().flatten() {
            task.abort();
        }
        runner.finish(third)
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if self.plan.is_some() {
            let shared = &self.handle.shared;
            tracing::warn!(
                target: "lifecycle_hooks",
                in_flight = shared.tracker.len(),
                "lifecycle dropped without running: tracked work is cancelled and no hook runs"
            );
            shared.end_intake_and_drain();
            shared.cancel_work();
            shared.tracker.close();
        }
    }
}

/// How a hook's run is bounded beyond its own timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    /// Before the stop: only a second signal cuts it short.
    Escalation,
    /// Between the trigger and `wait`: the drain deadline, or a second signal.
    Drain,
    /// After `wait`: the end of the budget.
    Exit,
}

struct Runner<'a> {
    handle: &'a LifecycleHandle,
    shared: &'a Shared,
    plan: &'a Plan,
    /// Hook reports in the order they were made.
    hooks: Vec<HookReport>,
    /// Which hooks have a report, by their index in plan order.
    reported: Vec<bool>,
    phases: Vec<Option<PhaseReport>>,
    current: Option<(usize, Instant)>,
    /// Startup hooks that succeeded, for teardown after a failed startup.
    started: HashSet<Cow<'static, str>>,
    startup_failed: bool,
    /// Whether the trigger and quiet have been announced (logged and emitted).
    announced: bool,
    quiet_announced: bool,
    settled: bool,
    forced: bool,
    cancelled_work: usize,
    abandoned_work: usize,
}

impl<'a> Runner<'a> {
    fn new(handle: &'a LifecycleHandle, plan: &'a Plan) -> Self {
        let hook_count = plan.phases.iter().map(|p| p.hooks.len()).sum();
        Runner {
            handle,
            shared: &handle.shared,
            plan,
            hooks: Vec::with_capacity(hook_count),
            reported: vec![false; hook_count],
            phases: vec![None; plan.phases.len()],
            current: None,
            started: HashSet::new(),
            startup_failed: false,
            announced: false,
            quiet_announced: false,
            settled: false,
            forced: false,
            cancelled_work: 0,
            abandoned_work: 0,
        }
    }

    async fn run_graph(&mut self) {
        let plan = self.plan;
        for index in 0..plan.running {
            if self.shared.control.borrow().escalated() || self.startup_failed {
                self.skip_phase(index);
            } else {
                self.run_phase(index).await;
            }
        }
        let stop_before_ready = self.shared.control.borrow().reason.is_some();
        if self.startup_failed || self.shared.control.borrow().escalated() {
            if self.startup_failed {
                self.shared.failures.lock().push("startup failed".into());
                self.handle.request(Reason::Failure);
            }
            self.announce();
            for index in plan.running..plan.exit_side {
                self.skip_phase(index);
            }
        } else {
            if stop_before_ready {
                self.announce();
                self.skip_phase(plan.running);
            } else {
                self.run_phase(plan.running).await;
            }
            for index in plan.running + 1..plan.exit_side {
                if self.cut_off() {
                    self.skip_phase(index);
                } else {
                    self.run_phase(index).await;
                }
            }
        }
        self.settle().await;
        for index in plan.exit_side..plan.phases.len() {
            self.run_phase(index).await;
        }
    }

    /// Logs and emits the trigger (and quiet) once, in order with the phases.
    fn announce(&mut self) {
        let control = self.shared.control.borrow().clone();
        if control.quiet && !self.quiet_announced {
            self.quiet_announced = true;
            tracing::info!(target: "lifecycle_hooks", "quiet: intake stops, still running");
            self.shared.events.emit(Event::Quiet);
        }
        if let (Some(reason), false) = (control.reason, self.announced) {
            self.announced = true;
            tracing::info!(
                target: "lifecycle_hooks",
                %reason,
                signal = control.signal.map(Signal::name),
                budget_ms = self.shared.config.budget.as_millis() as u64,
                "stopping"
            );
            self.shared.events.emit(Event::Triggered {
                reason,
                signal: control.signal,
            });
            self.extend_timeout();
        }
    }

    fn bound(&self, index: usize) -> Bound {
        if index >= self.plan.exit_side {
            Bound::Exit
        } else if index > self.plan.running {
            Bound::Drain
        } else {
            Bound::Escalation
        }
    }

    /// Whether the drain is over: a second signal came, or the drain deadline passed.
    fn cut_off(&self) -> bool {
        let control = self.shared.control.borrow();
        control.escalated() || self.drain_deadline().is_some_and(|d| Instant::now() >= d)
    }

    fn drain_deadline(&self) -> Option<Instant> {
        let config = &self.shared.config;
        let stop_at = self.shared.control.borrow().stop_at?;
        Some(stop_at + (config.budget - config.reserve))
    }

    fn end_of_budget(&self) -> Option<Instant> {
        let stop_at = self.shared.control.borrow().stop_at?;
        Some(stop_at + self.shared.config.budget)
    }

    fn enter(&mut self, index: usize) {
        let phase = &self.plan.phases[index].phase;
        self.current = Some((index, Instant::now()));
        self.shared.phase.send_replace(phase.clone());
        tracing::info!(target: "lifecycle_hooks", %phase, in_flight = self.shared.tracker.len(), "phase");
        self.notify(&format!("STATUS=phase {phase}"));
        self.shared.events.emit(Event::PhaseStarted {
            phase: phase.clone(),
        });
    }

    /// Tells systemd the stop needs the rest of the budget (plus a second to exit).
    fn extend_timeout(&self) {
        if let (Some(notifier), Some(end)) = (&self.shared.config.notifier, self.end_of_budget()) {
            notifier.extend_timeout(
                end.saturating_duration_since(Instant::now()) + Duration::from_secs(1),
            );
        }
    }

    fn notify(&self, state: &str) {
        if let Some(notifier) = &self.shared.config.notifier {
            notifier.send(state);
        }
    }

    fn skip_phase(&mut self, index: usize) {
        let planned = &self.plan.phases[index];
        tracing::info!(target: "lifecycle_hooks", phase = %planned.phase, "phase skipped");
        self.shared.events.emit(Event::PhaseSkipped {
            phase: planned.phase.clone(),
        });
        let first = self.first_hook(index);
        for (offset, hook) in planned.hooks.iter().enumerate() {
            self.record(
                first + offset,
                &planned.phase,
                hook,
                HookResult::Skipped,
                Duration::ZERO,
            );
        }
        self.phases[index] = Some(PhaseReport {
            phase: planned.phase.clone(),
            status: PhaseStatus::Skipped,
            elapsed: Duration::ZERO,
        });
    }

    fn first_hook(&self, index: usize) -> usize {
        self.plan.phases[..index]
            .iter()
            .map(|p| p.hooks.len())
            .sum()
    }

    async fn run_phase(&mut self, index: usize) {
        self.enter(index);
        let planned = &self.plan.phases[index];
        let shared = self.shared;
        match planned.builtin {
            Some(Builtin::Running) => {
                shared.ready.send_replace(true);
                self.notify("READY=1");
                shared.events.emit(Event::Ready);
                self.run_hooks(index).await;
                let mut control = shared.control.subscribe();
                let _ = control.wait_for(|c| c.reason.is_some() || c.quiet).await;
                self.announce();
            }
            Some(Builtin::StopIntake) => {
                shared.ready.send_replace(false);
                self.notify("STOPPING=1");
                let delay = shared.config.propagation_delay;
                if !delay.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.interrupted(Bound::Drain) => {}
                    }
                }
                shared.intake.cancel();
                self.run_hooks(index).await;
                if shared.control.borrow().reason.is_none() {
                    let mut control = shared.control.subscribe();
                    let _ = control.wait_for(|c| c.reason.is_some()).await;
                    self.announce();
                }
            }
            Some(Builtin::Drain) => {
                shared.drain.cancel();
                self.run_hooks(index).await;
            }
            Some(Builtin::Wait) => {
                self.wait_for_work().await;
                self.run_hooks(index).await;
            }
            _ => self.run_hooks(index).await,
        }
        let (_, started) = self.current.take().expect("a phase is current");
        self.phases[index] = Some(PhaseReport {
            phase: planned.phase.clone(),
            status: PhaseStatus::Completed,
            elapsed: started.elapsed(),
        });
    }

    /// Waits for tracked work until the drain deadline or an escalation.
    async fn wait_for_work(&mut self) {
        let shared = self.shared;
        shared.tracker.close();
        let mut progress = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                () = shared.tracker.wait() => return,
                () = self.interrupted(Bound::Drain) => return,
                _ = progress.tick() => {
                    let in_flight = shared.tracker.len();
                    let time_left = self
                        .drain_deadline()
                        .map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
                    tracing::info!(
                        target: "lifecycle_hooks",
                        in_flight,
                        time_left_s = time_left.as_secs_f64(),
                        "draining: {in_flight} in flight, {:.1} s left",
                        time_left.as_secs_f64()
                    );
                    self.notify(&format!("STATUS=draining: {in_flight} in flight"));
                    self.extend_timeout();
                    shared.events.emit(Event::Draining { in_flight, time_left });
                }
            }
        }
    }

    /// Before the exit side: cancels work still in flight and gives it the grace to hand itself
    /// back.
    async fn settle(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        let shared = self.shared;
        // An escalated or failed start skipped stop_intake and drain: their signals still hold.
        shared.end_intake_and_drain();
        shared.tracker.close();
        self.forced |= shared.control.borrow().escalated();
        if shared.tracker.is_empty() {
            return;
        }
        let count = shared.tracker.len();
        self.cancelled_work = count;
        self.forced |= !self.startup_failed;
        tracing::warn!(target: "lifecycle_hooks", count, "cancelling work still in flight");
        shared.cancel_work();
        shared.events.emit(Event::WorkCancelled { count });
        let grace_end = Instant::now() + shared.config.grace;
        let limit = self
            .end_of_budget()
            .map_or(grace_end, |end| end.min(grace_end));
        tokio::select! {
            () = shared.tracker.wait() => {}
            () = sleep_until(limit) => {}
        }
        self.abandoned_work = shared.tracker.len();
        if self.abandoned_work > 0 {
            tracing::error!(
                target: "lifecycle_hooks",
                count = self.abandoned_work,
                "work still running after cancellation; exit hooks begin anyway"
            );
        }
    }

    async fn run_hooks(&mut self, index: usize) {
        let planned = &self.plan.phases[index];
        if planned.hooks.is_empty() {
            return;
        }
        let bound = self.bound(index);
        let first = self.first_hook(index);
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
            let skip = self.startup_failed && index < self.plan.running
                || bound == Bound::Escalation && self.shared.control.borrow().escalated()
                || bound == Bound::Drain && self.cut_off()
                || bound == Bound::Exit
                    && self.end_of_budget().is_some_and(|e| Instant::now() >= e);
            let results: Vec<(HookResult, Duration)> = if skip {
                batch
                    .iter()
                    .map(|_| (HookResult::Skipped, Duration::ZERO))
                    .collect()
            } else {
                let mut runs = batch.iter().map(|hook| {
                    if self.startup_failed
                        && hook
                            .teardown_of
                            .as_ref()
                            .is_some_and(|s| !self.started.contains(s))
                    {
                        futures::future::Either::Left(async {
                            (HookResult::Skipped, Duration::ZERO)
                        })
                    } else {
                        futures::future::Either::Right(self.run_hook(&planned.phase, hook, bound))
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
            for (offset, (hook, (result, elapsed))) in batch.iter().zip(results).enumerate() {
                if index < self.plan.running {
                    if result == HookResult::Ok {
                        self.started.insert(hook.name.clone());
                    } else {
                        self.startup_failed = true;
                    }
                }
                self.record(first + at + offset, &planned.phase, hook, result, elapsed);
            }
            at = end;
        }
    }

    fn run_hook(
        &self,
        phase: &Phase,
        hook: &PlannedHook,
        bound: Bound,
    ) -> impl Future<Output = (HookResult, Duration)> + use<> {
        let start = Instant::now();
        let own_deadline = hook.timeout.map(|t| start + t);
        let bound_deadline = match bound {
            Bound::Escalation => None,
            Bound::Drain => self.drain_deadline(),
            Bound::Exit => self.end_of_budget(),
        };
        let deadline = match (own_deadline, bound_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ctx = HookContext {
            phase: phase.clone(),
            name: hook.name.clone(),
            deadline,
            handle: self.handle.clone(),
        };
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| hook.hook.run(ctx)));
        let interrupted = interrupted_by(
            self.shared,
            bound,
            self.drain_deadline(),
            self.end_of_budget(),
        );
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
            (result, start.elapsed())
        }
    }

    /// Completes when work in a phase with this bound must stop (used outside hooks).
    async fn interrupted(&self, bound: Bound) {
        interrupted_by(self.shared, bound, None, None).await;
    }

    fn record(
        &mut self,
        global: usize,
        phase: &Phase,
        hook: &PlannedHook,
        result: HookResult,
        elapsed: Duration,
    ) {
        match &result {
            HookResult::Ok | HookResult::Skipped => {
                tracing::info!(target: "lifecycle_hooks", %phase, hook = %hook.name, result = result.as_str(), elapsed_ms = elapsed.as_millis() as u64, "hook")
            }
            HookResult::Error(message) | HookResult::Panicked(message) => {
                tracing::error!(target: "lifecycle_hooks", %phase, hook = %hook.name, result = result.as_str(), error = %message, elapsed_ms = elapsed.as_millis() as u64, "hook failed")
            }
            HookResult::TimedOut | HookResult::Abandoned => {
                tracing::error!(target: "lifecycle_hooks", %phase, hook = %hook.name, result = result.as_str(), elapsed_ms = elapsed.as_millis() as u64, "hook abandoned")
            }
        }
        self.reported[global] = true;
        self.shared.pending.lock()[global] = None;
        if result == HookResult::Skipped {
            if let Some(callback) = &hook.on_skipped {
                callback(self.handle);
            }
        }
        self.shared.events.emit(Event::HookFinished {
            phase: phase.clone(),
            name: hook.name.to_string(),
            result: result.clone(),
            elapsed,
        });
        self.hooks.push(HookReport {
            phase: phase.clone(),
            name: hook.name.to_string(),
            result,
            elapsed,
        });
    }

    fn finish(mut self, immediate: Option<Signal>) -> Outcome {
        let shared = self.shared;
        let plan = self.plan;
        if let Some((index, started)) = self.current.take() {
            self.phases[index] = Some(PhaseReport {
                phase: plan.phases[index].phase.clone(),
                status: PhaseStatus::Interrupted,
                elapsed: started.elapsed(),
            });
        }
        let phases: Vec<PhaseReport> = self
            .phases
            .iter()
            .zip(&plan.phases)
            .map(|(report, planned)| {
                report.clone().unwrap_or_else(|| PhaseReport {
                    phase: planned.phase.clone(),
                    status: PhaseStatus::Skipped,
                    elapsed: Duration::ZERO,
                })
            })
            .collect();
        let mut global = 0;
        for planned in &plan.phases {
            for hook in &planned.hooks {
                if !self.reported[global] {
                    if let Some(callback) = &hook.on_skipped {
                        callback(self.handle);
                    }
                    self.hooks.push(HookReport {
                        phase: planned.phase.clone(),
                        name: hook.name.to_string(),
                        result: HookResult::Skipped,
                        elapsed: Duration::ZERO,
                    });
                }
                global += 1;
            }
        }
        let control = shared.control.borrow().clone();
        let reason = control.reason.unwrap_or(Reason::Failure);
        let failed = self.hooks.iter().any(|h| h.result.is_failure())
            || !shared.failures.lock().is_empty()
            || !shared.lost.lock().is_empty();
        let forced = self.forced || control.escalation != Escalation::None;
        let exit_code = match immediate {
            Some(signal) => (128 + signal.number()) as u8,
            None => shared.config.exit_codes.status(reason, failed, forced),
        };
        let stop_elapsed = control.stop_at.map_or(Duration::ZERO, |at| at.elapsed());
        tracing::info!(
            target: "lifecycle_hooks",
            %reason,
            exit_code,
            forced,
            cancelled_work = self.cancelled_work,
            elapsed_ms = stop_elapsed.as_millis() as u64,
            "lifecycle finished"
        );
        shared.events.emit(Event::Finished { reason, exit_code });
        Outcome {
            reason,
            exit_code,
            forced,
            escalated: control.escalated(),
            immediate,
            phases,
            hooks: self.hooks,
            cancelled_work: self.cancelled_work,
            abandoned_work: self.abandoned_work,
            failures: shared.failures.lock().clone(),
            handed_back: shared.handed_back.lock().clone(),
            lost: shared.lost.lock().clone(),
            stop_elapsed,
        }
    }
}

/// Completes when a hook with this bound must be abandoned, with the result to report.
fn interrupted_by(
    shared: &Shared,
    bound: Bound,
    drain_deadline: Option<Instant>,
    end_of_budget: Option<Instant>,
) -> impl Future<Output = HookResult> + use<> {
    let mut control = shared.control.subscribe();
    let budget_to_drain = shared.config.budget - shared.config.reserve;
    let budget = shared.config.budget;
    async move {
        match bound {
            Bound::Escalation => {
                wait_control(&mut control, |c| c.escalated().then_some(())).await;
                HookResult::Abandoned
            }
            Bound::Drain => {
                let mut escalation = control.clone();
                let deadline = async {
                    let stop_at = match drain_deadline {
                        Some(deadline) => deadline - budget_to_drain,
                        None => wait_control(&mut control, |c| c.stop_at).await,
                    };
                    sleep_until(stop_at + budget_to_drain).await;
                };
                tokio::select! {
                    () = deadline => HookResult::TimedOut,
                    () = wait_control(&mut escalation, |c| c.escalated().then_some(())) => {
                        HookResult::Abandoned
                    }
                }
            }
            Bound::Exit => {
                let end = match end_of_budget {
                    Some(end) => end,
                    None => wait_control(&mut control, |c| c.stop_at).await + budget,
                };
                sleep_until(end).await;
                HookResult::TimedOut
            }
        }
    }
}

/// Waits until `read` finds something in the control state and returns it; pends forever if the
/// lifecycle is gone (nothing can change any more).
async fn wait_control<T>(
    control: &mut watch::Receiver<Control>,
    read: impl Fn(&Control) -> Option<T>,
) -> T {
    let found = control
        .wait_for(|c| read(c).is_some())
        .await
        .ok()
        .and_then(|c| read(&c));
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
async fn immediate(shared: &Shared) -> Signal {
    let mut control = shared.control.subscribe();
    wait_control(&mut control, |c| match c.escalation {
        Escalation::Immediate(signal) => Some(signal),
        _ => None,
    })
    .await
}
