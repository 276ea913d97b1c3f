//! Regression tests for the bugs found by driving the lifecycle as a demanding user would (real
//! threads, signals at awkward moments, hostile durations). Each test names its bug in
//! `docs/reliability.md`; each failed on the code before its fix.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use lifecycle_hooks::testing::{self, Recorder};
use lifecycle_hooks::{Event, HookResult, HookSpec, Phase, Reason, Signal};
use support::two_workers;
use tokio::sync::Notify;

const SECOND: Duration = Duration::from_secs(1);

/// A datagram socket standing in for systemd's notify socket, read without blocking.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(name: &str) -> NotifySocket {
        let dir = std::env::temp_dir().join(format!("lh-correct-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        NotifySocket { socket, path }
    }

    fn path(&self) -> String {
        self.path.to_str().unwrap().to_owned()
    }

    /// Every datagram received so far.
    fn drain(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
    }
}

fn position(messages: &[String], wanted: &str) -> Option<usize> {
    messages.iter().position(|m| m == wanted)
}

/// Bug 1: the runner read the control channel through a second borrow while holding the first,
/// so a `stop()` from another thread parked as a writer between the two reads deadlocked both.
/// Many shutdown hooks, several OS threads calling `stop`/`quiet`/`trigger` in a loop, a
/// 2-worker runtime, repeated: every run must finish.
#[test]
fn concurrent_stop_from_other_threads_while_the_runner_walks_many_hooks_never_deadlocks() {
    for round in 0..3 {
        let runtime = two_workers();
        let ran = Arc::new(AtomicUsize::new(0));
        let mut builder = testing::builder();
        for i in 0..20_000 {
            let ran = Arc::clone(&ran);
            builder = builder.on_shutdown(format!("hook-{i}"), move |_ctx| {
                ran.fetch_add(1, Ordering::Relaxed);
                async {}
            });
        }
        let lifecycle = builder.build().unwrap();
        let handle = lifecycle.handle();
        let done = Arc::new(AtomicBool::new(false));
        let hammers: Vec<_> = (0..3)
            .map(|t| {
                let handle = handle.clone();
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut calls = 0u64;
                    while !done.load(Ordering::Relaxed) {
                        match t {
                            0 => handle.stop(),
                            1 => handle.quiet(),
                            _ => handle.trigger(Signal::Ttin),
                        }
                        let _ = handle.deadlines().map(|d| d.budget_left());
                        calls += 1;
                    }
                    calls
                })
            })
            .collect();
        // The watchdog of this test is the channel: a deadlocked run never sends.
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(lifecycle.run().await);
        });
        let Ok(outcome) = rx.recv_timeout(Duration::from_secs(120)) else {
            done.store(true, Ordering::Relaxed);
            // A deadlocked runtime would block its own drop: leak it so the failure is reported.
            std::mem::forget(runtime);
            panic!("round {round}: the run deadlocked");
        };
        done.store(true, Ordering::Relaxed);
        let calls: u64 = hammers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(calls > 0);
        assert_eq!(ran.load(Ordering::Relaxed), 20_000, "round {round}");
        assert_eq!(outcome.reason(), Reason::Stop);
        assert_eq!(outcome.exit_code(), 0, "round {round}: {outcome}");
    }
}

/// Bug 2: a second signal during startup skips the startup phase; exit hooks paired with a
/// startup hook that never ran (`teardown_of`) must not run either, unpaired ones still do.
#[tokio::test(start_paused = true)]
async fn escalation_before_startup_runs_no_teardown_of_a_startup_hook_that_never_ran() {
    let lifecycle = testing::builder()
        .on_startup("open_pool", |_ctx| async {})
        .hook(HookSpec::new(Phase::EXIT, "close_pool", |_ctx| async {}).teardown_of("open_pool"))
        .on_exit("flush_logs", |_ctx| async {})
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.trigger(Signal::Term);
    handle.trigger(Signal::Term);
    let outcome = lifecycle.run().await;
    assert_eq!(
        outcome.hook("open_pool").unwrap().result,
        HookResult::Skipped
    );
    assert_eq!(
        outcome.hook("close_pool").unwrap().result,
        HookResult::Skipped
    );
    assert_eq!(outcome.hook("flush_logs").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.exit_code(), 2);
}

