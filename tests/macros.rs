//! The hook attributes in real runs, under paused time: macro hooks and closure hooks ordered
//! together in every phase, every signature, results, timeouts, context, teardown pairing, and
//! the build errors that name a missing phase or hook. Hooks are added explicitly with
//! `hooks![..]`; `tests/macros_registry.rs` covers `Builder::registered_hooks`.

use std::time::Duration;

use lifecycle_hooks::errors::BuildError;
use lifecycle_hooks::testing::{self, Recorder};
use lifecycle_hooks::{HookResult, HookSpec, Phase, PhaseSpec, Reason, hooks};
use tokio::time::Instant;

/// The trace without the lines that do not concern hooks and phases.
fn phases_and_hooks(recorder: &Recorder) -> Vec<String> {
    recorder
        .trace()
        .into_iter()
        .filter(|line| line.starts_with("phase ") || line.starts_with("hook "))
        .collect()
}

/// One macro hook per phase or more, each ordered against closure hooks of the same phase.
mod every_phase {
    use lifecycle_hooks::{
        BoxError, HookContext, hook, on_exit, on_shutdown, on_startup, on_stop_intake,
    };

    #[on_startup(after = load_config)]
    pub(crate) async fn open_db() -> Result<(), BoxError> {
        Ok(())
    }

    #[on_startup]
    pub(crate) fn start_listener() {}

    #[hook(phase = "running")]
    pub(crate) fn announce_ready(ctx: HookContext) {
        assert!(ctx.handle().is_ready());
    }

    #[on_stop_intake(before = pause_consumers)]
    pub(crate) async fn stop_listener(_ctx: HookContext) {}

    #[on_stop_intake(after = pause_consumers)]
    pub(crate) fn drop_backlog() {}

    #[hook(phase = "drain")]
    pub(crate) async fn tell_jobs_to_wrap_up() {}

    #[on_shutdown(after = deregister)]
    pub(crate) async fn announce() -> std::io::Result<()> {
        Ok(())
    }

    #[on_shutdown(before = deregister)]
    pub(crate) fn persist_cursor() {}

    #[hook(phase = "wait", after = log_waiting)]
    pub(crate) fn report_waited() {}

    #[hook(phase = "flush_metrics")]
    pub(crate) async fn push_gauges() {}

    #[on_exit(after = flush_metrics, timeout = "5s")]
    pub(crate) async fn close_producer() -> Result<(), BoxError> {
        Ok(())
    }

    #[on_exit(before = flush_metrics)]
    pub(crate) fn stop_tracing() {}
}

