//! The trigger state machine: what each stop request and signal does to the lifecycle.
//!
//! # Invariants
//!
//! 1. The reason is set once, by the first stop, restart or failure; nothing replaces it, so a
//!    restart is never downgraded to a stop.
//! 2. `deadlines` are set together with the reason, once: the shutdown budget starts at the
//!    first trigger, and every reader gets the same instants (see `deadline.rs`).
//! 3. Quiet is only entered before a stop; once a reason is set, quiet requests are ignored.
//! 4. Escalation only grows: `None` → `SkipToExit` → `Immediate`; programmatic requests never
//!    escalate, only signals do.
//! 5. During a restart, the first stop signal is absorbed (the restart already runs the whole
//!    graceful stop); every later terminating signal escalates.
//! 6. The state lives in a [`ControlCell`] under one mutex, locked only inside `get` and
//!    `update`: no guard leaves the cell, so no caller can hold it across another lock of it or
//!    an await (the deadlock of a reader borrowing twice while a writer waited).
//! 7. A waiter subscribes to the cell's version before it reads the state, and `update` bumps
//!    the version after it changed the state: a change between the read and the wait is never
//!    missed.

use std::future::pending;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::deadline::{Budget, Deadlines};
use crate::outcome::Reason;
use crate::signals::{Action, Signal};
use crate::sync::Mutex;

/// How far a stop has been escalated by repeated signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Escalation {
    None,
    /// A second terminating signal: skip to the exit hooks.
    SkipToExit,
    /// A third: end the run at once.
    Immediate(Signal),
}

/// The lifecycle's trigger state, held in a [`ControlCell`] (one mutex, copied out whole) beside a
/// version `watch` channel, so the runner can await changes.
///
/// `Copy`, so readers copy it out of the channel and never hold a borrow while they use it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Control {
    pub(crate) reason: Option<Reason>,
    pub(crate) deadlines: Option<Deadlines>,
    budget: Budget,
    pub(crate) quiet: bool,
    pub(crate) escalation: Escalation,
    /// The signal that started the stop, if a signal did.
    pub(crate) signal: Option<Signal>,
    absorbed_stop: bool,
}

/// What applying a trigger did, for logging and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    Nothing,
    Started(Reason),
    Quiet,
    Absorbed,
    Escalated(Escalation),
    Dump,
}

impl Control {
    pub(crate) fn new(budget: Budget) -> Self {
        Control {
            reason: None,
            deadlines: None,
            budget,
            quiet: false,
            escalation: Escalation::None,
            signal: None,
            absorbed_stop: false,
        }
    }

    /// A programmatic request: starts a stop if none is under way, otherwise does nothing.
    pub(crate) fn request(&mut self, reason: Reason, now: Instant) -> Effect {
        if self.reason.is_some() {
            return Effect::Nothing;
        }
        self.reason = Some(reason);
        self.deadlines = Some(self.budget.deadlines(now));
        Effect::Started(reason)
    }

    /// A quiet request: stop intake and keep running.
    pub(crate) fn quiet(&mut self) -> Effect {
        if self.reason.is_some() || self.quiet {
            return Effect::Nothing;
        }
        self.quiet = true;
        Effect::Quiet
    }

    /// A signal delivered with the meaning `action`.
    pub(crate) fn signal(&mut self, signal: Signal, action: Action, now: Instant) -> Effect {
        let reason = match action {
            Action::DumpState => return Effect::Dump,
            Action::Quiet => return self.quiet(),
            Action::Stop => Reason::Stop,
            Action::Restart => Reason::Restart,
        };
        if self.reason.is_none() {
            self.signal = Some(signal);
            return self.request(reason, now);
        }
        if self.reason == Some(Reason::Restart) && reason == Reason::Stop && !self.absorbed_stop {
            self.absorbed_stop = true;
            return Effect::Absorbed;
        }
        self.escalation = match self.escalation {
            Escalation::None => Escalation::SkipToExit,
            Escalation::SkipToExit | Escalation::Immediate(_) => Escalation::Immediate(signal),
        };
        Effect::Escalated(self.escalation)
    }

