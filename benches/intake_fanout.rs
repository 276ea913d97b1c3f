//! Intake fan-out: from the trigger until 10 000 intake listeners have woken. Each listener is a
//! tracked task parked on `handle.intake_stopped()`; the last one to wake records the time. The
//! trigger is `handle.stop()` while `run()` waits in `running`, so the figure includes the runner
//! waking and entering `stop_intake`. Beside it, the floor: one `CancellationToken` and 10 000
//! tasks of a `TaskTracker` on `cancelled_owned()`, cancelled directly. 2-worker runtime;
//! microseconds.
//!
//! `cargo bench -p lifecycle-hooks --bench intake_fanout`; figures in `BENCHMARKS.md`.

mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use lifecycle_hooks::testing;
use parking_lot::Mutex;
use support::{Barrier, Summary};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const LISTENERS: usize = 10_000;

/// Counts listeners down; the last one records when it woke.
#[derive(Debug)]
struct Woken {
    left: AtomicUsize,
    last: Mutex<Option<Instant>>,
    done: Notify,
}

impl Woken {
    fn new(n: usize) -> Arc<Woken> {
        Arc::new(Woken {
            left: AtomicUsize::new(n),
            last: Mutex::new(None),
            done: Notify::new(),
        })
    }

    fn wake(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.last.lock() = Some(Instant::now());
            self.done.notify_one();
        }
    }

    async fn all(&self) -> Instant {
        loop {
            if let Some(at) = *self.last.lock() {
                return at;
            }
            self.done.notified().await;
        }
    }
}

/// A listener: registers on `stopped` (polls it once), arrives at the barrier, waits, wakes.
async fn listener(stopped: impl Future<Output = ()>, barrier: Arc<Barrier>, woken: Arc<Woken>) {
    let mut stopped = pin!(stopped);
    let registered = std::future::poll_fn(|cx| Poll::Ready(stopped.as_mut().poll(cx))).await;
    barrier.arrive();
    if registered.is_pending() {
        stopped.await;
    }
    woken.wake();
}

async fn lifecycle_run() -> Duration {
    let lifecycle = testing::builder().build().expect("a valid graph");
    let handle = lifecycle.handle();
    let barrier = Barrier::new(LISTENERS);
    let woken = Woken::new(LISTENERS);
    for _ in 0..LISTENERS {
        handle.spawn(listener(
            handle.intake_stopped().into_future(),
            Arc::clone(&barrier),
            Arc::clone(&woken),
        ));
    }
    let mut ready = handle.readiness();
    let runner = tokio::spawn(lifecycle.run());
    barrier.all_arrived().await;
    ready.wait_for(|r| *r).await.expect("the lifecycle lives");
    let trigger = Instant::now();
    handle.stop();
    let last = woken.all().await;
    let outcome = runner.await.expect("no panic");
    assert_eq!(outcome.exit_code(), 0, "a clean stop");
    last.saturating_duration_since(trigger)
}

async fn token_run() -> Duration {
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let barrier = Barrier::new(LISTENERS);
    let woken = Woken::new(LISTENERS);
    for _ in 0..LISTENERS {
        tracker.spawn(listener(
            token.clone().cancelled_owned(),
            Arc::clone(&barrier),
            Arc::clone(&woken),
        ));
    }
    barrier.all_arrived().await;
    let trigger = Instant::now();
    token.cancel();
    let last = woken.all().await;
    tracker.close();
    tracker.wait().await;
    last.saturating_duration_since(trigger)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let runs = if benching { 300 } else { 3 };
    println!("{}", Summary::HEADER);
    let mut verdicts = Vec::new();
    for (flavor, runtime) in [
        ("2 workers", support::multi_thread()),
        ("current thread", support::current_thread()),
    ] {
        let mut medians = Vec::new();
        for (label, lifecycle) in [("lifecycle_hooks", true), ("cancellation_token", false)] {
            let one = || {
                runtime
                    .block_on(runtime.spawn(async move {
                        if lifecycle {
                            lifecycle_run().await
                        } else {
                            token_run().await
                        }
                    }))
                    .expect("no panic")
            };
            for _ in 0..runs / 10 {
                one();
            }
            let mut samples: Vec<Duration> = (0..runs).map(|_| one()).collect();
            let summary = Summary::of(&mut samples);
            println!("{}", summary.row(&format!("{label}, {flavor}")));
            medians.push(summary.median);
        }
        let verdict = if medians[0] <= 1_000.0 {
            "met"
        } else {
            "MISSED"
        };
        verdicts.push(format!(
            "{flavor}: lifecycle_hooks median {:.1} µs for {LISTENERS} listeners, target ≤ 1000 µs: {verdict}; {:.2}× the bare token",
            medians[0],
            medians[0] / medians[1]
        ));
    }
    for verdict in verdicts {
        println!("{verdict}");
    }
}
