//! The consumer handle and its dispatch: per-partition order, bounded concurrency, offsets of
//! ended messages only. See [`Consumer`]; its builder is in `builder.rs`, the poll thread and
//! rebalance callbacks in `poll.rs`, the bookkeeping in `state.rs`, the hooks in `hooks.rs`.

mod builder;
mod hooks;
mod message;
mod poll;
mod state;

use std::borrow::Cow;
use std::collections::VecDeque;
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

use crate::cluster::MockCluster;

pub use builder::{
    ConsumerBuilder, DEFAULT_CLOSE_HOOK_NAME, DEFAULT_PAUSE_HOOK_NAME, DEFAULT_REVOKE_TIMEOUT,
    DEFAULT_SUBSCRIBE_HOOK_NAME,
};
pub use message::ConsumedMessage;
pub use poll::RebalanceEvent;
pub use state::ConsumerStats;

use poll::{PollContext, PollThread};
use state::{Key, Live, RUN, Shared, State};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type SlotFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Starts a slot's loop ([`run_slot`]) for the consumer's handler: the one place the handler's
/// type is erased, once per slot, not per message.
type Runner = dyn Fn(Arc<Inner>, LifecycleHandle, Run) -> SlotFuture + Send + Sync;

/// A Kafka consumer bound to a lifecycle, in the spirit of Karafka: it subscribes at startup,
/// fetches once the service is ready, pauses at `stop_intake` while it keeps serving the group,
/// lets in-flight messages finish, and commits the offsets of the messages that ended before it
/// closes in `exit`.
///
/// Bind it with [`hooks`](Consumer::hooks). Each message goes to the handler given to
/// [`ConsumerBuilder::build`] as a [`ConsumedMessage`] (librdkafka's own message, not a copy;
/// read it with [`rdkafka::Message`]'s methods, or [`detach`](ConsumedMessage::detach) it); one
/// message per partition is in flight at a time (order is kept
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
    runner: Arc<Runner>,
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
/// librdkafka while slots run the partition's runs back to back (see `Inner::end_run`).
const STORE_EVERY: u32 = 64;

/// A run of one partition's messages, held by a slot: the partition, its generation and
/// `Live::cleared` when the run was taken, the messages not started yet, and the offsets of
/// the ones that ended (processed or failed), recorded when the run ends (invariant 3).
struct Run {
    part: usize,
    live: Arc<Live>,
    generation: u64,
    cleared: u64,
    messages: VecDeque<ConsumedMessage>,
    ended: Vec<i64>,
}

impl Run {
    /// The next message of the run, unless intake stopped or the partition's buffered
    /// messages were dropped since the run was taken (invariant 4): then the rest is dropped.
    fn next(&mut self, shared: &Shared) -> Option<ConsumedMessage> {
        // Acquire: pairs with `Part::clear`'s Release bump.
        if !shared.open() || self.live.cleared.load(Ordering::Acquire) != self.cleared {
            self.messages.clear();
            return None;
        }
        self.messages.pop_front()
    }
}

