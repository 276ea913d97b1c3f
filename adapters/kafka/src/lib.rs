//! An rdkafka producer bound to a [`lifecycle_hooks`] graph: open while work drains, flushed and
//! closed in `exit`. Start at [`Producer`]; bind it with [`Producer::hooks`].
//!
//! Closing a producer in `shutdown` makes every job that still publishes fail with
//! [`ProducerClosed`]; the `exit` phase runs only after all work has
//! ended, so that is where [`Producer::hook`] closes it by default.

mod cluster;
mod context;
mod delivery;
pub mod errors;
mod producer;
mod state;

pub use cluster::MockCluster;
pub use delivery::{Delivery, DeliveryFuture};
pub use errors::{CloseError, ConnectError, ProducerClosed, SendError};
pub use producer::{
    CloseReport, DEFAULT_CLOSE_TIMEOUT, DEFAULT_CONNECT_HOOK_NAME, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HOOK_NAME, DEFAULT_QUEUE_TIMEOUT, Producer, ProducerBuilder,
};
pub use state::ProducerStats;

/// The rdkafka version this crate is built on, for [`FutureRecord`](rdkafka::producer::FutureRecord)
/// and consumers that must match it.
pub use rdkafka;