#[tokio::test(start_paused = true)]
async fn macro_and_closure_hooks_are_ordered_together_in_every_phase() {
    use every_phase::*;

    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .phase(
            PhaseSpec::new("flush_metrics")
                .after(Phase::WAIT)
                .before(Phase::EXIT),
        )
        .hooks(hooks![start_listener, open_db])
        .on_startup("load_config", |_ctx| async {})
        .hook(
            HookSpec::new(Phase::STARTUP, "warm_cache", |_ctx| async {})
                .after("open_db")
                .before("start_listener"),
        )
        .hooks(hooks![announce_ready])
        .on_phase(Phase::RUNNING, "report_ready", |_ctx| async {})
        .hooks(hooks![drop_backlog, stop_listener])
        .on_stop_intake("pause_consumers", |_ctx| async {})
        .hooks(hooks![tell_jobs_to_wrap_up])
        .hook(
            HookSpec::new(Phase::DRAIN, "cancel_timers", |_ctx| async {})
                .after("tell_jobs_to_wrap_up"),
        )
        .hooks(hooks![announce, persist_cursor])
        .on_shutdown("deregister", |_ctx| async {})
        .hooks(hooks![report_waited])
        .on_phase(Phase::WAIT, "log_waiting", |_ctx| async {})
        .hook(
            HookSpec::new("flush_metrics", "push_histograms", |_ctx| async {})
                .before("push_gauges"),
        )
        .hooks(hooks![push_gauges])
        .hooks(hooks![close_producer, stop_tracing])
        .on_exit("flush_metrics", |_ctx| async {})
        .observe(recorder.observer())
        .build()
        .unwrap();
    testing::stop_when_ready(&lifecycle.handle());
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    assert_eq!(
        phases_and_hooks(&recorder),
        [
            "phase startup",
            "hook startup load_config ok",
            "hook startup open_db ok",
            "hook startup warm_cache ok",
            "hook startup start_listener ok",
            "phase running",
            "hook running announce_ready ok",
            "hook running report_ready ok",
            "phase stop_intake",
            "hook stop_intake stop_listener ok",
            "hook stop_intake pause_consumers ok",
            "hook stop_intake drop_backlog ok",
            "phase drain",
            "hook drain tell_jobs_to_wrap_up ok",
            "hook drain cancel_timers ok",
            "phase shutdown",
            "hook shutdown persist_cursor ok",
            "hook shutdown deregister ok",
            "hook shutdown announce ok",
            "phase wait",
            "hook wait log_waiting ok",
            "hook wait report_waited ok",
            "phase flush_metrics",
            "hook flush_metrics push_histograms ok",
            "hook flush_metrics push_gauges ok",
            "phase exit",
            "hook exit stop_tracing ok",
            "hook exit flush_metrics ok",
            "hook exit close_producer ok",
        ]
    );
}

mod default_order {
    use lifecycle_hooks::{on_exit, on_startup};

    #[on_startup]
    pub(crate) fn open_first() {}

    #[on_startup]
    pub(crate) async fn open_third() {}

    #[on_exit]
    pub(crate) async fn close_first() {}

    #[on_exit]
    pub(crate) fn close_third() {}
}

#[tokio::test(start_paused = true)]
async fn without_edges_startup_runs_in_registration_order_and_exit_in_reverse() {
    use default_order::*;

    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .hooks(hooks![open_first])
        .on_startup("open_second", |_ctx| async {})
        .hooks(hooks![open_third, close_first])
        .on_exit("close_second", |_ctx| async {})
        .hooks(hooks![close_third])
        .observe(recorder.observer())
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 0);
    let hooks: Vec<_> = outcome.hooks().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        hooks,
        [
            "open_first",
            "open_second",
            "open_third",
            "close_third",
            "close_second",
            "close_first"
        ]
    );
}

mod results {
    use lifecycle_hooks::{BoxError, on_exit, on_shutdown};

    #[on_shutdown]
    pub(crate) async fn fails_async() -> Result<(), BoxError> {
        Err("disk full".into())
    }

    #[on_shutdown]
    pub(crate) fn fails_sync() -> std::io::Result<()> {
        Err(std::io::Error::other("socket closed"))
    }

    #[on_exit]
    pub(crate) fn panics() {
        panic!("boom")
    }

    #[on_exit]
    pub(crate) async fn panics_async() -> Result<(), String> {
        panic!("async boom")
    }

    #[on_exit]
    pub(crate) async fn still_runs() -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn errors_and_panics_of_macro_hooks_are_reported_and_the_run_goes_on() {
    use results::*;

    let lifecycle = testing::builder()
        .hooks(hooks![
            fails_async,
            fails_sync,
            still_runs,
            panics,
            panics_async
        ])
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 1);
    let result = |name: &str| outcome.hook(name).unwrap().result.clone();
    assert_eq!(result("fails_async"), HookResult::Error("disk full".into()));
    assert_eq!(
        result("fails_sync"),
        HookResult::Error("socket closed".into())
    );
    assert_eq!(result("panics"), HookResult::Panicked("boom".into()));
    assert_eq!(
        result("panics_async"),
        HookResult::Panicked("async boom".into())
    );
    assert_eq!(result("still_runs"), HookResult::Ok);
}

