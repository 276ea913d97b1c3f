//! The consumer handle and its dispatch: per-partition order, bounded concurrency, offsets of
//! ended messages only. See [`Consumer`]; its builder is in `builder.rs`, the poll thread and
//! rebalance callbacks in `poll.rs`, the bookkeeping in `state.rs`, the hooks in `hooks.rs`.

mod builder;
mod hooks;
mod poll;
mod state;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use lifecycle_hooks::LifecycleHandle;
use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::OwnedMessage;

use crate::cluster::MockCluster;

pub use builder::{
    ConsumerBuilder, DEFAULT_CLOSE_HOOK_NAME, DEFAULT_PAUSE_HOOK_NAME, DEFAULT_REVOKE_TIMEOUT,
    DEFAULT_SUBSCRIBE_HOOK_NAME,
};
pub use poll::RebalanceEvent;
pub use state::ConsumerStats;

use poll::{PollContext, PollThread};
use state::{Key, Shared, State};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type Handler = dyn Fn(OwnedMessage, LifecycleHandle) -> BoxFuture + Send + Sync;

/// A Kafka consumer bound to a lifecycle, in the spirit of Karafka: it subscribes at startup,
/// fetches once the service is ready, pauses at `stop_intake` while it keeps serving the group,
/// lets in-flight messages finish, and commits the offsets of the messages that ended before it
/// closes in `exit`.
///
/// Bind it with [`hooks`](Consumer::hooks). Each message goes to the handler given to
/// [`ConsumerBuilder::build`]; one message per partition is in flight at a time (order is kept
/// per partition, Karafka's default), at most [`concurrency`](ConsumerBuilder::concurrency)
/// across partitions. Each message in flight is lifecycle work, named
/// `kafka <topic>/<partition>@<offset>` in the state dump and the stuck-work report.
///
/// Offsets: only the offset of a message whose handler returned is stored (librdkafka's
/// `enable.auto.offset.store=false`), committed in the background every
/// `auto.commit.interval.ms` (librdkafka's default, 5 s), and **synchronously** when
/// partitions are revoked and in the `exit` phase before the consumer closes. A handler that
/// fails (returns `Err` or panics) is counted in `failed` and the consumer moves past it (its
/// offset is stored): retry or dead-letter inside the handler if the message must not be
/// skipped. A message cut off at the drain deadline is not committed: it is redelivered after
/// the restart, and reported with
/// [`report_handed_back`](lifecycle_hooks::LifecycleHandle::report_handed_back).
///
/// Rebalances: when partitions are revoked, the consumer waits (at most
/// [`revoke_timeout`](ConsumerBuilder::revoke_timeout)) for their in-flight messages, then
/// commits what ended, synchronously, before librdkafka gives the partitions up. With
/// `partition.assignment.strategy=cooperative-sticky` only the partitions that move are
/// revoked and waited for; with the eager strategies (`range`, `roundrobin`, librdkafka's
/// default) every partition is. Whether that eager commit is accepted depends on the broker:
/// Kafka's coordinator accepts a commit of the current generation while the group prepares the
/// rebalance, but librdkafka's mock cluster mostly answers `RebalanceInProgress` (it refuses
/// commits once a member's JoinGroup has moved the group to `Joining`, which happens before the
/// other members hear of the rebalance). A refused commit is logged (a warning naming the error)
/// and the consumer goes on: nothing is lost, but what ended since the last commit is
/// processed again by the partitions' next owners (at-least-once). Prefer cooperative-sticky.
///
/// Without [`bootstrap_servers`](ConsumerBuilder::bootstrap_servers) it starts librdkafka's
/// mock cluster in-process ([`MockCluster`]).
///
/// ```
/// use lifecycle_hooks::Lifecycle;
/// use lifecycle_hooks_kafka::Consumer;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let consumer = Consumer::builder("orders-service", ["orders"])
///     .build(|message, _lifecycle| async move {
///         let _ = message; // work with it
///         Ok(())
///     })?;
/// let lifecycle = Lifecycle::builder().hooks(consumer.hooks()).build()?;
/// lifecycle.handle().stop();
/// let outcome = lifecycle.run().await;
/// assert_eq!(outcome.exit_code(), 0);
/// assert_eq!(consumer.stats().fetched, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Consumer {
    inner: Arc<Inner>,
}

struct Inner {
    client: Arc<BaseConsumer<PollContext>>,
    shared: Arc<Shared>,
    handler: Arc<Handler>,
    topics: Vec<String>,
    group: String,
    bootstrap_servers: String,
    subscribe_hook: Cow<'static, str>,
    pause_hook: Cow<'static, str>,
    close_hook: Cow<'static, str>,
    close_before: Vec<Cow<'static, str>>,
    /// The poll thread, once startup has started it.
    poll: Mutex<Option<PollThread>>,
    cluster: Option<MockCluster>,
}

