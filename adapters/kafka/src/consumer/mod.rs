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
use state::{Key, Shared};

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

/// Dispatch: called with messages from the poll thread, and when a message ends.
impl Inner {
    /// A message from the poll thread: start it or buffer it (invariants 1 and 4).
    fn on_message(self: &Arc<Self>, lifecycle: &LifecycleHandle, message: OwnedMessage) {
        let shared = &*self.shared;
        let key: Key = (message.topic().to_owned(), message.partition());
        let mut state = shared.lock();
        // Checked under the lock: `stop_intake` sets the flag, then clears under the lock.
        if !shared.open() {
            return;
        }
        let running = state.running;
        let part = state.parts.entry(key.clone()).or_default();
        if !part.assigned {
            return;
        }
        if part.in_flight.is_none() && part.queue.is_empty() && running < shared.concurrency {
            let generation = part.generation;
            part.in_flight = Some(message.offset());
            state.running += 1;
            drop(state);
            self.start(lifecycle, key, generation, message);
            return;
        }
        part.queue.push_back(message);
        let full = part.queue.len() >= shared.buffer && !part.backpressure;
        if full {
            part.backpressure = true;
        }
        let idle = part.in_flight.is_none() && !part.ready;
        if idle {
            part.ready = true;
            state.ready.push_back(key.clone());
        }
        // Paused and resumed under the lock, so a pause and the resume that ends it cannot
        // reach librdkafka in the wrong order (invariant 5: these calls only queue an op).
        if full {
            self.pause(&[key]);
        }
        drop(state);
    }

    /// Spawns the handler for `message` as tracked, named work.
    fn start(
        self: &Arc<Self>,
        lifecycle: &LifecycleHandle,
        key: Key,
        generation: u64,
        message: OwnedMessage,
    ) {
        self.shared.fetched.fetch_add(1, Ordering::Relaxed);
        let offset = message.offset();
        let name = format!("kafka {}/{}@{}", key.0, key.1, offset);
        let run = (self.handler)(message, lifecycle.clone());
        let mut ending = Ending {
            inner: Arc::clone(self),
            lifecycle: lifecycle.clone(),
            key,
            generation,
            offset,
            result: None,
        };
        lifecycle.spawn_named(name, async move {
            let result = run.await;
            ending.result = Some(result.is_ok());
            if let Err(error) = result {
                tracing::warn!(
                    target: "lifecycle_hooks_kafka",
                    topic = %ending.key.0, partition = ending.key.1, offset,
                    error = %error,
                    "Kafka message handler failed; moving past the message"
                );
            }
        });
    }

    /// A message ended (`Some(ok)`), or was cut off (`None`): count it, store its offset if it
    /// ended, and start the next message.
    fn end(self: &Arc<Self>, ending: &Ending, result: Option<bool>) {
        let shared = &*self.shared;
        match result {
            Some(true) => shared.processed.fetch_add(1, Ordering::Relaxed),
            Some(false) => shared.failed.fetch_add(1, Ordering::Relaxed),
            None => shared.handed_back.fetch_add(1, Ordering::Relaxed),
        };
        let (topic, partition) = (&ending.key.0, ending.key.1);
        let mut state = shared.lock();
        state.running -= 1;
        let mut store = false;
        let mut resume = Vec::new();
        if let Some(part) = state.parts.get_mut(&ending.key) {
            part.in_flight = None;
            if result.is_some() && part.assigned && part.generation == ending.generation {
                store = true;
                part.uncommitted.push_back(ending.offset);
                part.stored_next = Some(ending.offset + 1);
            }
            if !part.queue.is_empty() && !part.ready {
                part.ready = true;
                state.ready.push_back(ending.key.clone());
            }
        }
        // Invariant 3: stored under the lock, so a commit snapshot never runs ahead of it.
        // librdkafka's `rd_kafka_offset_store` takes the message's own offset and stores + 1.
        if store {
            if let Err(error) = self.client.store_offset(topic, partition, ending.offset) {
                tracing::warn!(target: "lifecycle_hooks_kafka", %topic, partition, offset = ending.offset, %error, "could not store the offset");
            }
        }
        let mut next = Vec::new();
        if shared.open() {
            while state.running < shared.concurrency {
                let Some(key) = state.ready.pop_front() else {
                    break;
                };
                let Some(part) = state.parts.get_mut(&key) else {
                    continue;
                };
                part.ready = false;
                let Some(message) = part.queue.pop_front() else {
                    continue;
                };
                part.in_flight = Some(message.offset());
                if part.queue.is_empty() && part.backpressure {
                    part.backpressure = false;
                    if part.assigned {
                        resume.push(key.clone());
                    }
                }
                let generation = part.generation;
                state.running += 1;
                next.push((key, generation, message));
            }
        }
        let idle = state.running == 0;
        if !resume.is_empty() && shared.open() {
            self.resume(&resume);
        }
        drop(state);
        shared.ended.notify_all();
        if idle {
            shared.idle.notify_waiters();
        }
        if result.is_none() {
            let what = format!("kafka {topic}/{partition}@{}", ending.offset);
            tracing::warn!(target: "lifecycle_hooks_kafka", message = %what, "Kafka message cut off at the deadline: not committed, it will be redelivered");
            ending.lifecycle.report_handed_back(what);
        }
        for (key, generation, message) in next {
            self.start(&ending.lifecycle, key, generation, message);
        }
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
    }
}

/// Lives with a message's task: when the task ends or is dropped (cut off at the deadline),
/// the message is counted and its partition moves on.
struct Ending {
    inner: Arc<Inner>,
    lifecycle: LifecycleHandle,
    key: Key,
    generation: u64,
    offset: i64,
    /// `Some(ok)` once the handler returned.
    result: Option<bool>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        // A panicking handler unwinds through here: a failure, not a hand-back.
        let result = match self.result {
            Some(ok) => Some(ok),
            None if std::thread::panicking() => Some(false),
            None => None,
        };
        let inner = Arc::clone(&self.inner);
        inner.end(self, result);
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
