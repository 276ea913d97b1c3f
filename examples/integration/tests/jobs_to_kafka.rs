//! Process tests of the main demo, `examples/jobs_to_kafka.rs`: real signals to the real binary,
//! on the embedded defaults (in-memory jobs, librdkafka's mock cluster), and a rolling restart
//! against a real Redis and a real Kafka-protocol broker (`tansu`), both on 127.0.0.1.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{PATIENCE, Service};

/// The `summary` line's fields.
fn summary(lines: &[String]) -> HashMap<String, String> {
    let last = lines.last().expect("some output");
    let fields = last
        .strip_prefix("summary ")
        .unwrap_or_else(|| panic!("the last line is the summary, got {last:?}"));
    fields
        .split(' ')
        .map(|field| {
            let (key, value) = field.split_once('=').expect("key=value");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn number(summary: &HashMap<String, String>, key: &str) -> u64 {
    summary[key].parse().unwrap()
}

/// The summary line adds up, in every scenario: each fetched job ended one way, each queued
/// message ended one way (or is still in flight), and each queued message belongs to a job that
/// was settled by it (completed or failed), never to one handed back to run again.
fn assert_ledger(summary: &HashMap<String, String>) {
    let n = |key| number(summary, key);
    assert_eq!(
        n("jobs_fetched"),
        n("jobs_completed") + n("jobs_failed") + n("jobs_requeued") + n("jobs_lost"),
        "jobs: {summary:?}"
    );
    assert_eq!(
        n("messages_sent"),
        n("messages_delivered") + n("messages_failed") + n("messages_in_flight"),
        "messages: {summary:?}"
    );
    assert!(n("undelivered") <= n("messages_failed"), "{summary:?}");
    assert!(
        n("messages_sent") <= n("jobs_completed") + n("jobs_failed"),
        "a message was queued by a job that was handed back: {summary:?}"
    );
    assert!(
        n("messages_delivered") <= n("jobs_completed"),
        "{summary:?}"
    );
}

/// Runs the demo, sends `signal` once it is ready and, with `busy`, once that many jobs are in
/// flight (it asks with `SIGTTIN` and reads the state dump from the log), and returns the summary
/// and exit code.
fn run(args: &[&str], signal: Signal, busy: Option<usize>) -> (HashMap<String, String>, i32) {
    let (summary, code, _) = run_timed(args, signal, busy);
    (summary, code)
}

/// [`run`], also returning the time from the signal to the end of the output.
fn run_timed(
    args: &[&str],
    signal: Signal,
    busy: Option<usize>,
) -> (HashMap<String, String>, i32, Duration) {
    let mut service = Service::start("jobs_to_kafka", args, &[]);
    if let Some(jobs) = busy {
        let wanted = format!("in_flight={jobs} ");
        loop {
            service.signal(Signal::SIGTTIN);
            let dump = service.expect_log(|line| line.contains("pending_hooks"));
            if dump.contains(&wanted) {
                break;
            }
        }
    }
    service.signal(signal);
    let signalled = Instant::now();
    let (lines, status) = service.finish();
    let took = signalled.elapsed();
    let summary = summary(&lines);
    assert_ledger(&summary);
    (summary, status.code().expect("an exit code"), took)
}

#[test]
fn term_delivers_every_completed_job_and_exits_0() {
    let (summary, code) = run(&["--job-ms", "100"], Signal::SIGTERM, Some(8));
    assert_eq!(code, 0);
    assert_eq!(summary["reason"], "stop");
    assert_eq!(number(&summary, "producer_closed_errors"), 0);
    let completed = number(&summary, "jobs_completed");
    assert!(completed >= 8, "the in-flight jobs finished: {summary:?}");
    assert_eq!(number(&summary, "messages_sent"), completed);
    assert_eq!(number(&summary, "messages_delivered"), completed);
    assert_eq!(number(&summary, "undelivered"), 0);
}

#[test]
fn closing_the_producer_in_shutdown_fails_the_jobs_still_in_flight() {
    let (summary, code) = run(
        &["--job-ms", "200", "--close-producer-on", "shutdown"],
        Signal::SIGTERM,
        Some(8),
    );
    assert_eq!(code, 0);
    let closed = number(&summary, "producer_closed_errors");
    assert!(closed > 0, "the seed's bug, made visible: {summary:?}");
    assert_eq!(number(&summary, "jobs_failed"), closed);
    assert_eq!(
        number(&summary, "messages_delivered"),
        number(&summary, "jobs_completed")
    );
}

#[test]
fn usr2_stops_the_same_way_and_exits_4() {
    let (summary, code) = run(&["--job-ms", "100"], Signal::SIGUSR2, Some(8));
    assert_eq!(code, 4);
    assert_eq!(summary["reason"], "restart");
    assert_eq!(number(&summary, "producer_closed_errors"), 0);
    assert_eq!(
        number(&summary, "messages_delivered"),
        number(&summary, "jobs_completed")
    );
}

#[test]
fn jobs_longer_than_the_budget_are_requeued_and_the_exit_is_forced() {
    let (summary, code, took) = run_timed(
        &["--job-ms", "600000", "--shutdown-timeout-ms", "1500"],
        Signal::SIGTERM,
        Some(8),
    );
    assert_eq!(code, 2);
    assert_eq!(
        number(&summary, "jobs_requeued"),
        8,
        "every running job handed back"
    );
    assert_eq!(number(&summary, "jobs_completed"), 0);
    // Within the 1.5 s budget plus a little (process exit, a loaded machine).
    assert!(took < Duration::from_millis(1500 + 2500), "took {took:?}");
}

#[test]
fn a_job_whose_message_is_queued_is_settled_by_it_and_never_handed_back() {
    // A broker that never answers (a closed loopback port): every message stays queued, so the
    // drain deadline comes while each running job waits for its delivery report.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port();
    let brokers = format!("127.0.0.1:{port}");
    let (summary, code, took) = run_timed(
        &[
            "--brokers",
            &brokers,
            // Nothing answers there: without the startup check, the service runs anyway.
            "--connect-timeout-ms",
            "0",
            "--job-ms",
            "20",
            "--shutdown-timeout-ms",
            "1500",
        ],
        Signal::SIGTERM,
        Some(8),
    );
    let sent = number(&summary, "messages_sent");
    let completed = number(&summary, "jobs_completed");
    let failed = number(&summary, "jobs_failed");
    assert!(
        sent >= 8,
        "the running jobs queued their messages: {summary:?}"
    );
    // No job was handed back after its message was queued: each queued message belongs to a
    // job that was settled by it (completed, or failed by its delivery).
    assert_eq!(
        number(&summary, "jobs_requeued"),
        0,
        "a job whose message is queued must not run again: {summary:?}"
    );
    assert!(sent <= completed + failed, "{summary:?}");
    assert!(
        number(&summary, "messages_delivered") <= completed,
        "{summary:?}"
    );
    // The undelivered messages are purged at close and reported: not a clean exit. The ledger
    // says where each went.
    assert_eq!(number(&summary, "undelivered"), sent, "{summary:?}");
    assert_eq!(number(&summary, "messages_failed"), sent, "{summary:?}");
    assert_eq!(number(&summary, "messages_in_flight"), 0, "{summary:?}");
    assert_eq!(number(&summary, "messages_delivered"), 0, "{summary:?}");
    assert_eq!(number(&summary, "jobs_lost"), 0, "{summary:?}");
    assert_ne!(code, 0, "{summary:?}");
    assert!(took < Duration::from_millis(1500 + 2500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_under_load_lose_no_job() {
    const JOBS: usize = 400;
    const RESTARTS: usize = 4;
    let redis = lifecycle_hooks_test_support::redis::RedisServer::start();
    let broker = lifecycle_hooks_test_support::kafka::Broker::tansu().await;
    let topic = broker.topic("jobs-to-kafka", 2).await;
    let servers = broker.bootstrap_servers();
    let url = redis.url();
    let common = [
        "--redis",
        &url,
        "--queue",
        "orders",
        "--brokers",
        &servers,
        "--topic",
        &topic,
        "--job-ms",
        "20",
        "--concurrency",
        "8",
    ];
    let jobs = JOBS.to_string();
    let mut completed = 0;
    // Restart under load: each run is signalled as soon as it is ready, with jobs in flight.
    for cycle in 0..RESTARTS {
        let mut args = common.to_vec();
        if cycle == 0 {
            args.extend(["--enqueue", &jobs]);
        }
        let (summary, code) = tokio::task::block_in_place(|| run(&args, Signal::SIGUSR2, None));
        assert_eq!(code, 4, "cycle {cycle}: {summary:?}");
        assert_eq!(number(&summary, "producer_closed_errors"), 0);
        assert_eq!(number(&summary, "undelivered"), 0);
        completed += number(&summary, "jobs_completed");
    }
    // A last run works off the rest; once every key is on the topic, stop it.
    let last = tokio::task::block_in_place(|| Service::start("jobs_to_kafka", &common, &[]));
    let keys = tokio::task::block_in_place(|| {
        lifecycle_hooks_test_support::kafka::read_keys(&servers, &topic, 2, JOBS)
    });
    last.signal(Signal::SIGTERM);
    let (lines, status) = last.finish();
    assert_eq!(status.code(), Some(0));
    let last_summary = summary(&lines);
    assert_ledger(&last_summary);
    completed += number(&last_summary, "jobs_completed");

    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), JOBS);
    assert!(distinct.iter().all(|key| key.starts_with("job-")));
    assert!(completed >= JOBS as u64, "{completed} runs completed");
    let source = lifecycle_hooks_jobs::RedisSource::builder(redis.client(), "orders")
        .connect()
        .await
        .unwrap();
    assert!(
        source.queued().await.unwrap().is_empty(),
        "nothing left queued"
    );
}

/// The unit's claim holds: with no broker answering, startup fails (status 1) before the service
/// ever reports ready, naming the brokers, instead of running with every send waiting.
#[test]
fn with_no_broker_answering_startup_fails_before_ready() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port();
    let brokers = format!("127.0.0.1:{port}");
    let mut demo = Service::spawn(
        "jobs_to_kafka",
        &["--brokers", &brokers, "--connect-timeout-ms", "500"],
        &[],
    );
    let started = Instant::now();
    let (lines, status) = {
        let log = demo.expect_log(|l| l.contains(&brokers));
        assert!(log.contains("connect"), "{log}");
        demo.finish()
    };
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("ready pid=")),
        "{lines:?}"
    );
    assert!(started.elapsed() < PATIENCE);
}
