//! The worker pool and its hooks. See [`JobPool`].
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
//!    exit hook reports whatever is still there as lost, and nothing more is counted for it.
//! 5. A running job sits in its worker's `current` slot; whoever takes it out settles it: the
//!    worker when the handler ends, or the exit hook for a job that outlived every deadline.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use lifecycle_hooks::{BoxError, HookContext, HookSpec, LifecycleHandle, Phase};
use parking_lot::Mutex;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::context::{Bound, JobContext, Worker};
use crate::counters::{Cells, Counters};
use crate::errors::{JobFailure, PoolError};
use crate::job::Job;
use crate::retry::{MaxAttempts, Retry, RetryPolicy};
use crate::source::JobSource;

/// The default number of jobs that run at once.
pub const DEFAULT_CONCURRENCY: usize = 10;

/// First and last pause between fetch attempts after the source failed.
const FETCH_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));
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
/// | `jobs:close` | `exit` | wait for the workers, retry failed hand-backs with backoff inside the exit budget, report what still failed as lost, [`JobSource::close`], log the counters |
///
/// Each job holds a lifecycle work guard from its fetch until it is settled, so
/// `LifecycleHandle::in_flight` counts running jobs and the `wait` phase waits for them.
/// During `drain` and `wait`, running jobs go on; [`JobContext::is_stopping`] is true so a long
/// job can checkpoint with [`JobContext::requeue`]. At the drain deadline the lifecycle cancels
/// what is still running: each such job is dropped at its next `.await` and handed back with
/// [`JobSource::requeue`] before the exit phase begins (Sidekiq's `bulk_requeue`); the ids are in
/// `Outcome::handed_back` and the count in [`Counters::requeued`]. A handler that panics fails its
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
            HookSpec::new(
                Phase::EXIT,
                self.inner.close_hook.clone(),
                move |ctx: HookContext| Arc::clone(&inner).close(ctx),
            )
            .teardown_of(self.inner.start_hook.clone())
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

#[derive(Default)]
struct HandBack {
    /// Unfinished jobs not yet confirmed requeued; still in flight.
    jobs: Vec<Job>,
    /// How many of `jobs` were added since the last requeue attempt.
    fresh: usize,
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
        if let Some(bound) = self.bound.get() {
            bound.halt.cancel();
        }
        let now = Instant::now();
        let time_left = ctx.time_left().unwrap_or(UNBOUNDED_CLOSE);
        // Retries get three quarters of what is left, closing the source most of the rest, so
        // whatever could not be handed back is still reported before the hook's deadline.
        let retry_until = now + time_left * 3 / 4;
        let close_until = now + time_left * 9 / 10;

