//! `Builder::build` rejects bad graphs with errors that name the culprit.

use std::time::Duration;

use lifecycle_hooks::errors::BuildError;
use lifecycle_hooks::testing;
use lifecycle_hooks::{HookSpec, Phase, PhaseSpec};

fn noop(phase: impl Into<Phase>, name: &'static str) -> HookSpec {
    HookSpec::new(phase, name, |_ctx| async {})
}

#[test]
fn a_hook_cycle_names_every_hook_in_it_and_only_those() {
    let err = testing::builder()
        .hook(noop(Phase::EXIT, "free"))
        .hook(noop(Phase::EXIT, "close_producer").after("flush_metrics"))
        .hook(noop(Phase::EXIT, "flush_metrics").after("flush_traces"))
        .hook(noop(Phase::EXIT, "flush_traces").after("close_producer"))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::HookCycle {
            phase: "exit".into(),
            cycle: vec![
                "close_producer".into(),
                "flush_traces".into(),
                "flush_metrics".into()
            ],
        }
    );
    assert_eq!(
        err.to_string(),
        "the hooks of phase `exit` form a cycle: close_producer -> flush_traces -> flush_metrics -> close_producer"
    );
}

#[test]
fn a_phase_cycle_names_the_phases() {
    let err = testing::builder()
        .phase(PhaseSpec::new("a").after(Phase::EXIT).before("b"))
        .phase(PhaseSpec::new("b").before(Phase::WAIT))
        .build()
        .unwrap_err();
    let BuildError::PhaseCycle { cycle } = &err else {
        panic!("{err}")
    };
    assert_eq!(cycle, &["wait", "exit", "a", "b"]);
}

#[test]
fn an_unknown_dependency_is_named() {
    let err = testing::builder()
        .hook(noop(Phase::EXIT, "close").after("flsh"))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "hook `close` is ordered after `flsh`, but no hook named `flsh` is registered"
    );
}

#[test]
fn a_dependency_across_phases_is_rejected_with_both_phases() {
    let err = testing::builder()
        .hook(noop(Phase::SHUTDOWN, "announce"))
        .hook(noop(Phase::EXIT, "close").after("announce"))
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::CrossPhaseDependency { other_phase, phase, .. } if other_phase == "shutdown" && phase == "exit"),
        "{err}"
    );
}

#[test]
fn duplicate_names_are_rejected_unless_it_is_the_same_hook() {
    let err = testing::builder()
        .hook(noop(Phase::EXIT, "close"))
        .hook(noop(Phase::SHUTDOWN, "close"))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::DuplicateHook {
            name: "close".into(),
            first: "exit".into(),
            second: "shutdown".into()
        }
    );
    // The same hook registered twice (same origin) runs once.
    let same = || noop(Phase::EXIT, "close").origin("my_crate::close");
    let lifecycle = testing::builder()
        .hook(same())
        .hook(same())
        .build()
        .unwrap();
    assert_eq!(lifecycle.handle().snapshot().pending_hooks, ["exit/close"]);
}

#[test]
fn zero_durations_are_rejected() {
    let err = testing::builder()
        .budget(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "the budget must be longer than zero");
    let err = testing::builder()
        .hook(noop(Phase::EXIT, "close").timeout(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the timeout of hook `close` must be longer than zero"
    );
    let err = testing::builder()
        .budget(Duration::from_secs(5))
        .exit_reserve(Duration::from_secs(5))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::ReserveTooLong { .. }), "{err}");
}

#[test]
fn unknown_and_unanchored_phases_are_named() {
    let err = testing::builder()
        .hook(noop("flush_metrics", "push"))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::UnknownPhase {
            user: "hook `push`".into(),
            phase: "flush_metrics".into()
        }
    );
    let err = testing::builder()
        .phase(PhaseSpec::new("flush_metrics"))
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::UnanchoredPhase("flush_metrics".into()));
    let err = testing::builder()
        .phase(PhaseSpec::new("flush").after("nope"))
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("phase `flush` names phase `nope`"),
        "{err}"
    );
    let err = testing::builder()
        .phase(PhaseSpec::new("exit").after(Phase::WAIT))
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::DuplicatePhase("exit".into()));
}

#[test]
fn a_teardown_must_pair_with_a_startup_hook() {
    let err = testing::builder()
        .hook(noop(Phase::SHUTDOWN, "announce"))
        .hook(noop(Phase::EXIT, "close").teardown_of("announce"))
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::BadTeardown { hook, startup, .. } if hook == "close" && startup == "announce"),
        "{err}"
    );
}
