//! The count of tracked work (spawned tasks, tracked futures, guards) and the wait for it to
//! end. See [`Tracker`].
//!
//! It does what tokio-util's `TaskTracker` did here, with one difference that is the reason it
//! exists: a token is the lifecycle's own `Arc<Shared>`, the pointer a spawned task already
//! holds for its cancellation. With `TaskTracker` each spawned task carried a second pointer
//! (8 bytes more in every task future, and one more reference count on another cache line per
//! spawn and per end); for a task future near tokio's copy threshold those 8 bytes cost two
//! extra `memcpy` calls per spawn (BENCHMARKS.md, section 1b).
//!
//! # Invariants
//!
//! 1. `state` is `2 × count + closed`: one atomic, so "closed and empty" is one value (`1`) that
//!    whoever reaches it sees, the last ending work or the close.
//! 2. Whoever moves the state to exactly `1` (the close of an empty tracker, or the end of the last
//!    work of a closed one) wakes every waiter.
//! 3. A waiter registers with the `Notify` before it reads the state, so a wake-up after its
//!    read is never lost.
//! 4. The tracker is never reopened: once closed, `1` stays `1` until new work is added (work may
//!    still be added after the close; the wait then waits for it too, as with `TaskTracker`).

use std::sync::atomic::Ordering;

use tokio::sync::Notify;

use crate::sync::AtomicUsize;

/// Tracked work in flight, closed once the stop no longer expects new work.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// `2 × count + closed`; see the invariants.
    state: AtomicUsize,
    /// Woken when the state becomes "closed and empty".
    on_last_exit: Notify,
    /// How many times the waiters were woken, for the loom model.
    #[cfg(lifecycle_loom)]
    woken: AtomicUsize,
}

const CLOSED: usize = 1;
const ONE: usize = 2;

impl Tracker {
    /// One more work item; pair it with [`end`](Self::end). Returns the state before (for the
    /// loom model).
    pub(crate) fn add(&self) -> usize {
        // Relaxed: the count orders nothing by itself; the end of work (Release) does.
        let previous = self.state.fetch_add(ONE, Ordering::Relaxed);
        assert!(
            previous <= usize::MAX - ONE,
            "more tracked work than a usize counts"
        );
        previous
    }

    /// One work item ended.
    pub(crate) fn end(&self) {
        // AcqRel: a waiter woken below sees everything the work did; the last ending work sees
        // the close.
        let previous = self.state.fetch_sub(ONE, Ordering::AcqRel);
        if previous == ONE + CLOSED {
            self.wake_waiters();
        }
    }

    /// No more work expected: [`wait`](Self::wait) returns once the count is zero. Idempotent.
    pub(crate) fn close(&self) {
        let previous = self.state.fetch_or(CLOSED, Ordering::AcqRel);
        if previous == 0 {
            self.wake_waiters();
        }
    }

    /// The state became "closed and empty" (invariant 2).
    fn wake_waiters(&self) {
        #[cfg(lifecycle_loom)]
        self.woken.fetch_add(1, Ordering::SeqCst);
        self.on_last_exit.notify_waiters();
    }

    /// Work in flight.
    pub(crate) fn len(&self) -> usize {
        self.state.load(Ordering::Acquire) / ONE
    }

    /// No work in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Completes once the tracker is closed and no work is in flight.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it holds nothing but its place among the waiters.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.on_last_exit.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the read (invariant 3).
            notified.as_mut().enable();
            if self.state.load(Ordering::Acquire) == CLOSED {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(all(test, not(lifecycle_loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_only_once_closed_and_empty() {
        let tracker = Arc::new(Tracker::default());
        tracker.add();
        tracker.add();
        assert_eq!(tracker.len(), 2);
        let waiter = tokio::spawn({
            let tracker = Arc::clone(&tracker);
            async move { tracker.wait().await }
        });
        tracker.end();
        tracker.end();
        assert!(tracker.is_empty());
        // Empty but open: still waiting.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "an open tracker is not done");
        tracker.add();
        tracker.close();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "closed with work in flight");
        tracker.end();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the last end wakes the waiter")
            .unwrap();
        // Closed and empty: a new wait returns at once; work added after the close is waited for.
        tracker.wait().await;
        tracker.add();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), tracker.wait())
                .await
                .is_err()
        );
        tracker.end();
        tracker.wait().await;
    }

    /// Real threads: many adds and ends racing the close and the wait; the wait returns exactly
    /// when everything ended.
    #[test]
    fn ends_on_other_threads_racing_the_close_wake_the_waiter() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..200 {
            let tracker = Arc::new(Tracker::default());
            let ended = Arc::new(AtomicUsize::new(0));
            for _ in 0..8 {
                tracker.add();
            }
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let tracker = Arc::clone(&tracker);
                    let ended = Arc::clone(&ended);
                    std::thread::spawn(move || {
                        for _ in 0..2 {
                            ended.fetch_add(1, Ordering::SeqCst);
                            tracker.end();
                        }
                    })
                })
                .collect();
            tracker.close();
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), tracker.wait())
                    .await
                    .expect("the last end wakes the waiter");
            });
            assert_eq!(
                ended.load(Ordering::SeqCst),
                8,
                "returned before the last end"
            );
            for thread in threads {
                thread.join().unwrap();
            }
        }
    }
}

/// The real code above under loom: `RUSTFLAGS="--cfg lifecycle_loom" cargo test --release
/// -p lifecycle-hooks --lib loom_model` (scripts/test runs it).
#[cfg(all(test, lifecycle_loom))]
mod loom_model {
    use super::*;
    use crate::sync::Arc;

    /// The last ends of work on two threads race the close: whatever the interleaving, the
    /// waiters are woken exactly once, and the tracker ends closed and empty.
    #[test]
    fn the_last_end_and_the_close_wake_the_waiters_exactly_once() {
        ::loom::model(|| {
            let tracker = Arc::new(Tracker::default());
            tracker.add();
            tracker.add();
            let ends: Vec<_> = (0..2)
                .map(|_| {
                    let tracker = Arc::clone(&tracker);
                    ::loom::thread::spawn(move || tracker.end())
                })
                .collect();
            tracker.close();
            for end in ends {
                end.join().unwrap();
            }
            assert_eq!(tracker.woken.load(Ordering::SeqCst), 1);
            assert_eq!(tracker.state.load(Ordering::SeqCst), CLOSED);
        });
    }

    /// Work added after the close, ending while another ends: one wake-up, once all ended.
    #[test]
    fn work_added_after_the_close_holds_the_wake_up_until_it_ends() {
        ::loom::model(|| {
            let tracker = Arc::new(Tracker::default());
            tracker.add();
            tracker.close();
            let late = {
                let tracker = Arc::clone(&tracker);
                ::loom::thread::spawn(move || {
                    let before = tracker.add();
                    tracker.end();
                    before
                })
            };
            tracker.end();
            let before = late.join().unwrap();
            // The late work overlapped the first (one "closed and empty" in all: one wake-up),
            // or came after the first end had emptied it (two, one each).
            let expected = if before == ONE + CLOSED { 1 } else { 2 };
            assert_eq!(tracker.woken.load(Ordering::SeqCst), expected);
            assert_eq!(tracker.state.load(Ordering::SeqCst), CLOSED);
        });
    }
}
