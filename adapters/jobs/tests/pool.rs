//! The pool bound to a lifecycle, over the in-memory source, under paused time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Gate, Log, TestSource, ids, init_tracing};
use futures::StreamExt;
use lifecycle_hooks::testing::{self, Recorder};
use lifecycle_hooks::{Event, HookResult, LifecycleHandle, Outcome, Signal};
use lifecycle_hooks_jobs::{
    Counters, Job, JobContext, JobFailure, JobPool, JobSource, MaxAttempts, MemorySource,
    RetryPolicy,
};
use tokio::sync::mpsc;
use tokio::time::sleep;

async fn fill(source: &MemorySource, names: &[&str]) {
    for name in names {
        source.push(Job::new(*name, "")).await.unwrap();
    }
}

/// Waits until the hook `name` has finished, from an event stream opened before the run.
async fn hook_finished(events: &mut lifecycle_hooks::EventStream, name: &str) {
    while let Some(event) = events.next().await {
        if matches!(&event, Event::HookFinished { name: n, .. } if n == name) {
            return;
        }
    }
    panic!("the lifecycle ended before hook `{name}` finished");
}

/// Every fetched job ended exactly once, and none is still in flight.
fn assert_settled(counters: Counters) {
    let ended = counters.completed + counters.failed + counters.requeued + counters.lost;
    assert_eq!(counters.fetched, ended, "ledger broken: {counters:?}");
    assert_eq!(counters.in_flight, 0, "{counters:?}");
    assert!(counters.is_settled());
}

async fn receive(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.push(rx.recv().await.expect("the handlers are alive"));
    }
    got
}

#[tokio::test(start_paused = true)]
async fn runs_every_job_within_the_bound_and_closes_the_source_in_exit() {
    init_tracing();
    let source = MemorySource::new(100);
    let names: Vec<String> = (0..10).map(|n| format!("job-{n}")).collect();
    for name in &names {
        source.push(Job::new(name.as_str(), "")).await.unwrap();
    }
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source.clone()).concurrency(3).build({
        let (running, most) = (running.clone(), most.clone());
        move |job: Job, _ctx: JobContext| {
            let (running, most, done_tx) = (running.clone(), most.clone(), done_tx.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                sleep(Duration::from_secs(1)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                done_tx.send(job.id().to_owned()).unwrap();
                Ok::<(), std::io::Error>(())
            }
        }
    });
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .hooks(pool.hooks())
        .observe(recorder.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());

    let finished = receive(&mut done, 10).await;
    assert_eq!(
        ids(finished.iter().map(String::as_str)),
        ids(names.iter().map(String::as_str))
    );
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "the pool runs exactly `concurrency` jobs at once"
    );
    assert!(!source.is_closed(), "the source stays open while running");

    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    assert!(outcome.handed_back().is_empty() && outcome.lost().is_empty());
    assert!(source.is_closed(), "the exit hook closes the source");
    let counters = pool.counters();
    assert_eq!(
        (counters.fetched, counters.completed, counters.failed),
        (10, 10, 0)
    );
    assert_settled(counters);
    assert!(recorder.before("hook startup jobs:start ok", "ready"));
    assert!(recorder.before(
        "phase stop_intake",
        "hook stop_intake jobs:stop_fetching ok"
    ));
    assert!(recorder.before("phase exit", "hook exit jobs:close ok"));
}

#[tokio::test(start_paused = true)]
async fn quiet_stops_intake_while_running_jobs_finish() {
    init_tracing();
    let source = MemorySource::new(100);
    fill(&source, &["a", "b"]).await;
    let log = Log::default();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source.clone()).concurrency(4).build({
        let log = log.clone();
        move |job: Job, _ctx: JobContext| {
            let (log, started_tx, done_tx) = (log.clone(), started_tx.clone(), done_tx.clone());
            async move {
                log.push(format!("start {}", job.id()));
                started_tx.send(job.id().to_owned()).unwrap();
                sleep(Duration::from_secs(10)).await;
                done_tx.send(job.id().to_owned()).unwrap();
                Ok::<(), std::io::Error>(())
            }
        }
    });
    let lifecycle = testing::builder()
        .hooks(pool.hooks())
        .observe(log.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let mut events = handle.subscribe();
    let run = tokio::spawn(lifecycle.run());
    receive(&mut started, 2).await;

    handle.quiet();
    hook_finished(&mut events, "jobs:stop_fetching").await;
    // Work arriving while quiet stays in the queue.
    fill(&source, &["c", "d"]).await;
    let finished = receive(&mut done, 2).await;
    assert_eq!(ids(finished.iter().map(String::as_str)), ids(["a", "b"]));
    assert!(
        !handle.is_ready(),
        "quiet takes the service out of rotation"
    );
    assert!(handle.reason().is_none(), "quiet is not a stop");
    assert_eq!(
        source.queued_ids(),
        ["c", "d"],
        "nothing is fetched while quiet"
    );
    let counters = pool.counters();
    assert_eq!((counters.fetched, counters.completed), (2, 2));

    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    assert_eq!(
        log.positions("start ").len(),
        2,
        "c and d never ran: {:?}",
        log.lines()
    );
    assert_eq!(source.queued_ids(), ["c", "d"]);
    assert_settled(pool.counters());
}

