//! What a pool has done so far. See [`Counters`].

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a pool's counters, from [`JobPool::counters`](crate::JobPool::counters).
///
/// Every fetched job ends in exactly one of `completed`, `failed`, `requeued` or `lost`;
/// `in_flight` is the fetched jobs that have not ended yet (running, or waiting to be handed
/// back). So `fetched == completed + failed + requeued + lost + in_flight`, and after the pool's
/// exit hook `in_flight` is 0: [`is_settled`](Counters::is_settled).
///
/// `recovered` counts jobs the source put back on the queue by itself (left behind by a dead
/// process, or taken by a fetch that intake stop dropped); the pool never ran them, so they are
/// outside the ledger. `source_errors` counts backend errors (fetch, ack, fail, requeue, close).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Jobs the pool fetched.
    pub fetched: u64,
    /// Jobs whose handler returned `Ok` (and that were acknowledged), and jobs past their
    /// [point of no return](crate::JobContext::point_of_no_return) that the exit hook
    /// acknowledged while they still ran at the end of its budget.
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
    /// Whether every fetched job has ended in exactly one way: nothing in flight, and
    /// `fetched == completed + failed + requeued + lost`.
    pub fn is_settled(&self) -> bool {
        self.in_flight == 0 && self.fetched == self.ended()
    }

    fn ended(&self) -> u64 {
        self.completed + self.failed + self.requeued + self.lost
    }
}

/// How many cache lines each counter is spread over.
const STRIPES: usize = 8;

/// A counter spread over cache lines, one per thread (round robin), so that workers counting
/// jobs on different threads do not fight over one line. Adds are `Release` and reads
/// `Acquire`, so a reader that sees a job's ending also sees its fetch (which happened before
/// it); a sum taken while jobs change state may miss those jobs.
#[derive(Debug, Default)]
pub(crate) struct Striped([Padded; STRIPES]);

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// Hands each thread its stripe.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: Cell<Option<usize>> = const { Cell::new(None) };
}

fn stripe() -> usize {
    STRIPE.with(|stripe| match stripe.get() {
        Some(at) => at,
        None => {
            // Relaxed: only uniqueness-ish spreading matters, not order.
            let at = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
            stripe.set(Some(at));
            at
        }
    })
}

impl Striped {
    pub(crate) fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Ordering::Release);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.iter().fold(0u64, |sum, cell| {
            sum.wrapping_add(cell.0.load(Ordering::Acquire))
        })
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Cells {
    pub(crate) fetched: Striped,
    pub(crate) completed: Striped,
    pub(crate) failed: Striped,
    pub(crate) requeued: Striped,
    pub(crate) lost: Striped,
    pub(crate) recovered: Striped,
    pub(crate) source_errors: Striped,
}

impl Cells {
    pub(crate) fn snapshot(&self) -> Counters {
        // Endings first, fetches last: a job seen ended was fetched before (Acquire/Release),
        // so `fetched` read afterwards includes it, and `in_flight` is never negative.
        let mut counters = Counters {
            completed: self.completed.get(),
            failed: self.failed.get(),
            requeued: self.requeued.get(),
            lost: self.lost.get(),
            recovered: self.recovered.get(),
            source_errors: self.source_errors.get(),
            ..Counters::default()
        };
        counters.fetched = self.fetched.get();
        counters.in_flight = counters.fetched.saturating_sub(counters.ended());
        counters
    }
}
