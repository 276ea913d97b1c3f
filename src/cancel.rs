//! The cancellation at the drain deadline for tasks spawned by
//! [`LifecycleHandle::spawn`](crate::LifecycleHandle::spawn). See [`CancelWake`].
//!
//! Written against `crate::sync`, so `RUSTFLAGS="--cfg lifecycle_loom"` runs this very code under
//! loom (the tests at the bottom): every interleaving of a task registering (or dropping its
//! registration) against the cancel.

use std::future::Future;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::task::Waker;

use crate::errors::panic_message;
use crate::sync::{AtomicBool, AtomicUsize, Mutex};
use crate::tracker::Tracker;

/// Shards of [`CancelWake`]: more than the worker threads of a typical runtime, so that two
/// workers rarely share one.
const SHARDS: usize = 8;

/// Hands out shard numbers to threads, round-robin.
#[cfg(not(lifecycle_loom))]
static NEXT_SHARD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(not(lifecycle_loom))]
thread_local! {
    /// This thread's shard, `u8::MAX` until its first task registers: tasks first polled here
    /// register in it. A `const` local with no destructor, so reading it is one load.
    static SHARD: std::cell::Cell<u8> = const { std::cell::Cell::new(u8::MAX) };
}

/// This thread's shard (assigned on first use). Relaxed: the counter only spreads threads over
/// shards; every shard is correct for every thread.
#[cfg(not(lifecycle_loom))]
#[inline]
fn this_threads_shard() -> usize {
    SHARD
        .try_with(|shard| {
            if shard.get() == u8::MAX {
                shard.set((NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS) as u8);
            }
            usize::from(shard.get())
        })
        // A thread whose locals are gone: any shard is correct.
        .unwrap_or(0)
}

// Under loom the counter starts afresh in every explored execution, so each replays the same.
#[cfg(lifecycle_loom)]
::loom::lazy_static! {
    static ref NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
}

#[cfg(lifecycle_loom)]
::loom::thread_local! {
    static SHARD: u8 = (NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS) as u8;
}

#[cfg(lifecycle_loom)]
#[inline]
fn this_threads_shard() -> usize {
    SHARD.with(|shard| usize::from(*shard))
}

/// What this thread is polling, while it polls a spawned task's future: the task's owner and
/// waker, and whether one of the owner's [`Milestone`](crate::Milestone)s covers the task (see
/// [`claim`]). `owner` is 0 between such polls.
#[derive(Clone, Copy)]
#[cfg_attr(
    lifecycle_loom,
    allow(dead_code, reason = "loom models run without the shortcut")
)]
struct Polling {
    /// The owner's [`CancelWake::id`]; 0 between polls of spawned tasks.
    owner: u64,
    /// The task's waker, as `Waker::data` and `Waker::vtable` addresses.
    data: usize,
    vtable: usize,
    /// The address of a milestone future of this owner that returned `Pending` in this poll,
    /// registered with this task's waker, and still lives; 0 if none.
    covered: usize,
}

const IDLE: Polling = Polling {
    owner: 0,
    data: 0,
    vtable: 0,
    covered: 0,
};

#[cfg(not(lifecycle_loom))]
thread_local! {
    static POLLING: std::cell::Cell<Polling> = const { std::cell::Cell::new(IDLE) };
}

/// The waker's identity, as [`Waker::will_wake`] compares it.
#[cfg_attr(
    lifecycle_loom,
    allow(dead_code, reason = "loom models run without the shortcut")
)]
fn waker_identity(waker: &Waker) -> (usize, usize) {
    (
        waker.data() as usize,
        std::ptr::from_ref(waker.vtable()) as usize,
    )
}

/// Called by a milestone future of the lifecycle `owner` (its [`CancelWake::id`]) when it returns
/// `Pending` having registered `waker`, the milestone future itself at address `at`: if this
/// thread is polling a task spawned on that same lifecycle, with that same waker, the task is
/// *covered*: the milestone wakes it no later than the cancellation at the drain deadline
/// (`Shared::cancel_work` cancels the milestones' tokens before it fires [`CancelWake`]), so
/// the task needs no waker of its own in the shards.
pub(crate) fn claim(owner: u64, waker: &Waker, at: usize) {
    #[cfg(not(lifecycle_loom))]
    let _ = POLLING.try_with(|polling| {
        let mut now = polling.get();
        if now.owner == owner && (now.data, now.vtable) == waker_identity(waker) {
            now.covered = at;
            polling.set(now);
        }
    });
    #[cfg(lifecycle_loom)]
    let _ = (owner, waker, at);
}

