//! The independent harness shape (issue 18): the rounds as a user measuring from outside would
//! write them. The driver is the future given to `Runtime::block_on`, so it runs on the calling
//! thread, not on a worker: every task is spawned from outside the runtime's workers (through
//! its injection queue), and each round's tasks bump one shared ready counter, then await the
//! library's own drain/cancel signal through a handle cloned into the task.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use lifecycle_hooks::testing;
use tokio_graceful_shutdown::{SubsystemBuilder, SubsystemHandle, Toplevel};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Barrier;

/// The three libraries of the harness, in the order of its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lib {
    /// The hand-written floor: tokio-util `TaskTracker` + `CancellationToken`.
    TaskTracker,
    /// `lifecycle_hooks`: `handle.spawn` + `draining()`, `run()` spawned, `stop()`.
    LifecycleHooks,
    /// tokio-graceful-shutdown: N subsystems under a `Toplevel`.
    GracefulShutdown,
}

impl Lib {
    pub(crate) const ALL: [Lib; 3] = [Lib::TaskTracker, Lib::LifecycleHooks, Lib::GracefulShutdown];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Lib::TaskTracker => "task_tracker",
            Lib::LifecycleHooks => "lifecycle_hooks",
            Lib::GracefulShutdown => "tokio_graceful_shutdown",
        }
    }

    pub(crate) fn by_name(name: &str) -> Option<Lib> {
        Lib::ALL.into_iter().find(|lib| lib.name() == name)
    }

    /// One round with `n` tasks. Returns when every task has ended. Call it through
    /// `Runtime::block_on`; `spawned` is called once all `n` tasks are waiting (to time the
    /// spawn half on its own).
    pub(crate) async fn round(self, n: usize, spawned: impl FnOnce()) {
        match self {
            Lib::TaskTracker => task_tracker(n, spawned).await,
            Lib::LifecycleHooks => lifecycle_hooks(n, spawned).await,
            Lib::GracefulShutdown => graceful_shutdown(n, spawned).await,
        }
    }
}

async fn task_tracker(n: usize, spawned: impl FnOnce()) {
    let tracker = TaskTracker::new();
    let token = CancellationToken::new();
    let ready = Barrier::new(n);
    for _ in 0..n {
        let t = token.clone();
        let ready = Arc::clone(&ready);
        tracker.spawn(async move {
            ready.arrive();
            t.cancelled().await
        });
    }
    ready.all_arrived().await;
    spawned();
    token.cancel();
    tracker.close();
    tracker.wait().await;
}

async fn lifecycle_hooks(n: usize, spawned: impl FnOnce()) {
    let lifecycle = testing::builder().build().expect("a valid graph");
    let handle = lifecycle.handle();
    let ready = Barrier::new(n);
    for _ in 0..n {
        let h = handle.clone();
        let ready = Arc::clone(&ready);
        handle.spawn(async move {
            ready.arrive();
            h.draining().await
        });
    }
    let run = tokio::spawn(lifecycle.run());
    ready.all_arrived().await;
    spawned();
    handle.stop();
    let outcome = run.await.expect("the run does not panic");
    assert_eq!(outcome.exit_code(), 0, "a clean stop");
}

async fn graceful_shutdown(n: usize, spawned: impl FnOnce()) {
    let token = CancellationToken::new();
    let ready = Barrier::new(n);
    let spawner = Arc::clone(&ready);
    let toplevel = Toplevel::new_with_shutdown_token(
        async move |s: &mut SubsystemHandle| {
            for _ in 0..n {
                let ready = Arc::clone(&spawner);
                s.start(SubsystemBuilder::new(
                    "task",
                    async move |h: &mut SubsystemHandle| {
                        ready.arrive();
                        h.on_shutdown_requested().await;
                        Ok::<(), Infallible>(())
                    },
                ));
            }
        },
        token.clone(),
    );
    ready.all_arrived().await;
    spawned();
    token.cancel();
    toplevel
        .handle_shutdown_requests(Duration::from_secs(60))
        .await
        .expect("a clean shutdown");
}

/// The load average from `/proc/loadavg` (1, 5 and 15 minutes), to print beside the figures.
pub(crate) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A setting from the environment, or `default`.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
