//! The Redis reliable queue against a real `redis-server`, alone and under a pool.
//!
//! Real time; every wait is on a channel or a lifecycle event, and each test is bounded by
//! [`bounded`] so a regression fails instead of hanging.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use common::{Log, ids, init_tracing};
use futures::StreamExt;
use lifecycle_hooks::testing;
use lifecycle_hooks::{HookResult, HookSpec, Outcome, Phase};
use lifecycle_hooks_jobs::{Counters, Job, JobContext, JobPool, JobSource, RedisSource, Retry};
use lifecycle_hooks_test_support::redis::RedisServer;
use redis::AsyncCommands;
use tokio::sync::mpsc;

/// Runs a test body, failing it if it takes more than 30 s.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(30), body)
        .await
        .expect("the test hung");
}

async fn source(server: &RedisServer, process: &str) -> RedisSource {
    RedisSource::builder(server.client(), "work")
        .process_id(process)
        .response_timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect")
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    server
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

fn names(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|job| job.id().to_owned()).collect()
}

/// Waits until the pool's fetch is blocked in Redis. Redis has no notification for this, so it
/// asks `INFO clients` until `blocked_clients:1` (a bounded loop of queries, no sleeps).
async fn wait_until_blocked(server: &RedisServer) {
    let mut redis = raw(server).await;
    loop {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut redis)
            .await
            .unwrap();
        if info.lines().any(|line| line.trim() == "blocked_clients:1") {
            return;
        }
        tokio::task::yield_now().await;
    }
}

fn assert_settled(counters: Counters) {
    let ended = counters.completed + counters.failed + counters.requeued + counters.lost;
    assert_eq!(counters.fetched, ended, "ledger broken: {counters:?}");
    assert_eq!(counters.in_flight, 0, "{counters:?}");
    assert!(counters.is_settled());
}

#[tokio::test]
async fn the_reliable_queue_moves_jobs_between_lists_atomically() {
    init_tracing();
    let server = RedisServer::start();
    bounded(async {
        let source = source(&server, "p1").await;
        let keys = source.keys().clone();
        let mut redis = raw(&server).await;
        source
            .enqueue_all(&[Job::new("a", "1"), Job::new("b", "2"), Job::new("c", "3")])
            .await
            .unwrap();
        assert!(source.start().await.unwrap().is_empty());
        let members: Vec<String> = redis.smembers(&keys.processes).await.unwrap();
        assert_eq!(members, ["p1"], "start registers the process");
        let lease: i64 = redis.pttl(&keys.alive).await.unwrap();
        assert!(lease > 0, "with a lease that expires");

        // fetch: queue -> processing, in one step.
        let a = source.fetch().await.unwrap().unwrap();
        assert_eq!(
            (a.id(), &a.payload()[..], a.queue()),
            ("a", &b"1"[..], "work")
        );
        assert_eq!(names(&source.processing().await.unwrap()), ["a"]);
        assert_eq!(names(&source.queued().await.unwrap()), ["b", "c"]);
        // ack: gone from processing.
        source.ack(&a).await.unwrap();
        assert!(source.processing().await.unwrap().is_empty());

        // requeue: back to the head, checkpoint replacing the delivery.
        let b = source.fetch().await.unwrap().unwrap();
        source
            .requeue(vec![b.with_payload("2-checkpoint")])
            .await
            .unwrap();
        assert!(source.processing().await.unwrap().is_empty());
        let queued = source.queued().await.unwrap();
        assert_eq!(names(&queued), ["b", "c"]);
        assert_eq!(&queued[0].payload()[..], b"2-checkpoint");

        // fail: retry at the tail with attempt + 1, or dead.
        let b = source.fetch().await.unwrap().unwrap();
        source.fail(&b, Retry::Again).await.unwrap();
        let queued = source.queued().await.unwrap();
        assert_eq!(names(&queued), ["c", "b"]);
        assert_eq!(queued[1].attempt(), 1);
        let c = source.fetch().await.unwrap().unwrap();
        source.fail(&c, Retry::Dead).await.unwrap();
        assert_eq!(names(&source.dead().await.unwrap()), ["c"]);
        assert!(source.processing().await.unwrap().is_empty());

        // A value that is not a job goes to the dead list instead of jamming the queue.
        let _: i64 = redis.lpush(&keys.queue, "not a job").await.unwrap();
        let b = source.fetch().await.unwrap().unwrap();
        assert_eq!(b.id(), "b");
        let dead: Vec<Vec<u8>> = redis.lrange(&keys.dead, 0, -1).await.unwrap();
        assert_eq!(dead[0], b"not a job");
        source.ack(&b).await.unwrap();

        // close: unregisters, drops the lease; nothing was left to sweep.
        assert!(source.close().await.unwrap().is_empty());
        assert!(
            source.fetch().await.unwrap().is_none(),
            "a closed source hands out nothing"
        );
        let members: Vec<String> = redis.smembers(&keys.processes).await.unwrap();
        assert!(members.is_empty());
        let alive: bool = redis.exists(&keys.alive).await.unwrap();
        assert!(!alive);
    })
    .await;
}

