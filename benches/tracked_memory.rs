//! Memory per tracked task, side by side in one run: the same rounds as `tracked_work` (start N
//! tasks that wait for the stop, trigger, join) for `lifecycle_hooks`, the hand-written
//! `TaskTracker` + `CancellationToken` floor and tokio-graceful-shutdown, counted by
//! `allocation-counter`'s allocator: allocations per task, and the peak of live heap bytes per
//! task. The round runs on a current-thread runtime inside `measure`, whose counts are per
//! thread, so every allocation of the round is counted. The counts are deterministic; each
//! case still runs three times, and the table shows the three peaks.
//!
//! `cargo bench -p lifecycle-hooks --bench tracked_memory`; figures in `BENCHMARKS.md`.

mod support;

use support::Contender;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then run a small case only,
    // as a smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if benching { &[10_000, 100_000] } else { &[100] };
    println!(
        "| contender | N | allocations / task | peak live bytes / task (3 runs) | × task_tracker (bytes) |"
    );
    println!("|---|---|---|---|---|");
    for &n in sizes {
        let mut floor = None;
        let mut rows = Vec::new();
        for contender in Contender::ALL {
            let runtime = support::current_thread();
            // One round outside the count: the runtime's own lazily allocated parts.
            runtime.block_on(contender.round(n));
            let runs: Vec<allocation_counter::AllocationInfo> = (0..3)
                .map(|_| allocation_counter::measure(|| runtime.block_on(contender.round(n))))
                .collect();
            let per_task = |bytes: u64| bytes as f64 / n as f64;
            let count = runs[0].count_total as f64 / n as f64;
            let peaks: Vec<f64> = runs.iter().map(|r| per_task(r.bytes_max)).collect();
            let mut sorted = peaks.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[1];
            if contender == Contender::TaskTracker {
                floor = Some(median);
            }
            rows.push((contender, count, peaks, median));
        }
        let floor = floor.expect("the floor ran");
        for (contender, count, peaks, median) in rows {
            println!(
                "| {} | {n} | {count:.2} | {} | {:.2}× |",
                contender.name(),
                peaks
                    .iter()
                    .map(|p| format!("{p:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                median / floor
            );
        }
    }
}
