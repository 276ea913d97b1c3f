//! Harnesses the workspace's tests share, so no test reaches into another crate's `tests/` by
//! `#[path]`: `process` runs an example binary and sends it real signals, `redis` starts a
//! throwaway `redis-server`, `kafka` starts a broker (librdkafka's mock cluster or `tansu`).
//! Not published.

// A harness for this workspace's tests, never published: its items are documented where the
// documentation helps a test author, and its handles hold processes that have no useful Debug.
#![allow(missing_docs, missing_debug_implementations)]

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod process;
#[cfg(feature = "redis")]
pub mod redis;
