//! The cloneable handle to a lifecycle. See [`LifecycleHandle`].

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::BoxError;
use crate::cancel::Cancellable;
use crate::control::{ControlCell, Effect, Escalation};
use crate::deadline::{Budget, Deadlines};
use crate::errors::{chain, panic_message};
use crate::event::{Event, EventHub, EventStream, Snapshot};
use crate::milestone::{Milestone, Reload};
use crate::notify::Notifier;
use crate::outcome::{ExitCodes, IntoHookResult, Reason};
use crate::phase::Phase;
use crate::signals::{Signal, Signals};
use crate::tracker::Tracker;
use crate::work::{NamedKey, WorkRegistry, WorkSource};

/// Settings fixed at build time.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) budget: Budget,
    pub(crate) propagation_delay: Duration,
    pub(crate) signals: Signals,
    pub(crate) hard_exit: bool,
    pub(crate) exit_codes: ExitCodes,
    pub(crate) notifier: Option<Arc<Notifier>>,
}

/// State shared by the lifecycle and all its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Triggers and escalation: copied out under one short lock, and awaited by version.
    pub(crate) control: Arc<ControlCell>,
    /// Every tracked task, future and guard.
    pub(crate) tracker: Tracker,
    /// Cancelled when intake stops.
    pub(crate) intake: CancellationToken,
    /// Cancelled when the drain begins.
    pub(crate) drain: CancellationToken,
    /// Cancelled at the drain deadline (or on escalation): remaining work must stop now.
    pub(crate) cancel: CancellationToken,
    /// Fired with `cancel`: the spawned tasks still waiting, woken so each ends at its next
    /// poll, and the count of those that panicked. One pointer per spawned task.
    pub(crate) cancel_wake: crate::cancel::CancelWake,
    /// Cancelled once the runner has sent `STOPPING=1`: from then on the stop timeout may be
    /// extended.
    pub(crate) stopping_sent: CancellationToken,
    /// Named work in flight, for the stuck-work report.
    pub(crate) work: Arc<WorkRegistry>,
    /// Names this process put in systemd's fd store, removed again on a final stop.
    pub(crate) stored: Arc<crate::fdstore::Stored>,
    pub(crate) phase: watch::Sender<Phase>,
    pub(crate) ready: watch::Sender<bool>,
    pub(crate) events: EventHub,
    pub(crate) config: Config,
    /// Failures that are not hook results (critical tasks, startup); locked briefly, never across
    /// an await.
    pub(crate) failures: Mutex<Vec<String>>,
    /// Work handed back by adapters (requeued jobs), then work that could not be handed back.
    pub(crate) handed_back: Mutex<Vec<String>>,
    pub(crate) lost: Mutex<Vec<String>>,
    /// Every hook in plan order as `phase/name`, emptied as each one reports: the pending hooks
    /// for state dumps.
    pub(crate) pending: Mutex<Vec<Option<String>>>,
}

impl crate::cancel::CancelOwner for Shared {
    fn cancel_wake(&self) -> &crate::cancel::CancelWake {
        &self.cancel_wake
    }
    fn tracker(&self) -> &Tracker {
        &self.tracker
    }
}

impl Shared {
    /// Not ready, intake stopped, drain begun: what stop_intake and drain signal, for the paths
    /// that skip them (escalation, failed startup, a lifecycle dropped unrun). Idempotent.
    pub(crate) fn end_intake_and_drain(&self) {
        self.ready.send_replace(false);
        self.intake.cancel();
        self.drain.cancel();
    }

    /// Cancels the work still in flight: the cancel token for those who wait on it, then every
    /// task spawned by [`LifecycleHandle::spawn`] (see [`CancelWake::fire`]).
    ///
    /// Every milestone's token is cancelled first (intake and drain already are, on every path
    /// that gets here): a spawned task waiting on one of them keeps no waker in `CancelWake`
    /// (see `cancel::claim`), and is woken by its milestone, before the fire.
    pub(crate) fn cancel_work(&self) {
        self.intake.cancel();
        self.drain.cancel();
        self.cancel.cancel();
        self.cancel_wake.fire();
    }
}

/// A cheap, cloneable handle to a lifecycle: spawn and track work, watch the phase, trigger a stop.
///
/// ```
/// use lifecycle_hooks::{Lifecycle, Signals};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = Lifecycle::builder().signals(Signals::none()).build().unwrap();
/// let handle = lifecycle.handle();
/// handle.spawn({
///     let handle = handle.clone();
///     async move {
///         handle.draining().await; // finish the current unit of work, then return
///     }
/// });
/// handle.stop();
/// let outcome = lifecycle.run().await;
/// assert_eq!(outcome.exit_code(), 0);
/// # }
/// ```
#[derive(Clone)]
pub struct LifecycleHandle {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for LifecycleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifecycleHandle")
            .field("phase", &*self.shared.phase.borrow())
            .field("in_flight", &self.shared.tracker.len())
            .finish_non_exhaustive()
    }
}