#[tokio::test(start_paused = true)]
async fn the_functions_stay_callable_as_written() {
    assert_eq!(
        results::fails_async().await.unwrap_err().to_string(),
        "disk full"
    );
    assert_eq!(
        results::fails_sync().unwrap_err().to_string(),
        "socket closed"
    );
    assert_eq!(results::still_runs().await, Ok(()));
    every_phase::start_listener();
}

mod timeouts {
    use lifecycle_hooks::on_exit;

    #[on_exit(timeout = "2s")]
    pub(crate) async fn hangs() {
        std::future::pending::<()>().await
    }

    #[on_exit(timeout = "1.5s", before = hangs)]
    pub(crate) async fn hangs_shorter() -> Result<(), std::io::Error> {
        std::future::pending().await
    }

    #[on_exit(timeout = "1m", after = hangs)]
    pub(crate) async fn quick() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_timeout_abandons_the_hook_at_exactly_its_duration_and_the_next_one_runs() {
    use timeouts::*;

    let lifecycle = testing::builder()
        .hooks(hooks![hangs, hangs_shorter, quick])
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let started = Instant::now();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 1, "a timed-out hook is a failure");
    let hook = |name: &str| outcome.hook(name).unwrap().clone();
    assert_eq!(hook("hangs_shorter").result, HookResult::TimedOut);
    assert_eq!(hook("hangs_shorter").elapsed, Duration::from_millis(1500));
    assert_eq!(hook("hangs").result, HookResult::TimedOut);
    assert_eq!(hook("hangs").elapsed, Duration::from_secs(2));
    assert_eq!(hook("quick").result, HookResult::Ok);
    assert_eq!(hook("quick").elapsed, Duration::from_millis(10));
    assert_eq!(started.elapsed(), Duration::from_millis(3510));
}

mod context {
    use lifecycle_hooks::{HookContext, Phase, Reason, on_shutdown};

    #[on_shutdown(name = "checks_context", timeout = "3s")]
    pub(crate) fn check(ctx: HookContext) -> Result<(), String> {
        if ctx.name() != "checks_context" {
            return Err(format!("name {}", ctx.name()));
        }
        if ctx.phase() != &Phase::SHUTDOWN {
            return Err(format!("phase {}", ctx.phase()));
        }
        if ctx.reason() != Some(Reason::Restart) {
            return Err(format!("reason {:?}", ctx.reason()));
        }
        match ctx.time_left() {
            Some(left) if left <= std::time::Duration::from_secs(3) => Ok(()),
            other => Err(format!("time left {other:?}")),
        }
    }

    #[on_shutdown(after = checks_context)]
    pub(crate) async fn check_async(ctx: HookContext) -> Result<(), String> {
        tokio::task::yield_now().await;
        match (ctx.name(), ctx.phase()) {
            ("check_async", phase) if *phase == Phase::SHUTDOWN => Ok(()),
            other => Err(format!("{other:?}")),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_hook_taking_the_context_gets_its_name_phase_reason_and_deadline() {
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .hooks(hooks![context::check_async, context::check])
        .observe(recorder.observer())
        .build()
        .unwrap();
    lifecycle.handle().restart();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 4, "{outcome:?}");
    assert_eq!(outcome.reason(), Reason::Restart);
    assert!(recorder.before(
        "hook shutdown checks_context ok",
        "hook shutdown check_async ok"
    ));
}

mod teardown {
    use lifecycle_hooks::{on_exit, on_startup};

    #[on_startup]
    pub(crate) async fn open_pool() {}

    #[on_startup(after = open_pool)]
    pub(crate) async fn open_producer() -> std::io::Result<()> {
        Err(std::io::Error::other("broker unreachable"))
    }

    #[on_exit(teardown_of = open_pool)]
    pub(crate) fn close_pool() {}

    #[on_exit(teardown_of = open_producer)]
    pub(crate) fn close_producer() {}
}

#[tokio::test(start_paused = true)]
async fn teardown_of_pairs_a_macro_exit_hook_with_its_startup_hook() {
    use teardown::*;

    let lifecycle = testing::builder()
        .hooks(hooks![open_pool, open_producer, close_pool, close_producer])
        .build()
        .unwrap();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.reason(), Reason::Failure);
    assert_eq!(outcome.exit_code(), 1);
    let result = |name: &str| outcome.hook(name).unwrap().result.clone();
    assert_eq!(
        result("open_producer"),
        HookResult::Error("broker unreachable".into())
    );
    assert_eq!(result("close_pool"), HookResult::Ok);
    assert_eq!(result("close_producer"), HookResult::Skipped);
}

mod after_work {
    use lifecycle_hooks::{on_exit, on_shutdown};

