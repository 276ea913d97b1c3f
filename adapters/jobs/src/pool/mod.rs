//! The worker pool and its hooks. See [`JobPool`].
//!
//! Three files: this one, the pool's API and its hooks; [`worker`], the worker loop and a
//! job's run; [`hand_back`], the jobs waiting to go back to the source.
//!
//! # Invariants
//!
//! 1. Every fetched job ends in exactly one of completed (acked), failed (`JobSource::fail`),
//!    requeued (handed back) or lost (reported by id); until then it is in flight.
//! 2. No job starts once the worker's `halt` token is cancelled (intake stopped, the pool's
//!    hooks, or work cancelled): a job fetched after that is handed back and never runs.
//! 3. From the moment its fetch returns until it is acked, failed or handed back (or queued for
//!    the exit hook's retries), a job holds a lifecycle work guard, so the runtime's wait and
//!    cancel grace cover its requeue, and exit hooks begin only after it.
//! 4. A job waiting for hand-back stays in `HandBack::jobs` until the source confirms it; the
//!    exit hook reports whatever is still there as lost, and nothing more is counted for it. If
//!    the exit hook never runs, its skip callback does the same at once (after one synchronous
//!    hand-back attempt), before the outcome is built.
//! 5. A running job sits in its worker's `current` slot; whoever takes it out settles it: the
//!    worker when the handler ends, or the exit hook for a job that outlived every deadline.
//! 6. A job that passed its point of no return (`JobContext::point_of_no_return`) is never cut
//!    off nor handed back: it ends completed (acked) or failed, or, if it outlives the exit
//!    budget or the close is skipped, acked as completed (reported lost only if that ack
//!    cannot be made).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use lifecycle_hooks::{BoxError, HookContext, HookSpec, Phase};
use parking_lot::Mutex;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_util::task::TaskTracker;

use crate::context::{JobContext, JobState};
use crate::counters::{Cells, Counters};
use crate::errors::PoolError;
use crate::job::Job;
use crate::retry::{MaxAttempts, RetryPolicy};
use crate::source::JobSource;

mod hand_back;
mod worker;

use hand_back::HandBack;
use worker::{Bound, Worker, work};

/// The default number of jobs that run at once.
pub const DEFAULT_CONCURRENCY: usize = 10;
/// First and last pause between requeue attempts in the exit hook.
const REQUEUE_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// The exit hook's budget when the lifecycle gives it no deadline.
const UNBOUNDED_CLOSE: Duration = Duration::from_secs(30);

type BoxHandler =
    Arc<dyn Fn(Job, JobContext) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;