/// Called when the milestone future at `at` is dropped: if it covered the task being polled,
/// that task is covered no more (its registration on the milestone went with it).
pub(crate) fn release(at: usize) {
    #[cfg(not(lifecycle_loom))]
    let _ = POLLING.try_with(|polling| {
        let mut now = polling.get();
        if now.owner != 0 && now.covered == at {
            now.covered = 0;
            polling.set(now);
        }
    });
    #[cfg(lifecycle_loom)]
    let _ = at;
}

/// Starts a poll of a task of `owner` with `waker`; returns what to restore after it.
#[inline]
fn enter(owner: u64, waker: &Waker) -> Polling {
    #[cfg(not(lifecycle_loom))]
    {
        let (data, vtable) = waker_identity(waker);
        POLLING
            .try_with(|polling| {
                polling.replace(Polling {
                    owner,
                    data,
                    vtable,
                    covered: 0,
                })
            })
            .unwrap_or(IDLE)
    }
    #[cfg(lifecycle_loom)]
    {
        let _ = (owner, waker);
        IDLE
    }
}

/// Ends a poll started by [`enter`]: restores `outer` (a poll this one is nested in) and
/// returns whether a milestone covered the task.
#[inline]
fn leave(outer: Polling) -> bool {
    #[cfg(not(lifecycle_loom))]
    {
        POLLING
            .try_with(|polling| polling.replace(outer).covered != 0)
            .unwrap_or(false)
    }
    #[cfg(lifecycle_loom)]
    {
        let _ = outer;
        false
    }
}

/// The cancellation at the drain deadline, for tasks spawned by [`LifecycleHandle::spawn`](crate::LifecycleHandle::spawn).
///
/// A task that waits on one of its own lifecycle's milestones (`draining()`, ...) registers
/// nothing: the milestone's token, cancelled before [`fire`](Self::fire), wakes it (see
/// [`claim`]); it pays for no lock and no entry. Any other task whose poll returns `Pending`
/// registers its waker in the shard of the thread polling it, once; when its work ends (or its future is dropped) it takes the waker out again.
/// [`fire`](Self::fire) sets the flag, then closes each shard and wakes what it held. So a task
/// locks one shard twice in its life, a lock the other workers rarely touch (one shard per
/// thread, round-robin), and carries one pointer and a key, not a waiter of its own.
///
/// # Invariants
///
/// 1. `fired` is set (Release) before any shard is closed; a registered task re-polled after
///    its wake-up reads it (Acquire) and ends.
/// 2. Registration and closing happen under the shard's lock: a task registers before its shard
///    closes (and is woken by `fire`) or sees it closed (and ends at once). No wake-up is lost,
///    whatever the interleaving (`tests/spawn_cancel_model.rs`).
/// 3. A closed shard never opens again and takes no new waker, so keys are never reused after
///    the close and a late deregistration touches nothing.
/// 4. A waker is held only while its task's future lives: the future's drop takes it out, so a
///    finished task is freed at once, as with a plain `tokio::spawn`.
#[derive(Debug)]
pub(crate) struct CancelWake {
    /// The lifecycle's identity for its milestones ([`claim`]): unique in the process, never
    /// 0. Not an address, which the allocator may hand to a later lifecycle while a milestone
    /// of the dropped one still lives.
    pub(crate) id: u64,
    fired: AtomicBool,
    /// Tracked tasks that panicked. Incremented (Release) by the panicking task before it ends;
    /// read (Acquire) once all work has ended or been given up.
    panicked: AtomicUsize,
    shards: [Padded; SHARDS],
}

