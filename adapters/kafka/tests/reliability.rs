//! Regressions of the producer's lifecycle edges against librdkafka's mock cluster: dropping the
//! last clone inside async code, a close hook that never runs or is cut off, the startup check of
//! the broker, and hostile timeouts (`Duration::ZERO`, `Duration::MAX`). Each test failed before
//! its fix (see `RELIABILITY-NOTES.md`).

// Each test binary uses its own part of the shared support (the broker it runs against).
#[allow(dead_code)]
mod support;

use std::io::Write;
use std::net::TcpListener;
use std::pin::pin;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::poll;
use lifecycle_hooks::testing::{self, Recorder};
use lifecycle_hooks::{HookResult, Phase, Signal};
use lifecycle_hooks_kafka::rdkafka::producer::FutureRecord;
use lifecycle_hooks_kafka::{DeliveryFuture, Producer, SendError};
use support::Broker;
use tokio::sync::watch;

/// Everything the adapter logs in this test binary, and a counter bumped on each write so a test
/// can wait for a line without polling.
struct Logs {
    text: Mutex<Vec<u8>>,
    writes: watch::Sender<usize>,
}

fn logs() -> &'static Logs {
    static LOGS: OnceLock<&'static Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Logs = Box::leak(Box::new(Logs {
            text: Mutex::new(Vec::new()),
            writes: watch::Sender::new(0),
        }));
        tracing_subscriber::fmt()
            .with_env_filter("lifecycle_hooks_kafka=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(logs))
            .init();
        logs
    })
}

struct LogWriter(&'static Logs);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.text.lock().unwrap().extend_from_slice(buf);
        self.0.writes.send_modify(|n| *n += 1);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until a logged line contains every one of `parts`, and returns it. Panics after 30 s
/// (a failure bound, not a synchronization).
async fn logged_line(parts: &[&str]) -> String {
    let logs = logs();
    let mut writes = logs.writes.subscribe();
    let find = || {
        let text = logs.text.lock().unwrap();
        String::from_utf8_lossy(&text)
            .lines()
            .find(|line| parts.iter().all(|part| line.contains(part)))
            .map(str::to_owned)
    };
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(line) = find() {
                return line;
            }
            writes
                .changed()
                .await
                .expect("the log lives as long as the process");
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("no log line with {parts:?} in 30 s"))
}

/// A producer connected to `broker` (it has the topic's metadata), then the broker goes down:
/// what it sends from now on stays queued. Returns the topic.
async fn stranded_producer(broker: &mut Broker, prefix: &str) -> (Producer, String) {
    let topic = broker.topic(prefix, 1).await;
    let producer = broker.producer().build().expect("a producer");
    producer
        .send(FutureRecord::<str, str>::to(&topic).payload("warm-up"))
        .await
        .expect("the warm-up message is delivered");
    broker.take_down();
    (producer, topic)
}

fn queue(producer: &Producer, topic: &str, count: usize) -> Vec<DeliveryFuture> {
    (0..count)
        .map(|i| {
            let payload = format!("stranded-{i}");
            let record = FutureRecord::<str, str>::to(topic).payload(&payload);
            producer.try_send(record).expect("queued")
        })
        .collect()
}

