//! Tracked work in the independent harness shape of issue 18: the three libraries interleaved
//! in every iteration (the first one rotating), each round driven from `Runtime::block_on` on a
//! 2-worker runtime, medians of 21 iterations, N = 10 000 and 100 000. Prints per library the
//! median of whole rounds and of their spawn half (until all N tasks wait), and the ratios.
//!
//! `cargo bench -p lifecycle-hooks --bench harness_time`; figures in `BENCHMARKS.md`.
//! `HARNESS_SIZES=10,1000` replaces the sizes (10 000 and 100 000). For profiles, `HARNESS_ONLY=<lib> HARNESS_N=<n> HARNESS_ITERS=<k>` runs `k` rounds of one
//! library with no warm-up and no table (`lib` one of `task_tracker`, `lifecycle_hooks`,
//! `tokio_graceful_shutdown`).

mod support;

use std::time::Instant;

use support::harness::{Lib, env_or, load};

/// Median of a sample.
fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Milliseconds of one round and of its spawn half.
fn timed(runtime: &tokio::runtime::Runtime, lib: Lib, n: usize) -> (f64, f64) {
    let start = Instant::now();
    let mut spawned = None;
    runtime.block_on(lib.round(n, || spawned = Some(start.elapsed())));
    let total = start.elapsed().as_secs_f64() * 1e3;
    let spawned = spawned.expect("the round reports its spawn half");
    (total, spawned.as_secs_f64() * 1e3)
}

fn main() {
    let runtime = support::multi_thread();
    if let Ok(only) = std::env::var("HARNESS_ONLY") {
        let lib = Lib::by_name(&only).expect("HARNESS_ONLY names a library");
        let n = env_or("HARNESS_N", 10_000);
        for _ in 0..env_or("HARNESS_ITERS", 1) {
            runtime.block_on(lib.round(n, || {}));
        }
        return;
    }
    // `cargo bench` passes `--bench`; under `cargo test --benches` run one small iteration as a
    // smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let (sizes, iterations, warm_up): (Vec<usize>, usize, usize) = if benching {
        // `HARNESS_SIZES=10,1000` measures other sizes (the fixed cost of a round, say).
        let sizes = std::env::var("HARNESS_SIZES").map_or_else(
            |_| vec![10_000, 100_000],
            |sizes| {
                (sizes.split(',').map(|n| {
                    n.trim()
                        .parse()
                        .expect("HARNESS_SIZES: sizes, comma-separated")
                }))
                .collect()
            },
        );
        (sizes, env_or("HARNESS_ITERS", 21), 2)
    } else {
        (vec![100], 1, 0)
    };
    println!("load average before: {}", load());
    println!(
        "| N | iterations | task_tracker | lifecycle_hooks | tokio_graceful_shutdown | lifecycle_hooks / task_tracker | median of per-iteration ratios | spawn half: task_tracker | lifecycle_hooks | ratio | tokio_graceful_shutdown / lifecycle_hooks |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        let mut total: [Vec<f64>; 3] = Default::default();
        let mut spawn: [Vec<f64>; 3] = Default::default();
        for iteration in 0..warm_up + iterations {
            for k in 0..Lib::ALL.len() {
                let at = (iteration + k) % Lib::ALL.len();
                let (t, s) = timed(&runtime, Lib::ALL[at], n);
                if iteration >= warm_up {
                    total[at].push(t);
                    spawn[at].push(s);
                }
            }
        }
        let [tt, lh, gs] = &total;
        let per_iteration: Vec<f64> = lh.iter().zip(tt).map(|(l, t)| l / t).collect();
        let (tt_m, lh_m, gs_m) = (median(tt), median(lh), median(gs));
        let (tt_s, lh_s) = (median(&spawn[0]), median(&spawn[1]));
        println!(
            "| {n} | {iterations} | {tt_m:.2} ms | {lh_m:.2} ms | {gs_m:.1} ms | **{:.2}×** | {:.2}× | {tt_s:.2} ms | {lh_s:.2} ms | {:.2}× | {:.1}× |",
            lh_m / tt_m,
            median(&per_iteration),
            lh_s / tt_s,
            gs_m / lh_m,
        );
    }
    println!("load average after: {}", load());
}
