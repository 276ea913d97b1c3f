//! Walking the phase graph: [`Runner::run_graph`] takes each phase in plan order.
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
//! 5. Time comes from the stop's one [`Deadlines`](crate::Deadlines) value: the drain deadline
//!    bounds every hook before the exit side (startup hooks included), the end of the budget
//!    bounds the exit side.
//! 6. The control state is only read by copying it out of its `ControlCell`
//!    (`Runner::control`); no lock of it is held across another lock of it or an await.
//! 7. systemd hears `STOPPING=1` only once a stop or restart has begun (never for quiet), and
//!    `EXTEND_TIMEOUT_USEC` only after it; `READY=1` only when `running` is entered unquieted.
//! 8. A teardown hook (`teardown_of`) runs only if its startup hook ran and succeeded.

mod hooks;
mod report;

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::control::Control;
use crate::deadline::after;
use crate::event::Event;
use crate::handle::{LifecycleHandle, Shared};
use crate::outcome::{HookReport, PhaseReport, PhaseStatus, Reason};
use crate::phase::Builtin;
use crate::plan::Plan;
use crate::signals::Signal;

use hooks::Bound;
pub(crate) use hooks::immediate;

pub(crate) struct Runner<'a> {
    handle: &'a LifecycleHandle,
    shared: &'a Shared,
    plan: &'a Plan,
    /// Hook reports in the order they were made.
    hooks: Vec<HookReport>,
    /// Which hooks have a report, by their index in plan order.
    reported: Vec<bool>,
    phases: Vec<Option<PhaseReport>>,
    current: Option<(usize, Instant)>,
    /// Startup hooks that succeeded: only their teardowns run.
    started: HashSet<Cow<'static, str>>,
    startup_failed: bool,
    /// Whether the trigger and quiet have been announced (logged and emitted).
    announced: bool,
    quiet_announced: bool,
    forced: bool,
    cancelled_work: usize,
    outlived_grace: usize,
    stuck_work: Vec<crate::outcome::WorkItem>,
}

