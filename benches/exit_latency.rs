//! Exit latency: from the last tracked work item ending to the first exit hook starting, on real
//! (not paused) runtimes. Each run builds a lifecycle with one exit hook that records when it
//! starts and one tracked task that waits for the `wait` phase, lets the runner park on the
//! tracker (1 ms), records when it ends and returns. The distribution over all runs is printed
//! in microseconds, for a 2-worker multi-thread runtime and a current-thread runtime.
//!
//! `cargo bench -p lifecycle-hooks --bench exit_latency`; figures in `BENCHMARKS.md`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lifecycle_hooks::{Phase, testing};
use parking_lot::Mutex;
use support::Summary;
use tokio::runtime::Runtime;

/// One run: the gap between the work item's end and the exit hook's start.
async fn one_run() -> Duration {
    let hook_started: Arc<Mutex<Option<Instant>>> = Arc::default();
    let work_ended: Arc<Mutex<Option<Instant>>> = Arc::default();
    let recorder = Arc::clone(&hook_started);
    let lifecycle = testing::builder()
        .on_exit("record", move |_ctx| {
            let recorder = Arc::clone(&recorder);
            async move {
                *recorder.lock() = Some(Instant::now());
            }
        })
        .build()
        .expect("a valid graph");
    let handle = lifecycle.handle();
    let mut phase = handle.watch_phase();
    let ended = Arc::clone(&work_ended);
    handle.spawn(async move {
        phase
            .wait_for(|p| *p == Phase::WAIT)
            .await
            .expect("the lifecycle lives");
        tokio::time::sleep(Duration::from_millis(1)).await;
        *ended.lock() = Some(Instant::now());
    });
    handle.stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "a clean stop");
    let started = hook_started.lock().expect("the exit hook ran");
    let ended = work_ended.lock().expect("the work ended");
    started.saturating_duration_since(ended)
}

fn measure(runtime: &Runtime, runs: usize) -> Summary {
    // Warm-up: the runtime's lazily allocated parts, the timer wheel, code paths.
    for _ in 0..50 {
        runtime
            .block_on(runtime.spawn(one_run()))
            .expect("no panic");
    }
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            runtime
                .block_on(runtime.spawn(one_run()))
                .expect("no panic")
        })
        .collect();
    Summary::of(&mut samples)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let runs = if benching { 2_000 } else { 20 };
    println!("{}", Summary::HEADER);
    let multi = measure(&support::multi_thread(), runs);
    println!("{}", multi.row("multi-thread, 2 workers"));
    let current = measure(&support::current_thread(), runs);
    println!("{}", current.row("current-thread"));
    let target = 50.0;
    for (label, summary) in [("multi-thread", &multi), ("current-thread", &current)] {
        let verdict = if summary.median <= target {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "{label}: median {:.1} µs, target ≤ {target} µs: {verdict}",
            summary.median
        );
    }
}