impl Default for CancelWake {
    fn default() -> Self {
        /// Hands out [`CancelWake::id`]s. Relaxed: only uniqueness matters.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        CancelWake {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            fired: AtomicBool::new(false),
            panicked: AtomicUsize::new(0),
            shards: std::array::from_fn(|_| Padded(Mutex::new(Shard::default()))),
        }
    }
}

/// One shard on cache lines of its own, so two workers' locks never share a line.
#[derive(Debug)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// Entries per chunk of a shard: the entries never move once allocated (no copy of the whole
/// table as it grows, no old and new table live at once), and a chunk is 2 KiB.
const CHUNK: usize = 128;

/// The wakers of one shard. Locked briefly to add, take or drain; never across an await.
#[derive(Debug, Default)]
struct Shard {
    closed: bool,
    /// Registered wakers by key (chunk `key / CHUNK`, index `key % CHUNK`), and free entries,
    /// each naming the next free one.
    #[allow(
        clippy::vec_box,
        reason = "boxed so that growing the Vec moves pointers, never the entries"
    )]
    chunks: Vec<Box<[Entry; CHUNK]>>,
    /// Entries handed out so far: those past it in the last chunk were never used.
    used: usize,
    /// The first free entry, if any.
    free: Option<u32>,
}

impl Shard {
    fn entry(&mut self, key: u32) -> &mut Entry {
        let key = key as usize;
        &mut self.chunks[key / CHUNK][key % CHUNK]
    }
}

/// An entry of a shard: 16 bytes either way.
#[derive(Debug)]
enum Entry {
    Waker(Waker),
    Free(Option<u32>),
}

impl CancelWake {
    /// Cancels every spawned task: each ends (its join handle yields `None`) at its next poll,
    /// and one still waiting is woken for it. Idempotent.
    pub(crate) fn fire(&self) {
        // Release: a task that reads the flag (Acquire) sees everything before the cancel.
        self.fired.store(true, Ordering::Release);
        for shard in &self.shards {
            let entries = {
                let mut shard = shard.0.lock();
                shard.closed = true;
                shard.free = None;
                shard.used = 0;
                std::mem::take(&mut shard.chunks)
            };
            // Woken outside the lock.
            for entry in entries.into_iter().flat_map(|chunk| *chunk) {
                if let Entry::Waker(waker) = entry {
                    waker.wake();
                }
            }
        }
    }

    /// How many tracked tasks panicked so far.
    pub(crate) fn panicked(&self) -> usize {
        // Acquire: pairs with the Release increments of tasks that panicked before they ended.
        self.panicked.load(Ordering::Acquire)
    }
}

/// The key of a [`Slot`] not registered (yet).
const UNREGISTERED: u32 = u32::MAX;

/// What owns a [`CancelWake`] and the [`Tracker`] a spawned task counts in: the lifecycle's
/// shared state in the library, a pair of them in the models. A spawned task holds one pointer
/// to its owner, which is both its cancellation and its tracking token.
pub(crate) trait CancelOwner: Send + Sync + 'static {
    fn cancel_wake(&self) -> &CancelWake;
    fn tracker(&self) -> &Tracker;
}

/// A spawned task's tracking token and its place in [`CancelWake`]: the shard and key of its
/// waker once registered. 16 bytes, so that the task future of a small job keeps to tokio's
/// smaller task cell (and below its copy threshold).
///
/// `P` points to the owner: `Arc<Shared>` in the library, the very pointer a
/// [`LifecycleHandle`](crate::LifecycleHandle) holds, so a task spawned with a clone of the
/// handle touches one reference count, not three on three cache lines.
#[derive(Debug)]
struct Slot<P>
where
    P: Deref<Target: CancelOwner>,
{
    owner: P,
    key: u32,
    shard: u8,
}

