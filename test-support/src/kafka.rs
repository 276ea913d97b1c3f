//! The broker under test (librdkafka's mock cluster or a `tansu` process on 127.0.0.1) and a
//! consumer that reads messages back.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lifecycle_hooks_kafka::rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, TopicReplication,
};
use lifecycle_hooks_kafka::rdkafka::client::DefaultClientContext;
use lifecycle_hooks_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use lifecycle_hooks_kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use lifecycle_hooks_kafka::rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use lifecycle_hooks_kafka::{MockCluster, ProducerBuilder};

/// A broker the tests produce to and read back from.
pub enum Broker {
    Mock(MockCluster),
    Tansu(Tansu),
}

impl Broker {
    /// librdkafka's mock cluster, one broker.
    pub fn mock() -> Broker {
        Broker::Mock(MockCluster::new(1).expect("the mock cluster starts"))
    }

    /// A `tansu` broker process on a free port of 127.0.0.1, ready for requests.
    pub async fn tansu() -> Broker {
        let tansu = tokio::task::spawn_blocking(Tansu::start)
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        Broker::Tansu(tansu)
    }

    pub fn bootstrap_servers(&self) -> String {
        match self {
            Broker::Mock(cluster) => cluster.bootstrap_servers().to_owned(),
            Broker::Tansu(tansu) => tansu.bootstrap_servers.clone(),
        }
    }

    /// A producer builder pointed at this broker.
    pub fn producer(&self) -> ProducerBuilder {
        lifecycle_hooks_kafka::Producer::builder().bootstrap_servers(self.bootstrap_servers())
    }

    /// Makes the broker unreachable: the mock broker goes down, the tansu process is killed.
    pub fn take_down(&mut self) {
        match self {
            Broker::Mock(cluster) => cluster.broker_down(1).expect("the mock broker goes down"),
            Broker::Tansu(tansu) => tansu.kill(),
        }
    }

    /// Creates a topic with a name no other test uses.
    pub async fn topic(&self, prefix: &str, partitions: i32) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match self {
            // librdkafka's mock cluster does not serve CreateTopics; it has its own call.
            Broker::Mock(cluster) => cluster
                .create_topic(&name, partitions)
                .unwrap_or_else(|error| panic!("topic {name} not created: {error}")),
            Broker::Tansu(tansu) => {
                let admin: AdminClient<DefaultClientContext> =
                    client_config(&tansu.bootstrap_servers)
                        .create()
                        .expect("an admin client");
                let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
                let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
                let results = admin
                    .create_topics(&[topic], &options)
                    .await
                    .expect("CreateTopics answered");
                for result in results {
                    result.unwrap_or_else(|(topic, e)| panic!("topic {topic} not created: {e}"));
                }
            }
        }
        name
    }
}

fn client_config(bootstrap_servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers);
    config
}

/// Reads back everything in `topic` (partitions `0..partitions`), sorted.
///
/// To know where the topic ends without trusting high watermarks (tansu 0.6 reports the last
/// batch's base offset + 1), it first appends an end marker to each partition with a plain
/// producer, then reads from the beginning until it has seen every marker. Panics if that
/// takes more than 30 s (a failure bound, not a synchronization).
pub async fn read_back(bootstrap_servers: &str, topic: &str, partitions: i32) -> Vec<String> {
    let (servers, topic) = (bootstrap_servers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let marker: BaseProducer = client_config(&servers).create().expect("a producer");
        for partition in 0..partitions {
            let record = BaseRecord::<str, str>::to(&topic)
                .partition(partition)
                .payload(END);
            marker
                .send(record)
                .map_err(|(e, _)| e)
                .expect("the end marker is queued");
        }
        marker
            .flush(Duration::from_secs(30))
            .expect("the end markers are written");

        let consumer: BaseConsumer = client_config(&servers)
            .set("group.id", "lifecycle-hooks-kafka-read-back")
            .set("enable.auto.commit", "false")
            .create()
            .expect("a consumer");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(&topic, partition, Offset::Beginning)
                .expect("a valid offset");
        }
        consumer.assign(&assignment).expect("partitions assigned");
        let give_up = Instant::now() + Duration::from_secs(30);
        let mut payloads = Vec::new();
        let mut ended = 0;
        while ended < partitions {
            let left = give_up.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "read {} messages and {ended} of {partitions} end markers from {topic} in 30 s",
                payloads.len()
            );
            // A blocking wait for the next message, not a sleep.
            if let Some(message) = consumer.poll(left) {
                let message = message.expect("a message, not a consumer error");
                let payload = message.payload_view::<str>().and_then(Result::ok);
                match payload.expect("a UTF-8 payload") {
                    END => ended += 1,
                    payload => payloads.push(payload.to_owned()),
                }
            }
        }
        payloads.sort();
        payloads
    })
    .await
    .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
}

