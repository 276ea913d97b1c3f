//! Building and validating a lifecycle graph. See [`Builder`].

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::control::{Control, ControlCell};
use crate::deadline::Budget;
use crate::errors::BuildError;
use crate::event::{Event, EventHub, Observer};
use crate::handle::{Config, LifecycleHandle, Shared};
use crate::hook::{HookContext, HookSpec};
use crate::lifecycle::Lifecycle;
use crate::notify::Notifier;
use crate::outcome::{ExitCodes, IntoHookResult};
use crate::phase::{Phase, PhaseSpec};
use crate::plan::{dedupe, order_phases, plan_hooks};
use crate::signals::Signals;

/// The default shutdown budget, like Sidekiq's `-t 25`.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(25);

/// Builds a [`Lifecycle`]: budget, signals, phases, hooks, observers.
///
/// [`build`](Builder::build) checks the whole graph and rejects cycles, unknown names, duplicates
/// and zero durations with a [`BuildError`] that names the culprit.
///
/// ```
/// use std::time::Duration;
/// use lifecycle_hooks::{Lifecycle, errors::BuildError};
///
/// let err = Lifecycle::builder()
///     .on_exit("a", |_ctx| async {})
///     .hook(lifecycle_hooks::HookSpec::new("exit", "b", |_ctx| async {}).after("a").before("a"))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.to_string(), "the hooks of phase `exit` form a cycle: a -> b -> a");
/// ```
#[derive(Debug)]
#[must_use = "a Builder does nothing until `build()` is called"]
pub struct Builder {
    budget: Duration,
    reserve: Option<Duration>,
    grace: Option<Duration>,
    propagation_delay: Duration,
    signals: Signals,
    hard_exit: Option<bool>,
    exit_codes: ExitCodes,
    systemd: bool,
    notify_socket: Option<(String, Option<Duration>)>,
    phases: Vec<PhaseSpec>,
    hooks: Vec<HookSpec>,
    concurrent: Vec<Phase>,
    observers: Vec<ObserverDebug>,
}

/// An observer with a `Debug` impl, so `Builder` can derive it.
struct ObserverDebug(Observer);

impl std::fmt::Debug for ObserverDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            budget: DEFAULT_BUDGET,
            reserve: None,
            grace: None,
            propagation_delay: Duration::ZERO,
            signals: Signals::default(),
            hard_exit: None,
            exit_codes: ExitCodes::default(),
            systemd: true,
            notify_socket: None,
            phases: Vec::new(),
            hooks: Vec::new(),
            concurrent: Vec::new(),
            observers: Vec::new(),
        }
    }
}

impl Lifecycle {
    /// A builder with the defaults: 25 s budget, default signals, no hooks.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl Builder {
    /// The shutdown budget: from the trigger to the end of the exit hooks (default 25 s).
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The part of the budget kept for the exit phase (default: a fifth of the budget). The
    /// drain deadline is the trigger plus the budget minus this reserve.
    pub fn exit_reserve(mut self, reserve: Duration) -> Self {
        self.reserve = Some(reserve);
        self
    }

    /// How long work cancelled at the drain deadline gets to hand itself back before the exit
    /// phase begins (default: a fifth of the exit reserve).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// A pause between readiness going false and intake stopping, so a load balancer stops
    /// routing first (Kubernetes' endpoint race). Default 0. It counts against the budget.
    pub fn propagation_delay(mut self, delay: Duration) -> Self {
        self.propagation_delay = delay;
        self
    }

    /// Which signals to listen to and what they mean (default: [`Signals::default()`]).
    pub fn signals(mut self, signals: Signals) -> Self {
        self.signals = signals;
        self
    }

    /// Whether a third terminating signal calls `std::process::exit` (default: only when OS
    /// signals are installed). Otherwise `run()` returns at once with status 128 + signal.
    pub fn hard_exit(mut self, hard_exit: bool) -> Self {
        self.hard_exit = Some(hard_exit);
        self
    }

    /// The exit-status policy (default 0 stop, 4 restart, 1 failure, 2 forced).
    pub fn exit_codes(mut self, exit_codes: ExitCodes) -> Self {
        self.exit_codes = exit_codes;
        self
    }

    /// Whether to send systemd notifications when `NOTIFY_SOCKET` is set (default true).
    pub fn systemd_notify(mut self, enabled: bool) -> Self {
        self.systemd = enabled;
        self
    }

    /// Sends systemd notifications to this socket (a path, or `@name` for an abstract socket),
    /// whatever `NOTIFY_SOCKET` says, with the watchdog fed every `watchdog` if given. For
    /// embedding under a supervisor that speaks the notify protocol, and for tests.
    pub fn notify_socket(mut self, path: impl Into<String>, watchdog: Option<Duration>) -> Self {
        self.systemd = true;
        self.notify_socket = Some((path.into(), watchdog));
        self
    }

    /// Declares a custom phase.
    pub fn phase(mut self, phase: PhaseSpec) -> Self {
        self.phases.push(phase);
        self
    }

    /// Adds a hook.
    pub fn hook(mut self, hook: HookSpec) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Adds several hooks, in order (`hooks![a, b]` from the macros crate gives such a list).
    pub fn hooks(mut self, hooks: impl IntoIterator<Item = HookSpec>) -> Self {
        self.hooks.extend(hooks);
        self
    }

