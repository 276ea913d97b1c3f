//! Errors of the Kafka adapter, one type per concern.

use std::time::Duration;

use rdkafka::error::KafkaError;

/// The producer is closed: the message was not queued, so it was neither sent nor lost.
///
/// Every [`Producer::send`](crate::Producer::send) after
/// [`Producer::close`](crate::Producer::close) has begun fails at once with this error. If it
/// appears while work is still in flight, the producer was closed too early: close it in the
/// `exit` phase, after all work has ended (see [`ProducerBuilder::close_on`](crate::ProducerBuilder::close_on)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the Kafka producer is closed and the message was not queued; \
     close the producer in the `exit` phase, after all work has ended"
)]
pub struct ProducerClosed;

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The producer was closed before the message was queued. Nothing was sent; the message
    /// can be sent elsewhere or handed back.
    #[error(transparent)]
    Closed(#[from] ProducerClosed),
    /// librdkafka's local queue stayed full for the whole queue timeout. Nothing was queued; slow
    /// down, or raise `queue.buffering.max.messages` / `queue.buffering.max.kbytes`.
    #[error("librdkafka's local queue stayed full for {waited:?}; the message was not queued")]
    QueueFull {
        /// How long the send waited for room.
        waited: Duration,
    },
    /// librdkafka refused the message (an unknown partition, a topic name with a NUL byte, a
    /// message larger than `message.max.bytes`...). Nothing was queued.
    #[error("librdkafka refused to queue the message")]
    Enqueue {
        /// The error librdkafka returned.
        #[source]
        source: KafkaError,
    },
    /// The producer was closed while the message was queued, the flush ran out of time, and the
    /// message was purged. It is counted in [`CloseError::Undelivered`]; send it again elsewhere.
    #[error("the message was queued but purged undelivered when the producer was closed")]
    Purged {
        /// The purge error librdkafka reported for the message.
        #[source]
        source: KafkaError,
    },
    /// The broker did not accept the message (delivery timeout, authorization, broker error...).
    #[error("the message was not delivered")]
    Delivery {
        /// The delivery error librdkafka reported.
        #[source]
        source: KafkaError,
    },
}

impl SendError {
    /// Whether the send failed because the producer was closed: never queued.
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed(_))
    }
}

/// The flush at close did not deliver everything.
///
/// The messages still queued when the time was up were purged (their senders got
/// [`SendError::Purged`]); messages whose delivery failed during the flush (their senders got
/// [`SendError::Delivery`], if any still listened) are counted too. The count is reported here,
/// in the close hook's error and in the lifecycle's
/// [`Outcome::lost`](lifecycle_hooks::Outcome::lost).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// Some messages were not delivered by the close: purged when the flush ran out of time, or
    /// failed during it.
    #[error(
        "{undelivered} Kafka message(s) were still undelivered after flushing for {flushed_for:?}; \
         they were purged or failed (is the broker reachable? give the exit phase more time \
         with `Builder::exit_reserve`)"
    )]
    Undelivered {
        /// How many messages were purged or failed during the close (or had no delivery report
        /// when it ended).
        undelivered: u64,
        /// How long the flush waited before purging.
        flushed_for: Duration,
    },
}

/// No broker answered at startup: the startup check of [`Producer::hooks`](crate::Producer::hooks)
/// (or [`Producer::connect`](crate::Producer::connect)) failed, so the service does not report
/// ready.
#[derive(Debug, thiserror::Error)]
#[error(
    "no Kafka broker of `{bootstrap_servers}` answered a metadata request within {timeout:?}; \
     is it up and reachable from here? (turn this startup check off with \
     `ProducerBuilder::connect_on_startup(false)`)"
)]
#[non_exhaustive]
pub struct ConnectError {
    /// The producer's `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// How long the check waited.
    pub timeout: Duration,
    /// The error from librdkafka.
    #[source]
    pub source: KafkaError,
}

/// The producer could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// librdkafka's mock cluster, the embedded default when no bootstrap servers are given,
    /// did not start.
    #[error("could not start librdkafka's embedded mock cluster")]
    MockCluster {
        /// The error from librdkafka.
        #[source]
        source: KafkaError,
    },
    /// The thread that holds the embedded mock cluster could not be started.
    #[error("could not start the thread of the embedded mock cluster")]
    Thread {
        /// The error from the operating system.
        #[source]
        source: std::io::Error,
    },
    /// librdkafka rejected the configuration (an unknown property, a bad value).
    #[error("could not create the Kafka producer; check its configuration properties")]
    Client {
        /// The error from librdkafka.
        #[source]
        source: KafkaError,
    },
    /// librdkafka rejected the consumer's configuration (an unknown property, a bad value).
    #[error("could not create the Kafka consumer; check its configuration properties")]
    Consumer {
        /// The error from librdkafka.
        #[source]
        source: KafkaError,
    },
    /// The closing phase is not allowed: only `exit` (the right place) and `shutdown` (the
    /// mistake, to show the difference) are.
    #[error(
        "a producer cannot be closed in phase `{phase}`: use `exit` (or `shutdown`, only to show \
         why it is wrong)"
    )]
    ClosePhase {
        /// The phase that was asked for.
        phase: String,
    },
    /// The startup check was given no time: no broker can answer within zero.
    #[error(
        "`connect_timeout` is zero, so the startup check could never pass; give it a few \
         seconds, or turn the check off with `connect_on_startup(false)`"
    )]
    ConnectTimeout,
}

/// The consumer could not subscribe at startup: the startup hook of
/// [`Consumer::hooks`](crate::Consumer::hooks) fails, and the service never reports ready.
#[derive(Debug, thiserror::Error)]
#[error("the Kafka consumer of group `{group}` could not subscribe to `{topics}`")]
#[non_exhaustive]
pub struct SubscribeError {
    /// The consumer group.
    pub group: String,
    /// The topics, comma-separated.
    pub topics: String,
    /// The error from librdkafka.
    #[source]
    pub source: KafkaError,
}

/// The consumer's close in `exit` did not end cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerCloseError {
    /// The final synchronous commit failed: the messages processed since the last commit will
    /// be processed again by the next member (at-least-once, nothing is lost).
    #[error(
        "the final commit of the Kafka consumer of group `{group}` failed; messages processed \
         since the last commit will be processed again"
    )]
    Commit {
        /// The consumer group.
        group: String,
        /// The error from librdkafka.
        #[source]
        source: KafkaError,
    },
    /// The final synchronous commit did not answer in the time the hook had (no group
    /// coordinator: the broker is down or unreachable). Nothing is committed that was not
    /// before; the consumer still leaves, and the next member processes those messages again.
    #[error(
        "the final commit of the Kafka consumer of group `{group}` got no answer within \
         {waited:?}; messages processed since the last commit will be processed again"
    )]
    CommitTimeout {
        /// The consumer group.
        group: String,
        /// How long the hook waited.
        waited: std::time::Duration,
    },
    /// The consumer did not finish leaving the group in the time the hook had.
    #[error(
        "the Kafka consumer of group `{group}` did not close within {waited:?}; the group \
         rebalances when its session times out"
    )]
    Timeout {
        /// The consumer group.
        group: String,
        /// How long the hook waited.
        waited: std::time::Duration,
    },
}