impl LifecycleHandle {
    /// Requests a graceful stop (exit status 0 when clean). Idempotent: calling it again, from
    /// any number of tasks, does nothing more; only signals escalate.
    pub fn stop(&self) {
        self.request(Reason::Stop);
    }

    /// Requests a graceful restart: the same path as [`stop`](Self::stop), exit status 4 when
    /// clean. If a stop is already under way, its reason stays.
    pub fn restart(&self) {
        self.request(Reason::Restart);
    }

    /// Stops intake and keeps running until [`stop`](Self::stop) or [`restart`](Self::restart).
    pub fn quiet(&self) {
        self.shared.control.update(|c| c.quiet() != Effect::Nothing);
    }

    /// Reports a failure and requests a stop with reason [`Reason::Failure`] (exit status 1).
    pub fn fail(&self, what: impl Into<String>) {
        let what = what.into();
        tracing::error!(target: "lifecycle_hooks", failure = %what, "failure: stopping");
        self.shared.failures.lock().push(what);
        self.request(Reason::Failure);
    }

    /// Delivers `signal` as if the OS had: the same path real signals take, with escalation.
    pub fn trigger(&self, signal: Signal) {
        let Some(action) = self.shared.config.signals.action(signal) else {
            tracing::debug!(target: "lifecycle_hooks", %signal, "signal not mapped; ignored");
            return;
        };
        let now = Instant::now();
        let mut effect = Effect::Nothing;
        let hard_exit = self.shared.config.hard_exit;
        self.shared.control.update(|c| {
            effect = c.signal(signal, action, now);
            match effect {
                Effect::Nothing | Effect::Dump => false,
                // Exiting the process: don't wake the runner, which would race us to print an
                // outcome that never happens.
                Effect::Escalated(Escalation::Immediate(_)) => !hard_exit,
                _ => true,
            }
        });
        match effect {
            // The runner announces starts and quiet itself, so they are ordered with its phases.
            Effect::Started(_) | Effect::Quiet => {}
            Effect::Nothing => {
                tracing::debug!(target: "lifecycle_hooks", %signal, "signal changes nothing now")
            }
            Effect::Absorbed => {
                tracing::warn!(target: "lifecycle_hooks", %signal, "stop signal during a restart: still a restart");
                self.shared.events.emit(Event::Absorbed { signal });
            }
            Effect::Escalated(Escalation::SkipToExit) => {
                tracing::warn!(target: "lifecycle_hooks", %signal, "second signal: skipping to the exit hooks");
                self.shared.events.emit(Event::Escalated { signal });
            }
            Effect::Escalated(_) => self.exit_now(signal),
            Effect::Dump => self.dump_state(),
        }
    }

    pub(crate) fn request(&self, reason: Reason) {
        let now = Instant::now();
        self.shared
            .control
            .update(|c| c.request(reason, now) != Effect::Nothing);
    }

    fn exit_now(&self, signal: Signal) {
        let code = self.shared.config.exit_codes.immediate(signal);
        tracing::error!(target: "lifecycle_hooks", %signal, exit_code = code, "third signal: exiting at once");
        if self.shared.config.hard_exit {
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            std::process::exit(i32::from(code));
        }
    }

    /// Records work an adapter handed back unfinished (a requeued job id): it appears in
    /// [`Outcome::handed_back`](crate::Outcome::handed_back).
    pub fn report_handed_back(&self, what: impl Into<String>) {
        self.shared.handed_back.lock().push(what.into());
    }

    /// Records work that could neither finish nor be handed back (a job id whose requeue failed):
    /// it appears in [`Outcome::lost`](crate::Outcome::lost) and makes the run a failure.
    pub fn report_lost(&self, what: impl Into<String>) {
        let what = what.into();
        tracing::error!(target: "lifecycle_hooks", lost = %what, "work lost: neither finished nor handed back");
        self.shared.lost.lock().push(what);
    }

    /// Tells systemd a configuration reload began (`RELOADING=1` with `MONOTONIC_USEC=`, for
    /// `Type=notify-reload`); `READY=1` follows when the returned [`Reload`] is done or dropped.
    /// Without `NOTIFY_SOCKET` nothing is sent, and nothing either once a stop has begun
    /// (systemd has heard `STOPPING=1`: a reload or a readiness after it would contradict it).
    pub fn reloading(&self) -> Reload {
        if let Some(notifier) = &self.shared.config.notifier
            && self.shared.control.get().reason.is_none()
        {
            notifier.reloading();
        }
        Reload {
            notifier: self.shared.config.notifier.clone(),
            control: Arc::clone(&self.shared.control),
        }
    }