impl Consumer {
    /// A builder for a consumer of `topics` in consumer group `group`.
    pub fn builder<I, T>(group: impl Into<String>, topics: I) -> ConsumerBuilder
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        ConsumerBuilder::new(group.into(), topics.into_iter().map(Into::into).collect())
    }

    /// The consumer's counters.
    pub fn stats(&self) -> ConsumerStats {
        self.inner.shared.stats()
    }

    /// The `bootstrap.servers` the consumer uses (the mock cluster's when embedded).
    pub fn bootstrap_servers(&self) -> &str {
        &self.inner.bootstrap_servers
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// The embedded mock cluster, when the consumer was built without bootstrap servers.
    pub fn mock_cluster(&self) -> Option<&MockCluster> {
        self.inner.cluster.as_ref()
    }

    /// The name of the exit hook that commits and closes: order other exit hooks after it
    /// (a producer's close, so that the consumer commits and closes first).
    pub fn close_hook_name(&self) -> &str {
        &self.inner.close_hook
    }

    /// The partitions assigned to this member now.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.inner
            .client
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// How long the poll thread waits for a full partition's buffer to come down before it
/// pauses the partition instead: long enough that a fast handler never causes a pause, short
/// enough that rebalance callbacks (served by the same thread) wait at most this much more.
const BACKPRESSURE_BLOCK: Duration = Duration::from_millis(500);

/// At most this many ended messages of a partition wait for their offset to be stored into
/// librdkafka while a slot runs the partition's messages back to back (see `Inner::end`).
const STORE_EVERY: u32 = 64;

/// A message taken for a slot: its partition, the partition's generation, the message.
struct Job {
    key: Key,
    generation: u64,
    message: OwnedMessage,
}

/// Dispatch: called with messages from the poll thread, and by the slots as messages end.
///
/// A *slot* is one task that runs messages one after another: at the end of a message it
/// takes the next one under the same lock acquisition that records the end (its own
/// partition's next message, or the oldest waiting partition's), so a busy consumer spawns no
/// task per message. A slot ends when nothing is waiting; at most `concurrency` run.
impl Inner {
    /// A batch of messages from the poll thread, in fetch order: buffered on their partitions,
    /// and slots started while fewer than `concurrency` run (invariants 1 and 4).
    fn on_messages(self: &Arc<Self>, lifecycle: &LifecycleHandle, messages: Vec<OwnedMessage>) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        // Checked under the lock: `stop_intake` sets the flag, then clears under the lock.
        if !shared.open() {
            return;
        }
        let mut full = Vec::new();
        {
            let State { parts, ready, .. } = &mut *state;
            // Messages come in runs per partition: the key is built once per run.
            let mut key: Option<Key> = None;
            for message in messages {
                let same = key
                    .as_ref()
                    .is_some_and(|(t, p)| t == message.topic() && *p == message.partition());
                if !same {
                    key = Some((message.topic().to_owned(), message.partition()));
                }
                let Some(key) = key.as_ref() else { continue };
                let Some(part) = parts.get_mut(key) else {
                    continue;
                };
                if !part.assigned {
                    continue;
                }
                part.queue.push_back(message);
                if part.queue.len() >= shared.buffer && !full.contains(key) {
                    full.push(key.clone());
                }
                if part.in_flight.is_none() && !part.ready {
                    part.ready = true;
                    ready.push_back(key.clone());
                }
            }
        }
        let mut resume = Vec::new();
        let mut jobs = Vec::new();
        while let Some(job) = self.next_job(&mut state, &mut resume) {
            jobs.push(job);
        }
        if !resume.is_empty() {
            self.resume(&resume);
        }
        drop(state);
        for job in jobs {
            self.spawn_slot(lifecycle, job);
        }
        self.wait_room(&full);
    }

    /// Backpressure, on the poll thread: while one of the `full` partitions still buffers more
    /// than half of [`buffer`](ConsumerBuilder::buffer), the thread stops taking messages
    /// (librdkafka keeps what it prefetched), at most [`BACKPRESSURE_BLOCK`]; the partitions
    /// still full then are paused, so a slow handler does not keep the thread from serving the
    /// group's callbacks (a pause makes librdkafka drop its prefetch and fetch it again).
    fn wait_room(&self, full: &[Key]) {
        if full.is_empty() {
            return;
        }
        let shared = &*self.shared;
        let low = shared.buffer / 2;
        let deadline = Instant::now() + BACKPRESSURE_BLOCK;
        let mut state = shared.lock();
        loop {
            if !shared.open() {
                return;
            }
            let over = |state: &State, key: &Key| {
                state
                    .parts
                    .get(key)
                    .is_some_and(|p| p.assigned && p.queue.len() > low)
            };
            if !full.iter().any(|key| over(&state, key)) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                let mut pause = Vec::new();
                for key in full {
                    if over(&state, key) {
                        if let Some(part) = state.parts.get_mut(key) {
                            if !part.backpressure {
                                part.backpressure = true;
                                pause.push(key.clone());
                            }
                        }
                    }
                }
                // Paused and resumed under the lock, so a pause and the resume that ends it
                // cannot reach librdkafka in the wrong order (invariant 5: these calls only
                // queue an op).
                self.pause(&pause);
                return;
            }
            state = shared
                .room
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Takes the oldest waiting partition's next message for a free slot (counted in
    /// `running`), if intake is open, a slot is free and a partition waits.
    fn next_job(&self, state: &mut State, resume: &mut Vec<Key>) -> Option<Job> {
        if !self.shared.open() {
            return None;
        }
        while state.running < self.shared.concurrency {
            let key = state.ready.pop_front()?;
            let Some(part) = state.parts.get_mut(&key) else {
                continue;
            };
            part.ready = false;
            let Some(message) = part.queue.pop_front() else {
                continue;
            };
            part.in_flight = Some(message.offset());
            if part.queue.len() == self.shared.buffer / 2 {
                // The poll thread may wait for this partition's buffer to come down to here.
                self.shared.room.notify_one();
            }
            if part.queue.is_empty() && part.backpressure {
                part.backpressure = false;
                if part.assigned {
                    resume.push(key.clone());
                }
            }
            let generation = part.generation;
            state.running += 1;
            return Some(Job {
                key,
                generation,
                message,
            });
        }
        None
    }

    /// Spawns a slot running `job`, then whatever it takes next, as tracked work.
    fn spawn_slot(self: &Arc<Self>, lifecycle: &LifecycleHandle, job: Job) {
        let inner = Arc::clone(self);
        let handle = lifecycle.clone();
        lifecycle.spawn(async move { inner.run_slot(handle, job).await });
    }

    /// A slot: runs messages until none waits for it. A message is named lifecycle work
    /// (`kafka <topic>/<partition>@<offset>`, in the state dump and the stuck-work report) from
    /// its handler's first `Pending` on: a handler that completes at its first poll never
    /// waits, so it is never seen running, and is not registered by name.
    async fn run_slot(self: Arc<Self>, lifecycle: LifecycleHandle, mut job: Job) {
        loop {
            self.shared.fetched.fetch_add(1, Ordering::Relaxed);
            let offset = job.message.offset();
            let mut ending = Ending {
                inner: &self,
                lifecycle: &lifecycle,
                key: Some(job.key),
                generation: job.generation,
                offset,
                result: None,
            };
            let mut run = (self.handler)(job.message, lifecycle.clone());
            let result = match std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await {
                Poll::Ready(result) => result,
                Poll::Pending => {
                    let key = ending.key.as_ref().expect("set above");
                    let _named =
                        lifecycle.work_guard_named(format!("kafka {}/{}@{offset}", key.0, key.1));
                    run.await
                }
            };
            if let Err(error) = &result {
                let key = ending.key.as_ref().expect("set above");
                tracing::warn!(
                    target: "lifecycle_hooks_kafka",
                    topic = %key.0, partition = key.1, offset,
                    error = %error,
                    "Kafka message handler failed; moving past the message"
                );
            }
            ending.result = Some(result.is_ok());
            let key = ending.key.take().expect("set above");
            let (generation, ok) = (ending.generation, result.is_ok());
            drop(ending);
            match self.end(&lifecycle, key, generation, offset, Some(ok), true) {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// A message ended (`Some(ok)`), or was cut off (`None`): count it, store its offset if it
    /// ended, and give its slot the next message — returned if `keep_slot` (the slot goes on),
    /// else started in a new slot. Other free slots are filled too.
    fn end(
        self: &Arc<Self>,
        lifecycle: &LifecycleHandle,
        key: Key,
        generation: u64,
        offset: i64,
        result: Option<bool>,
        keep_slot: bool,
    ) -> Option<Job> {
        let shared = &*self.shared;
        match result {
            Some(true) => shared.processed.fetch_add(1, Ordering::Relaxed),
            Some(false) => shared.failed.fetch_add(1, Ordering::Relaxed),
            None => shared.handed_back.fetch_add(1, Ordering::Relaxed),
        };
        let mut state = shared.lock();
        state.running -= 1;
        let mut store = false;
        if let Some(part) = state.parts.get_mut(&key) {
            part.in_flight = None;
            if result.is_some() && part.assigned && part.generation == generation {
                store = true;
                part.uncommitted.push_back(offset);
                part.stored_next = Some(offset + 1);
            }
            if !part.queue.is_empty() && !part.ready {
                part.ready = true;
                state.ready.push_back(key.clone());
            }
        }
        let mut resume = Vec::new();
        let mine = if keep_slot {
            self.next_job(&mut state, &mut resume)
        } else {
            None
        };
        // Invariant 3: stored under the lock, so a commit snapshot never runs ahead of it.
        // librdkafka's `rd_kafka_offset_store` takes the message's own offset and stores + 1.
        // While the slot goes on with the same partition, the store into librdkafka (what its
        // background commit covers) may wait up to `STORE_EVERY` messages: the consumer's own
        // commits use `stored_next`, and librdkafka never commits a stored offset at or below
        // the committed one, so a late store cannot take a commit back.
        if store {
            let continues = mine.as_ref().is_some_and(|job| job.key == key);
            let due = state.parts.get_mut(&key).is_none_or(|part| {
                part.unstored += 1;
                let due = !continues || part.unstored >= STORE_EVERY;
                if due {
                    part.unstored = 0;
                }
                due
            });
            if due {
                if let Err(error) = self.client.store_offset(&key.0, key.1, offset) {
                    tracing::warn!(target: "lifecycle_hooks_kafka", topic = %key.0, partition = key.1, offset, %error, "could not store the offset");
                }
            }
        }
        let mut others = Vec::new();
        while let Some(job) = self.next_job(&mut state, &mut resume) {
            others.push(job);
        }
        let idle = state.running == 0;
        let waited = state.ended_waiters > 0;
        if !resume.is_empty() {
            self.resume(&resume);
        }
        drop(state);
        if waited {
            shared.ended.notify_all();
        }
        if idle {
            shared.idle.notify_waiters();
        }
        if result.is_none() {
            let what = format!("kafka {}/{}@{offset}", key.0, key.1);
            tracing::warn!(target: "lifecycle_hooks_kafka", message = %what, "Kafka message cut off at the deadline: not committed, it will be redelivered");
            lifecycle.report_handed_back(what);
        }
        for job in others {
            self.spawn_slot(lifecycle, job);
        }
        mine
    }

    fn tpl(keys: &[Key]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in keys {
            tpl.add_partition(topic, *partition);
        }
        tpl
    }

    fn pause(&self, keys: &[Key]) {
        if keys.is_empty() {
            return;
        }
        if let Err(error) = self.client.pause(&Self::tpl(keys)) {
            tracing::warn!(target: "lifecycle_hooks_kafka", %error, "could not pause Kafka partitions");
        }
    }

    fn resume(&self, keys: &[Key]) {
        if let Err(error) = self.client.resume(&Self::tpl(keys)) {
            tracing::warn!(target: "lifecycle_hooks_kafka", %error, "could not resume Kafka partitions");
        }
    }

    /// `stop_intake`: no new message starts; every assigned partition pauses; buffered messages
    /// are dropped (never started, never committed: redelivered). Polling goes on.
    fn stop_intake(&self) {
        self.shared.intake_stopped.store(true, Ordering::Release);
        let mut state = self.shared.lock();
        state.ready.clear();
        let mut assigned = Vec::new();
        for (key, part) in state.parts.iter_mut() {
            part.queue.clear();
            part.ready = false;
            part.backpressure = false;
            if part.assigned {
                assigned.push(key.clone());
            }
        }
        self.pause(&assigned);
        drop(state);
        // The poll thread, if it waits for room, goes back to polling.
        self.shared.room.notify_one();
    }
}

/// Lives with a message in its slot: if the slot is dropped (cut off at the deadline) or
/// unwinds (the handler panicked) before the message ended, the message is counted and its
/// partition moves on, in a new slot.
struct Ending<'a> {
    inner: &'a Arc<Inner>,
    lifecycle: &'a LifecycleHandle,
    /// Taken when the message ended normally (the slot goes on by itself).
    key: Option<Key>,
    generation: u64,
    offset: i64,
    /// `Some(ok)` once the handler returned.
    result: Option<bool>,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        // A panicking handler unwinds through here: a failure, not a hand-back.
        let result = match self.result {
            Some(ok) => Some(ok),
            None if std::thread::panicking() => Some(false),
            None => None,
        };
        let _ = self.inner.end(
            self.lifecycle,
            key,
            self.generation,
            self.offset,
            result,
            false,
        );
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("bootstrap_servers", &self.inner.bootstrap_servers)
            .field("group", &self.inner.group)
            .field("topics", &self.inner.topics)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
