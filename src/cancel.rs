//! The cancellation at the drain deadline for tasks spawned by
//! [`LifecycleHandle::spawn`](crate::LifecycleHandle::spawn). See [`CancelWake`].
//!
//! Written against `crate::sync`, so `RUSTFLAGS="--cfg lifecycle_loom"` runs this very code under
//! loom (the tests at the bottom): every interleaving of a task registering (or dropping its
//! registration) against the cancel.

use std::cell::UnsafeCell;
use std::future::Future;
use std::marker::PhantomPinned;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::ptr::NonNull;
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

/// The cancellation at the drain deadline, for tasks spawned by [`LifecycleHandle::spawn`](crate::LifecycleHandle::spawn).
///
/// A task whose first poll returns `Pending` links the waiter inside its own future (its
/// waker and two list pointers) into the shard of the thread polling it; when its work ends (or
/// its future is dropped) it unlinks it again. [`fire`](Self::fire) sets the flag, then closes
/// each shard, unlinks every waiter and wakes it. So a task locks one shard twice in its life, a
/// lock the other workers rarely touch (one shard per thread, round-robin), and nothing outside
/// its own task cell holds it: no table entry, no allocation.
///
/// # Invariants
///
/// 1. `fired` is set (Release) before any shard is closed; a registered task re-polled after
///    its wake-up reads it (Acquire) and ends.
/// 2. Registration and closing happen under the shard's lock: a task registers before its shard
///    closes (and is woken by `fire`) or sees it closed (and ends at once). No wake-up is lost,
///    whatever the interleaving (`tests/spawn_cancel_model.rs`, and the loom models below).
/// 3. A waiter is in its shard's list exactly while its `waker` is `Some`; every field of a
///    linked waiter is read and written under that shard's lock only.
/// 4. A waiter is unlinked, under the lock, before its memory goes away: by its task's drop, or
///    by `fire`. A task's drop always takes the lock once registered, so it also waits out a
///    `fire` that is walking the list. A closed shard never opens again and links no new waiter.
/// 5. A waiter never moves while linked: it lives in the task's pinned future.
#[derive(Debug)]
pub(crate) struct CancelWake {
    fired: AtomicBool,
    /// Tracked tasks that panicked. Incremented (Release) by the panicking task before it ends;
    /// read (Acquire) once all work has ended or been given up.
    panicked: AtomicUsize,
    shards: [Padded; SHARDS],
}

