//! Throughput of [`Consumer`] with a no-op handler beside a hand-written rdkafka
//! `StreamConsumer` loop with the same commit policy, both against one in-process mock cluster
//! in the same run. Figures and how to reproduce them: BENCHMARKS.md.
//!
//! The commit policy of both sides: `enable.auto.offset.store=false`, the offset of each message
//! stored once it has been handled, librdkafka's background commit every 5 s, and one
//! synchronous commit at the end. Each run is a fresh consumer group reading the same
//! pre-filled topic (4 partitions) from the beginning; the clock runs from the first message to
//! the last, so the group join is not measured. Runs alternate raw / ours, and the medians are
//! compared. Two more figures, not sides of the comparison, show what a copy per message
//! costs (the consumer made one until its handler was lent librdkafka's message,
//! `ConsumedMessage`): a `BaseConsumer` polled on a thread of its own, each message copied out
//! of librdkafka (`detach`) and dropped there, or handed over in batches to another thread that
//! drops it.
//!
//! `CONSUME_PATH_ROUNDS=<n>` sets the number of rounds (default 3),
//! `CONSUME_PATH_MESSAGES=<n>` the messages per round (default 40 000), and
//! `CONSUME_PATH_ONLY=raw|ours|none` runs one side alone (`none`: only the topic's fill), for
//! profilers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lifecycle_hooks::testing;
use lifecycle_hooks_kafka::rdkafka::ClientConfig;
use lifecycle_hooks_kafka::rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, StreamConsumer,
};
use lifecycle_hooks_kafka::rdkafka::message::OwnedMessage;
use lifecycle_hooks_kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use lifecycle_hooks_kafka::{Consumer, MockCluster};
use tokio::sync::Notify;

const PARTITIONS: i32 = 4;
/// Messages per round, unless `CONSUME_PATH_MESSAGES` says otherwise.
const DEFAULT_MESSAGES: u64 = 40_000;

fn messages() -> u64 {
    static MESSAGES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MESSAGES.get_or_init(|| {
        std::env::var("CONSUME_PATH_MESSAGES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(DEFAULT_MESSAGES)
    })
}
const ROUNDS: usize = 3;
const TOPIC: &str = "bench";
/// `ConsumerBuilder::buffer`'s default.
const DEFAULT_BUFFER: usize = 4096;
/// A buffer no partition fills here: no backpressure pause.
const NO_PAUSE: usize = 1_000_000;

fn fill(cluster: &MockCluster) {
    cluster.create_topic(TOPIC, PARTITIONS).expect("the topic");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("linger.ms", "5")
        .create()
        .expect("a producer");
    let payload = [7u8; 100];
    for i in 0..messages() {
        let partition = (i % PARTITIONS as u64) as i32;
        let mut record = BaseRecord::<(), [u8]>::to(TOPIC)
            .partition(partition)
            .payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("filled");
}

fn config(cluster: &MockCluster, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false");
    config
}

/// The hand-written loop: receive, handle (nothing), store the offset; commit at the end.
async fn raw(cluster: &MockCluster, group: &str) -> Duration {
    let consumer: StreamConsumer = config(cluster, group).create().expect("a consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribed");
    let mut first = None;
    for _ in 0..messages() {
        let message = consumer.recv().await.expect("a message");
        first.get_or_insert_with(Instant::now);
        consumer
            .store_offset_from_message(&message)
            .expect("stored");
    }
    let took = first.expect("messages").elapsed();
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("committed");
    took
}

/// What copying costs: poll and detach on a thread of its own, nothing else. The copies are
/// dropped on that thread, or, if `elsewhere`, handed over in batches of 256 (as the consumer's
/// poll thread hands its messages to its slots) to a thread that drops them.
async fn poll_detach(cluster: &MockCluster, group: &str, elsewhere: bool) -> Duration {
    let consumer: BaseConsumer = config(cluster, group).create().expect("a consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribed");
    tokio::task::spawn_blocking(move || {
        let (hand_over, batches) = std::sync::mpsc::channel::<Vec<OwnedMessage>>();
        let dropper = std::thread::spawn(move || batches.into_iter().for_each(drop));
        let mut batch = Vec::with_capacity(256);
        let mut first = None;
        let mut seen = 0;
        while seen < messages() {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    first.get_or_insert_with(Instant::now);
                    let copy = message.detach();
                    seen += 1;
                    if elsewhere {
                        batch.push(copy);
                        if batch.len() == 256 || seen == messages() {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(256));
                            hand_over.send(full).expect("the dropping thread");
                        }
                    }
                }
                Some(Err(error)) => panic!("{error}"),
                None => {}
            }
        }
        let took = first.expect("messages").elapsed();
        drop(hand_over);
        dropper.join().expect("the dropping thread");
        took
    })
    .await
    .expect("the poll thread")
}