async fn assert_all_purged(deliveries: Vec<DeliveryFuture>) {
    for delivery in deliveries {
        let result = delivery.await;
        assert!(
            matches!(result, Err(SendError::Purged { .. })),
            "{result:?}"
        );
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// 1. Dropping the last clone inside async code.
// ---------------------------------------------------------------------------------------------

/// The last clone dropped inside a task, with messages stranded: the drop returns at once (the
/// blocking purge, flush and thread join happen off the runtime's worker), another task on the
/// same single worker keeps running meanwhile, the senders get `Purged`, and the drop logs how
/// many it purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn dropping_the_last_clone_in_async_code_does_not_block_a_worker() {
    logs();
    let mut broker = Broker::mock();
    let (producer, topic) = stranded_producer(&mut broker, "drop").await;
    let servers = producer.bootstrap_servers().to_owned();
    let deliveries = queue(&producer, &topic, 7);

    // A task on the one worker that counts its turns: it can only advance while the worker is
    // free.
    let (ticks_tx, mut ticks) = watch::channel(0u64);
    let ticker = tokio::spawn(async move {
        loop {
            ticks_tx.send_modify(|n| *n += 1);
            tokio::task::yield_now().await;
        }
    });
    ticks.changed().await.expect("the ticker runs");

    let took = tokio::spawn(async move {
        let started = Instant::now();
        drop(producer);
        started.elapsed()
    })
    .await
    .expect("the drop did not panic");
    // A blocking drop joins rdkafka's polling thread (which polls in 100 ms turns), purges,
    // flushes and destroys the client: tens of milliseconds at least.
    assert!(took < Duration::from_millis(20), "the drop took {took:?}");

    // The ticker still advances while the drop goes on elsewhere.
    let seen = *ticks.borrow_and_update();
    ticks.changed().await.expect("the ticker runs");
    assert!(*ticks.borrow() > seen);

    assert_all_purged(deliveries).await;
    let line = logged_line(&["dropped with undelivered messages", &servers]).await;
    assert!(line.contains("purged=7"), "{line}");
    ticker.abort();
}

/// Dropping the last clone outside any runtime still drops in place (nothing to protect), and
/// the count is logged the same way.
#[test]
fn dropping_outside_a_runtime_drops_in_place() {
    logs();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut broker = Broker::mock();
    let (producer, topic) = runtime.block_on(stranded_producer(&mut broker, "drop-sync"));
    let servers = producer.bootstrap_servers().to_owned();
    let deliveries = queue(&producer, &topic, 3);
    drop(producer);
    runtime.block_on(async {
        assert_all_purged(deliveries).await;
        let line = logged_line(&["dropped with undelivered messages", &servers]).await;
        assert!(line.contains("purged=3"), "{line}");
    });
}

// ---------------------------------------------------------------------------------------------
// 2. A close hook that never runs.
// ---------------------------------------------------------------------------------------------

/// An exit hook that runs before the close uses the whole budget: the close is skipped, and
/// what it leaves queued is purged at once, counted, and reported lost (exit status 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_close_reports_what_it_purges() {
    let mut broker = Broker::mock();
    let (producer, topic) = stranded_producer(&mut broker, "skipped").await;
    let deliveries = queue(&producer, &topic, 4);
    let lifecycle = testing::builder()
        .budget(Duration::from_millis(600))
        .exit_reserve(Duration::from_millis(500))
        .hook(producer.hook())
        // Exit hooks run in reverse registration order: this one first, and it never ends.
        .on_exit("slow", |_ctx| std::future::pending::<()>())
        .build()
        .expect("a valid graph");
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 1, "{outcome}");
    let close = outcome.hook("close_producer").expect("reported");
    assert_eq!(close.result, HookResult::Skipped);
    assert_eq!(outcome.lost().len(), 1, "{:?}", outcome.lost());
    let lost = &outcome.lost()[0];
    assert!(
        lost.contains("4 Kafka message(s)") && lost.contains("close_producer"),
        "{lost}"
    );
    assert!(producer.is_closed(), "no send gets in after the skip");
    assert_all_purged(deliveries).await;
    let stats = producer.stats();
    assert_eq!(
        (stats.purged, stats.failed, stats.in_flight),
        (4, 4, 0),
        "{stats:?}"
    );
}

