//! The process-test harness, shared through `lifecycle-hooks-test-support`.

#[allow(unused_imports)] // Each test file uses a different part.
pub(crate) use lifecycle_hooks_test_support::process::*;