/// [`Consumer`] with a no-op handler under a lifecycle; stopped once every message was handled
/// (its exit hook commits synchronously).
async fn ours(cluster: &MockCluster, group: &str, buffer: usize) -> Duration {
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let first: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let consumer = Consumer::builder(group, [TOPIC])
        .bootstrap_servers(cluster.bootstrap_servers())
        .concurrency(PARTITIONS as usize)
        .buffer(buffer)
        .build({
            let (handled, done, first) = (handled.clone(), done.clone(), first.clone());
            move |_message, _lifecycle| {
                first.get_or_init(Instant::now);
                if handled.fetch_add(1, Ordering::Relaxed) + 1 == messages() {
                    done.notify_one();
                }
                std::future::ready(Ok(()))
            }
        })
        .expect("a consumer");
    let lifecycle = testing::builder()
        .hooks(consumer.hooks())
        .build()
        .expect("a graph");
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    done.notified().await;
    let took = first.get().expect("messages").elapsed();
    handle.stop();
    let outcome = run.await.expect("the run ends");
    assert_eq!(
        outcome.exit_code(),
        0,
        "{outcome}: {:?}",
        outcome.failures()
    );
    assert_eq!(consumer.stats().committed, messages());
    took
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn rate(took: Duration) -> f64 {
    messages() as f64 / took.as_secs_f64()
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: one small round is enough there.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let cluster = MockCluster::new(1).expect("a mock cluster");
    fill(&cluster);
    let rounds = if quick {
        1
    } else {
        std::env::var("CONSUME_PATH_ROUNDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(ROUNDS)
    };
    // For profilers (perf, callgrind): one side only, `rounds` times, with nothing else.
    if let Ok(only) = std::env::var("CONSUME_PATH_ONLY") {
        runtime.block_on(async {
            for round in 0..rounds {
                let group = format!("{only}-{round}");
                let took = match only.as_str() {
                    "raw" => raw(&cluster, &group).await,
                    "ours" => ours(&cluster, &group, DEFAULT_BUFFER).await,
                    "none" => Duration::ZERO,
                    other => panic!("CONSUME_PATH_ONLY={other}: expected raw, ours or none"),
                };
                println!("{only} round {round}: {:.0} msg/s", rate(took));
            }
        });
        return;
    }
    let (mut raws, mut ourss, mut unpauseds) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ceilings, mut handed_over) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for round in 0..rounds {
            // Alternate which side goes first.
            if round % 2 == 1 {
                ourss.push(ours(&cluster, &format!("ours-{round}"), DEFAULT_BUFFER).await);
            }
            raws.push(raw(&cluster, &format!("raw-{round}")).await);
            if round % 2 == 0 {
                ourss.push(ours(&cluster, &format!("ours-{round}"), DEFAULT_BUFFER).await);
            }
            unpauseds.push(ours(&cluster, &format!("unpaused-{round}"), NO_PAUSE).await);
            ceilings.push(poll_detach(&cluster, &format!("poll-{round}"), false).await);
            handed_over.push(poll_detach(&cluster, &format!("hand-{round}"), true).await);
            println!(
                "round {round}: raw {:>9.0} msg/s, ours {:>9.0} msg/s, ours without backpressure \
                 pauses {:>9.0} msg/s, poll + detach alone {:>9.0} msg/s, poll + detach + \
                 hand-over {:>9.0} msg/s",
                rate(raws[round]),
                rate(ourss[round]),
                rate(unpauseds[round]),
                rate(ceilings[round]),
                rate(handed_over[round])
            );
        }
    });
    let (raw, ours, unpaused) = (median(raws), median(ourss), median(unpauseds));
    let (ceiling, handed_over) = (median(ceilings), median(handed_over));
    println!(
        "median of {rounds}: raw StreamConsumer loop {:.0} msg/s, Consumer {:.0} msg/s (ratio \
         {:.2}), Consumer without backpressure pauses {:.0} msg/s (ratio {:.2}), poll + detach \
         alone {:.0} msg/s (ratio {:.2}), poll + detach + hand-over {:.0} msg/s (ratio {:.2})",
        rate(raw),
        rate(ours),
        rate(ours) / rate(raw),
        rate(unpaused),
        rate(unpaused) / rate(raw),
        rate(ceiling),
        rate(ceiling) / rate(raw),
        rate(handed_over),
        rate(handed_over) / rate(raw)
    );
}
