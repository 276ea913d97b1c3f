//! Process tests: run an example binary of the package under test, read its stdout and stderr
//! line by line as they come, send it real signals, and collect how it exits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any single expected line may take before the test fails (a generous bound, not a
/// synchronization: every wait ends as soon as the line arrives).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The binary of `example`, built once per test run (a no-op when `cargo test --all-targets`
/// already built it; a narrower `cargo test --test x` would otherwise run a stale one).
///
/// The example may belong to any package of the workspace of the tests that are running
/// (found from `CARGO_MANIFEST_DIR`, which cargo sets for every test process).
pub fn example_binary(example: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    // A test that failed while holding the lock leaves the list as good as it was.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !built.iter().any(|e| e == example) {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .expect("CARGO_MANIFEST_DIR: run the tests with cargo");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--workspace",
                "--example",
                example,
                "--manifest-path",
            ])
            .arg(Path::new(&manifest).join("Cargo.toml"))
            .status()
            .unwrap();
        assert!(status.success(), "building the example {example} failed");
        built.push(example.to_owned());
    }
    // target/debug/deps/<test>-<hash> -> target/debug/examples/<example>
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("examples")
    })
    .join(example)
}

/// A running example whose stdout and stderr are read line by line as they come (so neither pipe
/// ever fills); killed on drop if still running, with its output shown if the test failed.
pub struct Service {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    log: mpsc::Receiver<String>,
    log_seen: Vec<String>,
}

/// Sends every line `from` produces to a channel, on its own thread.
fn read_lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Service {
    /// Starts `example` with `args` and `env`, and waits for its `ready pid=` line.
    pub fn start(example: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
        let mut service = Service::spawn(example, args, env);
        service.expect(|l| l.starts_with("ready pid="));
        service
    }

    /// Starts `example` with `args` and `env` without waiting for anything.
    pub fn spawn(example: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
        let mut command = Command::new(example_binary(example));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "lifecycle_hooks=info");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let lines = read_lines(child.stdout.take().unwrap());
        let log = read_lines(child.stderr.take().unwrap());
        Service {
            child,
            lines,
            seen: Vec::new(),
            log,
            log_seen: Vec::new(),
        }
    }

    /// Reads stdout until a line matches; panics if the output ends or stalls first.
    pub fn expect(&mut self, matches: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(error) => panic!("no expected line ({error}); saw {:#?}", self.seen),
            }
        }
    }

    /// The next stdout line if one comes within `wait` (to check that nothing more happens).
    pub fn next_within(&mut self, wait: Duration) -> Result<String, mpsc::RecvTimeoutError> {
        let line = self.lines.recv_timeout(wait)?;
        self.seen.push(line.clone());
        Ok(line)
    }

    /// Reads stderr (the log) until a line matches; panics if it ends or stalls first.
    pub fn expect_log(&mut self, matches: impl Fn(&str) -> bool) -> String {
        loop {
            match self.log.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.log_seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(error) => panic!("no expected log line ({error}); saw {:#?}", self.log_seen),
            }
        }
    }

    /// Everything logged on stderr so far.
    pub fn log(&mut self) -> String {
        self.log_seen.extend(self.log.try_iter());
        self.log_seen.join("\n")
    }

    /// Sends a real signal to the process.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the rest of stdout (it ends when the process exits) and the exit status; panics if
    /// the output stalls.
    pub fn finish(mut self) -> (Vec<String>, ExitStatus) {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the service did not exit; saw {:#?}", self.seen)
                }
            }
        }
        let status = self.child.wait().unwrap();
        (std::mem::take(&mut self.seen), status)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("service stdout: {:#?}", self.seen);
            eprintln!("service log:\n{}", self.log());
        }
        // Only when a test failed half-way: never leave the service running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where `line` is in `lines`; panics naming it if absent.
pub fn position(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("`{line}` missing from {lines:#?}"))
}

/// Where the last line starting with `prefix` is; panics if none.
pub fn last_position(lines: &[String], prefix: &str) -> usize {
    lines
        .iter()
        .rposition(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in {lines:#?}"))
}

/// Every phase of a graceful stop, in order, as the examples print them (`phase <name>`).
pub const ALL_PHASES: [&str; 7] = [
    "startup",
    "running",
    "stop_intake",
    "drain",
    "shutdown",
    "wait",
    "exit",
];

/// The phases an example printed (`phase <name>` lines), in order.
pub fn phases(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("phase "))
        .collect()
}
