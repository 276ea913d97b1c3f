//! A Redis reliable queue. See [`RedisSource`].

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script, cmd};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::errors::{RedisSourceError, RequeueError};
use crate::job::Job;
use crate::retry::Retry;
use crate::source::JobSource;

/// How a job is stored: this prefix, `{attempt}:{id length}:{id}`, then the payload bytes.
const FORMAT: &[u8] = b"lhj1:";

/// Hands jobs back, at most once each. First forgets the tokens of hand-backs confirmed since
/// the last call (ARGV[1] = how many, then the tokens). Then for each (receipt, value, token)
/// triple, last first: a token already recorded is a retry of a hand-back that was applied (its
/// answer was lost): skip it, even if the same bytes were fetched again meanwhile and are
/// running. Otherwise take the delivery out of the processing list and push the value at the
/// head of the queue, so the first job is fetched first again, and record the token. A delivery
/// no longer there was handed back otherwise (orphan recovery): skip it. An empty receipt is a
/// job this process never took: push it. Returns how many were skipped.
const REQUEUE: &str = r"
local forget = tonumber(ARGV[1])
for i = 2, forget + 1 do
  redis.call('SREM', KEYS[3], ARGV[i])
end
local skipped = 0
for i = #ARGV - 2, forget + 2, -3 do
  local receipt, value, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('SISMEMBER', KEYS[3], token) == 1 then
    skipped = skipped + 1
  elseif receipt == '' or redis.call('LREM', KEYS[1], 1, receipt) == 1 then
    redis.call('LPUSH', KEYS[2], value)
    redis.call('SADD', KEYS[3], token)
  else
    skipped = skipped + 1
  end
end
return skipped
";

/// Moves one delivery out of the processing list to the tail (retry) or head (dead) of a list.
const MOVE: &str = r"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  if ARGV[3] == 'tail' then
    redis.call('RPUSH', KEYS[2], ARGV[2])
  else
    redis.call('LPUSH', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
";

/// Recovers a process's processing list: unless forced, only if its lease has expired (checked
/// here, atomically). Moves every job back to the head of the queue, oldest first, unregisters
/// the process, drops its hand-back records, and returns what it moved (nil if the process is
/// alive).
const RECOVER: &str = r"
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[4]) == 1 then
  return false
end
local moved = {}
while true do
  local value = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if not value then break end
  moved[#moved + 1] = value
end
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[5])
return moved
";

/// Refreshes this process's lease and registers it (again) in the process set, atomically:
/// a process whose lease lapsed once and whose jobs a peer recovered (which unregisters it) is
/// registered again by its next beat, so its jobs are recovered when it really dies. Returns 1
/// if the process had been unregistered.
const BEAT: &str = r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return redis.call('SADD', KEYS[2], ARGV[1])
";

/// The Redis keys a [`RedisSource`] uses. All keys of one queue share the hash tag `{queue}`, so
/// its scripts touch a single slot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisKeys {
    /// The queue (a list): producers push at the tail, the pool fetches from the head.
    pub queue: String,
    /// This process's processing list: jobs fetched and not yet acked, failed or handed back.
    pub processing: String,
    /// The set of process ids that may hold a processing list for this queue.
    pub processes: String,
    /// This process's lease: while it exists, no one recovers this process's jobs.
    pub alive: String,
    /// Jobs that failed for good (a list, newest first).
    pub dead: String,
    /// This process's record of hand-backs that may not have been confirmed (a set of tokens),
    /// so a retried hand-back is applied once; emptied as hand-backs are confirmed, deleted at
    /// close and by recovery.
    pub requeued: String,
    base: String,
}

impl RedisKeys {
    fn new(namespace: &str, queue: &str, process: &str) -> RedisKeys {
        let base = format!("{namespace}:{{{queue}}}");
        RedisKeys {
            queue: format!("{base}:queue"),
            processing: format!("{base}:processing:{process}"),
            processes: format!("{base}:processes"),
            alive: format!("{base}:alive:{process}"),
            dead: format!("{base}:dead"),
            requeued: format!("{base}:requeued:{process}"),
            base,
        }
    }

    fn processing_of(&self, process: &str) -> String {
        format!("{}:processing:{process}", self.base)
    }

    fn alive_of(&self, process: &str) -> String {
        format!("{}:alive:{process}", self.base)
    }