/// Dispatch: called with messages from the poll thread, and by the slots as runs end.
///
/// A *slot* is one task that runs messages one after another. It takes a run of its
/// partition's buffered messages at once (invariant 1) and, at the end of the run, takes the
/// next run under the same lock acquisition that records the end of the last (its own
/// partition's, or the oldest waiting partition's), so a busy consumer spawns no task per
/// message and takes the lock once per run, not per message. A slot ends when nothing is
/// waiting; at most `concurrency` run.
impl Inner {
    /// A batch of messages from the poll thread, in fetch order: buffered on their partitions,
    /// and slots started while fewer than `concurrency` run (invariants 1 and 4). `messages`
    /// is left empty, for the next batch.
    fn on_messages(
        self: &Arc<Self>,
        lifecycle: &LifecycleHandle,
        messages: &mut Vec<ConsumedMessage>,
    ) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        // Checked under the lock: `stop_intake` sets the flag, then clears under the lock.
        if !shared.open() {
            messages.clear();
            return;
        }
        let mut full = Vec::new();
        {
            let State {
                parts,
                ready,
                index,
                ..
            } = &mut *state;
            // Messages come in runs per partition: the partition is looked up once per run.
            let mut at: Option<usize> = None;
            for message in messages.drain(..) {
                let same = at.is_some_and(|at| {
                    let key = &parts[at].key;
                    key.1 == message.partition() && key.0 == message.topic()
                });
                if !same {
                    at = index
                        .get(&(message.topic().to_owned(), message.partition()))
                        .copied();
                }
                let Some(at) = at else { continue };
                let part = &mut parts[at];
                if !part.assigned {
                    continue;
                }
                part.queue.push_back(message);
                if part.queue.len() >= shared.buffer && !full.contains(&at) {
                    full.push(at);
                }
                if !part.in_flight && !part.ready {
                    part.ready = true;
                    ready.push_back(at);
                }
            }
        }
        let mut resume = Vec::new();
        let mut runs = Vec::new();
        while let Some(at) = self.next_ready(&mut state) {
            runs.push(self.take_run(&mut state, at, &mut resume, None));
        }
        if !resume.is_empty() {
            self.resume(&resume);
        }
        drop(state);
        for run in runs {
            self.spawn_slot(lifecycle, run);
        }
        self.wait_room(&full);
    }

    /// Backpressure, on the poll thread: while one of the `full` partitions still buffers more
    /// than three quarters of [`buffer`](ConsumerBuilder::buffer) ([`Shared::room_at`]), the
    /// thread stops taking messages
    /// (librdkafka keeps what it prefetched), at most [`BACKPRESSURE_BLOCK`]; the partitions
    /// still full then are paused, so a slow handler does not keep the thread from serving the
    /// group's callbacks (a pause makes librdkafka drop its prefetch and fetch it again).
    fn wait_room(&self, full: &[usize]) {
        if full.is_empty() {
            return;
        }
        let shared = &*self.shared;
        let low = shared.room_at();
        let deadline = Instant::now() + BACKPRESSURE_BLOCK;
        let mut state = shared.lock();
        loop {
            if !shared.open() {
                return;
            }
            let over = |state: &State, at: usize| {
                let part = &state.parts[at];
                part.assigned && part.queue.len() > low
            };
            if !full.iter().any(|&at| over(&state, at)) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                let mut pause = Vec::new();
                for &at in full {
                    if over(&state, at) && !state.parts[at].backpressure {
                        state.parts[at].backpressure = true;
                        pause.push(state.parts[at].key.clone());
                    }
                }
                // Paused and resumed under the lock, so a pause and the resume that ends it
                // cannot reach librdkafka in the wrong order (invariant 5).
                shared
                    .paused
                    .fetch_add(pause.len() as u64, Ordering::Relaxed);
                self.pause(&pause);
                return;
            }
            state.room_waiters += 1;
            state = shared
                .room
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
            state.room_waiters -= 1;
        }
    }

    /// The oldest waiting partition with buffered messages, if intake is open and a slot is
    /// free.
    fn next_ready(&self, state: &mut State) -> Option<usize> {
        if !self.shared.open() || state.running >= self.shared.concurrency {
            return None;
        }
        while let Some(at) = state.ready.pop_front() {
            let part = &mut state.parts[at];
            part.ready = false;
            if !part.queue.is_empty() {
                return Some(at);
            }
        }
        None
    }

    /// Takes a run of partition `at` (from [`next_ready`](Self::next_ready)) for a slot,
    /// counted in `running`; `reuse` lends its buffers.
    fn take_run(
        &self,
        state: &mut State,
        at: usize,
        resume: &mut Vec<Key>,
        reuse: Option<&mut Run>,
    ) -> Run {
        let low = self.shared.room_at();
        let part = &mut state.parts[at];
        let before = part.queue.len();
        let take = before.min(RUN);
        let (mut messages, ended) = match reuse {
            Some(run) => (
                std::mem::take(&mut run.messages),
                std::mem::take(&mut run.ended),
            ),
            None => (VecDeque::with_capacity(take), Vec::with_capacity(take)),
        };
        messages.extend(part.queue.drain(..take));
        part.in_flight = true;
        let after = part.queue.len();
        if after == 0 && part.backpressure {
            part.backpressure = false;
            if part.assigned {
                resume.push(part.key.clone());
            }
        }
        let run = Run {
            part: at,
            live: Arc::clone(&part.live),
            generation: part.generation,
            // Read under the lock, where every bump happens.
            cleared: part.live.cleared.load(Ordering::Relaxed),
            messages,
            ended,
        };
        state.running += 1;
        if before > low && after <= low && state.room_waiters > 0 {
            // The poll thread waits for this partition's buffer to come down to here.
            self.shared.room.notify_one();
        }
        run
    }

    /// Spawns a slot running `run`, then whatever it takes next, as tracked work.
    fn spawn_slot(self: &Arc<Self>, lifecycle: &LifecycleHandle, run: Run) {
        lifecycle.spawn((self.runner)(Arc::clone(self), lifecycle.clone(), run));
    }

    /// A run ended — all its messages ended, or the rest was dropped, or (from `Slot`'s drop)
    /// the slot was cut off (`cut`: the offset handed back) or unwound. Records the ended
    /// offsets and frees the partition; if `keep_slot`, takes the slot's next run into `run`
    /// and returns whether there was one; other free slots are filled with new slots.
    fn end_run(
        self: &Arc<Self>,
        lifecycle: &LifecycleHandle,
        run: &mut Run,
        cut: Option<i64>,
        keep_slot: bool,
    ) -> bool {
        let shared = &*self.shared;
        let mut state = shared.lock();
        state.running -= 1;
        let at = run.part;
        let part = &mut state.parts[at];
        part.in_flight = false;
        let mut store = None;
        if let Some(&last) = run.ended.last() {
            if part.assigned && part.generation == run.generation {
                // Invariant 3: recorded under the lock, so a commit snapshot never runs ahead.
                part.uncommitted.extend(run.ended.iter().copied());
                part.stored_next = Some(last + 1);
                part.unstored += run.ended.len() as u32;
                store = Some(last);
            }
        }
        run.ended.clear();
        if !run.messages.is_empty() {
            // Only after an unwind: the rest goes back in front of the buffer, unless it was
            // dropped meanwhile (invariant 4).
            let current = part.assigned
                && part.generation == run.generation
                && part.live.cleared.load(Ordering::Relaxed) == run.cleared
                && shared.open();
            if current {
                while let Some(message) = run.messages.pop_back() {
                    part.queue.push_front(message);
                }
            }
            run.messages.clear();
        }
        if !part.queue.is_empty() && !part.ready {
            part.ready = true;
            state.ready.push_back(at);
        }
        let mut resume = Vec::new();
        let mine = keep_slot
            && match self.next_ready(&mut state) {
                Some(next) => {
                    *run = self.take_run(&mut state, next, &mut resume, Some(run));
                    true
                }
                None => false,
            };
        // librdkafka's `rd_kafka_offset_store` takes the message's own offset and stores + 1.
        // While a slot goes on with the same partition, the store into librdkafka (what its
        // background commit covers) may wait up to `STORE_EVERY` messages: the consumer's own
        // commits use `stored_next`, and librdkafka never commits a stored offset at or below
        // the committed one, so a late store cannot take a commit back.
        if let Some(offset) = store {
            let continues = mine && run.part == at;
            let part = &mut state.parts[at];
            if !continues || part.unstored >= STORE_EVERY {
                part.unstored = 0;
                if let Err(error) = self.client.store_offset(&part.key.0, part.key.1, offset) {
                    tracing::warn!(target: "lifecycle_hooks_kafka", topic = %part.key.0, partition = part.key.1, offset, %error, "could not store the offset");
                }
            }
        }
        let mut others = Vec::new();
        while let Some(at) = self.next_ready(&mut state) {
            others.push(self.take_run(&mut state, at, &mut resume, None));
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
        if let Some(offset) = cut {
            let what = format!("kafka {}/{}@{offset}", run.live.topic, run.live.partition);
            tracing::warn!(target: "lifecycle_hooks_kafka", message = %what, "Kafka message cut off at the deadline: not committed, it will be redelivered");
            lifecycle.report_handed_back(what);
        }
        for other in others {
            self.spawn_slot(lifecycle, other);
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
        if keys.is_empty() {
            return;
        }
        if let Err(error) = self.client.resume(&Self::tpl(keys)) {
            tracing::warn!(target: "lifecycle_hooks_kafka", %error, "could not resume Kafka partitions");
        }
    }

    /// `stop_intake`: no new message starts; every assigned partition pauses; buffered messages
    /// are dropped (never started, never committed: redelivered), also the rest of the runs
    /// slots hold (they check `open` before each message). Polling goes on.
    fn stop_intake(&self) {
        self.shared.intake_stopped.store(true, Ordering::Release);
        let mut state = self.shared.lock();
        state.ready.clear();
        let mut assigned = Vec::new();
        for part in state.parts.iter_mut() {
            part.clear();
            if part.assigned {
                assigned.push(part.key.clone());
            }
        }
        self.pause(&assigned);
        drop(state);
        // The poll thread, if it waits for room, goes back to polling.
        self.shared.room.notify_one();
    }
}

/// Fetched messages that never reached a handler sit in the partitions' buffers, in `Shared`,
/// which the client's own context holds; each message holds the client. Dropping them here,
/// when the last handle goes (no slot runs then: each holds an `Inner`), breaks that cycle, so
/// the client is destroyed (its threads joined) with the `Inner` even if the consumer never
/// closed. The client itself is dropped after this, with the fields.
impl Drop for Inner {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        for part in state.parts.iter_mut() {
            part.queue.clear();
        }
    }
}