/// Bug 2, the other side: a startup hook cut off by the escalation did not succeed, so its
/// teardown does not run; one that succeeded before it keeps its teardown.
#[tokio::test(start_paused = true)]
async fn escalation_during_startup_tears_down_only_the_startup_hooks_that_succeeded() {
    let entered = Arc::new(Notify::new());
    let lifecycle = testing::builder()
        .on_startup("first", |_ctx| async {})
        .hook(HookSpec::new(Phase::STARTUP, "slow", {
            let entered = Arc::clone(&entered);
            move |_ctx| {
                let entered = Arc::clone(&entered);
                async move {
                    entered.notify_one();
                    std::future::pending::<()>().await
                }
            }
        }))
        .hook(HookSpec::new(Phase::EXIT, "undo_first", |_ctx| async {}).teardown_of("first"))
        .hook(HookSpec::new(Phase::EXIT, "undo_slow", |_ctx| async {}).teardown_of("slow"))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    entered.notified().await;
    handle.trigger(Signal::Term);
    handle.trigger(Signal::Term);
    let outcome = run.await.unwrap();
    assert_eq!(outcome.hook("slow").unwrap().result, HookResult::Abandoned);
    assert_eq!(outcome.hook("undo_first").unwrap().result, HookResult::Ok);
    assert_eq!(
        outcome.hook("undo_slow").unwrap().result,
        HookResult::Skipped
    );
    assert_eq!(outcome.exit_code(), 2);
}

/// Bug 3: a stop during a startup hook longer than the budget. The hook is cut off at the
/// drain deadline (`timed_out`), the exit hooks run in their reserve, and the run is not clean.
#[tokio::test(start_paused = true)]
async fn a_stop_during_a_slow_startup_hook_cuts_it_at_the_drain_deadline_and_keeps_the_exit_reserve()
 {
    let entered = Arc::new(Notify::new());
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(25))
        .hook(HookSpec::new(Phase::STARTUP, "warm_cache", {
            let entered = Arc::clone(&entered);
            move |_ctx| {
                let entered = Arc::clone(&entered);
                async move {
                    entered.notify_one();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        }))
        .on_exit("close_producer", |_ctx| async {
            tokio::time::sleep(SECOND).await;
        })
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    entered.notified().await;
    let stop_at = tokio::time::Instant::now();
    handle.trigger(Signal::Term);
    let outcome = run.await.unwrap();
    let warm = outcome.hook("warm_cache").unwrap();
    assert_eq!(warm.result, HookResult::TimedOut);
    // Cut at the drain deadline: 25 s budget minus the 5 s reserve.
    assert_eq!(warm.elapsed, Duration::from_secs(20));
    assert_eq!(
        outcome.hook("close_producer").unwrap().result,
        HookResult::Ok
    );
    assert_eq!(stop_at.elapsed(), Duration::from_secs(21));
    assert!(!outcome.is_clean());
    assert_eq!(outcome.exit_code(), 1, "{outcome}");
}

/// Bug 3: an exit hook that never gets its turn because the budget ran out is a failure, never
/// a clean run.
#[tokio::test(start_paused = true)]
async fn an_exit_hook_skipped_for_want_of_budget_is_never_clean() {
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(5))
        .on_exit("close_producer", |_ctx| async {})
        // Exit hooks run in reverse registration order: this one first, for the whole budget.
        .on_exit("flush_metrics", |_ctx| std::future::pending::<()>())
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;
    assert_eq!(
        outcome.hook("flush_metrics").unwrap().result,
        HookResult::TimedOut
    );
    assert_eq!(
        outcome.hook("close_producer").unwrap().result,
        HookResult::Skipped
    );
    assert!(
        outcome
            .failures()
            .iter()
            .any(|f| f.contains("`close_producer`") && f.contains("never ran")),
        "{:?}",
        outcome.failures()
    );
    assert!(!outcome.is_clean());
    assert_eq!(outcome.exit_code(), 1);
}

