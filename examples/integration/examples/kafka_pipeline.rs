//! A Karafka-style consume → produce pipeline under one lifecycle: each message of the input
//! topic is "worked" for `--job-ms`, then a derived message (same key, same payload) is produced
//! to the output topic, and the input offset is committed once that delivery is confirmed.
//!
//! `SIGTERM` stops it (status 0), `SIGUSR2` restarts it (status 4): the consumer pauses its
//! partitions but keeps its group membership, in-flight messages finish, their offsets are
//! committed synchronously, the consumer closes, and only then the producer flushes and closes
//! (hook order: `close_consumer` before `close_producer`). Messages still running at the
//! deadline are not committed: the next process gets them again.
//!
//! Embedded default: librdkafka's mock cluster (topics of 4 partitions), so `cargo run --example
//! kafka_pipeline -- --seed 100` needs nothing else.
//!
//! stdout: `ready pid=<pid>` once consuming, then one last line
//! `summary reason=<stop|restart|failure> exit_code=<n> fetched=<n> processed=<n> failed=<n>
//! committed=<n> handed_back=<n> produced=<n> delivered=<n> producer_closed_errors=<n>
//! undelivered=<n>`; progress goes to stderr. Flags: `--brokers LIST`, `--group NAME`
//! (`pipeline`), `--input NAME` (`input`), `--output NAME` (`output`), `--concurrency N` (4,
//! partitions processed at once; one message at a time per partition), `--job-ms N` (50),
//! `--shutdown-timeout-ms N` (25000), `--seed N` (produce N input messages `m-0..` first, one
//! record per batch), `--instance-id ID` (static group membership, KIP-345).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lifecycle_hooks::{Event, Lifecycle, LifecycleHandle, Outcome};
use lifecycle_hooks_kafka::ConsumedMessage;
use lifecycle_hooks_kafka::rdkafka::Message;
use lifecycle_hooks_kafka::rdkafka::producer::FutureRecord;
use lifecycle_hooks_kafka::{Consumer, Producer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The command line.
#[derive(Debug)]
struct Options {
    brokers: Option<String>,
    group: String,
    input: String,
    output: String,
    concurrency: usize,
    job: Duration,
    budget: Duration,
    seed: usize,
    instance_id: Option<String>,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut options = Options {
            brokers: None,
            group: "pipeline".into(),
            input: "input".into(),
            output: "output".into(),
            concurrency: 4,
            job: Duration::from_millis(50),
            budget: Duration::from_secs(25),
            seed: 0,
            instance_id: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .ok_or_else(|| format!("`{flag}` needs a value"))?;
            let number = |what: &str| -> Result<u64, String> {
                value
                    .parse()
                    .map_err(|_| format!("`{flag}` takes {what}, not `{value}`"))
            };
            match flag.as_str() {
                "--brokers" => options.brokers = Some(value),
                "--group" => options.group = value,
                "--input" => options.input = value,
                "--output" => options.output = value,
                "--concurrency" => options.concurrency = number("a count")?.max(1) as usize,
                "--job-ms" => options.job = Duration::from_millis(number("milliseconds")?),
                "--shutdown-timeout-ms" => {
                    options.budget = Duration::from_millis(number("milliseconds")?)
                }
                "--seed" => options.seed = number("a count")? as usize,
                "--instance-id" => options.instance_id = Some(value),
                _ => return Err(format!("unknown flag `{flag}`")),
            }
        }
        Ok(options)
    }
}

