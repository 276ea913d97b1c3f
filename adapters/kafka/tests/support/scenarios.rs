//! The behaviours both brokers must show. Each function builds its own producer and lifecycle.

use std::time::{Duration, Instant};

use futures::FutureExt;
use lifecycle_hooks::testing::{self, Recorder};
use lifecycle_hooks::{HookResult, Phase};
use lifecycle_hooks_kafka::rdkafka::producer::FutureRecord;
use lifecycle_hooks_kafka::{CloseError, Delivery, ProducerClosed, SendError};
use tokio::sync::mpsc;

use super::{Broker, read_back, sorted};

type SendResult = Result<Delivery, SendError>;

/// Jobs that publish while the lifecycle drains (one of them only once the `wait` phase has
/// begun, after the shutdown hooks) get every message delivered; the producer closes in `exit`,
/// after the last job, and a consumer reads every message back.
pub(crate) async fn drain_sends_are_delivered(broker: Broker) {
    let topic = broker.topic("drain", 2).await;
    let producer = broker.producer().build().expect("a producer");
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(30))
        .hook(producer.hook())
        .observe(recorder.observer())
        .build()
        .expect("a valid graph");
    let handle = lifecycle.handle();
    let (results, mut received) = mpsc::unbounded_channel::<(String, SendResult)>();
    const JOBS: usize = 4;
    const PER_JOB: usize = 25;
    for job in 0..JOBS {
        let (producer, handle, topic, results) = (
            producer.clone(),
            handle.clone(),
            topic.clone(),
            results.clone(),
        );
        handle.clone().spawn(async move {
            handle.draining().await;
            if job == 0 {
                // Publish only after the shutdown hooks have run.
                let mut phase = handle.watch_phase();
                phase
                    .wait_for(|p| *p == Phase::WAIT)
                    .await
                    .expect("the lifecycle runs");
            }
            for i in 0..PER_JOB {
                let payload = format!("job{job}-{i}");
                let record = FutureRecord::<str, str>::to(&topic)
                    .key(&payload)
                    .payload(&payload);
                let result = producer.send(record).await;
                results.send((payload, result)).expect("the test listens");
            }
        });
    }
    drop(results);
    handle.stop();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 0, "failures: {:?}", outcome.failures());
    assert!(outcome.lost().is_empty());
    assert!(
        recorder.before("phase wait", "hook exit close_producer ok"),
        "{:?}",
        recorder.trace()
    );
    let mut sent = Vec::new();
    while let Some((payload, result)) = received.recv().await {
        let delivery = result.unwrap_or_else(|e| panic!("{payload} not delivered: {e}"));
        assert!((0..2).contains(&delivery.partition));
        sent.push(payload);
    }
    assert_eq!(sent.len(), JOBS * PER_JOB);
    let stats = producer.stats();
    assert_eq!((stats.sent, stats.delivered), (100, 100), "{stats:?}");
    assert_eq!((stats.failed, stats.in_flight), (0, 0), "{stats:?}");
    assert!(producer.is_closed());

    let read = read_back(&broker.bootstrap_servers(), &topic, 2).await;
    assert_eq!(read, sorted(sent));
}

/// The same job, publishing once the shutdown hooks have run, is delivered when the producer
/// closes in `exit` and refused with `ProducerClosed` when it closes in `shutdown` (the mistake).
pub(crate) async fn close_phase_decides(broker: Broker) {
    let topic = broker.topic("phase", 1).await;
    for close_on in [Phase::EXIT, Phase::SHUTDOWN] {
        let producer = broker
            .producer()
            .close_on(close_on.clone())
            .build()
            .expect("a producer");
        let recorder = Recorder::new();
        let lifecycle = testing::builder()
            .hook(producer.hook())
            .observe(recorder.observer())
            .build()
            .expect("a valid graph");
        let handle = lifecycle.handle();
        let job = handle.spawn({
            let (producer, handle, topic) = (producer.clone(), handle.clone(), topic.clone());
            async move {
                let mut phase = handle.watch_phase();
                phase
                    .wait_for(|p| *p == Phase::WAIT)
                    .await
                    .expect("the lifecycle runs");
                let record = FutureRecord::<str, str>::to(&topic).payload("late");
                producer.send(record).await
            }
        });
        handle.stop();
        let outcome = lifecycle.run().await;
        let result = job
            .await
            .expect("the job did not panic")
            .expect("the job finished");
        let hook_line = format!("hook {close_on} close_producer ok");
        assert!(
            recorder.position(&hook_line).is_some(),
            "{:?}",
            recorder.trace()
        );
        if close_on == Phase::EXIT {
            assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures());
            assert!(recorder.before("phase wait", &hook_line));
            result.expect("delivered: the producer was still open");
        } else {
            assert!(recorder.before(&hook_line, "phase wait"));
            let error = result.expect_err("the producer was closed under the job");
            assert!(
                matches!(error, SendError::Closed(ProducerClosed)),
                "{error:?}"
            );
            assert_eq!(producer.stats().refused_closed, 1);
        }
    }
    // Only the message sent while the producer was open is in the topic.
    let read = read_back(&broker.bootstrap_servers(), &topic, 1).await;
    assert_eq!(read, ["late"]);
}

