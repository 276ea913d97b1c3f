//! What a running job knows. See [`JobContext`].

use std::fmt;
use std::sync::Arc;

use lifecycle_hooks::LifecycleHandle;
use parking_lot::Mutex;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::job::Job;

/// The lifecycle as the pool's jobs see it; one per pool run.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) handle: LifecycleHandle,
    /// Cancelled when the drain begins.
    pub(crate) drain: CancellationToken,
    /// Cancelled at the drain deadline (or on escalation): unfinished jobs are handed back.
    pub(crate) cancel: CancellationToken,
}

/// Passed to the handler with each job: whether the service is stopping, and a way for a long
/// job to checkpoint and hand itself back.
///
/// ```
/// use lifecycle_hooks_jobs::{Job, JobContext};
///
/// async fn resize_all(job: Job, ctx: JobContext) -> Result<(), std::io::Error> {
///     let mut next: u32 = std::str::from_utf8(job.payload()).unwrap_or("0").parse().unwrap_or(0);
///     while next < 1000 {
///         if ctx.is_stopping() {
///             // Checkpoint: the job goes back to the queue and resumes from `next` later.
///             ctx.requeue(job.with_payload(next.to_string()));
///             return Ok(());
///         }
///         // ... resize image `next` ...
///         next += 1;
///     }
///     Ok(())
/// }
/// # let _ = resize_all;
/// ```
pub struct JobContext {
    pub(crate) bound: Arc<Bound>,
    pub(crate) slot: Arc<Mutex<Option<Job>>>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("stopping", &self.is_stopping())
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// Whether the service is stopping (the drain has begun): a long job should checkpoint and
    /// [`requeue`](Self::requeue) itself, or finish quickly.
    pub fn is_stopping(&self) -> bool {
        self.bound.drain.is_cancelled()
    }

    /// Completes when the service starts stopping (the drain begins).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the future owns what it needs.
    pub fn stopping(&self) -> WaitForCancellationFutureOwned {
        self.bound.drain.clone().cancelled_owned()
    }

    /// Hands `job` back to the source instead of acknowledging the current delivery, once the
    /// handler returns `Ok(())`. Pass the job with a new payload
    /// ([`Job::with_payload`]) to checkpoint; the id stays. The job is counted as requeued and
    /// reported in `Outcome::handed_back`.
    ///
    /// If the handler returns an error instead, the failure path applies and this is ignored.
    /// Called twice, the last job wins.
    pub fn requeue(&self, job: Job) {
        *self.slot.lock() = Some(job);
    }

    /// The lifecycle the pool runs under.
    pub fn lifecycle(&self) -> &LifecycleHandle {
        &self.bound.handle
    }
}
