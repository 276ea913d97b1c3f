//! Work sources (work counted by plain guards and named only when a snapshot asks), and every
//! way tracked work leaves the count.

mod support;

use std::sync::Arc;
use std::time::Duration;

use lifecycle_hooks::{Phase, WorkSource, testing};
use parking_lot::Mutex;
use support::two_workers;
use tokio::time::Instant;

/// A source listing what the test puts in it.
#[derive(Default)]
struct Listed(Mutex<Vec<(String, Instant)>>);

impl Listed {
    fn begin(&self, name: &str) {
        self.0.lock().push((name.to_owned(), Instant::now()));
    }
}

impl WorkSource for Listed {
    fn for_each(&self, item: &mut dyn FnMut(String, Instant)) {
        for (name, began) in self.0.lock().iter() {
            item(name.clone(), *began);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_sources_items_are_listed_by_age_with_named_work_and_the_phase_they_began_in() {
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(10))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let listed = Arc::new(Listed::default());
    handle.work_source(&listed);
    let run = tokio::spawn(lifecycle.run());
    handle.readiness().wait_for(|ready| *ready).await.unwrap();

    listed.begin("source: oldest");
    let _first = handle.work_guard();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _named = handle.work_guard_named("named: middle");
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.stop();
    handle.draining().await;
    // The phases after the drain follow at once (no hooks): whichever it is now.
    let phase_now = handle.phase();
    assert_ne!(phase_now, Phase::RUNNING);
    listed.begin("source: during the drain");
    let _second = handle.work_guard();

    let work = handle.snapshot().work;
    let names: Vec<&str> = work.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "source: oldest",
            "named: middle",
            "source: during the drain"
        ]
    );
    assert_eq!(work[0].phase, Phase::RUNNING);
    assert!(work[0].age >= Duration::from_secs(2), "{:?}", work[0].age);
    assert!(work[0].age > work[1].age && work[1].age > work[2].age);
    assert_eq!(work[2].phase, phase_now);