/// After the close, every send fails at once with `ProducerClosed` and nothing is queued.
pub(crate) async fn send_after_close_fails_at_once(broker: Broker) {
    let topic = broker.topic("after-close", 1).await;
    let producer = broker.producer().build().expect("a producer");
    let lifecycle = testing::builder()
        .hook(producer.hook())
        .build()
        .expect("a valid graph");
    let handle = lifecycle.handle();
    handle.spawn({
        let (producer, handle, topic) = (producer.clone(), handle.clone(), topic.clone());
        async move {
            handle.draining().await;
            let record = FutureRecord::<str, str>::to(&topic).payload("before");
            producer
                .send(record)
                .await
                .expect("delivered before the close");
        }
    });
    handle.stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures());
    assert!(producer.is_closed());

    // Completes on its first poll: no waiting on the broker.
    let record = FutureRecord::<str, str>::to(&topic).payload("after");
    let sent = producer.send(record).now_or_never();
    assert!(
        matches!(sent, Some(Err(SendError::Closed(ProducerClosed)))),
        "{sent:?}"
    );
    let record = FutureRecord::<str, str>::to(&topic).payload("after");
    let queued = producer.try_send(record);
    assert!(matches!(queued, Err(ref e) if e.is_closed()), "{queued:?}");
    let stats = producer.stats();
    assert_eq!(
        (stats.sent, stats.delivered, stats.refused_closed),
        (1, 1, 2)
    );

    let read = read_back(&broker.bootstrap_servers(), &topic, 1).await;
    assert_eq!(read, ["before"]);
}

/// The broker is gone when the exit hook runs: the flush waits no longer than the budget, the
/// undelivered messages are purged, counted in the hook's error and the outcome, their senders
/// are told, and the run ends with status 1.
pub(crate) async fn broker_down_at_exit_is_bounded_and_reported(mut broker: Broker) {
    let topic = broker.topic("down", 1).await;
    let producer = broker.producer().build().expect("a producer");
    // Connected, with the topic's metadata, before the broker goes.
    let record = FutureRecord::<str, str>::to(&topic).payload("warm-up");
    producer
        .send(record)
        .await
        .expect("the warm-up message is delivered");
    broker.take_down();

    let budget = Duration::from_secs(3);
    let lifecycle = testing::builder()
        .budget(budget)
        .exit_reserve(Duration::from_secs(2))
        .hook(producer.hook())
        .build()
        .expect("a valid graph");
    let handle = lifecycle.handle();
    const QUEUED: usize = 10;
    let (deliveries_tx, deliveries) = tokio::sync::oneshot::channel();
    handle.spawn({
        let (producer, handle, topic) = (producer.clone(), handle.clone(), topic.clone());
        async move {
            handle.draining().await;
            let futures: Vec<_> = (0..QUEUED)
                .map(|i| {
                    let payload = format!("stranded-{i}");
                    let record = FutureRecord::<str, str>::to(&topic).payload(&payload);
                    producer.try_send(record).expect("queued")
                })
                .collect();
            deliveries_tx.send(futures).expect("the test listens");
        }
    });
    handle.stop();
    let started = Instant::now();
    let outcome = lifecycle.run().await;
    let elapsed = started.elapsed();

    assert_eq!(outcome.exit_code(), 1, "{outcome}");
    assert!(
        elapsed < budget + Duration::from_secs(1),
        "took {elapsed:?}"
    );
    let hook = outcome.hook("close_producer").expect("the hook ran");
    match &hook.result {
        HookResult::Error(message) => {
            assert!(
                message.contains("10 Kafka message(s) were still undelivered"),
                "{message}"
            )
        }
        other => panic!("the hook should report the purge as its error, not {other:?}"),
    }
    // It waited for the broker (most of the time left), and stopped within it.
    assert!(hook.elapsed >= Duration::from_secs(1), "{:?}", hook.elapsed);
    assert!(hook.elapsed < budget, "{:?}", hook.elapsed);
    assert_eq!(outcome.lost().len(), 1, "{:?}", outcome.lost());
    assert!(
        outcome.lost()[0].contains("10 Kafka message(s) purged"),
        "{:?}",
        outcome.lost()
    );

    for delivery in deliveries.await.expect("the job queued its messages") {
        let result = delivery.await;
        assert!(
            matches!(result, Err(SendError::Purged { .. })),
            "{result:?}"
        );
    }
    let stats = producer.stats();
    assert_eq!((stats.sent, stats.delivered), (11, 1), "{stats:?}");
    assert_eq!(
        (stats.failed, stats.purged, stats.in_flight),
        (10, 10, 0),
        "{stats:?}"
    );

    // Closing again reports the same, and purges nothing more.
    let again = producer.close(Duration::from_secs(1)).await;
    assert!(
        matches!(
            again,
            Err(CloseError::Undelivered {
                undelivered: 10,
                ..
            })
        ),
        "{again:?}"
    );
    assert_eq!(producer.stats().purged, 10);
}

