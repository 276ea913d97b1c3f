//! Errors, one enum per concern.

use lifecycle_hooks::BoxError;

use crate::job::Job;

/// Why one run of a job failed. The [`RetryPolicy`](crate::RetryPolicy) sees it and decides
/// whether the job runs again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobFailure {
    /// The handler returned an error.
    #[error("the handler returned an error")]
    Error(#[source] BoxError),
    /// The handler panicked; the panic was caught and only this job failed.
    #[error("the handler panicked: {0}")]
    Panicked(String),
}

/// Why [`JobSource::requeue`](crate::JobSource::requeue) did not hand back every job of a batch.
///
/// The jobs listed were not requeued; every other job of the batch was. The pool retries these
/// with backoff inside the exit budget and reports whatever still fails as lost.
#[derive(Debug, thiserror::Error)]
#[error("could not requeue {} job(s); they are still held by this process", jobs.len())]
pub struct RequeueError<E> {
    /// The jobs that were not requeued.
    pub jobs: Vec<Job>,
    /// What went wrong in the backend.
    #[source]
    pub source: E,
}

/// Why a job could not be pushed onto a [`MemorySource`](crate::MemorySource). The job comes
/// back with the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The source was closed (its pool's exit hook ran); nothing more is taken.
    #[error("the in-memory queue is closed; push jobs before the pool's exit hook closes it")]
    Closed(Job),
    /// The queue holds `capacity` jobs already; `push` waits for room, `try_push` does not.
    #[error("the in-memory queue is full ({capacity} jobs); use `push` to wait for room")]
    Full {
        /// The job that was not pushed.
        job: Job,
        /// The queue's bound.
        capacity: usize,
    },
}

impl PushError {
    /// The job that was not pushed.
    pub fn into_job(self) -> Job {
        match self {
            PushError::Closed(job) | PushError::Full { job, .. } => job,
        }
    }
}

/// Why one of a [`JobPool`](crate::JobPool)'s hooks failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool's start hook ran a second time: a pool serves one lifecycle run.
    #[error(
        "job pool `{pool}` was already started; build one pool per lifecycle and register its hooks once"
    )]
    AlreadyStarted {
        /// The pool's name.
        pool: String,
    },
    /// The job source failed to start (connect, register, recover orphans).
    #[error("job pool `{pool}`: the job source failed to start")]
    Start {
        /// The pool's name.
        pool: String,
        /// The source's error.
        #[source]
        source: BoxError,
    },
    /// The job source failed to close. Jobs it could not hand back are reported as lost.
    #[error("job pool `{pool}`: the job source failed to close")]
    Close {
        /// The pool's name.
        pool: String,
        /// The source's error.
        #[source]
        source: BoxError,
    },
    /// The job source did not close before the exit budget ran out.
    #[error("job pool `{pool}`: the job source did not close within the exit budget")]
    CloseTimedOut {
        /// The pool's name.
        pool: String,
    },
}

/// Why a [`RedisSource`](crate::RedisSource) operation failed.
#[cfg(feature = "redis")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisSourceError {
    /// A queue name, namespace or process id would break the key layout.
    #[error("invalid {what} `{value}`: use a non-empty name without `{{`, `}}`, `:` or whitespace")]
    InvalidName {
        /// Which name.
        what: &'static str,
        /// The name given.
        value: String,
    },
    /// A timeout of zero, with which every command (or connection) would fail at once.
    #[error("invalid {what} of zero: give a positive duration (`Duration::MAX` for no bound)")]
    InvalidTimeout {
        /// Which timeout.
        what: &'static str,
    },
    /// Connecting to Redis failed.
    #[error("could not connect to Redis")]
    Connect(#[source] redis::RedisError),
    /// A Redis command failed (the connection is re-opened on the next call).
    #[error("Redis command `{command}` failed")]
    Command {
        /// The command or script that failed.
        command: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
}