#[tokio::test(start_paused = true)]
async fn no_job_starts_after_stop_intake() {
    init_tracing();
    let source = MemorySource::new(100);
    let names: Vec<String> = (0..50).map(|n| format!("job-{n}")).collect();
    for name in &names {
        source.push(Job::new(name.as_str(), "")).await.unwrap();
    }
    let log = Log::default();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source.clone()).concurrency(4).build({
        let log = log.clone();
        move |job: Job, _ctx: JobContext| {
            let (log, done_tx) = (log.clone(), done_tx.clone());
            async move {
                log.push(format!("start {}", job.id()));
                sleep(Duration::from_millis(700)).await;
                let _ = done_tx.send(job.id().to_owned());
                Ok::<(), std::io::Error>(())
            }
        }
    });
    let lifecycle = testing::builder()
        .hooks(pool.hooks())
        .observe(log.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    receive(&mut done, 10).await;

    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    let stop_intake = log.position("phase stop_intake").expect("stop_intake ran");
    let starts = log.positions("start ");
    assert!(
        starts.iter().all(|&at| at < stop_intake),
        "a job started after stop_intake: {:?}",
        log.lines()
    );
    let counters = pool.counters();
    assert_eq!(counters.fetched as usize, starts.len());
    assert_eq!(
        counters.completed, counters.fetched,
        "every fetched job finished"
    );
    assert_eq!(source.len() + starts.len(), 50, "the rest is still queued");
    assert!(!source.is_empty());
    assert_settled(counters);
}

#[tokio::test(start_paused = true)]
async fn in_flight_jobs_finish_before_exit_hooks_begin() {
    init_tracing();
    let source = MemorySource::new(100);
    fill(&source, &["j1", "j2", "j3", "j4", "j5"]).await;
    let log = Log::default();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source.clone()).concurrency(5).build({
        let log = log.clone();
        move |job: Job, _ctx: JobContext| {
            let (log, started_tx) = (log.clone(), started_tx.clone());
            async move {
                started_tx.send(()).unwrap();
                let seconds: u64 = job.id()[1..].parse().unwrap();
                sleep(Duration::from_secs(seconds)).await;
                log.push(format!("done {}", job.id()));
                Ok::<(), std::io::Error>(())
            }
        }
    });
    let lifecycle = testing::builder()
        // Registered before the pool, so it runs after the pool's close (exit hooks run in
        // reverse): the producer the jobs publish to is closed last.
        .on_exit("close_producer", {
            let log = log.clone();
            move |_ctx| {
                let log = log.clone();
                async move { log.push("exit hook close_producer") }
            }
        })
        .hooks(pool.hooks())
        .on_shutdown("announce", {
            let log = log.clone();
            move |_ctx| {
                let log = log.clone();
                async move { log.push("shutdown hook") }
            }
        })
        .observe(log.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    for _ in 0..5 {
        started.recv().await.unwrap();
    }

    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    assert_eq!(outcome.cancelled_work(), 0);
    let exit = log.position("phase exit").unwrap();
    let done = log.positions("done ");
    assert_eq!(done.len(), 5, "{:?}", log.lines());
    assert!(
        done.iter().all(|&at| at < exit),
        "a job ended after exit began: {:?}",
        log.lines()
    );
    let shutdown = log.position("shutdown hook").unwrap();
    assert!(
        done.iter().all(|&at| at > shutdown),
        "shutdown hooks run while jobs are in flight: {:?}",
        log.lines()
    );
    assert!(
        log.position("hook exit jobs:close ok").unwrap()
            < log.position("exit hook close_producer").unwrap()
    );
    assert_settled(pool.counters());
}

