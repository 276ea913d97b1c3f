//! Shared by `tests/mock.rs`, `tests/tansu.rs` and `tests/reliability.rs`: the broker under test
//! and a read-back consumer (from `lifecycle-hooks-test-support`), and the scenarios the broker
//! files run against their broker.

pub(crate) mod scenarios;

#[allow(unused_imports)] // Each test file uses a different part.
pub(crate) use lifecycle_hooks_test_support::kafka::*;
