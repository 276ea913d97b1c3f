//! The consumer's lifecycle hooks: subscribe at startup, pause at `stop_intake`, commit and
//! close in `exit`. See [`Consumer::hooks`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lifecycle_hooks::{HookContext, HookSpec, LifecycleHandle, Phase};
use rdkafka::consumer::Consumer as _;

use super::poll::{PollThread, commit, refused_by_a_rebalance};
use super::{Consumer, Inner};
use crate::errors::{ConsumerCloseError, SubscribeError};

/// How long the close waits when its hook has no deadline (in `exit` it has one).
const DEFAULT_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// How long a final commit refused by a rebalance waits for this member to serve a rebalance
/// step before it tries again anyway (within the hook's own deadline): librdkafka's default
/// heartbeat interval, in which a member hears that its group rebalances.
const REBALANCE_WAIT: Duration = Duration::from_secs(3);

/// The part of the close hook's time left kept so that it reports its own error before the
/// lifecycle would abandon it: a twentieth, at most this much (as the producer's close).
const HOOK_MARGIN: Duration = Duration::from_millis(50);

/// Commits `offsets` on a thread of its own (librdkafka's synchronous commit blocks, and with
/// no coordinator it waits without limit), until `deadline`: `None` if it did not answer by then
/// (the thread goes on alone and ends with librdkafka's answer).
async fn commit_on_a_thread(
    inner: &Arc<Inner>,
    offsets: Vec<(super::state::Key, i64)>,
    deadline: tokio::time::Instant,
) -> Option<rdkafka::error::KafkaResult<()>> {
    let inner = Arc::clone(inner);
    let (reply, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kafka-consumer-commit".into())
        .spawn(move || {
            let _ = reply.send(commit(&inner.client, &inner.shared, &offsets));
        })
        .expect("the operating system starts a thread for the Kafka commit");
    let answer = tokio::time::timeout_at(deadline, answer).await.ok()?;
    Some(answer.expect("the commit thread answers (committing does not panic)"))
}

/// Leaves the group if the close hook is dropped before it asked to (the lifecycle cut it off):
/// the poll thread never outlives the close.
struct LeaveOnDrop<'a>(Option<&'a Inner>);

impl Drop for LeaveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            // Only the request; nobody waits for the answer.
            drop(inner.begin_close());
        }
    }
}

impl Consumer {
    /// The consumer's hooks, to add with `Builder::hooks`:
    ///
    /// - **startup** [`subscribe_hook_name`](crate::ConsumerBuilder::subscribe_hook_name)
    ///   (`subscribe_consumer`): subscribes and starts the poll thread; fetching begins once
    ///   the service is ready, not before.
    /// - **`stop_intake`** [`pause_hook_name`](crate::ConsumerBuilder::pause_hook_name)
    ///   (`pause_consumer`): no new message starts, every assigned partition is paused (also
    ///   the ones a rebalance assigns later), buffered messages are dropped uncommitted; the
    ///   consumer keeps polling, so it keeps its group membership and serves rebalances while
    ///   in-flight messages drain.
    /// - **exit** [`close_hook_name`](crate::ConsumerBuilder::close_hook_name)
    ///   (`close_consumer`), the teardown of the startup hook: waits for messages still ending,
    ///   commits the offsets of processed and failed messages **synchronously**, then closes
    ///   the consumer (it leaves the group, unless it is a [static
    ///   member](crate::ConsumerBuilder::static_member)). A commit refused by a rebalance
    ///   (`IllegalGeneration`, `RebalanceInProgress`, `UnknownMemberId`: the group's
    ///   generation moved under it) is made once more when the poll thread has served the
    ///   rebalance (or after 3 s, librdkafka's default heartbeat interval, if it has heard of
    ///   none), for the partitions still assigned then. It fails (exit status 1) if the
    ///   commit fails otherwise, or if the offsets it had to commit are still not all
    ///   committed after that ([`ConsumerCloseError::Commit`]). Order it before a
    ///   producer's close with [`close_before`](crate::ConsumerBuilder::close_before). If it
    ///   is skipped, the consumer is closed in the background and librdkafka commits the
    ///   stored offsets as it closes.
    ///
    /// Messages cut off at the drain deadline are not committed and are reported with
    /// [`LifecycleHandle::report_handed_back`] as `kafka <topic>/<partition>@<offset>`.
    pub fn hooks(&self) -> Vec<HookSpec> {
        let inner = &self.inner;
        let subscribe = {
            let consumer = self.clone();
            HookSpec::new(
                Phase::STARTUP,
                inner.subscribe_hook.clone(),
                move |ctx: HookContext| {
                    let consumer = consumer.clone();
                    async move { consumer.subscribe(ctx.handle()) }
                },
            )
        };
        let pause = {
            let consumer = self.clone();
            HookSpec::new(
                Phase::STOP_INTAKE,
                inner.pause_hook.clone(),
                move |_ctx: HookContext| {
                    let consumer = consumer.clone();
                    async move {
                        consumer.inner.stop_intake();
                        Ok::<(), std::convert::Infallible>(())
                    }
                },
            )
        };
        let mut close = {
            let (consumer, skipped) = (self.clone(), self.clone());
            HookSpec::new(Phase::EXIT, inner.close_hook.clone(), move |ctx: HookContext| {
                let consumer = consumer.clone();
                async move { consumer.close_from_hook(&ctx).await }
            })
            .teardown_of(inner.subscribe_hook.clone())
            .on_skipped(move |_handle: &LifecycleHandle| {
                tracing::warn!(target: "lifecycle_hooks_kafka", group = %skipped.inner.group, "the Kafka consumer's close hook was skipped: closing it in the background");
                skipped.inner.begin_close();
            })
        };
        for name in &inner.close_before {
            close = close.before(name.clone());
        }
        vec![subscribe, pause, close]
    }