#[tokio::test(start_paused = true)]
async fn the_drain_deadline_requeues_exactly_the_unfinished_jobs() {
    init_tracing();
    let memory = MemorySource::new(100);
    fill(
        &memory,
        &[
            "quick-1",
            "quick-2",
            "long-1",
            "stuck-1",
            "stuck-2",
            "waiting-1",
        ],
    )
    .await;
    let log = Log::default();
    let source = TestSource::new(memory.clone(), log.clone());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source).concurrency(5).build({
        let log = log.clone();
        move |job: Job, ctx: JobContext| {
            let (log, started_tx) = (log.clone(), started_tx.clone());
            async move {
                started_tx.send(()).unwrap();
                let work = match job.id() {
                    "long-1" => Duration::from_secs(3),
                    id if id.starts_with("stuck") => Duration::from_secs(3600),
                    _ => Duration::from_secs(1),
                };
                sleep(work).await;
                assert!(ctx.is_stopping(), "the stop came before any job ended");
                log.push(format!("done {}", job.id()));
                Ok::<(), std::io::Error>(())
            }
        }
    });
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(10))
        .exit_reserve(Duration::from_secs(4))
        .cancel_grace(Duration::from_secs(1))
        .hooks(pool.hooks())
        .observe(log.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    for _ in 0..5 {
        started.recv().await.unwrap();
    }

    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(
        outcome.exit_code(),
        2,
        "cancelling work at the deadline is forced: {outcome}"
    );
    assert_eq!(outcome.cancelled_work(), 2);
    assert_eq!(
        ids(outcome.handed_back().iter().map(String::as_str)),
        ids(["stuck-1", "stuck-2"])
    );
    assert!(outcome.lost().is_empty());
    // Handed back to the head of the queue, ahead of the job that was never fetched.
    let queued = memory.queued_ids();
    assert_eq!(queued.len(), 3, "{queued:?}");
    assert_eq!(
        ids(queued[..2].iter().map(String::as_str)),
        ids(["stuck-1", "stuck-2"])
    );
    assert_eq!(queued[2], "waiting-1");
    // The requeue happened after the cancel and before the exit phase.
    let cancelled = log.position("cancelled 2").unwrap();
    let requeues = log.positions("requeue ");
    let exit = log.position("phase exit").unwrap();
    assert!(!requeues.is_empty());
    assert!(
        requeues.iter().all(|&at| cancelled < at && at < exit),
        "{:?}",
        log.lines()
    );
    assert_eq!(
        log.positions("done ").len(),
        3,
        "quick and long jobs finished in the drain"
    );
    assert_eq!(
        source_view(&log),
        (3, 2),
        "acked 3, requeued 2: {:?}",
        log.lines()
    );
    let counters = pool.counters();
    assert_eq!(
        (
            counters.fetched,
            counters.completed,
            counters.requeued,
            counters.lost
        ),
        (5, 3, 2, 0)
    );
    assert_settled(counters);
}

/// (acks, requeued jobs) as the source saw them.
fn source_view(log: &Log) -> (usize, usize) {
    let acks = log.positions("ack ").len();
    let requeued = log
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("requeue "))
        .map(|ids| ids.split(',').count())
        .sum();
    (acks, requeued)
}

#[tokio::test(start_paused = true)]
async fn a_long_job_checkpoints_and_requeues_itself_when_stopping() {
    init_tracing();
    let source = MemorySource::new(10);
    fill(&source, &["report"]).await;
    let (step_tx, mut steps) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source.clone()).build(move |job: Job, ctx: JobContext| {
        let step_tx = step_tx.clone();
        async move {
            let mut step: u32 = std::str::from_utf8(job.payload())
                .unwrap_or("")
                .parse()
                .unwrap_or(0);
            loop {
                step_tx.send(step).unwrap();
                sleep(Duration::from_secs(1)).await;
                step += 1;
                if ctx.is_stopping() {
                    ctx.requeue(job.with_payload(step.to_string()));
                    return Ok::<(), std::io::Error>(());
                }
            }
        }
    });
    let lifecycle = testing::builder().hooks(pool.hooks()).build().unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    while steps.recv().await.unwrap() < 5 {}

    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(
        outcome.exit_code(),
        0,
        "a job that hands itself back is a clean stop: {outcome}"
    );
    assert_eq!(outcome.handed_back(), ["report"]);
    let queued = source.queued();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id(), "report");
    assert_eq!(
        &queued[0].payload()[..],
        b"6",
        "resumes after the last finished step"
    );
    assert_eq!(queued[0].attempt(), 0, "a checkpoint is not a failure");
    let counters = pool.counters();
    assert_eq!((counters.completed, counters.requeued), (0, 1));
    assert_settled(counters);
}