/// Prints one line on stdout and flushes it, so a reader sees it at once.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> Result<Outcome, BoxError> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,lifecycle_hooks=info,kafka_pipeline=info".into()),
        )
        .init();
    let options = Options::parse()
        .map_err(|e| format!("{e}\n(see the top of examples/kafka_pipeline.rs)"))?;

    let closed_errors = Arc::new(AtomicU64::new(0));
    // The producer is built after the consumer (which may start the embedded cluster), and the
    // handler reaches it through this cell.
    let producer_cell: Arc<std::sync::OnceLock<Producer>> = Arc::default();
    let mut consumer = Consumer::builder(options.group.clone(), [options.input.clone()])
        .concurrency(options.concurrency)
        .close_before(lifecycle_hooks_kafka::DEFAULT_HOOK_NAME);
    if let Some(brokers) = &options.brokers {
        consumer = consumer.bootstrap_servers(brokers.clone());
    }
    if let Some(id) = &options.instance_id {
        consumer = consumer.static_member(id.clone());
    }
    let consumer = consumer.build({
        let (producer, output, job) = (producer_cell.clone(), options.output.clone(), options.job);
        let closed_errors = closed_errors.clone();
        move |message: ConsumedMessage, _lifecycle: LifecycleHandle| {
            let (producer, output) = (producer.clone(), output.clone());
            let closed_errors = closed_errors.clone();
            async move {
                let producer = producer
                    .get()
                    .ok_or("the producer is built before startup")?;
                work(message, job, producer, &output, &closed_errors).await
            }
        }
    })?;
    if let Some(cluster) = consumer.mock_cluster() {
        cluster.create_topic(&options.input, 4)?;
        cluster.create_topic(&options.output, 4)?;
        tracing::info!(target: "kafka_pipeline", servers = cluster.bootstrap_servers(), "embedded mock Kafka cluster");
    }
    let producer = Producer::builder()
        .bootstrap_servers(consumer.bootstrap_servers())
        .build()?;
    let _ = producer_cell.set(producer.clone());
    if options.seed > 0 {
        seed(consumer.bootstrap_servers(), &options.input, options.seed).await?;
    }

    let lifecycle = Lifecycle::builder()
        .budget(options.budget)
        .hooks(producer.hooks())
        .hooks(consumer.hooks())
        .observe(|event| match event {
            Event::Ready => say(format_args!("ready pid={}", std::process::id())),
            Event::Draining {
                in_flight,
                drain_left,
            } => tracing::info!(
                target: "kafka_pipeline",
                "draining: {in_flight} messages in flight, {:.1} s left",
                drain_left.as_secs_f64()
            ),
            _ => {}
        })
        .build()
        .expect("a valid lifecycle graph");

    let outcome = lifecycle.run().await;
    let c = consumer.stats();
    let p = producer.stats();
    say(format_args!(
        "summary reason={} exit_code={} fetched={} processed={} failed={} committed={} handed_back={} produced={} delivered={} producer_closed_errors={} undelivered={}",
        outcome.reason(),
        outcome.exit_code(),
        c.fetched,
        c.processed,
        c.failed,
        c.committed,
        c.handed_back,
        p.sent,
        p.delivered,
        closed_errors.load(Ordering::Relaxed),
        // `failed` already counts what the close purged.
        p.failed,
    ));
    Ok(outcome)
}

/// One message: work for `job`, then produce the derived message and wait for its delivery.
/// At the drain deadline it is dropped mid-way: its offset is not committed, it comes again.
async fn work(
    message: ConsumedMessage,
    job: Duration,
    producer: &Producer,
    output: &str,
    closed_errors: &AtomicU64,
) -> Result<(), BoxError> {
    tracing::debug!(target: "kafka_pipeline", partition = message.partition(), offset = message.offset(), "message started");
    tokio::time::sleep(job).await;
    let key = message.key().unwrap_or_default();
    let payload = message.payload().unwrap_or_default();
    let record = FutureRecord::to(output).key(key).payload(payload);
    match producer.send(record).await {
        Ok(_) => Ok(()),
        Err(error) => {
            if error.is_closed() {
                // Relaxed: a tally read once, after every message has ended.
                closed_errors.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(target: "kafka_pipeline", partition = message.partition(), offset = message.offset(), %error, "produce failed");
            Err(error.into())
        }
    }
}

/// Produces `count` messages `m-0..` (key = payload) to `topic`, one record per batch and one
/// send at a time, so a consumer resuming at any committed offset starts at a batch boundary.
async fn seed(servers: &str, topic: &str, count: usize) -> Result<(), BoxError> {
    let producer = Producer::builder()
        .bootstrap_servers(servers)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .connect_on_startup(false)
        .build()?;
    for i in 0..count {
        let payload = format!("m-{i}");
        producer
            .send(FutureRecord::to(topic).key(&payload).payload(&payload))
            .await?;
    }
    producer.close(Duration::from_secs(10)).await?;
    tracing::info!(target: "kafka_pipeline", count, topic, "seeded");
    Ok(())
}
