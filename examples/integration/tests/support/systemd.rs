//! A real systemd for the tests: `scripts/systemd-sandbox` driven from Rust, the shipped unit
//! installed with a drop-in, and line followers for its journal and for the service's stdout.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::PATIENCE;

/// The sandbox script.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/systemd-sandbox")
}

/// Runs the sandbox script with `args`.
pub(crate) fn sandbox_script(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(script());
    command.args(args).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .output()
        .unwrap_or_else(|error| panic!("could not run {}: {error}", script().display()))
}

/// Why this machine cannot run a sandbox (`scripts/systemd-sandbox check` says), or `None`.
pub(crate) fn unsupported() -> Option<String> {
    let check = sandbox_script(&["check"], &[]);
    match check.status.code() {
        Some(0) => None,
        Some(3) => Some(String::from_utf8_lossy(&check.stdout).trim().to_owned()),
        _ => panic!("`systemd-sandbox check` failed: {check:?}"),
    }
}

/// Says loudly that `test` did not run and why: straight to the process's stderr, which the
/// test harness does not capture (`eprintln!` would be hidden when the test passes).
pub(crate) fn skip(test: &str, why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: {why} ***\n*** (tests/systemd.rs needs a real systemd, issue 13) ***\n"
    );
}

/// A running sandbox; stopped (and its cgroups removed) on drop.
pub(crate) struct Sandbox {
    pub(crate) name: String,
    units: PathBuf,
}

impl Sandbox {
    /// Starts a sandbox for `test`, or says why it cannot and returns `None`.
    pub(crate) fn start(test: &str) -> Option<Sandbox> {
        if let Some(why) = unsupported() {
            skip(test, &why);
            return None;
        }
        let name = format!("lh-{test}-{}", std::process::id());
        let started = Instant::now();
        let output = sandbox_script(&["start", &name], &[]);
        assert!(
            output.status.success(),
            "the sandbox did not start: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let units = stdout
            .split_whitespace()
            .find_map(|field| field.strip_prefix("units="))
            .unwrap_or_else(|| panic!("no units= in {stdout:?}"))
            .into();
        eprintln!("sandbox {name} running after {:?}", started.elapsed());
        Some(Sandbox { name, units })
    }

    /// A directory for the test's files, removed with the sandbox.
    pub(crate) fn dir(&self) -> &Path {
        self.units.parent().unwrap()
    }

    /// Runs `args` inside the sandbox's namespaces.
    pub(crate) fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", &self.name];
        all.extend_from_slice(args);
        sandbox_script(&all, &[])
    }

