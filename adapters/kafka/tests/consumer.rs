//! The consumer bound to the phase graph, against librdkafka's mock cluster: the stop pauses
//! intake and lets in-flight messages finish and commit; the deadline hands messages back
//! uncommitted; rebalances commit before partitions move; static members come back without a
//! rebalance; the consumer closes before the producer.

#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lifecycle_hooks::testing::{self, Recorder};
use lifecycle_hooks::{LifecycleHandle, Outcome};
use lifecycle_hooks_kafka::rdkafka::Message;
use lifecycle_hooks_kafka::rdkafka::producer::FutureRecord;
use lifecycle_hooks_kafka::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use lifecycle_hooks_kafka::{ConsumedMessage, Consumer, ConsumerBuilder, RebalanceEvent};
use support::Broker;
use tokio::sync::{mpsc, watch};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Produces `per_partition` messages `"p<partition>-<i>"` to each partition of `topic`.
async fn seed(broker: &Broker, topic: &str, partitions: i32, per_partition: usize) {
    let producer = broker
        .producer()
        .connect_on_startup(false)
        .build()
        .expect("a producer");
    for i in 0..per_partition {
        for partition in 0..partitions {
            let payload = format!("p{partition}-{i}");
            producer
                .send(
                    FutureRecord::<str, str>::to(topic)
                        .partition(partition)
                        .payload(&payload),
                )
                .await
                .expect("seeded");
        }
    }
    producer
        .close(Duration::from_secs(5))
        .await
        .expect("flushed");
}

fn consumer(broker: &Broker, group: &str, topic: &str) -> ConsumerBuilder {
    // `RUST_LOG=lifecycle_hooks_kafka=debug` shows what the consumer does when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Consumer::builder(group, [topic])
        .bootstrap_servers(broker.bootstrap_servers())
        // Small timeouts keep rebalances in the mock cluster quick.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "100")
}

/// `(partition, offset)` of a message.
fn at(message: &ConsumedMessage) -> (i32, i64) {
    (message.partition(), message.offset())
}