impl<P> Slot<P>
where
    P: Deref<Target: CancelOwner>,
{
    /// After a poll that returned `Pending`: whether the task is cancelled. On the first such
    /// poll that a milestone did not cover, registers `waker` unless the shard has closed.
    /// `Cancellable` is always the whole future of its own tokio task, whose waker never
    /// changes, so one registration holds.
    fn cancelled(&mut self, waker: &Waker, covered: bool) -> bool {
        if self.key != UNREGISTERED || covered {
            // Acquire: see invariant 1.
            return self.owner.cancel_wake().fired.load(Ordering::Acquire);
        }
        let at = this_threads_shard();
        let mut shard = self.owner.cancel_wake().shards[at].0.lock();
        if shard.closed {
            return true;
        }
        let key = match shard.free {
            Some(key) => {
                let entry = Entry::Waker(waker.clone());
                let Entry::Free(next) = std::mem::replace(shard.entry(key), entry) else {
                    unreachable!("the free list names only free entries")
                };
                shard.free = next;
                key
            }
            None => {
                // Each waiting task holds a task cell of at least 256 bytes: 2^32 of them in one
                // shard cannot exist.
                let key = u32::try_from(shard.used)
                    .ok()
                    .filter(|&key| key != UNREGISTERED)
                    .expect("fewer than 2^32 - 1 tasks waiting in one shard");
                if shard.used == shard.chunks.len() * CHUNK {
                    let chunk = Box::new(std::array::from_fn(|_| Entry::Free(None)));
                    shard.chunks.push(chunk);
                }
                shard.used += 1;
                *shard.entry(key) = Entry::Waker(waker.clone());
                key
            }
        };
        drop(shard);
        self.shard = at as u8;
        self.key = key;
        false
    }
}

impl<P> Drop for Slot<P>
where
    P: Deref<Target: CancelOwner>,
{
    fn drop(&mut self) {
        // The task's future is dropped before its slot (field order in `Cancellable`): the work
        // has ended once its waker is out.
        self.deregister();
        self.owner.tracker().end();
    }
}

impl<P> Slot<P>
where
    P: Deref<Target: CancelOwner>,
{
    /// A new task's slot: counted in the tracker until dropped, not registered yet.
    fn new(owner: P) -> Self {
        owner.tracker().add();
        Slot {
            owner,
            key: UNREGISTERED,
            shard: 0,
        }
    }

    /// Takes the waker out of its shard, if it is there.
    fn deregister(&mut self) {
        if self.key == UNREGISTERED {
            return;
        }
        let waker = {
            let mut shard = self.owner.cancel_wake().shards[usize::from(self.shard)]
                .0
                .lock();
            if shard.closed {
                None
            } else {
                let free = Entry::Free(shard.free.replace(self.key));
                Some(std::mem::replace(shard.entry(self.key), free))
            }
        };
        // Dropped outside the lock.
        drop(waker);
    }
}

#[cfg(not(lifecycle_loom))]
const _: () = assert!(std::mem::size_of::<Entry>() == 16);

pin_project_lite::pin_project! {
    /// Tracked work raced against the cancellation at the drain deadline, the work polled
    /// first; a panic in the work is counted, then goes on to the join handle.
    pub(crate) struct Cancellable<F, P>
    where
        P: Deref<Target: CancelOwner>,
    {
        #[pin]
        fut: F,
        slot: Slot<P>,
    }
}

impl<F, P> Cancellable<F, P>
where
    P: Deref<Target: CancelOwner>,
{
    /// `fut`, counted in the [`Tracker`] of `owner` and cancelled by its [`CancelWake`].
    #[inline]
    pub(crate) fn new(fut: F, owner: P) -> Self {
        Cancellable {
            fut,
            slot: Slot::new(owner),
        }
    }
}

