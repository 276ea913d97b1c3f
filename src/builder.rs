//! Building and validating a lifecycle graph. See [`Builder`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::Control;
use crate::errors::BuildError;
use crate::event::{Event, EventHub, Observer};
use crate::graph;
use crate::handle::{Config, LifecycleHandle, Shared};
use crate::hook::{HookContext, HookSpec, IntoHookResult};
use crate::notify::Notifier;
use crate::outcome::ExitCodes;
use crate::phase::{Builtin, Phase, PhaseSpec};
use crate::runtime::{Lifecycle, Plan, PlannedHook, PlannedPhase};
use crate::signals::Signals;

/// The default shutdown budget, like Sidekiq's `-t 25`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);

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
            budget: DEFAULT_SHUTDOWN_TIMEOUT,
            reserve: None,
            grace: None,
            propagation_delay: Duration::ZERO,
            signals: Signals::default(),
            hard_exit: None,
            exit_codes: ExitCodes::default(),
            systemd: true,
            phases: Vec::new(),
            hooks: Vec::new(),
            concurrent: Vec::new(),
            observers: Vec::new(),
        }
    }
}

impl Builder {
    /// The shutdown budget: from the trigger to the end of the exit hooks (default 25 s).
    pub fn shutdown_timeout(mut self, budget: Duration) -> Self {
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
            return Err(zero("the shutdown timeout".into()));
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
        for hook in &self.hooks {
            if hook.timeout.is_some_and(|t| t.is_zero()) {
                return Err(zero(format!("the timeout of hook `{}`", hook.name)));
            }
        }

        let phases = order_phases(&self.phases)?;
        let hooks = dedupe(self.hooks)?;
        let plan = plan_hooks(phases, hooks, &self.concurrent)?;

        let notifier = if self.systemd {
            Notifier::from_env().unwrap_or_else(|error| {
                tracing::warn!(target: "lifecycle_hooks", %error, "NOTIFY_SOCKET unusable; no systemd notifications");
                None
            })
        } else {
            None
        };
        let hard_exit = self.hard_exit.unwrap_or(self.signals.listens());
        let pending = plan
            .phases
            .iter()
            .flat_map(|p| {
                p.hooks
                    .iter()
                    .map(move |h| Some(format!("{}/{}", p.phase, h.name)))
            })
            .collect();
        let shared = Shared {
            control: watch::Sender::new(Control::new()),
            tracker: TaskTracker::new(),
            intake: CancellationToken::new(),
            drain: CancellationToken::new(),
            cancel: CancellationToken::new(),
            cancel_wake: Arc::default(),
            cancel_fired: Default::default(),
            phase: watch::Sender::new(plan.phases[0].phase.clone()),
            ready: watch::Sender::new(false),
            events: EventHub::new(self.observers.into_iter().map(|o| o.0).collect()),
            config: Config {
                budget: self.budget,
                reserve,
                grace,
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

/// Orders built-in and custom phases into one sequence.
fn order_phases(custom: &[PhaseSpec]) -> Result<Vec<Phase>, BuildError> {
    let mut phases: Vec<Phase> = Phase::BUILTIN.to_vec();
    let mut index: HashMap<Phase, usize> = phases
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, p)| (p, i))
        .collect();
    for spec in custom {
        if index.contains_key(&spec.phase) {
            return Err(BuildError::DuplicatePhase(spec.phase.to_string()));
        }
        index.insert(spec.phase.clone(), phases.len());
        phases.push(spec.phase.clone());
    }
    let mut edges: Vec<(usize, usize)> = (1..Phase::BUILTIN.len()).map(|i| (i - 1, i)).collect();
    for spec in custom {
        if spec.after.is_empty() && spec.before.is_empty() {
            return Err(BuildError::UnanchoredPhase(spec.phase.to_string()));
        }
        let me = index[&spec.phase];
        let lookup = |other: &Phase| {
            index
                .get(other)
                .copied()
                .ok_or_else(|| BuildError::UnknownPhase {
                    user: format!("phase `{}`", spec.phase),
                    phase: other.to_string(),
                })
        };
        for other in &spec.after {
            edges.push((lookup(other)?, me));
        }
        for other in &spec.before {
            edges.push((me, lookup(other)?));
        }
    }
    let (sorted, _) = graph::order(phases.len(), &edges, |v| v as i64).map_err(|cycle| {
        BuildError::PhaseCycle {
            cycle: cycle.into_iter().map(|v| phases[v].to_string()).collect(),
        }
    })?;
    Ok(sorted.into_iter().map(|v| phases[v].clone()).collect())
}

/// Drops repeated registrations of the same hook (same name, same origin); rejects two different
/// hooks with one name.
fn dedupe(hooks: Vec<HookSpec>) -> Result<Vec<HookSpec>, BuildError> {
    let mut keep = vec![true; hooks.len()];
    {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(hooks.len());
        for (i, hook) in hooks.iter().enumerate() {
            if let Some(&at) = seen.get(&*hook.name) {
                let first = &hooks[at];
                if first.origin.is_some()
                    && first.origin == hook.origin
                    && first.phase == hook.phase
                {
                    keep[i] = false;
                    continue;
                }
                return Err(BuildError::DuplicateHook {
                    name: hook.name.to_string(),
                    first: first.phase.to_string(),
                    second: hook.phase.to_string(),
                });
            }
            seen.insert(&hook.name, i);
        }
    }
    if keep.iter().all(|&k| k) {
        return Ok(hooks);
    }
    Ok(hooks
        .into_iter()
        .zip(keep)
        .filter_map(|(h, k)| k.then_some(h))
        .collect())
}

/// Places every hook in its phase, in run order.
fn plan_hooks(
    phases: Vec<Phase>,
    hooks: Vec<HookSpec>,
    concurrent: &[Phase],
) -> Result<Plan, BuildError> {
    let position: HashMap<&Phase, usize> = phases.iter().enumerate().map(|(i, p)| (p, i)).collect();
    let running = position[&Phase::RUNNING];
    let wait = position[&Phase::WAIT];
    for phase in concurrent {
        if !position.contains_key(phase) {
            return Err(BuildError::UnknownPhase {
                user: "`Builder::concurrent`".into(),
                phase: phase.to_string(),
            });
        }
    }
    let mut by_phase: Vec<Vec<usize>> = vec![Vec::new(); phases.len()];
    let mut phase_of: HashMap<&str, usize> = HashMap::with_capacity(hooks.len());
    for (registered, hook) in hooks.iter().enumerate() {
        let Some(&at) = position.get(&hook.phase) else {
            return Err(BuildError::UnknownPhase {
                user: format!("hook `{}`", hook.name),
                phase: hook.phase.to_string(),
            });
        };
        phase_of.insert(&hook.name, at);
        by_phase[at].push(registered);
    }
    let mut slots: Vec<Option<HookSpec>> = hooks.iter().map(|_| None).collect();

    let names: Vec<String> = phases.iter().map(Phase::to_string).collect();
    let mut planned = Vec::with_capacity(phases.len());
    for (at, (phase, members)) in phases.iter().cloned().zip(&by_phase).enumerate() {
        let local: HashMap<&str, usize> = members
            .iter()
            .enumerate()
            .map(|(i, &r)| (&*hooks[r].name, i))
            .collect();
        let mut edges = Vec::new();
        for (i, hook) in members.iter().map(|&r| &hooks[r]).enumerate() {
            let deps = hook.after.iter().map(|d| ("after", d));
            for (relation, dependency) in deps.chain(hook.before.iter().map(|d| ("before", d))) {
                let j = match local.get(&**dependency) {
                    Some(&j) => j,
                    None => {
                        return Err(match phase_of.get(&**dependency) {
                            Some(&other) => BuildError::CrossPhaseDependency {
                                hook: hook.name.to_string(),
                                phase: phase.to_string(),
                                relation,
                                dependency: dependency.to_string(),
                                other_phase: names[other].clone(),
                            },
                            None => BuildError::UnknownDependency {
                                hook: hook.name.to_string(),
                                relation,
                                dependency: dependency.to_string(),
                            },
                        });
                    }
                };
                edges.push(if relation == "after" { (j, i) } else { (i, j) });
            }
            if let Some(startup) = &hook.teardown_of {
                let problem = match phase_of.get(&**startup) {
                    None => Some("no hook of that name is registered"),
                    Some(&other) if other >= running => {
                        Some("that hook does not run before `running`")
                    }
                    Some(_) if at <= running => Some("the teardown itself runs before `running`"),
                    Some(_) => None,
                };
                if let Some(problem) = problem {
                    return Err(BuildError::BadTeardown {
                        hook: hook.name.to_string(),
                        startup: startup.to_string(),
                        problem,
                    });
                }
            }
        }
        // Startup side in registration order; teardown side in reverse (Sidekiq, fx).
        let teardown = at > running;
        let rank = |v: usize| {
            let registered = members[v] as i64;
            if teardown { -registered } else { registered }
        };
        let (sorted, levels) =
            graph::order(members.len(), &edges, rank).map_err(|cycle| BuildError::HookCycle {
                phase: phase.to_string(),
                cycle: cycle
                    .iter()
                    .map(|&v| hooks[members[v]].name.to_string())
                    .collect(),
            })?;
        planned.push((phase, sorted, levels));
    }
    drop(phase_of);
    for (r, hook) in hooks.into_iter().enumerate() {
        slots[r] = Some(hook);
    }
    let planned: Vec<PlannedPhase> = planned
        .into_iter()
        .zip(&by_phase)
        .map(|((phase, sorted, levels), members)| {
            let planned_hooks = sorted
                .into_iter()
                .map(|v| {
                    let spec = slots[members[v]].take().expect("each hook is placed once");
                    PlannedHook {
                        name: spec.name,
                        timeout: spec.timeout,
                        teardown_of: spec.teardown_of,
                        hook: spec.hook,
                        on_skipped: spec.on_skipped,
                        level: levels[v],
                    }
                })
                .collect();
            PlannedPhase {
                builtin: phase.builtin(),
                concurrent: concurrent.contains(&phase),
                phase,
                hooks: planned_hooks,
            }
        })
        .collect();
    debug_assert_eq!(planned[running].builtin, Some(Builtin::Running));
    Ok(Plan {
        phases: planned,
        running,
        exit_side: wait + 1,
    })
}