/// Two concurrent closes, a third after them, then the lifecycle's own close hook: all fine,
/// all the same result, every message delivered once.
pub(crate) async fn close_twice_is_fine(broker: Broker) {
    let topic = broker.topic("twice", 1).await;
    let producer = broker.producer().build().expect("a producer");
    let deliveries: Vec<_> = (0..5)
        .map(|i| {
            let payload = format!("m{i}");
            let record = FutureRecord::<str, str>::to(&topic).payload(&payload);
            producer.try_send(record).expect("queued")
        })
        .collect();
    let timeout = Duration::from_secs(10);
    let (first, second) = tokio::join!(producer.close(timeout), producer.close(timeout));
    let first = first.expect("flushed");
    assert_eq!(second.expect("flushed"), first);
    assert_eq!(first.stats.delivered, 5);
    assert_eq!(producer.close(timeout).await.expect("flushed"), first);
    for delivery in deliveries {
        delivery.await.expect("delivered");
    }

    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .hook(producer.hook())
        .observe(recorder.observer())
        .build()
        .expect("a valid graph");
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.failures());
    assert!(recorder.position("hook exit close_producer ok").is_some());
    let stats = producer.stats();
    assert_eq!((stats.sent, stats.delivered, stats.failed), (5, 5, 0));

    let read = read_back(&broker.bootstrap_servers(), &topic, 1).await;
    assert_eq!(read, sorted((0..5).map(|i| format!("m{i}"))));
}