impl<F: Future, P> Future for Cancellable<F, P>
where
    P: Deref<Target: CancelOwner>,
{
    type Output = Option<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let fut = this.fut;
        let outer = enter(this.slot.owner.cancel_wake().id, cx.waker());
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx)));
        let covered = leave(outer);
        match polled {
            Ok(std::task::Poll::Ready(output)) => std::task::Poll::Ready(Some(output)),
            Ok(std::task::Poll::Pending) if this.slot.cancelled(cx.waker(), covered) => {
                std::task::Poll::Ready(None)
            }
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => {
                tracing::error!(target: "lifecycle_hooks", panic = %panic_message(&*panic), "tracked work panicked");
                // Release: the runner reads the count (Acquire) after this task has ended.
                (this.slot.owner.cancel_wake().panicked).fetch_add(1, Ordering::Release);
                // The join handle still sees the panic, as with a plain `tokio::spawn`.
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// What the milestone shortcut saves, seen from inside: the wakers the shards hold.
#[cfg(all(test, not(lifecycle_loom)))]
mod cover_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{CancelWake, Entry};
    use crate::testing;

    impl CancelWake {
        /// Wakers held in the shards now.
        fn registered(&self) -> usize {
            self.shards
                .iter()
                .map(|shard| {
                    let shard = shard.0.lock();
                    let used = shard.used;
                    shard
                        .chunks
                        .iter()
                        .flat_map(|chunk| chunk.iter())
                        .take(used)
                        .filter(|entry| matches!(entry, Entry::Waker(_)))
                        .count()
                })
                .sum()
        }
    }

    /// A milestone outlives its lifecycle (it holds a token and the lifecycle's id, not the
    /// lifecycle), and a clean run never cancels `cancelled()`'s token. Such a milestone must
    /// not pass for one of a later lifecycle's, or a task of that lifecycle waiting on it would
    /// keep no waker and hang it at its drain deadline. With the lifecycle's address as its
    /// identity (the first version) that happened whenever the allocator gave the freed address
    /// to the next lifecycle; ids are never reused.
    #[tokio::test(start_paused = true)]
    async fn a_milestone_of_a_dropped_lifecycle_never_covers_a_task_of_the_next() {
        let (milestone, old_id) = {
            let lifecycle = testing::builder().build().unwrap();
            let handle = lifecycle.handle();
            let old = (handle.cancelled(), handle.shared.cancel_wake.id);
            handle.stop();
            assert_eq!(lifecycle.run().await.cancelled_work(), 0);
            old
        };
        assert!(
            !milestone.is_reached(),
            "a clean run never reaches `cancelled()`"
        );
        let lifecycle = testing::builder()
            .budget(std::time::Duration::from_millis(400))
            .build()
            .unwrap();
        let handle = lifecycle.handle();
        assert_ne!(handle.shared.cancel_wake.id, old_id);
        let join = handle.spawn(async move {
            milestone.await;
            unreachable!("the old lifecycle's work is never cancelled");
        });
        tokio::task::yield_now().await;
        handle.stop();
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(60), lifecycle.run())
            .await
            .expect("the task was cancelled at the deadline");
        assert_eq!(outcome.cancelled_work(), 1, "{outcome}");
        assert_eq!(join.await.unwrap(), None);
    }

    /// 300 tasks: those waiting on their lifecycle's `draining()` (alone
    /// or in a `select!`) hold no waker in the shards; those waiting on anything else hold one
    /// each; a clean stop ends them all.
    #[tokio::test]
    async fn tasks_waiting_on_their_milestones_hold_no_waker_in_the_shards() {
        let lifecycle = testing::builder().build().unwrap();
        let handle = lifecycle.handle();
        let (all_tx, mut all_rx) = tokio::sync::mpsc::unbounded_channel();
        let (never_tx, never) = tokio::sync::watch::channel(());
        let polled = Arc::new(AtomicUsize::new(0));
        for i in 0..300 {
            let (h, all_tx, polled) = (handle.clone(), all_tx.clone(), polled.clone());
            let mut never = never.clone();
            handle.spawn(async move {
                if polled.fetch_add(1, Ordering::AcqRel) + 1 == 300 {
                    let _ = all_tx.send(());
                }
                match i % 3 {
                    0 => h.draining().await,
                    1 => tokio::select! {
                        _ = h.draining() => {}
                        _ = never.changed() => {}
                    },
                    _ => {
                        let _ = never.changed().await;
                    }
                }
            });
        }
        all_rx.recv().await.unwrap();
        // On one thread, each task's first poll has returned by the time the next starts, and
        // the last one's by the time this task runs again.
        let wake = &handle.shared.cancel_wake;
        assert_eq!(
            wake.registered(),
            100,
            "only the tasks not waiting on a milestone"
        );
        handle.stop();
        let run = tokio::spawn(lifecycle.run());
        drop(never_tx);
        let outcome = run.await.unwrap();
        assert_eq!(outcome.exit_code(), 0, "{outcome}");
        assert_eq!(outcome.cancelled_work(), 0);
    }
}

