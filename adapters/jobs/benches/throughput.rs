//! No-op jobs per second at concurrency 64, on a 2-worker runtime, over the same pre-filled
//! in-memory source, in the same run:
//!
//! - `job_pool`: the pool bound to a lifecycle (work guards, spans, panic isolation, counters,
//!   cancellation);
//! - `hand_written_semaphore_spawn`: the loop a user would write by hand — a `Semaphore` of 64
//!   permits, fetch, `tokio::spawn` the job, ack, release;
//! - `hand_written_workers`: 64 hand-written tasks that each fetch, run and ack — the pool's own
//!   shape without its lifecycle machinery, to show what that machinery costs.
//!
//! `cargo bench -p lifecycle-hooks-jobs --bench throughput`; figures in `BENCHMARKS.md`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lifecycle_hooks::testing;
use lifecycle_hooks_jobs::{Job, JobContext, JobPool, JobSource, MemorySource};
use tokio::sync::{Notify, Semaphore};

const CONCURRENCY: usize = 64;

/// Counts finished jobs down and wakes the benchmark at zero. Both contenders use it the same way.
struct Countdown {
    left: AtomicU64,
    zero: Notify,
}

impl Countdown {
    fn new(n: u64) -> Arc<Countdown> {
        Arc::new(Countdown {
            left: AtomicU64::new(n),
            zero: Notify::new(),
        })
    }

    fn tick(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.zero.notify_one();
        }
    }
}

/// The job both contenders run: nothing, then the countdown.
async fn noop(countdown: Arc<Countdown>) -> Result<(), Infallible> {
    countdown.tick();
    Ok(())
}

fn filled(n: u64) -> MemorySource {
    let source = MemorySource::new(n.max(1) as usize);
    for i in 0..n {
        source
            .try_push(Job::new(i.to_string(), ""))
            .expect("sized to fit");
    }
    source
}

async fn pool(n: u64) -> Duration {
    let source = filled(n);
    let countdown = Countdown::new(n);
    let pool = JobPool::builder(source).concurrency(CONCURRENCY).build({
        let countdown = Arc::clone(&countdown);
        move |_job: Job, _ctx: JobContext| noop(Arc::clone(&countdown))
    });
    let lifecycle = testing::builder().hooks(pool.hooks()).build().unwrap();
    let handle = lifecycle.handle();
    let start = Instant::now();
    let run = tokio::spawn(lifecycle.run());
    countdown.zero.notified().await;
    let elapsed = start.elapsed();
    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(pool.counters().completed, n);
    elapsed
}

async fn hand_written(n: u64) -> Duration {
    let source = filled(n);
    let countdown = Countdown::new(n);
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let start = Instant::now();
    tokio::spawn({
        let countdown = Arc::clone(&countdown);
        async move {
            for _ in 0..n {
                let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
                let Ok(job) = source.fetch().await;
                let job = job.expect("filled with n jobs");
                let (source, countdown) = (source.clone(), Arc::clone(&countdown));
                tokio::spawn(async move {
                    let Ok(()) = noop(countdown).await;
                    let Ok(()) = source.ack(&job).await;
                    drop(permit);
                });
            }
        }
    });
    countdown.zero.notified().await;
    start.elapsed()
}

async fn hand_written_workers(n: u64) -> Duration {
    let source = filled(n);
    let countdown = Countdown::new(n);
    let start = Instant::now();
    for _ in 0..CONCURRENCY {
        let (source, countdown) = (source.clone(), Arc::clone(&countdown));
        tokio::spawn(async move {
            while let Ok(Some(job)) = source.fetch().await {
                let Ok(()) = noop(Arc::clone(&countdown)).await;
                let Ok(()) = source.ack(&job).await;
            }
        });
    }
    countdown.zero.notified().await;
    let elapsed = start.elapsed();
    // Lets the workers, waiting for more, end.
    let Ok(_) = source.close().await;
    elapsed
}

fn throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("noop_jobs_concurrency_64");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("job_pool", |b| {
        b.iter_custom(|jobs| runtime.block_on(pool(jobs)))
    });
    group.bench_function("hand_written_semaphore_spawn", |b| {
        b.iter_custom(|jobs| runtime.block_on(hand_written(jobs)))
    });
    group.bench_function("hand_written_workers", |b| {
        b.iter_custom(|jobs| runtime.block_on(hand_written_workers(jobs)))
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
