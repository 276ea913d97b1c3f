//! A signal-sequence fuzzer: random sequences of TERM/INT/USR2/TSTP/TTIN and
//! `stop`/`restart`/`quiet`/`fail` calls at random moments (before `run()`, during startup, while
//! running, during the drain and the hooks), under paused time, checked against the invariants:
//! exit hooks run unless a third signal ends the run; teardown runs only for what started; the
//! reason and escalation follow the trigger rules; the status follows the policy; systemd hears
//! `STOPPING=1` once, only for a stop, with every extension after it, and `READY=1` only if
//! nothing stopped or quieted the service first; nothing panics.
//!
//! `PROPTEST_CASES` sets the case count (default 128 here); run many more with
//! `PROPTEST_CASES=20000 cargo test --release --test signal_sequences`.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use lifecycle_hooks::testing::{self, Recorder};
use lifecycle_hooks::{ExitCodes, HookResult, HookSpec, Phase, Reason, Signal};
use proptest::prelude::*;

/// One thing a user or the OS does to the lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Sig(Signal),
    Stop,
    Restart,
    Quiet,
    Fail,
}

impl Act {
    fn label(self) -> String {
        match self {
            Act::Sig(signal) => format!("act {signal}"),
            Act::Stop => "act stop".into(),
            Act::Restart => "act restart".into(),
            Act::Quiet => "act quiet".into(),
            Act::Fail => "act fail".into(),
        }
    }
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        3 => Just(Act::Sig(Signal::Term)),
        1 => Just(Act::Sig(Signal::Int)),
        2 => Just(Act::Sig(Signal::Usr2)),
        2 => Just(Act::Sig(Signal::Tstp)),
        1 => Just(Act::Sig(Signal::Ttin)),
        1 => Just(Act::Stop),
        1 => Just(Act::Restart),
        1 => Just(Act::Quiet),
        1 => Just(Act::Fail),
    ]
}

/// A case: what happens when (`None`: before `run()`), and how long each part takes.
#[derive(Clone, Debug)]
struct Case {
    acts: Vec<(Option<u64>, Act)>,
    startup_ms: u64,
    intake_ms: u64,
    shutdown_ms: u64,
    exit_ms: u64,
    work_ms: Vec<u64>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((prop::option::weighted(0.85, 0u64..2_500), act()), 0..7),
        0u64..400,
        0u64..400,
        0u64..400,
        0u64..150,
        prop::collection::vec(0u64..2_500, 0..4),
    )
        .prop_map(
            |(acts, startup_ms, intake_ms, shutdown_ms, exit_ms, work_ms)| Case {
                acts,
                startup_ms,
                intake_ms,
                shutdown_ms,
                exit_ms,
                work_ms,
            },
        )
}

/// The trigger rules, written independently of the crate: what the applied acts should make of
/// the reason and the escalation.
#[derive(Debug, Default)]
struct Model {
    reason: Option<Reason>,
    absorbed: bool,
    escalations: usize,
    third: Option<Signal>,
    failed: bool,
}

impl Model {
    fn apply(&mut self, act: Act) {
        let (reason, from_signal) = match act {
            Act::Sig(Signal::Term | Signal::Int) => (Reason::Stop, Some(act)),
            Act::Sig(Signal::Usr2) => (Reason::Restart, Some(act)),
            Act::Sig(_) | Act::Quiet => return,
            Act::Stop => (Reason::Stop, None),
            Act::Restart => (Reason::Restart, None),
            Act::Fail => {
                self.failed = true;
                (Reason::Failure, None)
            }
        };
        let Some(current) = self.reason else {
            self.reason = Some(reason);
            return;
        };
        let Some(Act::Sig(signal)) = from_signal else {
            return; // programmatic requests never escalate
        };
        if current == Reason::Restart && reason == Reason::Stop && !self.absorbed {
            self.absorbed = true;
            return;
        }
        self.escalations += 1;
        if self.escalations >= 2 && self.third.is_none() {
            self.third = Some(signal);
        }
    }
}