    fn subscribe(&self, lifecycle: &LifecycleHandle) -> Result<(), Box<SubscribeError>> {
        let inner = &self.inner;
        let topics: Vec<&str> = inner.topics.iter().map(String::as_str).collect();
        inner.client.subscribe(&topics).map_err(|source| {
            Box::new(SubscribeError {
                group: inner.group.clone(),
                topics: inner.topics.join(","),
                source,
            })
        })?;
        let thread = PollThread::spawn(inner, lifecycle.clone());
        *inner.poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        let (weak, lifecycle) = (Arc::downgrade(inner), lifecycle.clone());
        // Not tracked work: it only waits for the service to become ready.
        tokio::spawn(async move {
            let mut readiness = lifecycle.readiness();
            tokio::select! {
                ready = readiness.wait_for(|ready| *ready) => if ready.is_err() { return },
                () = lifecycle.intake_stopped() => return,
            }
            if let Some(inner) = weak.upgrade() {
                if inner.shared.open() {
                    if let Some(thread) = &*inner.poll.lock().unwrap_or_else(|p| p.into_inner()) {
                        thread.start();
                    }
                }
            }
        });
        tracing::info!(target: "lifecycle_hooks_kafka", group = %inner.group, topics = ?inner.topics, "Kafka consumer subscribed");
        Ok(())
    }

    async fn close_from_hook(&self, ctx: &HookContext) -> Result<(), ConsumerCloseError> {
        let inner = &self.inner;
        let budget = match ctx.time_left() {
            Some(left) => left.saturating_sub((left / 20).min(HOOK_MARGIN)),
            None => DEFAULT_CLOSE_WAIT,
        };
        let started = tokio::time::Instant::now();
        let deadline = crate::deadline_after(started, budget);
        let mut leave_on_drop = LeaveOnDrop(Some(inner));
        inner.shared.closing.store(true, Ordering::Release);
        // Messages cut off at the deadline end as their tasks are dropped; wait for the last.
        loop {
            let idle = inner.shared.idle.notified();
            let mut idle = std::pin::pin!(idle);
            idle.as_mut().enable();
            if inner.shared.lock().running == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        // The final commit, synchronous, before the consumer leaves the group. Refused by a
        // rebalance (the group's generation moved under it), it is made once more, once this
        // member has served a rebalance step since the first try or `REBALANCE_WAIT` has
        // passed, for those partitions still assigned then; it succeeded if commits of this
        // member (that one, or a revocation's meanwhile) covered every offset of the first try.
        let served = inner.shared.rebalances.load(Ordering::SeqCst);
        let offsets = inner.shared.to_commit(None);
        let mut committed = commit_on_a_thread(inner, offsets.clone(), deadline).await;
        if let Some(Err(error)) = &committed {
            if refused_by_a_rebalance(error) {
                tracing::info!(target: "lifecycle_hooks_kafka", group = %inner.group, %error, "the final commit met a rebalance: committing again once this member has served it");
                let wait = deadline.min(tokio::time::Instant::now() + REBALANCE_WAIT);
                loop {
                    let rebalanced = inner.shared.rebalanced.notified();
                    let mut rebalanced = std::pin::pin!(rebalanced);
                    rebalanced.as_mut().enable();
                    if inner.shared.rebalances.load(Ordering::SeqCst) != served {
                        break;
                    }
                    if tokio::time::timeout_at(wait, rebalanced).await.is_err() {
                        break;
                    }
                }
                let again = inner.shared.still_assigned(&offsets);
                let retried = commit_on_a_thread(inner, again, deadline).await;
                if inner.shared.covered(&offsets) {
                    committed = Some(Ok(()));
                } else if !matches!(retried, Some(Ok(()))) {
                    committed = retried;
                }
            }
        }
        leave_on_drop.0 = None;
        let done = inner.begin_close();
        let closed = match done {
            Some(done) => tokio::time::timeout_at(deadline, done).await.is_ok(),
            None => true,
        };
        let stats = self.stats();
        tracing::info!(
            target: "lifecycle_hooks_kafka",
            group = %inner.group,
            fetched = stats.fetched, processed = stats.processed, failed = stats.failed,
            committed = stats.committed, handed_back = stats.handed_back,
            "Kafka consumer committed and closed"
        );
        match committed {
            Some(Ok(())) => {}
            Some(Err(source)) => {
                return Err(ConsumerCloseError::Commit {
                    group: inner.group.clone(),
                    source,
                });
            }
            None => {
                return Err(ConsumerCloseError::CommitTimeout {
                    group: inner.group.clone(),
                    waited: started.elapsed(),
                });
            }
        }
        if !closed {
            return Err(ConsumerCloseError::Timeout {
                group: inner.group.clone(),
                waited: budget,
            });
        }
        Ok(())
    }
}

impl Inner {
    /// Stops starting messages and has the poll thread close the consumer; returns what
    /// completes once it has closed (`None` if the thread never started).
    fn begin_close(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.leaving.store(true, Ordering::Release);
        let mut poll = self.poll.lock().unwrap_or_else(|p| p.into_inner());
        let thread = poll.as_mut()?;
        thread.close();
        thread.done.take()
    }
}
