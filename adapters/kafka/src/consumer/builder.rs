//! How a consumer is configured and built. See [`ConsumerBuilder`].

use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ConsumedMessage;
use lifecycle_hooks::LifecycleHandle;
use rdkafka::ClientConfig;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use super::poll::{PollContext, RebalanceCallback, RebalanceEvent};
use super::state::Shared;
use super::{BoxError, Consumer, Inner, Runner, run_slot};
use crate::cluster::MockCluster;
use crate::errors::BuildError;

/// The default name of the startup hook that subscribes.
pub const DEFAULT_SUBSCRIBE_HOOK_NAME: &str = "subscribe_consumer";
/// The default name of the `stop_intake` hook that pauses.
pub const DEFAULT_PAUSE_HOOK_NAME: &str = "pause_consumer";
/// The default name of the exit hook that commits and closes.
pub const DEFAULT_CLOSE_HOOK_NAME: &str = "close_consumer";
/// How long a revocation waits for the revoked partitions' in-flight messages by default.
pub const DEFAULT_REVOKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fetched messages a partition buffers before the poll thread waits for room, by
/// default (see [`ConsumerBuilder::buffer`]).
const DEFAULT_BUFFER: usize = 4096;

/// Builds a [`Consumer`].
///
/// ```
/// use std::time::Duration;
/// use lifecycle_hooks_kafka::Consumer;
///
/// let builder = Consumer::builder("billing", ["orders", "refunds"])
///     .bootstrap_servers("127.0.0.1:9092")
///     .concurrency(4)
///     .static_member("billing-1") // KIP-345: restarts within the session timeout keep partitions
///     .set("session.timeout.ms", "30000")
///     .close_before("close_producer"); // the consumer commits and closes before the producer
/// # drop(builder);
/// ```
#[must_use = "a ConsumerBuilder does nothing until `build()` is called"]
pub struct ConsumerBuilder {
    config: ClientConfig,
    group: String,
    topics: Vec<String>,
    bootstrap_servers: Option<String>,
    mock_brokers: i32,
    concurrency: usize,
    buffer: usize,
    revoke_timeout: Duration,
    subscribe_hook: Cow<'static, str>,
    pause_hook: Cow<'static, str>,
    close_hook: Cow<'static, str>,
    close_before: Vec<Cow<'static, str>>,
    on_rebalance: Option<Arc<RebalanceCallback>>,
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    pub(super) fn new(group: String, topics: Vec<String>) -> ConsumerBuilder {
        ConsumerBuilder {
            config: ClientConfig::new(),
            group,
            topics,
            bootstrap_servers: None,
            mock_brokers: 1,
            concurrency: 1,
            buffer: DEFAULT_BUFFER,
            revoke_timeout: DEFAULT_REVOKE_TIMEOUT,
            subscribe_hook: Cow::Borrowed(DEFAULT_SUBSCRIBE_HOOK_NAME),
            pause_hook: Cow::Borrowed(DEFAULT_PAUSE_HOOK_NAME),
            close_hook: Cow::Borrowed(DEFAULT_CLOSE_HOOK_NAME),
            close_before: Vec::new(),
            on_rebalance: None,
        }
    }

