//! The worker loop (a Sidekiq processor) and one job's run. See [`Worker`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use lifecycle_hooks::LifecycleHandle;
use lifecycle_hooks::errors::{chain, panic_message};
use parking_lot::Mutex;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::context::{JobContext, JobState};
use crate::errors::JobFailure;
use crate::job::Job;
use crate::retry::Retry;
use crate::source::JobSource;

use super::Inner;

/// The lifecycle as the pool sees it; set once per pool by its start hook.
#[derive(Debug)]
pub(super) struct Bound {
    pub(super) handle: LifecycleHandle,
    /// Stop fetching: a child of the intake token, also cancelled by the pool's hooks and when
    /// work is cancelled.
    pub(super) halt: CancellationToken,
    /// Cancelled when the drain begins.
    pub(super) drain: CancellationToken,
    /// Cancelled at the drain deadline (or on escalation): unfinished jobs are handed back.
    pub(super) cancel: CancellationToken,
}

/// One worker's state; the contexts of the jobs it runs get its drain token. Each token is the
/// worker's own child token, so checking it locks nothing another worker touches.
#[derive(Debug)]
pub(super) struct Worker {
    pub(super) bound: Arc<Bound>,
    pub(super) halt: CancellationToken,
    pub(super) drain: CancellationToken,
    pub(super) cancel: CancellationToken,
    /// The job this worker is running, with its state; taken by whoever settles it (the
    /// worker, or the exit hook writing off a job that outlived every deadline). Locked briefly.
    pub(super) current: Mutex<Option<(Job, Arc<JobState>)>>,
}

impl Worker {
    pub(super) fn new(bound: &Arc<Bound>) -> Worker {
        Worker {
            halt: bound.halt.child_token(),
            drain: bound.drain.child_token(),
            cancel: bound.cancel.child_token(),
            bound: Arc::clone(bound),
            current: Mutex::new(None),
        }
    }
}

/// First and last pause between fetch attempts after the source failed.
const FETCH_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

impl<S: JobSource> Inner<S> {
    /// Acknowledges a job and counts it completed (an ack that fails is logged: the job may
    /// run again).
    pub(super) async fn ack_as_completed(&self, job: &Job) {
        if let Err(error) = self.source.ack(job).await {
            self.counters.source_errors.add(1);
            tracing::error!(pool = %self.name, id = job.id(), error = %chain(&error), "ack failed; the job may run again");
        }
        self.counters.completed.add(1);
    }
}

/// One worker (a Sidekiq processor): once the service is ready, fetches a job, runs it, settles
/// it, and again, until it is halted or the source closes.
pub(super) async fn work<S: JobSource>(inner: Arc<Inner<S>>, worker: Arc<Worker>) {
    let handle = &worker.bound.handle;
    let mut ready = handle.readiness();
    tokio::select! {
        biased;
        () = worker.halt.cancelled() => return,
        ready = ready.wait_for(|ready| *ready) => if ready.is_err() { return },
    }
    drop(ready);

    let (mut backoff, max_backoff) = FETCH_BACKOFF;
    loop {
        // Once halted, no fetch starts, and a pending one is dropped (fetch is cancel safe).
        if worker.halt.is_cancelled() {
            return;
        }
        // Held from before the fetch: a fetch that completes after intake stopped (its poll
        // running on another thread when the halt came) is work the wait phase waits for, so
        // its hand-back happens before the exit side, not after the wait found nothing.
        let guard = handle.work_guard();
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
        // The fetch completed while intake was stopping (on another thread).
        if worker.halt.is_cancelled() {
            tracing::info!(pool = %inner.name, id = job.id(), "fetched after intake stopped: handing it back unrun");
            inner.queue_hand_back(job);
            inner.flush(handle, false).await;
            drop(guard);
            return;
        }
        let span = tracing::info_span!(
            "job",
            pool = %inner.name,
            id = job.id(),
            queue = job.queue(),
            attempt = job.attempt()
        );
        let settled = AssertUnwindSafe(run(&inner, &worker, job).instrument(span))
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
async fn run<S: JobSource>(inner: &Inner<S>, worker: &Arc<Worker>, job: Job) {
    let state = Arc::new(JobState::default());
    let ctx = JobContext {
        drain: worker.drain.clone(),
        handle: worker.bound.handle.clone(),
        job: Arc::clone(&state),
    };
    let for_handler = job.clone();
    *worker.current.lock() = Some((job, Arc::clone(&state)));
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| (inner.handler)(for_handler, ctx)));
    let ran = match started {
        Err(panic) => Some(Err(JobFailure::Panicked(panic_message(&*panic)))),
        Ok(handler) => {
            let mut handler = std::pin::pin!(AssertUnwindSafe(handler).catch_unwind());
            let mut cancelled = std::pin::pin!(worker.cancel.cancelled());
            // The handler first; the cut-off only while the job has not passed its point of no
            // return (read after the poll in which the handler may have declared it).
            std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = handler.as_mut().poll(cx) {
                    return Poll::Ready(Some(match result {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(error)) => Err(JobFailure::Error(error)),
                        Err(panic) => Err(JobFailure::Panicked(panic_message(&*panic))),
                    }));
                }
                if !state.past_no_return() && cancelled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await
        }
    };
    let checkpoint = state.checkpoint.lock().take();
    let Some((job, _)) = worker.current.lock().take() else {
        tracing::warn!(pool = %inner.name, "a job ended after the exit hook had handed it back");
        return;
    };
    match ran {
        None => {
            tracing::warn!(pool = %inner.name, id = job.id(), "cancelled at the drain deadline: handing it back");
            inner.queue_hand_back(job);
            inner.flush(&worker.bound.handle, false).await;
        }
        Some(Ok(())) => match checkpoint.filter(|_| !state.past_no_return()) {
            Some(next) => {
                tracing::info!(pool = %inner.name, id = next.id(), "checkpointed: handing it back");
                // The checkpoint replaces this delivery, whatever the handler built.
                let next = next
                    .with_receipt(job.receipt().clone())
                    .with_queue(job.shared_queue().clone());
                inner.queue_hand_back(next);
                inner.flush(&worker.bound.handle, false).await;
            }
            None => inner.ack_as_completed(&job).await,
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