    /// `systemctl args` inside the sandbox; panics with its output if it fails.
    pub(crate) fn systemctl(&self, args: &[&str]) -> String {
        let output = self.systemctl_status(args);
        assert!(
            output.status.success(),
            "systemctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `systemctl args` inside the sandbox, whatever its status.
    pub(crate) fn systemctl_status(&self, args: &[&str]) -> Output {
        let mut all = vec!["systemctl"];
        all.extend_from_slice(args);
        self.exec(&all)
    }

    /// The unit's properties, `systemctl show -p ...`.
    pub(crate) fn show(&self, unit: &str, properties: &[&str]) -> HashMap<String, String> {
        let mut args = vec!["show", unit];
        for property in properties {
            args.extend(["-p", property]);
        }
        self.systemctl(&args)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    /// One property of the unit.
    pub(crate) fn property(&self, unit: &str, property: &str) -> String {
        self.show(unit, &[property])
            .remove(property)
            .unwrap_or_default()
    }

    /// Everything the journal holds about `unit` (systemd's lines and the service's log).
    pub(crate) fn journal(&self, unit: &str) -> String {
        let output = self.exec(&["journalctl", "--no-pager", "-o", "cat", "-u", unit]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Follows the journal of `unit` from its start, line by line.
    pub(crate) fn follow_journal(&self, unit: &str) -> Lines {
        let mut command = Command::new(script());
        command.args([
            "exec",
            &self.name,
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-f",
            "-n",
            "all",
            "-u",
            unit,
        ]);
        Lines::spawn(command, &format!("journal of {unit}"))
    }

    /// Installs `unit` with `body` and a drop-in `test.conf` holding `dropin`, then reloads.
    pub(crate) fn install(&self, unit: &str, body: &str, dropin: &str) {
        std::fs::write(self.units.join(unit), body).unwrap();
        let dir = self.units.join(format!("{unit}.d"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("test.conf"), dropin).unwrap();
        self.systemctl(&["daemon-reload"]);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let all = self.exec(&["journalctl", "--no-pager", "-b", "-n", "200"]);
            eprintln!(
                "sandbox {} journal (last 200 lines):\n{}",
                self.name,
                String::from_utf8_lossy(&all.stdout)
            );
        }
        let output = sandbox_script(&["stop", &self.name], &[]);
        if !output.status.success() {
            eprintln!("stopping sandbox {} failed: {output:?}", self.name);
        }
    }
}

/// The shipped unit, `deploy/systemd/jobs_to_kafka.service`.
pub(crate) fn shipped_unit() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd/jobs_to_kafka.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A drop-in for the shipped unit: `DefaultDependencies=no` (the sandbox boots no basic.target),
/// `ExecStart` running `exec` with `args`, stdout appended to `stdout`, the log to the journal,
/// and `extra` lines (`[Section]` headers allowed) after.
///
/// After each run, an `ExecStopPost=` appends systemd's own view of how it ended to `stdout`:
/// `stop-post result=success code=exited status=4` (`$SERVICE_RESULT`, `$EXIT_CODE`,
/// `$EXIT_STATUS`; systemd 252 logs a successful exit, 4 included, at debug level only).
pub(crate) fn dropin(exec: &Path, args: &[&str], stdout: &Path, extra: &str) -> String {
    format!(
        "[Unit]\nDefaultDependencies=no\n\n[Service]\nExecStart=\nExecStart={} {}\n\
         StandardOutput=append:{}\nStandardError=journal\n\
         ExecStopPost=/bin/sh -c 'echo stop-post result=$$SERVICE_RESULT code=$$EXIT_CODE \
         status=$$EXIT_STATUS'\n{extra}\n",
        exec.display(),
        args.join(" "),
        stdout.display()
    )
}

/// The lines a process prints, read as they come on a thread; the process is killed on drop.
pub(crate) struct Lines {
    what: String,
    child: Child,
    rx: mpsc::Receiver<String>,
    pub(crate) seen: Vec<String>,
}

impl Lines {
    /// Follows `command`'s stdout.
    pub(crate) fn spawn(mut command: Command, what: &str) -> Lines {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("could not follow the {what}: {error}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            what: what.to_owned(),
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// Follows the file at `path` from its first line (created empty if missing: `tail -F`
    /// watches an existing file with inotify, a missing one by polling once a second).
    pub(crate) fn follow_file(path: &Path) -> Lines {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let mut command = Command::new("tail");
        command.args(["-n", "+1", "-F"]).arg(path);
        Lines::spawn(command, &path.display().to_string())
    }

    /// Reads until a line matches and returns it; panics if none comes within `PATIENCE`.
    pub(crate) fn expect(&mut self, matches: impl Fn(&str) -> bool) -> String {
        self.expect_within(PATIENCE, matches)
    }

    /// Reads until a line matches and returns it; panics if none comes within `wait`.
    pub(crate) fn expect_within(
        &mut self,
        wait: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(error) => panic!(
                    "no expected line in the {} within {wait:?} ({error}); saw:\n{}",
                    self.what,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Reads for `window` and returns the first matching line, if any (to show that something
    /// does not happen during a period).
    pub(crate) fn first_within(
        &mut self,
        window: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return Some(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the {} ended early; saw:\n{}",
                        self.what,
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Everything read so far, as one string.
    pub(crate) fn text(&mut self) -> String {
        self.seen.extend(self.rx.try_iter());
        self.seen.join("\n")
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