    /// Logs the current state (phase, in-flight work, pending hooks, budget left, named work)
    /// and emits it as [`Event::StateDump`]: what `SIGTTIN` does by default.
    pub(crate) fn dump_state(&self) {
        let snapshot = self.snapshot();
        tracing::info!(
            target: "lifecycle_hooks",
            phase = %snapshot.phase,
            reason = snapshot.reason.map(Reason::as_str),
            in_flight = snapshot.in_flight,
            pending_hooks = ?snapshot.pending_hooks,
            budget_left_ms = snapshot.budget_left.map(|d| d.as_millis() as u64),
            "state"
        );
        for item in &snapshot.work {
            tracing::info!(
                target: "lifecycle_hooks",
                work = %item.name,
                phase = %item.phase,
                age_ms = item.age.as_millis() as u64,
                "in flight: {}",
                item.name
            );
        }
        self.shared.events.emit(Event::StateDump(snapshot));
    }

    /// The current state: phase, reason, in-flight work, pending hooks, time left.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            phase: self.phase(),
            reason: self.reason(),
            in_flight: self.in_flight(),
            pending_hooks: self
                .shared
                .pending
                .lock()
                .iter()
                .flatten()
                .cloned()
                .collect(),
            budget_left: self.deadlines().map(|d| d.budget_left()),
            work: self.shared.work.snapshot(),
        }
    }

    /// Why the lifecycle is stopping, once a trigger has arrived.
    pub fn reason(&self) -> Option<Reason> {
        self.shared.control.get().reason
    }

    /// The instants of the stop (trigger, drain deadline, end of budget), once one has begun.
    pub fn deadlines(&self) -> Option<Deadlines> {
        self.shared.control.get().deadlines
    }

    /// The phase the lifecycle is in.
    pub fn phase(&self) -> Phase {
        self.shared.phase.borrow().clone()
    }

    /// A receiver that sees every phase change.
    pub fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.shared.phase.subscribe()
    }

    /// Whether the service is ready: true while `running`, false from the stop on.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// A receiver that sees every readiness change (for a `/ready` endpoint).
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.shared.ready.subscribe()
    }

    /// Every lifecycle event from now on.
    pub fn subscribe(&self) -> EventStream {
        self.shared.events.subscribe()
    }

    /// Named listeners and state blobs kept in systemd's file-descriptor store across a restart;
    /// see [`FdStore`](crate::FdStore).
    pub fn fd_store(&self) -> crate::FdStore {
        crate::fdstore::FdStore::new(
            self.shared.config.notifier.clone(),
            Arc::clone(&self.shared.stored),
        )
    }

    /// Tracked work in flight: spawned tasks, tracked futures and guards.
    pub fn in_flight(&self) -> usize {
        self.shared.tracker.len()
    }

    /// Intake stops here: job sources stop fetching, listeners stop accepting. Await it, check
    /// it with [`Milestone::is_reached`], or take a token.
    pub fn intake_stopped(&self) -> Milestone {
        Milestone::new(&self.shared.intake, self.shared.cancel_wake.id)
    }

    /// The drain begins here: long work should checkpoint and wrap up.
    pub fn draining(&self) -> Milestone {
        Milestone::new(&self.shared.drain, self.shared.cancel_wake.id)
    }

    /// Remaining work is cancelled here (the drain deadline passed, or a second signal
    /// escalated): hand unfinished work back now.
    pub fn cancelled(&self) -> Milestone {
        Milestone::new(&self.shared.cancel, self.shared.cancel_wake.id)
    }

    /// Spawns tracked work: the exit phase waits for it.
    ///
    /// At the drain deadline the task is cancelled (its future is dropped at its next `.await`)
    /// and the join handle yields `None`; otherwise `Some(output)`.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    #[track_caller]
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Nothing is registered here: the task registers its waker (or sees the cancellation)
        // under its shard's lock when its first poll returns `Pending`; see `CancelWake`.
        tokio::spawn(Cancellable::new(fut, Arc::clone(&self.shared)))
    }

    /// Like [`spawn`](Self::spawn), with a name: while it runs it appears in
    /// [`snapshot`](Self::snapshot) and the `SIGTTIN` dump, and if it is still running at the
    /// drain deadline it is named in [`Outcome::stuck_work`](crate::Outcome::stuck_work).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lifecycle_hooks::testing;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let lifecycle = testing::builder().budget(Duration::from_secs(5)).build().unwrap();
    /// let handle = lifecycle.handle();
    /// handle.spawn_named("export orders.csv", std::future::pending::<()>());
    /// assert_eq!(handle.snapshot().work[0].name, "export orders.csv");
    /// handle.stop();
    /// let outcome = lifecycle.run().await;
    /// assert_eq!(outcome.stuck_work()[0].name, "export orders.csv");
    /// assert_eq!(outcome.exit_code(), 2); // forced: cancelled at the drain deadline
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    #[track_caller]
    pub fn spawn_named<F>(
        &self,
        name: impl Into<Cow<'static, str>>,
        fut: F,
    ) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let key = self.named(name.into());
        self.spawn(async move {
            let _key = key;
            fut.await
        })
    }

    fn named(&self, name: Cow<'static, str>) -> NamedKey {
        let phase = self.phase();
        NamedKey {
            key: self.shared.work.add(name, phase),
            registry: Arc::clone(&self.shared.work),
        }
    }

    /// Spawns tracked work whose failure stops the service: if it returns an error or panics,
    /// the lifecycle stops with reason [`Reason::Failure`] and exit status 1.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    #[track_caller]
    pub fn spawn_critical<F>(&self, name: impl Into<String>, fut: F) -> JoinHandle<Option<()>>
    where
        F: Future + Send + 'static,
        F::Output: IntoHookResult,
    {
        let name = name.into();
        let handle = self.clone();
        self.spawn(async move {
            let result: Result<(), BoxError> =
                match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(output) => output.into_hook_result(),
                    Err(panic) => Err(panic_message(&*panic).into()),
                };
            if let Err(error) = result {
                handle.fail(format!("critical task `{name}` failed: {}", chain(&*error)));
            }
        })
    }

    /// Tracks a future without spawning it: it counts as in-flight work until it completes or
    /// is dropped.
    pub fn track<F: Future>(&self, fut: F) -> Tracked<F> {
        Tracked::new(fut, self.token())
    }

    fn token(&self) -> TrackerToken {
        TrackerToken::new(Arc::clone(&self.shared))
    }

    /// Lists what `source` yields as named work (in [`snapshot`](Self::snapshot), the `SIGTTIN`
    /// dump and [`Outcome::stuck_work`](crate::Outcome::stuck_work)) for as long as it lives.
    /// For adapters whose work is counted by plain [`work_guard`](Self::work_guard)s and named
    /// only when asked; see [`WorkSource`].
    pub fn work_source<S: WorkSource + 'static>(&self, source: &Arc<S>) {
        let source: Arc<dyn WorkSource> = source.clone();
        self.shared.work.add_source(Arc::downgrade(&source));
    }

    /// A guard that counts as one in-flight work item until dropped, for work that is not a
    /// future (a message being processed by a callback, a request in another runtime).
    pub fn work_guard(&self) -> WorkGuard {
        WorkGuard {
            _token: self.token(),
            _named: None,
        }
    }

    /// Like [`work_guard`](Self::work_guard), with a name for the state dump and the stuck-work
    /// report ([`Outcome::stuck_work`](crate::Outcome::stuck_work)): a request, a message, a job.
    pub fn work_guard_named(&self, name: impl Into<Cow<'static, str>>) -> WorkGuard {
        WorkGuard {
            _token: self.token(),
            _named: Some(self.named(name.into())),
        }
    }
}

