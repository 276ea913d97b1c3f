//! Phases: the nodes of the lifecycle graph. See [`Phase`].

use std::borrow::Cow;
use std::fmt;

/// A phase of the lifecycle: one of the seven built-in phases or a custom one.
///
/// Built-in phases run in this order, each with a built-in action before its hooks:
///
/// | phase | built-in action | hooks |
/// |---|---|---|
/// | [`STARTUP`](Phase::STARTUP) | — | in registration order; a failure tears down what started |
/// | [`RUNNING`](Phase::RUNNING) | readiness true, `READY=1`; wait for a trigger | — |
/// | [`STOP_INTAKE`](Phase::STOP_INTAKE) | readiness false, `STOPPING=1`, propagation delay, intake token cancelled | `#[on_stop_intake]` |
/// | [`DRAIN`](Phase::DRAIN) | drain token cancelled: long work is told to wrap up | — |
/// | [`SHUTDOWN`](Phase::SHUTDOWN) | — (work may still be in flight) | `#[on_shutdown]` |
/// | [`WAIT`](Phase::WAIT) | wait for all tracked work, until the drain deadline; then cancel the rest | — |
/// | [`EXIT`](Phase::EXIT) | — (all work has ended) | `#[on_exit]` |
///
/// Custom phases are declared with [`PhaseSpec`] and placed with `after`/`before` edges.
///
/// ```
/// use lifecycle_hooks::Phase;
/// assert_eq!(Phase::EXIT.name(), "exit");
/// assert!(Phase::from("exit").is_builtin());
/// assert!(!Phase::custom("flush_metrics").is_builtin());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phase(Cow<'static, str>);

impl Phase {
    /// Startup hooks run here, before the service is ready.
    pub const STARTUP: Phase = Phase(Cow::Borrowed("startup"));
    /// The service runs and is ready until a trigger arrives.
    pub const RUNNING: Phase = Phase(Cow::Borrowed("running"));
    /// Readiness goes false and every intake source stops taking new work.
    pub const STOP_INTAKE: Phase = Phase(Cow::Borrowed("stop_intake"));
    /// In-flight work goes on; long work is told to wrap up.
    pub const DRAIN: Phase = Phase(Cow::Borrowed("drain"));
    /// Shutdown hooks run while work may still be in flight (Sidekiq's `:shutdown`).
    pub const SHUTDOWN: Phase = Phase(Cow::Borrowed("shutdown"));
    /// Waits until all tracked work has ended, bounded by the drain deadline.
    pub const WAIT: Phase = Phase(Cow::Borrowed("wait"));
    /// Exit hooks run after all work has ended (Sidekiq's `:exit`).
    pub const EXIT: Phase = Phase(Cow::Borrowed("exit"));

    /// The built-in phases, in the order they run.
    pub const BUILTIN: [Phase; 7] = [
        Phase::STARTUP,
        Phase::RUNNING,
        Phase::STOP_INTAKE,
        Phase::DRAIN,
        Phase::SHUTDOWN,
        Phase::WAIT,
        Phase::EXIT,
    ];

    /// A phase by name; a built-in name gives the built-in phase.
    pub fn custom(name: impl Into<Cow<'static, str>>) -> Phase {
        Phase(name.into())
    }

    /// The phase's name, as it appears in events, reports and logs.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Whether this is one of the seven built-in phases.
    pub fn is_builtin(&self) -> bool {
        self.builtin().is_some()
    }

    pub(crate) fn builtin(&self) -> Option<Builtin> {
        Some(match self.name() {
            "startup" => Builtin::Startup,
            "running" => Builtin::Running,
            "stop_intake" => Builtin::StopIntake,
            "drain" => Builtin::Drain,
            "shutdown" => Builtin::Shutdown,
            "wait" => Builtin::Wait,
            "exit" => Builtin::Exit,
            _ => return None,
        })
    }
}

/// The built-in phases, for matching on their actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    Startup,
    Running,
    StopIntake,
    Drain,
    Shutdown,
    Wait,
    Exit,
}

impl fmt::Debug for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phase({})", self.0)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&'static str> for Phase {
    fn from(name: &'static str) -> Self {
        Phase(Cow::Borrowed(name))
    }
}

impl From<String> for Phase {
    fn from(name: String) -> Self {
        Phase(Cow::Owned(name))
    }
}

impl From<&Phase> for Phase {
    fn from(phase: &Phase) -> Self {
        phase.clone()
    }
}

/// A custom phase and where it sits in the graph.
///
/// ```
/// use lifecycle_hooks::{Lifecycle, Phase, PhaseSpec};
///
/// let lifecycle = Lifecycle::builder()
///     .phase(PhaseSpec::new("flush_metrics").after(Phase::WAIT).before(Phase::EXIT))
///     .on_phase("flush_metrics", "push_gauges", |_ctx| async {})
///     .build()
///     .expect("a valid graph");
/// # drop(lifecycle);
/// ```
#[derive(Clone, Debug)]
#[must_use = "a PhaseSpec does nothing until it is passed to `Builder::phase`"]
pub struct PhaseSpec {
    pub(crate) phase: Phase,
    pub(crate) after: Vec<Phase>,
    pub(crate) before: Vec<Phase>,
}

impl PhaseSpec {
    /// A custom phase named `name`.
    pub fn new(name: impl Into<Phase>) -> Self {
        PhaseSpec {
            phase: name.into(),
            after: Vec::new(),
            before: Vec::new(),
        }
    }

    /// This phase runs after `phase`.
    pub fn after(mut self, phase: impl Into<Phase>) -> Self {
        self.after.push(phase.into());
        self
    }

    /// This phase runs before `phase`.
    pub fn before(mut self, phase: impl Into<Phase>) -> Self {
        self.before.push(phase.into());
        self
    }
}
