//! The in-memory source on its own: wake-ups of waiting fetches, under paused time and on real
//! threads.

use std::collections::BTreeSet;
use std::time::Duration;

use lifecycle_hooks_jobs::{Job, JobSource, MemorySource};

const FETCHERS: usize = 3;

/// Starts `FETCHERS` fetches on their own tasks and waits until every one is parked in the
/// source (registered for a wake-up).
async fn parked_fetchers(source: &MemorySource) -> Vec<tokio::task::JoinHandle<Option<Job>>> {
    let fetches: Vec<_> = (0..FETCHERS)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move { source.fetch().await.unwrap() })
        })
        .collect();
    // A bounded spin on the source's own count (no sleep): each fetch counts itself only once
    // it is registered for a wake-up.
    while source.waiting_fetches() < FETCHERS {
        tokio::task::yield_now().await;
    }
    fetches
}

/// Hands back `FETCHERS` jobs at once and checks that every parked fetch gets one within
/// `patience`.
async fn requeue_wakes_every_waiting_fetch(patience: Duration) {
    let source = MemorySource::new(10);
    let fetches = parked_fetchers(&source).await;
    let jobs: Vec<Job> = (0..FETCHERS)
        .map(|n| Job::new(format!("back-{n}"), ""))
        .collect();
    source.requeue(jobs).await.unwrap();
    let mut got = BTreeSet::new();
    for fetch in fetches {
        let job = tokio::time::timeout(patience, fetch)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "a fetch still waits with jobs queued: {:?}, {} waiting",
                    source.queued_ids(),
                    source.waiting_fetches()
                )
            })
            .unwrap()
            .expect("a job, not a closed source");
        got.insert(job.id().to_owned());
    }
    assert_eq!(got.len(), FETCHERS, "each fetch got its own job: {got:?}");
    assert!(source.is_empty());
    assert_eq!(source.waiting_fetches(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_requeue_of_n_jobs_wakes_n_waiting_fetches_in_paused_time() {
    // An hour of paused time: the runtime is idle long before, so only a lost wake-up is slow.
    requeue_wakes_every_waiting_fetch(Duration::from_secs(3600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requeue_of_n_jobs_wakes_n_waiting_fetches_on_real_threads() {
    // Repeated: the fetches run on other OS threads, woken while this one requeues.
    for _ in 0..200 {
        requeue_wakes_every_waiting_fetch(Duration::from_secs(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_fetch_leaves_no_waiter_counted_and_passes_its_wake_up_on() {
    let source = MemorySource::new(10);
    let mut fetches = parked_fetchers(&source).await;
    let dropped = fetches.pop().unwrap();
    dropped.abort();
    let _ = dropped.await;
    assert_eq!(source.waiting_fetches(), FETCHERS - 1);
    source
        .requeue(vec![Job::new("a", ""), Job::new("b", "")])
        .await
        .unwrap();
    for fetch in fetches {
        let job = tokio::time::timeout(Duration::from_secs(3600), fetch)
            .await
            .expect("woken")
            .unwrap();
        assert!(job.is_some());
    }
}
