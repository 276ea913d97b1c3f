//! The reliable queue as a [`JobSource`]. See [`RedisSource`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{Client, RedisError, cmd};
use tokio::task::JoinHandle;

use crate::errors::{RedisSourceError, RequeueError};
use crate::job::Job;
use crate::retry::Retry;
use crate::source::JobSource;

use super::codec::{decode, encode};
use super::keys::{RedisKeys, check_name, default_process_id};
use super::scripts::Scripts;

/// How long one `BLMOVE` blocks in Redis before it answers nil and the fetch asks again: a
/// fetch never waits on Redis without a bound, so a Redis that stops answering (a frozen host,
/// a silent partition) shows as an error within this and the response timeout.
const FETCH_BLOCK: Duration = Duration::from_secs(2);

/// A Redis reliable queue (the pattern of Sidekiq Pro's super_fetch), over redis-rs async.
///
/// - **fetch** moves a job atomically from the queue to this process's processing list
///   (`BLMOVE`, on a connection of its own): a job is always in exactly one list;
/// - **ack** removes it from the processing list;
/// - **requeue** moves it back to the head of its queue (a checkpoint replaces it), in one
///   script for the whole batch; retried safely: each hand-back is recorded with a token, so a
///   retry after a lost answer is skipped, even when the same bytes were fetched again and are
///   running (without the token it would take that running delivery out and queue it again);
/// - **fail** moves it to the tail of the queue with its attempt count increased, or to the dead
///   list;
/// - **start** registers the process with a lease (refreshed every third of it; each refresh
///   also registers the process again if a peer had unregistered it) and recovers the
///   processing lists of processes whose lease expired — they died without handing their jobs
///   back — and its own list, left by an earlier process with the same id;
/// - **close** kills the fetch connection (a fetch dropped at intake stop cannot take a job
///   after that), puts back whatever is still in the processing list, and unregisters.
///
/// # Delivery guarantee
///
/// **At least once.** A job pushed to the queue is never dropped by the source: it is in
/// exactly one of the queue, one process's processing list, or the dead list, and it leaves a
/// processing list only by ack, fail, hand-back, or recovery back to the queue. A job can run
/// more than once, in exactly these cases:
///
/// 1. **The process dies (or is killed) after the job's effect and before its ack**: the job
///    is recovered — by a peer once the lease expired, or at once by a restarted process with
///    the same id — and runs again.
/// 2. **The lease lapses while the process is alive** (no refresh reached Redis for a whole
///    lease: a stall, a partition): a peer that sweeps meanwhile puts the jobs the process
///    holds back on the queue while they are still running, so they can run again, here or
///    elsewhere, at the same time. The late ack or fail finds nothing and logs a warning. The
///    next refresh registers the process again, so if it dies later its jobs are recovered.
///    (If it dies before that next refresh — within a third of a lease — the jobs it fetched
///    since the sweep wait for a process with its id.)
/// 3. **An ack whose answer is lost or fails**: the job stays in the processing list and goes
///    back to the queue at close (or by recovery), and runs again.
/// 4. **A job cut off at the drain deadline, or checkpointed**, is handed back on purpose and
///    runs again (from its checkpoint); a job that declared
///    [`JobContext::point_of_no_return`](crate::JobContext::point_of_no_return) is never
///    handed back.
///
/// Jobs that must not have their effect twice need an idempotent handler (a key on the job id)
/// whatever the queue. A hand-back is applied at most once even when retried after a lost
/// answer.
///
/// A job is stored as `lhj1:{attempt}:{id length}:{id}` followed by the payload bytes;
/// [`enqueue`](RedisSource::enqueue) writes that. See [`RedisKeys`] for the key layout.
///
/// ```no_run
/// use lifecycle_hooks_jobs::{Job, RedisSource};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = redis::Client::open("redis://127.0.0.1:6379/")?;
/// let source = RedisSource::builder(client, "emails").connect().await?;
/// source.enqueue(&Job::new("welcome-17", "to=ada@example.org")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisSource {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) client: Client,
    pub(super) keys: RedisKeys,
    pub(super) queue: Arc<str>,
    pub(super) process: String,
    pub(super) lease: Duration,
    pub(super) response_timeout: Duration,
    pub(super) connect_timeout: Duration,
    /// The command connection, shared; reset after a connection error. Locked briefly.
    pub(super) conn: Mutex<Option<MultiplexedConnection>>,
    /// The fetch connection: only `fetch` uses it, one worker at a time (the others wait here).
    fetch: tokio::sync::Mutex<FetchConn>,
    /// The fetch connection's `CLIENT ID`, for `close` to kill it. Locked briefly.
    pub(super) fetch_client: Mutex<Option<i64>>,
    pub(super) heartbeat: Mutex<Option<JoinHandle<()>>>,
    /// Set by `close` (Release); `fetch` reads it (Acquire) and returns `None` after.
    pub(super) closed: AtomicBool,
    /// Tokens of hand-backs confirmed since the last requeue call, for it to forget in Redis.
    /// Locked briefly.
    pub(super) confirmed: Mutex<Vec<u64>>,
    pub(super) scripts: Scripts,
}