/// Bug 4: quiet is not a stop. systemd hears `STATUS=` only (no `STOPPING=1`, which arms its
/// stop timeout); `STOPPING=1` goes out when the stop begins, and `EXTEND_TIMEOUT_USEC` only
/// after it.
#[tokio::test(start_paused = true)]
async fn quiet_sends_no_stopping_and_the_stop_extends_only_after_stopping() {
    let socket = NotifySocket::bind("quiet");
    let lifecycle = testing::builder()
        .notify_socket(socket.path(), None)
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle.readiness().wait_for(|r| *r).await.unwrap();
    handle.trigger(Signal::Tstp);
    let mut phase = handle.watch_phase();
    phase.wait_for(|p| *p == Phase::STOP_INTAKE).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let quiet = socket.drain();
    assert!(
        quiet.iter().any(|m| m.starts_with("STATUS=quiet")),
        "{quiet:?}"
    );
    assert!(!quiet.iter().any(|m| m == "STOPPING=1"), "{quiet:?}");
    assert!(
        !quiet.iter().any(|m| m.starts_with("EXTEND_TIMEOUT_USEC")),
        "{quiet:?}"
    );
    handle.trigger(Signal::Term);
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0);
    let stop = socket.drain();
    let stopping = position(&stop, "STOPPING=1").expect("STOPPING=1 once stopping");
    let first_extension = stop
        .iter()
        .position(|m| m.starts_with("EXTEND_TIMEOUT_USEC="))
        .expect("an extension");
    assert!(stopping < first_extension, "{stop:?}");
}

/// Bug 4: quiet before `running` never marks the service ready nor sends `READY=1`.
#[tokio::test(start_paused = true)]
async fn quiet_before_running_never_sends_ready() {
    let socket = NotifySocket::bind("quiet-early");
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .notify_socket(socket.path(), None)
        .observe(recorder.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.trigger(Signal::Tstp);
    let run = tokio::spawn(lifecycle.run());
    handle
        .watch_phase()
        .wait_for(|p| *p == Phase::STOP_INTAKE)
        .await
        .unwrap();
    assert!(!handle.is_ready());
    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0);
    let messages = socket.drain();
    assert!(!messages.iter().any(|m| m == "READY=1"), "{messages:?}");
    assert!(messages.iter().any(|m| m == "STOPPING=1"), "{messages:?}");
    assert!(
        recorder.position("ready").is_none(),
        "{:?}",
        recorder.trace()
    );
}

/// A restart the service starts itself (as USR2 or `restart()`): the first extension comes after
/// `STOPPING=1` (before the fix it came first, when systemd had no stop timer to extend), and
/// extensions keep coming while the exit hooks run.
#[tokio::test(start_paused = true)]
async fn a_self_started_restart_extends_after_stopping_and_through_the_exit_hooks() {
    let socket = NotifySocket::bind("extend");
    let lifecycle = testing::builder()
        .notify_socket(socket.path(), None)
        .budget(Duration::from_secs(25))
        .on_exit("slow_close", |_ctx| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
        })
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.restart();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 4);
    let messages = socket.drain();
    let stopping = position(&messages, "STOPPING=1").expect("STOPPING=1");
    let extensions: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.starts_with("EXTEND_TIMEOUT_USEC="))
        .map(|(i, _)| i)
        .collect();
    assert!(
        extensions.iter().all(|&i| i > stopping),
        "an extension before STOPPING=1: {messages:?}"
    );
    let exit_phase = position(&messages, "STATUS=phase exit").expect("the exit phase");
    assert!(
        extensions.iter().filter(|&&i| i > exit_phase).count() >= 2,
        "extensions during the 3 s exit hook: {messages:?}"
    );
}