// What a spawned task adds to its future: 16 bytes (its owner, its waker's key and shard).
const _: () = assert!(std::mem::size_of::<Cancellable<(), Arc<Shared>>>() == 16);

/// One count in the lifecycle's [`Tracker`], for as long as it lives.
#[derive(Debug)]
struct TrackerToken {
    shared: Arc<Shared>,
}

impl TrackerToken {
    fn new(shared: Arc<Shared>) -> Self {
        shared.tracker.add();
        TrackerToken { shared }
    }
}

impl Drop for TrackerToken {
    fn drop(&mut self) {
        self.shared.tracker.end();
    }
}

pin_project_lite::pin_project! {
    /// A future counted as in-flight work until it completes or is dropped. From
    /// [`LifecycleHandle::track`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Tracked<F> {
        // Dropped before the token: the work has ended once its future is gone.
        #[pin]
        fut: F,
        token: TrackerToken,
    }
}

impl<F> Tracked<F> {
    fn new(fut: F, token: TrackerToken) -> Self {
        Tracked { fut, token }
    }
}

impl<F> fmt::Debug for Tracked<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked").finish_non_exhaustive()
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.project().fut.poll(cx)
    }
}

/// One in-flight work item, for as long as it lives. See [`LifecycleHandle::work_guard`].
#[derive(Debug)]
#[must_use = "the work counts as in flight only while the guard lives"]
pub struct WorkGuard {
    _token: TrackerToken,
    _named: Option<NamedKey>,
}