/// A skipped close with nothing in flight reports nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_close_with_nothing_queued_loses_nothing() {
    let producer = Producer::builder().build().expect("a producer");
    let lifecycle = testing::builder()
        .budget(Duration::from_millis(300))
        .exit_reserve(Duration::from_millis(200))
        .hook(producer.hook())
        .on_exit("slow", |_ctx| std::future::pending::<()>())
        .build()
        .expect("a valid graph");
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;
    assert_eq!(
        outcome.hook("close_producer").map(|h| &h.result),
        Some(&HookResult::Skipped)
    );
    assert!(outcome.lost().is_empty(), "{:?}", outcome.lost());
    assert!(producer.is_closed());
}

// ---------------------------------------------------------------------------------------------
// 3. The startup check of the broker.
// ---------------------------------------------------------------------------------------------

/// With the broker reachable the startup check passes quickly and the service becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_check_passes_on_a_reachable_broker() {
    let producer = Producer::builder().build().expect("a producer");
    let hooks = producer.hooks();
    assert_eq!(
        hooks
            .iter()
            .map(|h| (h.phase().clone(), h.name().to_owned()))
            .collect::<Vec<_>>(),
        [
            (Phase::STARTUP, "connect_producer".to_owned()),
            (Phase::EXIT, "close_producer".to_owned())
        ]
    );
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .hooks(hooks)
        .observe(recorder.observer())
        .build()
        .expect("a valid graph");
    testing::stop_when_ready(&lifecycle.handle());
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    let check = outcome.hook("connect_producer").expect("it ran");
    assert_eq!(check.result, HookResult::Ok);
    assert!(
        check.elapsed < Duration::from_secs(1),
        "{:?}",
        check.elapsed
    );
    assert!(recorder.before("hook startup connect_producer ok", "ready"));
}

/// With nothing listening on the bootstrap port, startup fails within the connect timeout, the
/// error names the brokers, the service never becomes ready, and the exit status is 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_check_fails_on_an_unreachable_broker() {
    let servers = format!("127.0.0.1:{}", dead_port());
    let connect_timeout = Duration::from_millis(500);
    let producer = Producer::builder()
        .bootstrap_servers(&servers)
        .connect_timeout(connect_timeout)
        .build()
        .expect("a producer");
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .hooks(producer.hooks())
        .observe(recorder.observer())
        .build()
        .expect("a valid graph");
    let started = Instant::now();
    let outcome = lifecycle.run().await;
    let elapsed = started.elapsed();

    assert_eq!(outcome.exit_code(), 1, "{outcome}");
    let check = outcome.hook("connect_producer").expect("it ran");
    match &check.result {
        HookResult::Error(message) => assert!(
            message.contains(&servers) && message.contains("500ms"),
            "{message}"
        ),
        other => panic!("the check should fail with an error, not {other:?}"),
    }
    assert!(
        elapsed >= connect_timeout && elapsed < connect_timeout + Duration::from_secs(2),
        "took {elapsed:?}"
    );
    assert!(
        recorder.position("ready").is_none(),
        "{:?}",
        recorder.trace()
    );
}

/// The check can be turned off: then `hooks()` is only the close, and an unreachable broker
/// does not stop the service from starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_check_can_be_turned_off() {
    let producer = Producer::builder()
        .bootstrap_servers(format!("127.0.0.1:{}", dead_port()))
        .connect_on_startup(false)
        .build()
        .expect("a producer");
    let hooks = producer.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].name(), "close_producer");
    let lifecycle = testing::builder()
        .hooks(hooks)
        .build()
        .expect("a valid graph");
    testing::stop_when_ready(&lifecycle.handle());
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
}

// ---------------------------------------------------------------------------------------------
// 5. Hostile timeouts and a cut-off close.
// ---------------------------------------------------------------------------------------------

/// `Duration::MAX` as the close timeout: no overflow, the flush simply waits for the reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_duration_max_does_not_panic() {
    let producer = Producer::builder().build().expect("a producer");
    let delivery = producer
        .try_send(FutureRecord::<str, str>::to("max").payload("m"))
        .expect("queued");
    let report = producer.close(Duration::MAX).await.expect("flushed");
    assert_eq!(report.stats.delivered, 1);
    delivery.await.expect("delivered");
}