/// Bug 7: the event stream ends when the run ends, even while handles live; a tracked task
/// reading it to the end does not hold the stop.
#[tokio::test(start_paused = true)]
async fn the_event_stream_ends_when_the_run_ends() {
    let lifecycle = testing::builder().build().unwrap();
    let handle = lifecycle.handle();
    let mut events = handle.subscribe();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(event) = events.recv().await {
            seen.push(event);
        }
        seen
    });
    handle.stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0);
    let seen = reader.await.unwrap();
    assert!(
        matches!(seen.last(), Some(Event::Finished { .. })),
        "{seen:?}"
    );
    // A stream taken after the end is already over.
    assert!(handle.subscribe().recv().await.is_none());
    drop(handle);
}

/// Bug 7, as reported: tracked work that reads the events to the end no longer forces the stop.
#[tokio::test(start_paused = true)]
async fn tracked_work_reading_events_to_the_end_is_not_cut() {
    let lifecycle = testing::builder().build().unwrap();
    let handle = lifecycle.handle();
    let mut events = handle.subscribe();
    handle.spawn(async move {
        while let Some(event) = events.recv().await {
            if matches!(event, Event::PhaseStarted { ref phase } if *phase == Phase::DRAIN) {
                return;
            }
        }
    });
    handle.stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    assert_eq!(outcome.cancelled_work(), 0);
}

/// Bug 8: `Duration::MAX` as the budget or a hook timeout means "no bound", not a panic in
/// `run()`.
#[tokio::test(start_paused = true)]
async fn duration_max_budget_and_hook_timeout_saturate() {
    let lifecycle = testing::builder()
        .budget(Duration::MAX)
        .hook(
            HookSpec::new(Phase::EXIT, "close", |_ctx| async {
                tokio::time::sleep(SECOND).await;
            })
            .timeout(Duration::MAX),
        )
        .on_shutdown("announce", |ctx: lifecycle_hooks::HookContext| async move {
            assert!(ctx.time_left().unwrap() > Duration::from_secs(86_400 * 365));
        })
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.spawn(tokio::time::sleep(SECOND));
    handle.stop();
    assert!(handle.deadlines().unwrap().budget_left() > Duration::from_secs(86_400 * 365));
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    assert_eq!(outcome.hook("announce").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.hook("close").unwrap().result, HookResult::Ok);
}

/// Bug 8, the other end: the smallest budget there is still runs every exit hook's turn and
/// reports.
#[tokio::test(start_paused = true)]
async fn a_one_nanosecond_budget_still_reports_every_hook() {
    let lifecycle = testing::builder()
        .budget(Duration::from_nanos(5))
        .on_shutdown("announce", |_ctx| async {})
        .on_exit("close", |_ctx| async {})
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.spawn(std::future::pending::<()>());
    handle.stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.hooks().len(), 2);
    assert!(outcome.exit_code() != 0);
}

/// A panic in tracked (non-critical) work is logged, counted, and makes the run a failure; the
/// join handle still sees the panic.
#[tokio::test(start_paused = true)]
async fn a_panic_in_tracked_work_is_counted_and_fails_the_run() {
    let lifecycle = testing::builder().build().unwrap();
    let handle = lifecycle.handle();
    let join = handle.spawn(async {
        assert_eq!(1 + 1, 3, "a doc example's failing assert");
    });
    assert!(join.await.unwrap_err().is_panic());
    handle.stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.panicked_work(), 1);
    assert_eq!(outcome.exit_code(), 1);
    assert!(!outcome.is_clean());
    assert!(
        outcome.failures().iter().any(|f| f.contains("panicked")),
        "{:?}",
        outcome.failures()
    );
}

