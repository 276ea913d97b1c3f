//! The state a producer shares with its delivery callback. See [`ProducerStats`].
//!
//! # Invariants
//!
//! 1. One atomic word, `state`, holds the `CLOSED` bit and the count of messages in flight. A
//!    send enters by incrementing it (one `fetch_add`) before it hands the message to
//!    librdkafka; the delivery callback, which may run on librdkafka's polling thread before
//!    `send` returns, leaves by decrementing it. A send that finds `CLOSED` in the value it
//!    incremented, or whose message librdkafka refuses, leaves at once.
//! 2. Once `close` has set `CLOSED`, no send enters again: every later increment sees the bit.
//!    Every send that entered before is still counted until its message has a delivery report
//!    (or was refused). So the count only falls from then on, and its reaching zero means every
//!    message queued before the close has a delivery report.
//! 3. Wake-ups are never lost: a waiter registers itself (`Notified::enable`, and for queue room
//!    `space_waiters`) before it reads the state it waits on, and the callback changes the state
//!    before it checks for waiters. Both sides use `SeqCst`, so at least one of them sees the
//!    other's write.
//! 4. The report counters are written before the decrement of `state` (a `SeqCst`, so release)
//!    and read after a load of it (so acquire): whoever sees a message leave sees its report.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::sync::{AtomicU64, AtomicUsize, Notified, Notify};

/// The `CLOSED` bit of [`Shared::state`]; the bits below it count messages in flight.
const CLOSED: u64 = 1 << 63;

/// Counters of one producer, from [`Producer::stats`](crate::Producer::stats).
///
/// `sent` counts messages librdkafka accepted into its queue; each ends up `delivered` or
/// `failed` (which includes `purged`), and until then is `in_flight`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerStats {
    /// Messages queued in librdkafka.
    pub sent: u64,
    /// Messages the broker acknowledged.
    pub delivered: u64,
    /// Messages that failed, including those purged at close.
    pub failed: u64,
    /// Messages purged undelivered at close (a part of `failed`).
    pub purged: u64,
    /// Messages queued and not yet reported delivered or failed.
    pub in_flight: u64,
    /// Sends refused at once because the producer was closed (never queued).
    pub refused_closed: u64,
    /// Mean delivery latency (queued to acknowledged) of the delivered messages.
    pub mean_latency: Duration,
    /// Longest delivery latency seen.
    pub max_latency: Duration,
}

/// Shared between the [`Producer`](crate::Producer) and its delivery callback.
///
/// What senders write, what the delivery callback writes, and the word both write sit on
/// separate cache lines, so the two sides do not slow each other down more than they must.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The `CLOSED` bit and the count of messages in flight (invariants 1 and 2).
    state: CacheLine<AtomicU64>,
    reports: CacheLine<Reports>,
    refused_closed: AtomicU64,
    /// Sends waiting for room in librdkafka's queue.
    space_waiters: AtomicUsize,
    /// Notified when the count reaches zero after the close.
    settled: Notify,
    /// Notified when a delivery report frees room in librdkafka's queue and someone waits.
    space: Notify,
    /// Times delivery latency: raw counter readings when queued and reported.
    pub(crate) clock: quanta::Clock,
}

/// Counters only the delivery callback writes.
#[derive(Debug, Default)]
struct Reports {
    delivered: AtomicU64,
    failed: AtomicU64,
    purged: AtomicU64,
    latency_total_us: AtomicU64,
    latency_max_us: AtomicU64,
}