    /// A real cluster's `bootstrap.servers`. Without it, the consumer starts librdkafka's mock
    /// cluster in-process.
    pub fn bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.bootstrap_servers = Some(servers.into());
        self
    }

    /// How many brokers the embedded mock cluster has (default 1).
    pub fn mock_brokers(mut self, brokers: i32) -> Self {
        self.mock_brokers = brokers;
        self
    }

    /// Sets any librdkafka consumer property (`session.timeout.ms`, `auto.offset.reset`,
    /// `partition.assignment.strategy`...). `enable.auto.offset.store` is always `false`: the
    /// consumer stores the offsets of ended messages itself.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.set(key, value);
        self
    }

    /// How many partitions process a message at the same time (default 1). Within a partition,
    /// messages are processed one at a time, in order.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// How many fetched messages a partition may buffer (default 4096; a batch from the poll
    /// thread may overshoot it by up to 256). When a partition's buffer is full, the poll
    /// thread stops taking messages (librdkafka keeps prefetching up to its own
    /// `queued.max.messages.kbytes`) until the buffer is down to three quarters, for at most
    /// 500 ms;
    /// a partition still full then is paused until its buffer empties, so that a slow handler
    /// does not hold up the group's callbacks. Each pause makes librdkafka drop and later
    /// fetch again what it had prefetched for the partition.
    pub fn buffer(mut self, messages: usize) -> Self {
        self.buffer = messages.max(1);
        self
    }

    /// Static group membership (KIP-345): sets `group.instance.id`.
    ///
    /// A static member does not leave the group when it closes: if a process with the same id
    /// joins again within `session.timeout.ms`, it gets its partitions back without a group
    /// rebalance (the exit-4 restart). The same holds for a final stop: its partitions stay
    /// assigned to the gone member, unconsumed, until the session times out, then the group
    /// rebalances. Choose it for restarts in place (systemd, a StatefulSet) with a session
    /// timeout longer than a restart; leave it off for services that scale down often.
    pub fn static_member(mut self, instance_id: impl Into<String>) -> Self {
        self.config.set("group.instance.id", instance_id.into());
        self
    }

    /// How long a revocation waits for the revoked partitions' in-flight messages before it
    /// commits and gives them up (default 10 s; keep it under `max.poll.interval.ms`).
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    /// The name of the startup hook that subscribes (default `subscribe_consumer`).
    pub fn subscribe_hook_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.subscribe_hook = name.into();
        self
    }

    /// The name of the `stop_intake` hook that pauses (default `pause_consumer`).
    pub fn pause_hook_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.pause_hook = name.into();
        self
    }

    /// The name of the exit hook that commits and closes (default `close_consumer`).
    pub fn close_hook_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.close_hook = name.into();
        self
    }

    /// Orders the close hook before the exit hook `name` (a producer's `close_producer`): the
    /// consumer commits and closes, then the producer flushes and closes. The graph refuses
    /// to build if `name` is not an exit hook.
    pub fn close_before(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.close_before.push(name.into());
        self
    }

    /// Calls `callback` on the poll thread at each rebalance step of this member (instrumentation,
    /// like Karafka's rebalance events). Keep it short: the rebalance waits for it.
    pub fn on_rebalance(
        mut self,
        callback: impl Fn(RebalanceEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.on_rebalance = Some(Arc::new(callback));
        self
    }

    /// Builds the consumer with `handler`, called for each message (a [`ConsumedMessage`]: see
    /// there how long it may be kept) with the lifecycle's handle.
    ///
    /// # Errors
    ///
    /// [`BuildError::MockCluster`] if the mock cluster does not start; [`BuildError::Consumer`]
    /// if librdkafka rejects the configuration.
    pub fn build<F, Fut>(self, handler: F) -> Result<Consumer, BuildError>
    where
        F: Fn(ConsumedMessage, LifecycleHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        // The slot's loop is compiled for this handler: its futures are neither boxed nor
        // called through a `dyn` per message; only each slot is (see `Runner`).
        let handler = Arc::new(handler);
        let runner: Arc<Runner> = Arc::new(move |inner, lifecycle, run| {
            Box::pin(run_slot(inner, Arc::clone(&handler), lifecycle, run))
        });
        let (cluster, bootstrap_servers) = match self.bootstrap_servers {
            Some(servers) => (None, servers),
            None => {
                let cluster = MockCluster::new(self.mock_brokers)?;
                let servers = cluster.bootstrap_servers().to_owned();
                (Some(cluster), servers)
            }
        };
        let mut config = self.config;
        config
            .set("bootstrap.servers", &bootstrap_servers)
            .set("group.id", &self.group)
            .set("enable.auto.offset.store", "false");
        if config.get("auto.offset.reset").is_none() {
            config.set("auto.offset.reset", "earliest");
        }
        let shared = Arc::new(Shared::new(self.concurrency, self.buffer));
        let context = PollContext {
            shared: Arc::clone(&shared),
            revoke_timeout: self.revoke_timeout,
            on_rebalance: self.on_rebalance,
            inner: std::sync::OnceLock::new(),
        };
        let client = BaseConsumer::from_config_and_context(&config, context)
            .map_err(|source| BuildError::Consumer { source })?;
        let inner = Arc::new(Inner {
            client: Arc::new(client),
            shared,
            runner,
            topics: self.topics,
            group: self.group,
            bootstrap_servers,
            subscribe_hook: self.subscribe_hook,
            pause_hook: self.pause_hook,
            close_hook: self.close_hook,
            close_before: self.close_before,
            poll: Mutex::new(None),
            cluster,
        });
        let _ = inner.client.context().inner.set(Arc::downgrade(&inner));
        Ok(Consumer { inner })
    }
}