    fn requeued_of(&self, process: &str) -> String {
        format!("{}:requeued:{process}", self.base)
    }
}

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
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    keys: RedisKeys,
    queue: Arc<str>,
    process: String,
    lease: Duration,
    response_timeout: Duration,
    connect_timeout: Duration,
    /// The command connection, shared; reset after a connection error. Locked briefly.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// The fetch connection: only `fetch` uses it, one worker at a time (the others wait here).
    fetch: tokio::sync::Mutex<FetchConn>,
    /// The fetch connection's `CLIENT ID`, for `close` to kill it. Locked briefly.
    fetch_client: Mutex<Option<i64>>,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
    /// Set by `close` (Release); `fetch` reads it (Acquire) and returns `None` after.
    closed: AtomicBool,
    /// Tokens of hand-backs confirmed since the last requeue call, for it to forget in Redis.
    /// Locked briefly.
    confirmed: Mutex<Vec<u64>>,
    requeue: Script,
    move_one: Script,
    recover: Script,
    beat: Script,
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
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a command (not the blocking fetch) may wait for its answer (default 2 s). A
    /// requeue that times out is retried by the pool with backoff.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long connecting may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Checks the names and opens the command connection.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError::InvalidName`] for a name that would break the key layout, or
    /// [`RedisSourceError::Connect`].
    pub async fn connect(self) -> Result<RedisSource, RedisSourceError> {
        let process = self.process.unwrap_or_else(default_process_id);
        check_name("namespace", &self.namespace)?;
        check_name("queue name", &self.queue)?;
        check_name("process id", &process)?;
        let source = RedisSource {
            inner: Arc::new(Inner {
                keys: RedisKeys::new(&self.namespace, &self.queue, &process),
                client: self.client,
                queue: Arc::from(self.queue),
                process,
                lease: self.lease.max(Duration::from_millis(3)),
                response_timeout: self.response_timeout,
                connect_timeout: self.connect_timeout,
                conn: Mutex::new(None),
                fetch: tokio::sync::Mutex::new(FetchConn::default()),
                fetch_client: Mutex::new(None),
                heartbeat: Mutex::new(None),
                closed: AtomicBool::new(false),
                confirmed: Mutex::new(Vec::new()),
                requeue: Script::new(REQUEUE),
                move_one: Script::new(MOVE),
                recover: Script::new(RECOVER),
                beat: Script::new(BEAT),
            }),
        };
        source.conn().await?;
        Ok(source)
    }
}

impl RedisSource {
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

    /// Pushes a job at the tail of the queue (a producer's call).
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn enqueue(&self, job: &Job) -> Result<(), RedisSourceError> {
        self.enqueue_all(std::slice::from_ref(job)).await
    }

