//! An rdkafka producer and consumer bound to a [`lifecycle_hooks`] graph. The producer stays open
//! while work drains and is flushed and closed in `exit`: start at [`Producer`], bind it with
//! [`Producer::hooks`]. The consumer pauses at `stop_intake`, finishes in-flight messages and
//! commits before it closes: start at [`Consumer`], bind it with [`Consumer::hooks`].
//!
//! Closing a producer in `shutdown` makes every job that still publishes fail with
//! [`ProducerClosed`]; the `exit` phase runs only after all work has
//! ended, so that is where [`Producer::hook`] closes it by default.

mod cluster;
mod consumer;
mod context;
mod delivery;
pub mod errors;
mod producer;
mod state;
mod sync;

/// Where a deadline lands when `start + timeout` would overflow (`Duration::MAX`): about 30
/// years on, which no wait reaches (tokio's own "far future" is the same order).
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(86_400 * 365 * 30);

/// `start + timeout`, saturating at [`FAR_FUTURE`] instead of panicking on overflow.
pub(crate) fn deadline_after(
    start: tokio::time::Instant,
    timeout: std::time::Duration,
) -> tokio::time::Instant {
    start
        .checked_add(timeout)
        .unwrap_or_else(|| start + FAR_FUTURE)
}

pub use cluster::MockCluster;
pub use consumer::{
    ConsumedMessage, Consumer, ConsumerBuilder, ConsumerStats,
    DEFAULT_CLOSE_HOOK_NAME as DEFAULT_CONSUMER_CLOSE_HOOK_NAME, DEFAULT_PAUSE_HOOK_NAME,
    DEFAULT_REVOKE_TIMEOUT, DEFAULT_SUBSCRIBE_HOOK_NAME, RebalanceEvent,
};
pub use delivery::{Delivery, DeliveryFuture};
pub use errors::{
    CloseError, ConnectError, ConsumerCloseError, ProducerClosed, SendError, SubscribeError,
};
pub use producer::{
    CloseReport, DEFAULT_CLOSE_TIMEOUT, DEFAULT_CONNECT_HOOK_NAME, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HOOK_NAME, DEFAULT_QUEUE_TIMEOUT, Producer, ProducerBuilder,
};
pub use state::ProducerStats;

/// The rdkafka version this crate is built on, for [`FutureRecord`](rdkafka::producer::FutureRecord)
/// and consumers that must match it.
pub use rdkafka;
