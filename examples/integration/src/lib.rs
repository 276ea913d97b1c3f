//! The main demo and the tests that span the workspace's crates, in a package of their own so
//! that the core's tests and a first `cargo run` build only what they need.
//!
//! - `cargo run --example jobs_to_kafka` (from the workspace root): the job pool and the Kafka
//!   producer under one lifecycle; see the workspace README.
//! - `cargo run --example 03_axum`: an axum service under the lifecycle.
//! - `tests/`: process tests of both, the deployment files, and the fault-matrix cases that need
//!   more than the core.
