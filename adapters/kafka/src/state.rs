//! The state a producer shares with its delivery callback. See [`ProducerStats`].
//!
//! # Invariants
//!
//! 1. A message is counted in `sent` and `in_flight` before it is handed to librdkafka, while the
//!    gate's read lock is held; the delivery callback, which may run on librdkafka's polling
//!    thread before `send` returns, moves it out of `in_flight` into `delivered` or `failed`.
//!    A message refused by librdkafka is taken back out of both at once.
//! 2. Once the gate's write lock has set `closed`, no message is handed to librdkafka again:
//!    every later send sees `closed` under the read lock and fails with `ProducerClosed`, and
//!    every earlier send has finished its hand-over (it held the read lock) and is counted in
//!    `in_flight`. So `in_flight` only falls from then on, and its reaching zero means every
//!    message sent before the close has a delivery report.
//! 3. Wake-ups are never lost: a waiter registers itself (`Notified::enable`, and for queue
//!    space `space_waiters`) before it reads the state it waits on, and the callback changes the
//!    state before it checks for waiters. Both sides use `SeqCst`, so at least one of them sees
//!    the other's write.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::Notify;

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
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// `true` once the producer is closed. Sends hold the read lock across the hand-over to
    /// librdkafka (a non-blocking call), the close takes the write lock once: see invariant 2.
    pub(crate) gate: RwLock<bool>,
    /// A copy of the gate's flag for the delivery callback, which must not take the lock.
    pub(crate) closing: AtomicBool,
    pub(crate) sent: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) purged: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) refused_closed: AtomicU64,
    pub(crate) latency_total_us: AtomicU64,
    pub(crate) latency_max_us: AtomicU64,
    /// Notified when `in_flight` reaches zero while closing.
    pub(crate) settled: Notify,
    /// Notified when a delivery report frees room in librdkafka's queue and someone waits.
    pub(crate) space: Notify,
    /// Sends waiting for room in librdkafka's queue.
    pub(crate) space_waiters: AtomicUsize,
}

impl Shared {
    /// Records one delivery report; wakes whoever waits on it (invariant 3).
    pub(crate) fn record_report(&self, outcome: Report) {
        match outcome {
            Report::Delivered { latency } => {
                // Relaxed: the counters are published to the close by the SeqCst decrement of
                // `in_flight` below, which it reads (acquiring) before them.
                self.delivered.fetch_add(1, Ordering::Relaxed);
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency_total_us.fetch_add(us, Ordering::Relaxed);
                self.latency_max_us.fetch_max(us, Ordering::Relaxed);
            }
            Report::Failed { purged } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if purged {
                    self.purged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // SeqCst: pairs with the waiters' SeqCst loads (invariant 3).
        let left = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == 0 && self.closing.load(Ordering::SeqCst) {
            self.settled.notify_waiters();
        }
        if self.space_waiters.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
    }

    /// Waits until every queued message has a delivery report (invariant 2), or `deadline`.
    /// Returns whether it settled.
    pub(crate) async fn settle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // SeqCst: pairs with the callback's decrement (invariant 3).
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight.load(Ordering::SeqCst) == 0;
            }
        }
    }

    pub(crate) fn stats(&self) -> ProducerStats {
        let delivered = self.delivered.load(Ordering::Relaxed);
        let total_us = self.latency_total_us.load(Ordering::Relaxed);
        ProducerStats {
            sent: self.sent.load(Ordering::Relaxed),
            delivered,
            failed: self.failed.load(Ordering::Relaxed),
            purged: self.purged.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            refused_closed: self.refused_closed.load(Ordering::Relaxed),
            mean_latency: Duration::from_micros(total_us.checked_div(delivered).unwrap_or(0)),
            max_latency: Duration::from_micros(self.latency_max_us.load(Ordering::Relaxed)),
        }
    }
}

/// What a delivery report said.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Report {
    Delivered { latency: Duration },
    Failed { purged: bool },
}