    // Still running at the drain deadline: the source's items are in the stuck-work report.
    let outcome = run.await.unwrap();
    let stuck: Vec<&str> = outcome
        .stuck_work()
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(
        stuck,
        [
            "source: oldest",
            "named: middle",
            "source: during the drain"
        ]
    );
    assert_eq!(outcome.exit_code(), 2, "forced: work outlived the drain");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_source_is_no_longer_listed() {
    let lifecycle = testing::builder().build().unwrap();
    let handle = lifecycle.handle();
    let listed = Arc::new(Listed::default());
    listed.begin("gone with its source");
    handle.work_source(&listed);
    assert_eq!(handle.snapshot().work.len(), 1);
    drop(listed);
    assert!(handle.snapshot().work.is_empty());
    // Registering another forgets the dropped one.
    let other = Arc::new(Listed::default());
    other.begin("the other");
    handle.work_source(&other);
    let work = handle.snapshot().work;
    assert_eq!(work.len(), 1);
    assert_eq!(work[0].name, "the other");
    assert_eq!(work[0].phase, Phase::STARTUP, "began before the run");
}

/// Snapshots from other threads while the source's own lock is busy with new items: no
/// deadlock (the lifecycle holds none of its locks while the source runs).
#[test]
fn snapshots_from_other_threads_race_the_source_and_the_phases() {
    two_workers().block_on(async {
        let lifecycle = testing::builder().build().unwrap();
        let handle = lifecycle.handle();
        let listed = Arc::new(Listed::default());
        handle.work_source(&listed);
        let run = tokio::spawn(lifecycle.run());
        let threads: Vec<_> = (0..3)
            .map(|k| {
                let handle = handle.clone();
                let listed = Arc::clone(&listed);
                std::thread::spawn(move || {
                    let mut seen = 0;
                    for i in 0..2_000 {
                        if k == 0 {
                            listed.begin(&format!("item {i}"));
                        }
                        if k == 1 && i == 1_000 {
                            // The phases move on while the snapshots go on.
                            handle.stop();
                        }
                        seen = seen.max(handle.snapshot().work.len());
                    }
                    seen
                })
            })
            .collect();
        let seen: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // The thread that adds the items sees each one in its own next snapshot.
        assert_eq!(seen[0], 2_000);
        assert_eq!(run.await.unwrap().exit_code(), 0);
        let work = handle.snapshot().work;
        assert_eq!(work.len(), 2_000);
        // Oldest first, each with the phase it began in: the phases never go backwards.
        let order = |phase: &Phase| Phase::BUILTIN.iter().position(|p| p == phase).unwrap();
        let phases: Vec<usize> = work.iter().map(|w| order(&w.phase)).collect();
        assert!(phases.windows(2).all(|w| w[0] <= w[1]), "{phases:?}");
    });
}

/// Every way tracked work can end leaves the count: an aborted spawned task, a `track`ed future
/// dropped unpolled, a guard dropped on another OS thread, tasks spawned from other threads
/// through the runtime's handle. The stop then ends clean, not forced.
#[test]
fn every_way_work_ends_leaves_the_count_and_the_stop_is_clean() {
    two_workers().block_on(async {
        let lifecycle = testing::builder()
            .budget(Duration::from_secs(30))
            .build()
            .unwrap();
        let handle = lifecycle.handle();
        let aborted = handle.spawn(std::future::pending::<()>());
        let unpolled = handle.track(std::future::pending::<()>());
        let guard = handle.work_guard();
        let rt = tokio::runtime::Handle::current();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let handle = handle.clone();
                let rt = rt.clone();
                std::thread::spawn(move || {
                    let _entered = rt.enter();
                    (0..250)
                        .map(|i| handle.spawn(async move { i }))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut joins = Vec::new();
        for thread in threads {
            joins.extend(thread.join().unwrap());
        }
        assert!(handle.in_flight() >= 3, "{}", handle.in_flight());
        let mut sum = 0;
        for join in joins {
            sum += join
                .await
                .unwrap()
                .expect("not cancelled: it finished before any stop");
        }
        assert_eq!(sum, 4 * (0..250).sum::<i32>());
        assert_eq!(
            handle.in_flight(),
            3,
            "the thousand spawned tasks have left the count"
        );
        aborted.abort();
        assert!(aborted.await.unwrap_err().is_cancelled());
        drop(unpolled);
        std::thread::spawn(move || drop(guard)).join().unwrap();
        assert_eq!(handle.in_flight(), 0);
        handle.stop();
        let outcome = lifecycle.run().await;
        assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
        assert!(!outcome.forced());
    });
}

/// A source that panics while listing: the snapshot and the stop go on, with what it listed
/// before the panic and everything else.
#[tokio::test(start_paused = true)]
async fn a_source_that_panics_does_not_take_down_the_snapshot_or_the_stop() {
    struct Faulty;
    impl WorkSource for Faulty {
        fn for_each(&self, item: &mut dyn FnMut(String, Instant)) {
            item("listed before the panic".to_owned(), Instant::now());
            panic!("a bug in an adapter");
        }
    }
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(5))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let faulty = Arc::new(Faulty);
    handle.work_source(&faulty);
    let _stuck = handle.work_guard_named("named and stuck");
    let names: Vec<String> = handle.snapshot().work.into_iter().map(|w| w.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"listed before the panic".to_owned()));
    handle.stop();
    // The runner takes the stuck-work report at the drain deadline through the same path.
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 2, "forced, not crashed: {outcome:?}");
    assert_eq!(outcome.stuck_work().len(), 2);
}

/// `spawn` outside a runtime panics, as `tokio::spawn` does, and leaves nothing counted.
#[test]
fn a_spawn_outside_a_runtime_panics_and_counts_nothing() {
    let lifecycle = testing::builder().build().unwrap();
    let handle = lifecycle.handle();
    let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle.spawn(async {});
    }));
    assert!(spawned.is_err(), "no runtime, no task");
    assert_eq!(
        handle.in_flight(),
        0,
        "the count taken for it was given back"
    );
}
