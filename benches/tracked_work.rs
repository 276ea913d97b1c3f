//! Tracked work, side by side in one run: start N tasks that wait for the stop, trigger it, join
//! them all, for N = 10 000 and 100 000, with `lifecycle_hooks` (`handle.spawn` + `draining()` +
//! `stop()` + `run()`), the hand-written floor (tokio-util `TaskTracker` + `CancellationToken`)
//! and tokio-graceful-shutdown (N subsystems under a `Toplevel`). Every round builds its
//! contender afresh, on a 2-worker runtime, from inside a task.
//!
//! `cargo bench -p lifecycle-hooks --bench tracked_work`; figures in `BENCHMARKS.md`.

mod support;

use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
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
        if n >= 100_000 {
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(4));
        } else {
            group.sample_size(20);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(3));
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

criterion_group!(benches, tracked_work);
criterion_main!(benches);
