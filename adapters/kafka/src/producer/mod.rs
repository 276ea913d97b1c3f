//! The producer handle and its send path. See [`Producer`]; its builder is in `builder.rs`, its
//! close (and what a drop does) in `close.rs`, its lifecycle hooks in `hooks.rs`.

mod builder;
mod close;
mod hooks;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lifecycle_hooks::Phase;
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, FutureRecord, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::OnceCell;

use crate::cluster::MockCluster;
use crate::context::DeliveryContext;
use crate::delivery::{Delivery, DeliveryFuture, Pending};
use crate::errors::{CloseError, ProducerClosed, SendError};
use crate::state::{ProducerStats, Shared};

pub use builder::{
    DEFAULT_CLOSE_TIMEOUT, DEFAULT_CONNECT_HOOK_NAME, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HOOK_NAME,
    DEFAULT_QUEUE_TIMEOUT, ProducerBuilder,
};
pub use close::CloseReport;

use crate::deadline_after;

/// The backoff of a send retrying for queue room after a delivery report woke it.
const MIN_QUEUE_BACKOFF: Duration = Duration::from_millis(1);
const MAX_QUEUE_BACKOFF: Duration = Duration::from_millis(64);

/// A Kafka producer bound to a lifecycle: open through `stop_intake`, `drain`, `shutdown` and
/// `wait`, flushed and closed by an `exit` hook.
///
/// Cheap to clone (an `Arc`) and thread-safe: build one per process and hand clones to every
/// task. [`send`](Producer::send) queues a message and returns its delivery result. The close
/// hook from [`hook`](Producer::hook) flushes within the time the exit budget has left, then
/// purges what is still undelivered, counts it, and reports it in the hook's error (so the exit
/// status is 1) and in [`Outcome::lost`](lifecycle_hooks::Outcome::lost). After the close every
/// send fails at once with [`ProducerClosed`]; a send racing the close is either delivered or
/// gets `ProducerClosed`, never lost silently.
///
/// Never rely on dropping the producer to flush it: librdkafka's destructor purges what is
/// still queued, and those messages are lost without reaching the lifecycle's outcome. Dropping
/// a producer with messages in flight logs an error with the count purged. Dropping the last
/// clone never blocks async code: inside a tokio runtime, librdkafka's blocking teardown runs on
/// the runtime's blocking pool (which the runtime waits for when it shuts down).
///
/// Without [`bootstrap_servers`](ProducerBuilder::bootstrap_servers) it starts librdkafka's
/// mock cluster in-process ([`MockCluster`]), so it runs with no broker.
///
/// ```
/// use lifecycle_hooks::Lifecycle;
/// use lifecycle_hooks_kafka::{Producer, rdkafka::producer::FutureRecord};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let producer = Producer::builder().build()?; // embedded mock cluster
/// // A startup check that a broker answers, and the close in `exit`.
/// let lifecycle = Lifecycle::builder().hooks(producer.hooks()).build()?;
/// let handle = lifecycle.handle();
/// let job = handle.spawn({
///     let (producer, handle) = (producer.clone(), handle.clone());
///     async move {
///         handle.draining().await;
///         // Still open: the producer closes only after all work has ended.
///         producer.send(FutureRecord::<str, str>::to("orders").payload("42")).await
///     }
/// });
/// handle.stop();
/// let outcome = lifecycle.run().await;
/// assert_eq!(outcome.exit_code(), 0);
/// // The job ran to its end (`Some`), and its message was delivered.
/// let delivery = job.await?.expect("the job was not cancelled")?;
/// assert_eq!(delivery.offset, 0);
/// assert_eq!(producer.stats().delivered, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    /// `Some` until [`Inner`] is dropped, when it moves to a `close::Teardown`.
    client: Option<ThreadedProducer<DeliveryContext>>,
    shared: Arc<Shared>,
    /// The result of the one close; later closes return it again.
    closed: OnceCell<Result<CloseReport, CloseError>>,
    close_on: Phase,
    hook_name: Cow<'static, str>,
    /// The startup check's name and timeout; `None` if it is turned off.
    connect: Option<(Cow<'static, str>, Duration)>,
    queue_timeout: Duration,
    close_timeout: Duration,
    bootstrap_servers: String,
    cluster: Option<MockCluster>,
}

impl Inner {
    fn client(&self) -> &ThreadedProducer<DeliveryContext> {
        // Only `Drop` takes it, and nothing borrows `Inner` then.
        self.client
            .as_ref()
            .expect("the librdkafka client lives as long as the producer")
    }
}

/// Why a hand-over to librdkafka did not happen.
enum Refused<'a, K: ToBytes + ?Sized, P: ToBytes + ?Sized> {
    Closed,
    Full(BaseRecord<'a, K, P, Arc<Pending>>),
    Error(KafkaError),
}

impl<K: ToBytes + ?Sized, P: ToBytes + ?Sized> Refused<'_, K, P> {
    /// The error a sender gets; `waited` is how long it waited for queue room.
    fn into_error(self, waited: Duration) -> SendError {
        match self {
            Refused::Closed => ProducerClosed.into(),
            Refused::Full(_) => SendError::QueueFull { waited },
            Refused::Error(source) => SendError::Enqueue { source },
        }
    }
}