/// Real time on two threads: the fetch is held inside the source, blocking one thread, and a
/// stop_intake hook releases it, so the fetch completes after intake stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fetched_after_intake_stopped_is_handed_back_unrun() {
    init_tracing();
    let memory = MemorySource::new(10);
    fill(&memory, &["late"]).await;
    let log = Log::default();
    let source = TestSource::new(memory.clone(), log.clone());
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    *source.gate.lock() = Some(Gate {
        entered: entered_tx,
        release: release_rx,
    });
    let pool = JobPool::builder(source).concurrency(1).build({
        let log = log.clone();
        move |job: Job, _ctx: JobContext| {
            let log = log.clone();
            async move {
                log.push(format!("start {}", job.id()));
                Ok::<(), std::io::Error>(())
            }
        }
    });
    let release = parking_lot::Mutex::new(Some(release));
    let lifecycle = testing::builder()
        .on_stop_intake("release_fetch", move |_ctx| {
            if let Some(release) = release.lock().take() {
                release.send(()).unwrap();
            }
            async {}
        })
        .hooks(pool.hooks())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    entered.recv().await.unwrap();

    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    assert_eq!(outcome.handed_back(), ["late"]);
    assert!(
        log.positions("start ").is_empty(),
        "it never ran: {:?}",
        log.lines()
    );
    assert_eq!(log.positions("requeue late").len(), 1);
    assert_eq!(memory.queued_ids(), ["late"]);
    let counters = pool.counters();
    assert_eq!(
        (counters.fetched, counters.completed, counters.requeued),
        (1, 0, 1)
    );
    assert_settled(counters);
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_fetch_is_pending_at_intake_stop_stays_in_the_source() {
    init_tracing();
    let source = MemorySource::new(10);
    let pool = JobPool::builder(source.clone())
        .concurrency(3)
        .build(|_job: Job, _ctx: JobContext| async { Ok::<(), std::io::Error>(()) });
    let lifecycle = testing::builder()
        .hooks(pool.hooks())
        .on_exit("push_after_stop", {
            let source = source.clone();
            move |_ctx| {
                let source = source.clone();
                async move { source.try_push(Job::new("after", "")) }
            }
        })
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let mut events = handle.subscribe();
    let run = tokio::spawn(lifecycle.run());
    while !matches!(events.next().await, Some(Event::Ready)) {}
    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    // The idle workers' fetches were dropped at intake stop: a job arriving later is not taken.
    assert_eq!(source.queued_ids(), ["after"]);
    assert_eq!(pool.counters().fetched, 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_only_its_job_and_the_retry_policy_applies() {
    init_tracing();
    let memory = MemorySource::new(100);
    fill(
        &memory,
        &["boom", "ok-1", "sync-boom", "flaky", "ok-2", "ok-3"],
    )
    .await;
    let log = Log::default();
    let source = TestSource::new(memory.clone(), log.clone());
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<String>();
    let policy = {
        let seen_tx = seen_tx.clone();
        move |job: &Job, failure: &JobFailure| {
            let what = match failure {
                JobFailure::Panicked(message) => format!("panicked: {message}"),
                other => format!("error: {}", std::error::Error::source(other).unwrap()),
            };
            seen_tx
                .send(format!("{} #{} {what}", job.id(), job.attempt()))
                .unwrap();
            MaxAttempts(2).decide(job, failure)
        }
    };
    let pool = JobPool::builder(source).concurrency(2).retry(policy).build(
        move |job: Job, _ctx: JobContext| {
            if job.id() == "sync-boom" {
                panic!("no future for {}", job.id());
            }
            let seen_tx = seen_tx.clone();
            async move {
                sleep(Duration::from_millis(10)).await;
                match (job.id(), job.attempt()) {
                    ("boom", _) => panic!("boom at attempt {}", job.attempt()),
                    ("flaky", 0) => Err(std::io::Error::other("flaky the first time")),
                    (id, _) => {
                        seen_tx.send(format!("{id} done")).unwrap();
                        Ok(())
                    }
                }
            }
        },
    );
    let lifecycle = testing::builder().hooks(pool.hooks()).build().unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    // 4 ok jobs (flaky on its retry) and 5 failures (boom x2, sync-boom x2, flaky once).
    let got = receive(&mut seen, 9).await;

    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(
        outcome.exit_code(),
        0,
        "job panics do not fail the service: {outcome}"
    );
    assert!(outcome.failures().is_empty(), "{:?}", outcome.failures());
    let got = ids(got.iter().map(String::as_str));
    let expected = ids([
        "boom #0 panicked: boom at attempt 0",
        "boom #1 panicked: boom at attempt 1",
        "sync-boom #0 panicked: no future for sync-boom",
        "sync-boom #1 panicked: no future for sync-boom",
        "flaky #0 error: flaky the first time",
        "flaky done",
        "ok-1 done",
        "ok-2 done",
        "ok-3 done",
    ]);
    assert_eq!(got, expected);
    let dead: Vec<(String, u32)> = memory
        .dead()
        .iter()
        .map(|j| (j.id().to_owned(), j.attempt()))
        .collect();
    assert_eq!(
        ids(dead.iter().map(|(id, _)| id.as_str())),
        ids(["boom", "sync-boom"])
    );
    assert!(
        dead.iter().all(|(_, attempt)| *attempt == 1),
        "dead after their second run"
    );
    assert_eq!(log.positions("fail ").len(), 5);
    let counters = pool.counters();
    assert_eq!(
        (counters.fetched, counters.completed, counters.failed),
        (9, 4, 5)
    );
    assert_settled(counters);
}

/// Two jobs that never end, cut off by the drain deadline; returns the outcome, log and pool.
async fn cut_off(requeue_failures: usize) -> (Outcome, Log, JobPool<TestSource>, MemorySource) {
    let memory = MemorySource::new(10);
    fill(&memory, &["stuck-1", "stuck-2"]).await;
    let log = Log::default();
    let source = TestSource::new(memory.clone(), log.clone());
    source
        .requeue_failures
        .store(requeue_failures, Ordering::SeqCst);
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source)
        .concurrency(2)
        .build(move |_job: Job, _ctx: JobContext| {
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(()).unwrap();
                std::future::pending::<Result<(), std::io::Error>>().await
            }
        });
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(10))
        .exit_reserve(Duration::from_secs(5))
        .cancel_grace(Duration::from_secs(1))
        .hooks(pool.hooks())
        .observe(log.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    started.recv().await.unwrap();
    started.recv().await.unwrap();
    handle.stop();
    (run.await.unwrap(), log, pool, memory)
}

