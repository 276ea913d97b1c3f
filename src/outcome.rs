//! The result of a run. See [`Outcome`].

use std::fmt;
use std::process::{ExitCode, Termination};
use std::time::Duration;

use crate::BoxError;
use crate::phase::Phase;
use crate::signals::Signal;

/// Why the lifecycle stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A graceful stop (`SIGTERM`, `SIGINT`, [`LifecycleHandle::stop`](crate::LifecycleHandle::stop)).
    Stop,
    /// A graceful restart (`SIGUSR2`, [`LifecycleHandle::restart`](crate::LifecycleHandle::restart)):
    /// the same path as a stop, with its own exit status.
    Restart,
    /// A startup hook or a critical task failed.
    Failure,
}

impl Reason {
    /// `stop`, `restart` or `failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Stop => "stop",
            Reason::Restart => "restart",
            Reason::Failure => "failure",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The exit-status policy: which status each kind of ending gets.
///
/// | ending | default | systemd sees |
/// |---|---|---|
/// | clean stop | 0 | success |
/// | clean restart | 4 | restart (`RestartForceExitStatus=4`), not a failure (`SuccessExitStatus=4`) |
/// | a hook failed (error, panic, timeout), startup failed, a critical task failed | 1 | failure |
/// | forced: work cancelled at the drain deadline, or escalated by a second signal | 2 | failure |
/// | a third terminating signal | 128 + the signal's number | killed |
///
/// When several apply, the first row from the bottom wins: forced beats failure, failure beats
/// restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitCodes {
    /// A clean stop.
    pub stop: u8,
    /// A clean restart.
    pub restart: u8,
    /// A failure.
    pub failure: u8,
    /// A forced ending.
    pub forced: u8,
}

impl Default for ExitCodes {
    fn default() -> Self {
        ExitCodes {
            stop: 0,
            restart: 4,
            failure: 1,
            forced: 2,
        }
    }
}

impl ExitCodes {
    /// The status for a run ended at once by a third terminating `signal`: `128 + its number`,
    /// the shell's convention for a death by signal.
    pub fn immediate(&self, signal: Signal) -> u8 {
        (128 + signal.number()) as u8
    }

    /// The status for an ending with this reason, failure and forcing.
    pub fn status(&self, reason: Reason, failed: bool, forced: bool) -> u8 {
        if forced {
            self.forced
        } else if failed || reason == Reason::Failure {
            self.failure
        } else if reason == Reason::Restart {
            self.restart
        } else {
            self.stop
        }
    }
}

/// How one hook run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookResult {
    /// It returned `Ok(())` or `()`.
    Ok,
    /// It returned an error; the message includes the error's sources.
    Error(String),
    /// It panicked; the panic message.
    Panicked(String),
    /// It ran past its timeout or the budget and was abandoned.
    TimedOut,
    /// It never ran: its phase was skipped (escalation, deadline, failed startup).
    Skipped,
    /// It was running when a second signal escalated the stop, and was abandoned.
    Abandoned,
}

impl HookResult {
    /// The short word used in events and example output: `ok`, `error`, `panicked`,
    /// `timed_out`, `skipped` or `abandoned`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HookResult::Ok => "ok",
            HookResult::Error(_) => "error",
            HookResult::Panicked(_) => "panicked",
            HookResult::TimedOut => "timed_out",
            HookResult::Skipped => "skipped",
            HookResult::Abandoned => "abandoned",
        }
    }

    /// Whether this result makes the run a failure (error, panic or timeout).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            HookResult::Error(_) | HookResult::Panicked(_) | HookResult::TimedOut
        )
    }
}

impl fmt::Display for HookResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hook function may return: `()` or `Result<(), E>` with `E: Into<BoxError>`.
pub trait IntoHookResult {
    /// Turns the return value into the hook's result.
    fn into_hook_result(self) -> Result<(), BoxError>;
}

impl IntoHookResult for () {
    fn into_hook_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> IntoHookResult for Result<(), E> {
    fn into_hook_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// One named item of tracked work: what it is, when it began, how long it has run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkItem {
    /// Its name, as given to `spawn_named` or `work_guard_named`.
    pub name: String,
    /// The phase the lifecycle was in when the work began.
    pub phase: Phase,
    /// How long it had run when this was taken.
    pub age: Duration,
}

/// How a phase went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseStatus {
    /// It ran to its end.
    Completed,
    /// It never began (escalation, deadline, failed startup, immediate exit).
    Skipped,
    /// It began but the run ended before it did (a third signal).
    Interrupted,
}

/// The report of one phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// How it went.
    pub status: PhaseStatus,
    /// How long it took.
    pub elapsed: Duration,
}

/// The report of one hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookReport {
    /// Its phase.
    pub phase: Phase,
    /// Its name.
    pub name: String,
    /// How it ended.
    pub result: HookResult,
    /// How long it ran (zero if skipped).
    pub elapsed: Duration,
    /// What the hook said about its work ([`HookContext::note`](crate::HookContext::note)).
    pub note: Option<String>,
}