impl Default for CancelWake {
    fn default() -> Self {
        CancelWake {
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

/// The waiting tasks of one shard: a doubly linked list through the [`Waiter`]s inside their
/// futures. Locked briefly to link, unlink or drain; never across an await.
#[derive(Debug, Default)]
struct Shard {
    closed: bool,
    head: Option<NonNull<Waiter>>,
}

// SAFETY: a shard's pointers are dereferenced only under the lock around it, while the waiters
// they point to are alive and pinned (invariants 3 to 5); a waiter's contents (a `Waker` and two
// such pointers) may be used from any thread. So the shard may move to, and be locked from,
// any thread. Exercised by the loom models below and by the spawn/cancel races of
// `tests/correctness.rs` on real threads.
#[allow(unsafe_code)]
unsafe impl Send for Shard {}

/// A waiting task's link in its shard's list, inside the task's future.
#[derive(Debug, Default)]
struct Waiter {
    prev: Option<NonNull<Waiter>>,
    next: Option<NonNull<Waiter>>,
    /// `Some` exactly while linked (invariant 3).
    waker: Option<Waker>,
}

impl CancelWake {
    /// Cancels every spawned task: each ends (its join handle yields `None`) at its next poll,
    /// and one still waiting is woken for it. Idempotent.
    pub(crate) fn fire(&self) {
        // Release: a task that reads the flag (Acquire) sees everything before the cancel.
        self.fired.store(true, Ordering::Release);
        for shard in &self.shards {
            let wakers = {
                let mut shard = shard.0.lock();
                shard.closed = true;
                let mut wakers = Vec::new();
                let mut next = shard.head.take();
                while let Some(waiter) = next {
                    let waiter = waiter.as_ptr();
                    // SAFETY: under the shard's lock, and a linked waiter is alive and pinned
                    // (invariants 3 to 5); its task's drop waits for this lock.
                    #[allow(unsafe_code)]
                    unsafe {
                        next = (*waiter).next.take();
                        (*waiter).prev = None;
                        wakers.extend((*waiter).waker.take());
                    }
                }
                wakers
            };
            // Woken outside the lock.
            for waker in wakers {
                waker.wake();
            }
        }
    }

    /// How many tracked tasks panicked so far.
    pub(crate) fn panicked(&self) -> usize {
        // Acquire: pairs with the Release increments of tasks that panicked before they ended.
        self.panicked.load(Ordering::Acquire)
    }
}

/// What owns a [`CancelWake`] and the [`Tracker`] a spawned task counts in: the lifecycle's
/// shared state in the library, a pair of them in the models. A spawned task holds one pointer
/// to its owner, which is both its cancellation and its tracking token.
pub(crate) trait CancelOwner: Send + Sync + 'static {
    fn cancel_wake(&self) -> &CancelWake;
    fn tracker(&self) -> &Tracker;
}

pin_project_lite::pin_project! {
    /// A spawned task's tracking token and its [`Waiter`]: 48 bytes, which keep a small job's
    /// task future in tokio's 256-byte task cell.
    ///
    /// `P` points to the owner: `Arc<Shared>` in the library, the very pointer a
    /// [`LifecycleHandle`](crate::LifecycleHandle) holds, so a task spawned with a clone of the
    /// handle touches one reference count, not three on three cache lines.
    struct Slot<P>
    where
        P: Deref<Target: CancelOwner>,
    {
        owner: P,
        waiter: UnsafeCell<Waiter>,
        shard: u8,
        registered: bool,
        // The waiter's address is in the shard's list while linked: it must not move.
        #[pin]
        _pinned: PhantomPinned,
    }

    impl<P> PinnedDrop for Slot<P>
    where
        P: Deref<Target: CancelOwner>,
    {
        fn drop(mut this: Pin<&mut Self>) {
            // The task's future is dropped before its slot (field order in `Cancellable`): the
            // work has ended once its waiter is out.
            this.as_mut().deregister();
            this.owner.tracker().end();
        }
    }
}

// SAFETY: the waiter is touched by other threads only under its shard's lock, and by its own
// task only under that lock once linked (before, nothing else can reach it); a `Waker` and the
// list pointers may be used from any thread (see `Shard`). `P` itself is `Send`.
#[allow(unsafe_code)]
unsafe impl<P> Send for Slot<P> where P: Deref<Target: CancelOwner> + Send {}

impl<P> std::fmt::Debug for Slot<P>
where
    P: Deref<Target: CancelOwner>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("shard", &self.shard)
            .field("registered", &self.registered)
            .finish_non_exhaustive()
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
            waiter: UnsafeCell::new(Waiter::default()),
            shard: 0,
            registered: false,
            _pinned: PhantomPinned,
        }
    }

    /// After a poll that returned `Pending`: whether the task is cancelled. On the first such
    /// poll, links the waiter with `waker` unless the shard has closed. `Cancellable` is always
    /// the whole future of its own tokio task, whose waker never changes, so one registration
    /// holds.
    fn cancelled(self: Pin<&mut Self>, waker: &Waker) -> bool {
        let this = self.project();
        let wake = this.owner.cancel_wake();
        if *this.registered {
            // Acquire: see invariant 1.
            return wake.fired.load(Ordering::Acquire);
        }
        let at = this_threads_shard();
        let mut shard = wake.shards[at].0.lock();
        if shard.closed {
            return true;
        }
        let me = this.waiter.get();
        // SAFETY: under the shard's lock (invariant 3). `me` is this task's own waiter, not
        // linked yet and pinned with the task's future (invariant 5); the old head is linked in
        // this shard, so alive (invariant 4).
        #[allow(unsafe_code)]
        unsafe {
            (*me).waker = Some(waker.clone());
            (*me).prev = None;
            (*me).next = shard.head;
            if let Some(head) = shard.head {
                (*head.as_ptr()).prev = NonNull::new(me);
            }
        }
        shard.head = NonNull::new(me);
        drop(shard);
        *this.shard = at as u8;
        *this.registered = true;
        false
    }

    /// Unlinks the waiter, if it is linked, and drops its waker outside the lock.
    fn deregister(self: Pin<&mut Self>) {
        let this = self.project();
        if !*this.registered {
            return;
        }
        let waker = {
            let mut shard = this.owner.cancel_wake().shards[usize::from(*this.shard)]
                .0
                .lock();
            let me = this.waiter.get();
            // SAFETY: under the shard's lock (invariant 3); our neighbours are linked, so alive
            // (invariant 4). If `fire` unlinked us, our waker is `None` and nothing is touched.
            #[allow(unsafe_code)]
            unsafe {
                let waker = (*me).waker.take();
                if waker.is_some() {
                    let (prev, next) = ((*me).prev.take(), (*me).next.take());
                    match prev {
                        Some(prev) => (*prev.as_ptr()).next = next,
                        None => shard.head = next,
                    }
                    if let Some(next) = next {
                        (*next.as_ptr()).prev = prev;
                    }
                }
                waker
            }
        };
        drop(waker);
    }

    fn owner(&self) -> &P {
        &self.owner
    }
}

