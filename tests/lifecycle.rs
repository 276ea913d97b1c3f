//! Paused-time integration tests: every rule of the phase graph, driven through the same code
//! path as real signals (`handle.trigger`), asserting the recorded order of phases and hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use lifecycle_hooks::testing::{self, Recorder};
use lifecycle_hooks::{
    Event, HookContext, HookResult, HookSpec, Phase, PhaseSpec, PhaseStatus, Reason, Signal,
};
use tokio::sync::{Barrier, Notify, oneshot};
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

/// A hook that notifies `entered` when it starts, then never finishes.
fn says_then_hangs(
    entered: &Arc<Notify>,
) -> impl Fn(HookContext) -> BoxFuture<'static, ()> + Send + Sync + 'static {
    let entered = entered.clone();
    move |_ctx| {
        let entered = entered.clone();
        Box::pin(async move {
            entered.notify_one();
            hang().await
        })
    }
}

/// A hook that never finishes.
async fn hang() {
    std::future::pending::<()>().await
}

#[tokio::test(start_paused = true)]
async fn phases_run_in_order_and_exit_waits_for_work() {
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .on_startup("open", |_ctx| async {})
        .on_stop_intake("close_listener", |_ctx| async {})
        .on_shutdown("announce", |_ctx| async {})
        .on_exit("close_producer", |_ctx| async {})
        .observe(recorder.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.spawn({
        let handle = handle.clone();
        let recorder = recorder.clone();
        async move {
            handle.draining().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Mark the end of the work in the same trace as the phases.
            recorder.mark("work done");
        }
    });
    testing::stop_when_ready(&handle);
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(outcome.reason(), Reason::Stop);
    assert!(!outcome.forced());
    assert_eq!(
        recorder.trace(),
        [
            "phase startup",
            "hook startup open ok",
            "phase running",
            "ready",
            "triggered stop",
            "phase stop_intake",
            "hook stop_intake close_listener ok",
            "phase drain",
            "phase shutdown",
            "hook shutdown announce ok",
            "phase wait",
            "mark work done",
            "phase exit",
            "hook exit close_producer ok",
            "finished stop 0",
        ]
    );
    assert!(
        outcome
            .phases()
            .iter()
            .all(|p| p.status == PhaseStatus::Completed)
    );
}

#[tokio::test(start_paused = true)]
async fn exit_starts_the_instant_the_last_work_ends() {
    let (tx, rx) = oneshot::channel::<Instant>();
    let tx = Arc::new(parking_lot::Mutex::new(Some(tx)));
    let lifecycle = testing::builder()
        .on_exit("first", move |_ctx| {
            let tx = tx.clone();
            async move {
                let _ = tx.lock().take().unwrap().send(Instant::now());
            }
        })
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let ended = Arc::new(parking_lot::Mutex::new(None));
    for i in 1..=3u64 {
        let ended = ended.clone();
        handle.spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * i)).await;
            *ended.lock() = Some(Instant::now());
        });
    }
    handle.stop();
    let outcome = lifecycle.run().await;
    let exit_began = rx.await.unwrap();
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(Some(exit_began), *ended.lock());
}