    pub(crate) fn escalated(&self) -> bool {
        self.escalation != Escalation::None
    }
}

/// The control state shared by the handle's writers (signals, `stop`, `quiet`, `fail`) and the
/// runner's readers (invariants 6 and 7).
#[derive(Debug)]
pub(crate) struct ControlCell {
    state: Mutex<Control>,
    /// Bumped after every change, for waiters.
    version: watch::Sender<u64>,
}

impl ControlCell {
    pub(crate) fn new(control: Control) -> Self {
        ControlCell {
            state: Mutex::new(control),
            version: watch::Sender::new(0),
        }
    }

    /// The state now, copied out.
    pub(crate) fn get(&self) -> Control {
        *self.state.lock()
    }

    /// Applies `change`, which says whether it changed anything; waiters hear of a change.
    pub(crate) fn update(&self, change: impl FnOnce(&mut Control) -> bool) {
        // The guard is a temporary: dropped before the version moves.
        let changed = change(&mut self.state.lock());
        if changed {
            self.version.send_modify(|version| *version += 1);
        }
    }

    /// A waiter for changes, subscribed now (so it misses no change after this call).
    pub(crate) fn watch(self: &Arc<Self>) -> ControlWatch {
        ControlWatch {
            version: self.version.subscribe(),
            cell: Arc::clone(self),
        }
    }
}

/// Waits on a [`ControlCell`]; see [`wait_for`](Self::wait_for).
#[derive(Debug)]
pub(crate) struct ControlWatch {
    cell: Arc<ControlCell>,
    version: watch::Receiver<u64>,
}