    /// Adds a hook to `phase` from a closure.
    pub fn on_phase<F, Fut, R>(
        self,
        phase: impl Into<Phase>,
        name: impl Into<Cow<'static, str>>,
        hook: F,
    ) -> Self
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHookResult,
    {
        self.hook(HookSpec::new(phase, name, hook))
    }

    /// Adds a startup hook: runs in registration order before the service is ready.
    pub fn on_startup<F, Fut, R>(self, name: impl Into<Cow<'static, str>>, hook: F) -> Self
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHookResult,
    {
        self.on_phase(Phase::STARTUP, name, hook)
    }

    /// Adds a stop-intake hook: runs when intake stops (stop accepting, stop fetching).
    pub fn on_stop_intake<F, Fut, R>(self, name: impl Into<Cow<'static, str>>, hook: F) -> Self
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHookResult,
    {
        self.on_phase(Phase::STOP_INTAKE, name, hook)
    }

    /// Adds a shutdown hook: runs while work may still be in flight (Sidekiq's `:shutdown`).
    pub fn on_shutdown<F, Fut, R>(self, name: impl Into<Cow<'static, str>>, hook: F) -> Self
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHookResult,
    {
        self.on_phase(Phase::SHUTDOWN, name, hook)
    }

    /// Adds an exit hook: runs after all work has ended (Sidekiq's `:exit`). Close producers and
    /// flush telemetry here.
    pub fn on_exit<F, Fut, R>(self, name: impl Into<Cow<'static, str>>, hook: F) -> Self
    where
        F: Fn(HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHookResult,
    {
        self.on_phase(Phase::EXIT, name, hook)
    }

    /// Runs the hooks of `phase` that do not depend on each other concurrently, level by level.
    /// Default: every phase runs its hooks one at a time, in a deterministic order.
    pub fn concurrent(mut self, phase: impl Into<Phase>) -> Self {
        self.concurrent.push(phase.into());
        self
    }

    /// Calls `observer` with every event, synchronously, as it happens.
    pub fn observe(mut self, observer: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.observers.push(ObserverDebug(Arc::new(observer)));
        self
    }

    /// Checks the graph and builds the lifecycle.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the culprit: a cycle of hooks or phases (every member named), an
    /// unknown dependency or phase, a duplicate name, a zero duration, a reserve that does not fit.
    pub fn build(self) -> Result<Lifecycle, BuildError> {
        let zero = |what: String| BuildError::ZeroDuration { what };
        if self.budget.is_zero() {
            return Err(zero("the budget".into()));
        }
        let reserve = match self.reserve {
            Some(reserve) if reserve.is_zero() => return Err(zero("the exit reserve".into())),
            Some(reserve) => reserve,
            None => self.budget / 5,
        };
        if reserve >= self.budget {
            return Err(BuildError::ReserveTooLong {
                reserve,
                budget: self.budget,
            });
        }
        if self.grace.is_some_and(|grace| grace.is_zero()) {
            return Err(zero("the cancel grace".into()));
        }
        let grace = self.grace.unwrap_or(reserve / 5);
        let budget = Budget {
            total: self.budget,
            reserve,
            grace,
        };
        for hook in &self.hooks {
            if hook.timeout.is_some_and(|t| t.is_zero()) {
                return Err(zero(format!("the timeout of hook `{}`", hook.name)));
            }
        }

        let phases = order_phases(&self.phases)?;
        let hooks = dedupe(self.hooks)?;
        let plan = plan_hooks(phases, hooks, &self.concurrent)?;

        let notifier = if let (true, Some((path, watchdog))) = (self.systemd, &self.notify_socket) {
            match Notifier::connect(path) {
                Ok(mut notifier) => {
                    notifier.watchdog = watchdog.filter(|w| !w.is_zero());
                    Some(Arc::new(notifier))
                }
                Err(error) => {
                    tracing::warn!(target: "lifecycle_hooks", %error, path, "notify socket unusable; no systemd notifications");
                    None
                }
            }
        } else if self.systemd {
            Notifier::from_env().unwrap_or_else(|error| {
                tracing::warn!(target: "lifecycle_hooks", %error, "NOTIFY_SOCKET unusable; no systemd notifications");
                None
            })
            .map(Arc::new)
        } else {
            None
        };
        let hard_exit = self.hard_exit.unwrap_or(self.signals.listens());
        let pending = plan.hook_names();
        let shared = Shared {
            control: Arc::new(ControlCell::new(Control::new(budget))),
            tracker: Default::default(),
            intake: CancellationToken::new(),
            drain: CancellationToken::new(),
            cancel: CancellationToken::new(),
            cancel_wake: Default::default(),
            stopping_sent: CancellationToken::new(),
            work: Arc::new(crate::work::WorkRegistry::new(plan.phases[0].phase.clone())),
            stored: Default::default(),
            phase: watch::Sender::new(plan.phases[0].phase.clone()),
            ready: watch::Sender::new(false),
            events: EventHub::new(self.observers.into_iter().map(|o| o.0).collect()),
            config: Config {
                budget,
                propagation_delay: self.propagation_delay,
                signals: self.signals,
                hard_exit,
                exit_codes: self.exit_codes,
                notifier,
            },
            failures: Mutex::new(Vec::new()),
            handed_back: Mutex::new(Vec::new()),
            lost: Mutex::new(Vec::new()),
            pending: Mutex::new(pending),
        };
        Ok(Lifecycle::new(
            LifecycleHandle {
                shared: Arc::new(shared),
            },
            plan,
        ))
    }
}