/// A pool over `source` whose handler finishes `fast-*` jobs at once and never finishes
/// `slow-*` ones; each start is reported on the channel.
fn pool(
    source: RedisSource,
    concurrency: usize,
) -> (JobPool<RedisSource>, mpsc::UnboundedReceiver<String>) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let pool = JobPool::builder(source).concurrency(concurrency).build(
        move |job: Job, _ctx: JobContext| {
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(job.id().to_owned());
                if job.id().starts_with("slow") {
                    std::future::pending::<()>().await;
                }
                Ok::<(), std::io::Error>(())
            }
        },
    );
    (pool, started)
}

async fn started(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(rx.recv().await.expect("handlers alive"));
    }
    got
}

#[tokio::test]
async fn a_pool_runs_redis_jobs_and_leaves_nothing_behind() {
    init_tracing();
    let server = RedisServer::start();
    bounded(async {
        let source = source(&server, "worker-1").await;
        let jobs: Vec<Job> = (0..40)
            .map(|n| Job::new(format!("fast-{n}"), "x"))
            .collect();
        source.enqueue_all(&jobs).await.unwrap();
        let (pool, mut rx) = pool(source.clone(), 4);
        let lifecycle = testing::builder().hooks(pool.hooks()).build().unwrap();
        let handle = lifecycle.handle();
        let run = tokio::spawn(lifecycle.run());
        let ran = started(&mut rx, 40).await;
        assert_eq!(
            ids(ran.iter().map(String::as_str)),
            ids(names(&jobs).iter().map(String::as_str))
        );
        handle.stop();
        let outcome = run.await.unwrap();
        assert_eq!(outcome.exit_code(), 0, "{outcome}");
        assert!(source.queued().await.unwrap().is_empty());
        assert!(
            source.processing().await.unwrap().is_empty(),
            "every job was acked"
        );
        let counters = pool.counters();
        assert_eq!((counters.fetched, counters.completed), (40, 40));
        assert_settled(counters);
    })
    .await;
}

/// Enqueues fast-1, fast-2, slow-1, slow-2, waiting-1; runs a pool of 2 until both slow jobs
/// run, then stops; the drain deadline comes 300 ms after the stop.
async fn cut_off(
    server: &mut RedisServer,
    budget: Duration,
    before_stop: impl AsyncFnOnce(&mut RedisServer),
) -> (Outcome, JobPool<RedisSource>) {
    let source = source(server, "worker-1").await;
    source
        .enqueue_all(&[
            Job::new("fast-1", ""),
            Job::new("fast-2", ""),
            Job::new("slow-1", ""),
            Job::new("slow-2", ""),
            Job::new("waiting-1", ""),
        ])
        .await
        .unwrap();
    let (pool, mut rx) = pool(source, 2);
    let lifecycle = testing::builder()
        .budget(budget)
        .exit_reserve(budget - Duration::from_millis(300))
        .cancel_grace(Duration::from_millis(200))
        .hooks(pool.hooks())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    let ran = started(&mut rx, 4).await;
    assert_eq!(ran[..2], ["fast-1", "fast-2"]);
    before_stop(server).await;
    handle.stop();
    (run.await.unwrap(), pool)
}

