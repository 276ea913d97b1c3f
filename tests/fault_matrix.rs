//! The fault matrix cases of the core no other test file covers: work that ignores cancellation
//! past the deadline, signal storms of 1 000 signals in one second sent to a real binary, and
//! `USR2` then `TERM` as real signals. Each name states the expected outcome;
//! `docs/reliability.md` maps every fault to the test that checks it. The cases that span crates
//! (the job pool, the soak's verifier) are in `examples/integration/tests/fault_matrix.rs`.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;

use std::time::{Duration, Instant};

use lifecycle_hooks::testing::{self, Recorder};
use lifecycle_hooks::{HookResult, Reason};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::Service;
use tokio::sync::oneshot;

const SECOND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// A job that ignores cancellation past the deadline.

/// Tracked work that never looks at the cancel token (a `track`ed future, not `spawn`ed with the
/// handle, so nothing drops it): at the drain deadline it is cancelled, gets the grace, is still
/// running, and the exit hooks begin anyway with the rest of the reserve. Forced: status 2.
#[tokio::test(start_paused = true)]
async fn a_job_ignoring_cancellation_is_abandoned_after_the_grace_and_exit_hooks_still_run_exit_2()
{
    let recorder = Recorder::new();
    let (exit_tx, exit_rx) = oneshot::channel();
    let exit_tx = Arc::new(parking_lot::Mutex::new(Some(exit_tx)));
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(10))
        .exit_reserve(Duration::from_secs(2))
        .cancel_grace(SECOND)
        .on_exit("close", move |ctx| {
            let exit_tx = exit_tx.clone();
            async move {
                let seen = (ctx.handle().in_flight(), ctx.time_left());
                if let Some(tx) = exit_tx.lock().take() {
                    let _ = tx.send(seen);
                }
            }
        })
        .observe(recorder.observer())
        .build()
        .unwrap();
    let handle = lifecycle.handle();
    // An hour of work that ignores every token.
    let stubborn = tokio::spawn(handle.track(tokio::time::sleep(Duration::from_secs(3600))));
    handle.stop();
    let start = tokio::time::Instant::now();
    let outcome = lifecycle.run().await;

    assert_eq!(outcome.exit_code(), 2, "{outcome}");
    assert!(outcome.forced() && !outcome.escalated());
    assert_eq!(outcome.reason(), Reason::Stop);
    assert_eq!(outcome.cancelled_work(), 1);
    assert_eq!(outcome.outlived_grace(), 1);
    assert_eq!(outcome.hook("close").unwrap().result, HookResult::Ok);
    // Deadline at 10 s - 2 s, then the 1 s grace: exit hooks begin at 9 s with 1 s left, the
    // stubborn work still in flight; the run ends there, not an hour later.
    let (in_flight, time_left) = exit_rx.await.unwrap();
    assert_eq!(in_flight, 1);
    assert_eq!(time_left, Some(SECOND));
    assert_eq!(start.elapsed(), Duration::from_secs(9));
    assert!(recorder.before("cancelled 1", "phase exit"));
    assert!(!stubborn.is_finished());
}

// ---------------------------------------------------------------------------------------------
// Real signals to a real binary.

/// Starts `01_phase_tour`.
fn tour(args: &[&str]) -> Service {
    Service::start("01_phase_tour", args, &[])
}

/// Sends `count` copies of `signal`, evenly over one second (the storm is the test's input,
/// paced on the clock; nothing waits on it). Stops early once the process is gone. Returns how
/// many were sent.
fn storm(service: &Service, signal: Signal, count: u32) -> u32 {
    let pid = Pid::from_raw(service.pid() as i32);
    let start = Instant::now();
    for i in 0..count {
        let at = start + SECOND * i / count;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if kill(pid, signal).is_err() {
            return i;
        }
    }
    assert!(
        start.elapsed() < SECOND * 2,
        "the storm took {:?}",
        start.elapsed()
    );
    count
}

/// `SIGUSR2` starts a restart; a `SIGTERM` while it runs is absorbed: the same graceful stop,
/// nothing abandoned, status 4 (systemd still restarts it).
#[test]
fn usr2_then_term_is_still_a_graceful_restart_exit_4() {
    let mut tour = tour(&["--hook-ms", "1500"]);
    tour.signal(Signal::SIGUSR2);
    tour.expect(|l| l == "phase shutdown");
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    assert_eq!(support::phases(&lines), support::ALL_PHASES);
    support::position(&lines, "hook shutdown announce ok");
    support::position(&lines, "hook exit close_producer ok");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("work done ")).count(),
        3
    );
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=restart exit_code=4 forced=false"
    );
    assert_eq!(status.code(), Some(4));
}

/// 1 000 `SIGTTIN` in one second: each is only a request to log the state, so the storm must
/// neither stop nor crash the service; signals that arrive together coalesce into fewer dumps.
/// A `SIGTERM` afterwards stops it gracefully: status 0.
#[test]
fn a_thousand_ttin_in_one_second_keep_it_running_then_term_exits_0() {
    let mut tour = tour(&[]);
    assert_eq!(storm(&tour, Signal::SIGTTIN, 1000), 1000);
    let dump = tour.expect_log(|l| l.contains("pending_hooks"));
    assert!(dump.contains("phase=running"), "{dump}");
    assert!(tour.child.try_wait().unwrap().is_none(), "still running");
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    assert_eq!(
        support::phases(&lines),
        support::ALL_PHASES,
        "no stop before the TERM"
    );
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=stop exit_code=0 forced=false"
    );
    assert_eq!(status.code(), Some(0));
    assert!(
        !lines.iter().any(|l| l.contains("pending_hooks")),
        "state dumps go to the log, never into stdout's line protocol"
    );
}

/// 1 000 `SIGTSTP` in one second: quiet is entered once (one intake hook run), the service keeps
/// running; a `SIGTERM` afterwards continues from `drain`: status 0.
#[test]
fn a_thousand_tstp_in_one_second_quiet_once_then_term_exits_0() {
    let mut tour = tour(&[]);
    assert_eq!(storm(&tour, Signal::SIGTSTP, 1000), 1000);
    tour.expect(|l| l == "hook stop_intake close_listener ok");
    assert!(tour.child.try_wait().unwrap().is_none(), "still running");
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    assert_eq!(support::phases(&lines), support::ALL_PHASES);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("hook stop_intake "))
            .count(),
        1,
        "the intake hook runs once"
    );
    assert_eq!(status.code(), Some(0));
}

/// 1 000 `SIGTERM` in one second, with hooks that would hang for ten minutes: the first stops,
/// the second skips to the exit hooks, the third ends the process at once with 128 + 15. It
/// exits by itself (not killed), in well under the storm's second plus start-up, and the rest of
/// the storm finds it gone.
#[test]
fn a_thousand_term_in_one_second_end_it_at_once_with_143() {
    let tour = tour(&["--hook-ms", "600000", "--exit-hook-ms", "600000"]);
    let start = Instant::now();
    let sent = storm(&tour, Signal::SIGTERM, 1000);
    let (lines, status) = tour.finish();
    let took = start.elapsed();
    assert_eq!(status.code(), Some(128 + 15), "{lines:#?}");
    assert_eq!(status.signal(), None, "it exited, it was not killed");
    assert!(!lines.iter().any(|l| l.starts_with("summary")));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(sent >= 3, "it needed three");
}
