//! What the benches share: the three tracked-work contenders, a start barrier, runtimes and
//! order statistics for the latency benches.

#![allow(dead_code, reason = "each bench binary uses only part of this module")]

pub(crate) mod harness;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lifecycle_hooks::testing;
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio_graceful_shutdown::{SubsystemBuilder, SubsystemHandle, Toplevel};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The runtime every timed bench uses: two workers, one per core of the bench machine.
pub(crate) fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A single-threaded runtime.
pub(crate) fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Counts tasks that have started; wakes the waiter once all have. Every contender's task
/// arrives here on its first poll, right before it awaits the stop, so the trigger comes
/// only when all N tasks are running and waiting (the same one atomic add for each contender).
#[derive(Debug)]
pub(crate) struct Barrier {
    left: AtomicUsize,
    all: Notify,
}

impl Barrier {
    pub(crate) fn new(n: usize) -> Arc<Barrier> {
        Arc::new(Barrier {
            left: AtomicUsize::new(n),
            all: Notify::new(),
        })
    }

    pub(crate) fn arrive(&self) {
        // AcqRel: the last arrival sees every earlier one before it wakes the waiter.
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all.notify_one();
        }
    }

    pub(crate) async fn all_arrived(&self) {
        // `notify_one` stores a permit, so a wake-up before this await is not lost.
        while self.left.load(Ordering::Acquire) != 0 {
            self.all.notified().await;
        }
    }
}

/// The tracked-work contenders: start N tasks that wait for the stop, trigger it, join them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contender {
    /// `lifecycle_hooks`: `handle.spawn` N tasks awaiting `draining()`, `stop()`, `run()`.
    LifecycleHooks,
    /// The hand-written floor: tokio-util `TaskTracker` + `CancellationToken`.
    TaskTracker,
    /// tokio-graceful-shutdown: N subsystems awaiting `on_shutdown_requested()` under a
    /// `Toplevel`, stopped through its shutdown token.
    GracefulShutdown,
}

impl Contender {
    pub(crate) const ALL: [Contender; 3] = [
        Contender::LifecycleHooks,
        Contender::TaskTracker,
        Contender::GracefulShutdown,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::LifecycleHooks => "lifecycle_hooks",
            Contender::TaskTracker => "task_tracker",
            Contender::GracefulShutdown => "tokio_graceful_shutdown",
        }
    }

    /// One whole round: build, start `n` waiting tasks, trigger, join. Runs inside a task of
    /// the runtime, so every contender spawns from a worker thread.
    pub(crate) async fn round(self, n: usize) {
        match self {
            Contender::LifecycleHooks => lifecycle_hooks_round(n).await,
            Contender::TaskTracker => task_tracker_round(n).await,
            Contender::GracefulShutdown => graceful_shutdown_round(n).await,
        }
    }
}

async fn lifecycle_hooks_round(n: usize) {
    let lifecycle = testing::builder().build().expect("a valid graph");
    let handle = lifecycle.handle();
    let barrier = Barrier::new(n);
    for _ in 0..n {
        let draining = handle.draining();
        let barrier = Arc::clone(&barrier);
        handle.spawn(async move {
            barrier.arrive();
            draining.await;
        });
    }
    barrier.all_arrived().await;
    handle.stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "a clean stop");
}

async fn task_tracker_round(n: usize) {
    let tracker = TaskTracker::new();
    let token = CancellationToken::new();
    let barrier = Barrier::new(n);
    for _ in 0..n {
        let stopped = token.clone().cancelled_owned();
        let barrier = Arc::clone(&barrier);
        tracker.spawn(async move {
            barrier.arrive();
            stopped.await;
        });
    }
    barrier.all_arrived().await;
    token.cancel();
    tracker.close();
    tracker.wait().await;
}

async fn graceful_shutdown_round(n: usize) {
    let token = CancellationToken::new();
    let barrier = Barrier::new(n);
    let spawner = Arc::clone(&barrier);
    let toplevel = Toplevel::new_with_shutdown_token(
        async move |s: &mut SubsystemHandle| {
            for _ in 0..n {
                let barrier = Arc::clone(&spawner);
                s.start(SubsystemBuilder::new(
                    "task",
                    async move |h: &mut SubsystemHandle| {
                        barrier.arrive();
                        h.on_shutdown_requested().await;
                        Ok::<(), Infallible>(())
                    },
                ));
            }
        },
        token.clone(),
    );
    barrier.all_arrived().await;
    token.cancel();
    toplevel
        .handle_shutdown_requests(Duration::from_secs(60))
        .await
        .expect("a clean shutdown");
}

/// Order statistics of a sample, in microseconds.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) n: usize,
    pub(crate) min: f64,
    pub(crate) p10: f64,
    pub(crate) median: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Summary {
    pub(crate) fn of(samples: &mut [Duration]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let at = |q: f64| {
            let index = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[index].as_secs_f64() * 1e6
        };
        Summary {
            n: samples.len(),
            min: at(0.0),
            p10: at(0.10),
            median: at(0.5),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    /// A Markdown table row: `| label | n | min | p10 | median | p90 | p99 | max |` (µs).
    pub(crate) fn row(&self, label: &str) -> String {
        format!(
            "| {label} | {} | {:.1} | {:.1} | **{:.1}** | {:.1} | {:.1} | {:.1} |",
            self.n, self.min, self.p10, self.median, self.p90, self.p99, self.max
        )
    }

    pub(crate) const HEADER: &'static str = "| case | runs | min µs | p10 µs | median µs | p90 µs | p99 µs | max µs |\n|---|---|---|---|---|---|---|---|";
}

/// Median and 10th/90th percentiles of a sample of plain numbers.
#[derive(Debug)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) p10: f64,
    pub(crate) p90: f64,
}

impl Spread {
    pub(crate) fn of(mut xs: Vec<f64>) -> Spread {
        assert!(!xs.is_empty(), "no samples");
        xs.sort_by(f64::total_cmp);
        let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
        Spread {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
        }
    }

    /// `median [p10 – p90]` with `digits` decimals and `unit` after each number.
    pub(crate) fn show(&self, digits: usize, unit: &str) -> String {
        format!(
            "**{:.digits$}{unit}** [{:.digits$} – {:.digits$}]",
            self.median, self.p10, self.p90
        )
    }
}
