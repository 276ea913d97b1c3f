//! How a producer is configured and built. See [`ProducerBuilder`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use lifecycle_hooks::Phase;
use rdkafka::ClientConfig;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::producer::ThreadedProducer;
use tokio::sync::OnceCell;

use super::{Inner, Producer};
use crate::cluster::MockCluster;
use crate::context::DeliveryContext;
use crate::errors::BuildError;
use crate::state::Shared;

/// The default name of the close hook.
pub const DEFAULT_HOOK_NAME: &str = "close_producer";

/// The default name of the startup check from [`Producer::hooks`].
pub const DEFAULT_CONNECT_HOOK_NAME: &str = "connect_producer";

/// How long the startup check waits for a broker to answer by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a send waits for room in librdkafka's queue by default.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the close hook flushes by default when its hook has no deadline (in `exit` it always
/// has one: the end of the shutdown budget).
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// [`Phase::SHUTDOWN`] is accepted only to show why it is wrong: shutdown hooks run while work
    /// is still in flight, so every job that still publishes fails with
    /// [`ProducerClosed`](crate::ProducerClosed) (Sidekiq's `:shutdown` versus `:exit`). Building
    /// with it logs a warning, and so does the hook when it closes under running work. Other phases
    /// are refused by [`build`](ProducerBuilder::build).
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