impl Producer {
    /// A builder: the embedded mock cluster by default, closed in `exit`.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::default()
    }

    /// Queues `record` and waits for its delivery result.
    ///
    /// If librdkafka's queue is full, it waits for room up to the
    /// [queue timeout](ProducerBuilder::queue_timeout), retrying when delivery reports come
    /// (and, since librdkafka frees their room just after, a few milliseconds later).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] at once if the producer is closed; otherwise see [`SendError`].
    ///
    /// # Cancel safety
    ///
    /// Once the message is queued, dropping the future does not unqueue it: it is still
    /// delivered (or purged at close) and counted. Before that, nothing was sent.
    ///
    /// # Panics
    ///
    /// If the queue is full and the send must wait outside a tokio runtime with a timer.
    pub async fn send<K, P>(&self, record: FutureRecord<'_, K, P>) -> Result<Delivery, SendError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (pending, delivery) = Pending::new(self.inner.shared.clock.raw());
        let mut record = into_base(record, pending);
        let Err(refused) = self.hand_over(record) else {
            return delivery.await;
        };
        let Refused::Full(back) = refused else {
            return Err(refused.into_error(Duration::ZERO));
        };
        // The queue is full: retry each time a delivery report may have made room, until the
        // queue timeout. Registered before each retry, so a report in between is not missed.
        // librdkafka frees a report's room only after the report's callbacks have returned, so a
        // wake-up can come just before the room: once woken, retry also after a short backoff
        // (1 ms, doubling to 64 ms) for as long as the queue stays full. With no report at all
        // (the broker is down), the wait is a plain wait until the queue timeout.
        record = back;
        let shared = &*self.inner.shared;
        let deadline = deadline_after(tokio::time::Instant::now(), self.inner.queue_timeout);
        let mut backoff: Option<Duration> = None;
        loop {
            let (notified, waiter) = shared.space();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            match self.hand_over(record) {
                Ok(()) => {
                    drop(waiter);
                    return delivery.await;
                }
                Err(Refused::Full(back)) => record = back,
                Err(refused) => return Err(refused.into_error(self.inner.queue_timeout)),
            }
            let wake = backoff.map_or(deadline, |b| deadline.min(tokio::time::Instant::now() + b));
            let woken = tokio::time::timeout_at(wake, notified).await.is_ok();
            if !woken && tokio::time::Instant::now() >= deadline {
                return Err(SendError::QueueFull {
                    waited: self.inner.queue_timeout,
                });
            }
            backoff = Some(match backoff {
                Some(b) if !woken => (b * 2).min(MAX_QUEUE_BACKOFF),
                _ => MIN_QUEUE_BACKOFF,
            });
        }
    }

    /// Queues `record` without waiting for room, and returns a future of its delivery result.
    ///
    /// Use it to queue many messages before awaiting their results.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the producer is closed, [`SendError::QueueFull`] (with
    /// `waited` zero) if librdkafka's queue is full, [`SendError::Enqueue`] if librdkafka refuses
    /// the message. In every case nothing was queued.
    pub fn try_send<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
    ) -> Result<DeliveryFuture, SendError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (pending, delivery) = Pending::new(self.inner.shared.clock.raw());
        match self.hand_over(into_base(record, pending)) {
            Ok(()) => Ok(delivery),
            Err(refused) => Err(refused.into_error(Duration::ZERO)),
        }
    }

    /// Hands a record to librdkafka unless the producer is closed (state invariants 1 and 2).
    /// Non-blocking: librdkafka refuses rather than waits when its queue is full.
    fn hand_over<'a, K, P>(
        &self,
        record: BaseRecord<'a, K, P, Arc<Pending>>,
    ) -> Result<(), Refused<'a, K, P>>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let shared = &*self.inner.shared;
        // Counted before the hand-over: the delivery report may come before `send` returns.
        if !shared.enter() {
            return Err(Refused::Closed);
        }
        match self.inner.client().send(record) {
            Ok(()) => Ok(()),
            Err((error, record)) => {
                shared.leave();
                if error == KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) {
                    Err(Refused::Full(record))
                } else {
                    Err(Refused::Error(error))
                }
            }
        }
    }

    /// Whether [`close`](Producer::close) has begun: sends fail with [`ProducerClosed`].
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    /// The producer's counters: sent, delivered, failed, purged, in flight, latency.
    pub fn stats(&self) -> ProducerStats {
        self.inner.shared.stats()
    }

    /// The phase the close hook runs in.
    pub fn close_phase(&self) -> &Phase {
        &self.inner.close_on
    }

    /// The `bootstrap.servers` the producer uses (the mock cluster's when embedded).
    pub fn bootstrap_servers(&self) -> &str {
        &self.inner.bootstrap_servers
    }

    /// The embedded mock cluster, when the producer was built without bootstrap servers.
    pub fn mock_cluster(&self) -> Option<&MockCluster> {
        self.inner.cluster.as_ref()
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("bootstrap_servers", &self.inner.bootstrap_servers)
            .field("close_on", &self.inner.close_on)
            .field("closed", &self.is_closed())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn into_base<'a, K, P>(
    record: FutureRecord<'a, K, P>,
    pending: Arc<Pending>,
) -> BaseRecord<'a, K, P, Arc<Pending>>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    BaseRecord {
        topic: record.topic,
        partition: record.partition,
        payload: record.payload,
        key: record.key,
        timestamp: record.timestamp,
        headers: record.headers,
        delivery_opaque: pending,
    }
}
