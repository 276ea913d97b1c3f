//! The producer handle, its builder and its close. See [`Producer`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lifecycle_hooks::{HookContext, HookSpec, LifecycleHandle, Phase};
use rdkafka::ClientConfig;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, FutureRecord, Producer as _, PurgeConfig, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::OnceCell;

use crate::cluster::MockCluster;
use crate::context::DeliveryContext;
use crate::delivery::{Delivery, DeliveryFuture, Pending};
use crate::errors::{BuildError, CloseError, ConnectError, ProducerClosed, SendError};
use crate::state::{ProducerStats, Shared};

/// The default name of the close hook.
pub const DEFAULT_HOOK_NAME: &str = "close_producer";

/// The default name of the startup check from [`Producer::hooks`].
pub const DEFAULT_CONNECT_HOOK_NAME: &str = "connect_producer";

/// How long the startup check waits for a broker to answer by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait librdkafka can be given: it takes milliseconds as an `i32`.
const LIBRDKAFKA_MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// How long a send waits for room in librdkafka's queue by default.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the close hook flushes by default when its hook has no deadline (in `exit` it always
/// has one: the end of the shutdown budget).
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The backoff of a send retrying for queue room after a delivery report woke it.
const MIN_QUEUE_BACKOFF: Duration = Duration::from_millis(1);
const MAX_QUEUE_BACKOFF: Duration = Duration::from_millis(64);

/// The part of a close's timeout kept for the purge: a tenth, at most this much.
const PURGE_RESERVE: Duration = Duration::from_millis(250);

/// The part of the close hook's time left kept so that it reports its own error before the
/// lifecycle would abandon it: a twentieth, at most this much.
const HOOK_MARGIN: Duration = Duration::from_millis(50);

/// Where a deadline lands when `now + timeout` would overflow (`Duration::MAX`): about 30 years
/// on, which no wait reaches (tokio's own "far future" is the same order).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `start + timeout`, saturating at [`FAR_FUTURE`] instead of panicking on overflow.
fn deadline_after(start: tokio::time::Instant, timeout: Duration) -> tokio::time::Instant {
    start
        .checked_add(timeout)
        .unwrap_or_else(|| start + FAR_FUTURE)
}

/// A Kafka producer bound to a lifecycle: open through `stop_intake`, `drain`, `shutdown` and
/// `wait`, flushed and closed by an `exit` hook.
///
/// Cheap to clone (an `Arc`) and thread-safe: build one per process and hand clones to every
/// task. [`send`](Producer::send) queues a message and returns its delivery result. The close
/// hook from [`hook`](Producer::hook) flushes within the time the exit budget has left, then
/// purges what is still undelivered, counts it, and reports it in the hook's error (so the exit
/// status is 1) and in [`Outcome::lost`](lifecycle_hooks::Outcome::lost). After the close every
/// send fails at once with [`ProducerClosed`]; a send racing the close is either delivered or
/// gets `ProducerClosed`, never lost silently.
///
/// Never rely on dropping the producer to flush it: librdkafka's destructor purges what is
/// still queued, and those messages are lost without reaching the lifecycle's outcome. Dropping
/// an unclosed producer with messages in flight logs an error.
///
/// Without [`bootstrap_servers`](ProducerBuilder::bootstrap_servers) it starts librdkafka's
/// mock cluster in-process ([`MockCluster`]), so it runs with no broker.
///
/// ```
/// use lifecycle_hooks::Lifecycle;
/// use lifecycle_hooks_kafka::{Producer, rdkafka::producer::FutureRecord};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let producer = Producer::builder().build()?; // embedded mock cluster
/// // A startup check that a broker answers, and the close in `exit`.
/// let lifecycle = Lifecycle::builder().hooks(producer.hooks()).build()?;
/// let handle = lifecycle.handle();
/// let job = handle.spawn({
///     let (producer, handle) = (producer.clone(), handle.clone());
///     async move {
///         handle.draining().await;
///         // Still open: the producer closes only after all work has ended.
///         producer.send(FutureRecord::<str, str>::to("orders").payload("42")).await
///     }
/// });
/// handle.stop();
/// let outcome = lifecycle.run().await;
/// assert_eq!(outcome.exit_code(), 0);
/// // The job ran to its end (`Some`), and its message was delivered.
/// let delivery = job.await?.expect("the job was not cancelled")?;
/// assert_eq!(delivery.offset, 0);
/// assert_eq!(producer.stats().delivered, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    /// `Some` until [`Inner`] is dropped, when it moves to a [`Teardown`].
    client: Option<ThreadedProducer<DeliveryContext>>,
    shared: Arc<Shared>,
    /// The result of the one close; later closes return it again.
    closed: OnceCell<Result<CloseReport, CloseError>>,
    close_on: Phase,
    hook_name: Cow<'static, str>,
    /// The startup check's name and timeout; `None` if it is turned off.
    connect: Option<(Cow<'static, str>, Duration)>,
    queue_timeout: Duration,
    close_timeout: Duration,
    bootstrap_servers: String,
    cluster: Option<MockCluster>,
}

