//! Send-path overhead of [`Producer`] beside a raw rdkafka `FutureProducer`, both against one
//! in-process mock cluster in the same run. Figures and how to reproduce them: BENCHMARKS.md.
//!
//! - `queue_1000`: queuing 1000 messages (`Producer::try_send` against
//!   `FutureProducer::send_result`); their deliveries are awaited outside the measured time.
//!   librdkafka's default `linger.ms` (5 ms) holds the batch back until the measurement is over,
//!   so the deliveries of the batch being queued do not compete with it for the two cores.
//! - `send_1000`: queuing 1000 messages and awaiting every delivery result (`Producer::send`
//!   against `FutureProducer::send`), the path a job takes; `linger.ms=0`, so the time is the
//!   send path and the mock broker, not a timer.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use lifecycle_hooks_kafka::rdkafka::ClientConfig;
use lifecycle_hooks_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use lifecycle_hooks_kafka::rdkafka::util::Timeout;
use lifecycle_hooks_kafka::{MockCluster, Producer};

const TOPIC: &str = "bench";
const MESSAGES: usize = 1000;
/// librdkafka's default linger, and none.
const LINGER_DEFAULT: &str = "5";
const LINGER_NONE: &str = "0";

fn payloads() -> Vec<String> {
    (0..MESSAGES).map(|i| format!("payload-{i:08}")).collect()
}

/// A raw `FutureProducer` and a [`Producer`] with the same settings, both connected and with
/// the topic's metadata before anything is measured.
fn producers(
    runtime: &tokio::runtime::Runtime,
    cluster: &MockCluster,
    linger_ms: &str,
) -> (FutureProducer, Producer) {
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
        let record = FutureRecord::<str, str>::to(TOPIC).payload("warm-up");
        raw.send(record, Timeout::Never).await.expect("delivered");
        let record = FutureRecord::<str, str>::to(TOPIC).payload("warm-up");
        ours.send(record).await.expect("delivered");
    });
    (raw, ours)
}

fn send_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let cluster = MockCluster::new(1).expect("a mock cluster");
    cluster.create_topic(TOPIC, 1).expect("the topic");
    let payloads = payloads();

    let (raw, ours) = producers(&runtime, &cluster, LINGER_DEFAULT);
    let mut group = c.benchmark_group("queue_1000");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    // Each iteration also waits out the linger, unmeasured: keep the wall time reasonable.
    group.measurement_time(Duration::from_secs(4));
    group.bench_function(BenchmarkId::new("raw_future_producer", MESSAGES), |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (raw, payloads) = (&raw, &payloads);
            async move {
                let mut measured = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let deliveries: Vec<_> = payloads
                        .iter()
                        .map(|p| {
                            let record = FutureRecord::<str, str>::to(TOPIC).payload(p);
                            raw.send_result(record).expect("queued")
                        })
                        .collect();
                    measured += start.elapsed();
                    for delivery in join_all(deliveries).await {
                        delivery.expect("not cancelled").expect("delivered");
                    }
                }
                measured
            }
        });
    });
    group.bench_function(BenchmarkId::new("lifecycle_producer", MESSAGES), |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (ours, payloads) = (&ours, &payloads);
            async move {
                let mut measured = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let deliveries: Vec<_> = payloads
                        .iter()
                        .map(|p| {
                            let record = FutureRecord::<str, str>::to(TOPIC).payload(p);
                            ours.try_send(record).expect("queued")
                        })
                        .collect();
                    measured += start.elapsed();
                    for delivery in join_all(deliveries).await {
                        delivery.expect("delivered");
                    }
                }
                measured
            }
        });
    });
    group.finish();
    runtime
        .block_on(ours.close(Duration::from_secs(5)))
        .expect("flushed");

    let (raw, ours) = producers(&runtime, &cluster, LINGER_NONE);
    let mut group = c.benchmark_group("send_1000");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function(BenchmarkId::new("raw_future_producer", MESSAGES), |b| {
        b.to_async(&runtime).iter(|| async {
            let sends = payloads.iter().map(|p| {
                let record = FutureRecord::<str, str>::to(TOPIC).payload(p);
                raw.send(record, Timeout::After(Duration::from_secs(5)))
            });
            for delivery in join_all(sends).await {
                delivery.expect("delivered");
            }
        });
    });
    group.bench_function(BenchmarkId::new("lifecycle_producer", MESSAGES), |b| {
        b.to_async(&runtime).iter(|| async {
            let sends = payloads.iter().map(|p| {
                let record = FutureRecord::<str, str>::to(TOPIC).payload(p);
                ours.send(record)
            });
            for delivery in join_all(sends).await {
                delivery.expect("delivered");
            }
        });
    });
    group.finish();

    runtime
        .block_on(ours.close(Duration::from_secs(5)))
        .expect("flushed");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    targets = send_path
}
criterion_main!(benches);