impl<'a> Runner<'a> {
    pub(crate) fn new(handle: &'a LifecycleHandle, plan: &'a Plan) -> Self {
        let hook_count = plan.hook_count();
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
            forced: false,
            cancelled_work: 0,
            outlived_grace: 0,
            stuck_work: Vec::new(),
        }
    }

    /// The control state now, copied out: the borrow ends before this returns.
    fn control(&self) -> Control {
        self.shared.control.get()
    }

    pub(crate) async fn run_graph(&mut self) {
        let plan = self.plan;
        for index in 0..plan.running {
            if self.startup_failed || self.cut_off() {
                self.skip_phase(index);
            } else {
                self.run_phase(index).await;
            }
        }
        let control = self.control();
        if self.startup_failed || control.escalated() {
            if self.startup_failed {
                self.shared.failures.lock().push("startup failed".into());
                self.handle.request(Reason::Failure);
            }
            self.announce();
            for index in plan.running..plan.exit_side {
                self.skip_phase(index);
            }
        } else {
            if control.reason.is_some() {
                // A stop before `running`: never ready.
                self.announce();
                self.skip_phase(plan.running);
            } else {
                // Startup is over and claimed its listeners: what was passed in and not claimed
                // goes. Only here: a start cut short (a restart during startup) keeps the store
                // whole for the next process, whose startup may claim what this one never
                // reached.
                crate::fdstore::release_unclaimed(self.shared.config.notifier.as_ref());
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

    /// Logs and emits the trigger (and quiet) once, in order with the phases; tells systemd
    /// `STOPPING=1` (then extends its stop timeout) only when a stop or restart has begun.
    fn announce(&mut self) {
        let control = self.control();
        if control.quiet && !self.quiet_announced {
            self.quiet_announced = true;
            tracing::info!(target: "lifecycle_hooks", "quiet: intake stops, still running");
            self.notify("STATUS=quiet: intake stopped, still running");
            self.shared.events.emit(Event::Quiet);
        }
        if let (Some(reason), false) = (control.reason, self.announced) {
            self.announced = true;
            tracing::info!(
                target: "lifecycle_hooks",
                %reason,
                signal = control.signal.map(Signal::name),
                budget_ms = self.shared.config.budget.total.as_millis() as u64,
                "stopping"
            );
            self.shared.events.emit(Event::Triggered {
                reason,
                signal: control.signal,
            });
            self.notify("STOPPING=1");
            self.extend_timeout();
            // The keepalive extends from here on (it waits for this, never before STOPPING=1).
            self.shared.stopping_sent.cancel();
        }
    }

    /// Whether the drain is over: a second signal came, or the drain deadline passed.
    fn cut_off(&self) -> bool {
        let control = self.control();
        control.escalated()
            || control
                .deadlines
                .is_some_and(|d| Instant::now() >= d.drain())
    }

    fn enter(&mut self, index: usize) {
        let phase = &self.plan.phases[index].phase;
        self.current = Some((index, Instant::now()));
        self.shared.phase.send_replace(phase.clone());
        self.shared.work.entered(phase.clone());
        tracing::info!(target: "lifecycle_hooks", %phase, in_flight = self.shared.tracker.len(), "phase");
        self.notify(&format!("STATUS=phase {phase}"));
        self.shared.events.emit(Event::PhaseStarted {
            phase: phase.clone(),
        });
    }

    /// Tells systemd the stop needs the rest of the budget (plus a second to exit), right after
    /// `STOPPING=1` (before it systemd has no stop timer to extend); the keepalive task repeats
    /// it every second from then on.
    fn extend_timeout(&self) {
        if let (Some(notifier), Some(deadlines)) =
            (&self.shared.config.notifier, self.control().deadlines)
        {
            notifier.extend_timeout(deadlines.budget_left() + Duration::from_secs(1));
        }
    }

    fn notify(&self, state: &str) {
        if let Some(notifier) = &self.shared.config.notifier {
            notifier.send(state);
        }
    }

    async fn run_phase(&mut self, index: usize) {
        self.enter(index);
        let planned = &self.plan.phases[index];
        let shared = self.shared;
        match planned.builtin {
            Some(Builtin::Running) => {
                if !self.control().quiet {
                    shared.ready.send_replace(true);
                    self.notify("READY=1");
                    shared.events.emit(Event::Ready);
                }
                self.run_hooks(index).await;
                let mut control = shared.control.watch();
                control
                    .wait_for(|c| (c.reason.is_some() || c.quiet).then_some(()))
                    .await;
                self.announce();
            }
            Some(Builtin::StopIntake) => {
                shared.ready.send_replace(false);
                let delay = shared.config.propagation_delay;
                if !delay.is_zero() {
                    tokio::select! {
                        () = sleep_until(after(Instant::now(), delay)) => {}
                        _ = self.interrupted(Bound::Drain) => {}
                    }
                }
                shared.intake.cancel();
                self.run_hooks(index).await;
                if self.control().reason.is_none() {
                    let mut control = shared.control.watch();
                    control.wait_for(|c| c.reason.map(|_| ())).await;
                }
                // Whether the stop came while quiet waited or while the hooks above ran: it is
                // announced (and systemd told `STOPPING=1`) before the drain.
                self.announce();
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
                _ = self.interrupted(Bound::Drain) => return,
                _ = progress.tick() => {
                    let in_flight = shared.tracker.len();
                    let drain_left = self
                        .control()
                        .deadlines
                        .map_or(Duration::ZERO, |d| d.drain_left());
                    tracing::info!(
                        target: "lifecycle_hooks",
                        in_flight,
                        drain_left_s = drain_left.as_secs_f64(),
                        "draining: {in_flight} in flight, {:.1} s left",
                        drain_left.as_secs_f64()
                    );
                    self.notify(&format!("STATUS=draining: {in_flight} in flight"));
                    shared.events.emit(Event::Draining { in_flight, drain_left });
                }
            }
        }
    }

    /// Before the exit side: cancels work still in flight and gives it the grace to hand itself
    /// back. Named work still running is reported (what blocked the stop).
    async fn settle(&mut self) {
        let shared = self.shared;
        // An escalated or failed start skipped stop_intake and drain: their signals still hold.
        shared.end_intake_and_drain();
        shared.tracker.close();
        let control = self.control();
        self.forced |= control.escalated();
        if shared.tracker.is_empty() {
            return;
        }
        let count = shared.tracker.len();
        self.cancelled_work = count;
        self.forced |= !self.startup_failed;
        self.stuck_work = shared.work.snapshot();
        tracing::warn!(target: "lifecycle_hooks", count, "cancelling work still in flight");
        for item in &self.stuck_work {
            tracing::warn!(
                target: "lifecycle_hooks",
                work = %item.name,
                phase = %item.phase,
                age_ms = item.age.as_millis() as u64,
                "still running at the drain deadline: {}",
                item.name
            );
        }
        shared.cancel_work();
        if !self.stuck_work.is_empty() {
            shared.events.emit(Event::WorkStuck {
                items: self.stuck_work.clone(),
            });
        }
        shared.events.emit(Event::WorkCancelled { count });
        let grace_end = after(Instant::now(), shared.config.budget.grace);
        let limit = control
            .deadlines
            .map_or(grace_end, |d| d.end().min(grace_end));
        tokio::select! {
            () = shared.tracker.wait() => {}
            () = sleep_until(limit) => {}
        }
        self.outlived_grace = shared.tracker.len();
        if self.outlived_grace > 0 {
            tracing::error!(
                target: "lifecycle_hooks",
                count = self.outlived_grace,
                "work still running after cancellation and its grace; exit hooks begin anyway"
            );
        }
    }

    /// Completes when work in a phase with this bound must stop (used outside hooks).
    async fn interrupted(&self, bound: Bound) {
        hooks::interrupted_by(self.shared, bound, None).await;
    }
}