static SOCKETS: AtomicUsize = AtomicUsize::new(0);

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let dir = std::env::temp_dir().join(format!(
        "lh-seq-{}-{}",
        std::process::id(),
        SOCKETS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_nonblocking(true).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let recorder = Recorder::new();
    let intake = Duration::from_millis(case.intake_ms);
    let (startup, shutdown, exit) = (
        Duration::from_millis(case.startup_ms),
        Duration::from_millis(case.shutdown_ms),
        Duration::from_millis(case.exit_ms),
    );
    let (outcome, model) = runtime.block_on(async {
        let lifecycle = testing::builder()
            .budget(Duration::from_secs(3))
            .exit_reserve(Duration::from_millis(600))
            .notify_socket(path.to_str().unwrap(), None)
            .observe(recorder.observer())
            .on_startup("open", move |_ctx| tokio::time::sleep(startup))
            .hook(HookSpec::new(Phase::EXIT, "close_open", |_ctx| async {}).teardown_of("open"))
            .on_stop_intake("pause_consumer", move |_ctx| tokio::time::sleep(intake))
            .on_shutdown("announce", move |_ctx| tokio::time::sleep(shutdown))
            .on_exit("close", move |_ctx| tokio::time::sleep(exit))
            .build()
            .unwrap();
        let handle = lifecycle.handle();
        for &ms in &case.work_ms {
            let draining = handle.draining();
            handle.spawn(async move {
                draining.await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            });
        }
        let mut model = Model::default();
        let apply = |act: Act, model: &mut Model| {
            recorder.mark(act.label());
            model.apply(act);
            match act {
                Act::Sig(signal) => handle.trigger(signal),
                Act::Stop => handle.stop(),
                Act::Restart => handle.restart(),
                Act::Quiet => handle.quiet(),
                Act::Fail => handle.fail("the fuzzer failed it"),
            }
        };
        for &(_, act) in case.acts.iter().filter(|(at, _)| at.is_none()) {
            apply(act, &mut model);
        }
        let mut timed: Vec<(u64, Act)> = case
            .acts
            .iter()
            .filter_map(|&(at, act)| at.map(|at| (at, act)))
            .collect();
        timed.sort_by_key(|(at, _)| *at);
        // A last stop, so every case ends.
        timed.push((5_000, Act::Stop));
        let done = Arc::new(AtomicBool::new(false));
        let start = tokio::time::Instant::now();
        let run = {
            let done = Arc::clone(&done);
            async move {
                let outcome = lifecycle.run().await;
                done.store(true, Ordering::SeqCst);
                outcome
            }
        };
        let driver = async {
            for (at, act) in timed {
                tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                if done.load(Ordering::SeqCst) {
                    break;
                }
                apply(act, &mut model);
            }
        };
        let (outcome, ()) = tokio::join!(run, driver);
        (outcome, model)
    });
    let mut messages = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let _ = std::fs::remove_dir_all(&dir);
    let trace = recorder.trace();

    // The reason and the escalation follow the trigger rules.
    prop_assert_eq!(Some(outcome.reason()), model.reason, "{:?}", trace);
    prop_assert_eq!(outcome.escalated(), model.escalations >= 1, "{:?}", trace);
    prop_assert_eq!(outcome.immediate(), model.third, "{:?}", trace);
    // Every hook is reported exactly once.
    let mut names: Vec<&str> = outcome.hooks().iter().map(|h| h.name.as_str()).collect();
    names.sort_unstable();
    prop_assert_eq!(
        names,
        ["announce", "close", "close_open", "open", "pause_consumer"]
    );

    if let Some(signal) = model.third {
        prop_assert_eq!(outcome.exit_code(), ExitCodes::default().immediate(signal));
        return Ok(());
    }
    // Exit hooks run (a third signal aside), teardown only of what started.
    prop_assert_eq!(&outcome.hook("close").unwrap().result, &HookResult::Ok);
    let open = &outcome.hook("open").unwrap().result;
    let teardown = &outcome.hook("close_open").unwrap().result;
    if *open == HookResult::Ok {
        prop_assert_eq!(teardown, &HookResult::Ok);
    } else {
        prop_assert_eq!(teardown, &HookResult::Skipped);
    }
    // The status follows the policy.
    let hook_failed = outcome.hooks().iter().any(|h| h.result.is_failure());
    let startup_failed = *open != HookResult::Ok && *open != HookResult::Skipped;
    let forced = model.escalations >= 1 || (outcome.cancelled_work() > 0 && !startup_failed);
    let expected = ExitCodes::default().status(
        model.reason.unwrap(),
        model.failed || hook_failed || startup_failed,
        forced,
    );
    prop_assert_eq!(outcome.exit_code(), expected, "{}", outcome);

    // systemd: STOPPING=1 once, extensions only after it, READY=1 only if nothing came first.
    let stopping: Vec<usize> = (0..messages.len())
        .filter(|&i| messages[i] == "STOPPING=1")
        .collect();
    prop_assert_eq!(stopping.len(), 1, "{:?}", messages);
    prop_assert!(
        messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.starts_with("EXTEND_TIMEOUT_USEC="))
            .all(|(i, _)| i > stopping[0]),
        "{:?}",
        messages
    );
    let ready_sent = messages.iter().any(|m| m == "READY=1");
    let ready_event = trace.iter().position(|l| l == "ready");
    prop_assert_eq!(ready_sent, ready_event.is_some(), "{:?}", trace);
    if let Some(ready) = ready_event {
        let stopped_first = trace[..ready]
            .iter()
            .any(|l| l.starts_with("act ") && l != "act SIGTTIN");
        prop_assert!(!stopped_first, "ready after a stop or quiet: {:?}", trace);
    }
    if trace.iter().any(|l| l == "quiet") {
        // Quiet (always before the stop) is told as a status, before STOPPING=1.
        let status = messages.iter().position(|m| m.starts_with("STATUS=quiet"));
        prop_assert!(status.is_some_and(|s| s < stopping[0]), "{:?}", messages);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_signal_sequences_keep_every_invariant(case in case()) {
        run_case(&case)?;
    }
}