/// Everything a run did: why it stopped, its exit status, and a report per phase and per hook.
///
/// `Outcome` implements [`Termination`], so `main` can return it and the process exits with
/// [`exit_code`](Outcome::exit_code). Its `Display` is one `key=value` line.
#[derive(Clone, Debug)]
#[must_use = "the Outcome carries the exit status; return it from main or inspect it"]
pub struct Outcome {
    pub(crate) reason: Reason,
    pub(crate) exit_code: u8,
    pub(crate) forced: bool,
    pub(crate) escalated: bool,
    pub(crate) immediate: Option<Signal>,
    pub(crate) phases: Vec<PhaseReport>,
    pub(crate) hooks: Vec<HookReport>,
    pub(crate) cancelled_work: usize,
    pub(crate) outlived_grace: usize,
    pub(crate) panicked_work: usize,
    pub(crate) stuck_work: Vec<WorkItem>,
    pub(crate) failures: Vec<String>,
    pub(crate) handed_back: Vec<String>,
    pub(crate) lost: Vec<String>,
    pub(crate) stop_elapsed: Duration,
}

impl Outcome {
    /// Why the lifecycle stopped.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The process exit status, by the [`ExitCodes`] policy.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }

    /// Whether work was cancelled at the deadline or a second signal escalated the stop.
    pub fn forced(&self) -> bool {
        self.forced
    }

    /// Whether a second terminating signal skipped to the exit hooks.
    pub fn escalated(&self) -> bool {
        self.escalated
    }

    /// The signal that ended the run at once (a third terminating signal), if any.
    pub fn immediate(&self) -> Option<Signal> {
        self.immediate
    }

    /// Whether the run was clean: not forced, nothing failed (no hook failed or was skipped for
    /// want of budget, no work panicked or was lost).
    pub fn is_clean(&self) -> bool {
        !self.forced && self.failures().is_empty() && self.reason != Reason::Failure
    }

    /// One report per phase, in graph order.
    pub fn phases(&self) -> &[PhaseReport] {
        &self.phases
    }

    /// One report per registered hook, in the order they ran (skipped hooks last).
    pub fn hooks(&self) -> &[HookReport] {
        &self.hooks
    }

    /// The report of the hook named `name`.
    pub fn hook(&self, name: &str) -> Option<&HookReport> {
        self.hooks.iter().find(|report| report.name == name)
    }

    /// The report of `phase`.
    pub fn phase(&self, phase: &Phase) -> Option<&PhaseReport> {
        self.phases.iter().find(|report| &report.phase == phase)
    }

    /// How many tracked work items were still running at the drain deadline and were cancelled.
    pub fn cancelled_work(&self) -> usize {
        self.cancelled_work
    }

    /// How many cancelled work items had still not ended when their grace ran out and the exit
    /// side began anyway.
    pub fn outlived_grace(&self) -> usize {
        self.outlived_grace
    }

    /// How many tracked tasks panicked (each is logged with its message). Non-zero makes the
    /// run a failure: a panic in tracked work is a bug, not a way to end it.
    pub fn panicked_work(&self) -> usize {
        self.panicked_work
    }

    /// Named work still running at the drain deadline (or on escalation) when it was cancelled:
    /// what blocked the stop, with its phase and age. Unnamed work is only counted, in
    /// [`cancelled_work`](Self::cancelled_work).
    pub fn stuck_work(&self) -> &[WorkItem] {
        &self.stuck_work
    }

    /// What failed: hooks that erred, panicked or timed out, startup, critical tasks.
    pub fn failures(&self) -> Vec<String> {
        let mut out = self.failures.clone();
        out.extend(self.lost.iter().map(|what| format!("lost: {what}")));
        if self.panicked_work > 0 {
            out.push(format!("{} tracked task(s) panicked", self.panicked_work));
        }
        for hook in &self.hooks {
            match &hook.result {
                HookResult::Error(message) => out.push(format!(
                    "hook `{}` ({}) failed: {message}",
                    hook.name, hook.phase
                )),
                HookResult::Panicked(message) => out.push(format!(
                    "hook `{}` ({}) panicked: {message}",
                    hook.name, hook.phase
                )),
                HookResult::TimedOut => {
                    out.push(format!("hook `{}` ({}) timed out", hook.name, hook.phase))
                }
                _ => {}
            }
        }
        out
    }

    /// Work adapters handed back unfinished (requeued job ids), so nothing was lost.
    pub fn handed_back(&self) -> &[String] {
        &self.handed_back
    }

    /// Work that could neither finish nor be handed back; non-empty makes the run a failure.
    pub fn lost(&self) -> &[String] {
        &self.lost
    }

    /// Time from the trigger to the end of the run.
    pub fn stop_elapsed(&self) -> Duration {
        self.stop_elapsed
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reason={} exit_code={} forced={} cancelled_work={}",
            self.reason, self.exit_code, self.forced, self.cancelled_work
        )
    }
}

impl Termination for Outcome {
    fn report(self) -> ExitCode {
        ExitCode::from(self.exit_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_precedence() {
        let codes = ExitCodes::default();
        assert_eq!(codes.status(Reason::Stop, false, false), 0);
        assert_eq!(codes.status(Reason::Restart, false, false), 4);
        assert_eq!(codes.status(Reason::Restart, true, false), 1);
        assert_eq!(codes.status(Reason::Failure, false, false), 1);
        assert_eq!(codes.status(Reason::Restart, true, true), 2);
        assert_eq!(codes.status(Reason::Stop, false, true), 2);
    }
}