pin_project_lite::pin_project! {
    /// Tracked work raced against the cancellation at the drain deadline, the work polled
    /// first; a panic in the work is counted, then goes on to the join handle.
    pub(crate) struct Cancellable<F, P>
    where
        P: Deref<Target: CancelOwner>,
    {
        #[pin]
        fut: F,
        #[pin]
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
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut this = self.project();
        let fut = this.fut;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(std::task::Poll::Ready(output)) => std::task::Poll::Ready(Some(output)),
            Ok(std::task::Poll::Pending) if this.slot.as_mut().cancelled(cx.waker()) => {
                std::task::Poll::Ready(None)
            }
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => {
                tracing::error!(target: "lifecycle_hooks", panic = %panic_message(&*panic), "tracked work panicked");
                // Release: the runner reads the count (Acquire) after this task has ended.
                let owner = this.slot.as_ref().get_ref().owner();
                owner.cancel_wake().panicked.fetch_add(1, Ordering::Release);
                // The join handle still sees the panic, as with a plain `tokio::spawn`.
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// The list's pointer work on its own, without a runtime: `cargo +nightly miri test -p
/// lifecycle-hooks --lib cancel::tests` checks every access of the `unsafe` blocks above for
/// use after free and aliasing (Miri), as well as running here.
#[cfg(all(test, not(lifecycle_loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::task::{Wake, Waker};

    use super::*;

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

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    type Pinned = Pin<Box<Slot<Arc<Owner>>>>;

    fn waiter(owner: &Arc<Owner>) -> (Pinned, Arc<Flag>, Waker) {
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(Arc::clone(&flag));
        (Box::pin(Slot::new(Arc::clone(owner))), flag, waker)
    }

    #[test]
    fn waiters_unlinked_in_any_order_leave_a_consistent_list_and_the_rest_are_woken() {
        let owner = Arc::new(Owner::default());
        let mut slots: Vec<_> = (0..5).map(|_| waiter(&owner)).collect();
        for (slot, _, waker) in &mut slots {
            assert!(!slot.as_mut().cancelled(waker), "registered");
        }
        assert_eq!(owner.tracker.len(), 5);
        // Unlink the head (last registered), one in the middle, and the tail (first).
        let tail = slots.remove(0);
        let middle = slots.remove(1);
        let head = slots.pop().unwrap();
        drop((head, middle, tail));
        assert_eq!(owner.tracker.len(), 2);
        owner.wake.fire();
        for (slot, flag, _) in &mut slots {
            assert!(flag.0.load(Ordering::SeqCst), "a linked waiter is woken");
            assert!(slot.as_mut().cancelled(Waker::noop()), "and then ends");
        }
        // A slot first polled after the cancel ends at once and links nothing.
        let (mut late, late_flag, late_waker) = waiter(&owner);
        assert!(late.as_mut().cancelled(&late_waker));
        assert!(!late_flag.0.load(Ordering::SeqCst));
        drop(late);
        drop(slots);
        assert!(owner.tracker.is_empty());
        for shard in &owner.wake.shards {
            assert!(shard.0.lock().head.is_none());
        }
    }

    /// Real threads: waiters registering and ending on four threads while a fifth cancels.
    #[test]
    fn waiters_on_four_threads_race_the_cancel() {
        let rounds = if cfg!(miri) { 2 } else { 200 };
        let per_thread = if cfg!(miri) { 3 } else { 50 };
        for _ in 0..rounds {
            let owner = Arc::new(Owner::default());
            let start = Arc::new(std::sync::Barrier::new(5));
            let threads: Vec<_> = (0..4)
                .map(|k| {
                    let owner = Arc::clone(&owner);
                    let start = Arc::clone(&start);
                    std::thread::spawn(move || {
                        let mut kept = Vec::new();
                        start.wait();
                        for i in 0..per_thread {
                            let (mut slot, flag, waker) = waiter(&owner);
                            let ended = slot.as_mut().cancelled(&waker);
                            if (i + k) % 2 == 0 {
                                drop(slot);
                            } else {
                                kept.push((slot, flag, ended));
                            }
                        }
                        kept
                    })
                })
                .collect();
            start.wait();
            owner.wake.fire();
            for thread in threads {
                for (mut slot, flag, ended) in thread.join().unwrap() {
                    // Ended at its first poll, or linked and then woken by the cancel.
                    assert!(ended || flag.0.load(Ordering::SeqCst));
                    assert!(slot.as_mut().cancelled(Waker::noop()));
                }
            }
            assert!(owner.tracker.is_empty());
        }
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

    /// A task's slot, pinned as it is in a task's future.
    fn slot(owner: &Arc<Owner>) -> Pin<Box<Slot<Arc<Owner>>>> {
        Box::pin(Slot::new(Arc::clone(owner)))
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
                    let ended = slot.as_mut().cancelled(&waker);
                    (ended, woken, slot)
                })
            };
            wake.fire();
            let (ended, woken, mut slot) = task.join().unwrap();
            if !ended {
                assert!(woken.0.load(Ordering::SeqCst), "registered, never woken");
                assert!(
                    slot.as_mut().cancelled(Waker::noop()),
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
                        let ended = slot.as_mut().cancelled(&waker);
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
                !task.as_mut().cancelled(&waker),
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
                assert!(shard.closed && shard.head.is_none());
            }
            assert!(
                wake.tracker.is_empty(),
                "the ended task is no longer tracked"
            );
        });
    }

    /// Three waiters linked in one shard; the middle one and the first end while the cancel
    /// walks the list: the last is still woken, and nothing is touched after it is freed (the
    /// unlinks and the walk take turns under the lock).
    #[test]
    fn unlinking_neighbours_while_the_cancel_walks_the_list() {
        ::loom::model(|| {
            let wake = Arc::new(Owner::default());
            let (_, first_waker) = flag();
            let (_, middle_waker) = flag();
            let (last_woken, last_waker) = flag();
            let mut first = slot(&wake);
            let mut middle = slot(&wake);
            let mut last = slot(&wake);
            // Registered from one thread: one shard, linked last, middle, first.
            assert!(!first.as_mut().cancelled(&first_waker));
            assert!(!middle.as_mut().cancelled(&middle_waker));
            assert!(!last.as_mut().cancelled(&last_waker));
            let canceller = {
                let wake = Arc::clone(&wake);
                ::loom::thread::spawn(move || wake.fire())
            };
            drop(middle);
            drop(first);
            canceller.join().unwrap();
            assert!(
                last_woken.0.load(Ordering::SeqCst),
                "the last waiter was woken"
            );
            assert!(last.as_mut().cancelled(Waker::noop()));
            drop(last);
            for shard in &wake.shards {
                let shard = shard.0.lock();
                assert!(shard.closed && shard.head.is_none());
            }
            assert!(wake.tracker.is_empty());
        });
    }
}
