//! The main demo: a Sidekiq-style job pool whose jobs each publish one message to Kafka, under
//! one lifecycle. The producer is closed in the `exit` phase, after every job has ended, so no
//! job ever meets a closed producer; `--close-producer-on shutdown` closes it where Sidekiq's
//! `:shutdown` event fires instead, and jobs still in flight fail with `ProducerClosed`.
//!
//! Embedded defaults: an in-memory source that keeps generating jobs, and librdkafka's mock
//! cluster, so `cargo run --example jobs_to_kafka` needs nothing else. Stop it with Ctrl-C or
//! `kill -TERM <pid>` (status 0), restart it with `kill -USR2 <pid>` (status 4).
//!
//! stdout: `ready pid=<pid>` once running, then one last `summary ...` line; progress goes to
//! stderr. The summary is a ledger that adds up: `jobs_fetched = jobs_completed + jobs_failed +
//! jobs_requeued + jobs_lost` (lost: neither finished nor handed back), `messages_sent =
//! messages_delivered + messages_failed + messages_in_flight` (failed includes the `undelivered`
//! ones purged at close), and every queued message belongs to a completed or failed job, never
//! to a requeued one. Flags: `--concurrency N` (8), `--job-ms N` (50), `--close-producer-on exit|shutdown`,
//! `--shutdown-timeout-ms N` (25000), `--brokers LIST`, `--topic NAME` (`jobs`),
//! `--redis URL` with `--queue NAME` (`jobs`), `--enqueue N` (push N jobs `job-0..` first),
//! `--http-port N` (serve `/ready` for a Kubernetes readiness probe), `--connect-timeout-ms N`
//! (5000: startup checks that a broker answers within it before the service reports ready; 0
//! turns the check off).
//!
//! With `--redis` under systemd (`FileDescriptorStoreMax=` in the unit), the Redis source's
//! process identity is kept in systemd's fd store, so a restarted process (after `USR2`, or a
//! kill) takes back its predecessor's processing list at once instead of after the lease.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use lifecycle_hooks::{Event, Lifecycle, LifecycleHandle, Outcome, Phase};
use lifecycle_hooks_jobs::errors::{RedisSourceError, RequeueError};
use lifecycle_hooks_jobs::{Job, JobContext, JobPool, JobSource, MemorySource, RedisSource, Retry};
use lifecycle_hooks_kafka::rdkafka::producer::FutureRecord;
use lifecycle_hooks_kafka::{Producer, SendError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The command line.
#[derive(Debug)]
struct Options {
    concurrency: usize,
    job: Duration,
    close_on: Phase,
    budget: Duration,
    brokers: Option<String>,
    topic: String,
    redis: Option<String>,
    queue: String,
    enqueue: usize,
    http_port: Option<u16>,
    connect_timeout: Duration,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut options = Options {
            concurrency: 8,
            job: Duration::from_millis(50),
            close_on: Phase::EXIT,
            budget: Duration::from_secs(25),
            brokers: None,
            topic: "jobs".into(),
            redis: None,
            queue: "jobs".into(),
            enqueue: 0,
            http_port: None,
            connect_timeout: Duration::from_secs(5),
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
                "--concurrency" => options.concurrency = number("a count")?.max(1) as usize,
                "--job-ms" => options.job = Duration::from_millis(number("milliseconds")?),
                "--shutdown-timeout-ms" => {
                    options.budget = Duration::from_millis(number("milliseconds")?)
                }
                "--close-producer-on" => {
                    options.close_on = match value.as_str() {
                        "exit" => Phase::EXIT,
                        "shutdown" => Phase::SHUTDOWN,
                        _ => return Err(format!("`{flag}` takes exit or shutdown, not `{value}`")),
                    }
                }
                "--brokers" => options.brokers = Some(value),
                "--topic" => options.topic = value,
                "--redis" => options.redis = Some(value),
                "--queue" => options.queue = value,
                "--enqueue" => options.enqueue = number("a count")? as usize,
                "--http-port" => options.http_port = Some(number("a port")? as u16),
                "--connect-timeout-ms" => {
                    options.connect_timeout = Duration::from_millis(number("milliseconds")?)
                }
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
                .unwrap_or_else(|_| "warn,lifecycle_hooks=info,jobs_to_kafka=info".into()),
        )
        .init();
    let options =
        Options::parse().map_err(|e| format!("{e}\n(see the top of examples/jobs_to_kafka.rs)"))?;

    let mut producer = Producer::builder().close_on(options.close_on.clone());
    producer = if options.connect_timeout.is_zero() {
        producer.connect_on_startup(false)
    } else {
        producer.connect_timeout(options.connect_timeout)
    };
    if let Some(brokers) = &options.brokers {
        producer = producer.bootstrap_servers(brokers.clone());
    }
    let producer = producer.build()?;
    if let Some(cluster) = producer.mock_cluster() {
        cluster.create_topic(&options.topic, 4)?;
        tracing::info!(target: "jobs_to_kafka", servers = cluster.bootstrap_servers(), "embedded mock Kafka cluster");
    }

    match &options.redis {
        Some(url) => {
            let client = redis::Client::open(url.as_str())?;
            if options.enqueue > 0 {
                let producer = RedisSource::builder(client.clone(), options.queue.clone())
                    .connect()
                    .await?;
                let jobs: Vec<Job> = (0..options.enqueue)
                    .map(|i| Job::new(format!("job-{i}"), ""))
                    .collect();
                producer.enqueue_all(&jobs).await?;
            }
            let source = KeptIdentity {
                client,
                queue: options.queue.clone(),
                handle: Arc::new(OnceLock::new()),
                source: OnceLock::new(),
            };
            let handle = Arc::clone(&source.handle);
            Ok(serve(source, None, Some(handle), producer, &options).await)
        }
        None => {
            let source = MemorySource::new(options.concurrency * 4);
            for i in 0..options.enqueue {
                source.push(Job::new(format!("job-{i}"), "")).await?;
            }
            Ok(serve(source.clone(), Some(source), None, producer, &options).await)
        }
    }
}

/// The name of the Redis source's process identity in systemd's fd store.
const REDIS_IDENTITY: &str = "redis-process-id";

/// The Redis source, with a process identity that survives restarts under systemd: connected
/// when the pool starts it, under the id the process before the restart kept in systemd's fd
/// store (so its processing list comes back to the queue at once, instead of after its lease
/// expires), else a new one. The id is stored as soon as it is known, not in an exit hook: a
/// process that is killed, and runs no exit hook, leaves the most in its processing list. A final
/// stop removes it from the store (the lifecycle does), so an unrelated start takes a new id.
///
/// # Invariants
///
/// 1. `source` is set once, by `start`, which the pool calls before any other method.
/// 2. `handle` is set before the lifecycle runs, so before `start`.
struct KeptIdentity {
    client: redis::Client,
    queue: String,
    handle: Arc<OnceLock<LifecycleHandle>>,
    source: OnceLock<RedisSource>,
}

impl KeptIdentity {
    fn source(&self) -> &RedisSource {
        self.source
            .get()
            .expect("the pool starts its source before any other call")
    }
}

impl JobSource for KeptIdentity {
    type Error = RedisSourceError;

    async fn start(&self) -> Result<Vec<Job>, RedisSourceError> {
        let store = self
            .handle
            .get()
            .expect("the handle is set before the lifecycle runs")
            .fd_store();
        let restored = store
            .restored_state(REDIS_IDENTITY)
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let mut builder = RedisSource::builder(self.client.clone(), self.queue.clone());
        if let Some(id) = &restored {
            builder = builder.process_id(id.clone());
        }
        let source = builder.connect().await?;
        let id = source.process_id().to_owned();
        tracing::info!(target: "jobs_to_kafka", process_id = id, restored = restored.is_some(), "redis source identity");
        if let Err(error) = store.store_state(REDIS_IDENTITY, id.as_bytes()) {
            tracing::warn!(target: "jobs_to_kafka", %error, "cannot keep the redis source identity for a restart");
        }
        if self.source.set(source).is_err() {
            panic!("the pool starts its source once");
        }
        // Recovers this id's processing list (left by the process before the restart) at once,
        // then those of processes whose lease expired.
        self.source().start().await
    }

    async fn fetch(&self) -> Result<Option<Job>, RedisSourceError> {
        self.source().fetch().await
    }

    async fn ack(&self, job: &Job) -> Result<(), RedisSourceError> {
        self.source().ack(job).await
    }

    async fn requeue(&self, jobs: Vec<Job>) -> Result<(), RequeueError<RedisSourceError>> {
        self.source().requeue(jobs).await
    }

    async fn fail(&self, job: &Job, retry: Retry) -> Result<(), RedisSourceError> {
        self.source().fail(job, retry).await
    }

    async fn close(&self) -> Result<Vec<Job>, RedisSourceError> {
        self.source().close().await
    }
}

/// Runs the pool over `source` until a stop, and prints the summary.
async fn serve<S: JobSource>(
    source: S,
    generate: Option<MemorySource>,
    kept_identity: Option<Arc<OnceLock<LifecycleHandle>>>,
    producer: Producer,
    options: &Options,
) -> Outcome {
    let closed_errors = Arc::new(AtomicU64::new(0));
    let pool = JobPool::builder(source)
        .concurrency(options.concurrency)
        .build({
            let (producer, topic, job_time) =
                (producer.clone(), options.topic.clone(), options.job);
            let closed_errors = closed_errors.clone();
            move |job: Job, ctx: JobContext| {
                let (producer, topic) = (producer.clone(), topic.clone());
                let closed_errors = closed_errors.clone();
                async move { publish(job, ctx, job_time, &producer, &topic, &closed_errors).await }
            }
        });

    let lifecycle = Lifecycle::builder()
        .budget(options.budget)
        // Exit hooks run in reverse registration order: the pool closes its source first, then
        // the producer flushes what the last jobs sent.
        .hooks(producer.hooks())
        .hooks(pool.hooks())
        .observe(|event| match event {
            Event::Ready => say(format_args!("ready pid={}", std::process::id())),
            Event::Draining {
                in_flight,
                drain_left,
            } => tracing::info!(
                target: "jobs_to_kafka",
                "draining: {in_flight} jobs in flight, {:.1} s left",
                drain_left.as_secs_f64()
            ),
            _ => {}
        })
        .build()
        .expect("a valid lifecycle graph");
    let handle = lifecycle.handle();
    if let Some(kept) = kept_identity {
        let _ = kept.set(handle.clone());
    }
    if let Some(source) = generate {
        tokio::spawn(generate_jobs(source, handle.clone()));
    }
    if let Some(port) = options.http_port {
        tokio::spawn(serve_readiness(port, handle.clone()));
    }

    let outcome = lifecycle.run().await;
    let jobs = pool.counters();
    let messages = producer.stats();
    say(format_args!(
        "summary reason={} exit_code={} jobs_fetched={} jobs_completed={} jobs_failed={} jobs_requeued={} messages_sent={} messages_delivered={} producer_closed_errors={} undelivered={} jobs_lost={} messages_failed={} messages_in_flight={}",
        outcome.reason(),
        outcome.exit_code(),
        jobs.fetched,
        jobs.completed,
        jobs.failed,
        jobs.requeued,
        messages.sent,
        messages.delivered,
        closed_errors.load(Ordering::Relaxed),
        messages.purged,
        jobs.lost,
        messages.failed,
        messages.in_flight,
    ));
    outcome
}

/// One job: work for `job_time`, then publish one message keyed by the job id. Until the
/// message is queued, the deadline (or a second signal) cuts the job off and the pool hands it
/// back; once it is queued, the job is past its point of no return: it is settled by its
/// delivery (acknowledged, or failed if the delivery fails) and never handed back, so nothing
/// is published twice for it.
async fn publish(
    job: Job,
    ctx: JobContext,
    job_time: Duration,
    producer: &Producer,
    topic: &str,
    closed_errors: &AtomicU64,
) -> Result<(), BoxError> {
    tokio::time::sleep(job_time).await;
    let payload = format!("{} done", job.id());
    let record = || FutureRecord::to(topic).key(job.id()).payload(&payload);
    let delivered = match producer.try_send(record()) {
        Ok(delivery) => {
            // Queued in librdkafka: it is delivered (or purged at close) whatever happens to
            // this job now. Declared before the next `.await`, so no cut-off falls in between.
            ctx.point_of_no_return();
            delivery.await
        }
        Err(SendError::QueueFull { .. }) => {
            // librdkafka's queue is full: `send` waits for room and may queue the message at
            // any point of that wait, so the point of no return comes first. Such a job is
            // bounded by the producer's queue timeout instead of the drain deadline.
            ctx.point_of_no_return();
            producer.send(record()).await
        }
        Err(error) => Err(error),
    };
    match delivered {
        Ok(_) => Ok(()),
        Err(error) => {
            if error.is_closed() {
                // Relaxed: a tally read once, after every job has ended.
                closed_errors.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(target: "jobs_to_kafka", id = job.id(), phase = %ctx.lifecycle().phase(), %error, "publish failed");
            Err(error.into())
        }
    }
}

/// Keeps the in-memory queue full until intake stops.
async fn generate_jobs(source: MemorySource, handle: LifecycleHandle) {
    let mut stopped = std::pin::pin!(handle.intake_stopped().into_future());
    for n in 0u64.. {
        let job = Job::new(format!("gen-{n}"), "");
        tokio::select! {
            biased;
            () = &mut stopped => return,
            pushed = source.push(job) => if pushed.is_err() { return },
        }
    }
}

/// Answers `GET /ready` with 200 while running, 503 from the stop on.
async fn serve_readiness(port: u16, handle: LifecycleHandle) {
    let app = axum::Router::new().route(
        "/ready",
        axum::routing::get(move || {
            let ready = handle.is_ready();
            async move {
                if ready {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "stopping")
                }
            }
        }),
    );
    match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(target: "jobs_to_kafka", %error, "readiness endpoint failed");
            }
        }
        Err(error) => tracing::error!(target: "jobs_to_kafka", %error, port, "cannot serve /ready"),
    }
}