impl Inner {
    fn client(&self) -> &ThreadedProducer<DeliveryContext> {
        // Only `Drop` takes it, and nothing borrows `Inner` then.
        self.client
            .as_ref()
            .expect("the librdkafka client lives as long as the producer")
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
/// [`SendError::Purged`]; the counters count them).
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

/// Why a hand-over to librdkafka did not happen.
enum Refused<'a, K: ToBytes + ?Sized, P: ToBytes + ?Sized> {
    Closed,
    Full(BaseRecord<'a, K, P, Arc<Pending>>),
    Error(KafkaError),
}

impl<K: ToBytes + ?Sized, P: ToBytes + ?Sized> Refused<'_, K, P> {
    /// The error a sender gets; `waited` is how long it waited for queue room.
    fn into_error(self, waited: Duration) -> SendError {
        match self {
            Refused::Closed => ProducerClosed.into(),
            Refused::Full(_) => SendError::QueueFull { waited },
            Refused::Error(source) => SendError::Enqueue { source },
        }
    }
}

impl Producer {
    /// A builder: the embedded mock cluster by default, closed in `exit`.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::default()
    }

    /// Queues `record` and waits for its delivery result.
    ///
    /// If librdkafka's queue is full, it waits for room up to the
    /// [queue timeout](ProducerBuilder::queue_timeout), retrying when delivery reports come
    /// (and, since librdkafka frees their room just after, a few milliseconds later).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] at once if the producer is closed; otherwise see [`SendError`].
    ///
    /// # Cancel safety
    ///
    /// Once the message is queued, dropping the future does not unqueue it: it is still
    /// delivered (or purged at close) and counted. Before that, nothing was sent.
    ///
    /// # Panics
    ///
    /// If the queue is full and the send must wait outside a tokio runtime with a timer.
    pub async fn send<K, P>(&self, record: FutureRecord<'_, K, P>) -> Result<Delivery, SendError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (pending, delivery) = Pending::new(self.inner.shared.clock.raw());
        let mut record = into_base(record, pending);
        let Err(refused) = self.hand_over(record) else {
            return delivery.await;
        };
        let Refused::Full(back) = refused else {
            return Err(refused.into_error(Duration::ZERO));
        };
        // The queue is full: retry each time a delivery report may have made room, until the
        // queue timeout. Registered before each retry, so a report in between is not missed.
        // librdkafka frees a report's room only after the report's callbacks have returned, so a
        // wake-up can come just before the room: once woken, retry also after a short backoff
        // (1 ms, doubling to 64 ms) for as long as the queue stays full. With no report at all
        // (the broker is down), the wait is a plain wait until the queue timeout.
        record = back;
        let shared = &*self.inner.shared;
        let deadline = deadline_after(tokio::time::Instant::now(), self.inner.queue_timeout);
        let mut backoff: Option<Duration> = None;
        loop {
            let (notified, waiter) = shared.space();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            match self.hand_over(record) {
                Ok(()) => {
                    drop(waiter);
                    return delivery.await;
                }
                Err(Refused::Full(back)) => record = back,
                Err(refused) => return Err(refused.into_error(self.inner.queue_timeout)),
            }
            let wake = backoff.map_or(deadline, |b| deadline.min(tokio::time::Instant::now() + b));
            let woken = tokio::time::timeout_at(wake, notified).await.is_ok();
            if !woken && tokio::time::Instant::now() >= deadline {
                return Err(SendError::QueueFull {
                    waited: self.inner.queue_timeout,
                });
            }
            backoff = Some(match backoff {
                Some(b) if !woken => (b * 2).min(MAX_QUEUE_BACKOFF),
                _ => MIN_QUEUE_BACKOFF,
            });
        }
    }