#[tokio::test]
async fn the_deadline_requeues_exactly_the_unfinished_jobs() {
    init_tracing();
    let mut server = RedisServer::start();
    bounded(async {
        let (outcome, pool) = cut_off(&mut server, Duration::from_secs(3), async |_| {}).await;
        assert_eq!(outcome.exit_code(), 2, "{outcome}");
        assert_eq!(outcome.cancelled_work(), 2);
        assert_eq!(
            ids(outcome.handed_back().iter().map(String::as_str)),
            ids(["slow-1", "slow-2"])
        );
        assert!(outcome.lost().is_empty());
        // In Redis: the two cut-off jobs at the head, the never-fetched one behind, nothing held.
        let source = pool.source();
        let queued = names(&source.queued().await.unwrap());
        assert_eq!(queued.len(), 3, "{queued:?}");
        assert_eq!(
            ids(queued[..2].iter().map(String::as_str)),
            ids(["slow-1", "slow-2"])
        );
        assert_eq!(queued[2], "waiting-1");
        let mut redis = raw(&server).await;
        let held: i64 = redis.llen(&source.keys().processing).await.unwrap();
        assert_eq!(held, 0);
        let counters = pool.counters();
        assert_eq!(
            (counters.fetched, counters.completed, counters.requeued),
            (4, 2, 2)
        );
        assert_settled(counters);
    })
    .await;
}

#[tokio::test]
async fn a_requeue_that_times_out_while_redis_pauses_writes_is_retried_until_it_lands() {
    init_tracing();
    let mut server = RedisServer::start();
    bounded(async {
        let pause = async |server: &mut RedisServer| {
            let mut redis = raw(server).await;
            // Writes block for 2 s: the requeue at the deadline (300 ms) times out (200 ms).
            let () = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(2000)
                .arg("WRITE")
                .query_async(&mut redis)
                .await
                .unwrap();
        };
        let (outcome, pool) = cut_off(&mut server, Duration::from_secs(8), pause).await;
        assert_eq!(outcome.exit_code(), 2, "{outcome}");
        assert!(outcome.lost().is_empty(), "{:?}", outcome.lost());
        assert_eq!(
            ids(outcome.handed_back().iter().map(String::as_str)),
            ids(["slow-1", "slow-2"])
        );
        let counters = pool.counters();
        assert!(
            counters.source_errors >= 1,
            "the first requeue failed: {counters:?}"
        );
        assert_eq!(counters.requeued, 2);
        assert_settled(counters);
        // Retried, yet each job is in the queue exactly once.
        let queued = names(&pool.source().queued().await.unwrap());
        assert_eq!(queued.len(), 3, "{queued:?}");
        assert_eq!(
            ids(queued.iter().map(String::as_str)),
            ids(["slow-1", "slow-2", "waiting-1"])
        );
    })
    .await;
}

#[tokio::test]
async fn jobs_that_cannot_be_requeued_because_redis_died_are_reported_lost() {
    init_tracing();
    let mut server = RedisServer::start();
    bounded(async {
        let crash = async |server: &mut RedisServer| server.kill();
        let (outcome, pool) = cut_off(&mut server, Duration::from_secs(2), crash).await;
        assert_eq!(outcome.exit_code(), 2, "{outcome}");
        assert_eq!(
            ids(outcome.lost().iter().map(String::as_str)),
            ids(["slow-1", "slow-2"])
        );
        assert!(outcome.handed_back().is_empty());
        assert!(
            matches!(
                outcome.hook("jobs:close").unwrap().result,
                HookResult::Error(_)
            ),
            "closing a source whose server is gone fails, and says so"
        );
        let counters = pool.counters();
        assert_eq!((counters.requeued, counters.lost), (0, 2));
        assert_settled(counters);
    })
    .await;
}

