//! Memory per tracked task in the independent harness shape of issue 18: the rounds of
//! `harness_time`, counted by `allocation-counter`'s allocator (allocations per task, and the
//! peak of live heap bytes during a round divided by N). Its counts are per thread, so the
//! rounds run twice:
//!
//! - on the 2-worker runtime, driven from `block_on`: the driver's thread spawns every task of
//!   `task_tracker` and `lifecycle_hooks`, so every task cell is counted there, and none is freed
//!   before the stop (every task waits for it). What the workers allocate is not seen:
//!   `lifecycle_hooks`' waker entries, and the subsystems tokio-graceful-shutdown starts from a
//!   task, so it is left out of this table;
//! - on a current-thread runtime, where one thread does everything, so every allocation of the
//!   round is counted, for all three libraries.
//!
//! Three runs each, after one warm-up round.
//!
//! `cargo bench -p lifecycle-hooks --bench harness_memory`; figures in `BENCHMARKS.md`.

mod support;

use support::harness::Lib;

fn table(runtime: &tokio::runtime::Runtime, libs: &[Lib], sizes: &[usize], what: &str) {
    println!(
        "| runtime | library | N | allocations / task | peak live bytes / task (3 runs) | × task_tracker |"
    );
    println!("|---|---|---|---|---|---|");
    for &n in sizes {
        let mut floor = None;
        for &lib in libs {
            runtime.block_on(lib.round(n, || {}));
            let runs: Vec<allocation_counter::AllocationInfo> = (0..3)
                .map(|_| allocation_counter::measure(|| runtime.block_on(lib.round(n, || {}))))
                .collect();
            let count = runs[0].count_total as f64 / n as f64;
            let mut peaks: Vec<f64> = runs.iter().map(|r| r.bytes_max as f64 / n as f64).collect();
            let shown = peaks
                .iter()
                .map(|p| format!("{p:.0}"))
                .collect::<Vec<_>>()
                .join(" / ");
            peaks.sort_by(f64::total_cmp);
            let median = peaks[1];
            let floor = *floor.get_or_insert(median);
            println!(
                "| {what} | {} | {n} | {count:.2} | {shown} | {:.2}× |",
                lib.name(),
                median / floor
            );
        }
    }
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --benches` a small case is a smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if benching { &[10_000, 100_000] } else { &[100] };
    table(
        &support::multi_thread(),
        &[Lib::TaskTracker, Lib::LifecycleHooks],
        sizes,
        "2 workers, driver thread",
    );
    table(
        &support::current_thread(),
        &Lib::ALL,
        sizes,
        "current thread, all",
    );
}
