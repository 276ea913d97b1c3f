//! A Sidekiq-style worker pool bound to a [`lifecycle_hooks`] phase graph.
//!
//! Start at [`JobPool`]: it fetches from a [`JobSource`] ([`MemorySource`], or `RedisSource`
//! with the `redis` feature), stops fetching at `stop_intake`, lets running jobs finish during the
//! drain, hands back what the drain deadline cut off, and closes its source in `exit`.

mod context;
mod counters;
pub mod errors;
mod job;
mod memory;
mod pool;
#[cfg(feature = "redis")]
mod redis;
mod retry;
mod source;

#[cfg(feature = "redis")]
pub use self::redis::{RedisKeys, RedisSource, RedisSourceBuilder};
pub use context::JobContext;
pub use counters::Counters;
pub use errors::JobFailure;
pub use job::Job;
pub use memory::MemorySource;
pub use pool::{DEFAULT_CONCURRENCY, JobPool, JobPoolBuilder};
pub use retry::{MaxAttempts, Retry, RetryPolicy};
pub use source::JobSource;