/// Runs a consumer of `group` until it has processed `want` messages, and returns what it saw.
async fn drain_rest(broker: &Broker, group: &str, topic: &str, want: usize) -> Vec<(i32, i64)> {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let consumer = consumer(broker, group, topic)
        .concurrency(4)
        .build(move |message, _| {
            let seen_tx = seen_tx.clone();
            async move {
                let _ = seen_tx.send(at(&message));
                Ok(())
            }
        })
        .expect("a consumer");
    let lifecycle = testing::builder()
        .hooks(consumer.hooks())
        .build()
        .expect("a graph");
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    let mut all = Vec::new();
    while all.len() < want {
        match tokio::time::timeout(Duration::from_secs(30), seen.recv()).await {
            Ok(Some(seen)) => all.push(seen),
            _ => {
                all.sort();
                panic!(
                    "only {} of {want} messages arrived in 30 s: {all:?}",
                    all.len()
                )
            }
        }
    }
    handle.stop();
    let outcome = run.await.expect("the run ends");
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    all.extend(std::iter::from_fn(|| seen.try_recv().ok()));
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_finishes_in_flight_and_commits_processed_only() {
    let broker = Broker::mock();
    let topic = broker.topic("in", 2).await;
    seed(&broker, &topic, 2, 6).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (gate_tx, gate) = watch::channel(false);
    let consumer = consumer(&broker, "g-stop", &topic)
        .concurrency(2)
        .build(move |message, _| {
            let (started_tx, mut gate) = (started_tx.clone(), gate.clone());
            async move {
                let _ = started_tx.send(at(&message));
                gate.wait_for(|open| *open).await?;
                Ok::<(), BoxError>(())
            }
        })
        .expect("a consumer");
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .hooks(consumer.hooks())
        .observe(recorder.observer())
        .build()
        .expect("a graph");
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    let mut first = BTreeSet::new();
    while first.len() < 2 {
        first.insert(started.recv().await.expect("a message starts"));
    }
    // One message per partition in flight, the rest buffered or still in the broker.
    assert_eq!(first, BTreeSet::from([(0, 0), (1, 0)]));
    handle.stop();
    // In flight across the stop: the pause hook has run while both still work.
    let mut phase = handle.watch_phase();
    phase
        .wait_for(|p| *p == lifecycle_hooks::Phase::WAIT)
        .await
        .expect("the wait phase comes");
    assert!(
        recorder
            .position("hook stop_intake pause_consumer ok")
            .is_some(),
        "{:#?}",
        recorder.trace()
    );
    assert_eq!(consumer.stats().in_flight, 2);
    gate_tx.send_replace(true);
    let outcome: Outcome = run.await.expect("the run ends");
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    assert!(outcome.handed_back().is_empty());
    let stats = consumer.stats();
    // Nothing started after the stop, though 10 more messages were there to fetch.
    assert_eq!(started.try_recv().ok(), None);
    assert_eq!(
        (
            stats.fetched,
            stats.processed,
            stats.failed,
            stats.handed_back,
            stats.committed
        ),
        (2, 2, 0, 0, 2),
        "{stats:?}"
    );
    assert!(recorder.before("hook exit close_consumer ok", "finished stop 0"));
    // The next member of the group starts exactly after the processed messages.
    let rest = drain_rest(&broker, "g-stop", &topic, 10).await;
    let expected: Vec<(i32, i64)> = (0..2).flat_map(|p| (1..6).map(move |o| (p, o))).collect();
    assert_eq!(rest, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_hands_back_uncommitted_and_it_is_redelivered() {
    let broker = Broker::mock();
    let topic = broker.topic("in", 1).await;
    seed(&broker, &topic, 1, 3).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let consumer = consumer(&broker, "g-deadline", &topic)
        .build(move |message, _| {
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(at(&message));
                // Never ends by itself: cut off at the drain deadline.
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .expect("a consumer");
    let lifecycle = testing::builder()
        .budget(Duration::from_millis(1500))
        .exit_reserve(Duration::from_millis(1000))
        .hooks(consumer.hooks())
        .build()
        .expect("a graph");
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    assert_eq!(started.recv().await, Some((0, 0)));
    handle.restart();
    let outcome = run.await.expect("the run ends");
    assert_eq!(outcome.exit_code(), 2, "forced: {outcome}");
    assert_eq!(outcome.handed_back(), [format!("kafka {topic}/0@0")]);
    assert_eq!(outcome.stuck_work()[0].name, format!("kafka {topic}/0@0"));
    assert!(outcome.lost().is_empty());
    let stats = consumer.stats();
    assert_eq!(
        (
            stats.fetched,
            stats.processed,
            stats.handed_back,
            stats.committed
        ),
        (1, 0, 1, 0),
        "{stats:?}"
    );
    // Redelivered to the next process, from the cut-off message on, once each.
    let rest = drain_rest(&broker, "g-deadline", &topic, 3).await;
    assert_eq!(rest, vec![(0, 0), (0, 1), (0, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_holds_with_failures_under_load() {
    let broker = Broker::mock();
    let topic = broker.topic("in", 4).await;
    seed(&broker, &topic, 4, 50).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let consumer = consumer(&broker, "g-ledger", &topic)
        .concurrency(3)
        .buffer(4)
        .build({
            let handled = handled.clone();
            move |message, lifecycle: LifecycleHandle| {
                let handled = handled.clone();
                async move {
                    if handled.fetch_add(1, Ordering::Relaxed) == 120 {
                        lifecycle.stop();
                    }
                    tokio::task::yield_now().await;
                    if message.offset() % 5 == 4 {
                        return Err::<(), BoxError>("every fifth message fails".into());
                    }
                    Ok(())
                }
            }
        })
        .expect("a consumer");
    let lifecycle = testing::builder()
        .hooks(consumer.hooks())
        .build()
        .expect("a graph");
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    let s = consumer.stats();
    assert!(s.fetched > 120, "{s:?}");
    assert!(s.failed > 0, "{s:?}");
    assert_eq!(s.fetched, s.processed + s.failed + s.handed_back, "{s:?}");
    assert_eq!(s.committed, s.processed + s.failed, "{s:?}");
    // The next member starts right after what was committed: no gap, no repeat.
    let rest = drain_rest(&broker, "g-ledger", &topic, 200 - s.fetched as usize).await;
    assert_eq!(rest.len() as u64 + s.fetched, 200);
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in rest {
        per_partition.entry(p).or_default().push(o);
    }
    for offsets in per_partition.values() {
        let first = offsets[0];
        assert_eq!(*offsets, (first..50).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_commits_and_closes_before_the_producer() {
    let broker = Broker::mock();
    let input = broker.topic("in", 1).await;
    let output = broker.topic("out", 1).await;
    seed(&broker, &input, 1, 4).await;
    let producer = broker
        .producer()
        .connect_on_startup(false)
        .build()
        .expect("a producer");
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let consumer = consumer(&broker, "g-order", &input)
        .close_before(lifecycle_hooks_kafka::DEFAULT_HOOK_NAME)
        .build({
            let (producer, output) = (producer.clone(), output.clone());
            move |message, lifecycle: LifecycleHandle| {
                let (producer, output, started_tx) =
                    (producer.clone(), output.clone(), started_tx.clone());
                async move {
                    let _ = started_tx.send(());
                    // Publishes only once the drain has begun: the producer must still be open.
                    lifecycle.draining().await;
                    let payload = format!("{}", message.offset());
                    producer
                        .send(FutureRecord::<str, str>::to(&output).payload(&payload))
                        .await?;
                    Ok::<(), BoxError>(())
                }
            }
        })
        .expect("a consumer");
    let recorder = Recorder::new();
    // Registered consumer first: the default exit order (reverse registration) would close the
    // producer first; `close_before` is what orders them.
    let lifecycle = testing::builder()
        .hooks(consumer.hooks())
        .hook(producer.hook())
        .observe(recorder.observer())
        .build()
        .expect("a graph");
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    started.recv().await.expect("a message starts");
    handle.stop();
    let outcome = run.await.expect("the run ends");
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    assert!(
        recorder.before("hook exit close_consumer ok", "hook exit close_producer ok"),
        "{:#?}",
        recorder.trace()
    );
    assert_eq!(consumer.stats().committed, 1);
    assert_eq!(producer.stats().delivered, 1);
    assert_eq!(
        support::read_back(&broker.bootstrap_servers(), &output, 1).await,
        ["0"]
    );
}

/// A clean exit: the final commit went through, also when a rebalance refused it first (it
/// is made again once the member has served the rebalance).
fn assert_clean(outcome: &Outcome) {
    assert_eq!(
        outcome.exit_code(),
        0,
        "{outcome}: {:?}",
        outcome.failures()
    );
}

/// Starts a lifecycle for `consumer` on a task; returns its handle and the run.
fn launch(consumer: &Consumer) -> (LifecycleHandle, tokio::task::JoinHandle<Outcome>) {
    let lifecycle = testing::builder()
        .hooks(consumer.hooks())
        .build()
        .expect("a graph");
    let handle = lifecycle.handle();
    (handle, tokio::spawn(lifecycle.run()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_commits_finished_messages_before_partitions_move() {
    let broker = Broker::mock();
    let topic = broker.topic("in", 2).await;
    seed(&broker, &topic, 2, 10).await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<(&'static str, i32, i64)>();
    // A's first message per partition is still running when the revocation starts, and ends
    // only then: the revocation must wait for it and commit it.
    let (revoking_tx, revoking) = watch::channel(false);
    let (started_tx, mut started) = mpsc::unbounded_channel();
    // Cooperative-sticky: only the partition that moves is revoked and waited for (on the mock
    // cluster, a commit during an eager revocation fails with RebalanceInProgress).
    let a = consumer(&broker, "g-rebalance", &topic)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .concurrency(2)
        .on_rebalance(move |event| {
            if matches!(event, RebalanceEvent::Revoking(_)) {
                revoking_tx.send_replace(true);
            }
        })
        .build({
            let seen_tx = seen_tx.clone();
            move |message, _| {
                let (seen_tx, mut revoking) = (seen_tx.clone(), revoking.clone());
                let started_tx = started_tx.clone();
                async move {
                    if message.offset() == 0 {
                        let _ = started_tx.send(message.partition());
                        revoking.wait_for(|r| *r).await?;
                    }
                    let _ = seen_tx.send(("a", message.partition(), message.offset()));
                    Ok::<(), BoxError>(())
                }
            }
        })
        .expect("consumer a");
    let (a_handle, a_run) = launch(&a);
    // Both partitions' first messages are in flight in A before B joins.
    started.recv().await.expect("a started one");
    started.recv().await.expect("a started both");
    // B's assignments, counted: it is stopped only once it has taken A's partition too, so its
    // final commit is not caught in the rebalance A's leaving starts (IllegalGeneration).
    let (b_assigned_tx, mut b_assigned) = watch::channel(0_usize);
    let b = consumer(&broker, "g-rebalance", &topic)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .on_rebalance(move |event| {
            if matches!(event, RebalanceEvent::Assigned(_)) {
                b_assigned_tx.send_modify(|n| *n += 1);
            }
        })
        .build(move |message, _| {
            let seen_tx = seen_tx.clone();
            async move {
                let _ = seen_tx.send(("b", message.partition(), message.offset()));
                Ok(())
            }
        })
        .expect("consumer b");
    let (b_handle, b_run) = launch(&b);
    let mut all = Vec::new();
    while all.len() < 20 {
        let next = tokio::time::timeout(Duration::from_secs(30), seen.recv()).await;
        all.push(next.expect("all 20 within 30 s").expect("alive"));
    }
    let revoked_by_the_rebalance = a.stats().revoked;
    let assigned_before = *b_assigned.borrow();
    a_handle.stop();
    let a_outcome = a_run.await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        b_assigned.wait_for(|n| *n > assigned_before),
    )
    .await
    .expect("B takes A's partition after A leaves")
    .expect("B's callback lives");
    b_handle.stop();
    let b_outcome = b_run.await.unwrap();
    assert_clean(&a_outcome);
    assert_clean(&b_outcome);
    all.extend(std::iter::from_fn(|| seen.try_recv().ok()));
    // Each message once: what A finished during the revocation was committed before B got
    // the partition.
    let mut offsets: Vec<(i32, i64)> = all.iter().map(|(_, p, o)| (*p, *o)).collect();
    offsets.sort();
    let expected: Vec<(i32, i64)> = (0..2).flat_map(|p| (0..10).map(move |o| (p, o))).collect();
    assert_eq!(offsets, expected, "{all:?}");
    // Only one partition moved; the other kept being consumed by A without a pause.
    assert_eq!(revoked_by_the_rebalance, 1, "{:?}", a.stats());
    assert!(
        all.iter().any(|(who, _, _)| *who == "b"),
        "B got a partition: {all:?}"
    );
    assert!(all.contains(&("a", 0, 0)) && all.contains(&("a", 1, 0)));
}

/// Whether `c` sees a rebalance within `window` after `a` ends with `end` (restart or stop).
async fn rebalance_seen_after(static_member: bool, window: Duration) -> bool {
    let broker = Broker::mock();
    let topic = broker.topic("in", 2).await;
    let member = |id: Option<&str>, events: mpsc::UnboundedSender<String>| {
        let mut builder = consumer(&broker, "g-static", &topic).set("session.timeout.ms", "30000");
        if let Some(id) = id {
            builder = builder.static_member(id);
        }
        builder
            .on_rebalance(move |event| {
                let _ = events.send(format!("{event:?}"));
            })
            .build(|_, _| async { Ok(()) })
            .expect("a member")
    };
    let (a_tx, mut a_events) = mpsc::unbounded_channel();
    let (c_tx, mut c_events) = mpsc::unbounded_channel();
    let a = member(static_member.then_some("member-a"), a_tx);
    let (a_handle, a_run) = launch(&a);
    let c = member(static_member.then_some("member-c"), c_tx);
    let (c_handle, c_run) = launch(&c);
    // Until both hold one partition each, and each one's last rebalance event was that
    // assignment (the events come after the assignment is in place).
    let (mut a_last, mut c_last) = (String::new(), String::new());
    while !(a.assignment().len() == 1
        && c.assignment().len() == 1
        && a_last.starts_with("Assigned")
        && c_last.starts_with("Assigned"))
    {
        tokio::select! {
            Some(event) = a_events.recv() => a_last = event,
            Some(event) = c_events.recv() => c_last = event,
        }
    }
    // A restarts (exit 4): a static member does not leave the group.
    a_handle.restart();
    assert_eq!(a_run.await.unwrap().exit_code(), 4);
    let seen = tokio::time::timeout(window, c_events.recv()).await.is_ok();
    c_handle.stop();
    assert_eq!(c_run.await.unwrap().exit_code(), 0);
    seen
}

/// librdkafka's mock cluster treats a static member that joins again as a new member (it
/// rebalances), and tansu loops assigning and revoking static members, so what is tested is
/// this side of KIP-345: a static member's close does not leave the group, so its partitions
/// wait for it (no rebalance) instead of moving at once, as a dynamic member's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_keeps_its_partitions_across_a_restart() {
    // A dynamic member leaves: the other member is rebalanced at once.
    assert!(rebalance_seen_after(false, Duration::from_secs(30)).await);
    // A static member does not: nothing happens to the other member within the window (a
    // bounded check that nothing happens, well inside the 30 s session timeout).
    assert!(!rebalance_seen_after(true, Duration::from_secs(3)).await);
}

/// A drain longer than the session timeout does not cost the member its partitions: after
/// `stop_intake` the consumer is paused but keeps polling, so librdkafka neither times the
/// session out nor, with `max.poll.interval.ms` as short as the session, leaves the group for
/// want of polls. The other member sees no rebalance during the drain; the drained message is
/// committed at exit, and the partition's next owner starts after it.
///
/// Checked against a poll thread that stops polling at `stop_intake`: librdkafka then leaves
/// the group after `max.poll.interval.ms`, and A's commit at exit fails (exit status 1). On the
/// mock cluster the other member's reassignment comes later than the quiet window even then,
/// so it is A's exit status and commit count that catch it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_longer_than_the_session_timeout_keeps_the_partitions() {
    // 6 s: the mock cluster's smallest session timeout.
    const SESSION: Duration = Duration::from_secs(6);
    let broker = Broker::mock();
    let topic = broker.topic("in", 2).await;
    let member = |events: mpsc::UnboundedSender<String>| {
        consumer(&broker, "g-long-drain", &topic)
            // When A leaves, B is only given A's partition (nothing of B's is revoked).
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", SESSION.as_millis().to_string())
            // A member that stops polling this long leaves the group: the poll goes on.
            .set("max.poll.interval.ms", SESSION.as_millis().to_string())
            .on_rebalance(move |event| {
                let _ = events.send(format!("{event:?}"));
            })
    };
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<(&'static str, i32, i64)>();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (gate_tx, gate) = watch::channel(false);
    let (a_tx, mut a_events) = mpsc::unbounded_channel();
    let (b_tx, mut b_events) = mpsc::unbounded_channel();
    // A's first message stays in flight until the gate opens, long after the stop.
    let a = member(a_tx)
        .build({
            let seen_tx = seen_tx.clone();
            move |message, _| {
                let (seen_tx, started_tx, mut gate) =
                    (seen_tx.clone(), started_tx.clone(), gate.clone());
                async move {
                    let _ = started_tx.send(at(&message));
                    gate.wait_for(|open| *open).await?;
                    let _ = seen_tx.send(("a", message.partition(), message.offset()));
                    Ok::<(), BoxError>(())
                }
            }
        })
        .expect("member a");
    let b = member(b_tx)
        .build(move |message, _| {
            let seen_tx = seen_tx.clone();
            async move {
                let _ = seen_tx.send(("b", message.partition(), message.offset()));
                Ok(())
            }
        })
        .expect("member b");
    let (a_handle, a_run) = launch(&a);
    let (b_handle, b_run) = launch(&b);
    // Both hold one partition, and each one's last rebalance event was that assignment.
    let (mut a_last, mut b_last) = (String::new(), String::new());
    while !(a.assignment().len() == 1
        && b.assignment().len() == 1
        && a_last.starts_with("Assigned")
        && b_last.starts_with("Assigned"))
    {
        tokio::select! {
            Some(event) = a_events.recv() => a_last = event,
            Some(event) = b_events.recv() => b_last = event,
        }
    }
    let a_partition = a.assignment()[0].1;
    let b_partition = b.assignment()[0].1;
    seed(&broker, &topic, 2, 3).await;
    // A's first message is in flight; the stop comes while it runs.
    assert_eq!(
        started.recv().await.expect("a message starts in A"),
        (a_partition, 0)
    );
    a_handle.stop();
    let mut phase = a_handle.watch_phase();
    phase
        .wait_for(|p| *p == lifecycle_hooks::Phase::WAIT)
        .await
        .expect("A drains");
    // B takes its own partition's three messages meanwhile.
    for offset in 0..3 {
        let next = tokio::time::timeout(Duration::from_secs(30), seen.recv()).await;
        assert_eq!(
            next.expect("B's messages within 30 s"),
            Some(("b", b_partition, offset))
        );
    }
    // The drain outlasts the session timeout: no rebalance reaches B or A (a bounded check
    // that nothing happens, 2 s past the session timeout), and A still holds its partition.
    let quiet = tokio::time::timeout(SESSION + Duration::from_secs(2), async {
        tokio::select! {
            event = a_events.recv() => ("a", event),
            event = b_events.recv() => ("b", event),
        }
    })
    .await;
    assert!(quiet.is_err(), "a rebalance during the drain: {quiet:?}");
    assert_eq!(a.assignment(), [(topic.clone(), a_partition)]);
    assert_eq!(a.stats().in_flight, 1, "{:?}", a.stats());
    gate_tx.send_replace(true);
    let a_outcome = a_run.await.expect("A's run ends");
    assert_eq!(a_outcome.exit_code(), 0, "{a_outcome}");
    let stats = a.stats();
    assert_eq!(
        (
            stats.fetched,
            stats.processed,
            stats.committed,
            stats.handed_back
        ),
        (1, 1, 1, 0),
        "{stats:?}"
    );
    // A left at its close: B gets A's partition and starts after the committed message.
    let mut rest = Vec::new();
    while rest.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(30), seen.recv()).await;
        rest.push(next.expect("the rest within 30 s").expect("alive"));
    }
    b_handle.stop();
    assert_eq!(b_run.await.expect("B's run ends").exit_code(), 0);
    rest.extend(std::iter::from_fn(|| seen.try_recv().ok()));
    assert_eq!(
        rest,
        [
            ("a", a_partition, 0),
            ("b", a_partition, 1),
            ("b", a_partition, 2)
        ]
    );
    let b_events: Vec<String> = std::iter::from_fn(|| b_events.try_recv().ok()).collect();
    assert!(
        b_events.iter().any(|e| e.starts_with("Assigned")),
        "B was assigned A's partition after A left: {b_events:?}"
    );
}

/// The eager (range/roundrobin) protocol on the mock cluster: every partition is revoked, and
/// the revocation still waits for the in-flight messages (they end in A, none is cut off);
/// nothing is lost. The revocation's commit is mostly refused there with
/// `RebalanceInProgress` (the mock refuses OffsetCommit while its group is `Joining`, which a
/// new member's JoinGroup puts it in before A hears of the rebalance), so some of what A had
/// finished is processed again by the partitions' next owners: how much depends on timing (one
/// to nine duplicates over these runs), so duplicates are allowed here, not counted. See
/// `Consumer`'s notes on rebalance protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_revocation_waits_for_in_flight_and_loses_nothing() {
    let broker = Broker::mock();
    let topic = broker.topic("in", 2).await;
    seed(&broker, &topic, 2, 10).await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<(&'static str, i32, i64)>();
    let (revoking_tx, revoking) = watch::channel(false);
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let events_tx = seen_tx.clone();
    let a = consumer(&broker, "g-eager", &topic)
        .set("partition.assignment.strategy", "range")
        .concurrency(2)
        .on_rebalance(move |event| match event {
            RebalanceEvent::Revoking(_) => {
                revoking_tx.send_replace(true);
            }
            RebalanceEvent::Revoked(_) => {
                let _ = events_tx.send(("revoked", -1, -1));
            }
            _ => {}
        })
        .build({
            let seen_tx = seen_tx.clone();
            move |message, _| {
                let (seen_tx, mut revoking) = (seen_tx.clone(), revoking.clone());
                let started_tx = started_tx.clone();
                async move {
                    if message.offset() == 0 {
                        let _ = started_tx.send(message.partition());
                        revoking.wait_for(|r| *r).await?;
                    }
                    let _ = seen_tx.send(("a", message.partition(), message.offset()));
                    Ok::<(), BoxError>(())
                }
            }
        })
        .expect("consumer a");
    let (a_handle, a_run) = launch(&a);
    started.recv().await.expect("a started one");
    started.recv().await.expect("a started both");
    // B is stopped only once it holds the partitions again after A leaves, so its final
    // commit is not caught in that rebalance (IllegalGeneration).
    let (b_assigned_tx, mut b_assigned) = watch::channel(0_usize);
    let b = consumer(&broker, "g-eager", &topic)
        .set("partition.assignment.strategy", "range")
        .on_rebalance(move |event| {
            if matches!(event, RebalanceEvent::Assigned(_)) {
                b_assigned_tx.send_modify(|n| *n += 1);
            }
        })
        .build(move |message, _| {
            let seen_tx = seen_tx.clone();
            async move {
                let _ = seen_tx.send(("b", message.partition(), message.offset()));
                Ok(())
            }
        })
        .expect("consumer b");
    let (b_handle, b_run) = launch(&b);
    let expected: BTreeSet<(i32, i64)> =
        (0..2).flat_map(|p| (0..10).map(move |o| (p, o))).collect();
    let mut all = Vec::new();
    let mut distinct = BTreeSet::new();
    while distinct != expected {
        let next = tokio::time::timeout(Duration::from_secs(30), seen.recv()).await;
        let next = next
            .unwrap_or_else(|_| panic!("not all 20 within 30 s: {all:?}"))
            .expect("alive");
        if next.0 != "revoked" {
            distinct.insert((next.1, next.2));
        }
        all.push(next);
    }
    let a_revoked = a.stats().revoked;
    let assigned_before = *b_assigned.borrow();
    a_handle.stop();
    let a_outcome = a_run.await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        b_assigned.wait_for(|n| *n > assigned_before),
    )
    .await
    .expect("B is assigned again after A leaves")
    .expect("B's callback lives");
    b_handle.stop();
    let b_outcome = b_run.await.unwrap();
    assert_clean(&a_outcome);
    assert_clean(&b_outcome);
    // Eager: both partitions were revoked from A, not only the one that moved.
    assert!(a_revoked >= 2, "{:?}", a.stats());
    // Both in-flight messages ended in A before the partitions were given up (that the
    // revocation waits for them, rather than racing them, is what the cooperative test above
    // shows through the commit: here the commit does not show it).
    let at = |what| all.iter().position(|seen| *seen == what);
    let revoked = at(("revoked", -1, -1)).expect("a revocation");
    assert!(
        at(("a", 0, 0)).is_some_and(|i| i < revoked)
            && at(("a", 1, 0)).is_some_and(|i| i < revoked),
        "{all:?}"
    );
    assert_eq!(a.stats().handed_back, 0, "{:?}", a.stats());
}

/// A handler that panics fails its message (counted, its offset committed: the consumer moves
/// past it, as for an error), and the partition goes on in order with the messages after it,
/// also those its slot had already taken with it (a slot takes a run of its partition's
/// buffered messages at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_message_and_its_partition_goes_on_in_order() {
    let broker = Broker::mock();
    let topic = broker.topic("in", 1).await;
    seed(&broker, &topic, 1, 200).await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let consumer = consumer(&broker, "g-panic", &topic)
        .concurrency(2)
        .build(move |message, _| {
            let seen_tx = seen_tx.clone();
            let offset = message.offset();
            let _ = seen_tx.send(offset);
            if offset == 3 || offset == 150 {
                panic!("the handler panics at offset {offset}");
            }
            async move { Ok::<(), BoxError>(()) }
        })
        .expect("a consumer");
    let (handle, run) = launch(&consumer);
    let mut all = Vec::new();
    while all.len() < 200 {
        match tokio::time::timeout(Duration::from_secs(30), seen.recv()).await {
            Ok(Some(offset)) => all.push(offset),
            _ => panic!(
                "only {} of 200 messages arrived in 30 s: {all:?}",
                all.len()
            ),
        }
    }
    handle.stop();
    let outcome = run.await.expect("the run ends");
    // Each message exactly once, in offset order: the panics lost and reordered nothing.
    assert_eq!(all, (0..200).collect::<Vec<i64>>());
    let s = consumer.stats();
    assert_eq!((s.fetched, s.processed, s.failed), (200, 198, 2), "{s:?}");
    assert_eq!(s.committed, 200, "{s:?}");
    // The core's policy: tracked work that panicked makes the run a failure.
    assert_eq!(outcome.exit_code(), 1, "{outcome}");
    assert_eq!(
        outcome.failures(),
        vec!["2 tracked task(s) panicked".to_owned()],
        "{outcome}"
    );
}

/// Runs a consumer of `group` (no background commits: the final commit is the only one) until
/// it has handled every message of `topic`'s one partition, makes the cluster refuse the next
/// `refusals` offset commits with `RebalanceInProgress`, stops it, and returns its outcome and
/// counters.
async fn stop_with_commits_refused(
    broker: &Broker,
    group: &str,
    topic: &str,
    messages: usize,
    refusals: usize,
) -> (Outcome, lifecycle_hooks_kafka::ConsumerStats) {
    let Broker::Mock(cluster) = broker else {
        unreachable!("a mock cluster")
    };
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let consumer = consumer(broker, group, topic)
        .set("enable.auto.commit", "false")
        .build(move |message, _| {
            let _ = seen_tx.send(message.offset());
            async { Ok::<(), BoxError>(()) }
        })
        .expect("a consumer");
    let (handle, run) = launch(&consumer);
    for _ in 0..messages {
        tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("every message within 30 s")
            .expect("alive");
    }
    let refused = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS; refusals];
    cluster
        .push_request_errors(RDKafkaApiKey::OffsetCommit, &refused)
        .expect("errors queued");
    handle.stop();
    let outcome = run.await.expect("the run ends");
    (outcome, consumer.stats())
}

/// A final commit refused by a rebalance (`RebalanceInProgress`) is made once more: the run is
/// clean, and the group's next member starts right after the last processed message. Refused
/// every time, the close fails and names the final commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_commit_refused_by_a_rebalance_is_made_again() {
    let broker = Broker::mock();
    let topic = broker.topic("in", 1).await;
    seed(&broker, &topic, 1, 10).await;
    let (outcome, stats) = stop_with_commits_refused(&broker, "g-retry", &topic, 10, 1).await;
    assert_clean(&outcome);
    assert_eq!((stats.processed, stats.committed), (10, 10), "{stats:?}");
    seed(&broker, &topic, 1, 10).await;
    let rest = drain_rest(&broker, "g-retry", &topic, 10).await;
    assert_eq!(rest, (10..20).map(|o| (0, o)).collect::<Vec<_>>());

    // Refused again (and by whatever commit a rebalance may bring meanwhile): reported.
    let (outcome, stats) = stop_with_commits_refused(&broker, "g-refused", &topic, 20, 8).await;
    assert_eq!(outcome.exit_code(), 1, "{outcome}");
    let failures = outcome.failures();
    assert!(
        failures.len() == 1
            && failures[0].contains("final commit")
            && failures[0].contains("RebalanceInProgress"),
        "{failures:?}"
    );
    assert_eq!((stats.processed, stats.committed), (20, 0), "{stats:?}");
}

/// The broker dies after the messages were processed: the final commit gets no answer (no
/// coordinator), and the close hook reports that within its own time, leaves the group, and the
/// run ends. Before, the commit waited without limit: the lifecycle abandoned the hook at its
/// deadline and the poll thread went on polling, never asked to close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_commit_to_a_dead_broker_is_bounded_and_the_consumer_still_leaves() {
    let broker = Broker::mock();
    let topic = broker.topic("in", 1).await;
    seed(&broker, &topic, 1, 3).await;
    let Broker::Mock(cluster) = &broker else {
        unreachable!("a mock cluster")
    };
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let consumer = consumer(&broker, "g-dead", &topic)
        .set("enable.auto.commit", "false")
        .build(move |message, _| {
            let _ = seen_tx.send(message.offset());
            async { Ok::<(), BoxError>(()) }
        })
        .expect("a consumer");
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(4))
        .hooks(consumer.hooks())
        .build()
        .expect("a graph");
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("every message within 30 s")
            .expect("alive");
    }
    cluster.broker_down(1).expect("the broker goes down");
    handle.stop();
    let outcome = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ends within its budget, not later")
        .expect("the run does not panic");
    assert_eq!(outcome.exit_code(), 1, "{outcome}");
    let report = outcome.hook("close_consumer").expect("the close hook ran");
    assert!(
        matches!(&report.result, lifecycle_hooks::HookResult::Error(e) if e.contains("no answer")),
        "reported by the hook itself, not abandoned at its deadline: {outcome}"
    );
    let failures = outcome.failures();
    assert!(
        failures
            .iter()
            .any(|f| f.contains("final commit") && f.contains("no answer")),
        "{failures:?}"
    );
    assert_eq!(consumer.stats().committed, 0);
    cluster.broker_up(1).expect("the broker comes back");
}

/// A partition paused for backpressure (its buffer stayed full) and then revoked and assigned
/// again by a rebalance delivers again: librdkafka keeps an application's pause across the
/// reassignment, so the consumer resumes what it is assigned while intake is open. Before, the
/// partition stayed paused for good, and nothing said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_paused_for_backpressure_delivers_again_after_a_rebalance() {
    let broker = Broker::mock();
    let topic = broker.topic("in", 1).await;
    seed(&broker, &topic, 1, 10).await;
    let (release_tx, release) = watch::channel(false);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (a_assigned_tx, mut a_assigned) = watch::channel(0_usize);
    let a = consumer(&broker, "g-paused", &topic)
        .set("partition.assignment.strategy", "range")
        // Committed in the background soon after, so the stop has nothing left to commit while
        // the group may still be settling B's departure (a final commit then is refused).
        .set("auto.commit.interval.ms", "100")
        .buffer(1)
        .revoke_timeout(Duration::from_millis(200))
        .on_rebalance(move |event| {
            if matches!(event, RebalanceEvent::Assigned(_)) {
                a_assigned_tx.send_modify(|n| *n += 1);
            }
        })
        .build(move |message, _| {
            let (seen_tx, mut release) = (seen_tx.clone(), release.clone());
            async move {
                // The first message waits, so the partition's buffer fills and it is paused.
                release.wait_for(|r| *r).await?;
                let _ = seen_tx.send(message.offset());
                Ok::<(), BoxError>(())
            }
        })
        .expect("consumer a");
    let (a_handle, a_run) = launch(&a);
    // The pause comes once the buffer has stayed full for the poll thread's longest wait; no
    // event marks it, so its counter is watched.
    tokio::time::timeout(Duration::from_secs(30), async {
        while a.stats().paused == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the full partition is paused");
    // A second member joins (eager: A's partition is revoked, then assigned to one of them) and
    // leaves without committing anything (its handler never ends; its short budget cuts it off),
    // so A is assigned the partition again, from offset 0.
    let (b_assigned_tx, mut b_assigned) = watch::channel(0_usize);
    let b = consumer(&broker, "g-paused", &topic)
        .set("partition.assignment.strategy", "range")
        .on_rebalance(move |event| {
            if matches!(event, RebalanceEvent::Assigned(_)) {
                b_assigned_tx.send_modify(|n| *n += 1);
            }
        })
        .build(|_, _| std::future::pending::<Result<(), BoxError>>())
        .expect("consumer b");
    let b_lifecycle = testing::builder()
        .budget(Duration::from_secs(1))
        .hooks(b.hooks())
        .build()
        .expect("a graph");
    let b_handle = b_lifecycle.handle();
    let b_run = tokio::spawn(b_lifecycle.run());
    tokio::time::timeout(Duration::from_secs(30), b_assigned.wait_for(|n| *n > 0))
        .await
        .expect("B joins the group")
        .expect("B's callback lives");
    let a_assigned_before = *a_assigned.borrow();
    b_handle.stop();
    let b_outcome = b_run.await.unwrap();
    // B holds at most the one message it started (if it was given the partition), cut off.
    assert!(b_outcome.cancelled_work() <= 1, "{b_outcome}");
    tokio::time::timeout(
        Duration::from_secs(30),
        a_assigned.wait_for(|n| *n > a_assigned_before),
    )
    .await
    .expect("A is assigned again after B leaves")
    .expect("A's callback lives");
    assert_eq!(b.stats().committed, 0, "{:?}", b.stats());
    release_tx.send_replace(true);
    let mut offsets = BTreeSet::new();
    while !offsets.contains(&9) {
        let offset = tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .unwrap_or_else(|_| panic!("the partition delivers no more: saw {offsets:?}"))
            .expect("alive");
        offsets.insert(offset);
    }
    assert_eq!(offsets, (0..10).collect::<BTreeSet<i64>>());
    tokio::time::timeout(Duration::from_secs(30), async {
        while a.stats().committed < 10 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the background commit covers all ten");
    a_handle.stop();
    assert_clean(&a_run.await.unwrap());
}