    /// Pushes jobs at the tail of the queue, in order, in one command.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn enqueue_all(&self, jobs: &[Job]) -> Result<(), RedisSourceError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut command = cmd("RPUSH");
        command.arg(&self.inner.keys.queue);
        for job in jobs {
            command.arg(encode(job));
        }
        let mut conn = self.conn().await?;
        command
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|error| self.broken("RPUSH", error))?;
        Ok(())
    }

    /// The jobs waiting in the queue, head (next to be fetched) first.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn queued(&self) -> Result<Vec<Job>, RedisSourceError> {
        self.list(&self.inner.keys.queue).await
    }

    /// The jobs in this process's processing list (fetched, not yet settled), oldest first.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn processing(&self) -> Result<Vec<Job>, RedisSourceError> {
        self.list(&self.inner.keys.processing).await
    }

    /// The dead jobs, newest first.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn dead(&self) -> Result<Vec<Job>, RedisSourceError> {
        self.list(&self.inner.keys.dead).await
    }

    /// Recovers the jobs of every other process registered for this queue whose lease has
    /// expired: they go back to the head of the queue. [`JobSource::start`] does this; call it
    /// again to sweep periodically.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn recover_orphans(&self) -> Result<Vec<Job>, RedisSourceError> {
        let mut conn = self.conn().await?;
        let processes: Vec<String> = cmd("SMEMBERS")
            .arg(&self.inner.keys.processes)
            .query_async(&mut conn)
            .await
            .map_err(|error| self.broken("SMEMBERS", error))?;
        let mut recovered = Vec::new();
        for process in processes.iter().filter(|p| **p != self.inner.process) {
            if let Some(jobs) = self.recover(process, false).await? {
                if !jobs.is_empty() {
                    tracing::warn!(
                        queue = %self.inner.queue,
                        process = %process,
                        count = jobs.len(),
                        "recovered the jobs of a process whose lease expired"
                    );
                }
                recovered.extend(jobs);
            }
        }
        Ok(recovered)
    }

    async fn recover(
        &self,
        process: &str,
        force: bool,
    ) -> Result<Option<Vec<Job>>, RedisSourceError> {
        let keys = &self.inner.keys;
        let mut invocation = self.inner.recover.prepare_invoke();
        invocation
            .key(keys.processing_of(process))
            .key(&keys.queue)
            .key(&keys.processes)
            .key(keys.alive_of(process))
            .key(keys.requeued_of(process))
            .arg(process)
            .arg(if force { "1" } else { "0" });
        let mut conn = self.conn().await?;
        let moved: Option<Vec<Vec<u8>>> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|error| self.broken("recover (script)", error))?;
        Ok(moved.map(|values| {
            values
                .into_iter()
                .map(|raw| self.decode_lossy(raw))
                .collect()
        }))
    }

    async fn list(&self, key: &str) -> Result<Vec<Job>, RedisSourceError> {
        let mut conn = self.conn().await?;
        let values: Vec<Vec<u8>> = cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|error| self.broken("LRANGE", error))?;
        Ok(values
            .into_iter()
            .map(|raw| self.decode_lossy(raw))
            .collect())
    }

    /// Refreshes this process's lease and registers it; true if it had been unregistered.
    async fn beat(&self) -> Result<bool, RedisSourceError> {
        let mut invocation = self.inner.beat.prepare_invoke();
        invocation
            .key(&self.inner.keys.alive)
            .key(&self.inner.keys.processes)
            .arg(&self.inner.process)
            .arg(self.inner.lease.as_millis() as u64);
        let mut conn = self.conn().await?;
        let added: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|error| self.broken("beat (script)", error))?;
        Ok(added == 1)
    }

    fn spawn_heartbeat(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.lease / 3;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let source = RedisSource { inner };
                match source.beat().await {
                    Ok(false) => {}
                    Ok(true) => tracing::warn!(
                        queue = %source.inner.queue,
                        process = %source.inner.process,
                        "this process's lease had lapsed and a peer unregistered it, recovering the jobs it held (they may run twice); registered again"
                    ),
                    Err(error) => {
                        tracing::warn!(queue = %source.inner.queue, error = %crate::pool::chain(&error), "lease refresh failed")
                    }
                }
            }
        });
        if let Some(previous) = self.inner.heartbeat.lock().replace(task) {
            previous.abort();
        }
    }

    fn connection_config(&self, response_timeout: bool) -> AsyncConnectionConfig {
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(self.inner.connect_timeout);
        if response_timeout {
            config.set_response_timeout(self.inner.response_timeout)
        } else {
            config
        }
    }

    async fn conn(&self) -> Result<MultiplexedConnection, RedisSourceError> {
        if let Some(conn) = self.inner.conn.lock().clone() {
            return Ok(conn);
        }
        let conn = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&self.connection_config(true))
            .await
            .map_err(RedisSourceError::Connect)?;
        *self.inner.conn.lock() = Some(conn.clone());
        Ok(conn)
    }

    /// Wraps a command's error; forgets the connection if it is broken.
    fn broken(&self, command: &'static str, error: RedisError) -> RedisSourceError {
        if (error.is_io_error() || error.is_unrecoverable_error()) && !error.is_timeout() {
            *self.inner.conn.lock() = None;
        }
        RedisSourceError::Command {
            command,
            source: error,
        }
    }

    fn decode_lossy(&self, raw: Vec<u8>) -> Job {
        let raw = Bytes::from(raw);
        match decode(&raw) {
            Some(job) => job.with_queue(self.inner.queue.clone()).with_receipt(raw),
            None => Job::new(format!("<undecodable, {} bytes>", raw.len()), raw.clone())
                .with_queue(self.inner.queue.clone())
                .with_receipt(raw),
        }
    }

    /// Kills the fetch connection, so a `BLMOVE` still blocked on it cannot take a job.
    async fn kill_fetch_connection(&self) -> Result<(), RedisSourceError> {
        let Some(id) = self.inner.fetch_client.lock().take() else {
            return Ok(());
        };
        let mut conn = self.conn().await?;
        cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|error| self.broken("CLIENT KILL", error))?;
        Ok(())
    }

    async fn move_one(
        &self,
        receipt: &[u8],
        value: &[u8],
        to: &str,
        end: &str,
        command: &'static str,
    ) -> Result<bool, RedisSourceError> {
        let mut invocation = self.inner.move_one.prepare_invoke();
        invocation
            .key(&self.inner.keys.processing)
            .key(to)
            .arg(receipt)
            .arg(value)
            .arg(end);
        let mut conn = self.conn().await?;
        let moved: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|error| self.broken(command, error))?;
        Ok(moved == 1)
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
                            &self.connection_config(false),
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
                .arg(0)
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
        let mut invocation = self.inner.requeue.prepare_invoke();
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

