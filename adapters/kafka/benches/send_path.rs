//! Send-path overhead of [`Producer`] beside a raw rdkafka `FutureProducer`, both against one
//! in-process mock cluster in the same run. Figures and how to reproduce them: BENCHMARKS.md.
//!
//! - `queue_1000`: queuing 1000 messages (`Producer::try_send` against
//!   `FutureProducer::send_result`); their deliveries are awaited outside the measured time.
//!   librdkafka's default `linger.ms` (5 ms) holds the batch back until the measurement is over,
//!   so the deliveries of the batch being queued do not compete with it for the two cores.
//! - `send_1000`: queuing 1000 messages and awaiting every delivery result (`Producer::send`
//!   against `FutureProducer::send`), the path a job takes; `linger.ms=0`, so the time is the
//!   send path, the delivery reports and the mock broker, not a timer.
//! - `send_1000_linger_5ms`: the same with librdkafka's default `linger.ms`.
//!
//! The two sides are interleaved: every iteration runs one batch of each, in alternating order,
//! and times only its own side's batch, so both see the same machine (a shared, two-core box)
//! at the same moments. Each criterion sample is its iterations' median batch time.

use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use futures::future::join_all;
use lifecycle_hooks_kafka::rdkafka::ClientConfig;
use lifecycle_hooks_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use lifecycle_hooks_kafka::rdkafka::util::Timeout;
use lifecycle_hooks_kafka::{MockCluster, Producer};

const MESSAGES: usize = 1000;
/// librdkafka's default linger, and none.
const LINGER_DEFAULT: &str = "5";
const LINGER_NONE: &str = "0";

/// Which side a batch runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Raw,
    Ours,
}

/// A raw `FutureProducer` and a [`Producer`] with the same settings, both connected and with
/// the topic's metadata before anything is measured.
struct Pair {
    raw: FutureProducer,
    ours: Producer,
    /// A topic of the pair's own: the mock broker slows down as a partition's log grows, so
    /// each benchmark starts on an empty one.
    topic: String,
    payloads: Vec<String>,
}

impl Pair {
    fn new(
        runtime: &tokio::runtime::Runtime,
        cluster: &MockCluster,
        topic: String,
        linger_ms: &str,
    ) -> Pair {
        cluster.create_topic(&topic, 1).expect("the topic");
        let raw: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", linger_ms)
            .create()
            .expect("a FutureProducer");
        let ours = Producer::builder()
            .bootstrap_servers(cluster.bootstrap_servers())
            .set("linger.ms", linger_ms)
            .build()
            .expect("a Producer");
        runtime.block_on(async {
            let record = FutureRecord::<str, str>::to(&topic).payload("warm-up");
            raw.send(record, Timeout::Never).await.expect("delivered");
            let record = FutureRecord::<str, str>::to(&topic).payload("warm-up");
            ours.send(record).await.expect("delivered");
        });
        let payloads = (0..MESSAGES).map(|i| format!("payload-{i:08}")).collect();
        Pair {
            raw,
            ours,
            topic,
            payloads,
        }
    }

    /// Queues one batch on `side`; returns the time queuing took, then awaits the deliveries.
    async fn queue(&self, side: Side) -> Duration {
        let records = || {
            self.payloads
                .iter()
                .map(|p| FutureRecord::<str, str>::to(&self.topic).payload(p))
        };
        match side {
            Side::Raw => {
                let start = Instant::now();
                let deliveries: Vec<_> = records()
                    .map(|r| self.raw.send_result(r).expect("queued"))
                    .collect();
                let queued = start.elapsed();
                for delivery in join_all(deliveries).await {
                    delivery.expect("not cancelled").expect("delivered");
                }
                queued
            }
            Side::Ours => {
                let start = Instant::now();
                let deliveries: Vec<_> = records()
                    .map(|r| self.ours.try_send(r).expect("queued"))
                    .collect();
                let queued = start.elapsed();
                for delivery in join_all(deliveries).await {
                    delivery.expect("delivered");
                }
                queued
            }
        }
    }

    /// Sends one batch on `side` and awaits every delivery; returns the time it all took.
    async fn send(&self, side: Side) -> Duration {
        let start = Instant::now();
        match side {
            Side::Raw => {
                let sends = self.payloads.iter().map(|p| {
                    let record = FutureRecord::<str, str>::to(&self.topic).payload(p);
                    self.raw
                        .send(record, Timeout::After(Duration::from_secs(5)))
                });
                for delivery in join_all(sends).await {
                    delivery.expect("delivered");
                }
            }
            Side::Ours => {
                let sends = self.payloads.iter().map(|p| {
                    let record = FutureRecord::<str, str>::to(&self.topic).payload(p);
                    self.ours.send(record)
                });
                for delivery in join_all(sends).await {
                    delivery.expect("delivered");
                }
            }
        }
        start.elapsed()
    }

    /// `iters` iterations timing `side`, each also running the other side, in alternating
    /// order. Returns `iters` times the median batch time: the median keeps a hiccup of the
    /// shared machine (another build starting) from swamping a difference of a few percent.
    async fn interleaved<'a, F, Fut>(&'a self, side: Side, iters: u64, batch: F) -> Duration
    where
        F: Fn(&'a Pair, Side) -> Fut,
        Fut: Future<Output = Duration>,
    {
        let other = if side == Side::Raw {
            Side::Ours
        } else {
            Side::Raw
        };
        let mut times = Vec::with_capacity(iters as usize);
        for i in 0..iters {
            if i % 2 == 0 {
                times.push(batch(self, side).await);
                batch(self, other).await;
            } else {
                batch(self, other).await;
                times.push(batch(self, side).await);
            }
        }
        times.sort();
        times[times.len() / 2] * u32::try_from(iters).expect("a sane iteration count")
    }
}

fn send_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let cluster = MockCluster::new(1).expect("a mock cluster");
    let sides = [
        (Side::Raw, "raw_future_producer"),
        (Side::Ours, "lifecycle_producer"),
    ];
    let groups = [
        ("queue_1000", LINGER_DEFAULT),
        ("send_1000", LINGER_NONE),
        ("send_1000_linger_5ms", LINGER_DEFAULT),
    ];
    for (group_name, linger) in groups {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(MESSAGES as u64));
        group.sampling_mode(SamplingMode::Flat);
        if group_name == "queue_1000" {
            // Each iteration also waits out two lingers and runs the other side, unmeasured.
            group.measurement_time(Duration::from_secs(5));
        }
        for (side, name) in sides {
            let pair = Pair::new(&runtime, &cluster, format!("{group_name}-{name}"), linger);
            group.bench_function(BenchmarkId::new(name, MESSAGES), |b| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let pair = &pair;
                    async move {
                        if group_name == "queue_1000" {
                            pair.interleaved(side, iters, |pair, side| pair.queue(side))
                                .await
                        } else {
                            pair.interleaved(side, iters, |pair, side| pair.send(side))
                                .await
                        }
                    }
                });
            });
            runtime
                .block_on(pair.ours.close(Duration::from_secs(5)))
                .expect("flushed");
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    targets = send_path
}
criterion_main!(benches);
