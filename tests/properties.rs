//! Property tests: random phase and hook graphs (custom phases, dependencies, durations, errors,
//! panics, hangs with and without timeouts, tracked work, a second trigger) run under paused
//! time, checked against the rules every run must keep: each hook runs at most once and is
//! reported exactly once, dependencies and phase order hold, exit hooks always run, each report
//! matches what the hook did, and the exit status follows the policy.
//!
//! `PROPTEST_CASES` sets the case count (default 64 here, so CI stays fast); run 10 000+ with
//! `PROPTEST_CASES=10000 cargo test --release --test properties`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use lifecycle_hooks::testing;
use lifecycle_hooks::{HookResult, HookSpec, Outcome, Phase, PhaseSpec, Reason, Signal};
use parking_lot::Mutex;
use proptest::prelude::*;

/// Where a hook can live. Custom phases are added only when a hook uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Slot {
    Startup,
    /// A custom phase between `running` and `stop_intake` (drain side).
    PreIntake,
    StopIntake,
    Shutdown,
    /// A custom phase between `wait` and `exit` (exit side).
    PostWait,
    Exit,
}

impl Slot {
    const ALL: [Slot; 6] = [
        Slot::Startup,
        Slot::PreIntake,
        Slot::StopIntake,
        Slot::Shutdown,
        Slot::PostWait,
        Slot::Exit,
    ];

    fn phase(self) -> Phase {
        match self {
            Slot::Startup => Phase::STARTUP,
            Slot::PreIntake => Phase::custom("pre_intake"),
            Slot::StopIntake => Phase::STOP_INTAKE,
            Slot::Shutdown => Phase::SHUTDOWN,
            Slot::PostWait => Phase::custom("post_wait"),
            Slot::Exit => Phase::EXIT,
        }
    }

    /// Between the trigger and `wait`: bounded by the drain deadline, so a hook here may hang
    /// without a timeout of its own.
    fn drain_side(self) -> bool {
        matches!(self, Slot::PreIntake | Slot::StopIntake | Slot::Shutdown)
    }

    /// After `wait`: runs on every ending but the third signal.
    fn exit_side(self) -> bool {
        matches!(self, Slot::PostWait | Slot::Exit)
    }
}

/// How a hook's future ends, after its sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Ok,
    Err,
    Panic,
    Hang,
}

#[derive(Clone, Debug)]
struct HookPlan {
    slot: Slot,
    /// Multiples of 10 ms; timeouts are 10 k + 5 ms, so a sleep never ends on its own timeout.
    sleep_ms: u64,
    end: End,
    timeout_ms: Option<u64>,
}

/// What the driver does once the lifecycle is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Term,
    Usr2,
    Stop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Second {
    /// A second SIGTERM after SIGTERM: escalates.
    Term,
    /// SIGTERM after SIGUSR2: absorbed, still a restart.
    TermAfterRestart,
    /// A second `stop()`: one stop.
    Stop,
}

#[derive(Clone, Debug)]
struct Case {
    hooks: Vec<HookPlan>,
    /// `(earlier, later)` index pairs in one phase, `earlier < later`; `true`: written as
    /// `later.after(earlier)`, `false`: as `earlier.before(later)`.
    edges: Vec<(usize, usize, bool)>,
    /// Registration order: a permutation of the hook indices.
    order: Vec<usize>,
    /// Tracked work durations, 5 k + 2 ms: never on a deadline (all multiples of 5 ms).
    work_ms: Vec<u64>,
    trigger: Trigger,
    second: Option<(Second, u64)>,
    concurrent_exit: bool,
}

fn hook_plan() -> impl Strategy<Value = HookPlan> {
    (
        prop::sample::select(Slot::ALL.to_vec()),
        0u64..=30,
        prop_oneof![
            4 => Just(End::Ok),
            1 => Just(End::Err),
            1 => Just(End::Panic),
            1 => Just(End::Hang),
        ],
        prop::option::weighted(0.4, 0u64..=40),
    )
        .prop_map(|(slot, sleep, end, timeout)| {
            let mut timeout_ms = timeout.map(|t| t * 10 + 5);
            // A hang needs a bound: outside the drain side only its own timeout ends it.
            if end == End::Hang && timeout_ms.is_none() && !slot.drain_side() {
                timeout_ms = Some(sleep * 10 + 205);
            }
            HookPlan {
                slot,
                sleep_ms: sleep * 10,
                end,
                timeout_ms,
            }
        })
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(hook_plan(), 1..=10)
        .prop_flat_map(|hooks| {
            let n = hooks.len();
            let pairs: Vec<(usize, usize)> = (0..n)
                .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
                .filter(|&(a, b)| hooks[a].slot == hooks[b].slot)
                .collect();
            let edges = prop::collection::vec((any::<bool>(), any::<bool>()), pairs.len())
                .prop_map(move |choices| {
                    pairs
                        .iter()
                        .zip(choices)
                        .filter(|(_, (keep, _))| *keep)
                        .map(|(&(a, b), (_, after))| (a, b, after))
                        .collect::<Vec<_>>()
                });
            let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            let work = prop::collection::vec((0u64..=1400).prop_map(|k| k * 5 + 2), 0..=3);
            let trigger = prop_oneof![
                Just(Trigger::Term),
                Just(Trigger::Usr2),
                Just(Trigger::Stop)
            ];
            let second = prop::option::of(0u64..=6000);
            (
                Just(hooks),
                edges,
                order,
                work,
                trigger,
                second,
                any::<bool>(),
            )
        })
        .prop_map(
            |(hooks, edges, order, work_ms, trigger, second, concurrent_exit)| Case {
                hooks,
                edges,
                order,
                work_ms,
                trigger,
                second: second.map(|delay| {
                    let kind = match trigger {
                        Trigger::Term => Second::Term,
                        Trigger::Usr2 => Second::TermAfterRestart,
                        Trigger::Stop => Second::Stop,
                    };
                    (kind, delay)
                }),
                concurrent_exit,
            },
        )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    Started(usize),
    Finished(usize),
}

