//! A unit of work. See [`Job`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use bytes::Bytes;

/// The queue name a job has before a source sets it.
static DEFAULT_QUEUE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("default"));

/// Hands out hand-back tokens, unique within the process.
#[cfg_attr(
    not(feature = "redis"),
    allow(dead_code, reason = "only the Redis source hands back by token")
)]
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// One job: an id, an opaque payload, the queue it came from and how many times it ran before.
///
/// Cloning is cheap (reference counts only). A source may attach a *receipt* — what it needs to
/// acknowledge or hand back exactly this delivery (the Redis source keeps the stored value).
///
/// ```
/// use lifecycle_hooks_jobs::Job;
///
/// let job = Job::new("invoice-42", "render");
/// assert_eq!(job.id(), "invoice-42");
/// assert_eq!(&job.payload()[..], b"render");
/// assert_eq!(job.attempt(), 0);
///
/// // A long job checkpoints by handing itself back with a new payload (same id).
/// let resumed = job.with_payload("render from page 7");
/// assert_eq!(resumed.id(), "invoice-42");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Job {
    /// Id and queue in one allocation of the job's own: a clone touches no count that other
    /// jobs share.
    meta: Arc<Meta>,
    payload: Bytes,
    attempt: u32,
    receipt: Bytes,
}

struct Meta {
    id: Box<str>,
    queue: Arc<str>,
    /// This job value's hand-back token, shared by its clones; set on first use. Not part of
    /// the job's equality.
    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "only the Redis source hands back by token")
    )]
    token: OnceLock<u64>,
}

impl PartialEq for Meta {
    fn eq(&self, other: &Meta) -> bool {
        self.id == other.id && self.queue == other.queue
    }
}

impl Eq for Meta {}

impl Job {
    /// A job with this id and payload, attempt 0, queue `default` until a source sets it.
    pub fn new(id: impl Into<Box<str>>, payload: impl Into<Bytes>) -> Job {
        Job {
            meta: Arc::new(Meta {
                id: id.into(),
                queue: DEFAULT_QUEUE.clone(),
                token: OnceLock::new(),
            }),
            payload: payload.into(),
            attempt: 0,
            receipt: Bytes::new(),
        }
    }

    /// The job's id: what `Outcome::handed_back`/`lost` and the logs name.
    pub fn id(&self) -> &str {
        &self.meta.id
    }

    /// The queue the job came from (set by the source).
    pub fn queue(&self) -> &str {
        &self.meta.queue
    }

    /// The payload, opaque to the pool.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// How many times the job ran and failed before this run (0 on its first run).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// What the source needs to acknowledge or hand back this delivery (empty if nothing).
    pub fn receipt(&self) -> &Bytes {
        &self.receipt
    }

    /// The same job (id, queue, attempt, receipt) with a new payload: a checkpoint.
    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Job {
        self.payload = payload.into();
        self
    }

    /// The same job with its queue set; sources call this on fetch.
    pub fn with_queue(mut self, queue: impl Into<Arc<str>>) -> Job {
        let queue = queue.into();
        match Arc::get_mut(&mut self.meta) {
            Some(meta) => meta.queue = queue,
            None => {
                self.meta = Arc::new(Meta {
                    id: self.meta.id.clone(),
                    queue,
                    token: OnceLock::new(),
                })
            }
        }
        self
    }

    /// The same job with its attempt count set; sources call this when they retry it.
    pub fn with_attempt(mut self, attempt: u32) -> Job {
        self.attempt = attempt;
        self
    }

    /// The same job with a receipt; sources call this on fetch.
    pub fn with_receipt(mut self, receipt: impl Into<Bytes>) -> Job {
        self.receipt = receipt.into();
        self
    }

    pub(crate) fn shared_queue(&self) -> &Arc<str> {
        &self.meta.queue
    }

    /// A number naming this job value and its clones (not an equal job built or fetched
    /// separately), unique within the process: a source records it with a hand-back, so a
    /// retry of the same hand-back is recognised even when the same bytes were fetched again.
    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "only the Redis source hands back by token")
    )]
    pub(crate) fn hand_back_token(&self) -> u64 {
        // Relaxed: only uniqueness matters.
        *self
            .meta
            .token
            .get_or_init(|| NEXT_TOKEN.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.meta.id)
            .field("queue", &self.meta.queue)
            .field("attempt", &self.attempt)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}