        // Every worker out: its job ended, or is waiting for hand-back.
        if timeout_at(retry_until, self.tasks.wait()).await.is_err() {
            let abandoned: Vec<Job> = self
                .workers
                .get()
                .into_iter()
                .flatten()
                .filter_map(|worker| worker.current.lock().take())
                .collect();
            let ids: Vec<&str> = abandoned.iter().map(Job::id).collect();
            tracing::error!(
                pool = %self.name,
                ?ids,
                "jobs still running past every deadline (a handler that ignores cancellation): handing them back"
            );
            for job in abandoned {
                self.queue_hand_back(job);
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

    /// Queues an unfinished job for hand-back; it stays in flight until the source confirms.
    fn queue_hand_back(&self, job: Job) {
        let mut hand_back = self.hand_back.lock();
        hand_back.jobs.push(job);
        hand_back.fresh += 1;
    }

    /// Requeues the jobs waiting for hand-back in one batch. Without `force`, only if some were
    /// added since the last attempt (retries are the exit hook's). True when none is left.
    async fn flush(&self, handle: &LifecycleHandle, force: bool) -> bool {
        let _lane = self.lane.lock().await;
        let batch = {
            let mut hand_back = self.hand_back.lock();
            if hand_back.jobs.is_empty() || !force && hand_back.fresh == 0 {
                return hand_back.jobs.is_empty();
            }
            hand_back.fresh = 0;
            hand_back.jobs.clone()
        };
        let mut failed: HashMap<String, usize> = HashMap::new();
        if let Err(error) = self.source.requeue(batch.clone()).await {
            self.counters.source_errors.add(1);
            tracing::warn!(
                pool = %self.name,
                error = %chain(&error),
                count = error.jobs.len(),
                "requeue failed; the exit hook retries with backoff"
            );
            for job in error.jobs {
                *failed.entry(job.id().to_owned()).or_default() += 1;
            }
        }
        let mut hand_back = self.hand_back.lock();
        let mut done = Vec::new();
        for job in batch {
            if let Some(count) = failed.get_mut(job.id()).filter(|count| **count > 0) {
                *count -= 1;
                continue;
            }
            // Absent if the exit hook already wrote it off: then it is counted there.
            if remove_one(&mut hand_back.jobs, job.id()) {
                handle.report_handed_back(job.id());
                done.push(job);
            }
        }
        let left = hand_back.jobs.is_empty();
        drop(hand_back);
        if !done.is_empty() {
            self.counters.requeued.add(done.len() as u64);
            let ids: Vec<&str> = done.iter().map(Job::id).collect();
            tracing::info!(pool = %self.name, count = ids.len(), ?ids, "jobs handed back to the queue");
        }
        left
    }

    /// Jobs the source put back on the queue while closing: ours if we were still waiting to
    /// hand them back, otherwise taken by a dropped fetch and never run.
    fn returned_by_source(&self, handle: &LifecycleHandle, returned: Vec<Job>) {
        if returned.is_empty() {
            return;
        }
        let mut ours = 0;
        {
            let mut hand_back = self.hand_back.lock();
            for job in &returned {
                handle.report_handed_back(job.id());
                if remove_one(&mut hand_back.jobs, job.id()) {
                    ours += 1;
                }
            }
        }
        self.counters.requeued.add(ours as u64);
        self.counters.recovered.add((returned.len() - ours) as u64);
        let ids: Vec<&str> = returned.iter().map(Job::id).collect();
        tracing::info!(pool = %self.name, count = ids.len(), ?ids, "the source handed back jobs it held");
    }
}

/// Removes the first job with this id; false if there is none.
fn remove_one(jobs: &mut Vec<Job>, id: &str) -> bool {
    match jobs.iter().position(|job| job.id() == id) {
        Some(at) => {
            jobs.swap_remove(at);
            true
        }
        None => false,
    }
}

/// One worker (a Sidekiq processor): once the service is ready, fetches a job, runs it, settles
/// it, and again, until it is halted or the source closes.
async fn work<S: JobSource>(inner: Arc<Inner<S>>, worker: Arc<Worker>) {
    let handle = &worker.bound.handle;
    let mut ready = handle.readiness();
    tokio::select! {
        biased;
        () = worker.halt.cancelled() => return,
        ready = ready.wait_for(|ready| *ready) => if ready.is_err() { return },
    }
    drop(ready);

    let mut seq: u64 = 0;
    let (mut backoff, max_backoff) = FETCH_BACKOFF;
    loop {
        // Once halted, no fetch starts, and a pending one is dropped (fetch is cancel safe).
        if worker.halt.is_cancelled() {
            return;
        }
        let fetch = inner.source.fetch();
        tokio::pin!(fetch);
        // A job already waiting is taken without registering for the halt (the common case
        // under load); otherwise wait for either, the halt first.
        let fetched = match futures::poll!(fetch.as_mut()) {
            Poll::Ready(fetched) => fetched,
            Poll::Pending => tokio::select! {
                biased;
                () = worker.halt.cancelled() => return,
                fetched = &mut fetch => fetched,
            },
        };
        let job = match fetched {
            Ok(Some(job)) => job,
            Ok(None) => {
                tracing::debug!(pool = %inner.name, "the source is closed: the worker stops");
                return;
            }
            Err(error) => {
                inner.counters.source_errors.add(1);
                tracing::warn!(
                    pool = %inner.name,
                    error = %chain(&error),
                    backoff_ms = backoff.as_millis() as u64,
                    "fetch failed; retrying"
                );
                tokio::select! {
                    biased;
                    () = worker.halt.cancelled() => return,
                    () = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        backoff = FETCH_BACKOFF.0;
        inner.counters.fetched.add(1);
        let guard = handle.work_guard();
        // The fetch completed while intake was stopping (on another thread).
        if worker.halt.is_cancelled() {
            tracing::info!(pool = %inner.name, id = job.id(), "fetched after intake stopped: handing it back unrun");
            inner.queue_hand_back(job);
            inner.flush(handle, false).await;
            drop(guard);
            return;
        }
        seq += 1;
        let span = tracing::info_span!(
            "job",
            pool = %inner.name,
            id = job.id(),
            queue = job.queue(),
            attempt = job.attempt()
        );
        let settled = AssertUnwindSafe(run(&inner, &worker, seq, job).instrument(span))
            .catch_unwind()
            .await;
        if let Err(panic) = settled {
            inner.counters.source_errors.add(1);
            tracing::error!(pool = %inner.name, panic = %panic_message(&*panic), "the job source panicked while settling a job");
        }
        drop(guard);
    }
}

/// Runs one job to its end: acked, failed, or handed back.
async fn run<S: JobSource>(inner: &Inner<S>, worker: &Arc<Worker>, seq: u64, job: Job) {
    let ctx = JobContext {
        worker: Arc::clone(worker),
        seq,
    };
    let for_handler = job.clone();
    *worker.current.lock() = Some(job);
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| (inner.handler)(for_handler, ctx)));
    let ran = match started {
        Err(panic) => Some(Err(JobFailure::Panicked(panic_message(&*panic)))),
        Ok(handler) => tokio::select! {
            biased;
            result = AssertUnwindSafe(handler).catch_unwind() => Some(match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(JobFailure::Error(error)),
                Err(panic) => Err(JobFailure::Panicked(panic_message(&*panic))),
            }),
            () = worker.cancel.cancelled() => None,
        },
    };
    let checkpoint = worker
        .checkpoint
        .lock()
        .take()
        .and_then(|(at, job)| (at == seq).then_some(job));
    let Some(job) = worker.current.lock().take() else {
        tracing::warn!(pool = %inner.name, "a job ended after the exit hook had handed it back");
        return;
    };
    match ran {
        None => {
            tracing::warn!(pool = %inner.name, id = job.id(), "cancelled at the drain deadline: handing it back");
            inner.queue_hand_back(job);
            inner.flush(&worker.bound.handle, false).await;
        }
        Some(Ok(())) => match checkpoint {
            Some(next) => {
                tracing::info!(pool = %inner.name, id = next.id(), "checkpointed: handing it back");
                // The checkpoint replaces this delivery, whatever the handler built.
                let next = next
                    .with_receipt(job.receipt().clone())
                    .with_queue(job.shared_queue().clone());
                inner.queue_hand_back(next);
                inner.flush(&worker.bound.handle, false).await;
            }
            None => {
                if let Err(error) = inner.source.ack(&job).await {
                    inner.counters.source_errors.add(1);
                    tracing::error!(pool = %inner.name, id = job.id(), error = %chain(&error), "ack failed; the job may run again");
                }
                inner.counters.completed.add(1);
            }
        },
        Some(Err(failure)) => {
            let retry = std::panic::catch_unwind(AssertUnwindSafe(|| {
                inner.retry.decide(&job, &failure)
            }))
            .unwrap_or_else(|panic| {
                tracing::error!(pool = %inner.name, id = job.id(), panic = %panic_message(&*panic), "the retry policy panicked; the job goes to the dead jobs");
                Retry::Dead
            });
            tracing::error!(pool = %inner.name, id = job.id(), error = %chain(&failure), ?retry, "job failed");
            if let Err(error) = inner.source.fail(&job, retry).await {
                inner.counters.source_errors.add(1);
                tracing::error!(pool = %inner.name, id = job.id(), error = %chain(&error), "recording the failure failed; the job may run again");
            }
            inner.counters.failed.add(1);
        }
    }
}

pub(crate) use lifecycle_hooks::errors::chain;
use lifecycle_hooks::errors::panic_message;