#[tokio::test]
async fn the_jobs_of_a_dead_process_are_recovered_at_startup() {
    init_tracing();
    let server = RedisServer::start();
    bounded(async {
        let mut redis = raw(&server).await;
        // A process that dies holding two jobs.
        let dead = source(&server, "dead-one").await;
        dead.enqueue_all(&[Job::new("x", ""), Job::new("y", "")])
            .await
            .unwrap();
        dead.start().await.unwrap();
        dead.fetch().await.unwrap().unwrap();
        dead.fetch().await.unwrap().unwrap();
        let dead_keys = dead.keys().clone();
        drop(dead);
        // A live process holding one job.
        let live = source(&server, "live-one").await;
        live.enqueue(&Job::new("z", "")).await.unwrap();
        live.start().await.unwrap();
        assert_eq!(live.fetch().await.unwrap().unwrap().id(), "z");
        // The dead process's lease runs out (made immediate here).
        let _: i64 = redis.del(&dead_keys.alive).await.unwrap();

        let survivor = source(&server, "survivor").await;
        let (pool, mut rx) = pool(survivor.clone(), 4);
        let lifecycle = testing::builder().hooks(pool.hooks()).build().unwrap();
        let handle = lifecycle.handle();
        let run = tokio::spawn(lifecycle.run());
        let ran = started(&mut rx, 2).await;
        assert_eq!(ids(ran.iter().map(String::as_str)), ids(["x", "y"]));
        handle.stop();
        let outcome = run.await.unwrap();
        assert_eq!(outcome.exit_code(), 0, "{outcome}");
        let counters = pool.counters();
        assert_eq!(
            (counters.recovered, counters.fetched, counters.completed),
            (2, 2, 2)
        );
        assert_settled(counters);
        let held: i64 = redis.llen(&dead_keys.processing).await.unwrap();
        assert_eq!(held, 0);
        let members: Vec<String> = redis.smembers(&dead_keys.processes).await.unwrap();
        assert_eq!(
            members,
            ["live-one"],
            "the dead process is unregistered, the live one kept"
        );
        assert_eq!(
            names(&live.processing().await.unwrap()),
            ["z"],
            "a live process keeps its jobs"
        );
    })
    .await;
}

#[tokio::test]
async fn a_restarted_process_with_the_same_id_takes_back_its_own_leftovers() {
    init_tracing();
    let server = RedisServer::start();
    bounded(async {
        let before = source(&server, "pod-0").await;
        before.enqueue(&Job::new("w", "")).await.unwrap();
        before.start().await.unwrap();
        before.fetch().await.unwrap().unwrap();
        drop(before); // crashed; its lease is still running
        let after = source(&server, "pod-0").await;
        let recovered = after.start().await.unwrap();
        assert_eq!(names(&recovered), ["w"]);
        assert_eq!(after.fetch().await.unwrap().unwrap().id(), "w");
    })
    .await;
}

#[tokio::test]
async fn a_job_taken_by_a_fetch_dropped_at_intake_stop_is_handed_back_at_close() {
    init_tracing();
    let server = RedisServer::start();
    bounded(async {
        let source = source(&server, "worker-1").await;
        let (pool, _rx) = pool(source.clone(), 2);
        let log = Log::default();
        // Runs before the pool's close: the fetch dropped at intake stop still blocks in Redis,
        // so a job pushed now lands in this process's processing list.
        let push_late = HookSpec::new(Phase::EXIT, "push_late", {
            let (source, log) = (source.clone(), log.clone());
            move |_ctx| {
                let (source, log) = (source.clone(), log.clone());
                async move {
                    source.enqueue(&Job::new("late", "")).await.unwrap();
                    log.push(format!(
                        "held {:?}",
                        names(&source.processing().await.unwrap())
                    ));
                }
            }
        })
        .before("jobs:close");
        let lifecycle = testing::builder()
            .hooks(pool.hooks())
            .hook(push_late)
            .build()
            .unwrap();
        let handle = lifecycle.handle();
        let mut events = handle.subscribe();
        let run = tokio::spawn(lifecycle.run());
        while !matches!(events.next().await, Some(lifecycle_hooks::Event::Ready)) {}
        wait_until_blocked(&server).await;
        handle.stop();
        let outcome = run.await.unwrap();
        assert_eq!(log.lines(), ["held [\"late\"]"], "the stale fetch took it");
        assert_eq!(outcome.exit_code(), 0, "{outcome}");
        assert_eq!(outcome.handed_back(), ["late"]);
        assert_eq!(names(&source.queued().await.unwrap()), ["late"]);
        assert!(source.processing().await.unwrap().is_empty());
        let counters = pool.counters();
        assert_eq!((counters.fetched, counters.recovered), (0, 1));
        assert_settled(counters);
    })
    .await;
}