#[derive(Default)]
struct FetchConn {
    conn: Option<MultiplexedConnection>,
    /// A `BLMOVE` was sent and its fetch dropped before the answer: it may still take a job.
    abandoned: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.get_mut().take() {
            heartbeat.abort();
        }
    }
}

impl fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSource")
            .field("queue", &self.inner.queue)
            .field("process", &self.inner.process)
            .field("keys", &self.inner.keys)
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisSource`]; from [`RedisSource::builder`].
#[must_use = "a RedisSourceBuilder does nothing until `connect()` is called"]
#[derive(Debug)]
pub struct RedisSourceBuilder {
    client: Client,
    queue: String,
    namespace: String,
    process: Option<String>,
    lease: Duration,
    response_timeout: Duration,
    connect_timeout: Duration,
}

impl RedisSourceBuilder {
    /// The prefix of every key (default `lhj`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// This process's identity: the name of its processing list and lease. Default: host name,
    /// process id and start time. Give a stable one (a pod name) and a restarted process
    /// recovers its own leftovers at once instead of after the lease expires.
    pub fn process_id(mut self, process: impl Into<String>) -> Self {
        self.process = Some(process.into());
        self
    }

    /// How long this process's lease lasts without a refresh (default 30 s); it is refreshed
    /// every third of that. After a crash, other processes recover its jobs once it expired.
    /// Kept between 3 ms and [`RedisSource::MAX_LEASE`].
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a command (not the blocking fetch) may wait for its answer (default 2 s). A
    /// requeue that times out is retried by the pool with backoff. `Duration::MAX`: no bound;
    /// zero is refused by [`connect`](Self::connect).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long connecting may take (default 2 s). `Duration::MAX`: no bound; zero is refused
    /// by [`connect`](Self::connect).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Checks the names and opens the command connection.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError::InvalidName`] for a name that would break the key layout,
    /// [`RedisSourceError::InvalidTimeout`] for a zero timeout, or
    /// [`RedisSourceError::Connect`].
    pub async fn connect(self) -> Result<RedisSource, RedisSourceError> {
        let process = self.process.unwrap_or_else(default_process_id);
        check_name("namespace", &self.namespace)?;
        check_name("queue name", &self.queue)?;
        check_name("process id", &process)?;
        for (what, timeout) in [
            ("response timeout", self.response_timeout),
            ("connect timeout", self.connect_timeout),
        ] {
            if timeout.is_zero() {
                return Err(RedisSourceError::InvalidTimeout { what });
            }
        }
        let source = RedisSource {
            inner: Arc::new(Inner {
                keys: RedisKeys::new(&self.namespace, &self.queue, &process),
                client: self.client,
                queue: Arc::from(self.queue),
                process,
                lease: self
                    .lease
                    .clamp(Duration::from_millis(3), RedisSource::MAX_LEASE),
                response_timeout: self.response_timeout,
                connect_timeout: self.connect_timeout,
                conn: Mutex::new(None),
                fetch: tokio::sync::Mutex::new(FetchConn::default()),
                fetch_client: Mutex::new(None),
                heartbeat: Mutex::new(None),
                closed: AtomicBool::new(false),
                confirmed: Mutex::new(Vec::new()),
                scripts: Scripts::new(),
            }),
        };
        source.conn().await?;
        Ok(source)
    }
}