/// What happened during one run, as the hooks and the driver saw it.
struct Run {
    outcome: Outcome,
    log: Vec<Mark>,
    work_done: usize,
    escalated: bool,
}

const BUDGET: Duration = Duration::from_secs(10);
const RESERVE: Duration = Duration::from_secs(5);
const GRACE: Duration = Duration::from_millis(500);

fn name(index: usize) -> String {
    format!("h{index}")
}

fn execute(case: &Case) -> Run {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let log: Arc<Mutex<Vec<Mark>>> = Arc::default();
        let mut builder = testing::builder()
            .budget(BUDGET)
            .exit_reserve(RESERVE)
            .cancel_grace(GRACE);
        if case.hooks.iter().any(|h| h.slot == Slot::PreIntake) {
            builder = builder.phase(
                PhaseSpec::new("pre_intake")
                    .after(Phase::RUNNING)
                    .before(Phase::STOP_INTAKE),
            );
        }
        if case.hooks.iter().any(|h| h.slot == Slot::PostWait) {
            builder = builder.phase(
                PhaseSpec::new("post_wait")
                    .after(Phase::WAIT)
                    .before(Phase::EXIT),
            );
        }
        if case.concurrent_exit {
            builder = builder.concurrent(Phase::EXIT);
        }
        for &index in &case.order {
            let plan = case.hooks[index].clone();
            let log = log.clone();
            let mut spec = HookSpec::new(plan.slot.phase(), name(index), move |_ctx| {
                let log = log.clone();
                async move {
                    log.lock().push(Mark::Started(index));
                    tokio::time::sleep(Duration::from_millis(plan.sleep_ms)).await;
                    if plan.end == End::Hang {
                        std::future::pending::<()>().await;
                    }
                    log.lock().push(Mark::Finished(index));
                    match plan.end {
                        End::Err => Err(std::io::Error::other(format!("error {index}"))),
                        End::Panic => panic!("deliberate panic {index}"),
                        _ => Ok(()),
                    }
                }
            });
            for &(earlier, later, as_after) in &case.edges {
                if as_after && later == index {
                    spec = spec.after(name(earlier));
                }
                if !as_after && earlier == index {
                    spec = spec.before(name(later));
                }
            }
            if let Some(timeout) = plan.timeout_ms {
                spec = spec.timeout(Duration::from_millis(timeout));
            }
            builder = builder.hook(spec);
        }
        let lifecycle = builder.build().expect("a generated graph is valid");
        let handle = lifecycle.handle();
        let work_done = Arc::new(AtomicUsize::new(0));
        for &ms in &case.work_ms {
            let work_done = work_done.clone();
            handle.spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                work_done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let done = Arc::new(AtomicBool::new(false));
        let run = tokio::spawn({
            let done = done.clone();
            async move {
                let outcome = lifecycle.run().await;
                // Set in the same poll the run returns in: the driver never sees a stale value.
                done.store(true, Ordering::SeqCst);
                outcome
            }
        });
        let escalated = Arc::new(AtomicBool::new(false));
        let driver = tokio::spawn({
            let (handle, done, escalated) = (handle.clone(), done.clone(), escalated.clone());
            let (trigger, second) = (case.trigger, case.second);
            async move {
                // Pends forever after a failed startup: the run ends without a trigger.
                handle.readiness().wait_for(|ready| *ready).await.unwrap();
                match trigger {
                    Trigger::Term => handle.trigger(Signal::Term),
                    Trigger::Usr2 => handle.trigger(Signal::Usr2),
                    Trigger::Stop => handle.stop(),
                }
                if let Some((kind, delay)) = second {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    match kind {
                        Second::Term => {
                            escalated.store(true, Ordering::SeqCst);
                            handle.trigger(Signal::Term);
                        }
                        Second::TermAfterRestart => handle.trigger(Signal::Term),
                        Second::Stop => handle.stop(),
                    }
                }
            }
        });
        let outcome = run.await.unwrap();
        driver.abort();
        let log = log.lock().clone();
        Run {
            outcome,
            log,
            work_done: work_done.load(Ordering::SeqCst),
            escalated: escalated.load(Ordering::SeqCst),
        }
    })
}