/// Queries Redis until `done` holds for the answer (a bounded loop of queries, no sleeps; the
/// test's own bound fails it if it never does).
async fn until<T, F>(redis: &mut redis::aio::MultiplexedConnection, command: redis::Cmd, done: F)
where
    T: redis::FromRedisValue,
    F: Fn(&T) -> bool,
{
    loop {
        let answer: T = command.query_async(redis).await.unwrap();
        if done(&answer) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_process_whose_lease_lapsed_once_is_recovered_when_it_really_dies() {
    init_tracing();
    let server = RedisServer::start();
    bounded(async {
        let mut redis = raw(&server).await;
        let lease = Duration::from_millis(300);
        let flaky = RedisSource::builder(server.client(), "work")
            .process_id("flaky")
            .lease(lease)
            .connect()
            .await
            .unwrap();
        let peer = source(&server, "peer").await;
        let keys = flaky.keys().clone();
        flaky
            .enqueue_all(&[Job::new("first", ""), Job::new("second", "")])
            .await
            .unwrap();
        flaky.start().await.unwrap();
        peer.start().await.unwrap();
        let first = flaky.fetch().await.unwrap().unwrap();
        assert_eq!(first.id(), "first");

        // The lease lapses while `flaky` is alive (made immediate here), and the peer sweeps:
        // it unregisters `flaky` and puts the job it is running back on the queue.
        let _: i64 = redis.del(&keys.alive).await.unwrap();
        assert_eq!(names(&peer.recover_orphans().await.unwrap()), ["first"]);
        let members: Vec<String> = redis.smembers(&keys.processes).await.unwrap();
        assert_eq!(members, ["peer"]);
        // At least once: `flaky` is still running `first`, and the queue has it again, so it
        // runs twice; the late ack finds nothing to remove.
        assert_eq!(names(&flaky.queued().await.unwrap()), ["first", "second"]);
        flaky.ack(&first).await.unwrap();
        assert_eq!(names(&flaky.queued().await.unwrap()), ["first", "second"]);

        // Its next heartbeat renews the lease, and registers it again with it.
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&keys.alive);
        until(&mut redis, exists, |alive: &bool| *alive).await;
        let members: BTreeSet<String> = redis.smembers(&keys.processes).await.unwrap();
        assert_eq!(
            members,
            ids(["flaky", "peer"]),
            "the heartbeat registered the process again"
        );

        // Now it really dies holding two jobs.
        assert_eq!(flaky.fetch().await.unwrap().unwrap().id(), "first");
        assert_eq!(flaky.fetch().await.unwrap().unwrap().id(), "second");
        drop(flaky);
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&keys.alive);
        until(&mut redis, exists, |alive: &bool| !*alive).await;
        let recovered = peer.recover_orphans().await.unwrap();
        assert_eq!(
            ids(names(&recovered).iter().map(String::as_str)),
            ids(["first", "second"]),
            "its processing list is recovered, not stranded"
        );
        let held: i64 = redis.llen(&keys.processing).await.unwrap();
        assert_eq!(held, 0);
        let members: Vec<String> = redis.smembers(&keys.processes).await.unwrap();
        assert_eq!(members, ["peer"]);
    })
    .await;
}

#[tokio::test]
async fn a_hand_back_retried_after_a_lost_answer_never_pushes_a_running_delivery() {
    init_tracing();
    let server = RedisServer::start();
    bounded(async {
        let mut redis = raw(&server).await;
        let source = source(&server, "p1").await;
        let keys = source.keys().clone();
        source
            .enqueue_all(&[Job::new("warm-up", ""), Job::new("again", "same")])
            .await
            .unwrap();
        source.start().await.unwrap();
        // Loads the hand-back script, so the paused call below runs it rather than asking.
        let warm = source.fetch().await.unwrap().unwrap();
        source.requeue(vec![warm]).await.unwrap();
        let warm = source.fetch().await.unwrap().unwrap();
        source.ack(&warm).await.unwrap();

        let first = source.fetch().await.unwrap().unwrap();
        assert_eq!(first.id(), "again");
        // Writes pause for 600 ms: the hand-back times out after 200 ms and fails, but Redis
        // runs it when the pause ends. Its answer is lost.
        let () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(600)
            .arg("WRITE")
            .query_async(&mut redis)
            .await
            .unwrap();
        let failed = source.requeue(vec![first.clone()]).await.unwrap_err();
        assert_eq!(names(&failed.jobs), ["again"]);
        let mut len = redis::cmd("LLEN");
        len.arg(&keys.queue);
        until(&mut redis, len, |queued: &i64| *queued == 1).await;
        // Fetched again: the same bytes now stand for a delivery that is running.
        let second = source.fetch().await.unwrap().unwrap();
        assert_eq!(second.receipt(), first.receipt());

        // The hand-back is retried (the pool does this with whatever the source says failed).
        source.requeue(vec![first]).await.unwrap();
        assert!(
            source.queued().await.unwrap().is_empty(),
            "the retry pushed the running delivery back on the queue: it would run twice at once"
        );
        assert_eq!(names(&source.processing().await.unwrap()), ["again"]);
        source.ack(&second).await.unwrap();
        assert!(source.processing().await.unwrap().is_empty());
        assert!(source.queued().await.unwrap().is_empty());

        // A hand-back of the running delivery itself still works.
        source.enqueue(&Job::new("third", "")).await.unwrap();
        let third = source.fetch().await.unwrap().unwrap();
        source.requeue(vec![third.clone()]).await.unwrap();
        assert_eq!(names(&source.queued().await.unwrap()), ["third"]);
        source.requeue(vec![third]).await.unwrap();
        assert_eq!(
            names(&source.queued().await.unwrap()),
            ["third"],
            "a repeated hand-back is applied once"
        );
        assert!(source.close().await.unwrap().is_empty());
        let tokens: bool = redis.exists(&keys.requeued).await.unwrap();
        assert!(!tokens, "close leaves no hand-back record behind");
    })
    .await;
}

