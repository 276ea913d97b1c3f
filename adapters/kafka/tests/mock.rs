//! The producer against librdkafka's in-process mock cluster: no broker needed.

// Each test binary uses its own part of the shared support (the broker it runs against).
#[allow(dead_code)]
mod support;

use std::pin::pin;
use std::time::Duration;

use futures::poll;

use lifecycle_hooks::Phase;
use lifecycle_hooks_kafka::errors::BuildError;
use lifecycle_hooks_kafka::rdkafka::producer::FutureRecord;
use lifecycle_hooks_kafka::{CloseError, DEFAULT_HOOK_NAME, Producer, SendError};
use support::{Broker, read_back, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_sends_are_delivered() {
    scenarios::drain_sends_are_delivered(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_phase_decides() {
    scenarios::close_phase_decides(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_after_close_fails_at_once() {
    scenarios::send_after_close_fails_at_once(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_exit_is_bounded_and_reported() {
    scenarios::broker_down_at_exit_is_bounded_and_reported(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_twice_is_fine() {
    scenarios::close_twice_is_fine(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_racing_the_close() {
    scenarios::sends_racing_the_close(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_check_passes() {
    scenarios::startup_check_passes(Broker::mock()).await;
}

/// Without bootstrap servers the producer brings its own mock cluster, and it stays up until
/// the producer is dropped, so the messages can be read back after the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_cluster_is_the_default() {
    let producer = Producer::builder().build().expect("a producer");
    let cluster = producer.mock_cluster().expect("an embedded cluster");
    assert_eq!(producer.bootstrap_servers(), cluster.bootstrap_servers());
    cluster.create_topic("embedded", 1).expect("a topic");
    let record = FutureRecord::<str, str>::to("embedded").payload("hello");
    let delivery = producer.send(record).await.expect("delivered");
    assert_eq!((delivery.partition, delivery.offset), (0, 0));
    producer
        .close(Duration::from_secs(5))
        .await
        .expect("flushed");
    let read = read_back(producer.bootstrap_servers(), "embedded", 1).await;
    assert_eq!(read, ["hello"]);
}

/// A send that finds librdkafka's queue full waits for a delivery report to make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_waits_for_room() {
    let broker = Broker::mock();
    let topic = broker.topic("full", 1).await;
    let producer = broker
        .producer()
        .set("queue.buffering.max.messages", "1")
        .build()
        .expect("a producer");
    let first = producer
        .try_send(FutureRecord::<str, str>::to(&topic).payload("first"))
        .expect("room for one");
    let refused = producer.try_send(FutureRecord::<str, str>::to(&topic).payload("second"));
    assert!(
        matches!(
            refused,
            Err(SendError::QueueFull {
                waited: Duration::ZERO
            })
        ),
        "{refused:?}"
    );
    let second = producer
        .send(FutureRecord::<str, str>::to(&topic).payload("second"))
        .await
        .expect("queued once the first was delivered, then delivered");
    let first = first.await.expect("delivered");
    assert_eq!((first.offset, second.offset), (0, 1));
    producer
        .close(Duration::from_secs(5))
        .await
        .expect("flushed");
    assert_eq!(
        read_back(&broker.bootstrap_servers(), &topic, 1).await,
        ["first", "second"]
    );
}

/// With the broker down, a send waiting for queue room gives up at the queue timeout, and one
/// still waiting when the producer closes is refused with `ProducerClosed` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_gives_up_at_the_timeout_or_the_close() {
    let mut broker = Broker::mock();
    let topic = broker.topic("stuck", 1).await;
    broker.take_down();
    let queue_timeout = Duration::from_millis(100);
    let producer = broker
        .producer()
        .set("queue.buffering.max.messages", "1")
        .queue_timeout(queue_timeout)
        .build()
        .expect("a producer");
    let stuck = producer
        .try_send(FutureRecord::<str, str>::to(&topic).payload("stuck"))
        .expect("room for one");
    let gave_up = producer
        .send(FutureRecord::<str, str>::to(&topic).payload("late"))
        .await;
    assert!(
        matches!(gave_up, Err(SendError::QueueFull { waited }) if waited == queue_timeout),
        "{gave_up:?}"
    );

    let mut waiting = pin!(producer.send(FutureRecord::<str, str>::to(&topic).payload("waiting")));
    assert!(poll!(&mut waiting).is_pending(), "waits for room");
    let (refused, closed) = tokio::join!(waiting, producer.close(Duration::from_millis(200)));
    assert!(matches!(refused, Err(SendError::Closed(_))), "{refused:?}");
    assert!(
        matches!(closed, Err(CloseError::Undelivered { undelivered: 1, .. })),
        "{closed:?}"
    );
    assert!(matches!(stuck.await, Err(SendError::Purged { .. })));
    let stats = producer.stats();
    assert_eq!((stats.sent, stats.purged, stats.refused_closed), (1, 1, 1));
}

#[test]
fn the_hook_closes_in_exit_by_default() {
    let producer = Producer::builder().build().expect("a producer");
    let hook = producer.hook();
    assert_eq!(hook.phase(), &Phase::EXIT);
    assert_eq!(hook.name(), DEFAULT_HOOK_NAME);

    let producer = Producer::builder()
        .close_on(Phase::SHUTDOWN)
        .hook_name("close_orders")
        .build()
        .expect("shutdown is allowed, to show the difference");
    assert_eq!(producer.hook().phase(), &Phase::SHUTDOWN);
    assert_eq!(producer.hook().name(), "close_orders");
}

#[test]
fn other_closing_phases_are_refused() {
    for phase in [Phase::DRAIN, Phase::WAIT, Phase::custom("flush_metrics")] {
        let error = Producer::builder()
            .close_on(phase.clone())
            .build()
            .unwrap_err();
        assert!(
            matches!(&error, BuildError::ClosePhase { phase: p } if *p == phase.name()),
            "{error:?}"
        );
    }
}

#[test]
fn bad_configuration_is_a_build_error() {
    let error = Producer::builder()
        .set("no.such.property", "1")
        .build()
        .unwrap_err();
    assert!(matches!(error, BuildError::Client { .. }), "{error:?}");
}
