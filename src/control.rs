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

use tokio::time::Instant;

use crate::deadline::{Budget, Deadlines};
use crate::outcome::Reason;
use crate::signals::{Action, Signal};

/// How far a stop has been escalated by repeated signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Escalation {
    None,
    /// A second terminating signal: skip to the exit hooks.
    SkipToExit,
    /// A third: end the run at once.
    Immediate(Signal),
}

/// The lifecycle's trigger state, held in a `watch` channel so the runner can await changes.
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
