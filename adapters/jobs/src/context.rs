//! What a running job knows. See [`JobContext`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lifecycle_hooks::LifecycleHandle;
use parking_lot::Mutex;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::job::Job;

/// One job's own state, shared by the worker running it and the job's [`JobContext`]: a
/// context kept past its job can only touch its own job's state, never the next job's.
#[derive(Debug, Default)]
pub(crate) struct JobState {
    /// A checkpoint from [`JobContext::requeue`]. Locked briefly.
    pub(crate) checkpoint: Mutex<Option<Job>>,
    /// Set by [`JobContext::point_of_no_return`] (Release; read with Acquire): from then on
    /// the job is never cut off or handed back, and its fate is its completion.
    pub(crate) no_return: AtomicBool,
}

impl JobState {
    /// Whether the job passed its point of no return.
    pub(crate) fn past_no_return(&self) -> bool {
        self.no_return.load(Ordering::Acquire)
    }
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
    /// The running worker's drain token (its own child token, so checking it locks nothing
    /// another worker touches).
    pub(crate) drain: CancellationToken,
    pub(crate) handle: LifecycleHandle,
    /// The state of the job this context was given with (not the worker's next job).
    pub(crate) job: Arc<JobState>,
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
        self.drain.is_cancelled()
    }

    /// Completes when the service starts stopping (the drain begins).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the future owns what it needs.
    pub fn stopping(&self) -> WaitForCancellationFutureOwned {
        self.drain.clone().cancelled_owned()
    }

    /// Hands `job` back to the source instead of acknowledging the current delivery, once the
    /// handler returns `Ok(())`. Pass the job with a new payload ([`Job::with_payload`]) to
    /// checkpoint; the id stays. The job is counted as requeued and reported in
    /// `Outcome::handed_back`.
    ///
    /// If the handler returns an error instead, the failure path applies and this is ignored.
    /// Called twice, the last job wins; called after the handler returned (through a context
    /// kept past its job), it does nothing, and never touches the worker's next job.
    pub fn requeue(&self, job: Job) {
        *self.job.checkpoint.lock() = Some(job);
    }

    /// Declares that this job has passed its point of no return: it made an effect that must
    /// not happen twice (a message handed to a producer, a payment sent), so from now on the
    /// pool settles it by its completion and never hands it back.
    ///
    /// After this call, neither the drain deadline nor an escalation (a second signal) cuts the
    /// job off: it runs until its handler returns, and is then acknowledged (or failed, if the
    /// handler returns an error; a checkpoint from [`requeue`](Self::requeue) is ignored). It
    /// is still bounded by the exit side: if it is still running when the pool's exit hook
    /// stops waiting (three quarters of the exit budget), the exit hook acknowledges it and
    /// counts it completed, and never requeues it. Call it right after the effect is committed,
    /// before the next `.await`, so no cut-off can fall in between. Calling it again does
    /// nothing.
    ///
    /// ```
    /// use lifecycle_hooks_jobs::{Job, JobContext};
    ///
    /// async fn publish(job: Job, ctx: JobContext) -> Result<(), std::io::Error> {
    ///     // ... work that may be cut off at the deadline and handed back ...
    ///     let (queued, delivered) = tokio::sync::oneshot::channel::<()>(); // a producer's send
    ///     # drop(queued);
    ///     ctx.point_of_no_return(); // the message is queued: this job must not run again
    ///     let _ = delivered.await; // waits for the delivery, never cut off
    ///     Ok(())
    /// }
    /// # let _ = publish;
    /// ```
    pub fn point_of_no_return(&self) {
        self.job.no_return.store(true, Ordering::Release);
    }

    /// Whether [`point_of_no_return`](Self::point_of_no_return) was called for this job.
    pub fn is_past_point_of_no_return(&self) -> bool {
        self.job.past_no_return()
    }

    /// The lifecycle the pool runs under.
    pub fn lifecycle(&self) -> &LifecycleHandle {
        &self.handle
    }
}
