//! The producer's lifecycle hooks: the startup check that a broker answers, and the close.
//! See [`Producer::hooks`].

use std::time::Duration;

use lifecycle_hooks::{HookContext, HookSpec, LifecycleHandle, Phase};
use rdkafka::producer::Producer as _;

use super::Producer;
use super::close::CloseReport;
use crate::errors::{CloseError, ConnectError};

/// The longest wait librdkafka can be given: it takes milliseconds as an `i32`.
const LIBRDKAFKA_MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// The part of the close hook's time left kept so that it reports its own error before the
/// lifecycle would abandon it: a twentieth, at most this much.
const HOOK_MARGIN: Duration = Duration::from_millis(50);

impl Producer {
    /// The close hook: in the [closing phase](crate::ProducerBuilder::close_on) (default `exit`),
    /// named [`hook_name`](crate::ProducerBuilder::hook_name) (default `close_producer`).
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

    /// The producer's hooks, to add with `Builder::hooks`: the startup check
    /// [`connect_hook_name`](crate::ProducerBuilder::connect_hook_name) (default
    /// `connect_producer`, unless [turned off](crate::ProducerBuilder::connect_on_startup)), then
    /// the close [`hook`](Producer::hook).
    ///
    /// The startup check [connects](Producer::connect) within the [connect
    /// timeout](crate::ProducerBuilder::connect_timeout) (default 5 s, cut shorter if a stop
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
    /// Cancel safe: it only reads. The request blocks a thread of its own, not tokio's blocking
    /// pool: if the future is dropped (a stop cuts the startup check off), the request ends
    /// there within `timeout`, and the runtime, which waits for its blocking pool when it shuts
    /// down, does not wait for it.
    ///
    /// # Panics
    ///
    /// If the operating system cannot start a thread.
    pub async fn connect(&self, timeout: Duration) -> Result<(), ConnectError> {
        tracing::debug!(
            target: "lifecycle_hooks_kafka",
            bootstrap_servers = %self.inner.bootstrap_servers,
            timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            "waiting for a Kafka broker to answer"
        );
        let producer = self.clone();
        // librdkafka takes an `i32` of milliseconds: a longer wait would wrap around.
        let wait = timeout.min(LIBRDKAFKA_MAX_TIMEOUT);
        let (reply, answer) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("kafka-connect-check".into())
            .spawn(move || {
                let answered = producer
                    .inner
                    .client()
                    .client()
                    .fetch_metadata(None, wait)
                    .map(|metadata| metadata.brokers().len());
                // Nobody listens any more if the check was cut off.
                let _ = reply.send(answered);
            })
            .expect("the operating system starts a thread for the Kafka startup check");
        let answered = answer
            .await
            .expect("the Kafka startup check's thread answers (fetching metadata does not panic)");
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
