//! Hooks through the whole graph: 1 000, 10 000 and 100 000 trivial hooks, a quarter each in
//! `startup`, `stop_intake`, `shutdown` and `exit`, built (`build()`: validation, ordering, plan)
//! and run (`run()` after `stop()`: every hook run, timed, reported). Two figures per size:
//! `build_and_run` (the target: 10 000 hooks ≤ 10 ms, linear growth) and `run` alone. The hook
//! specs are made outside the timed part. 2-worker runtime, from inside a task.
//!
//! `cargo bench -p lifecycle-hooks --bench hooks`; figures in `BENCHMARKS.md`.

mod support;

use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use lifecycle_hooks::{Builder, HookSpec, Phase, testing};

/// A builder with `n` trivial hooks spread over the four phases that take hooks by default.
fn with_hooks(n: usize) -> Builder {
    let phases = [
        Phase::STARTUP,
        Phase::STOP_INTAKE,
        Phase::SHUTDOWN,
        Phase::EXIT,
    ];
    testing::builder().hooks(
        (0..n).map(|i| HookSpec::new(phases[i % 4].clone(), format!("hook{i}"), |_ctx| async {})),
    )
}

fn hooks(c: &mut Criterion) {
    let runtime = support::multi_thread();
    let mut group = c.benchmark_group("hooks");
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    // `cargo bench` passes `--bench`; under `cargo test --benches` each case runs once, as a
    // smoke test: small sizes keep that quick in a debug build.
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if benching {
        &[1_000, 10_000, 100_000]
    } else {
        &[100]
    };
    for &n in sizes {
        group.throughput(Throughput::Elements(n as u64));
        group.sample_size(if n >= 100_000 { 10 } else { 20 });
        group.measurement_time(Duration::from_secs(if n >= 100_000 { 4 } else { 2 }));
        for (label, include_build) in [("build_and_run", true), ("run", false)] {
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, &n| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let builder = with_hooks(n);
                        let (elapsed, outcome) = runtime
                            .block_on(runtime.spawn(async move {
                                let start = Instant::now();
                                let lifecycle = builder.build().expect("a valid graph");
                                let built = Instant::now();
                                lifecycle.handle().stop();
                                let outcome = lifecycle.run().await;
                                let end = Instant::now();
                                assert_eq!(outcome.exit_code(), 0, "every hook ok");
                                assert_eq!(outcome.hooks().len(), n, "every hook reported");
                                (end - if include_build { start } else { built }, outcome)
                            }))
                            .expect("no panic");
                        total += elapsed;
                        // Dropping the outcome (n reports) is not part of the figure.
                        drop(outcome);
                    }
                    total
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hooks);
criterion_main!(benches);