/// A slot: runs messages until none waits for it. A message is named lifecycle work
/// (`kafka <topic>/<partition>@<offset>`, in the state dump and the stuck-work report) from
/// its handler's first `Pending` on: a handler that completes at its first poll never
/// waits, so it is never seen running, and is not registered by name.
async fn run_slot<F, Fut>(inner: Arc<Inner>, handler: Arc<F>, lifecycle: LifecycleHandle, run: Run)
where
    F: Fn(ConsumedMessage, LifecycleHandle) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let mut slot = Slot {
        inner: &inner,
        lifecycle: &lifecycle,
        run,
        current: None,
        done: false,
    };
    loop {
        while let Some(message) = slot.run.next(&inner.shared) {
            let offset = message.offset();
            slot.current = Some(offset);
            slot.run.live.offset.store(offset, Ordering::Relaxed);
            inner.shared.fetched.fetch_add(1, Ordering::Relaxed);
            let mut future = std::pin::pin!(handler(message, lifecycle.clone()));
            let result =
                match std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
                    Poll::Ready(result) => result,
                    Poll::Pending => {
                        let live = &slot.run.live;
                        let _named = lifecycle.work_guard_named(format!(
                            "kafka {}/{}@{offset}",
                            live.topic, live.partition
                        ));
                        future.await
                    }
                };
            match result {
                Ok(()) => inner.shared.processed.fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    let live = &slot.run.live;
                    tracing::warn!(
                        target: "lifecycle_hooks_kafka",
                        topic = %live.topic, partition = live.partition, offset,
                        error = %error,
                        "Kafka message handler failed; moving past the message"
                    );
                    inner.shared.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            slot.current = None;
            slot.run.ended.push(offset);
        }
        if !inner.end_run(&lifecycle, &mut slot.run, None, true) {
            slot.done = true;
            return;
        }
    }
}

/// Lives with a run in its slot: if the slot is dropped (cut off at the deadline) or unwinds
/// (the handler panicked) before the run ended, the message in flight is counted (handed back,
/// or failed), the offsets that ended are recorded, the rest of the run goes back to the
/// buffer, and the partition moves on, in a new slot.
struct Slot<'a> {
    inner: &'a Arc<Inner>,
    lifecycle: &'a LifecycleHandle,
    run: Run,
    /// The offset of the message in flight.
    current: Option<i64>,
    /// The slot ended normally (it has no run).
    done: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let shared = &*self.inner.shared;
        let mut cut = None;
        if let Some(offset) = self.current.take() {
            // A panicking handler unwinds through here: a failure, not a hand-back.
            if std::thread::panicking() {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                self.run.ended.push(offset);
            } else {
                shared.handed_back.fetch_add(1, Ordering::Relaxed);
                cut = Some(offset);
            }
        }
        let _ = self
            .inner
            .end_run(self.lifecycle, &mut self.run, cut, false);
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
