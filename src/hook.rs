//! Hooks: named steps that run in a phase. See [`HookSpec`] and [`Hook`].

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::BoxError;
use crate::handle::LifecycleHandle;
use crate::outcome::{IntoHookResult, Reason};
use crate::phase::Phase;

/// Something that runs as a hook.
///
/// Any `Fn(HookContext) -> impl Future<Output = R>` with `R` either `()` or `Result<(), E>`
/// (`E: Into<BoxError>`) is a `Hook`; the attribute macros build hooks from functions the same way.
pub trait Hook: Send + Sync + 'static {
    /// Starts one run of the hook.
    fn run(&self, ctx: HookContext) -> BoxFuture<'static, Result<(), BoxError>>;
}

impl<F, Fut, R> Hook for F
where
    F: Fn(HookContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoHookResult,
{
    fn run(&self, ctx: HookContext) -> BoxFuture<'static, Result<(), BoxError>> {
        let fut = self(ctx);
        Box::pin(async move { fut.await.into_hook_result() })
    }
}

/// A hook with its name, phase, ordering and timeout, ready to be added with
/// [`Builder::hook`](crate::Builder::hook).
///
/// ```
/// use std::time::Duration;
/// use lifecycle_hooks::{HookSpec, Lifecycle, Phase};
///
/// let close = HookSpec::new(Phase::EXIT, "close_producer", |_ctx| async {
///     Ok::<(), std::io::Error>(())
/// })
/// .after("flush_metrics")
/// .timeout(Duration::from_secs(5));
///
/// let lifecycle = Lifecycle::builder()
///     .hook(close)
///     .on_exit("flush_metrics", |_ctx| async {})
///     .build()
///     .expect("a valid graph");
/// # drop(lifecycle);
/// ```
#[derive(Clone)]
#[must_use = "a HookSpec does nothing until it is passed to `Builder::hook`"]
pub struct HookSpec {
    pub(crate) name: Cow<'static, str>,
    pub(crate) phase: Phase,
    pub(crate) after: Vec<Cow<'static, str>>,
    pub(crate) before: Vec<Cow<'static, str>>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) teardown_of: Option<Cow<'static, str>>,
    pub(crate) origin: Option<&'static str>,
    pub(crate) hook: Arc<dyn Hook>,
    pub(crate) on_skipped: Option<SkippedCallback>,
}

/// Called when a hook is recorded as skipped; see [`HookSpec::on_skipped`].
pub(crate) type SkippedCallback = Arc<dyn Fn(&LifecycleHandle) + Send + Sync + 'static>;

impl HookSpec {
    /// A hook named `name` that runs `hook` in `phase`.
    pub fn new(
        phase: impl Into<Phase>,
        name: impl Into<Cow<'static, str>>,
        hook: impl Hook,
    ) -> Self {
        HookSpec {
            name: name.into(),
            phase: phase.into(),
            after: Vec::new(),
            before: Vec::new(),
            timeout: None,
            teardown_of: None,
            origin: None,
            hook: Arc::new(hook),
            on_skipped: None,
        }
    }

    /// Runs after the hook named `name` (same phase).
    pub fn after(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.after.push(name.into());
        self
    }

    /// Runs before the hook named `name` (same phase).
    pub fn before(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.before.push(name.into());
        self
    }

    /// Abandons the hook, reported as timed out, if it runs longer than `timeout`.
    ///
    /// The hook is also bounded by the shutdown budget, whichever ends first.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Pairs this teardown-side hook with the startup hook `startup`.
    ///
    /// If startup fails, only the teardowns of startup hooks that succeeded run (plus teardown
    /// hooks paired with nothing), so nothing is closed that was never opened.
    pub fn teardown_of(mut self, startup: impl Into<Cow<'static, str>>) -> Self {
        self.teardown_of = Some(startup.into());
        self
    }

