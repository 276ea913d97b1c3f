//! What an HTTP server has served. See [`Counters`].

use std::sync::atomic::{AtomicU64, Ordering};

/// What an [`HttpServer`](crate::HttpServer) has served so far; from
/// [`HttpServer::counters`](crate::HttpServer::counters), also logged when it closes.
///
/// Every request ends in exactly one of `completed`, `cut` or `aborted`; until then it is
/// `in_flight`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Connections accepted.
    pub connections: u64,
    /// Requests whose head was received and handed to the service.
    pub requests: u64,
    /// Requests whose response was produced and its body sent to the end (an upgraded
    /// connection, such as a WebSocket, counts when it is dropped).
    pub completed: u64,
    /// Requests the server cut because they were still running when the exit phase began
    /// (after the drain deadline and the cancel grace); each is named in `Outcome::stuck_work`.
    pub cut: u64,
    /// Requests that ended early without the server cutting them: the client went away, or the
    /// response body failed.
    pub aborted: u64,
    /// Requests running now.
    pub in_flight: u64,
}

/// The live counters; relaxed atomics, since each is a statistic read on its own.
#[derive(Debug, Default)]
pub(crate) struct Cells {
    pub(crate) connections: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) cut: AtomicU64,
    pub(crate) aborted: AtomicU64,
}

impl Cells {
    pub(crate) fn add(cell: &AtomicU64, n: u64) {
        cell.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters, given the open connections' own counts (begun, completed, aborted),
    /// summed under the server's registry lock.
    pub(crate) fn snapshot_with(&self, open: (u64, u64, u64)) -> Counters {
        // Relaxed loads of separate cells are not one snapshot: `in_flight` saturates rather
        // than underflow when an end is seen before its start.
        let completed = self.completed.load(Ordering::Relaxed) + open.1;
        let cut = self.cut.load(Ordering::Relaxed);
        let aborted = self.aborted.load(Ordering::Relaxed) + open.2;
        let requests = self.requests.load(Ordering::Relaxed) + open.0;
        Counters {
            connections: self.connections.load(Ordering::Relaxed),
            requests,
            completed,
            cut,
            aborted,
            in_flight: requests.saturating_sub(completed + cut + aborted),
        }
    }
}