#[tokio::test(start_paused = true)]
async fn a_failing_requeue_is_retried_with_backoff_in_the_exit_hook() {
    init_tracing();
    let (outcome, log, pool, memory) = cut_off(3).await;
    assert_eq!(outcome.exit_code(), 2, "{outcome}");
    assert!(outcome.lost().is_empty(), "{:?}", outcome.lost());
    assert_eq!(
        ids(outcome.handed_back().iter().map(String::as_str)),
        ids(["stuck-1", "stuck-2"])
    );
    assert_eq!(
        ids(memory.queued_ids().iter().map(String::as_str)),
        ids(["stuck-1", "stuck-2"])
    );
    assert_eq!(
        log.positions("requeue failed ").len(),
        3,
        "{:?}",
        log.lines()
    );
    let success = log.positions("requeue stuck");
    assert_eq!(success.len(), 1, "{:?}", log.lines());
    assert!(
        success[0] > log.position("phase exit").unwrap(),
        "retried by the exit hook"
    );
    assert_eq!(outcome.hook("jobs:close").unwrap().result, HookResult::Ok);
    let counters = pool.counters();
    assert_eq!(
        (counters.requeued, counters.lost, counters.source_errors),
        (2, 0, 3)
    );
    assert_settled(counters);
}

#[tokio::test(start_paused = true)]
async fn jobs_that_cannot_be_requeued_are_reported_lost_by_id_within_the_budget() {
    init_tracing();
    let (outcome, log, pool, _memory) = cut_off(usize::MAX).await;
    assert_eq!(outcome.exit_code(), 2, "{outcome}");
    assert_eq!(
        ids(outcome.lost().iter().map(String::as_str)),
        ids(["stuck-1", "stuck-2"])
    );
    assert!(outcome.handed_back().is_empty());
    let failures = outcome.failures();
    assert!(
        failures.contains(&"lost: stuck-1".to_owned()),
        "{failures:?}"
    );
    assert!(
        failures.contains(&"lost: stuck-2".to_owned()),
        "{failures:?}"
    );
    let close = outcome.hook("jobs:close").unwrap();
    assert_eq!(
        close.result,
        HookResult::Ok,
        "the hook reports and ends before its deadline"
    );
    assert!(
        outcome.stop_elapsed() <= Duration::from_secs(10),
        "{:?}",
        outcome.stop_elapsed()
    );
    assert!(
        log.positions("requeue failed ").len() > 3,
        "retried: {:?}",
        log.lines()
    );
    assert!(log.position("close").unwrap() > log.position("phase exit").unwrap());
    let counters = pool.counters();
    assert_eq!((counters.requeued, counters.lost), (0, 2));
    assert_settled(counters);
}

#[tokio::test(start_paused = true)]
async fn a_second_signal_cancels_and_requeues_at_once() {
    init_tracing();
    let source = MemorySource::new(10);
    fill(&source, &["slow"]).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source.clone()).build(move |_job: Job, _ctx: JobContext| {
        let started_tx = started_tx.clone();
        async move {
            started_tx.send(()).unwrap();
            sleep(Duration::from_secs(3600)).await;
            Ok::<(), std::io::Error>(())
        }
    });
    let log = Log::default();
    let lifecycle = testing::builder()
        .hooks(pool.hooks())
        .observe(log.observer())
        .build()
        .unwrap();
    let handle: LifecycleHandle = lifecycle.handle();
    let mut events = handle.subscribe();
    let run = tokio::spawn(lifecycle.run());
    started.recv().await.unwrap();
    handle.trigger(Signal::Term);
    // The second signal lands well inside the drain (20 s before its deadline, of the default
    // 25 s budget): wait for the drain's progress report with 19 s left.
    loop {
        match events.next().await.expect("the run goes on") {
            Event::Draining { drain_left, .. } if drain_left <= Duration::from_secs(19) => break,
            _ => {}
        }
    }
    let second = tokio::time::Instant::now();
    handle.trigger(Signal::Term);
    let outcome = run.await.unwrap();
    let took = second.elapsed();
    assert!(
        outcome.escalated(),
        "the second signal escalated: {outcome}"
    );
    assert!(outcome.forced(), "{outcome}");
    assert_eq!(outcome.exit_code(), 2, "{outcome}");
    // Paused time: nothing waits between the second signal and the end, while the drain
    // deadline was still 19 s away.
    assert!(
        took < Duration::from_millis(1),
        "from the second signal to the end: {took:?} (the drain deadline was 19 s away)"
    );
    assert!(
        outcome.stop_elapsed() < Duration::from_secs(7),
        "{:?}",
        outcome.stop_elapsed()
    );
    assert_eq!(outcome.handed_back(), ["slow"]);
    assert_eq!(source.queued_ids(), ["slow"]);
    assert!(
        log.position("cancelled 1").expect("work cancelled") < log.position("phase exit").unwrap(),
        "handed back before the exit hooks: {:?}",
        log.lines()
    );
    assert_settled(pool.counters());
}