    /// Queues `record` without waiting for room, and returns a future of its delivery result.
    ///
    /// Use it to queue many messages before awaiting their results.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the producer is closed, [`SendError::QueueFull`] (with
    /// `waited` zero) if librdkafka's queue is full, [`SendError::Enqueue`] if librdkafka refuses
    /// the message. In every case nothing was queued.
    pub fn try_send<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
    ) -> Result<DeliveryFuture, SendError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (pending, delivery) = Pending::new(self.inner.shared.clock.raw());
        match self.hand_over(into_base(record, pending)) {
            Ok(()) => Ok(delivery),
            Err(refused) => Err(refused.into_error(Duration::ZERO)),
        }
    }

    /// Hands a record to librdkafka unless the producer is closed (state invariants 1 and 2).
    /// Non-blocking: librdkafka refuses rather than waits when its queue is full.
    fn hand_over<'a, K, P>(
        &self,
        record: BaseRecord<'a, K, P, Arc<Pending>>,
    ) -> Result<(), Refused<'a, K, P>>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let shared = &*self.inner.shared;
        // Counted before the hand-over: the delivery report may come before `send` returns.
        if !shared.enter() {
            return Err(Refused::Closed);
        }
        match self.inner.client().send(record) {
            Ok(()) => Ok(()),
            Err((error, record)) => {
                shared.leave();
                if error == KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) {
                    Err(Refused::Full(record))
                } else {
                    Err(Refused::Error(error))
                }
            }
        }
    }

    /// Closes the producer: refuses new sends, flushes what is queued, and purges what is still
    /// undelivered when the time is up.
    ///
    /// From the first call on, every [`send`](Producer::send) fails at once with
    /// [`ProducerClosed`]; every send that got in before is delivered or, after the flush, purged
    /// (its sender gets [`SendError::Purged`]). The whole close takes about `timeout` at most:
    /// the flush gets all of it but a tenth (at most 250 ms), kept for the purge. Closing again,
    /// or concurrently, returns the result of the first close.
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
        // What failed since the close began counts this close's purges and the failures during
        // its flush. If some reports are still missing, those messages are undelivered too:
        // `in_flight` is read first, and a report recorded between the two reads (failed
        // counted, then in flight decremented) is counted twice, never missed. (A send that entered before the close but was descheduled inside
        // librdkafka's non-blocking produce call for the whole flush lands after the purge: it
        // is counted here as undelivered, and its sender gets a report when librdkafka settles
        // it, at the latest when the client is destroyed.)
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

    /// The close hook: in the [closing phase](ProducerBuilder::close_on) (default `exit`), named
    /// [`hook_name`](ProducerBuilder::hook_name) (default `close_producer`).
    ///
    /// It [closes](Producer::close) the producer within the time the hook has left
    /// ([`HookContext::time_left`]: the end of the shutdown budget, or the hook's own timeout if
    /// you set one with [`HookSpec::timeout`]), keeping a twentieth of it (at most 50 ms) so it
    /// reports before it would be abandoned. If messages were purged, it fails with
    /// [`CloseError::Undelivered`] (exit status 1) and reports them with
    /// [`LifecycleHandle::report_lost`]. Order it against other exit hooks with
    /// [`HookSpec::after`] / [`HookSpec::before`].
    ///
    /// If the hook never runs (an earlier exit hook used the budget up, or its phase was
    /// skipped), or is cut off before its close ends (a second signal while it flushes in
    /// `shutdown`), the producer is closed at once: what is still undelivered is purged, counted
    /// in [`stats`](Producer::stats), and reported with `report_lost` in one summary entry
    /// (`"N Kafka message(s) purged undelivered: ..."`), before the outcome is built.
    pub fn hook(&self) -> HookSpec {
        let producer = self.clone();
        let skipped = self.clone();
        HookSpec::new(
            self.inner.close_on.clone(),
            self.inner.hook_name.clone(),
            move |ctx: HookContext| {
                let producer = producer.clone();
                async move { producer.close_from_hook(&ctx).await.map(drop) }
            },
        )
        .on_skipped(move |handle: &LifecycleHandle| {
            skipped.close_now(
                handle,
                format_args!("hook `{}` was skipped", skipped.inner.hook_name),
            );
        })
    }

    async fn close_from_hook(&self, ctx: &HookContext) -> Result<CloseReport, CloseError> {
        let in_flight_work = ctx.handle().in_flight();
        if *ctx.phase() != Phase::EXIT && in_flight_work > 0 {
            tracing::warn!(
                target: "lifecycle_hooks_kafka",
                phase = %ctx.phase(),
                in_flight_work,
                "closing the Kafka producer while work is still in flight: its sends will fail \
                 with ProducerClosed; close it in `exit`"
            );
        }
        let timeout = match ctx.time_left() {
            Some(left) => left.saturating_sub((left / 20).min(HOOK_MARGIN)),
            None => self.inner.close_timeout,
        };
        // Dropped with the hook's future if the lifecycle cuts the hook off mid-close.
        let mut cut_off = CutOff {
            producer: self,
            ctx,
            armed: true,
        };
        let result = self.close(timeout).await;
        cut_off.armed = false;
        if let Err(CloseError::Undelivered { undelivered, .. }) = &result {
            ctx.handle().report_lost(format!(
                "{undelivered} Kafka message(s) purged or failed undelivered by hook `{}`",
                ctx.name()
            ));
        }
        result
    }

    /// Closes at once, without flushing, for a close hook that never ran or was cut off: no send
    /// enters from now on, what is still undelivered is purged and reported lost. Synchronous
    /// and non-blocking (the purge is asked for, its reports come through librdkafka's polling
    /// thread); returns how many messages it reported.
    fn close_now(&self, handle: &LifecycleHandle, why: fmt::Arguments<'_>) -> u64 {
        let shared = &*self.inner.shared;
        shared.close();
        // In flight first (invariant 4 of `state.rs`): a purge report landing between the two
        // reads is counted twice, never missed. Purges only happen at a close, so `purged`
        // holds what a close cut off before it could report has already purged.
        let in_flight = shared.in_flight();
        let undelivered = in_flight + shared.purged();
        if undelivered == 0 {
            tracing::info!(target: "lifecycle_hooks_kafka", "{why}; the Kafka producer had nothing in flight");
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
            "{undelivered} Kafka message(s) purged undelivered: {why} before the producer was flushed"
        ));
        undelivered
    }

    /// The producer's hooks, to add with `Builder::hooks`: the startup check
    /// [`connect_hook_name`](ProducerBuilder::connect_hook_name) (default `connect_producer`,
    /// unless [turned off](ProducerBuilder::connect_on_startup)), then the close
    /// [`hook`](Producer::hook).
    ///
    /// The startup check [connects](Producer::connect) within the
    /// [connect timeout](ProducerBuilder::connect_timeout) (default 5 s, cut shorter if a stop
    /// arrives during startup): if no broker answers, startup fails (exit status 1) with a
    /// [`ConnectError`] naming the brokers, and the service never reports ready (`READY=1`).
    pub fn hooks(&self) -> Vec<HookSpec> {
        let mut hooks = Vec::with_capacity(2);
        if let Some((name, timeout)) = &self.inner.connect {
            let (producer, timeout) = (self.clone(), *timeout);
            hooks.push(HookSpec::new(
                Phase::STARTUP,
                name.clone(),
                move |ctx: HookContext| {
                    let producer = producer.clone();
                    let timeout = ctx.time_left().map_or(timeout, |left| left.min(timeout));
                    async move { producer.connect(timeout).await }
                },
            ));
        }
        hooks.push(self.hook());
        hooks
    }

    /// Waits until a broker answers a metadata request (all topics), at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`ConnectError`], naming the bootstrap servers, if none answered in time.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads. The request runs on tokio's blocking pool and, if the future
    /// is dropped, finishes there within `timeout` (librdkafka cannot cancel it).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect(&self, timeout: Duration) -> Result<(), ConnectError> {
        let producer = self.clone();
        // librdkafka takes an `i32` of milliseconds: a longer wait would wrap around.
        let wait = timeout.min(LIBRDKAFKA_MAX_TIMEOUT);
        let answered = tokio::task::spawn_blocking(move || {
            producer
                .inner
                .client()
                .client()
                .fetch_metadata(None, wait)
                .map(|metadata| metadata.brokers().len())
        })
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        match answered {
            Ok(brokers) => {
                tracing::info!(
                    target: "lifecycle_hooks_kafka",
                    bootstrap_servers = %self.inner.bootstrap_servers,
                    brokers,
                    "Kafka producer connected"
                );
                Ok(())
            }
            Err(source) => Err(ConnectError {
                bootstrap_servers: self.inner.bootstrap_servers.clone(),
                timeout,
                source,
            }),
        }
    }

    /// Whether [`close`](Producer::close) has begun: sends fail with [`ProducerClosed`].
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    /// The producer's counters: sent, delivered, failed, purged, in flight, latency.
    pub fn stats(&self) -> ProducerStats {
        self.inner.shared.stats()
    }

    /// The phase the close hook runs in.
    pub fn close_phase(&self) -> &Phase {
        &self.inner.close_on
    }

    /// The `bootstrap.servers` the producer uses (the mock cluster's when embedded).
    pub fn bootstrap_servers(&self) -> &str {
        &self.inner.bootstrap_servers
    }

    /// The embedded mock cluster, when the producer was built without bootstrap servers.
    pub fn mock_cluster(&self) -> Option<&MockCluster> {
        self.inner.cluster.as_ref()
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("bootstrap_servers", &self.inner.bootstrap_servers)
            .field("close_on", &self.inner.close_on)
            .field("closed", &self.is_closed())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Armed while the close hook closes: if the lifecycle drops the hook's future first (its
/// timeout, the budget, a second signal), what the close had not settled is reported lost.
struct CutOff<'a> {
    producer: &'a Producer,
    ctx: &'a HookContext,
    armed: bool,
}

