//! The poll thread and the rebalance callbacks. See [`PollThread`].
//!
//! librdkafka runs rebalance callbacks on the thread that polls. Revocation must wait for the
//! revoked partitions' in-flight messages and commit them before librdkafka gives the partitions
//! up, so the consumer polls on a thread of its own, where that wait may block; message tasks
//! run on the tokio runtime meanwhile.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use lifecycle_hooks::LifecycleHandle;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::state::{Key, Shared};
use super::{ConsumedMessage, Inner};

/// A rebalance callback, see [`ConsumerBuilder::on_rebalance`](crate::ConsumerBuilder::on_rebalance).
pub(crate) type RebalanceCallback = dyn Fn(RebalanceEvent<'_>) + Send + Sync;

/// What a rebalance did to this member, as `(topic, partition)` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RebalanceEvent<'a> {
    /// Partitions were assigned (after the assignment).
    Assigned(&'a [(String, i32)]),
    /// Partitions are being revoked: no new message of theirs starts any more (their buffered
    /// messages were dropped), and their in-flight messages are about to be waited for and
    /// committed.
    Revoking(&'a [(String, i32)]),
    /// Partitions were revoked: waited for, committed, given up.
    Revoked(&'a [(String, i32)]),
}

/// How long one `poll` blocks: messages and callbacks wake it at once; the bound is only how
/// late the thread notices that the close it waits for has completed.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);

/// At most this many messages are handed from the poll thread to the slots at once.
const BATCH: usize = 256;

/// The consumer's librdkafka context: rebalance and commit callbacks, run on the poll thread.
pub(crate) struct PollContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) revoke_timeout: Duration,
    pub(crate) on_rebalance: Option<Arc<RebalanceCallback>>,
    /// For pausing partitions assigned after intake stopped.
    pub(super) inner: std::sync::OnceLock<Weak<Inner>>,
}

impl ClientContext for PollContext {}

fn keys(tpl: &TopicPartitionList) -> Vec<Key> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ConsumerContext for PollContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked = keys(tpl);
        let shared = &*self.shared;
        shared
            .revoked
            .fetch_add(revoked.len() as u64, Ordering::Relaxed);
        {
            let mut state = shared.lock();
            let mut dropped = Vec::new();
            for key in &revoked {
                if let Some(part) = state.part_mut(key) {
                    // Buffered messages were never started: dropped, redelivered to the next
                    // owner; so is the rest of a run a slot holds (invariant 4).
                    part.clear();
                }
                dropped.extend(state.find(key));
            }
            state.ready.retain(|at| !dropped.contains(at));
        }
        // Reported once no new message of these partitions can start (a slot checks before
        // each message of its run): what the callback sees in flight is all that ends here.
        if let Some(callback) = &self.on_rebalance {
            callback(RebalanceEvent::Revoking(&revoked));
        }
        // The revoked partitions' in-flight messages finish (bounded), then their offsets are
        // committed before librdkafka gives the partitions up.
        let cut = shared.wait_ended(&revoked, self.revoke_timeout);
        for ((topic, partition), offset) in &cut {
            tracing::warn!(
                target: "lifecycle_hooks_kafka",
                %topic, partition, offset,
                "a revoked partition's message did not finish within the revoke timeout: it is \
                 not committed and the partition's next owner will process it again"
            );
        }
        {
            let mut state = shared.lock();
            for key in &revoked {
                let part = state.entry(key);
                part.assigned = false;
                part.generation += 1;
            }
        }
        let offsets = shared.to_commit(Some(&revoked));
        if let Err(error) = commit(consumer, shared, &offsets) {
            tracing::warn!(target: "lifecycle_hooks_kafka", %error, "committing the revoked partitions failed: their next owner may process some messages again");
        }
        tracing::info!(target: "lifecycle_hooks_kafka", partitions = ?revoked, "Kafka partitions revoked");
        shared.rebalance_served();
        if let Some(callback) = &self.on_rebalance {
            callback(RebalanceEvent::Revoked(&revoked));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let assigned = keys(tpl);
        let shared = &*self.shared;
        shared
            .assigned
            .fetch_add(assigned.len() as u64, Ordering::Relaxed);
        // The poll thread, in whose `poll` this runs, holds an `Inner`: this is never the last.
        let inner = self.inner.get().and_then(Weak::upgrade);
        {
            let mut state = shared.lock();
            for key in &assigned {
                let part = state.entry(key);
                part.assigned = true;
                part.uncommitted.clear();
                part.stored_next = None;
                part.unstored = 0;
            }
            // librdkafka keeps an application's pause on a partition across its revocation and
            // reassignment: one paused for backpressure before (its flag cleared when revoked)
            // would stay paused for good. Intake open: resume (a partition not paused is left
            // as it is); stopped: pause what comes in. Under the lock, as every pause and
            // resume (invariant 5).
            if let Some(inner) = &inner {
                if shared.open() {
                    inner.resume(&assigned);
                } else {
                    inner.pause(&assigned);
                }
            }
        }
        tracing::info!(target: "lifecycle_hooks_kafka", partitions = ?assigned, "Kafka partitions assigned");
        shared.rebalance_served();
        if let Some(callback) = &self.on_rebalance {
            callback(RebalanceEvent::Assigned(&assigned));
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        // Background (auto) commits: count the messages they covered.
        if result.is_ok() {
            let covered: Vec<(Key, i64)> = offsets
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(next) => Some(((e.topic().to_owned(), e.partition()), next)),
                    _ => None,
                })
                .collect();
            self.shared.committed_up_to(&covered);
        }
    }
}