fn check(case: &Case, run: &Run) -> Result<(), TestCaseError> {
    let outcome = &run.outcome;
    let n = case.hooks.len();

    // Each hook starts at most once, and finishes only after it started.
    let mut started_at: HashMap<usize, usize> = HashMap::new();
    let mut finished: HashSet<usize> = HashSet::new();
    for (at, mark) in run.log.iter().enumerate() {
        match *mark {
            Mark::Started(i) => {
                prop_assert!(started_at.insert(i, at).is_none(), "h{i} started twice");
            }
            Mark::Finished(i) => {
                prop_assert!(started_at.contains_key(&i), "h{i} finished unstarted");
                prop_assert!(finished.insert(i), "h{i} finished twice");
            }
        }
    }

    // The outcome reports every registered hook exactly once.
    let mut reported: Vec<&str> = outcome.hooks().iter().map(|h| h.name.as_str()).collect();
    reported.sort_unstable();
    let mut expected: Vec<String> = (0..n).map(name).collect();
    expected.sort_unstable();
    prop_assert_eq!(
        reported,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // Dependencies and phase order: a hook starts only after the hooks it depends on started,
    // and after every started hook of an earlier phase.
    for &(earlier, later, _) in &case.edges {
        if let Some(&b) = started_at.get(&later) {
            let a = started_at.get(&earlier);
            prop_assert!(
                a.is_some_and(|&a| a < b),
                "h{later} ran without h{earlier} before it"
            );
        }
    }
    for (&i, &at_i) in &started_at {
        for (&j, &at_j) in &started_at {
            if case.hooks[i].slot < case.hooks[j].slot {
                prop_assert!(at_i < at_j, "h{j} started before h{i} of an earlier phase");
            }
        }
    }

    // What each hook did and how it is reported agree.
    let startup_failed = case.hooks.iter().enumerate().any(|(i, h)| {
        h.slot == Slot::Startup && outcome.hook(&name(i)).unwrap().result.is_failure()
    });
    let mut failed = false;
    for (i, plan) in case.hooks.iter().enumerate() {
        let result = &outcome.hook(&name(i)).unwrap().result;
        match (started_at.contains_key(&i), finished.contains(&i)) {
            (false, _) => prop_assert_eq!(result, &HookResult::Skipped, "h{}", i),
            (true, true) => {
                match plan.end {
                    End::Ok => prop_assert_eq!(result, &HookResult::Ok, "h{}", i),
                    End::Err => {
                        prop_assert_eq!(result, &HookResult::Error(format!("error {i}")), "h{}", i)
                    }
                    End::Panic => prop_assert_eq!(
                        result,
                        &HookResult::Panicked(format!("deliberate panic {i}")),
                        "h{}",
                        i
                    ),
                    End::Hang => prop_assert!(false, "h{i} hangs yet finished"),
                }
                failed |= plan.end != End::Ok;
            }
            (true, false) => {
                prop_assert!(
                    *result == HookResult::TimedOut
                        || run.escalated && *result == HookResult::Abandoned,
                    "h{i} was cut short but reported {result}"
                );
                failed |= *result == HookResult::TimedOut;
            }
        }
        // Exit hooks always run (no third signal here), even after failures and escalation.
        if plan.slot.exit_side() {
            prop_assert!(started_at.contains_key(&i), "exit-side hook h{i} never ran");
        }
    }

    // The exit status follows the policy: forced 2 > failure 1 > restart 4 > stop 0.
    let work_cut = run.work_done < case.work_ms.len();
    let (reason, code) = if startup_failed {
        (Reason::Failure, 1)
    } else {
        let reason = match case.trigger {
            Trigger::Usr2 => Reason::Restart,
            Trigger::Term | Trigger::Stop => Reason::Stop,
        };
        let code = if run.escalated || work_cut {
            2
        } else if failed {
            1
        } else if reason == Reason::Restart {
            4
        } else {
            0
        };
        (reason, code)
    };
    prop_assert_eq!(outcome.reason(), reason);
    prop_assert_eq!(outcome.exit_code(), code, "{}", outcome);
    prop_assert_eq!(outcome.escalated(), run.escalated);
    if !startup_failed {
        prop_assert_eq!(outcome.forced(), run.escalated || work_cut);
    }
    Ok(())
}

/// Keeps the deliberate panics of generated hooks out of the test output; every other panic
/// (a failing assertion) is printed as usual.
fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let deliberate = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("deliberate panic"));
            if !deliberate {
                default(info);
            }
        }));
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        // `PROPTEST_CASES` overrides this light default.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_graphs_keep_every_lifecycle_rule(case in case()) {
        quiet_deliberate_panics();
        let run = execute(&case);
        check(&case, &run)?;
    }
}