/// The real code above under loom: `RUSTFLAGS="--cfg lifecycle_loom" cargo test --release
/// -p lifecycle-hooks --lib cancel::loom_model` (scripts/test runs it).
#[cfg(all(test, lifecycle_loom))]
mod loom_model {
    use std::task::{Wake, Waker};

    use super::*;
    use crate::sync::Arc;

    /// A waker that records its wake-up in a loom atomic, so the model sees the write.
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn flag() -> (std::sync::Arc<Flag>, Waker) {
        let flag = std::sync::Arc::new(Flag(AtomicBool::new(false)));
        (std::sync::Arc::clone(&flag), Waker::from(flag))
    }

    /// The owner in the models: the real `CancelWake` and `Tracker`, without the rest of a
    /// lifecycle.
    #[derive(Default)]
    struct Owner {
        wake: CancelWake,
        tracker: Tracker,
    }

    impl CancelOwner for Owner {
        fn cancel_wake(&self) -> &CancelWake {
            &self.wake
        }
        fn tracker(&self) -> &Tracker {
            &self.tracker
        }
    }

    impl Deref for Owner {
        type Target = CancelWake;
        fn deref(&self) -> &CancelWake {
            &self.wake
        }
    }

    fn slot(owner: &Arc<Owner>) -> Slot<Arc<Owner>> {
        Slot::new(Arc::clone(owner))
    }

    /// A task registering on its first `Pending` races the cancel: it sees the cancel and ends,
    /// or it is registered and the cancel wakes it, and re-polled it ends. Never neither.
    #[test]
    fn a_registration_racing_the_cancel_is_never_lost() {
        ::loom::model(|| {
            let wake = Arc::new(Owner::default());
            let task = {
                let wake = Arc::clone(&wake);
                ::loom::thread::spawn(move || {
                    let (woken, waker) = flag();
                    let mut slot = slot(&wake);
                    let ended = slot.cancelled(&waker, false);
                    (ended, woken, slot)
                })
            };
            wake.fire();
            let (ended, woken, mut slot) = task.join().unwrap();
            if !ended {
                assert!(woken.0.load(Ordering::SeqCst), "registered, never woken");
                assert!(
                    slot.cancelled(Waker::noop(), false),
                    "woken, but not cancelled"
                );
            }
        });
    }

    /// Two tasks first polled on two threads (two shards) against the cancel from a third.
    #[test]
    fn tasks_on_two_shards_are_each_ended_or_woken() {
        ::loom::model(|| {
            let wake = Arc::new(Owner::default());
            let tasks: Vec<_> = (0..2)
                .map(|_| {
                    let wake = Arc::clone(&wake);
                    ::loom::thread::spawn(move || {
                        let (woken, waker) = flag();
                        let mut slot = slot(&wake);
                        let ended = slot.cancelled(&waker, false);
                        (ended, woken, slot)
                    })
                })
                .collect();
            wake.fire();
            for task in tasks {
                let (ended, woken, _slot) = task.join().unwrap();
                assert!(ended || woken.0.load(Ordering::SeqCst));
            }
        });
    }

    /// A task ending (its registration dropped) while the cancel runs: whichever comes first,
    /// nothing is touched twice and every shard ends closed and empty.
    #[test]
    fn a_deregistration_racing_the_cancel_touches_nothing_freed() {
        ::loom::model(|| {
            let wake = Arc::new(Owner::default());
            let (_woken, waker) = flag();
            let mut task = slot(&wake);
            assert!(
                !task.cancelled(&waker, false),
                "registered before the cancel"
            );
            let canceller = {
                let wake = Arc::clone(&wake);
                ::loom::thread::spawn(move || wake.fire())
            };
            drop(task);
            canceller.join().unwrap();
            for shard in &wake.shards {
                let shard = shard.0.lock();
                assert!(shard.closed && shard.chunks.is_empty() && shard.free.is_none());
            }
            assert!(
                wake.tracker.is_empty(),
                "the ended task is no longer tracked"
            );
        });
    }
}
