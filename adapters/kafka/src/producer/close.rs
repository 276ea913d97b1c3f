//! The producer's close: flush, purge and the count of what was not delivered; the close at
//! once of a hook that never ran; and the teardown when the last clone is dropped. See
//! [`Producer::close`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lifecycle_hooks::LifecycleHandle;
use rdkafka::producer::{Producer as _, PurgeConfig, ThreadedProducer};

use super::{Inner, Producer};
use crate::cluster::MockCluster;
use crate::context::DeliveryContext;
use crate::deadline_after;
use crate::errors::CloseError;
use crate::state::{ProducerStats, Shared};

/// The part of a close's timeout kept for the purge: a tenth, at most this much.
const PURGE_RESERVE: Duration = Duration::from_millis(250);

/// What a close did: how much it flushed and how long it took.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseReport {
    /// Messages that were in flight when the close began; all of them got a delivery report.
    pub in_flight_at_close: u64,
    /// How long the close took.
    pub elapsed: Duration,
    /// The producer's counters once closed.
    pub stats: ProducerStats,
}

impl Producer {
    /// Closes the producer: refuses new sends, flushes what is queued, and purges what is still
    /// undelivered when the time is up.
    ///
    /// From the first call on, every [`send`](Producer::send) fails at once with
    /// [`ProducerClosed`](crate::ProducerClosed); every send that got in before is delivered or,
    /// after the flush, purged (its sender gets
    /// [`SendError::Purged`](crate::errors::SendError::Purged)). The whole close takes about
    /// `timeout` at most: the flush gets all of it but a tenth (at most 250 ms), kept for the
    /// purge. Closing again, or concurrently, returns the result of the first close.
    ///
    /// Use [`hook`](Producer::hook) rather than calling this yourself: it closes in `exit`, with
    /// the time the budget has left, and reports losses into the lifecycle's outcome.
    ///
    /// # Errors
    ///
    /// [`CloseError::Undelivered`] with the number of messages purged.
    ///
    /// # Cancel safety
    ///
    /// The producer stays closed to new sends if the future is dropped; a later call resumes
    /// the flush.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with a timer (the purge runs on its blocking pool).
    pub async fn close(&self, timeout: Duration) -> Result<CloseReport, CloseError> {
        self.inner
            .closed
            .get_or_init(|| self.close_once(timeout))
            .await
            .clone()
    }

    async fn close_once(&self, timeout: Duration) -> Result<CloseReport, CloseError> {
        let started = tokio::time::Instant::now();
        let shared = &*self.inner.shared;
        // From here on no send enters; senders waiting for queue room wake up and see it.
        let in_flight_at_close = shared.close();
        // Every job has ended by `exit`: a message that fails from now on (its delivery timed
        // out, the broker refused it) has nobody left to hear it, so the close counts it as
        // undelivered along with what it purges. The state first (invariant 4 of `state.rs`).
        let failed_before = shared.failed();
        tracing::info!(
            target: "lifecycle_hooks_kafka",
            in_flight = in_flight_at_close,
            bootstrap_servers = %self.inner.bootstrap_servers,
            timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            "closing the Kafka producer: flushing"
        );
        // A nudge: a zero-timeout flush wakes librdkafka's broker threads with its "flushing"
        // flag set, and a thread that runs before the flag is cleared sends without waiting out
        // `linger.ms`; either way queued messages go out within `linger.ms`. The wait itself is
        // on our own delivery count, woken by each report (rdkafka's blocking `flush` would
        // notice the end only at its next 100 ms poll).
        let _ = self.inner.client().flush(Duration::ZERO);
        let reserve = (timeout / 10).min(PURGE_RESERVE);
        let flushed = shared
            .settle(deadline_after(started, timeout.saturating_sub(reserve)))
            .await;
        let flushed_for = started.elapsed();
        let failed_flushing = shared.failed() - failed_before;
        if flushed && failed_flushing == 0 {
            let stats = shared.stats();
            tracing::info!(
                target: "lifecycle_hooks_kafka",
                flushed = in_flight_at_close,
                elapsed_ms = flushed_for.as_millis() as u64,
                sent = stats.sent,
                delivered = stats.delivered,
                failed = stats.failed,
                mean_latency_us = stats.mean_latency.as_micros() as u64,
                max_latency_us = stats.max_latency.as_micros() as u64,
                "Kafka producer closed"
            );
            return Ok(CloseReport {
                in_flight_at_close,
                elapsed: flushed_for,
                stats,
            });
        }

        // Out of time, or some failed: purge what is queued or in flight. Each purged message
        // comes back as a delivery report with a purge error, through librdkafka's polling
        // thread.
        let producer = self.clone();
        let purge = tokio::task::spawn_blocking(move || {
            producer
                .inner
                .client()
                .purge(PurgeConfig::default().queue().inflight());
        });
        let _ = purge.await;
        let settled = shared
            .settle(deadline_after(started, timeout).max(tokio::time::Instant::now()))
            .await;
        // What failed since the close began counts this close's purges and the failures during its
        // flush. If some reports are still missing, those messages are undelivered too: `in_flight`
        // is read first, and a report recorded between the two reads (failed counted, then in
        // flight decremented) is counted twice, never missed. (A send that entered before the close
        // but was descheduled inside librdkafka's non-blocking produce call for the whole flush
        // lands after the purge: it is counted here as undelivered, and its sender gets a report
        // when librdkafka settles it, at the latest when the client is destroyed.)
        let unreported = if settled { 0 } else { shared.in_flight() };
        let undelivered = unreported + (shared.failed() - failed_before);
        let stats = shared.stats();
        tracing::error!(
            target: "lifecycle_hooks_kafka",
            undelivered,
            flushed_for_ms = flushed_for.as_millis() as u64,
            sent = stats.sent,
            delivered = stats.delivered,
            failed = stats.failed,
            "Kafka producer closed with undelivered messages: failed or purged"
        );
        Err(CloseError::Undelivered {
            undelivered,
            flushed_for,
        })
    }

