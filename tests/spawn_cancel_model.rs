//! Exhaustive interleavings of the one piece of hand-written synchronization in the core: how
//! `LifecycleHandle::spawn` races tracked work against the cancellation at the drain deadline.
//!
//! A spawned task whose first poll returns `Pending` takes its shard's lock and, unless the shard
//! is closed, registers its waker there (if closed, it ends at once); on later polls it reads the
//! `fired` flag. The canceller sets `fired` first, then closes each shard under its lock and
//! wakes the wakers it held. The model explores every interleaving of two tasks (on one shard or
//! on two) and the canceller and finds no lost wake-up; two broken variants must deadlock, which
//! shows the check has teeth: checking `closed` outside the lock before registering, and setting
//! the flag after closing the shards.
//!
//! A task may also wait on one of its lifecycle's milestones (a token): then its first poll
//! registers on the token, not in a shard, and it only reads `fired` (it is *covered*). The
//! canceller cancels the token first. The model mixes covered and uncovered tasks, and a covered
//! task, once its milestone is reached, waits on something else and goes the shard's way. The
//! broken variant, a canceller that leaves the token alone, must deadlock. The last tests run the
//! real code with spawns racing a real cancellation on separate OS threads of a multi-thread
//! runtime, with tasks of both kinds.

#[allow(dead_code)]
#[path = "../adapters/kafka/tests/interleavings/mod.rs"]
mod interleavings;

mod support;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use interleavings::{Model, explore};
use lifecycle_hooks::testing;
use support::two_workers;

/// Spawns the `i`th task of a race: even ones wait on something that never ends; odd ones wait
/// on their lifecycle's milestone first (covered: no waker in a shard), then on something that
/// never ends. Either way only the cancellation ends them.
fn spawn_racer(
    handle: &lifecycle_hooks::LifecycleHandle,
    i: usize,
) -> tokio::task::JoinHandle<Option<()>> {
    if i % 2 == 0 {
        handle.spawn(std::future::pending::<()>())
    } else {
        let h = handle.clone();
        handle.spawn(async move {
            h.draining().await;
            std::future::pending::<()>().await
        })
    }
}

/// Which protocol the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Variant {
    /// The real one.
    Real,
    /// Broken: the task reads `closed` without the lock, then registers in a second step.
    CheckOutsideTheLock,
    /// Broken: the canceller closes the shards (waking their tasks) before it sets the flag.
    FlagAfterClosing,
    /// Broken: the canceller never cancels the milestones' token.
    TokenNotCancelled,
}

/// Where a spawned task is in its life. Its work never finishes; only the cancellation ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Task {
    /// About to be polled for the first time (the work returns `Pending`).
    Spawned,
    /// `CheckOutsideTheLock` only: saw its shard open, about to register.
    SawOpen,
    /// Covered: registered on the token (its milestone is pending), about to read the flag.
    OnToken,
    /// Pending; runs again only when woken.
    Waiting,
    /// Ended as cancelled: its join handle yields `None`.
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SpawnRace {
    variant: Variant,
    tasks: Vec<Task>,
    /// The shard each task registers in (the shard of the thread that first polls it).
    shard_of: Vec<usize>,
    /// Whether each task's waker is in its shard.
    registered: Vec<bool>,
    /// Whether each task was woken and not yet polled since.
    woken: Vec<bool>,
    /// Whether each task waits on the milestone (until the milestone is reached).
    covered: Vec<bool>,
    /// Whether each task has taken a key (registered once): then it only reads the flag.
    keyed: Vec<bool>,
    /// Whether each task's waker is on the token.
    on_token: Vec<bool>,
    /// The milestones' token is cancelled.
    token: bool,
    closed: Vec<bool>,
    fired: bool,
    /// The canceller's next step: 0 ..= shards + 1 (cancel the token, set the flag, close each
    /// shard), in the variant's order.
    canceller: usize,
}

impl SpawnRace {
    fn new(variant: Variant, shard_of: Vec<usize>) -> Self {
        let n = shard_of.len();
        Self::covered(variant, shard_of, vec![false; n])
    }

    /// Tasks `covered[t]` wait on the milestone first.
    fn covered(variant: Variant, shard_of: Vec<usize>, covered: Vec<bool>) -> Self {
        let shards = shard_of.iter().max().map_or(0, |s| s + 1);
        let n = shard_of.len();
        SpawnRace {
            variant,
            tasks: vec![Task::Spawned; n],
            shard_of,
            registered: vec![false; n],
            woken: vec![false; n],
            covered,
            keyed: vec![false; n],
            on_token: vec![false; n],
            token: false,
            closed: vec![false; shards],
            fired: false,
            canceller: 0,
        }
    }