/// Aligns its content to a cache line of its own (64 bytes on the targets that matter here).
#[derive(Debug, Default)]
#[repr(align(64))]
struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl Shared {
    /// Counts a message in flight unless the producer is closed; `false` if it is (the send
    /// must fail with `ProducerClosed`). On `true`, the caller hands the message over, and
    /// calls [`leave`](Shared::leave) if librdkafka refuses it.
    pub(crate) fn enter(&self) -> bool {
        // SeqCst: orders the entry against the close's `fetch_or` (invariant 2) and the
        // settle's load (invariant 3).
        let before = self.state.fetch_add(1, Ordering::SeqCst);
        if before & CLOSED != 0 {
            self.leave();
            // Relaxed: a statistic.
            self.refused_closed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Uncounts a message: its report is recorded, or it was never queued.
    pub(crate) fn leave(&self) {
        // SeqCst: pairs with the settle's enable-then-load (invariant 3), and publishes the
        // report counters written before it (invariant 4).
        let before = self.state.fetch_sub(1, Ordering::SeqCst);
        if before == CLOSED | 1 {
            self.settled.notify_waiters();
        }
    }

    /// Sets `CLOSED`: from now on no send enters (invariant 2). Wakes the senders waiting for
    /// queue room, so they see it. Returns the count in flight.
    pub(crate) fn close(&self) -> u64 {
        // SeqCst: see `enter`.
        let before = self.state.fetch_or(CLOSED, Ordering::SeqCst);
        self.space.notify_waiters();
        before & !CLOSED
    }

    pub(crate) fn is_closed(&self) -> bool {
        // Acquire: a caller that sees the bit also sees everything the close did before it.
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Messages in flight (including sends between their entry and their hand-over).
    pub(crate) fn in_flight(&self) -> u64 {
        // SeqCst: pairs with `leave` (invariants 3 and 4).
        self.state.load(Ordering::SeqCst) & !CLOSED
    }

    /// Records one delivery report, then uncounts the message; wakes whoever waits on either
    /// (invariant 3).
    pub(crate) fn record_report(&self, outcome: Report) {
        let reports = &*self.reports;
        // Relaxed: published by the decrement in `leave` (invariant 4).
        match outcome {
            Report::Delivered { latency } => {
                reports.delivered.fetch_add(1, Ordering::Relaxed);
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                reports.latency_total_us.fetch_add(us, Ordering::Relaxed);
                // Most reports are not a new maximum: skip the read-modify-write for them.
                if us > reports.latency_max_us.load(Ordering::Relaxed) {
                    reports.latency_max_us.fetch_max(us, Ordering::Relaxed);
                }
            }
            Report::Failed { purged } => {
                reports.failed.fetch_add(1, Ordering::Relaxed);
                if purged {
                    reports.purged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.leave();
        // SeqCst: pairs with the waiter's increment before its retry (invariant 3).
        if self.space_waiters.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
    }

    /// Waits until every message queued before the close has a delivery report (invariant 2),
    /// or `deadline`. Returns whether it settled.
    pub(crate) async fn settle(&self, deadline: tokio::time::Instant) -> bool {
        self.settle_or(tokio::time::sleep_until(deadline)).await
    }

    /// Waits until every message queued before the close has a delivery report, or `give_up`
    /// completes. Returns whether it settled.
    pub(crate) async fn settle_or(&self, give_up: impl Future<Output = ()>) -> bool {
        let mut give_up = std::pin::pin!(give_up);
        loop {
            let mut notified = std::pin::pin!(self.settled.notified());
            // Registered before the count is read (invariant 3).
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            tokio::select! {
                biased;
                () = &mut notified => {}
                () = &mut give_up => return self.in_flight() == 0,
            }
        }
    }

    /// Messages that failed so far, purged ones included.
    pub(crate) fn failed(&self) -> u64 {
        // Relaxed: callers load the state first (invariant 4).
        self.reports.failed.load(Ordering::Relaxed)
    }

    /// Messages purged at close so far.
    pub(crate) fn purged(&self) -> u64 {
        // Relaxed: callers load the state first (invariant 4).
        self.reports.purged.load(Ordering::Relaxed)
    }

    /// A future that completes when a delivery report may have freed room in librdkafka's
    /// queue, or at the close; with the guard that makes the callback notify it.
    pub(crate) fn space(&self) -> (Notified<'_>, SpaceWaiter<'_>) {
        // SeqCst: pairs with the callback's load (invariant 3).
        self.space_waiters.fetch_add(1, Ordering::SeqCst);
        (self.space.notified(), SpaceWaiter(self))
    }

    pub(crate) fn stats(&self) -> ProducerStats {
        // The count first (acquiring the reports of the messages that left, invariant 4): a
        // report landing between the loads is counted twice in `sent`, never missed.
        let in_flight = self.in_flight();
        let reports = &*self.reports;
        let delivered = reports.delivered.load(Ordering::Relaxed);
        let failed = reports.failed.load(Ordering::Relaxed);
        let total_us = reports.latency_total_us.load(Ordering::Relaxed);
        ProducerStats {
            sent: delivered + failed + in_flight,
            delivered,
            failed,
            purged: reports.purged.load(Ordering::Relaxed),
            in_flight,
            refused_closed: self.refused_closed.load(Ordering::Relaxed),
            mean_latency: Duration::from_micros(total_us.checked_div(delivered).unwrap_or(0)),
            max_latency: Duration::from_micros(reports.latency_max_us.load(Ordering::Relaxed)),
        }
    }
}

/// Counts one send waiting for room in librdkafka's queue, for as long as it lives.
#[derive(Debug)]
pub(crate) struct SpaceWaiter<'a>(&'a Shared);

impl Drop for SpaceWaiter<'_> {
    fn drop(&mut self) {
        // SeqCst: see `Shared::space`.
        self.0.space_waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a delivery report said.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Report {
    Delivered { latency: Duration },
    Failed { purged: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    #[test]
    fn the_close_refuses_later_entries_and_keeps_earlier_ones() {
        let shared = Shared::default();
        assert!(shared.enter());
        assert!(shared.enter());
        assert_eq!(shared.close(), 2);
        assert!(shared.is_closed());
        assert!(!shared.enter(), "no entry after the close");
        assert_eq!(shared.in_flight(), 2, "a refused entry leaves at once");
        shared.record_report(Report::Delivered {
            latency: Duration::from_millis(4),
        });
        shared.record_report(Report::Failed { purged: true });
        let stats = shared.stats();
        assert_eq!((stats.sent, stats.delivered, stats.failed), (2, 1, 1));
        assert_eq!(
            (stats.purged, stats.in_flight, stats.refused_closed),
            (1, 0, 1)
        );
        assert_eq!(stats.mean_latency, Duration::from_millis(4));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn settle_wakes_when_the_last_report_arrives() {
        let shared = Arc::new(Shared::default());
        assert!(shared.enter());
        shared.close();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let settle = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move { shared.settle(deadline).await }
        });
        tokio::task::yield_now().await;
        assert!(!settle.is_finished(), "waits while a message is in flight");
        shared.record_report(Report::Failed { purged: false });
        assert!(settle.await.unwrap());
        // Woken by the report, not by the deadline.
        assert!(tokio::time::Instant::now() < deadline);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn settle_gives_up_at_the_deadline() {
        let shared = Shared::default();
        assert!(shared.enter());
        shared.close();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        assert!(!shared.settle(deadline).await);
        assert_eq!(tokio::time::Instant::now(), deadline);
    }
}

/// The gate above under loom: `RUSTFLAGS="--cfg lifecycle_loom" cargo test --release
/// -p lifecycle-hooks-kafka --lib loom_model` (scripts/test runs it).
#[cfg(all(test, lifecycle_loom))]
mod loom_model {
    use super::*;

    const DELIVERED: Report = Report::Delivered {
        latency: Duration::ZERO,
    };

    /// A close racing a send and the delivery reports: no send enters after the close, and
    /// `settle` (the real code, with no deadline) returns only once every accepted message has
    /// its report; a lost wake-up would leave it parked, which loom reports as a deadlock.
    #[test]
    fn settle_is_woken_by_the_last_report_and_no_send_enters_after_the_close() {
        // Every interleaving with up to three preemptions (loom's advice for models this size;
        // the bugs such protocols have need one or two).
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let shared = loom::sync::Arc::new(Shared::default());
            assert!(shared.enter(), "one message in flight before the close");
            let sender = {
                let shared = loom::sync::Arc::clone(&shared);
                loom::thread::spawn(move || {
                    let entered = shared.enter();
                    if entered {
                        shared.record_report(DELIVERED);
                    }
                    entered
                })
            };
            let reporter = {
                let shared = loom::sync::Arc::clone(&shared);
                loom::thread::spawn(move || shared.record_report(DELIVERED))
            };
            let in_flight_at_close = shared.close();
            assert!(in_flight_at_close <= 2);
            assert!(loom::future::block_on(
                shared.settle_or(std::future::pending())
            ));
            // Settled: every message accepted before the close has its report. (A send refused
            // after the close may still count itself for an instant before it leaves.)
            let delivered_at_settle = shared.stats().delivered;
            let entered = sender.join().unwrap();
            reporter.join().unwrap();
            assert_eq!(delivered_at_settle, 1 + u64::from(entered));
            assert_eq!(shared.in_flight(), 0);
            assert_eq!(shared.stats().refused_closed, u64::from(!entered));
        });
    }
}
