//! Tracked work, side by side in one run: start N tasks that wait for the stop, trigger it, join
//! them all, for N = 10 000 and 100 000, with `lifecycle_hooks` (`handle.spawn` + `draining()` +
//! `stop()` + `run()`), the hand-written floor (tokio-util `TaskTracker` + `CancellationToken`)
//! and tokio-graceful-shutdown (N subsystems under a `Toplevel`). Every round builds its
//! contender afresh, on a 2-worker runtime, from inside a task.
//!
//! `cargo bench -p lifecycle-hooks --bench tracked_work`; figures in `BENCHMARKS.md`.

mod support;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use support::Contender;

fn tracked_work(c: &mut Criterion) {
    let runtime = support::multi_thread();
    let mut group = c.benchmark_group("tracked_work");
    group.sampling_mode(SamplingMode::Flat);
    // `cargo bench` passes `--bench`; under `cargo test --benches` each case runs once, as a
    // smoke test: small sizes keep that quick in a debug build.
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if benching { &[10_000, 100_000] } else { &[100] };
    for &n in sizes {
        group.throughput(Throughput::Elements(n as u64));
        group.warm_up_time(Duration::from_millis(500));
        if n >= 100_000 {
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(5));
        } else {
            group.sample_size(30);
            group.measurement_time(Duration::from_secs(4));
        }
        for contender in Contender::ALL {
            group.bench_with_input(BenchmarkId::new(contender.name(), n), &n, |b, &n| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        runtime
                            .block_on(runtime.spawn(contender.round(n)))
                            .expect("the round does not panic");
                    }
                    start.elapsed()
                });
            });
        }
    }
    group.finish();
}

/// Paired rounds: every round runs the three contenders one after the other (rotating which goes
/// first), so each ratio compares rounds that saw the same machine at nearly the same moment; the
/// medians of those per-round ratios are the figures the targets are checked against.
fn paired(runtime: &tokio::runtime::Runtime, n: usize, rounds: usize) {
    let mut times: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds + 2 {
        let mut these = [0.0; 3];
        for k in 0..3 {
            let at = (round + k) % 3;
            let contender = Contender::ALL[at];
            let start = Instant::now();
            runtime
                .block_on(runtime.spawn(contender.round(n)))
                .expect("the round does not panic");
            these[at] = start.elapsed().as_secs_f64() * 1e3;
        }
        // The first two rounds warm up.
        if round >= 2 {
            for (all, this) in times.iter_mut().zip(these) {
                all.push(this);
            }
        }
    }
    let [lifecycle, tracker, graceful] = &times;
    let ratio =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
    let over_floor = support::Spread::of(ratio(lifecycle, tracker));
    let peer_over_us = support::Spread::of(ratio(graceful, lifecycle));
    println!(
        "| {n} | {rounds} | {} | {} | {} | {} | {} |",
        support::Spread::of(lifecycle.clone()).show(2, " ms"),
        support::Spread::of(tracker.clone()).show(2, " ms"),
        support::Spread::of(graceful.clone()).show(1, " ms"),
        over_floor.show(2, "×"),
        peer_over_us.show(1, "×"),
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    tracked_work(&mut criterion);
    let benching = std::env::args().any(|a| a == "--bench");
    let runtime = support::multi_thread();
    println!();
    println!("paired rounds (median [p10 – p90]):");
    println!(
        "| N | rounds | lifecycle_hooks | task_tracker | tokio_graceful_shutdown | lifecycle_hooks / task_tracker | tokio_graceful_shutdown / lifecycle_hooks |"
    );
    println!("|---|---|---|---|---|---|---|");
    if benching {
        paired(&runtime, 10_000, 40);
        paired(&runtime, 100_000, 8);
    } else {
        paired(&runtime, 100, 3);
    }
    criterion.final_summary();
}