impl Drop for CutOff<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.producer.close_now(
                self.ctx.handle(),
                format_args!("hook `{}` was cut off", self.ctx.name()),
            );
        }
    }
}

fn into_base<'a, K, P>(
    record: FutureRecord<'a, K, P>,
    pending: Arc<Pending>,
) -> BaseRecord<'a, K, P, Arc<Pending>>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    BaseRecord {
        topic: record.topic,
        partition: record.partition,
        payload: record.payload,
        key: record.key,
        timestamp: record.timestamp,
        headers: record.headers,
        delivery_opaque: pending,
    }
}

/// Builds a [`Producer`].
///
/// ```
/// use std::time::Duration;
/// use lifecycle_hooks::Phase;
/// use lifecycle_hooks_kafka::Producer;
///
/// let builder = Producer::builder()
///     .bootstrap_servers("127.0.0.1:9092")
///     .set("linger.ms", "5")
///     .close_on(Phase::EXIT)
///     .hook_name("close_orders_producer")
///     .queue_timeout(Duration::from_secs(2));
/// # drop(builder);
/// ```
#[derive(Debug)]
#[must_use = "a ProducerBuilder does nothing until `build()` is called"]
pub struct ProducerBuilder {
    config: ClientConfig,
    bootstrap_servers: Option<String>,
    mock_brokers: i32,
    close_on: Phase,
    hook_name: Cow<'static, str>,
    connect_hook_name: Cow<'static, str>,
    connect_timeout: Option<Duration>,
    queue_timeout: Duration,
    close_timeout: Duration,
}

