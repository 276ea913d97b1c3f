//! Process tests for `examples/02_on_exit_macro.rs`: the real binary, real signals. The producer
//! closed by `#[on_exit]` outlives every job; closed in `#[on_shutdown]`, it fails them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const EXAMPLE: &str = "02_on_exit_macro";

/// How long any one line may take before the test fails: a bound, not a synchronization (each
/// wait ends as soon as the line arrives).
const PATIENCE: Duration = Duration::from_secs(30);

fn example_binary() -> PathBuf {
    // target/debug/deps/macros_example-<hash> -> target/debug/examples/02_on_exit_macro
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(EXAMPLE);
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{EXAMPLE}.rs"));
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    // `cargo test --all-targets` builds the example first; a narrower run may leave it stale.
    if modified(&binary) < modified(&source) {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", EXAMPLE])
            .status()
            .unwrap();
        assert!(status.success(), "building the example failed");
    }
    binary
}

/// The running example and the lines it printed so far.
struct Service {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Service {
    /// Starts the example and waits until it is ready.
    fn start(args: &[&str]) -> Service {
        let mut child = Command::new(example_binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut service = Service {
            child,
            lines,
            seen: Vec::new(),
        };
        let ready = service.next().expect("the example printed nothing");
        assert!(ready.starts_with("ready pid="), "{ready}");
        service
    }

    /// The next line, or `None` once the output ends; panics if it stalls.
    fn next(&mut self) -> Option<String> {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!("the example stalled; so far: {:#?}", self.seen)
            }
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Reads to the end of the output; returns every line and the exit status.
    fn finish(mut self) -> (Vec<String>, i32) {
        while self.next().is_some() {}
        let status = self.child.wait().unwrap();
        (self.seen, status.code().expect("exited, not killed"))
    }
}

fn position(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("`{line}` not in {lines:#?}"))
}

#[test]
fn sigterm_closes_the_producer_only_after_every_job_published() {
    let service = Service::start(&[]);
    service.signal(Signal::SIGTERM);
    let (lines, status) = service.finish();

    assert_eq!(status, 0, "{lines:#?}");
    let closed = position(&lines, "producer closed after 3 messages");
    for job in 0..3 {
        assert!(position(&lines, &format!("job {job} published order-{job}")) < closed);
    }
    assert!(
        position(&lines, "hook shutdown announce ok") < position(&lines, "job 0 published order-0")
    );
    assert!(position(&lines, "hook exit flush_metrics ok") < closed);
    assert!(closed < position(&lines, "hook exit close_producer ok"));
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=stop exit_code=0 failed_jobs=0"
    );
}

#[test]
fn sigusr2_runs_the_same_hooks_and_exits_with_status_4() {
    let service = Service::start(&["--job-ms", "50"]);
    service.signal(Signal::SIGUSR2);
    let (lines, status) = service.finish();

    assert_eq!(status, 4, "{lines:#?}");
    assert!(lines.contains(&"shutting down (restart): jobs may still be running".to_owned()));
    assert!(lines.contains(&"producer closed after 3 messages".to_owned()));
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=restart exit_code=4 failed_jobs=0"
    );
}

#[test]
fn closing_the_producer_in_shutdown_fails_the_jobs_still_running() {
    let service = Service::start(&[
        "--close-in-shutdown",
        "--stop-after-ms",
        "0",
        "--job-ms",
        "50",
    ]);
    let (lines, status) = service.finish();

    assert_eq!(status, 0, "{lines:#?}");
    let closed = position(&lines, "producer closed in shutdown after 0 messages");
    for job in 0..3 {
        assert!(closed < position(&lines, &format!("job {job} failed: producer closed")));
    }
    assert!(lines.contains(&"producer was already closed".to_owned()));
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=stop exit_code=0 failed_jobs=3"
    );
}