/// `Duration::ZERO` as the close timeout with messages stranded: they are purged at once and
/// reported, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_duration_zero_purges_at_once() {
    let mut broker = Broker::mock();
    let (producer, topic) = stranded_producer(&mut broker, "zero").await;
    let deliveries = queue(&producer, &topic, 2);
    let closed = producer.close(Duration::ZERO).await;
    assert!(
        matches!(
            closed,
            Err(lifecycle_hooks_kafka::CloseError::Undelivered { undelivered: 2, .. })
        ),
        "{closed:?}"
    );
    assert_all_purged(deliveries).await;
}

/// `Duration::MAX` as the queue timeout: a send waiting for room does not panic, and the close
/// still ends its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timeout_max_does_not_panic() {
    let mut broker = Broker::mock();
    let topic = broker.topic("queue-max", 1).await;
    broker.take_down();
    let producer = broker
        .producer()
        .set("queue.buffering.max.messages", "1")
        .queue_timeout(Duration::MAX)
        .build()
        .expect("a producer");
    let stuck = queue(&producer, &topic, 1);
    let mut waiting = pin!(producer.send(FutureRecord::<str, str>::to(&topic).payload("waits")));
    assert!(poll!(&mut waiting).is_pending(), "waits for room");
    // The close wakes the waiting send, whatever its timeout.
    let (refused, closed) = tokio::join!(waiting, producer.close(Duration::from_millis(100)));
    assert!(closed.is_err(), "{closed:?}");
    assert!(matches!(refused, Err(SendError::Closed(_))), "{refused:?}");
    assert_all_purged(stuck).await;
}

/// `Duration::ZERO` as the queue timeout: a full queue refuses at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timeout_zero_refuses_at_once() {
    let mut broker = Broker::mock();
    let topic = broker.topic("queue-zero", 1).await;
    broker.take_down();
    let producer = broker
        .producer()
        .set("queue.buffering.max.messages", "1")
        .queue_timeout(Duration::ZERO)
        .build()
        .expect("a producer");
    let _stuck = queue(&producer, &topic, 1);
    let refused = producer
        .send(FutureRecord::<str, str>::to(&topic).payload("no room"))
        .await;
    assert!(
        matches!(
            refused,
            Err(SendError::QueueFull {
                waited: Duration::ZERO
            })
        ),
        "{refused:?}"
    );
}

/// The close hook (here in `shutdown`) abandoned by a second signal while it flushes, with
/// messages stranded: what is still in flight is purged, counted and reported lost, not dropped
/// silently with the hook's future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_hook_cut_off_reports_what_it_leaves() {
    logs();
    let mut broker = Broker::mock();
    let topic = broker.topic("cut-off", 1).await;
    let producer = broker
        .producer()
        .close_on(Phase::SHUTDOWN)
        .build()
        .expect("a producer");
    producer
        .send(FutureRecord::<str, str>::to(&topic).payload("warm-up"))
        .await
        .expect("the warm-up message is delivered");
    broker.take_down();
    let servers = producer.bootstrap_servers().to_owned();
    let deliveries = queue(&producer, &topic, 3);
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(30))
        .hook(producer.hook())
        .build()
        .expect("a valid graph");
    let handle = lifecycle.handle();
    handle.trigger(Signal::Term);
    // The second signal comes while the close is flushing towards the unreachable broker.
    tokio::spawn(async move {
        logged_line(&["closing the Kafka producer", &servers]).await;
        handle.trigger(Signal::Term);
    });
    let outcome = lifecycle.run().await;
    assert_eq!(
        outcome.hook("close_producer").map(|h| &h.result),
        Some(&HookResult::Abandoned)
    );
    assert_eq!(outcome.lost().len(), 1, "{:?}", outcome.lost());
    assert!(
        outcome.lost()[0].contains("3 Kafka message(s)"),
        "{:?}",
        outcome.lost()
    );
    assert_all_purged(deliveries).await;
    assert_eq!(producer.stats().purged, 3);
}