    fn shards(&self) -> usize {
        self.closed.len()
    }

    fn close(&mut self, shard: usize) {
        self.closed[shard] = true;
        for t in 0..self.tasks.len() {
            if self.shard_of[t] == shard && self.registered[t] {
                self.registered[t] = false;
                self.woken[t] = true;
            }
        }
    }

    fn register(&mut self, t: usize) {
        self.registered[t] = true;
        self.keyed[t] = true;
        self.tasks[t] = Task::Waiting;
    }

    /// A poll whose work returns `Pending` and which has no key yet: a covered task registers
    /// on the token (or, its milestone reached, stops being covered and goes the shard's way);
    /// any other takes the shard's lock and registers or sees it closed.
    fn first_pending(&mut self, t: usize) -> Task {
        if self.covered[t] {
            if self.token {
                // The milestone is reached: the work goes on to wait on something else.
                self.covered[t] = false;
                return Task::Spawned;
            }
            self.on_token[t] = true;
            return Task::OnToken;
        }
        let shard = self.shard_of[t];
        match self.variant {
            Variant::CheckOutsideTheLock => {
                if self.closed[shard] {
                    Task::Cancelled
                } else {
                    Task::SawOpen
                }
            }
            _ => {
                if self.closed[shard] {
                    Task::Cancelled
                } else {
                    self.register(t);
                    Task::Waiting
                }
            }
        }
    }
}

impl Model for SpawnRace {
    fn threads(&self) -> usize {
        self.tasks.len() + 1
    }

    fn done(&self, t: usize) -> bool {
        if t < self.tasks.len() {
            self.tasks[t] == Task::Cancelled
        } else {
            self.canceller > self.shards() + 1
        }
    }

    fn can_step(&self, t: usize) -> bool {
        t == self.tasks.len() || self.tasks[t] != Task::Waiting || self.woken[t]
    }

    fn step(&mut self, t: usize) {
        if t == self.tasks.len() {
            // Step 0 cancels the token (waking what waits on it), then the flag and the shards
            // in the variant's order.
            if self.canceller == 0 {
                if self.variant != Variant::TokenNotCancelled {
                    self.token = true;
                    for t in 0..self.tasks.len() {
                        if std::mem::take(&mut self.on_token[t]) {
                            self.woken[t] = true;
                        }
                    }
                }
                self.canceller += 1;
                return;
            }
            let step = self.canceller - 1;
            let flag_step = match self.variant {
                Variant::FlagAfterClosing => self.shards(),
                _ => 0,
            };
            if step == flag_step {
                self.fired = true;
            } else {
                let shard = match self.variant {
                    Variant::FlagAfterClosing => step,
                    _ => step - 1,
                };
                self.close(shard);
            }
            self.canceller += 1;
            return;
        }
        self.tasks[t] = match self.tasks[t] {
            // The first `Pending` (see `first_pending`).
            Task::Spawned => self.first_pending(t),
            Task::SawOpen => {
                self.register(t);
                Task::Waiting
            }
            // Covered, after its poll: the flag is read; no waker in any shard.
            Task::OnToken => {
                if self.fired {
                    self.on_token[t] = false;
                    Task::Cancelled
                } else {
                    Task::Waiting
                }
            }
            // Woken: the work is polled first, then the flag is read. A task woken by its
            // milestone finds it reached and waits on something else: with no key yet, that is
            // its first `Pending` in a shard.
            Task::Waiting => {
                self.woken[t] = false;
                if self.covered[t] && self.token {
                    self.covered[t] = false;
                }
                if !self.keyed[t] && !self.covered[t] {
                    self.first_pending(t)
                } else if self.fired {
                    Task::Cancelled
                } else {
                    Task::Waiting
                }
            }
            Task::Cancelled => Task::Cancelled,
        };
    }
}

/// Every task's waker sits only in a shard that is still open: a waker in a closed shard would
/// never be woken.
fn no_waker_in_a_closed_shard(m: &SpawnRace) -> Result<(), String> {
    for t in 0..m.tasks.len() {
        if m.registered[t] && m.closed[m.shard_of[t]] {
            return Err(format!(
                "task {t} registered in closed shard {}",
                m.shard_of[t]
            ));
        }
    }
    Ok(())
}

fn all_cancelled(m: &SpawnRace) -> Result<(), String> {
    if m.tasks.iter().all(|t| *t == Task::Cancelled) && m.fired {
        Ok(())
    } else {
        Err("a task did not end".into())
    }
}