    #[on_shutdown]
    pub(crate) async fn announce() {}

    #[on_exit]
    pub(crate) async fn close_producer() {}
}

#[tokio::test(start_paused = true)]
async fn a_macro_exit_hook_starts_after_tracked_work_and_a_shutdown_hook_while_it_runs() {
    let recorder = Recorder::new();
    let lifecycle = testing::builder()
        .hooks(hooks![after_work::close_producer, after_work::announce])
        .observe(recorder.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    handle.spawn({
        let handle = handle.clone();
        let recorder = recorder.clone();
        async move {
            handle.draining().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            // Marks the end of the work in the same trace as the hooks.
            recorder.mark("work done");
        }
    });
    testing::stop_when_ready(&handle);
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 0);
    assert!(recorder.before("hook shutdown announce ok", "mark work done"));
    assert!(recorder.before("mark work done", "hook exit close_producer ok"));
}

#[tokio::test(start_paused = true)]
async fn a_hook_declared_in_a_block_is_named_by_its_name_key() {
    #[lifecycle_hooks::on_exit(name = "close")]
    fn close_in_block() {}

    let lifecycle = testing::builder()
        .hooks(hooks![close_in_block])
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.hook("close").unwrap().result, HookResult::Ok);
    assert!(outcome.hook("close_in_block").is_none());
}

mod missing {
    use lifecycle_hooks::{hook, on_exit};

    #[hook(phase = "flush_metrics")]
    pub(crate) async fn push_gauges() {}

    #[on_exit(after = flush_traces)]
    pub(crate) async fn close_producer() {}
}

#[test]
fn an_undeclared_custom_phase_is_a_build_error_naming_it() {
    let err = testing::builder()
        .hooks(hooks![missing::push_gauges])
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::UnknownPhase {
            user: "hook `push_gauges`".into(),
            phase: "flush_metrics".into(),
        }
    );
    assert!(
        err.to_string()
            .starts_with("hook `push_gauges` names phase `flush_metrics`")
    );
}

#[test]
fn an_unknown_after_name_is_a_build_error_naming_it() {
    let err = testing::builder()
        .hooks(hooks![missing::close_producer])
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "hook `close_producer` is ordered after `flush_traces`, but no hook named `flush_traces` \
         is registered"
    );
}

#[test]
fn a_closure_hook_with_a_macro_hooks_name_is_a_duplicate() {
    let err = testing::builder()
        .hooks(hooks![after_work::close_producer])
        .on_exit("close_producer", |_ctx| async {})
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::DuplicateHook { name, .. } if name == "close_producer"),
        "{err}"
    );
}

#[test]
fn hooks_macro_builds_specs_with_the_declared_phase_and_name() {
    let specs = hooks![
        every_phase::push_gauges,
        every_phase::close_producer,
        context::check,
    ];
    let summary: Vec<_> = specs.iter().map(|s| (s.phase().name(), s.name())).collect();
    assert_eq!(
        summary,
        [
            ("flush_metrics", "push_gauges"),
            ("exit", "close_producer"),
            ("shutdown", "checks_context"),
        ]
    );
    assert!(hooks![].is_empty());
}