/// Senders keep publishing while the producer closes: each send is either delivered or refused
/// with `ProducerClosed`, and the topic holds exactly the delivered ones.
pub(crate) async fn sends_racing_the_close(broker: Broker) {
    let topic = broker.topic("race", 2).await;
    let producer = broker.producer().build().expect("a producer");
    const SENDERS: usize = 4;
    const BEFORE_CLOSE: usize = 50;
    let (started, mut all_started) = mpsc::channel::<()>(SENDERS);
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (producer, topic, started) = (producer.clone(), topic.clone(), started.clone());
        senders.push(tokio::spawn(async move {
            let mut results: Vec<(String, SendResult)> = Vec::new();
            let mut queued = Vec::new();
            for i in 0.. {
                if i == BEFORE_CLOSE {
                    started.send(()).await.expect("the test listens");
                }
                let payload = format!("s{sender}-{i}");
                let record = FutureRecord::<str, str>::to(&topic).payload(&payload);
                // Half the senders await each delivery, half queue bursts of ten and await
                // each burst after it is queued.
                let result = if sender % 2 == 0 {
                    producer.send(record).await
                } else {
                    match producer.try_send(record) {
                        Ok(delivery) => {
                            queued.push((payload, delivery));
                            if queued.len() == 10 {
                                for (payload, delivery) in queued.drain(..) {
                                    results.push((payload, delivery.await));
                                }
                            }
                            continue;
                        }
                        Err(error) => Err(error),
                    }
                };
                let closed = matches!(result, Err(SendError::Closed(_)));
                results.push((payload, result));
                if closed {
                    break;
                }
            }
            for (payload, delivery) in queued {
                results.push((payload, delivery.await));
            }
            results
        }));
    }
    drop(started);
    for _ in 0..SENDERS {
        all_started.recv().await.expect("every sender starts");
    }
    let report = producer
        .close(Duration::from_secs(10))
        .await
        .expect("flushed");

    let mut delivered = Vec::new();
    for sender in senders {
        let results = sender.await.expect("the sender did not panic");
        let refused = results
            .iter()
            .filter(|(_, r)| matches!(r, Err(SendError::Closed(_))));
        assert_eq!(refused.count(), 1, "each sender stops at its first refusal");
        for (payload, result) in results {
            match result {
                Ok(_) => delivered.push(payload),
                Err(SendError::Closed(_)) => {}
                Err(other) => panic!("{payload}: neither delivered nor refused: {other:?}"),
            }
        }
    }
    let stats = producer.stats();
    assert!(delivered.len() >= SENDERS * BEFORE_CLOSE);
    assert_eq!(stats.sent, delivered.len() as u64, "{stats:?}");
    assert_eq!(stats.delivered, delivered.len() as u64, "{stats:?}");
    assert_eq!((stats.failed, stats.in_flight), (0, 0), "{stats:?}");
    assert_eq!(stats.refused_closed, SENDERS as u64);
    assert_eq!(report.stats.delivered, stats.delivered);

    let read = read_back(&broker.bootstrap_servers(), &topic, 2).await;
    assert_eq!(read, sorted(delivered));
}

/// The startup check from `Producer::hooks` passes against a reachable broker, quickly, before
/// the service reports ready; the close follows in `exit`.
pub(crate) async fn startup_check_passes(broker: Broker) {
    let producer = broker.producer().build().expect("a producer");
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .hooks(producer.hooks())
        .observe(recorder.observer())
        .build()
        .expect("a valid graph");
    testing::stop_when_ready(&lifecycle.handle());
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    let check = outcome.hook("connect_producer").expect("it ran");
    assert_eq!(check.result, HookResult::Ok);
    assert!(
        check.elapsed < Duration::from_secs(2),
        "{:?}",
        check.elapsed
    );
    assert!(
        recorder.before("hook startup connect_producer ok", "ready"),
        "{:?}",
        recorder.trace()
    );
    assert!(recorder.before("ready", "hook exit close_producer ok"));
}

/// The broker is gone and an exit hook that runs before the close uses the budget up: the close
/// is skipped, and what it leaves queued is purged at once, counted and reported lost.
pub(crate) async fn skipped_close_reports_what_it_purges(mut broker: Broker) {
    let topic = broker.topic("skipped", 1).await;
    let producer = broker.producer().build().expect("a producer");
    let record = FutureRecord::<str, str>::to(&topic).payload("warm-up");
    producer
        .send(record)
        .await
        .expect("the warm-up message is delivered");
    broker.take_down();
    let deliveries: Vec<_> = (0..4)
        .map(|i| {
            let payload = format!("stranded-{i}");
            let record = FutureRecord::<str, str>::to(&topic).payload(&payload);
            producer.try_send(record).expect("queued")
        })
        .collect();
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
    assert_eq!(
        outcome.hook("close_producer").map(|h| &h.result),
        Some(&HookResult::Skipped)
    );
    assert_eq!(outcome.lost().len(), 1, "{:?}", outcome.lost());
    assert!(
        outcome.lost()[0].contains("4 Kafka message(s) purged undelivered"),
        "{:?}",
        outcome.lost()
    );
    for delivery in deliveries {
        let result = delivery.await;
        assert!(
            matches!(result, Err(SendError::Purged { .. })),
            "{result:?}"
        );
    }
    let stats = producer.stats();
    assert_eq!((stats.purged, stats.in_flight), (4, 0), "{stats:?}");
}