/// Whether a commit was refused because the group's generation moved or is moving (a
/// rebalance): once this member has served the rebalance, a commit can succeed again.
pub(crate) fn refused_by_a_rebalance(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::ConsumerCommit(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::UnknownMemberId
        )
    )
}

/// Commits `offsets` synchronously and counts what they covered. "Nothing to commit" is fine.
pub(crate) fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    shared: &Shared,
    offsets: &[(Key, i64)],
) -> KafkaResult<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    match consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
            shared.committed_up_to(offsets);
            Ok(())
        }
        Err(error) => Err(error),
    }
}

enum Command {
    Start,
    Close,
}

/// The thread that polls the consumer: it waits for [`start`](PollThread::start) (the service
/// is ready), polls until the consumer is closed, and signals `done`.
pub(crate) struct PollThread {
    commands: mpsc::Sender<Command>,
    pub(crate) done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl PollThread {
    /// Starts the thread (it waits for a command before polling).
    ///
    /// # Panics
    ///
    /// If the operating system cannot start a thread, or outside a tokio runtime.
    pub(crate) fn spawn(inner: &Arc<Inner>, lifecycle: LifecycleHandle) -> PollThread {
        let (commands, command_rx) = mpsc::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        let inner = Arc::downgrade(inner);
        std::thread::Builder::new()
            .name("kafka-consumer-poll".into())
            .spawn(move || {
                // Message tasks are spawned from here onto the service's runtime.
                let _runtime = runtime.enter();
                let started = matches!(command_rx.recv(), Ok(Command::Start));
                if let Some(inner) = inner.upgrade() {
                    poll(&inner, &lifecycle, started);
                }
                let _ = done_tx.send(());
            })
            .expect("the operating system starts a thread for the Kafka consumer");
        PollThread {
            commands,
            done: Some(done),
        }
    }

    pub(crate) fn start(&self) {
        let _ = self.commands.send(Command::Start);
    }

    pub(crate) fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

fn poll(inner: &Arc<Inner>, lifecycle: &LifecycleHandle, started: bool) {
    let client = &*inner.client;
    if started {
        tracing::debug!(target: "lifecycle_hooks_kafka", "Kafka consumer polling");
    }
    let mut close_requested = false;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // Not `closing`: the final commit runs between the two, with the member still in
        // its group.
        if inner.shared.leaving.load(Ordering::Acquire) {
            if !close_requested {
                close_requested = true;
                // Leaves the group (unless static: see `ConsumerBuilder::static_member`); the
                // revocation runs the callbacks above, here, as the queue is served.
                if let Err(error) = client.close_queue() {
                    tracing::warn!(target: "lifecycle_hooks_kafka", %error, "closing the Kafka consumer failed");
                    break;
                }
            }
            if client.closed() {
                break;
            }
        }
        match ConsumedMessage::poll(&inner.client, POLL_TIMEOUT) {
            Some(Ok(message)) => {
                // What librdkafka has ready goes over in one batch: one lock, one slot start
                // per partition, not one per message.
                batch.push(message);
                while batch.len() < BATCH {
                    match ConsumedMessage::poll(&inner.client, Duration::ZERO) {
                        Some(Ok(message)) => batch.push(message),
                        Some(Err(error)) => {
                            tracing::warn!(target: "lifecycle_hooks_kafka", %error, "Kafka consumer error");
                            break;
                        }
                        None => break,
                    }
                }
                inner.on_messages(lifecycle, &mut batch);
            }
            Some(Err(error)) => {
                tracing::warn!(target: "lifecycle_hooks_kafka", %error, "Kafka consumer error")
            }
            None => {}
        }
    }
    tracing::debug!(target: "lifecycle_hooks_kafka", "Kafka consumer closed");
}