/// A Redis that stops answering (frozen with `SIGSTOP`: its connections open and silent): a
/// fetch blocked in it fails within its bound (the `BLMOVE` block time and the response
/// timeout) instead of waiting for ever, which held every worker of the pool behind it; thawed,
/// the next fetch takes the job.
#[tokio::test]
async fn a_fetch_from_a_frozen_redis_fails_within_its_bound() {
    init_tracing();
    let server = RedisServer::start();
    bounded(async {
        let source = source(&server, "worker-1").await;
        source.start().await.unwrap();
        let fetch = tokio::spawn({
            let source = source.clone();
            async move { source.fetch().await }
        });
        wait_until_blocked(&server).await;
        server.freeze();
        let failed = tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .expect("the fetch ends within its bound")
            .unwrap();
        server.resume();
        let error = failed.expect_err("a frozen Redis is an error, not a job");
        assert!(error.to_string().contains("BLMOVE"), "{error}");
        source.enqueue(&Job::new("after", "")).await.unwrap();
        let job = source.fetch().await.unwrap().expect("the job");
        assert_eq!(job.id(), "after");
    })
    .await;
}

/// Hostile settings: zero timeouts are refused with an error naming the setting; `Duration::MAX`
/// everywhere (lease, response and connect timeouts) works: jobs run, the heartbeat starts,
/// and the lease Redis holds is capped, not wrapped around.
#[tokio::test]
async fn zero_timeouts_are_refused_by_name_and_duration_max_works() {
    init_tracing();
    let server = RedisServer::start();
    bounded(async {
        for (name, builder) in [
            (
                "response timeout",
                RedisSource::builder(server.client(), "work").response_timeout(Duration::ZERO),
            ),
            (
                "connect timeout",
                RedisSource::builder(server.client(), "work").connect_timeout(Duration::ZERO),
            ),
        ] {
            let error = builder
                .connect()
                .await
                .expect_err("a zero timeout is refused");
            assert!(
                error.to_string().contains(name),
                "the error names the {name}: {error}"
            );
        }
        let source = RedisSource::builder(server.client(), "work")
            .process_id("unbounded")
            .lease(Duration::MAX)
            .response_timeout(Duration::MAX)
            .connect_timeout(Duration::MAX)
            .connect()
            .await
            .expect("Duration::MAX is accepted");
        let jobs: Vec<Job> = (0..3).map(|n| Job::new(format!("fast-{n}"), "x")).collect();
        source.enqueue_all(&jobs).await.unwrap();
        let (pool, mut rx) = pool(source.clone(), 2);
        let lifecycle = testing::builder().hooks(pool.hooks()).build().unwrap();
        let handle = lifecycle.handle();
        let run = tokio::spawn(lifecycle.run());
        started(&mut rx, 3).await;
        let mut redis = raw(&server).await;
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&source.keys().alive)
            .query_async(&mut redis)
            .await
            .unwrap();
        let cap = RedisSource::MAX_LEASE.as_millis() as i64;
        assert!(
            ttl > cap - 60_000 && ttl <= cap,
            "the lease is capped at {cap} ms, Redis holds {ttl} ms"
        );
        handle.stop();
        let outcome = run.await.unwrap();
        assert_eq!(outcome.exit_code(), 0, "{outcome}");
        let counters = pool.counters();
        assert_eq!((counters.fetched, counters.completed), (3, 3));
        assert_settled(counters);
    })
    .await;
}
