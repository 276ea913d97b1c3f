//! Process tests: run the real `01_phase_tour` binary, send it real signals, read what it prints
//! and how it exits.

mod support;

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{ALL_PHASES, PATIENCE, Service, last_position, phases, position};

/// Starts `01_phase_tour`.
fn tour(args: &[&str], env: &[(&str, &str)]) -> Service {
    Service::start("01_phase_tour", args, env)
}

/// A stand-in for systemd's notify socket that reads every datagram as it arrives (a service
/// manager reads promptly; an unread socket fills up after a few messages).
struct NotifySocket {
    path: PathBuf,
    messages: mpsc::Receiver<String>,
}

impl NotifySocket {
    fn bind(name: &str) -> NotifySocket {
        let dir = std::env::temp_dir().join(format!("lh-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = socket.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        NotifySocket { path, messages }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The next message, waiting at most `PATIENCE`.
    fn next(&self) -> String {
        self.messages
            .recv_timeout(PATIENCE)
            .expect("a notify message")
    }

    /// Every message received so far.
    fn drain(&self) -> Vec<String> {
        self.messages.try_iter().collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
    }
}

fn assert_graceful(lines: &[String]) {
    assert_eq!(phases(lines), ALL_PHASES);
    let shutdown_hook = position(lines, "hook shutdown announce ok");
    let last_work = last_position(lines, "work done ");
    let exit_hook = position(lines, "hook exit close_producer ok");
    assert!(
        shutdown_hook < last_work,
        "shutdown hook ends while work is in flight"
    );
    assert!(last_work < exit_hook, "exit hook runs after all work");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("work done ")).count(),
        3
    );
}

#[test]
fn term_runs_every_phase_in_order_and_exits_0() {
    let tour = tour(&[], &[]);
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    assert_graceful(&lines);
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=stop exit_code=0 forced=false"
    );
    assert_eq!(status.code(), Some(0));
}

#[test]
fn usr2_runs_the_same_stop_and_exits_4() {
    let tour = tour(&[], &[]);
    tour.signal(Signal::SIGUSR2);
    let (lines, status) = tour.finish();
    assert_graceful(&lines);
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=restart exit_code=4 forced=false"
    );
    assert_eq!(status.code(), Some(4));
}

#[test]
fn tstp_quiets_and_keeps_running_until_term() {
    let mut tour = tour(&[], &[]);
    tour.signal(Signal::SIGTSTP);
    tour.expect(|l| l == "hook stop_intake close_listener ok");
    // Still running a second later: no further line, no exit.
    match tour.next_within(Duration::from_secs(1)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("quiet must keep running and print nothing more, got {other:?}"),
    }
    assert!(tour.child.try_wait().unwrap().is_none(), "still running");
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    assert_graceful(&lines);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_second_term_while_the_shutdown_hook_hangs_runs_exit_hooks_and_exits_2() {
    let mut tour = tour(&["--hook-ms", "600000"], &[]);
    tour.signal(Signal::SIGTERM);
    tour.expect(|l| l == "phase shutdown");
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    // The hook is abandoned mid-run, or skipped if the second signal beat its start.
    let announce = lines
        .iter()
        .position(|l| {
            l == "hook shutdown announce abandoned" || l == "hook shutdown announce skipped"
        })
        .unwrap_or_else(|| panic!("the shutdown hook is cut short: {lines:#?}"));
    assert!(announce < position(&lines, "phase exit"));
    position(&lines, "hook exit close_producer ok");
    assert!(!lines.iter().any(|l| l == "phase wait"), "wait is skipped");
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=stop exit_code=2 forced=true"
    );
    assert_eq!(status.code(), Some(2));
}

#[test]
fn a_third_term_exits_at_once_with_128_plus_signo() {
    let mut tour = tour(&["--hook-ms", "600000", "--exit-hook-ms", "600000"], &[]);
    tour.signal(Signal::SIGTERM);
    tour.expect(|l| l == "phase shutdown");
    tour.signal(Signal::SIGTERM);
    tour.expect(|l| l == "phase exit");
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    assert!(!lines.iter().any(|l| l.starts_with("summary")));
    assert_eq!(status.code(), Some(128 + 15));
    assert_eq!(status.signal(), None, "it exited, it was not killed");
}

#[test]
fn work_longer_than_the_budget_is_cancelled_and_exits_2_within_the_budget() {
    let tour = tour(
        &["--work-ms", "600000", "--shutdown-timeout-ms", "1000"],
        &[],
    );
    let sent = Instant::now();
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    let took = sent.elapsed();
    assert!(!lines.iter().any(|l| l.starts_with("work done")));
    position(&lines, "hook exit close_producer ok");
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=stop exit_code=2 forced=true"
    );
    assert_eq!(status.code(), Some(2));
    assert!(took < Duration::from_millis(1000 + 1500), "took {took:?}");
}

#[test]
fn systemd_hears_ready_then_stopping() {
    let socket = NotifySocket::bind("notify");
    let tour = tour(&[], &[("NOTIFY_SOCKET", socket.path())]);
    tour.signal(Signal::SIGTERM);
    let (_, status) = tour.finish();
    assert_eq!(status.code(), Some(0));
    let states = socket.drain();
    let ready = states
        .iter()
        .position(|s| s == "READY=1")
        .expect("READY=1 sent");
    let stopping = states
        .iter()
        .position(|s| s == "STOPPING=1")
        .expect("STOPPING=1 sent");
    assert!(ready < stopping, "{states:?}");
    assert!(
        states.contains(&"STATUS=phase exit".to_string()),
        "{states:?}"
    );
}