#[tokio::test(start_paused = true)]
async fn startup_in_registration_order_teardown_in_reverse_dependencies_first() {
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .on_startup("a", |_ctx| async {})
        .on_startup("b", |_ctx| async {})
        .hook(HookSpec::new(Phase::STARTUP, "c", |_ctx| async {}).before("a"))
        .on_exit("x", |_ctx| async {})
        .on_exit("y", |_ctx| async {})
        .on_exit("z", |_ctx| async {})
        .hook(HookSpec::new(Phase::EXIT, "flush", |_ctx| async {}).before("x"))
        .observe(recorder.observer())
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let _ = lifecycle.run().await;
    let hooks: Vec<String> = recorder
        .trace()
        .into_iter()
        .filter(|l| l.starts_with("hook"))
        .collect();
    assert_eq!(
        hooks,
        [
            // c must precede a; b is free and was registered before c.
            "hook startup b ok",
            "hook startup c ok",
            "hook startup a ok",
            "hook exit flush ok",
            "hook exit z ok",
            "hook exit y ok",
            "hook exit x ok",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_hooks_run_while_work_is_in_flight() {
    let lifecycle = testing::builder()
        .on_shutdown("check", |_ctx| async {})
        .on_exit("check", |_ctx| async {})
        .build();
    // Same name in two phases is a duplicate: the builder says so (nothing runs).
    let err = lifecycle.unwrap_err().to_string();
    assert!(err.contains("hook `check` is registered twice"), "{err}");

    let lifecycle = testing::builder()
        .on_shutdown("during", |ctx| async move {
            if ctx.handle().in_flight() != 1 {
                return Err("work should still be running");
            }
            Ok(())
        })
        .on_exit("after", |ctx| async move {
            if ctx.handle().in_flight() != 0 {
                return Err("work should have ended");
            }
            Ok(())
        })
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.spawn(tokio::time::sleep(SECOND));
    handle.stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.hook("during").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.hook("after").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.exit_code(), 0);
}

#[tokio::test(start_paused = true)]
async fn quiet_stops_intake_keeps_running_then_stop_continues() {
    let recorder = Recorder::new();
    let intake_hooks = Arc::new(AtomicUsize::new(0));
    let counter = intake_hooks.clone();
    let lifecycle = testing::builder()
        .on_stop_intake("stop_fetching", move |_ctx| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .observe(recorder.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let mut phases = handle.watch_phase();
    let run = tokio::spawn(lifecycle.run());
    handle.trigger(Signal::Tstp);
    phases.wait_for(|p| *p == Phase::STOP_INTAKE).await.unwrap();
    handle.intake_stopped().await;
    assert!(!handle.is_ready());
    // Still running: a minute later nothing more has happened.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!run.is_finished());
    assert_eq!(handle.phase(), Phase::STOP_INTAKE);
    assert_eq!(handle.reason(), None);
    handle.trigger(Signal::Term);
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(intake_hooks.load(Ordering::SeqCst), 1, "no hook runs twice");
    assert!(recorder.before("quiet", "phase stop_intake"));
    assert!(recorder.before("hook stop_intake stop_fetching ok", "triggered stop"));
    assert!(recorder.before("triggered stop", "phase drain"));
}

#[tokio::test(start_paused = true)]
async fn second_signal_abandons_the_hanging_hook_and_runs_exit_hooks() {
    let recorder = Recorder::new();
    let entered = Arc::new(Notify::new());
    let signal = entered.clone();
    let lifecycle = testing::builder()
        .on_shutdown("hangs", says_then_hangs(&signal))
        .on_exit("close", |_ctx| async {})
        .observe(recorder.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.spawn(hang());
    let run = tokio::spawn(lifecycle.run());
    handle.trigger(Signal::Term);
    entered.notified().await;
    handle.trigger(Signal::Term);
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 2);
    assert!(outcome.forced() && outcome.escalated());
    assert_eq!(outcome.hook("hangs").unwrap().result, HookResult::Abandoned);
    assert_eq!(outcome.hook("close").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.cancelled_work(), 1);
    assert_eq!(
        outcome.phase(&Phase::WAIT).unwrap().status,
        PhaseStatus::Skipped
    );
    assert!(recorder.before("escalated SIGTERM", "hook shutdown hangs abandoned"));
    assert!(recorder.before("cancelled 1", "hook exit close ok"));
}

#[tokio::test(start_paused = true)]
async fn third_signal_ends_the_run_at_once_with_128_plus_signo() {
    let entered = Arc::new(Notify::new());
    let signal = entered.clone();
    // Exit hooks run in reverse registration order: `hangs` first, then `never`.
    let lifecycle = testing::builder()
        .on_exit("never", |_ctx| async {})
        .on_exit("hangs", says_then_hangs(&signal))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle.trigger(Signal::Int);
    entered.notified().await;
    handle.trigger(Signal::Int);
    handle.trigger(Signal::Term);
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 128 + 15);
    assert_eq!(outcome.immediate(), Some(Signal::Term));
    assert_eq!(outcome.hook("never").unwrap().result, HookResult::Skipped);
    assert_eq!(
        outcome.phase(&Phase::EXIT).unwrap().status,
        PhaseStatus::Interrupted
    );
}

#[tokio::test(start_paused = true)]
async fn work_past_the_deadline_is_cancelled_and_exit_hooks_keep_their_reserve() {
    let recorder = Recorder::new();
    let exit_time_left = Arc::new(parking_lot::Mutex::new(None));
    let seen = exit_time_left.clone();
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(10))
        .exit_reserve(Duration::from_secs(2))
        .cancel_grace(Duration::from_millis(500))
        .on_exit("close", move |ctx| {
            let seen = seen.clone();
            async move {
                *seen.lock() = ctx.time_left();
            }
        })
        .observe(recorder.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let cancelled = Arc::new(AtomicUsize::new(0));
    let mut joins = Vec::new();
    for _ in 0..3 {
        joins.push(handle.spawn(hang()));
    }
    // A cooperative item: it sees the cancellation and hands its work back.
    let cooperative = cancelled.clone();
    let guard_handle = handle.clone();
    tokio::spawn(async move {
        let _guard = guard_handle.work_guard();
        guard_handle.cancelled().await;
        cooperative.fetch_add(1, Ordering::SeqCst);
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    handle.stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 2);
    assert!(outcome.forced() && !outcome.escalated());
    assert_eq!(outcome.cancelled_work(), 4);
    assert_eq!(outcome.outlived_grace(), 0);
    assert_eq!(cancelled.load(Ordering::SeqCst), 1);
    for join in joins {
        assert_eq!(join.await.unwrap(), None, "cancelled tasks yield None");
    }
    // Cancelled at trigger + 10 s - 2 s; exit hooks had what was left of the budget.
    assert_eq!(*exit_time_left.lock(), Some(Duration::from_secs(2)));
    assert_eq!(start.elapsed(), Duration::from_secs(8));
    assert!(recorder.before("cancelled 4", "phase exit"));
}

#[tokio::test(start_paused = true)]
async fn a_hook_past_its_timeout_is_abandoned_and_the_graph_goes_on() {
    let lifecycle = testing::builder()
        .hook(HookSpec::new(Phase::SHUTDOWN, "slow", |_ctx| hang()).timeout(SECOND))
        .on_shutdown("next", |_ctx| async {})
        .on_exit("close", |_ctx| async {})
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let start = Instant::now();
    let outcome = lifecycle.run().await;
    let slow = outcome.hook("slow").unwrap();
    assert_eq!(slow.result, HookResult::TimedOut);
    assert_eq!(slow.elapsed, SECOND);
    assert_eq!(start.elapsed(), SECOND);
    assert_eq!(outcome.hook("next").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.hook("close").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.exit_code(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_hook_past_the_drain_deadline_times_out_and_exit_still_runs() {
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(5))
        .exit_reserve(SECOND)
        .on_shutdown("later", |_ctx| async {})
        .on_shutdown("slow", |_ctx| hang())
        .on_exit("close", |_ctx| async {})
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;
    // Teardown order is reverse registration: slow runs first, and `later` never gets to run.
    assert_eq!(outcome.hook("slow").unwrap().result, HookResult::TimedOut);
    assert_eq!(
        outcome.hook("slow").unwrap().elapsed,
        Duration::from_secs(4)
    );
    assert_eq!(outcome.hook("later").unwrap().result, HookResult::Skipped);
    assert_eq!(outcome.hook("close").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.exit_code(), 1);
}

#[tokio::test(start_paused = true)]
async fn panics_and_errors_are_caught_reported_and_exit_hooks_run() {
    let lifecycle = testing::builder()
        .on_shutdown("panics", |_ctx| async {
            if true {
                panic!("boom")
            }
        })
        .on_shutdown("errs", |_ctx| async {
            Err(std::io::Error::other("disk full"))
        })
        .on_exit("close", |_ctx| async {})
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;
    assert_eq!(
        outcome.hook("panics").unwrap().result,
        HookResult::Panicked("boom".into())
    );
    assert_eq!(
        outcome.hook("errs").unwrap().result,
        HookResult::Error("disk full".into())
    );
    assert_eq!(outcome.hook("close").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.exit_code(), 1);
    assert_eq!(outcome.reason(), Reason::Stop);
    assert_eq!(outcome.failures().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn failed_startup_tears_down_only_what_started() {
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .on_startup("db", |_ctx| async {})
        .on_startup("cache", |_ctx| async { Err::<(), _>("connection refused") })
        .on_startup("http", |_ctx| async {})
        .hook(HookSpec::new(Phase::EXIT, "close_db", |_ctx| async {}).teardown_of("db"))
        .hook(HookSpec::new(Phase::EXIT, "close_http", |_ctx| async {}).teardown_of("http"))
        .on_exit("flush_logs", |_ctx| async {})
        .on_shutdown("announce", |_ctx| async {})
        .observe(recorder.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.spawn(hang());
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.reason(), Reason::Failure);
    assert_eq!(outcome.exit_code(), 1);
    let result = |name: &str| outcome.hook(name).unwrap().result.clone();
    assert_eq!(result("db"), HookResult::Ok);
    assert_eq!(
        result("cache"),
        HookResult::Error("connection refused".into())
    );
    assert_eq!(result("http"), HookResult::Skipped);
    assert_eq!(result("close_db"), HookResult::Ok);
    assert_eq!(result("close_http"), HookResult::Skipped);
    assert_eq!(result("flush_logs"), HookResult::Ok);
    assert_eq!(result("announce"), HookResult::Skipped);
    assert!(!recorder.trace().contains(&"ready".to_string()));
    for phase in [
        Phase::RUNNING,
        Phase::STOP_INTAKE,
        Phase::DRAIN,
        Phase::SHUTDOWN,
        Phase::WAIT,
    ] {
        assert_eq!(outcome.phase(&phase).unwrap().status, PhaseStatus::Skipped);
    }
    assert_eq!(
        outcome.cancelled_work(),
        1,
        "work started during startup is cancelled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_is_never_downgraded_by_a_later_stop() {
    let entered = Arc::new(Notify::new());
    let signal = entered.clone();
    let lifecycle = testing::builder()
        .on_shutdown("slow", move |_ctx| {
            let signal = signal.clone();
            async move {
                signal.notify_one();
                tokio::time::sleep(SECOND).await;
            }
        })
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle.trigger(Signal::Usr2);
    entered.notified().await;
    handle.trigger(Signal::Term);
    handle.stop();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.reason(), Reason::Restart);
    assert_eq!(outcome.exit_code(), 4);
    assert!(!outcome.forced());
}

#[tokio::test(start_paused = true)]
async fn restart_then_two_stops_is_forced_but_still_a_restart() {
    let entered = Arc::new(Notify::new());
    let signal = entered.clone();
    let lifecycle = testing::builder()
        .on_shutdown("hangs", says_then_hangs(&signal))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle.trigger(Signal::Usr2);
    entered.notified().await;
    handle.trigger(Signal::Term);
    handle.trigger(Signal::Term);
    let outcome = run.await.unwrap();
    assert_eq!(outcome.reason(), Reason::Restart);
    assert_eq!(outcome.exit_code(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_critical_task_stops_with_reason_failure() {
    let lifecycle = testing::builder().build().unwrap();
    let handle = lifecycle.handle();
    handle.spawn_critical("consumer", async {
        tokio::time::sleep(SECOND).await;
        Err::<(), _>(std::io::Error::other("broker gone"))
    });
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.reason(), Reason::Failure);
    assert_eq!(outcome.exit_code(), 1);
    assert_eq!(
        outcome.failures(),
        ["critical task `consumer` failed: broker gone"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_critical_task_stops_with_reason_failure() {
    let lifecycle = testing::builder().build().unwrap();
    let handle = lifecycle.handle();
    handle.spawn_critical("poller", async {
        if true {
            panic!("bad state")
        }
    });
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.reason(), Reason::Failure);
    assert_eq!(
        outcome.failures(),
        ["critical task `poller` failed: bad state"]
    );
}

#[tokio::test(start_paused = true)]
async fn stop_from_many_tasks_at_once_is_one_clean_stop() {
    let lifecycle = testing::builder().build().unwrap();
    let handle = lifecycle.handle();
    let barrier = Arc::new(Barrier::new(100));
    for _ in 0..100 {
        let handle = handle.clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            handle.stop();
        });
    }
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0);
    assert!(!outcome.escalated());
}

#[tokio::test(start_paused = true)]
async fn a_signal_during_startup_stops_right_after_it_without_becoming_ready() {
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .on_startup("slow", |ctx| async move {
            ctx.handle().trigger(Signal::Term);
            tokio::time::sleep(SECOND).await;
        })
        .on_exit("close", |_ctx| async {})
        .observe(recorder.observer())
        .build()
        .unwrap();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(outcome.hook("slow").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.hook("close").unwrap().result, HookResult::Ok);
    assert!(!recorder.trace().contains(&"ready".to_string()));
    assert_eq!(
        outcome.phase(&Phase::RUNNING).unwrap().status,
        PhaseStatus::Skipped
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_lifecycle_cancels_its_work() {
    let lifecycle = testing::builder().build().unwrap();
    let handle = lifecycle.handle();
    let join = handle.spawn(hang());
    drop(lifecycle);
    assert_eq!(join.await.unwrap(), None);
    assert!(handle.intake_stopped().is_reached() && handle.cancelled().is_reached());
    // Work spawned after the cancellation is cancelled at once, not left hanging.
    assert_eq!(handle.spawn(hang()).await.unwrap(), None);
    // Work that is ready wins the race: it was polled first.
    assert_eq!(handle.spawn(async { 7 }).await.unwrap(), Some(7));
}

#[tokio::test(start_paused = true)]
async fn a_custom_phase_runs_where_its_edges_put_it() {
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .phase(
            PhaseSpec::new("flush_metrics")
                .after(Phase::WAIT)
                .before(Phase::EXIT),
        )
        .phase(
            PhaseSpec::new("deregister")
                .before(Phase::STOP_INTAKE)
                .after(Phase::RUNNING),
        )
        .on_phase("flush_metrics", "push", |_ctx| async {})
        .on_phase("deregister", "consul", |_ctx| async {})
        .observe(recorder.observer())
        .build()
        .unwrap();
    testing::stop_when_ready(&lifecycle.handle());
    let outcome = lifecycle.run().await;
    let phases: Vec<String> = recorder
        .trace()
        .into_iter()
        .filter(|l| l.starts_with("phase"))
        .collect();
    assert_eq!(
        phases,
        [
            "phase startup",
            "phase running",
            "phase deregister",
            "phase stop_intake",
            "phase drain",
            "phase shutdown",
            "phase wait",
            "phase flush_metrics",
            "phase exit",
        ]
    );
    assert!(recorder.before("hook flush_metrics push ok", "phase exit"));
    assert_eq!(outcome.hooks().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn escalation_still_runs_custom_exit_side_phases() {
    let lifecycle = testing::builder()
        .phase(
            PhaseSpec::new("flush_metrics")
                .after(Phase::WAIT)
                .before(Phase::EXIT),
        )
        .on_phase("flush_metrics", "push", |_ctx| async {})
        .on_shutdown("hangs", |ctx| async move {
            ctx.handle().trigger(Signal::Term);
            hang().await
        })
        .build()
        .unwrap();
    lifecycle.handle().trigger(Signal::Term);
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.hook("push").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.exit_code(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrency_within_a_level_is_opt_in() {
    // Two hooks that only finish together: they pass only if they run concurrently.
    let build = |concurrent: bool| {
        let barrier = Arc::new(Barrier::new(2));
        let mut builder = testing::builder();
        for name in ["left", "right"] {
            let barrier = barrier.clone();
            builder = builder.hook(
                HookSpec::new(Phase::EXIT, name, move |_ctx| {
                    let barrier = barrier.clone();
                    async move {
                        barrier.wait().await;
                    }
                })
                .timeout(SECOND),
            );
        }
        if concurrent {
            builder = builder.concurrent(Phase::EXIT);
        }
        builder.build().unwrap()
    };
    let sequential = build(false);
    sequential.handle().stop();
    let outcome = sequential.run().await;
    assert_eq!(outcome.hook("right").unwrap().result, HookResult::TimedOut);

    let concurrent = build(true);
    concurrent.handle().stop();
    let outcome = concurrent.run().await;
    assert_eq!(outcome.hook("left").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.hook("right").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.exit_code(), 0);
}

#[tokio::test(start_paused = true)]
async fn propagation_delay_turns_readiness_false_before_intake_stops() {
    let lifecycle = testing::builder()
        .propagation_delay(Duration::from_secs(3))
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let mut readiness = handle.readiness();
    let run = tokio::spawn(lifecycle.run());
    readiness.wait_for(|ready| *ready).await.unwrap();
    handle.stop();
    readiness.wait_for(|ready| !*ready).await.unwrap();
    let not_ready_at = Instant::now();
    assert!(!handle.intake_stopped().is_reached());
    handle.intake_stopped().await;
    assert_eq!(not_ready_at.elapsed(), Duration::from_secs(3));
    assert_eq!(run.await.unwrap().exit_code(), 0);
}

#[tokio::test(start_paused = true)]
async fn state_dump_lists_phase_work_and_pending_hooks() {
    let lifecycle = testing::builder()
        .on_shutdown("announce", |_ctx| async {})
        .on_exit("close", |_ctx| async {})
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    let mut events = handle.subscribe();
    handle.spawn(hang());
    let run = tokio::spawn(lifecycle.run());
    let mut phases = handle.watch_phase();
    phases.wait_for(|p| *p == Phase::RUNNING).await.unwrap();
    handle.trigger(Signal::Ttin);
    let snapshot = loop {
        if let Some(Event::StateDump(snapshot)) = events.recv().await {
            break snapshot;
        }
    };
    assert_eq!(snapshot.phase, Phase::RUNNING);
    assert_eq!(snapshot.in_flight, 1);
    assert_eq!(snapshot.pending_hooks, ["shutdown/announce", "exit/close"]);
    assert_eq!(snapshot.budget_left, None);
    handle.stop();
    handle.trigger(Signal::Term);
    let outcome = run.await.unwrap();
    assert_eq!(outcome.exit_code(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_hook_is_reported_once_even_when_skipped() {
    let lifecycle = testing::builder()
        .on_startup("a", |_ctx| async {})
        .on_stop_intake("b", |_ctx| async {})
        .on_shutdown("c", |_ctx| async {})
        .on_exit("d", |_ctx| async {})
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.trigger(Signal::Term);
    handle.trigger(Signal::Term);
    let outcome = lifecycle.run().await;
    let mut names: Vec<&str> = outcome.hooks().iter().map(|h| h.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(outcome.hook("d").unwrap().result, HookResult::Ok);
    assert_eq!(outcome.hook("b").unwrap().result, HookResult::Skipped);
}