/// A Sidekiq-style worker pool: `concurrency` workers (Sidekiq's processors), each fetching a
/// job from a [`JobSource`], running it through an async handler and settling it, following the
/// lifecycle the pool is bound to.
///
/// Bind it by adding its [`hooks`](JobPool::hooks) to the lifecycle's builder:
///
/// | hook (pool named `jobs`) | phase | what it does |
/// |---|---|---|
/// | `jobs:start` | `startup` | [`JobSource::start`] (recover orphans), start the workers; they fetch once the service is ready |
/// | `jobs:stop_fetching` | `stop_intake` | stop fetching (intake stopping already halts the workers: the hook makes it visible in the outcome and halts them under a custom graph too); a fetch still pending is dropped, and a job that a fetch returned after intake stopped is handed back, never run |
/// | `jobs:close` | `exit` | wait for the workers, retry failed hand-backs with backoff inside the exit budget, report what still failed as lost, [`JobSource::close`], log the counters; returns at once if `jobs:start` never ran |
///
/// If `jobs:close` never runs (an earlier exit hook used the budget up), the jobs it would have
/// settled are not dropped silently: the jobs still running or waiting for hand-back are handed
/// back in one synchronous attempt (a source that needs no I/O, like [`MemorySource`](crate::MemorySource),
/// takes them), and whatever that does not settle is reported in `Outcome::lost` by id.
///
/// Each job holds a lifecycle work guard from its fetch until it is settled, so the `wait`
/// phase waits for it. The guard is taken when the fetch starts (a fetch that completes as
/// intake stops is work the wait phase must see), so until intake stops
/// `LifecycleHandle::in_flight` counts each worker waiting in a fetch too: an idle pool shows
/// `concurrency` there. [`Counters::in_flight`] counts running jobs only.
/// During `drain` and `wait`, running jobs go on; [`JobContext::is_stopping`] is true so a long
/// job can checkpoint with [`JobContext::requeue`]. At the drain deadline the lifecycle cancels
/// what is still running: each such job is dropped at its next `.await` and handed back with
/// [`JobSource::requeue`] before the exit phase begins (Sidekiq's `bulk_requeue`); the ids are in
/// `Outcome::handed_back` and the count in [`Counters::requeued`]. A job that declared
/// [`JobContext::point_of_no_return`] (its effect is made and must not be made twice) is not cut
/// off: it runs to its end and is acknowledged, bounded by the exit hook's wait. A handler that panics fails its
/// job only; the [`RetryPolicy`] decides whether it runs again.
///
/// ```
/// use std::time::Duration;
/// use lifecycle_hooks::testing;
/// use lifecycle_hooks_jobs::{Job, JobContext, JobPool, MemorySource};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let source = MemorySource::new(100);
/// for n in 0..3 {
///     source.push(Job::new(format!("job-{n}"), "payload")).await.unwrap();
/// }
/// let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
/// let pool = JobPool::builder(source.clone())
///     .concurrency(2)
///     .build(move |job: Job, _ctx: JobContext| {
///         let done_tx = done_tx.clone();
///         async move {
///             tokio::time::sleep(Duration::from_secs(1)).await; // the work
///             let _ = done_tx.send(job.id().to_owned());
///             Ok::<(), std::io::Error>(())
///         }
///     });
/// let lifecycle = testing::builder().hooks(pool.hooks()).build().unwrap();
/// let handle = lifecycle.handle();
/// let run = tokio::spawn(lifecycle.run());
/// for _ in 0..3 {
///     done.recv().await;
/// }
/// handle.stop();
/// let outcome = run.await.unwrap();
/// assert_eq!(outcome.exit_code(), 0);
/// assert!(source.is_closed());
/// let counters = pool.counters();
/// assert_eq!((counters.fetched, counters.completed, counters.in_flight), (3, 3, 0));
/// # }
/// ```
pub struct JobPool<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for JobPool<S> {
    fn clone(&self) -> Self {
        JobPool {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> fmt::Debug for JobPool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobPool")
            .field("name", &self.inner.name)
            .field("concurrency", &self.inner.concurrency)
            .field("counters", &self.inner.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// Configures a [`JobPool`]; from [`JobPool::builder`].
#[must_use = "a JobPoolBuilder does nothing until `build(handler)` is called"]
pub struct JobPoolBuilder<S> {
    source: S,
    name: String,
    concurrency: usize,
    retry: Arc<dyn RetryPolicy>,
}

impl<S> fmt::Debug for JobPoolBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobPoolBuilder")
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl<S: JobSource> JobPoolBuilder<S> {
    /// The pool's name: the prefix of its hook names (`NAME:start`, `NAME:stop_fetching`,
    /// `NAME:close`) and a field of its log lines. Default `jobs`. Two pools in one lifecycle need
    /// two names.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many jobs run at once (default [`DEFAULT_CONCURRENCY`]).
    ///
    /// # Panics
    ///
    /// Panics if `concurrency` is 0.
    #[track_caller]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        assert!(
            concurrency > 0,
            "a JobPool needs a concurrency of at least 1"
        );
        self.concurrency = concurrency;
        self
    }

    /// What happens to a failed job (default [`MaxAttempts(3)`](MaxAttempts)).
    pub fn retry(mut self, policy: impl RetryPolicy) -> Self {
        self.retry = Arc::new(policy);
        self
    }

    /// Builds the pool around `handler`, an `async fn(Job, JobContext) -> Result<(), E>`.
    ///
    /// The pool does nothing until its [`hooks`](JobPool::hooks) run in a lifecycle.
    pub fn build<F, Fut, E>(self, handler: F) -> JobPool<S>
    where
        F: Fn(Job, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let handler: BoxHandler = Arc::new(move |job, ctx| {
            let run = handler(job, ctx);
            Box::pin(async move { run.await.map_err(Into::into) })
        });
        let name = self.name;
        JobPool {
            inner: Arc::new(Inner {
                start_hook: format!("{name}:start"),
                stop_hook: format!("{name}:stop_fetching"),
                close_hook: format!("{name}:close"),
                name,
                source: self.source,
                handler,
                retry: self.retry,
                concurrency: self.concurrency,
                counters: Cells::default(),
                started: AtomicBool::new(false),
                bound: OnceLock::new(),
                workers: OnceLock::new(),
                tasks: TaskTracker::new(),
                hand_back: Mutex::new(HandBack::default()),
                lane: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl<S: JobSource> JobPool<S> {
    /// A builder for a pool fetching from `source`.
    pub fn builder(source: S) -> JobPoolBuilder<S> {
        JobPoolBuilder {
            source,
            name: "jobs".to_owned(),
            concurrency: DEFAULT_CONCURRENCY,
            retry: Arc::new(MaxAttempts::default()),
        }
    }

    /// The pool's three hooks, to add with `Builder::hooks`: `NAME:start` (startup),
    /// `NAME:stop_fetching` (stop_intake) and `NAME:close` (exit, the teardown of `NAME:start`).
    /// See the table on [`JobPool`]. Order other hooks against these names with `after`/`before`
    /// (an exit hook that must run once every job has ended needs nothing: all exit hooks do).
    ///
    /// Register them once, in one lifecycle: a second start fails with
    /// [`PoolError::AlreadyStarted`].
    pub fn hooks(&self) -> Vec<HookSpec> {
        let start = {
            let inner = Arc::clone(&self.inner);
            HookSpec::new(
                Phase::STARTUP,
                self.inner.start_hook.clone(),
                move |ctx: HookContext| Arc::clone(&inner).start(ctx),
            )
        };
        let stop = {
            let inner = Arc::clone(&self.inner);
            HookSpec::new(
                Phase::STOP_INTAKE,
                self.inner.stop_hook.clone(),
                move |_ctx: HookContext| Arc::clone(&inner).stop_fetching(),
            )
        };
        let close = {
            let inner = Arc::clone(&self.inner);
            let skipped = Arc::clone(&self.inner);
            HookSpec::new(
                Phase::EXIT,
                self.inner.close_hook.clone(),
                move |ctx: HookContext| Arc::clone(&inner).close(ctx),
            )
            .teardown_of(self.inner.start_hook.clone())
            .on_skipped(move |handle| skipped.close_skipped(handle))
        };
        vec![start, stop, close]
    }

    /// The counters now; see [`Counters`]. They are also logged when the pool closes.
    pub fn counters(&self) -> Counters {
        self.inner.counters.snapshot()
    }

    /// The pool's source.
    pub fn source(&self) -> &S {
        &self.inner.source
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many jobs run at once.
    pub fn concurrency(&self) -> usize {
        self.inner.concurrency
    }
}

struct Inner<S> {
    name: String,
    start_hook: String,
    stop_hook: String,
    close_hook: String,
    source: S,
    handler: BoxHandler,
    retry: Arc<dyn RetryPolicy>,
    concurrency: usize,
    counters: Cells,
    /// Set once by the start hook (AcqRel swap: a second start sees the first).
    started: AtomicBool,
    /// The lifecycle the pool runs under; set once by the start hook.
    bound: OnceLock<Arc<Bound>>,
    /// One per worker, set by the start hook alongside `bound`.
    workers: OnceLock<Vec<Arc<Worker>>>,
    /// The worker tasks; the exit hook waits for them.
    tasks: TaskTracker,
    /// Jobs waiting to be handed back; locked briefly, never across an await.
    hand_back: Mutex<HandBack>,
    /// One requeue call at a time, so each batch sees what the previous one left.
    lane: tokio::sync::Mutex<()>,
}

impl<S: JobSource> Inner<S> {
    async fn start(self: Arc<Self>, ctx: HookContext) -> Result<(), PoolError> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(PoolError::AlreadyStarted {
                pool: self.name.clone(),
            });
        }
        let recovered = self
            .source
            .start()
            .await
            .map_err(|error| PoolError::Start {
                pool: self.name.clone(),
                source: Box::new(error),
            })?;
        if !recovered.is_empty() {
            self.counters.recovered.add(recovered.len() as u64);
            let ids: Vec<&str> = recovered.iter().map(Job::id).collect();
            tracing::warn!(
                pool = %self.name,
                count = ids.len(),
                ?ids,
                "recovered jobs a stopped process left unfinished; they are back on the queue"
            );
        }
        let handle = ctx.handle().clone();
        let bound = Arc::new(Bound {
            halt: handle.intake_stopped().token(),
            drain: handle.draining().token(),
            cancel: handle.cancelled().token(),
            handle,
        });
        let workers: Vec<Arc<Worker>> = (0..self.concurrency)
            .map(|_| Arc::new(Worker::new(&bound)))
            .collect();
        if self.bound.set(Arc::clone(&bound)).is_err() || self.workers.set(workers.clone()).is_err()
        {
            unreachable!("`started` lets the start hook through once");
        }
        // Work cancelled without intake stopping first (a second signal skips to the exit
        // hooks): stop fetching as well.
        tokio::spawn({
            let (halt, cancel) = (bound.halt.clone(), bound.cancel.clone());
            async move {
                tokio::select! {
                    () = cancel.cancelled() => halt.cancel(),
                    () = halt.cancelled() => {}
                }
            }
        });
        for worker in workers {
            self.tasks.spawn(work(Arc::clone(&self), worker));
        }
        self.tasks.close();
        tracing::info!(
            pool = %self.name,
            concurrency = self.concurrency,
            "job pool started; fetching once the service is ready"
        );
        Ok(())
    }

    async fn stop_fetching(self: Arc<Self>) {
        if let Some(bound) = self.bound.get() {
            bound.halt.cancel();
        }
        let counters = self.counters.snapshot();
        tracing::info!(
            pool = %self.name,
            in_flight = counters.in_flight,
            "fetching stopped; running jobs go on"
        );
    }

    async fn close(self: Arc<Self>, ctx: HookContext) -> Result<(), PoolError> {
        let handle = ctx.handle();
        // Acquire: pairs with the start hook's swap.
        if !self.started.load(Ordering::Acquire) {
            // The lifecycle ran this teardown for a start that never ran (skipped by an
            // escalation): no worker, no job, nothing opened.
            tracing::info!(pool = %self.name, "the pool never started: nothing to close");
            return Ok(());
        }
        let workers_started = match self.bound.get() {
            Some(bound) => {
                bound.halt.cancel();
                true
            }
            // The start hook was cut off before it started the workers.
            None => false,
        };
        let now = Instant::now();
        let time_left = ctx.time_left().unwrap_or(UNBOUNDED_CLOSE);
        // Retries get three quarters of what is left, closing the source most of the rest, so
        // whatever could not be handed back is still reported before the hook's deadline.
        let retry_until = now + time_left * 3 / 4;
        let close_until = now + time_left * 9 / 10;

        // Every worker out: its job ended, or is waiting for hand-back.
        if workers_started && timeout_at(retry_until, self.tasks.wait()).await.is_err() {
            let abandoned: Vec<(Job, Arc<JobState>)> = self
                .workers
                .get()
                .into_iter()
                .flatten()
                .filter_map(|worker| worker.current.lock().take())
                .collect();
            let (settled, unfinished): (Vec<_>, Vec<_>) = abandoned
                .into_iter()
                .partition(|(_, state)| state.past_no_return());
            if !unfinished.is_empty() {
                let ids: Vec<&str> = unfinished.iter().map(|(job, _)| job.id()).collect();
                tracing::error!(
                    pool = %self.name,
                    ?ids,
                    "jobs still running past every deadline (a handler that ignores cancellation): handing them back"
                );
            }
            for (job, _) in unfinished {
                self.queue_hand_back(job);
            }
            for (job, _) in settled {
                tracing::error!(
                    pool = %self.name,
                    id = job.id(),
                    "a job past its point of no return is still running at the end of the exit budget: acknowledged, never handed back"
                );
                self.ack_as_completed(&job).await;
            }
        }

        let (mut backoff, max_backoff) = REQUEUE_BACKOFF;
        loop {
            match timeout_at(retry_until, self.flush(handle, true)).await {
                Ok(true) | Err(_) => break,
                Ok(false) => {}
            }
            let wake = Instant::now() + backoff;
            if wake >= retry_until {
                break;
            }
            tracing::info!(pool = %self.name, backoff_ms = backoff.as_millis() as u64, "retrying the hand-back");
            sleep_until(wake).await;
            backoff = (backoff * 2).min(max_backoff);
        }

        let error = match timeout_at(close_until, self.source.close()).await {
            Ok(Ok(returned)) => {
                self.returned_by_source(handle, returned);
                None
            }
            Ok(Err(error)) => {
                self.counters.source_errors.add(1);
                Some(PoolError::Close {
                    pool: self.name.clone(),
                    source: Box::new(error),
                })
            }
            Err(_) => Some(PoolError::CloseTimedOut {
                pool: self.name.clone(),
            }),
        };

        let lost = std::mem::take(&mut self.hand_back.lock().jobs);
        if !lost.is_empty() {
            for job in &lost {
                handle.report_lost(job.id());
            }
            self.counters.lost.add(lost.len() as u64);
            let ids: Vec<&str> = lost.iter().map(Job::id).collect();
            tracing::error!(pool = %self.name, count = ids.len(), ?ids, "jobs lost: neither finished nor handed back");
        }
        let c = self.counters.snapshot();
        tracing::info!(
            pool = %self.name,
            fetched = c.fetched,
            completed = c.completed,
            failed = c.failed,
            requeued = c.requeued,
            lost = c.lost,
            in_flight = c.in_flight,
            recovered = c.recovered,
            source_errors = c.source_errors,
            "job pool closed"
        );
        match error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