impl Default for ProducerBuilder {
    fn default() -> Self {
        ProducerBuilder {
            config: ClientConfig::new(),
            bootstrap_servers: None,
            mock_brokers: 1,
            close_on: Phase::EXIT,
            hook_name: Cow::Borrowed(DEFAULT_HOOK_NAME),
            connect_hook_name: Cow::Borrowed(DEFAULT_CONNECT_HOOK_NAME),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

impl ProducerBuilder {
    /// A real cluster's `bootstrap.servers` (`host:port,...`). Without it, the producer starts
    /// librdkafka's mock cluster in-process.
    pub fn bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.bootstrap_servers = Some(servers.into());
        self
    }

    /// How many brokers the embedded mock cluster has (default 1). Ignored with
    /// [`bootstrap_servers`](ProducerBuilder::bootstrap_servers).
    pub fn mock_brokers(mut self, brokers: i32) -> Self {
        self.mock_brokers = brokers;
        self
    }

    /// Sets any librdkafka producer property (`linger.ms`, `acks`, `message.timeout.ms`...).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.set(key, value);
        self
    }

    /// The phase the close hook runs in: [`Phase::EXIT`] (the default, and the right place).
    ///
    /// [`Phase::SHUTDOWN`] is accepted only to show why it is wrong: shutdown hooks run while
    /// work is still in flight, so every job that still publishes fails with
    /// [`ProducerClosed`] (Sidekiq's `:shutdown` versus `:exit`). Building with it logs a
    /// warning, and so does the hook when it closes under running work. Other phases are
    /// refused by [`build`](ProducerBuilder::build).
    pub fn close_on(mut self, phase: impl Into<Phase>) -> Self {
        self.close_on = phase.into();
        self
    }

    /// The close hook's name (default `close_producer`); give each producer its own.
    pub fn hook_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.hook_name = name.into();
        self
    }