/// A job as stored in Redis.
fn encode(job: &Job) -> Vec<u8> {
    let id = job.id().as_bytes();
    let mut out = Vec::with_capacity(FORMAT.len() + 24 + id.len() + job.payload().len());
    out.extend_from_slice(FORMAT);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}:{}:", job.attempt(), id.len());
    out.extend_from_slice(id);
    out.extend_from_slice(job.payload());
    out
}

/// A stored job, or `None` if `raw` is not in this format.
fn decode(raw: &Bytes) -> Option<Job> {
    let rest = raw.strip_prefix(FORMAT)?;
    let (attempt, rest) = split_number(rest)?;
    let (len, rest) = split_number(rest)?;
    let len = usize::try_from(len).ok()?;
    let id = std::str::from_utf8(rest.get(..len)?).ok()?;
    let payload_at = raw.len() - rest.len() + len;
    Some(Job::new(id, raw.slice(payload_at..)).with_attempt(u32::try_from(attempt).ok()?))
}

/// Splits `123:rest` into `(123, rest)`.
fn split_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let colon = bytes.iter().position(|b| *b == b':')?;
    let digits = std::str::from_utf8(&bytes[..colon]).ok()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, &bytes[colon + 1..]))
}

fn check_name(what: &'static str, value: &str) -> Result<(), RedisSourceError> {
    let bad = |c: char| c == '{' || c == '}' || c == ':' || c.is_whitespace();
    if value.is_empty() || value.chars().any(bad) {
        return Err(RedisSourceError::InvalidName {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Host name, process id and start time: unique per process, readable in `redis-cli`.
fn default_process_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{host}-{}-{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_binary_payloads_and_odd_ids() {
        let job = Job::new(
            "id:with:colons ✓",
            Bytes::from_static(b"\x00\xffpayload:1:2"),
        )
        .with_attempt(7);
        let raw = Bytes::from(encode(&job));
        assert!(raw.starts_with(b"lhj1:7:"));
        let back = decode(&raw).expect("decodes");
        assert_eq!(back.id(), job.id());
        assert_eq!(back.attempt(), 7);
        assert_eq!(back.payload(), job.payload());
    }

    #[test]
    fn foreign_values_do_not_decode() {
        for raw in [
            &b""[..],
            b"hello",
            b"lhj1:",
            b"lhj1:x:1:a",
            b"lhj1:1:9:short",
            b"lhj1:-1:1:a",
            b"lhj1:1:1",
        ] {
            assert!(decode(&Bytes::copy_from_slice(raw)).is_none(), "{raw:?}");
        }
    }

    #[test]
    fn names_that_break_keys_are_rejected() {
        for bad in ["", "a b", "a{b", "a}b", "a:b"] {
            assert!(check_name("queue name", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("queue name", "emails-2.high_prio").is_ok());
        assert!(check_name("process id", &default_process_id()).is_ok());
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = RedisKeys::new("lhj", "emails", "p1");
        for key in [
            &keys.queue,
            &keys.processing,
            &keys.processes,
            &keys.alive,
            &keys.dead,
            &keys.requeued,
        ] {
            assert!(key.starts_with("lhj:{emails}:"), "{key}");
        }
        assert_eq!(keys.processing_of("p1"), keys.processing);
        assert_eq!(keys.alive_of("p1"), keys.alive);
        assert_eq!(keys.requeued_of("p1"), keys.requeued);
    }
}
