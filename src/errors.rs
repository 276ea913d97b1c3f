//! Errors, one enum per concern.

use std::time::Duration;

/// Why [`Builder::build`](crate::Builder::build) rejected a lifecycle graph.
///
/// Every variant names the hooks or phases at fault, so the message alone says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two different hooks have the same name.
    #[error(
        "hook `{name}` is registered twice (in phase `{first}` and in phase `{second}`); give one of them another name"
    )]
    DuplicateHook {
        /// The name both hooks use.
        name: String,
        /// Phase of the first registration.
        first: String,
        /// Phase of the second registration.
        second: String,
    },
    /// A custom phase was declared twice, or a built-in phase was redeclared.
    #[error(
        "phase `{0}` is declared twice; declare each custom phase once (built-in phases need no declaration)"
    )]
    DuplicatePhase(String),
    /// A hook is ordered after or before a hook that is not registered.
    #[error(
        "hook `{hook}` is ordered {relation} `{dependency}`, but no hook named `{dependency}` is registered"
    )]
    UnknownDependency {
        /// The hook that declares the edge.
        hook: String,
        /// `after` or `before`.
        relation: &'static str,
        /// The missing hook.
        dependency: String,
    },
    /// A hook is ordered against a hook of another phase.
    #[error(
        "hook `{hook}` (phase `{phase}`) is ordered {relation} `{dependency}`, which is in phase `{other_phase}`; order hooks only within their phase (phases order themselves)"
    )]
    CrossPhaseDependency {
        /// The hook that declares the edge.
        hook: String,
        /// Its phase.
        phase: String,
        /// `after` or `before`.
        relation: &'static str,
        /// The hook it names.
        dependency: String,
        /// The phase of that hook.
        other_phase: String,
    },
    /// A hook or a phase edge names a phase that does not exist.
    #[error(
        "{user} names phase `{phase}`, which is neither built in (startup, running, stop_intake, drain, shutdown, wait, exit) nor declared with `Builder::phase`"
    )]
    UnknownPhase {
        /// Who names the phase: "hook `x`" or "phase `y`".
        user: String,
        /// The unknown phase.
        phase: String,
    },
    /// A custom phase has no edge tying it into the graph.
    #[error(
        "custom phase `{0}` has no `after` or `before` edge; anchor it, for example `.after(Phase::WAIT).before(Phase::EXIT)`"
    )]
    UnanchoredPhase(String),
    /// The hooks of a phase depend on each other in a circle.
    #[error("the hooks of phase `{phase}` form a cycle: {}", render_cycle(.cycle))]
    HookCycle {
        /// The phase.
        phase: String,
        /// Every hook in the cycle, in dependency order.
        cycle: Vec<String>,
    },
    /// The phases depend on each other in a circle.
    #[error("the phases form a cycle: {}", render_cycle(.cycle))]
    PhaseCycle {
        /// Every phase in the cycle, in order.
        cycle: Vec<String>,
    },
    /// A duration that must be positive is zero.
    #[error("{what} must be longer than zero")]
    ZeroDuration {
        /// Which setting: "the budget", "the timeout of hook `x`".
        what: String,
    },
    /// The exit reserve does not fit in the shutdown budget.
    #[error(
        "the exit reserve ({reserve:?}) must be shorter than the budget ({budget:?}); the rest of the budget is the drain deadline"
    )]
    ReserveTooLong {
        /// The exit reserve asked for.
        reserve: Duration,
        /// The whole shutdown budget.
        budget: Duration,
    },
    /// `teardown_of` pairs hooks that can't be paired.
    #[error(
        "hook `{hook}` is declared the teardown of `{startup}`, but {problem}; a teardown runs after `running` and pairs with a hook that runs before it"
    )]
    BadTeardown {
        /// The teardown hook.
        hook: String,
        /// The hook it claims to tear down.
        startup: String,
        /// What is wrong.
        problem: &'static str,
    },
}

fn render_cycle(cycle: &[String]) -> String {
    let mut out = cycle.join(" -> ");
    if let Some(first) = cycle.first() {
        out.push_str(" -> ");
        out.push_str(first);
    }
    out
}

/// Renders an error and its chain of sources on one line, `outer: inner: root`: the form hook
/// errors take in reports and logs.
///
/// ```
/// #[derive(Debug)]
/// struct FlushFailed(std::io::Error);
///
/// impl std::fmt::Display for FlushFailed {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("flush failed")
///     }
/// }
///
/// impl std::error::Error for FlushFailed {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let error = FlushFailed(std::io::Error::other("broker down"));
/// assert_eq!(lifecycle_hooks::errors::chain(&error), "flush failed: broker down");
/// ```
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        out.push_str(": ");
        out.push_str(&inner.to_string());
        source = inner.source();
    }
    out
}

/// The message of a caught panic (`&str` or `String` payloads; anything else is named as such):
/// what a hook or a job reports as `panicked`.
///
/// ```
/// let panic = std::panic::catch_unwind(|| panic!("bad state")).unwrap_err();
/// assert_eq!(lifecycle_hooks::errors::panic_message(&*panic), "bad state");
/// ```
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Why a named listener or a stored state blob could not be had. See
/// [`FdStore`](crate::FdStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The name cannot travel in `FDNAME=`/`LISTEN_FDNAMES` (empty, too long, a `:` or a control
    /// character).
    #[error(
        "`{name}` cannot name a stored file descriptor: use 1 to 255 printable characters without `:`"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// The inherited descriptor with this name is not what the caller asked for.
    #[error(
        "inherited file descriptor {fd} named `{name}` is not usable as {expected}: {found}; fix the unit's socket or the name"
    )]
    WrongSocket {
        /// The name it was passed under.
        name: String,
        /// Its number in this process.
        fd: i32,
        /// What the caller asked for (`a listening TCP socket on 127.0.0.1:8080`, ...).
        expected: String,
        /// What it is.
        found: String,
    },
    /// Binding a new listener failed.
    #[error("cannot bind listener `{name}` on {addr}")]
    Bind {
        /// The listener's name.
        name: String,
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Any other system call on the descriptor failed.
    #[error("file descriptor `{name}`: {what}")]
    Io {
        /// The name.
        name: String,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}