#[test]
fn spawn_never_misses_the_cancellation_in_any_interleaving() {
    for shards in [vec![0, 0], vec![0, 1], vec![1, 0]] {
        let explored = explore(
            SpawnRace::new(Variant::Real, shards.clone()),
            no_waker_in_a_closed_shard,
            all_cancelled,
        )
        .unwrap_or_else(|e| panic!("{shards:?}: {e}"));
        assert!(explored.finals >= 1 && explored.states > 10, "{explored:?}");
    }
}

#[test]
fn covered_tasks_never_miss_the_cancellation_in_any_interleaving() {
    for (shards, covered) in [
        (vec![0, 0], vec![true, true]),
        (vec![0, 1], vec![true, false]),
        (vec![1, 0], vec![false, true]),
        (vec![0, 0, 1], vec![true, false, true]),
    ] {
        let explored = explore(
            SpawnRace::covered(Variant::Real, shards.clone(), covered.clone()),
            no_waker_in_a_closed_shard,
            all_cancelled,
        )
        .unwrap_or_else(|e| panic!("{shards:?} {covered:?}: {e}"));
        assert!(explored.finals >= 1 && explored.states > 10, "{explored:?}");
    }
}

#[test]
fn a_canceller_that_leaves_the_milestones_alone_would_lose_a_covered_task() {
    let err = explore(
        SpawnRace::covered(Variant::TokenNotCancelled, vec![0, 1], vec![true, false]),
        |_| Ok(()),
        all_cancelled,
    )
    .unwrap_err();
    assert!(err.contains("deadlock"), "{err}");
}

#[test]
fn checking_the_shard_outside_its_lock_would_lose_the_wake_up() {
    let err = explore(
        SpawnRace::new(Variant::CheckOutsideTheLock, vec![0, 1]),
        |_| Ok(()),
        all_cancelled,
    )
    .unwrap_err();
    assert!(err.contains("deadlock"), "{err}");
}

#[test]
fn setting_the_flag_after_closing_the_shards_would_lose_the_wake_up() {
    let err = explore(
        SpawnRace::new(Variant::FlagAfterClosing, vec![0, 1]),
        |_| Ok(()),
        all_cancelled,
    )
    .unwrap_err();
    assert!(err.contains("deadlock"), "{err}");
}

#[test]
fn real_spawns_racing_a_real_cancellation_all_end() {
    let runtime = two_workers();
    runtime.block_on(async {
        for _ in 0..200 {
            let lifecycle = testing::builder().build().unwrap();
            let handle = lifecycle.handle();
            // One task spawns while another cancels (dropping an unrun lifecycle cancels).
            let spawner = tokio::spawn({
                let handle = handle.clone();
                async move {
                    (0..200)
                        .map(|i| spawn_racer(&handle, i))
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

/// The race on plain OS threads: one thread spawns (its tasks' first polls run on the two
/// workers, registering in their shards) while another, released by the same barrier, cancels
/// by dropping the unrun lifecycle. The spawner goes on until it has seen the cancellation and
/// spawned 100 more, so every round covers spawns before, during and after it. Every task must
/// end with `None`.
#[test]
fn spawns_on_one_os_thread_racing_a_cancel_on_another_all_end() {
    let runtime = two_workers();
    let mut rounds_with_spawns_before = 0;
    for _ in 0..300 {
        let lifecycle = testing::builder().build().unwrap();
        let handle = lifecycle.handle();
        let start = Arc::new(Barrier::new(2));
        let spawner = std::thread::spawn({
            let start = Arc::clone(&start);
            let rt = runtime.handle().clone();
            move || {
                let _in_runtime = rt.enter();
                start.wait();
                let (mut joins, mut before, mut after) = (Vec::new(), 0, 0);
                while after < 100 {
                    joins.push(spawn_racer(&handle, joins.len()));
                    if handle.cancelled().is_reached() {
                        after += 1;
                    } else {
                        before += 1;
                        assert!(before < 1_000_000, "the cancellation never came");
                    }
                }
                (joins, before)
            }
        });
        let canceller = std::thread::spawn(move || {
            start.wait();
            drop(lifecycle);
        });
        canceller.join().unwrap();
        let (joins, before) = spawner.join().unwrap();
        runtime.block_on(async {
            for join in joins {
                // A bound for failure only: each ends as soon as it sees the cancellation.
                let ended = tokio::time::timeout(Duration::from_secs(30), join).await;
                assert_eq!(ended.expect("no lost wake-up").unwrap(), None);
            }
        });
        if before > 0 {
            rounds_with_spawns_before += 1;
        }
    }
    assert!(
        rounds_with_spawns_before > 0,
        "no round spawned before the cancellation: the race was never run"
    );
}
