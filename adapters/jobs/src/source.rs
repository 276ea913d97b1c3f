//! Where jobs come from and go back to. See [`JobSource`].

use std::future::Future;

use crate::errors::RequeueError;
use crate::job::Job;
use crate::retry::Retry;

/// A queue the [`JobPool`](crate::JobPool) fetches from, acknowledges to, and hands jobs back to.
///
/// The pool calls [`start`](JobSource::start) once in its startup hook, then
/// [`fetch`](JobSource::fetch) from each of its `concurrency` workers — concurrently, so a source
/// serializes fetches itself if its backend needs that — then exactly one of
/// [`ack`](JobSource::ack), [`fail`](JobSource::fail) or [`requeue`](JobSource::requeue) per
/// fetched job, and [`close`](JobSource::close) once in its exit hook, after every job has ended.
///
/// Two sources come with this crate: [`MemorySource`](crate::MemorySource) and, with the `redis`
/// feature, `RedisSource` (a reliable queue).
pub trait JobSource: Send + Sync + 'static {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Prepares the source before the first fetch: connect, register, recover jobs that a dead
    /// process left behind. Returns the jobs recovered (put back on the queue), for the log.
    fn start(&self) -> impl Future<Output = Result<Vec<Job>, Self::Error>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Waits for the next job. `Ok(None)` means the source is closed: fetching stops.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe in this sense: if the future is dropped before it completes, no job
    /// is lost — either none was taken, or the source hands it back itself in
    /// [`close`](JobSource::close). The pool drops a pending fetch when intake stops.
    fn fetch(&self) -> impl Future<Output = Result<Option<Job>, Self::Error>> + Send;

    /// The job ran to completion: forget it.
    fn ack(&self, job: &Job) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Hands back jobs that did not finish, in the order given, so that the first is fetched
    /// first again (Sidekiq's `bulk_requeue`). A job carries its receipt, so a checkpointed job
    /// (same id, new payload) replaces the delivery it came from.
    ///
    /// # Errors
    ///
    /// A [`RequeueError`] listing exactly the jobs that were not handed back; the others were.
    fn requeue(
        &self,
        jobs: Vec<Job>,
    ) -> impl Future<Output = Result<(), RequeueError<Self::Error>>> + Send;

    /// The job failed; `retry` (from the pool's [`RetryPolicy`](crate::RetryPolicy)) says
    /// whether it runs again (attempt + 1) or goes to the dead jobs.
    fn fail(&self, job: &Job, retry: Retry)
    -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Stops the source for good; called once, after all of the pool's jobs have ended. Returns
    /// jobs the source held without having delivered them (taken by a fetch that was dropped,
    /// or left over from a failed requeue), now back on the queue.
    fn close(&self) -> impl Future<Output = Result<Vec<Job>, Self::Error>> + Send;
}