#[tokio::test(start_paused = true)]
async fn a_source_that_cannot_start_fails_startup_and_is_not_closed() {
    init_tracing();
    let log = Log::default();
    let mut source = TestSource::new(MemorySource::new(10), log.clone());
    source.fail_start = true;
    let pool = JobPool::builder(source)
        .build(|_job: Job, _ctx: JobContext| async { Ok::<(), std::io::Error>(()) });
    let lifecycle = testing::builder().hooks(pool.hooks()).build().unwrap();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 1, "{outcome}");
    assert!(matches!(
        outcome.hook("jobs:start").unwrap().result,
        HookResult::Error(_)
    ));
    assert_eq!(
        outcome.hook("jobs:close").unwrap().result,
        HookResult::Skipped
    );
    assert!(log.position("close").is_none());
}

#[tokio::test(start_paused = true)]
async fn two_pools_need_two_names() {
    let a = JobPool::builder(MemorySource::new(1))
        .build(|_job: Job, _ctx: JobContext| async { Ok::<(), std::io::Error>(()) });
    let b = JobPool::builder(MemorySource::new(1))
        .name("mail")
        .build(|_job: Job, _ctx: JobContext| async { Ok::<(), std::io::Error>(()) });
    let names: Vec<String> = b.hooks().iter().map(|h| h.name().to_owned()).collect();
    assert_eq!(names, ["mail:start", "mail:stop_fetching", "mail:close"]);
    assert!(
        testing::builder()
            .hooks(a.hooks())
            .hooks(b.hooks())
            .build()
            .is_ok()
    );
    assert!(
        testing::builder()
            .hooks(a.hooks())
            .hooks(a.hooks())
            .build()
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn memory_source_keeps_its_bound_for_producers_but_never_for_hand_backs() {
    let source = MemorySource::new(2);
    fill(&source, &["a", "b"]).await;
    let pusher = tokio::spawn({
        let source = source.clone();
        async move { source.push(Job::new("c", "")).await }
    });
    tokio::task::yield_now().await;
    assert!(!pusher.is_finished(), "push waits while full");
    let a = source.fetch().await.unwrap().unwrap();
    pusher.await.unwrap().unwrap();
    assert_eq!(source.queued_ids(), ["b", "c"]);
    source.requeue(vec![a]).await.unwrap();
    assert_eq!(
        source.queued_ids(),
        ["a", "b", "c"],
        "a hand-back goes over the bound, at the head"
    );
    source.close().await.unwrap();
    assert!(matches!(
        source.try_push(Job::new("d", "")),
        Err(lifecycle_hooks_jobs::errors::PushError::Closed(_))
    ));
    assert!(
        source.fetch().await.unwrap().is_none(),
        "a closed source hands out nothing"
    );
    assert_eq!(
        source.queued_ids(),
        ["a", "b", "c"],
        "and keeps what it held"
    );
}

#[tokio::test(start_paused = true)]
async fn a_requeue_through_a_finished_jobs_context_leaves_the_next_jobs_checkpoint_alone() {
    init_tracing();
    let source = MemorySource::new(10);
    fill(&source, &["first", "second"]).await;
    let kept: Arc<parking_lot::Mutex<Option<JobContext>>> = Arc::default();
    let release = Arc::new(tokio::sync::Notify::new());
    let (checkpointed_tx, mut checkpointed) = mpsc::unbounded_channel();
    // One worker: `second` runs right after `first`, on the same worker.
    let pool = JobPool::builder(source.clone()).concurrency(1).build({
        let (kept, release) = (kept.clone(), release.clone());
        move |job: Job, ctx: JobContext| {
            let (kept, release) = (kept.clone(), release.clone());
            let checkpointed_tx = checkpointed_tx.clone();
            async move {
                if job.id() == "first" {
                    // Keeps its context past its own end (a task it spawned, say).
                    *kept.lock() = Some(ctx);
                } else {
                    ctx.requeue(job.with_payload("checkpoint"));
                    checkpointed_tx.send(()).unwrap();
                    release.notified().await;
                }
                Ok::<(), std::io::Error>(())
            }
        }
    });
    let lifecycle = testing::builder().hooks(pool.hooks()).build().unwrap();
    let handle = lifecycle.handle();
    let mut events = handle.subscribe();
    let run = tokio::spawn(lifecycle.run());
    checkpointed.recv().await.unwrap();
    // Fetching stops, so `second`, once handed back, is not fetched again.
    handle.stop();
    hook_finished(&mut events, "jobs:stop_fetching").await;
    // `first` returned long ago; its context asks for a hand-back now, while `second` runs.
    let late = kept.lock().take().expect("first ran and kept its context");
    late.requeue(Job::new("first", "late"));
    release.notify_one();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    assert_eq!(
        outcome.handed_back(),
        ["second"],
        "second's checkpoint survives, first's late call does nothing"
    );
    let queued = source.queued();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(
        (queued[0].id(), &queued[0].payload()[..]),
        ("second", &b"checkpoint"[..])
    );
    let counters = pool.counters();
    assert_eq!((counters.completed, counters.requeued), (1, 1));
    assert_settled(counters);
}

/// Two jobs that never end are cut off at the drain deadline and their hand-back fails; then
/// an exit hook that runs before the pool's close (registered after it) uses the rest of the
/// budget, so `jobs:close` never runs. `hand_back_in_exit` lets requeues succeed from the
/// start of the exit phase on.
async fn close_skipped(hand_back_in_exit: bool) -> (Outcome, JobPool<TestSource>, MemorySource) {
    let memory = MemorySource::new(10);
    fill(&memory, &["stuck-1", "stuck-2"]).await;
    let source = TestSource::new(memory.clone(), Log::default());
    source.requeue_failures.store(usize::MAX, Ordering::SeqCst);
    let failures = source.requeue_failures.clone();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source)
        .concurrency(2)
        .build(move |_job: Job, _ctx: JobContext| {
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(()).unwrap();
                std::future::pending::<Result<(), std::io::Error>>().await
            }
        });
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(10))
        .exit_reserve(Duration::from_secs(5))
        .cancel_grace(Duration::from_secs(1))
        .hooks(pool.hooks())
        .on_exit("hog", move |_ctx| {
            if hand_back_in_exit {
                failures.store(0, Ordering::SeqCst);
            }
            sleep(Duration::from_secs(3600))
        })
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    started.recv().await.unwrap();
    started.recv().await.unwrap();
    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(
        outcome.hook("jobs:close").unwrap().result,
        HookResult::Skipped,
        "{outcome}"
    );
    (outcome, pool, memory)
}

