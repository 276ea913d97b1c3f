//! `Builder::registered_hooks`: every hook declared with an attribute in this test binary (and
//! not `global = false`), in source order; a hook added both ways runs once. This binary
//! declares only the hooks below, so the global list is known exactly.

use lifecycle_hooks::errors::BuildError;
use lifecycle_hooks::testing::{self, Recorder};
use lifecycle_hooks::{
    Builder, HookResult, Phase, PhaseSpec, hook, hooks, on_exit, on_shutdown, on_startup,
};

#[on_startup]
fn open_first() {}

#[on_startup]
async fn open_second() {}

#[on_shutdown]
async fn announce() {}

#[on_exit(after = flush)]
async fn close_producer() -> Result<(), std::io::Error> {
    Ok(())
}

#[on_exit]
fn flush() {}

#[on_exit(global = false)]
fn scoped_only() {}

mod telemetry {
    use lifecycle_hooks::{hook, on_exit};

    #[hook(phase = "flush_metrics")]
    pub(crate) fn push_gauges() {}

    #[on_exit]
    pub(crate) async fn close_exporter() {}
}

#[hook(phase = "flush_metrics", before = push_gauges)]
async fn push_histograms() {}

/// A test builder with the custom phase the registered hooks use.
fn builder() -> Builder {
    testing::builder().phase(
        PhaseSpec::new("flush_metrics")
            .after(Phase::WAIT)
            .before(Phase::EXIT),
    )
}

fn names(outcome: &lifecycle_hooks::Outcome) -> Vec<String> {
    outcome.hooks().iter().map(|h| h.name.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn registered_hooks_adds_every_global_hook_in_a_fixed_order() {
    let recorder = Recorder::new();
    let lifecycle = builder()
        .registered_hooks()
        .observe(recorder.observer())
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    // Registration order: this module in source order, then `telemetry`. Startup runs in that
    // order, exit in reverse (`close_exporter` is registered last) within the `after` edge.
    assert_eq!(
        names(&outcome),
        [
            "open_first",
            "open_second",
            "announce",
            "push_histograms",
            "push_gauges",
            "close_exporter",
            "flush",
            "close_producer",
        ]
    );
    assert!(
        outcome.hook("scoped_only").is_none(),
        "`global = false` stays out"
    );
    assert!(outcome.hooks().iter().all(|h| h.result == HookResult::Ok));
}

#[tokio::test(start_paused = true)]
async fn a_hook_added_both_ways_runs_once() {
    let recorder = Recorder::new();
    let lifecycle = builder()
        .hooks(hooks![close_producer, scoped_only, telemetry::push_gauges])
        .registered_hooks()
        .registered_hooks()
        .hooks(hooks![close_producer])
        .observe(recorder.observer())
        .build()
        .unwrap();
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    let trace = recorder.trace();
    for line in [
        "hook exit close_producer ok",
        "hook flush_metrics push_gauges ok",
    ] {
        assert_eq!(
            trace.iter().filter(|l| *l == line).count(),
            1,
            "{line}: {trace:?}"
        );
    }
    assert_eq!(
        outcome.hooks().len(),
        9,
        "the 8 registered hooks and `scoped_only`"
    );
    assert!(outcome.hook("scoped_only").is_some());
}

#[test]
fn a_closure_hook_with_a_registered_hooks_name_is_a_duplicate() {
    let err = builder()
        .registered_hooks()
        .on_exit("flush", |_ctx| async {})
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::DuplicateHook { name, .. } if name == "flush"),
        "{err}"
    );
}

#[test]
fn a_registered_hook_in_an_undeclared_phase_is_a_build_error_naming_it() {
    let err = testing::builder().registered_hooks().build().unwrap_err();
    assert!(
        matches!(&err, BuildError::UnknownPhase { phase, .. } if phase == "flush_metrics"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn without_registered_hooks_no_declared_hook_runs() {
    // The global list is read only on request: here no hook is added, and the undeclared
    // `flush_metrics` phase of `push_gauges` is no error.
    let lifecycle = testing::builder().build().unwrap();
    lifecycle.handle().stop();
    let outcome = lifecycle.run().await;
    assert_eq!(outcome.exit_code(), 0);
    assert!(outcome.hooks().is_empty());
}
