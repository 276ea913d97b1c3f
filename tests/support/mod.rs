//! The process-test harness, shared through `lifecycle-hooks-test-support`.

#[allow(unused_imports)] // Each test file uses a different part.
pub(crate) use lifecycle_hooks_test_support::process::*;

/// A 2-worker multi-thread runtime: real OS threads, as users run the library.
#[allow(dead_code)] // Each test file uses a different part.
pub(crate) fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