#[tokio::test(start_paused = true)]
async fn a_skipped_close_reports_the_jobs_it_could_not_hand_back_as_lost() {
    init_tracing();
    let (outcome, pool, memory) = close_skipped(false).await;
    assert_eq!(
        ids(outcome.lost().iter().map(String::as_str)),
        ids(["stuck-1", "stuck-2"]),
        "{outcome}"
    );
    assert!(outcome.handed_back().is_empty());
    assert!(memory.is_empty());
    let counters = pool.counters();
    assert_eq!((counters.requeued, counters.lost), (0, 2));
    assert_settled(counters);
}

#[tokio::test(start_paused = true)]
async fn a_skipped_close_hands_back_at_once_what_the_source_takes_synchronously() {
    init_tracing();
    let (outcome, pool, memory) = close_skipped(true).await;
    assert!(outcome.lost().is_empty(), "{:?}", outcome.lost());
    assert_eq!(
        ids(outcome.handed_back().iter().map(String::as_str)),
        ids(["stuck-1", "stuck-2"])
    );
    assert_eq!(
        ids(memory.queued_ids().iter().map(String::as_str)),
        ids(["stuck-1", "stuck-2"])
    );
    let counters = pool.counters();
    assert_eq!((counters.requeued, counters.lost), (2, 0));
    assert_settled(counters);
}

