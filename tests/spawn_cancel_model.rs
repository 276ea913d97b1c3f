//! Exhaustive interleavings of the one piece of hand-written synchronization in the core: how
//! `LifecycleHandle::spawn` races tracked work against the cancellation at the drain deadline.
//!
//! `spawn` takes a `Notified` from the cancel `Notify` first and reads the `cancel_fired` flag
//! second; the canceller sets the flag first and calls `notify_waiters` second. tokio completes a
//! `Notified` created before a `notify_waiters` call on its next poll, registered or not. The
//! model explores every interleaving of the two sides and finds no lost wake-up; the same model
//! with the spawn side's two steps swapped must deadlock, which shows the check has teeth. A
//! second test runs the real code with spawns racing a real cancellation on two threads.

#[allow(dead_code)]
#[path = "../adapters/kafka/tests/interleavings/mod.rs"]
mod interleavings;

use std::time::Duration;

use interleavings::{Model, explore};
use lifecycle_hooks::testing;

/// Where the spawned task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Task {
    /// About to take its `Notified` (epoch) or read the flag, by `order`.
    Start,
    /// Took one of the two; about to take the other.
    Half,
    /// Ready to be polled.
    Spawned,
    /// Polled, pending, registered as a waiter.
    Waiting,
    /// Ended as cancelled.
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SpawnRace {
    /// The real order (`Notified` first) or the broken one (flag first).
    notified_first: bool,
    task: Task,
    /// The `notify_waiters` call count the task's `Notified` saw when created.
    epoch: Option<u32>,
    /// What the task read from the flag.
    fired_seen: Option<bool>,
    /// Canceller: 0 = about to set the flag, 1 = about to notify, 2 = done.
    canceller: u8,
    flag: bool,
    notify_calls: u32,
    /// Whether a `notify_waiters` woke the registered waiter.
    woken: bool,
}

impl SpawnRace {
    fn new(notified_first: bool) -> Self {
        SpawnRace {
            notified_first,
            task: Task::Start,
            epoch: None,
            fired_seen: None,
            canceller: 0,
            flag: false,
            notify_calls: 0,
            woken: false,
        }
    }

    fn take_notified(&mut self) {
        self.epoch = Some(self.notify_calls);
    }

    fn read_flag(&mut self) {
        self.fired_seen = Some(self.flag);
    }
}

impl Model for SpawnRace {
    fn threads(&self) -> usize {
        2
    }

    fn done(&self, t: usize) -> bool {
        match t {
            0 => self.task == Task::Cancelled,
            _ => self.canceller == 2,
        }
    }

    fn can_step(&self, t: usize) -> bool {
        match t {
            0 => self.task != Task::Waiting || self.woken,
            _ => true,
        }
    }

    fn step(&mut self, t: usize) {
        if t == 1 {
            match self.canceller {
                0 => self.flag = true,
                _ => {
                    self.notify_calls += 1;
                    if self.task == Task::Waiting {
                        self.woken = true;
                    }
                }
            }
            self.canceller += 1;
            return;
        }
        self.task = match self.task {
            Task::Start => {
                if self.notified_first {
                    self.take_notified()
                } else {
                    self.read_flag()
                }
                Task::Half
            }
            Task::Half => {
                if self.notified_first {
                    self.read_flag()
                } else {
                    self.take_notified()
                }
                Task::Spawned
            }
            // The first poll: the work never finishes; the flag seen at spawn, or a
            // `notify_waiters` since the `Notified` was taken, ends it; otherwise it waits.
            Task::Spawned => {
                if self.fired_seen == Some(true) || Some(self.notify_calls) != self.epoch {
                    Task::Cancelled
                } else {
                    Task::Waiting
                }
            }
            Task::Waiting => Task::Cancelled,
            Task::Cancelled => Task::Cancelled,
        };
    }
}

#[test]
fn spawn_never_misses_the_cancellation_in_any_interleaving() {
    let explored =
        explore(SpawnRace::new(true), |_| Ok(()), |_| Ok(())).unwrap_or_else(|e| panic!("{e}"));
    assert!(explored.finals >= 1 && explored.states > 10, "{explored:?}");
}

#[test]
fn reading_the_flag_before_taking_the_notified_would_lose_the_wake_up() {
    let err = explore(SpawnRace::new(false), |_| Ok(()), |_| Ok(())).unwrap_err();
    assert!(err.contains("deadlock"), "{err}");
}

#[test]
fn real_spawns_racing_a_real_cancellation_all_end() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for _ in 0..200 {
            let lifecycle = testing::builder().build().unwrap();
            let handle = lifecycle.handle();
            // One thread spawns while another cancels (dropping an unrun lifecycle cancels).
            let spawner = tokio::spawn({
                let handle = handle.clone();
                async move {
                    (0..200)
                        .map(|_| handle.spawn(std::future::pending::<()>()))
                        .collect::<Vec<_>>()
                }
            });
            let canceller = tokio::spawn(async move { drop(lifecycle) });
            canceller.await.unwrap();
            for join in spawner.await.unwrap() {
                // A bound for failure only: each ends as soon as it sees the cancellation.
                let ended = tokio::time::timeout(Duration::from_secs(30), join).await;
                assert_eq!(ended.expect("no lost wake-up").unwrap(), None);
            }
        }
    });
}