/// Stuck-work report: named work still running at the drain deadline is named in the Outcome
/// (with its phase and age) and in a `WorkStuck` event; the state dump lists named work too.
#[tokio::test(start_paused = true)]
async fn work_stuck_at_the_drain_deadline_is_named_with_its_age() {
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(10))
        .observe(recorder.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.spawn_named("export orders.csv", std::future::pending::<()>());
    let guard = handle.work_guard_named("request GET /slow");
    handle.spawn_named("quick", async {});
    handle.spawn(std::future::pending::<()>()); // unnamed: counted only
    tokio::task::yield_now().await;
    let snapshot = handle.snapshot();
    let names: Vec<&str> = snapshot.work.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["export orders.csv", "request GET /slow"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    handle.stop();
    let run = tokio::spawn(lifecycle.run());
    // The guard is held past the deadline, then dropped once cancelled (handed back).
    handle.cancelled().await;
    drop(guard);
    let outcome = run.await.unwrap();
    assert_eq!(outcome.cancelled_work(), 3);
    let stuck: Vec<(&str, Duration)> = outcome
        .stuck_work()
        .iter()
        .map(|w| (w.name.as_str(), w.age))
        .collect();
    // Drain deadline: 10 s budget minus the 2 s reserve, 2 s after the work began.
    assert_eq!(
        stuck,
        [
            ("export orders.csv", Duration::from_secs(10)),
            ("request GET /slow", Duration::from_secs(10)),
        ]
    );
    assert!(
        outcome
            .stuck_work()
            .iter()
            .all(|w| w.phase == Phase::STARTUP)
    );
    assert!(
        recorder.before("stuck export orders.csv,request GET /slow", "cancelled 3"),
        "{:?}",
        recorder.trace()
    );
    assert_eq!(outcome.exit_code(), 2);
}

/// Dropping `run()`'s future stops its helper tasks: the watchdog no longer feeds systemd.
#[tokio::test(start_paused = true)]
async fn dropping_the_run_future_stops_the_watchdog() {
    let socket = NotifySocket::bind("drop-run");
    let lifecycle = testing::builder()
        .notify_socket(socket.path(), Some(Duration::from_millis(10)))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle.readiness().wait_for(|r| *r).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(socket.drain().iter().any(|m| m == "WATCHDOG=1"));
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    // A ping due at the same instant as the drop may already be out; none may follow.
    let _ = socket.drain();
    tokio::time::sleep(SECOND).await;
    let after: Vec<String> = socket
        .drain()
        .into_iter()
        .filter(|m| m == "WATCHDOG=1")
        .collect();
    assert!(
        after.is_empty(),
        "{} watchdog pings after the drop",
        after.len()
    );
}

/// Every hostile call from other threads before, during and after the run: nothing panics, the
/// run ends with the first reason, and calls after the end are harmless.
#[test]
fn calls_from_other_threads_before_during_and_after_the_run_are_harmless() {
    let runtime = two_workers();
    for _ in 0..20 {
        let lifecycle = testing::builder()
            .budget(Duration::from_secs(5))
            .on_startup("open", |_ctx| async { tokio::task::yield_now().await })
            .on_shutdown("announce", |_ctx| async {})
            .on_exit("close", |_ctx| async {})
            .build()
            .unwrap();
        let handle = lifecycle.handle();
        handle.restart(); // before run(): the first reason
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        match (t + i) % 5 {
                            0 => handle.stop(),
                            1 => handle.quiet(),
                            2 => handle.trigger(Signal::Ttin),
                            3 => {
                                let _ = handle.snapshot();
                            }
                            _ => {
                                let _ = handle.deadlines();
                            }
                        }
                    }
                })
            })
            .collect();
        let outcome = runtime.block_on(lifecycle.run());
        for thread in threads {
            thread.join().unwrap();
        }
        handle.stop();
        handle.trigger(Signal::Term);
        assert_eq!(outcome.reason(), Reason::Restart);
        assert_eq!(outcome.exit_code(), 4, "{outcome}");
        assert_eq!(outcome.hook("close").unwrap().result, HookResult::Ok);
    }
}

