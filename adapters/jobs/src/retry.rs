//! What happens to a failed job. See [`RetryPolicy`].

use crate::errors::JobFailure;
use crate::job::Job;

/// What to do with a job whose run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Retry {
    /// Put it back at the end of its queue with its attempt count increased.
    Again,
    /// Give up: move it to the source's dead jobs.
    Dead,
}

/// Decides, after a job failed (error or panic), whether it runs again.
///
/// Any `Fn(&Job, &JobFailure) -> Retry` is a policy; [`MaxAttempts`] is the default.
///
/// ```
/// use lifecycle_hooks_jobs::{Job, JobFailure, MaxAttempts, Retry, RetryPolicy};
///
/// let policy = MaxAttempts(3);
/// let failure = JobFailure::Panicked("boom".into());
/// assert_eq!(policy.decide(&Job::new("a", ""), &failure), Retry::Again);
/// assert_eq!(policy.decide(&Job::new("a", "").with_attempt(2), &failure), Retry::Dead);
///
/// // Never retry panics, retry errors forever.
/// let custom = |_job: &Job, failure: &JobFailure| match failure {
///     JobFailure::Panicked(_) => Retry::Dead,
///     _ => Retry::Again,
/// };
/// assert_eq!(custom.decide(&Job::new("a", ""), &failure), Retry::Dead);
/// ```
pub trait RetryPolicy: Send + Sync + 'static {
    /// The decision for `job`, whose run just failed with `failure`.
    fn decide(&self, job: &Job, failure: &JobFailure) -> Retry;
}

impl<F> RetryPolicy for F
where
    F: Fn(&Job, &JobFailure) -> Retry + Send + Sync + 'static,
{
    fn decide(&self, job: &Job, failure: &JobFailure) -> Retry {
        self(job, failure)
    }
}

/// Retries until a job has run this many times in all, then sends it to the dead jobs.
///
/// The default policy is `MaxAttempts(3)`. `MaxAttempts(1)` never retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxAttempts(pub u32);

impl Default for MaxAttempts {
    fn default() -> Self {
        MaxAttempts(3)
    }
}

impl RetryPolicy for MaxAttempts {
    fn decide(&self, job: &Job, _failure: &JobFailure) -> Retry {
        if job.attempt().saturating_add(1) < self.0 {
            Retry::Again
        } else {
            Retry::Dead
        }
    }
}
