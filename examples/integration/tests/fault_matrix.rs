//! The fault matrix cases that span crates: a job pool handler that blocks its thread past the
//! deadline, and the verifier the rolling-restart soak runs. Each name states the expected
//! outcome; `docs/reliability.md` maps every fault to the test that checks it.
//!
//! The `#[ignore]`d `soak_check` is the verifier `scripts/soak-restart` runs after its rolling
//! restarts; it reads its inputs from `SOAK_*` variables.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lifecycle_hooks::testing;
use lifecycle_hooks_jobs::{Job, JobContext, JobPool, MemorySource, RedisSource};
use lifecycle_hooks_test_support::kafka as kafka_support;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// A job pool handler that blocks its thread past the deadline.

/// A job handler that blocks its thread (so dropping its future cannot stop it) past the drain
/// deadline and the grace: the pool's exit hook hands the job back to the queue by itself, and
/// the run ends within the budget with status 2. Real time, two worker threads: the handler
/// holds one, the lifecycle runs on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_job_past_the_deadline_is_handed_back_by_the_exit_hook_exit_2() {
    const BLOCKED: Duration = Duration::from_secs(3);
    let memory = MemorySource::new(4);
    memory.push(Job::new("stubborn", "")).await.unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let ran = Arc::new(AtomicUsize::new(0));
    let pool = JobPool::builder(memory.clone()).concurrency(1).build({
        let ran = ran.clone();
        move |_job: Job, _ctx: JobContext| {
            let (started_tx, ran) = (started_tx.clone(), ran.clone());
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                started_tx.send(()).unwrap();
                // The fault under test: code that no cancellation can interrupt (its poll never
                // returns until it is done). `block_in_place` keeps the other tasks running.
                tokio::task::block_in_place(|| std::thread::sleep(BLOCKED));
                Ok::<(), std::io::Error>(())
            }
        }
    });
    let budget = Duration::from_millis(1500);
    let lifecycle = testing::builder()
        .budget(budget)
        .exit_reserve(Duration::from_millis(1000))
        .cancel_grace(Duration::from_millis(100))
        .hooks(pool.hooks())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    started.recv().await.unwrap();
    let stopped = Instant::now();
    handle.stop();
    let outcome = run.await.unwrap();
    let took = stopped.elapsed();

    assert_eq!(outcome.exit_code(), 2, "{outcome}");
    assert_eq!(outcome.outlived_grace(), 1, "{outcome}");
    assert!(took < budget + Duration::from_millis(500), "took {took:?}");
    assert!(took < BLOCKED, "the run did not wait for the blocked job");
    assert_eq!(outcome.handed_back(), ["stubborn"], "{outcome}");
    assert!(outcome.lost().is_empty(), "{:?}", outcome.lost());
    assert_eq!(memory.queued_ids(), ["stubborn"], "back in the queue once");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let counters = pool.counters();
    assert_eq!(
        (counters.requeued, counters.completed),
        (1, 0),
        "{counters:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The rolling-restart soak's verifier.

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run scripts/soak-restart)"))
}

/// Run by `scripts/soak-restart` after its restart cycles: every one of `SOAK_JOBS` job ids is
/// on the topic (read back to an end marker, so duplicates are counted), and the Redis queue is
/// empty. Prints `soak_check jobs=.. distinct=.. messages=.. duplicates=..`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by scripts/soak-restart against its own Redis and tansu"]
async fn soak_check() {
    let jobs: usize = env("SOAK_JOBS").parse().unwrap();
    let partitions: i32 = env("SOAK_PARTITIONS").parse().unwrap();
    let payloads =
        kafka_support::read_back(&env("SOAK_BROKERS"), &env("SOAK_TOPIC"), partitions).await;
    let ids: BTreeSet<&str> = payloads
        .iter()
        .map(|p| p.strip_suffix(" done").expect("a `<id> done` payload"))
        .collect();
    let expected: BTreeSet<String> = (0..jobs).map(|i| format!("job-{i}")).collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} job ids never reached the topic: {missing:?}",
        missing.len()
    );
    assert_eq!(ids.len(), jobs, "only the enqueued ids");
    let client = redis::Client::open(env("SOAK_REDIS")).unwrap();
    let source = RedisSource::builder(client, env("SOAK_QUEUE"))
        .connect()
        .await
        .unwrap();
    let queued = source.queued().await.unwrap();
    assert!(queued.is_empty(), "{} jobs still queued", queued.len());
    println!(
        "soak_check jobs={jobs} distinct={} messages={} duplicates={}",
        ids.len(),
        payloads.len(),
        payloads.len() - ids.len()
    );
}