    /// Closes at once, without flushing, for a close hook that never ran or was cut off: no send
    /// enters from now on, what is still undelivered is purged and reported lost. Synchronous
    /// and non-blocking (the purge is asked for, its reports come through librdkafka's polling
    /// thread); returns how many messages it reported.
    pub(super) fn close_now(&self, handle: &LifecycleHandle, why: fmt::Arguments<'_>) -> u64 {
        let shared = &*self.inner.shared;
        shared.close();
        // In flight first (invariant 4 of `state.rs`): a purge report landing between the two
        // reads is counted twice, never missed. Purges only happen at a close, so `purged`
        // holds what a close cut off before it could report has already purged.
        let in_flight = shared.in_flight();
        let undelivered = in_flight + shared.purged();
        if undelivered == 0 {
            tracing::info!(
                target: "lifecycle_hooks_kafka",
                "{why}; the Kafka producer had nothing in flight"
            );
            return 0;
        }
        if in_flight > 0 {
            self.inner
                .client()
                .purge(PurgeConfig::default().queue().inflight().non_blocking());
        }
        tracing::error!(
            target: "lifecycle_hooks_kafka",
            bootstrap_servers = %self.inner.bootstrap_servers,
            undelivered,
            "{why}: the Kafka producer closed at once and purged its undelivered messages"
        );
        handle.report_lost(format!(
            "{undelivered} Kafka message(s) purged undelivered: {why} before the producer was \
             flushed"
        ));
        undelivered
    }
}

impl Drop for Inner {
    /// The last clone is gone. Dropping librdkafka's client blocks: it joins rdkafka's polling
    /// thread (which polls in 100 ms turns), purges what is still queued, waits up to 500 ms for
    /// the purge reports and destroys the client, and the mock cluster joins its own thread.
    /// Inside a tokio runtime that is done on its blocking pool, so the task that dropped the
    /// last clone (often in async code) returns at once and no worker thread stalls; the
    /// runtime waits for it when it shuts down. Outside a runtime it is done here.
    fn drop(&mut self) {
        let teardown = Teardown {
            client: self.client.take(),
            cluster: self.cluster.take(),
            shared: Arc::clone(&self.shared),
            purged_before: self.shared.purged(),
            bootstrap_servers: std::mem::take(&mut self.bootstrap_servers),
        };
        match tokio::runtime::Handle::try_current() {
            // If the runtime is shutting down, the closure is dropped instead of run: the
            // teardown then happens in its `Drop`, on the thread dropping it, just the same.
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(teardown))),
            Err(_) => drop(teardown),
        }
    }
}

/// The blocking end of a producer: destroys the librdkafka client, then the mock cluster, and
/// logs what librdkafka purged on the way (those messages' senders get
/// [`SendError::Purged`](crate::errors::SendError::Purged); the counters count them).
struct Teardown {
    client: Option<ThreadedProducer<DeliveryContext>>,
    cluster: Option<MockCluster>,
    shared: Arc<Shared>,
    purged_before: u64,
    bootstrap_servers: String,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let in_flight = self.shared.in_flight();
        // The client before the cluster it may be connected to.
        drop(self.client.take());
        drop(self.cluster.take());
        // The polling thread is joined: every report it delivered is counted.
        let purged = self.shared.purged() - self.purged_before;
        let unreported = self.shared.in_flight();
        if purged > 0 || unreported > 0 {
            tracing::error!(
                target: "lifecycle_hooks_kafka",
                bootstrap_servers = %self.bootstrap_servers,
                in_flight,
                purged,
                unreported,
                "Kafka producer dropped with undelivered messages: librdkafka purged them; \
                 close it in `exit` (`Producer::hook`) so they are flushed or reported lost"
            );
        }
    }
}