#[tokio::test(start_paused = true)]
async fn a_close_whose_start_never_ran_returns_at_once() {
    init_tracing();
    let source = MemorySource::new(10);
    fill(&source, &["never"]).await;
    let pool = JobPool::builder(source.clone())
        .build(|_job: Job, _ctx: JobContext| async { Ok::<(), std::io::Error>(()) });
    let lifecycle = testing::builder().hooks(pool.hooks()).build().unwrap();
    let handle = lifecycle.handle();
    // Two signals before the run: escalation skips startup, so `jobs:start` never runs.
    handle.trigger(Signal::Term);
    handle.trigger(Signal::Term);
    let outcome = lifecycle.run().await;
    assert_eq!(
        outcome.hook("jobs:start").unwrap().result,
        HookResult::Skipped,
        "{outcome}"
    );
    // Whether the lifecycle runs the teardown of a skipped start or not, the close must not
    // wait for workers that were never started.
    let close = outcome.hook("jobs:close").unwrap();
    assert!(
        close.result == HookResult::Skipped
            || (close.result == HookResult::Ok && close.elapsed < Duration::from_millis(1)),
        "{close:?}"
    );
    assert!(
        outcome.stop_elapsed() < Duration::from_millis(1),
        "{:?} of a 25 s budget",
        outcome.stop_elapsed()
    );
    assert_eq!(source.queued_ids(), ["never"]);
    assert_eq!(pool.counters().fetched, 0);
}

/// `committed` passes its point of no return, says so, then waits for `delivered` (a message
/// handed to a producer, waiting for its delivery report); `plain` never ends. Returns the
/// outcome, the pool and the source, once `act` has run after both started.
async fn point_of_no_return(
    act: impl AsyncFnOnce(&LifecycleHandle, &mut lifecycle_hooks::EventStream, Arc<tokio::sync::Notify>),
) -> (Outcome, JobPool<MemorySource>, MemorySource) {
    let source = MemorySource::new(10);
    fill(&source, &["committed", "plain"]).await;
    let delivered = Arc::new(tokio::sync::Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source.clone()).concurrency(2).build({
        let delivered = delivered.clone();
        move |job: Job, ctx: JobContext| {
            let (delivered, started_tx) = (delivered.clone(), started_tx.clone());
            async move {
                if job.id() == "committed" {
                    ctx.point_of_no_return();
                    assert!(ctx.is_past_point_of_no_return());
                    started_tx.send(()).unwrap();
                    delivered.notified().await;
                    // Checkpoints after the point of no return are ignored.
                    ctx.requeue(job);
                } else {
                    started_tx.send(()).unwrap();
                    std::future::pending::<()>().await;
                }
                Ok::<(), std::io::Error>(())
            }
        }
    });
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(10))
        .exit_reserve(Duration::from_secs(4))
        .cancel_grace(Duration::from_secs(1))
        .hooks(pool.hooks())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let mut events = handle.subscribe();
    let run = tokio::spawn(lifecycle.run());
    started.recv().await.unwrap();
    started.recv().await.unwrap();
    act(&handle, &mut events, delivered).await;
    (run.await.unwrap(), pool, source)
}

/// Only `plain` was handed back; `committed` completed and is gone from the source.
fn assert_committed_is_never_handed_back(
    outcome: &Outcome,
    pool: &JobPool<MemorySource>,
    source: &MemorySource,
) {
    assert_eq!(outcome.handed_back(), ["plain"], "{outcome}");
    assert!(outcome.lost().is_empty(), "{:?}", outcome.lost());
    assert_eq!(source.queued_ids(), ["plain"]);
    let counters = pool.counters();
    assert_eq!(
        (counters.completed, counters.requeued),
        (1, 1),
        "{counters:?}"
    );
    assert_settled(counters);
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_point_of_no_return_is_not_cut_off_at_the_deadline() {
    init_tracing();
    let (outcome, pool, source) = point_of_no_return(async |handle, events, delivered| {
        handle.stop();
        // The deadline cuts off `plain` only; `committed` goes on, and is delivered later.
        while !matches!(events.next().await, Some(Event::WorkCancelled { .. })) {}
        delivered.notify_one();
    })
    .await;
    assert_eq!(outcome.exit_code(), 2, "{outcome}");
    assert_committed_is_never_handed_back(&outcome, &pool, &source);
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_point_of_no_return_is_not_cut_off_by_a_second_signal() {
    init_tracing();
    let (outcome, pool, source) = point_of_no_return(async |handle, events, delivered| {
        handle.trigger(Signal::Term);
        handle.trigger(Signal::Term);
        while !matches!(events.next().await, Some(Event::WorkCancelled { .. })) {}
        delivered.notify_one();
    })
    .await;
    assert!(outcome.escalated(), "{outcome}");
    assert_committed_is_never_handed_back(&outcome, &pool, &source);
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_point_of_no_return_that_outlives_the_exit_budget_is_acked_not_requeued() {
    init_tracing();
    // `committed` is never delivered.
    let (outcome, pool, source) = point_of_no_return(async |handle, _events, _delivered| {
        handle.stop();
    })
    .await;
    assert_eq!(outcome.exit_code(), 2, "{outcome}");
    assert!(
        outcome.stop_elapsed() <= Duration::from_secs(10),
        "bounded by the budget: {:?}",
        outcome.stop_elapsed()
    );
    assert_committed_is_never_handed_back(&outcome, &pool, &source);
}