    /// The startup check's name (default `connect_producer`); give each producer its own.
    pub fn connect_hook_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.connect_hook_name = name.into();
        self
    }

    /// How long the startup check of [`Producer::hooks`] waits for a broker to answer
    /// (default 5 s). Zero is refused by [`build`](ProducerBuilder::build).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Whether [`Producer::hooks`] includes the startup check (default `true`). Without it the
    /// service reports ready without knowing whether a broker is reachable, and sends wait up to
    /// `message.timeout.ms` if none is.
    pub fn connect_on_startup(mut self, check: bool) -> Self {
        self.connect_timeout = match (check, self.connect_timeout) {
            (false, _) => None,
            (true, Some(timeout)) => Some(timeout),
            (true, None) => Some(DEFAULT_CONNECT_TIMEOUT),
        };
        self
    }

    /// How long [`Producer::send`] waits for room in librdkafka's full queue (default 5 s).
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// How long the close hook flushes when its hook has no deadline (default 5 s). In `exit`
    /// the hook always has one, the end of the shutdown budget, and that is used instead.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Builds the producer; starts the embedded mock cluster if no bootstrap servers were given.
    ///
    /// # Errors
    ///
    /// [`BuildError::ClosePhase`] for a closing phase other than `exit` or `shutdown`;
    /// [`BuildError::ConnectTimeout`] for a zero connect timeout;
    /// [`BuildError::MockCluster`] if the mock cluster does not start; [`BuildError::Client`] if
    /// librdkafka rejects the configuration.
    pub fn build(self) -> Result<Producer, BuildError> {
        if self.close_on != Phase::EXIT && self.close_on != Phase::SHUTDOWN {
            return Err(BuildError::ClosePhase {
                phase: self.close_on.to_string(),
            });
        }
        if self.connect_timeout == Some(Duration::ZERO) {
            return Err(BuildError::ConnectTimeout);
        }
        if self.close_on == Phase::SHUTDOWN {
            tracing::warn!(
                target: "lifecycle_hooks_kafka",
                hook = %self.hook_name,
                "the Kafka producer closes in `shutdown`, while work is still in flight: jobs that \
                 still publish will fail with ProducerClosed; close it in `exit`"
            );
        }
        let (cluster, bootstrap_servers) = match self.bootstrap_servers {
            Some(servers) => (None, servers),
            None => {
                let cluster = MockCluster::new(self.mock_brokers)?;
                let servers = cluster.bootstrap_servers().to_owned();
                (Some(cluster), servers)
            }
        };
        let mut config = self.config;
        config.set("bootstrap.servers", &bootstrap_servers);
        let shared = Arc::new(Shared::default());
        let context = DeliveryContext {
            shared: Arc::clone(&shared),
        };
        let client = ThreadedProducer::from_config_and_context(&config, context)
            .map_err(|source| BuildError::Client { source })?;
        Ok(Producer {
            inner: Arc::new(Inner {
                client: Some(client),
                shared,
                closed: OnceCell::new(),
                close_on: self.close_on,
                hook_name: self.hook_name,
                connect: self
                    .connect_timeout
                    .map(|timeout| (self.connect_hook_name, timeout)),
                queue_timeout: self.queue_timeout,
                close_timeout: self.close_timeout,
                bootstrap_servers,
                cluster,
            }),
        })
    }
}