#[test]
fn systemd_watchdog_is_fed_and_a_long_drain_extends_the_stop_timeout() {
    let socket = NotifySocket::bind("watchdog");
    let tour = tour(
        &["--work-ms", "1500"],
        &[
            ("NOTIFY_SOCKET", socket.path()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    // Half the watchdog interval: WATCHDOG=1 keeps coming while the service runs.
    let mut watchdogs = 0;
    while watchdogs < 3 {
        if socket.next() == "WATCHDOG=1" {
            watchdogs += 1;
        }
    }
    tour.signal(Signal::SIGTERM);
    let (_, status) = tour.finish();
    assert_eq!(status.code(), Some(0));
    let extensions: Vec<u64> = socket
        .drain()
        .iter()
        .filter_map(|m| m.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .map(|usec| usec.parse().unwrap())
        .collect();
    // One at the trigger, then at least one more during the 1.5 s drain, each covering the rest
    // of the 25 s budget plus a second.
    assert!(extensions.len() >= 2, "{extensions:?}");
    assert!(
        extensions
            .iter()
            .all(|&usec| usec > 20_000_000 && usec <= 26_000_000),
        "{extensions:?}"
    );
}

#[test]
fn ttin_dumps_state_to_the_log_and_keeps_running() {
    let mut tour = tour(&[], &[]);
    tour.signal(Signal::SIGTTIN);
    let dump = tour.expect_log(|line| line.contains("pending_hooks"));
    assert!(dump.contains("phase=running"), "{dump}");
    assert!(dump.contains("in_flight=3"), "{dump}");
    assert!(dump.contains("exit/close_producer"), "{dump}");
    tour.signal(Signal::SIGTERM);
    let (_, status) = tour.finish();
    assert_eq!(status.code(), Some(0));
}

/// Bug 6: once `run()` has returned, a signal takes its default action again. A process stuck
/// after its run (here: blocking on purpose) is still ended by `SIGTERM`, not left immune.
#[test]
fn after_the_run_a_term_takes_its_default_action_again() {
    let mut tour = tour(&["--linger"], &[]);
    tour.signal(Signal::SIGTERM);
    tour.expect(|l| l == "lingering");
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    assert!(
        lines
            .iter()
            .any(|l| l == "summary reason=stop exit_code=0 forced=false")
    );
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
}

/// Bug 4: quiet sends `STATUS=` only; `STOPPING=1` comes with the stop that follows, and every
/// `EXTEND_TIMEOUT_USEC` after it.
#[test]
fn tstp_tells_systemd_status_only_and_the_later_term_stopping_then_extensions() {
    let socket = NotifySocket::bind("quiet");
    let mut tour = tour(&[], &[("NOTIFY_SOCKET", socket.path())]);
    tour.signal(Signal::SIGTSTP);
    tour.expect(|l| l == "phase stop_intake");
    let mut quiet = Vec::new();
    while !quiet.iter().any(|m: &String| m.starts_with("STATUS=quiet")) {
        quiet.push(socket.next());
    }
    tour.signal(Signal::SIGTERM);
    // Read (waiting) up to the exit phase: the reader thread may not have forwarded the last
    // datagrams yet when the process has exited.
    while quiet.last().is_none_or(|m| m != "STATUS=phase exit") {
        quiet.push(socket.next());
    }
    let (_, status) = tour.finish();
    assert_eq!(status.code(), Some(0));
    let quiet_at = quiet
        .iter()
        .position(|m| m.starts_with("STATUS=quiet"))
        .unwrap();
    let stopping = quiet
        .iter()
        .position(|m| m == "STOPPING=1")
        .unwrap_or_else(|| panic!("STOPPING=1 once stopping: {quiet:?}"));
    assert!(quiet_at < stopping, "{quiet:?}");
    let first_extension = quiet
        .iter()
        .position(|m| m.starts_with("EXTEND_TIMEOUT_USEC="))
        .expect("an extension");
    assert!(stopping < first_extension, "{quiet:?}");
}

/// Bug 4: quiet during startup never reports the service ready (no `READY=1`, no `ready` line);
/// a later stop still runs the graph and exits 0.
#[test]
fn tstp_during_startup_never_sends_ready() {
    let socket = NotifySocket::bind("quiet-startup");
    let mut tour = Service::spawn(
        "01_phase_tour",
        &["--startup-ms", "1500"],
        &[("NOTIFY_SOCKET", socket.path())],
    );
    tour.expect(|l| l == "phase startup");
    tour.signal(Signal::SIGTSTP);
    tour.expect(|l| l == "phase stop_intake");
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("ready pid=")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "hook exit close_producer ok"));
    let mut messages = Vec::new();
    while messages.last().is_none_or(|m| m != "STATUS=phase exit") {
        messages.push(socket.next());
    }
    assert!(!messages.iter().any(|m| m == "READY=1"), "{messages:?}");
    assert!(messages.iter().any(|m| m == "STOPPING=1"), "{messages:?}");
}

/// A `SIGTERM` during a startup hook: startup finishes (it is inside the budget), `running` is
/// skipped (never ready), and the stop runs every exit hook and exits 0.
#[test]
fn term_during_startup_stops_cleanly_without_ever_being_ready() {
    let mut tour = Service::spawn("01_phase_tour", &["--startup-ms", "1500"], &[]);
    tour.expect(|l| l == "phase startup");
    tour.signal(Signal::SIGTERM);
    let (lines, status) = tour.finish();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "hook startup warm_cache ok"),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("ready pid=")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "hook exit close_producer ok"));
    assert!(
        lines
            .iter()
            .any(|l| l == "summary reason=stop exit_code=0 forced=false")
    );
}