/// The connect timeout at `Duration::MAX`: no panic and no overflow in the millisecond count
/// handed to librdkafka, the check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_at_duration_max() {
    let producer = Producer::builder()
        .connect_timeout(Duration::MAX)
        .build()
        .expect("a producer");
    let lifecycle = testing::builder()
        .hooks(producer.hooks())
        .build()
        .expect("a valid graph");
    testing::stop_when_ready(&lifecycle.handle());
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
}

/// A zero connect timeout cannot connect to anything: refused when the producer is built, with
/// the way to turn the check off.
#[test]
fn a_zero_connect_timeout_is_a_build_error() {
    let error = Producer::builder()
        .connect_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("connect_timeout") && message.contains("connect_on_startup(false)"),
        "{message}"
    );
}

/// Messages whose delivery fails during the close's flush (here `message.timeout.ms` runs out
/// while the broker is down) have nobody left to hear it: every job has ended by `exit`. The
/// close counts them as undelivered and reports them lost instead of closing "clean".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_failing_during_the_close_are_reported_lost() {
    let mut broker = Broker::mock();
    let topic = broker.topic("expire", 1).await;
    let producer = broker
        .producer()
        .set("message.timeout.ms", "1000")
        .build()
        .expect("a producer");
    producer
        .send(FutureRecord::<str, str>::to(&topic).payload("warm-up"))
        .await
        .expect("the warm-up message is delivered");
    broker.take_down();
    // Fire and forget: nobody awaits these results.
    drop(queue(&producer, &topic, 5));
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(8))
        .exit_reserve(Duration::from_secs(7))
        .hook(producer.hook())
        .build()
        .expect("a valid graph");
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;

    let stats = producer.stats();
    assert_eq!(
        (stats.failed, stats.purged),
        (5, 0),
        "they expired: {stats:?}"
    );
    assert_eq!(outcome.exit_code(), 1, "{outcome}");
    assert_eq!(outcome.lost().len(), 1, "{:?}", outcome.lost());
    assert!(
        outcome.lost()[0].contains("5 Kafka message(s)"),
        "{:?}",
        outcome.lost()
    );
}

/// A stop during a long startup check (an unreachable broker, `connect_timeout(Duration::MAX)`)
/// cuts the check off, and the metadata request it left on the blocking pool ends soon after:
/// the runtime, which waits for its blocking pool when dropped, shuts down within seconds
/// instead of holding the process for the whole timeout.
#[test]
fn a_stop_during_a_long_startup_check_does_not_hold_the_exit() {
    logs();
    let servers = format!("127.0.0.1:{}", dead_port());
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn({
        let servers = servers.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let outcome = runtime.block_on(async {
                let producer = Producer::builder()
                    .bootstrap_servers(&servers)
                    .connect_timeout(Duration::MAX)
                    .build()
                    .expect("a producer");
                let lifecycle = testing::builder()
                    .budget(Duration::from_secs(1))
                    .hooks(producer.hooks())
                    .build()
                    .expect("a valid graph");
                let handle = lifecycle.handle();
                tokio::spawn(async move {
                    logged_line(&["waiting for a Kafka broker", &servers]).await;
                    handle.stop();
                });
                lifecycle.run().await
            });
            let dropping = Instant::now();
            drop(runtime);
            let _ = done.send((outcome, dropping.elapsed()));
        }
    });
    let (outcome, runtime_drop) = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the runtime shut down: no endless metadata request left on its blocking pool");
    let check = outcome.hook("connect_producer").expect("reported");
    assert_eq!(check.result, HookResult::TimedOut, "{outcome}");
    assert_ne!(outcome.exit_code(), 0);
    assert!(
        runtime_drop < Duration::from_secs(3),
        "the runtime took {runtime_drop:?} to shut down"
    );
}
