//! librdkafka's mock cluster, embedded so the producer runs without a broker. See [`MockCluster`].

use std::fmt;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::errors::BuildError;

/// An in-process Kafka cluster: librdkafka's mock cluster, listening on 127.0.0.1.
///
/// It speaks the Kafka protocol for producers and consumers (topics are created on first use,
/// with [`create_topic`](MockCluster::create_topic) for a chosen partition count), and can take
/// brokers down to test what happens when the broker is unreachable. A [`Producer`](crate::Producer)
/// built without bootstrap servers starts one and keeps it for its lifetime.
///
/// librdkafka's handle to the cluster may not move between threads, so it lives on a thread of
/// its own; this type sends that thread commands and stops it when dropped.
///
/// ```
/// use lifecycle_hooks_kafka::MockCluster;
///
/// let cluster = MockCluster::new(1)?;
/// cluster.create_topic("orders", 3)?;
/// println!("bootstrap.servers={}", cluster.bootstrap_servers());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MockCluster {
    bootstrap_servers: String,
    brokers: i32,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

enum Command {
    BrokerDown(i32, mpsc::Sender<KafkaResult<()>>),
    BrokerUp(i32, mpsc::Sender<KafkaResult<()>>),
    CreateTopic(String, i32, mpsc::Sender<KafkaResult<()>>),
    RequestErrors(
        RDKafkaApiKey,
        Vec<RDKafkaRespErr>,
        mpsc::Sender<KafkaResult<()>>,
    ),
}

impl MockCluster {
    /// Starts a cluster of `brokers` brokers (ids `1..=brokers`).
    ///
    /// # Errors
    ///
    /// [`BuildError::MockCluster`] if librdkafka cannot start it (no free port, `brokers < 1`).
    pub fn new(brokers: i32) -> Result<MockCluster, BuildError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("kafka-mock-cluster".into())
            .spawn(move || {
                let cluster = match rdkafka::mocking::MockCluster::new(brokers) {
                    Ok(cluster) => cluster,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Ends when the last `MockCluster` handle is dropped (the sender closes).
                for command in command_rx {
                    let _ = match command {
                        Command::BrokerDown(id, reply) => reply.send(cluster.broker_down(id)),
                        Command::BrokerUp(id, reply) => reply.send(cluster.broker_up(id)),
                        Command::CreateTopic(topic, partitions, reply) => {
                            reply.send(cluster.create_topic(&topic, partitions, 1))
                        }
                        Command::RequestErrors(api_key, errors, reply) => {
                            cluster.request_errors(api_key, &errors);
                            reply.send(Ok(()))
                        }
                    };
                }
            })
            .map_err(|source| BuildError::Thread { source })?;
        let bootstrap_servers = match ready_rx.recv() {
            Ok(Ok(servers)) => servers,
            Ok(Err(source)) => return Err(BuildError::MockCluster { source }),
            Err(_) => {
                return Err(BuildError::MockCluster {
                    source: KafkaError::MockCluster(rdkafka::types::RDKafkaErrorCode::Fail),
                });
            }
        };
        tracing::debug!(target: "lifecycle_hooks_kafka", %bootstrap_servers, brokers, "mock cluster started");
        Ok(MockCluster {
            bootstrap_servers,
            brokers,
            commands,
            thread: Some(thread),
        })
    }

    /// The cluster's `bootstrap.servers` (`127.0.0.1:PORT,...`), for producers and consumers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// How many brokers the cluster has (ids `1..=brokers`).
    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    /// Takes broker `id` down: its connections close and it accepts no new ones until
    /// [`broker_up`](MockCluster::broker_up).
    ///
    /// # Errors
    ///
    /// An error from librdkafka, e.g. for an unknown broker id.
    pub fn broker_down(&self, id: i32) -> KafkaResult<()> {
        self.call(|reply| Command::BrokerDown(id, reply))
    }

    /// Brings broker `id` back up.
    ///
    /// # Errors
    ///
    /// An error from librdkafka, e.g. for an unknown broker id.
    pub fn broker_up(&self, id: i32) -> KafkaResult<()> {
        self.call(|reply| Command::BrokerUp(id, reply))
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1).
    ///
    /// # Errors
    ///
    /// An error from librdkafka, e.g. if the topic exists.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> KafkaResult<()> {
        self.call(|reply| Command::CreateTopic(topic.to_owned(), partitions, reply))
    }

    /// Makes the cluster answer the next requests of `api_key` with `errors`, one request
    /// each, in order (librdkafka's `rd_kafka_mock_push_request_errors`): to test how a
    /// client handles them.
    ///
    /// # Errors
    ///
    /// If the cluster's thread is gone.
    pub fn push_request_errors(
        &self,
        api_key: RDKafkaApiKey,
        errors: &[RDKafkaRespErr],
    ) -> KafkaResult<()> {
        self.call(|reply| Command::RequestErrors(api_key, errors.to_vec(), reply))
    }

    fn call(
        &self,
        command: impl FnOnce(mpsc::Sender<KafkaResult<()>>) -> Command,
    ) -> KafkaResult<()> {
        let (reply, result) = mpsc::channel();
        let gone = || KafkaError::MockCluster(rdkafka::types::RDKafkaErrorCode::Fail);
        self.commands.send(command(reply)).map_err(|_| gone())?;
        result.recv().map_err(|_| gone())?
    }
}

impl fmt::Debug for MockCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockCluster")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        // Closing the command channel ends the thread's loop; it destroys the cluster and exits.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.commands, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