/// Found while hardening bug 4: a stop that arrives while quiet's stop_intake hooks still run
/// was never announced (no `STOPPING=1`, no `triggered` event): the runner only announced a stop
/// it had waited for.
#[tokio::test(start_paused = true)]
async fn a_stop_during_quiets_intake_hooks_is_announced_with_stopping() {
    let socket = NotifySocket::bind("quiet-hook");
    let recorder = Recorder::new();
    let entered = Arc::new(Notify::new());
    let lifecycle = testing::builder()
        .notify_socket(socket.path(), None)
        .observe(recorder.observer())
        .hook(HookSpec::new(Phase::STOP_INTAKE, "pause_consumer", {
            let entered = Arc::clone(&entered);
            move |_ctx| {
                let entered = Arc::clone(&entered);
                async move {
                    entered.notify_one();
                    tokio::time::sleep(SECOND).await;
                }
            }
        }))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle.readiness().wait_for(|r| *r).await.unwrap();
    handle.trigger(Signal::Tstp);
    entered.notified().await;
    handle.trigger(Signal::Term);
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0);
    assert!(
        recorder.before("quiet", "triggered stop"),
        "{:?}",
        recorder.trace()
    );
    let messages = socket.drain();
    assert_eq!(
        messages.iter().filter(|m| *m == "STOPPING=1").count(),
        1,
        "{messages:?}"
    );
}

/// A reload still open when a stop begins: systemd has heard `STOPPING=1`, so neither the
/// reload's `READY=1` nor a reload begun after the stop (`RELOADING=1`) follows it. Before,
/// dropping the `Reload` in an exit hook announced the stopping service ready again.
#[tokio::test(start_paused = true)]
async fn a_reload_ending_after_a_stop_began_does_not_announce_ready() {
    let socket = NotifySocket::bind("reload-stop");
    let lifecycle = testing::builder()
        .notify_socket(socket.path(), None)
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle.readiness().wait_for(|ready| *ready).await.unwrap();
    let reload = handle.reloading();
    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0, "{outcome}");
    // Read before the reload ends: the socket's queue is short (ten datagrams), and a full queue
    // would hold back the very message this test looks for.
    let mut messages = socket.drain();
    drop(reload);
    drop(handle.reloading());
    messages.extend(socket.drain());
    let stopping = position(&messages, "STOPPING=1").expect("STOPPING=1 sent");
    assert!(
        messages[..stopping]
            .iter()
            .any(|m| m.starts_with("RELOADING=1")),
        "{messages:?}"
    );
    assert!(
        messages[stopping..]
            .iter()
            .all(|m| m != "READY=1" && !m.starts_with("RELOADING=1")),
        "{messages:?}"
    );
}

/// `STOPPING=1` is followed by one `EXTEND_TIMEOUT_USEC`, then one a second while the stop
/// lasts: the keepalive no longer repeats the runner's first extension at once (every stop sent
/// it twice).
#[tokio::test(start_paused = true)]
async fn the_stop_timeout_is_extended_once_then_every_second() {
    let socket = NotifySocket::bind("extend-once");
    let lifecycle = testing::builder()
        .notify_socket(socket.path(), None)
        .budget(Duration::from_secs(10))
        .on_shutdown("two_and_a_half_seconds", |_ctx| async {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
        })
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle.readiness().wait_for(|ready| *ready).await.unwrap();
    let _ = socket.drain();
    handle.stop();
    assert_eq!(run.await.unwrap().exit_code(), 0);
    let messages = socket.drain();
    let extensions: Vec<&String> = messages
        .iter()
        .filter(|m| m.starts_with("EXTEND_TIMEOUT_USEC="))
        .collect();
    // At the trigger, then at 1 s and 2 s into the 2.5 s shutdown hook.
    assert_eq!(extensions.len(), 3, "{messages:?}");
    let stopping = position(&messages, "STOPPING=1").expect("STOPPING=1");
    assert!(
        messages[stopping + 1].starts_with("EXTEND_TIMEOUT_USEC="),
        "{messages:?}"
    );
}