impl ControlWatch {
    /// Waits until `read` finds something in the state and returns it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is consumed; a later call sees the state as it is then.
    pub(crate) async fn wait_for<T>(&mut self, read: impl Fn(&Control) -> Option<T>) -> T {
        loop {
            // Marked seen before the read (invariant 7): a change after it wakes `changed`.
            self.version.borrow_and_update();
            if let Some(found) = read(&self.cell.get()) {
                return found;
            }
            if self.version.changed().await.is_err() {
                // The cell is gone: nothing can change any more.
                return pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn new() -> Control {
        Control::new(Budget {
            total: Duration::from_secs(25),
            reserve: Duration::from_secs(5),
            grace: Duration::from_secs(1),
        })
    }

    fn signal(control: &mut Control, signal: Signal, action: Action) -> Effect {
        control.signal(signal, action, Instant::now())
    }

    #[test]
    fn term_twice_skips_thrice_exits() {
        let mut c = new();
        assert_eq!(
            signal(&mut c, Signal::Term, Action::Stop),
            Effect::Started(Reason::Stop)
        );
        assert_eq!(
            signal(&mut c, Signal::Int, Action::Stop),
            Effect::Escalated(Escalation::SkipToExit)
        );
        assert_eq!(
            signal(&mut c, Signal::Term, Action::Stop),
            Effect::Escalated(Escalation::Immediate(Signal::Term))
        );
        assert_eq!(c.reason, Some(Reason::Stop));
    }

    #[test]
    fn restart_absorbs_one_stop_and_is_never_downgraded() {
        let mut c = new();
        signal(&mut c, Signal::Usr2, Action::Restart);
        assert_eq!(signal(&mut c, Signal::Term, Action::Stop), Effect::Absorbed);
        assert_eq!(c.escalation, Escalation::None);
        assert_eq!(c.reason, Some(Reason::Restart));
        assert_eq!(
            signal(&mut c, Signal::Term, Action::Stop),
            Effect::Escalated(Escalation::SkipToExit)
        );
        assert_eq!(c.reason, Some(Reason::Restart));
    }

    #[test]
    fn a_second_restart_escalates() {
        let mut c = new();
        signal(&mut c, Signal::Usr2, Action::Restart);
        assert_eq!(
            signal(&mut c, Signal::Usr2, Action::Restart),
            Effect::Escalated(Escalation::SkipToExit)
        );
    }

    #[test]
    fn programmatic_requests_never_escalate() {
        let mut c = new();
        let now = Instant::now();
        assert_eq!(c.request(Reason::Stop, now), Effect::Started(Reason::Stop));
        for _ in 0..10 {
            assert_eq!(c.request(Reason::Stop, now), Effect::Nothing);
            assert_eq!(c.request(Reason::Restart, now), Effect::Nothing);
        }
        assert_eq!(c.escalation, Escalation::None);
        assert_eq!(c.reason, Some(Reason::Stop));
    }

    #[test]
    fn quiet_only_before_a_stop() {
        let mut c = new();
        assert_eq!(signal(&mut c, Signal::Tstp, Action::Quiet), Effect::Quiet);
        assert_eq!(signal(&mut c, Signal::Tstp, Action::Quiet), Effect::Nothing);
        assert_eq!(
            signal(&mut c, Signal::Term, Action::Stop),
            Effect::Started(Reason::Stop)
        );
        assert!(c.quiet);
        assert_eq!(
            signal(&mut c, Signal::Ttin, Action::DumpState),
            Effect::Dump
        );
        assert!(!c.escalated());
    }
}

/// The control cell under loom, with the real state machine: `RUSTFLAGS="--cfg lifecycle_loom"
/// cargo test --release -p lifecycle-hooks --lib control::loom_model` (scripts/test runs it).
#[cfg(all(test, lifecycle_loom))]
mod loom_model {
    use std::time::Duration;

    use super::*;

    fn cell() -> Arc<ControlCell> {
        Arc::new(ControlCell::new(Control::new(Budget {
            total: Duration::from_secs(25),
            reserve: Duration::from_secs(5),
            grace: Duration::from_secs(1),
        })))
    }

    fn rank(escalation: Escalation) -> u8 {
        match escalation {
            Escalation::None => 0,
            Escalation::SkipToExit => 1,
            Escalation::Immediate(_) => 2,
        }
    }

    /// Signals and requests from two threads while a third reads as the runner does (two reads
    /// in a row, each copied out): no deadlock in any interleaving, the first reason holds, the
    /// deadlines are set with it and never move, escalation only grows.
    #[test]
    fn writers_and_the_runners_reads_never_deadlock_and_the_first_reason_holds() {
        ::loom::model(|| {
            let cell = cell();
            let now = Instant::now();
            let signals = {
                let cell = Arc::clone(&cell);
                ::loom::thread::spawn(move || {
                    for _ in 0..2 {
                        cell.update(|c| {
                            c.signal(Signal::Term, Action::Stop, now) != Effect::Nothing
                        });
                    }
                })
            };
            let calls = {
                let cell = Arc::clone(&cell);
                ::loom::thread::spawn(move || {
                    cell.update(|c| c.quiet() != Effect::Nothing);
                    cell.update(|c| c.request(Reason::Restart, now) != Effect::Nothing);
                })
            };
            let first = cell.get();
            let second = cell.get();
            if let Some(reason) = first.reason {
                assert_eq!(second.reason, Some(reason));
                assert_eq!(second.deadlines, first.deadlines);
            }
            assert_eq!(first.reason.is_some(), first.deadlines.is_some());
            assert!(rank(second.escalation) >= rank(first.escalation));
            signals.join().unwrap();
            calls.join().unwrap();
            let last = cell.get();
            assert!(last.reason.is_some());
            if let Some(reason) = second.reason {
                assert_eq!(last.reason, Some(reason));
            }
            // Two TERMs: after a TERM-started stop the second escalates; after a restart the
            // first is absorbed and the second escalates.
            assert_eq!(rank(last.escalation), 1, "{last:?}");
        });
    }
}