    /// Marks where the hook was defined (the macros pass `module_path!()::name`); for the
    /// macros' generated code, not a public API.
    ///
    /// Two registrations with the same name and the same origin are the same hook, and it runs
    /// once; the same name with different origins is a duplicate and `build()` rejects it.
    #[doc(hidden)]
    pub fn origin(mut self, origin: &'static str) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Runs `callback` if the hook never runs (its phase was skipped, or the budget was used up
    /// before its turn), synchronously, before the [`Outcome`](crate::Outcome) is built.
    ///
    /// An adapter whose exit hook settles work (closes a producer, hands jobs back) uses this to
    /// report what a skipped hook leaves unsettled with
    /// [`LifecycleHandle::report_lost`], so nothing is dropped silently.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lifecycle_hooks::{HookSpec, Lifecycle, Phase, Signals};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let close = HookSpec::new(Phase::EXIT, "close", |_ctx| async {})
    ///     .on_skipped(|handle| handle.report_lost("3 queued messages"));
    /// let lifecycle = Lifecycle::builder()
    ///     .signals(Signals::none())
    ///     .budget(Duration::from_secs(1))
    ///     .hook(close)
    ///     // Exit hooks run in reverse registration order: this one first, and it uses the
    ///     // whole budget, so `close` never gets its turn.
    ///     .on_exit("slow", |_ctx| tokio::time::sleep(Duration::from_secs(10)))
    ///     .build()
    ///     .unwrap();
    /// lifecycle.handle().stop();
    /// let outcome = lifecycle.run().await;
    /// assert_eq!(outcome.lost(), ["3 queued messages"]);
    /// assert_eq!(outcome.exit_code(), 1);
    /// # }
    /// ```
    pub fn on_skipped(
        mut self,
        callback: impl Fn(&LifecycleHandle) + Send + Sync + 'static,
    ) -> Self {
        self.on_skipped = Some(Arc::new(callback));
        self
    }

    /// The hook's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The phase the hook runs in.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }
}

impl fmt::Debug for HookSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookSpec")
            .field("name", &self.name)
            .field("phase", &self.phase)
            .field("after", &self.after)
            .field("before", &self.before)
            .field("timeout", &self.timeout)
            .field("teardown_of", &self.teardown_of)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// What a running hook knows: its phase and name, when it will be abandoned, and the lifecycle.
#[derive(Clone, Debug)]
pub struct HookContext {
    pub(crate) phase: Phase,
    pub(crate) name: Cow<'static, str>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) handle: LifecycleHandle,
    /// What the hook reports about its work, for its [`HookReport`](crate::HookReport). Shared
    /// with the runner; locked only to set or take it.
    pub(crate) note: Arc<parking_lot::Mutex<Option<String>>>,
}

impl HookContext {
    /// The phase this hook runs in.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The hook's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the hook will be abandoned, if it is bounded (by its timeout or by the budget).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How long the hook has left, if it is bounded. A flush should use this as its timeout.
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Why the lifecycle is stopping, once a trigger has arrived.
    pub fn reason(&self) -> Option<Reason> {
        self.handle.reason()
    }

    /// The lifecycle this hook belongs to.
    pub fn handle(&self) -> &LifecycleHandle {
        &self.handle
    }

    /// Puts a line about what the hook did into its report
    /// ([`HookReport::note`](crate::HookReport::note)) and the log: `completed=120 cut=2` from a
    /// server's close, `flushed=40` from a producer's. A later call replaces an earlier one; the
    /// note is kept whatever the hook's result, even if it is cut off after setting it.
    ///
    /// ```
    /// use lifecycle_hooks::testing;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let lifecycle = testing::builder()
    ///     .on_exit("close_server", |ctx| async move { ctx.note("completed=120 cut=2") })
    ///     .build()
    ///     .unwrap();
    /// lifecycle.handle().stop();
    /// let outcome = lifecycle.run().await;
    /// let report = outcome.hook("close_server").unwrap();
    /// assert_eq!(report.note.as_deref(), Some("completed=120 cut=2"));
    /// # }
    /// ```
    pub fn note(&self, note: impl Into<String>) {
        *self.note.lock() = Some(note.into());
    }
}