const END: &str = "__end_of_partition__";

/// Sorted, for comparing what was sent with what was read back (duplicates included).
pub fn sorted<I: IntoIterator<Item = String>>(items: I) -> Vec<String> {
    let mut items: Vec<String> = items.into_iter().collect();
    items.sort();
    items
}

/// A `tansu broker` process on 127.0.0.1, in-memory storage; killed on drop.
pub struct Tansu {
    child: Option<Child>,
    pub bootstrap_servers: String,
    log: PathBuf,
}

impl Tansu {
    /// Starts tansu on a free port and waits until it answers a metadata request.
    ///
    /// # Panics
    ///
    /// If `tansu` is not installed (CI installs it: `.ci/setup.d/30-tansu.sh`) or does not come
    /// up within 30 s.
    pub fn start() -> Tansu {
        // Ask the OS for a free port, then hand it to tansu.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("tansu-{}-{port}.log", std::process::id()));
        let output = File::create(&log).expect("a log file for tansu");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file handle"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "could not run `tansu` ({error}): these tests need it; install it with \
                     `cargo install --locked tansu --version 0.6.0 --features dynostore` (.ci/setup.d/30-tansu.sh)"
                )
            });
        let mut tansu = Tansu {
            child: Some(child),
            bootstrap_servers: format!("127.0.0.1:{port}"),
            log,
        };
        tansu.wait_ready();
        tansu
    }

    fn wait_ready(&mut self) {
        // librdkafka retries the connection until tansu listens; a short backoff cap keeps the
        // wait close to tansu's start-up time.
        let probe: BaseProducer = client_config(&self.bootstrap_servers)
            .set("reconnect.backoff.ms", "10")
            .set("reconnect.backoff.max.ms", "100")
            .create()
            .expect("a probe client");
        if let Err(error) = probe.client().fetch_metadata(None, Duration::from_secs(30)) {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!(
                "tansu on {} did not answer a metadata request in 30 s ({error}); exited: \
                 {exited:?}; its log:\n{log}",
                self.bootstrap_servers
            );
        }
    }

    /// Kills the broker (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Reads `topic` from the beginning until `expected` distinct keys were seen (a blocking read,
/// at most [`PATIENCE`](crate::process::PATIENCE) per message, while the producing service may still run), then whatever
/// else is already there, and returns every key read: duplicates show as repeats.
pub fn read_keys(servers: &str, topic: &str, partitions: i32, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "lifecycle-hooks-read-keys")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut keys = Vec::new();
    let mut distinct = BTreeSet::new();
    while distinct.len() < expected {
        let message = consumer
            .poll(crate::process::PATIENCE)
            .unwrap_or_else(|| panic!("{} of {expected} keys after waiting", distinct.len()))
            .expect("a message");
        let key = String::from_utf8(message.key().expect("a key").to_vec()).unwrap();
        distinct.insert(key.clone());
        keys.push(key);
    }
    // Anything else already on the topic (a duplicate would come after its first copy).
    while let Some(message) = consumer.poll(Duration::from_secs(1)) {
        let message = message.expect("a message");
        keys.push(String::from_utf8(message.key().expect("a key").to_vec()).unwrap());
    }
    keys
}
