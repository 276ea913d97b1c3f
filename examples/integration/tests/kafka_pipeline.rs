//! Process tests of `examples/kafka_pipeline.rs`: real signals to the real binary, against a
//! Kafka broker that outlives each process (librdkafka's mock cluster held by the test, or a
//! `tansu` process), checking the input → output ledger across stops, deadlines and restarts.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lifecycle_hooks_kafka::MockCluster;
use lifecycle_hooks_kafka::rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, TopicReplication,
};
use lifecycle_hooks_kafka::rdkafka::client::DefaultClientContext;
use lifecycle_hooks_kafka::rdkafka::consumer::{BaseConsumer, Consumer as _};
use lifecycle_hooks_kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use lifecycle_hooks_kafka::rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use nix::sys::signal::Signal;
use support::Service;

const PARTITIONS: i32 = 4;

/// The `summary` line's fields.
fn summary(lines: &[String]) -> HashMap<String, u64> {
    let last = lines.last().expect("some output");
    let fields = last
        .strip_prefix("summary ")
        .unwrap_or_else(|| panic!("the last line is the summary, got {last:?}"));
    let fields: HashMap<String, String> = fields
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let keys = [
        "exit_code",
        "fetched",
        "processed",
        "failed",
        "committed",
        "handed_back",
        "produced",
        "delivered",
        "producer_closed_errors",
        "undelivered",
    ];
    let mut numbers: HashMap<String, u64> = keys
        .iter()
        .map(|k| {
            let v = fields
                .get(*k)
                .unwrap_or_else(|| panic!("`{k}` missing in {last}"));
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect();
    let reason = match fields["reason"].as_str() {
        "stop" => 0,
        "restart" => 4,
        _ => 1,
    };
    numbers.insert("reason".into(), reason);
    // The ledger holds in every summary.
    assert_eq!(
        numbers["fetched"],
        numbers["processed"] + numbers["failed"] + numbers["handed_back"],
        "{last}"
    );
    numbers
}

fn config(servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", servers);
    config
}

/// Produces `m-0..m-<count>` (key = payload), one record per batch (`batch.num.messages=1`:
/// tansu skips the rest of a batch when a consumer resumes inside it).
fn seed(servers: &str, topic: &str, count: usize) {
    let producer: BaseProducer = config(servers)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .expect("a producer");
    for i in 0..count {
        let payload = format!("m-{i}");
        producer
            .send(BaseRecord::to(topic).key(&payload).payload(&payload))
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("written");
}

/// Reads `topic` from the beginning until it holds `want` distinct payloads, then to its end
/// (bounded: 60 s in all), and returns how often each payload appears.
fn read_until(servers: &str, topic: &str, want: usize) -> BTreeMap<String, usize> {
    let consumer: BaseConsumer = config(servers)
        .set("group.id", "kafka-pipeline-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("an offset");
    }
    consumer.assign(&tpl).expect("assigned");
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut seen = BTreeMap::new();
    while seen.len() < want {
        let left = give_up.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{} of {want} distinct messages in {topic} after 60 s",
            seen.len()
        );
        // A blocking wait for the next message, not a sleep.
        if let Some(message) = consumer.poll(left.min(Duration::from_millis(500))) {
            let message = message.expect("a message");
            let payload = message.payload_view::<str>().and_then(Result::ok).unwrap();
            // An earlier read's end marker is not a message of the pipeline.
            if !payload.starts_with(END) {
                *seen.entry(payload.to_owned()).or_insert(0) += 1;
            }
        }
    }
    // Then the rest of the topic as it stands, duplicates included, to its end: an end marker
    // appended to each partition marks it (an idle timeout could stop before a late copy).
    static READS: AtomicUsize = AtomicUsize::new(0);
    let end = format!("{END}{}", READS.fetch_add(1, Ordering::Relaxed));
    let marker: BaseProducer = config(servers).create().expect("a producer");
    for p in 0..PARTITIONS {
        marker
            .send(BaseRecord::<str, str>::to(topic).partition(p).payload(&end))
            .map_err(|(e, _)| e)
            .expect("the end marker is queued");
    }
    marker
        .flush(Duration::from_secs(30))
        .expect("the end markers are written");
    let mut ended = 0;
    while ended < PARTITIONS {
        let left = give_up.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{ended} of {PARTITIONS} end markers in {topic} after 60 s"
        );
        if let Some(message) = consumer.poll(left) {
            let message = message.expect("a message");
            match message.payload_view::<str>().and_then(Result::ok).unwrap() {
                payload if payload == end => ended += 1,
                // An earlier read's marker.
                payload if payload.starts_with(END) => {}
                payload => *seen.entry(payload.to_owned()).or_insert(0) += 1,
            }
        }
    }
    seen
}

/// What `read_until` appends to each partition to find its end, numbered per read (a later read
/// passes over the markers of the earlier ones).
const END: &str = "__end_of_partition__";

fn pipeline(servers: &str, group: &str, extra: &[&str]) -> Service {
    let mut args = vec![
        "--brokers",
        servers,
        "--group",
        group,
        "--input",
        "input",
        "--output",
        "output",
    ];
    args.extend_from_slice(extra);
    Service::start(
        "kafka_pipeline",
        &args,
        &[("RUST_LOG", "lifecycle_hooks=info,kafka_pipeline=debug")],
    )
}

fn mock() -> MockCluster {
    let cluster = MockCluster::new(1).expect("a mock cluster");
    cluster.create_topic("input", PARTITIONS).unwrap();
    cluster.create_topic("output", PARTITIONS).unwrap();
    cluster
}

/// Runs the pipeline until the output holds every `m-0..m-<total>`; returns its summary.
fn run_to_completion(servers: &str, group: &str, total: usize) -> HashMap<String, u64> {
    let service = pipeline(servers, group, &["--job-ms", "0"]);
    // Waits for the output; what it holds is checked once every process has ended.
    read_until(servers, "output", total);
    service.signal(Signal::SIGTERM);
    let (lines, status) = service.finish();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    summary(&lines)
}

#[test]
fn sigterm_mid_processing_finishes_and_commits_in_flight() {
    let cluster = mock();
    let servers = cluster.bootstrap_servers().to_owned();
    seed(&servers, "input", 40);
    let mut service = pipeline(
        &servers,
        "g-term",
        &["--job-ms", "300", "--concurrency", "4"],
    );
    // Messages are in flight: wait for two to have started, then stop.
    service.expect_log(|l| l.contains("message started"));
    service.expect_log(|l| l.contains("message started"));
    service.signal(Signal::SIGTERM);
    let (lines, status) = service.finish();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    let first = summary(&lines);
    assert_eq!(first["reason"], 0);
    assert!(first["processed"] >= 2, "{first:?}");
    assert_eq!(first["handed_back"], 0, "{first:?}");
    assert_eq!(first["committed"], first["processed"], "{first:?}");
    assert_eq!(first["delivered"], first["processed"], "{first:?}");
    assert_eq!(
        first["producer_closed_errors"] + first["undelivered"],
        0,
        "{first:?}"
    );
    assert!(first["processed"] < 40, "the stop came mid-way: {first:?}");
    // The next member resumes exactly after: every message once in the output.
    let second = run_to_completion(&servers, "g-term", 40);
    assert_eq!(
        first["processed"] + second["processed"],
        40,
        "{first:?} {second:?}"
    );
    let out = read_until(&servers, "output", 40);
    assert!(out.values().all(|n| *n == 1), "duplicates: {out:?}");
}

#[test]
fn messages_cut_at_the_deadline_are_redelivered_once() {
    let cluster = mock();
    let servers = cluster.bootstrap_servers().to_owned();
    seed(&servers, "input", 12);
    let mut service = pipeline(
        &servers,
        "g-deadline",
        &[
            "--job-ms",
            "60000",
            "--concurrency",
            "4",
            "--shutdown-timeout-ms",
            "1500",
        ],
    );
    service.expect_log(|l| l.contains("message started"));
    service.signal(Signal::SIGUSR2);
    let (lines, status) = service.finish();
    // Forced: work was cut off at the deadline.
    assert_eq!(status.code(), Some(2), "{lines:?}");
    let first = summary(&lines);
    assert!(first["handed_back"] >= 1, "{first:?}");
    assert_eq!(first["handed_back"], first["fetched"], "{first:?}");
    assert_eq!(first["committed"] + first["produced"], 0, "{first:?}");
    let second = run_to_completion(&servers, "g-deadline", 12);
    assert_eq!(second["processed"], 12, "{second:?}");
    let out = read_until(&servers, "output", 12);
    assert!(out.values().all(|n| *n == 1), "duplicates: {out:?}");
}

/// A `tansu broker` on a free port of 127.0.0.1; killed on drop.
struct Tansu {
    child: Child,
    servers: String,
}

impl Tansu {
    fn start() -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`tansu` 0.6.0 is installed (.ci/setup.d/30-tansu.sh)");
        let tansu = Tansu {
            child,
            servers: format!("127.0.0.1:{port}"),
        };
        let probe: BaseProducer = config(&tansu.servers)
            .set("reconnect.backoff.max.ms", "100")
            .create()
            .unwrap();
        probe
            .client()
            .fetch_metadata(None, Duration::from_secs(30))
            .expect("tansu answers within 30 s");
        tansu
    }

    fn create_topics(&self) {
        let admin: AdminClient<DefaultClientContext> = config(&self.servers).create().unwrap();
        let topics = [
            NewTopic::new("input", PARTITIONS, TopicReplication::Fixed(1)),
            NewTopic::new("output", PARTITIONS, TopicReplication::Fixed(1)),
        ];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in runtime
            .block_on(admin.create_topics(&topics, &options))
            .expect("CreateTopics answered")
        {
            result.expect("topic created");
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rolling_usr2_restarts_under_load_on_tansu() {
    const MESSAGES: usize = 1000;
    const RESTARTS: usize = 10;
    let tansu = Tansu::start();
    tansu.create_topics();
    let servers = tansu.servers.clone();
    // One record per batch: tansu skips the rest of a batch when fetching from inside it.
    seed(&servers, "input", MESSAGES);
    let mut processed = 0;
    for restart in 0..RESTARTS {
        let mut service = pipeline(
            &servers,
            "g-rolling",
            &[
                "--job-ms",
                "5",
                "--concurrency",
                "4",
                "--shutdown-timeout-ms",
                "10000",
            ],
        );
        // Under load: restart once a few messages of this process have started.
        for _ in 0..20 {
            service.expect_log(|l| l.contains("message started"));
        }
        service.signal(Signal::SIGUSR2);
        let (lines, status) = service.finish();
        assert_eq!(status.code(), Some(4), "restart {restart}: {lines:?}");
        let s = summary(&lines);
        assert_eq!(s["reason"], 4);
        assert_eq!(s["handed_back"], 0, "restart {restart}: {s:?}");
        assert_eq!(s["committed"], s["processed"], "restart {restart}: {s:?}");
        assert_eq!(s["producer_closed_errors"], 0, "restart {restart}: {s:?}");
        assert_eq!(s["undelivered"], 0, "restart {restart}: {s:?}");
        processed += s["processed"];
    }
    assert!(processed < MESSAGES as u64, "the restarts came under load");
    let last = run_to_completion(&servers, "g-rolling", MESSAGES);
    let out = read_until(&servers, "output", MESSAGES);
    let duplicates: usize = out.values().map(|n| n - 1).sum();
    eprintln!(
        "rolling: {RESTARTS} restarts, {} messages processed before the last run, {} in it, \
         {duplicates} duplicates",
        processed, last["processed"]
    );
    assert_eq!(out.len(), MESSAGES);
    assert_eq!(
        duplicates, 0,
        "every in-flight message finished inside the budget"
    );
    assert_eq!(processed + last["processed"], MESSAGES as u64);
}
