//! What a pool has done so far. See [`Counters`].

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a pool's counters, from [`JobPool::counters`](crate::JobPool::counters).
///
/// Every fetched job ends in exactly one of `completed`, `failed`, `requeued` or `lost`, and is
/// `in_flight` until then, so [`is_balanced`](Counters::is_balanced) holds whenever no job is
/// changing state during the read — always after the pool's exit hook.
///
/// `recovered` counts jobs the source put back on the queue by itself (left behind by a dead
/// process, or taken by a fetch that intake stop dropped); the pool never ran them, so they are
/// outside the balance. `source_errors` counts backend errors (fetch, ack, fail, requeue).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Jobs the pool fetched.
    pub fetched: u64,
    /// Jobs whose handler returned `Ok` (and that were acknowledged).
    pub completed: u64,
    /// Runs that failed: the handler returned an error or panicked.
    pub failed: u64,
    /// Jobs handed back unfinished: cancelled at the drain deadline, fetched after intake
    /// stopped, or checkpointed by their handler.
    pub requeued: u64,
    /// Jobs that could neither finish nor be handed back (reported in `Outcome::lost`).
    pub lost: u64,
    /// Jobs fetched and not yet completed, failed, requeued or lost.
    pub in_flight: u64,
    /// Jobs the source put back on the queue by itself; the pool never ran them.
    pub recovered: u64,
    /// Errors from the source.
    pub source_errors: u64,
}

impl Counters {
    /// Whether `fetched == completed + failed + requeued + lost + in_flight`.
    pub fn is_balanced(&self) -> bool {
        self.fetched == self.completed + self.failed + self.requeued + self.lost + self.in_flight
    }
}

/// The live counters. All `Relaxed`: each is an independent tally, no other memory is published
/// through them, and a snapshot taken while jobs change state may be skewed by those jobs.
#[derive(Debug, Default)]
pub(crate) struct Cells {
    pub(crate) fetched: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) source_errors: AtomicU64,
}

impl Cells {
    pub(crate) fn add(cell: &AtomicU64, n: u64) {
        cell.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(cell: &AtomicU64, n: u64) {
        cell.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let completed = self.completed.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let requeued = self.requeued.load(Ordering::Relaxed);
        let lost = self.lost.load(Ordering::Relaxed);
        Counters {
            in_flight,
            completed,
            failed,
            requeued,
            lost,
            recovered: self.recovered.load(Ordering::Relaxed),
            source_errors: self.source_errors.load(Ordering::Relaxed),
            fetched: self.fetched.load(Ordering::Relaxed),
        }
    }
}