impl RedisSource {
    /// The longest lease (365 days): a longer one given to
    /// [`lease`](RedisSourceBuilder::lease) is cut to this. Redis refuses expiry times that
    /// overflow its clock, and the heartbeat's first tick must be a reachable instant.
    pub const MAX_LEASE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

    /// A builder for a source serving `queue` through `client`.
    pub fn builder(client: Client, queue: impl Into<String>) -> RedisSourceBuilder {
        RedisSourceBuilder {
            client,
            queue: queue.into(),
            namespace: "lhj".to_owned(),
            process: None,
            lease: Duration::from_secs(30),
            response_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// The keys this source uses.
    pub fn keys(&self) -> &RedisKeys {
        &self.inner.keys
    }

    /// This process's identity.
    pub fn process_id(&self) -> &str {
        &self.inner.process
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }
}

impl JobSource for RedisSource {
    type Error = RedisSourceError;

    async fn start(&self) -> Result<Vec<Job>, RedisSourceError> {
        // Leftovers of an earlier process with this id, before registering again.
        let mut recovered = self
            .recover(&self.inner.process, true)
            .await?
            .unwrap_or_default();
        // Lease and registration in one step.
        self.beat().await?;
        self.spawn_heartbeat();
        recovered.extend(self.recover_orphans().await?);
        Ok(recovered)
    }

    async fn fetch(&self) -> Result<Option<Job>, RedisSourceError> {
        let mut fetch = self.inner.fetch.lock().await;
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Ok(None);
            }
            if fetch.abandoned {
                // The last fetch was dropped while its BLMOVE waited: retire that connection so
                // it cannot take a job nobody receives (close sweeps one it took already).
                fetch.abandoned = false;
                fetch.conn = None;
                self.kill_fetch_connection().await?;
            }
            let mut conn = match fetch.conn.clone() {
                Some(conn) => conn,
                None => {
                    let mut conn = self
                        .inner
                        .client
                        .get_multiplexed_async_connection_with_config(
                            // A blocked BLMOVE answers (nil) after FETCH_BLOCK: anything
                            // longer than that and the response timeout is a silent Redis.
                            &self.connection_config(
                                FETCH_BLOCK.saturating_add(self.inner.response_timeout),
                            ),
                        )
                        .await
                        .map_err(RedisSourceError::Connect)?;
                    let id: i64 = cmd("CLIENT")
                        .arg("ID")
                        .query_async(&mut conn)
                        .await
                        .map_err(|error| RedisSourceError::Command {
                            command: "CLIENT ID",
                            source: error,
                        })?;
                    fetch.conn = Some(conn.clone());
                    *self.inner.fetch_client.lock() = Some(id);
                    conn
                }
            };
            fetch.abandoned = true;
            let answer: Result<Option<Vec<u8>>, RedisError> = cmd("BLMOVE")
                .arg(&self.inner.keys.queue)
                .arg(&self.inner.keys.processing)
                .arg("LEFT")
                .arg("RIGHT")
                .arg(FETCH_BLOCK.as_secs())
                .query_async(&mut conn)
                .await;
            fetch.abandoned = false;
            let raw = match answer {
                Ok(Some(raw)) => Bytes::from(raw),
                // Unblocked without a job: wait again.
                Ok(None) => continue,
                Err(error) => {
                    fetch.conn = None;
                    return Err(RedisSourceError::Command {
                        command: "BLMOVE",
                        source: error,
                    });
                }
            };
            match decode(&raw) {
                Some(job) => {
                    return Ok(Some(
                        job.with_queue(self.inner.queue.clone()).with_receipt(raw),
                    ));
                }
                None => {
                    tracing::error!(
                        queue = %self.inner.queue,
                        bytes = raw.len(),
                        "a value in the queue is not a job of this format; moved to the dead list"
                    );
                    self.move_one(&raw, &raw, &self.inner.keys.dead, "head", "bury (script)")
                        .await?;
                }
            }
        }
    }

    async fn ack(&self, job: &Job) -> Result<(), RedisSourceError> {
        let mut conn = self.conn().await?;
        let removed: i64 = cmd("LREM")
            .arg(&self.inner.keys.processing)
            .arg(1)
            .arg(job.receipt().as_ref())
            .query_async(&mut conn)
            .await
            .map_err(|error| self.broken("LREM (ack)", error))?;
        if removed == 0 {
            tracing::warn!(
                queue = %self.inner.queue,
                id = job.id(),
                "acked a job no longer in the processing list: it was recovered meanwhile and may run again"
            );
        }
        Ok(())
    }

    async fn requeue(&self, jobs: Vec<Job>) -> Result<(), RequeueError<RedisSourceError>> {
        if jobs.is_empty() {
            return Ok(());
        }
        let forget = std::mem::take(&mut *self.inner.confirmed.lock());
        let mut invocation = self.inner.scripts.requeue.prepare_invoke();
        invocation
            .key(&self.inner.keys.processing)
            .key(&self.inner.keys.queue)
            .key(&self.inner.keys.requeued)
            .arg(forget.len());
        for token in &forget {
            invocation.arg(*token);
        }
        for job in &jobs {
            invocation
                .arg(job.receipt().as_ref())
                .arg(encode(job))
                .arg(job.hand_back_token());
        }
        let answer = match self.conn().await {
            Ok(mut conn) => invocation
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(|error| self.broken("requeue (script)", error)),
            Err(source) => Err(source),
        };
        let mut confirmed = self.inner.confirmed.lock();
        match answer {
            // Whether the forgetting happened is unknown: forget them next time (SREM again
            // is harmless).
            Err(source) => {
                confirmed.extend(forget);
                Err(RequeueError { jobs, source })
            }
            Ok(skipped) => {
                confirmed.extend(jobs.iter().map(Job::hand_back_token));
                drop(confirmed);
                if skipped > 0 {
                    tracing::debug!(
                        queue = %self.inner.queue,
                        skipped,
                        "some jobs were already back on the queue"
                    );
                }
                Ok(())
            }
        }
    }

    async fn fail(&self, job: &Job, retry: Retry) -> Result<(), RedisSourceError> {
        let keys = &self.inner.keys;
        let receipt = job.receipt().as_ref();
        let moved = match retry {
            Retry::Again => {
                let again = job.clone().with_attempt(job.attempt().saturating_add(1));
                self.move_one(
                    receipt,
                    &encode(&again),
                    &keys.queue,
                    "tail",
                    "retry (script)",
                )
                .await?
            }
            Retry::Dead => {
                self.move_one(receipt, &encode(job), &keys.dead, "head", "bury (script)")
                    .await?
            }
        };
        if !moved {
            tracing::warn!(
                queue = %self.inner.queue,
                id = job.id(),
                "failed a job no longer in the processing list: it was recovered meanwhile"
            );
        }
        Ok(())
    }

    async fn close(&self) -> Result<Vec<Job>, RedisSourceError> {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(heartbeat) = self.inner.heartbeat.lock().take() {
            heartbeat.abort();
        }
        self.kill_fetch_connection().await?;
        let swept = self
            .recover(&self.inner.process, true)
            .await?
            .unwrap_or_default();
        let mut conn = self.conn().await?;
        cmd("DEL")
            .arg(&self.inner.keys.alive)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|error| self.broken("DEL (lease)", error))?;
        Ok(swept)
    }
}
