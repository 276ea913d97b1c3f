//! Process tests of the fd store: the test plays systemd's part (a notify socket that receives
//! `FDSTORE=1` with the descriptors attached, and a start that passes them back with
//! `LISTEN_FDS`), around the real `05_fd_store` binary and real signals.
//!
//! One test per file: it keeps received descriptors inheritable on purpose (to pass them on, as
//! systemd does), so no other test may spawn processes beside it.

mod support;

use std::io::{BufRead, BufReader, IoSliceMut, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::unistd::Pid;

const PATIENCE: Duration = Duration::from_secs(20);

/// A stand-in for systemd's notify socket that keeps the descriptors sent with `FDSTORE=1`.
struct Manager {
    socket: UnixDatagram,
    dir: std::path::PathBuf,
}

impl Manager {
    fn new() -> Manager {
        // One per test: the tests of this file run at once in one process.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lh-fdstore-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        Manager { socket, dir }
    }

    fn path(&self) -> String {
        self.dir.join("notify.sock").to_str().unwrap().to_owned()
    }

    /// The next message and the descriptors that came with it (inheritable: no
    /// `MSG_CMSG_CLOEXEC`, so they can be passed to the next process, as systemd does).
    fn next(&self) -> (String, Vec<OwnedFd>) {
        let mut buf = [0u8; 1024];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let msg = recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("a notify message");
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for fd in received {
                    // The kernel just created this descriptor for us; nothing else owns it.
                    fds.push(owned(fd));
                }
            }
        }
        let n = msg.bytes;
        (String::from_utf8_lossy(&buf[..n]).into_owned(), fds)
    }

    /// Reads messages until one satisfies `wanted`, returning every message read.
    fn until(&self, wanted: impl Fn(&str) -> bool) -> Vec<(String, Vec<OwnedFd>)> {
        let mut seen = Vec::new();
        loop {
            let (message, fds) = self.next();
            let done = wanted(&message);
            seen.push((message, fds));
            if done {
                return seen;
            }
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Takes ownership of a descriptor `recvmsg` just received.
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was created by the kernel for this process by the `recvmsg` that returned it
    // (SCM_RIGHTS) and is owned by nothing else yet.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A running `05_fd_store` with its stdout read line by line.
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Run {
    fn start(mut command: Command) -> Run {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "lifecycle_hooks=info");
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Run {
            child,
            lines,
            seen: Vec::new(),
            log,
        }
    }

    fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|e| panic!("no `{prefix}` line ({e}); saw {:#?}", self.seen));
            self.seen.push(line.clone());
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait(mut self) -> (Vec<String>, std::process::ExitStatus) {
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            self.seen.push(line);
        }
        let status = self.child.wait().unwrap();
        (std::mem::take(&mut self.seen), status)
    }

    /// Everything the process logged on stderr so far.
    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("stdout: {:#?}\nlog:\n{}", self.seen, self.log());
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn greeting(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut line = String::new();
    stream.read_to_string(&mut line).unwrap();
    line.trim().to_owned()
}

/// Starts the example as systemd would after a restart: the stored descriptors at 3, 4, ...
/// with `LISTEN_PID` (the pid bash `exec`s the example in), `LISTEN_FDS` and `LISTEN_FDNAMES`.
fn start_with_fds(binary: &std::path::Path, notify: &str, fds: &[(&str, RawFd)]) -> Run {
    let mut script = String::new();
    // First out of the way (a received number may be 3 or 4 itself), then into place.
    for (i, (_, fd)) in fds.iter().enumerate() {
        script.push_str(&format!("exec {}<&{fd}; ", 20 + i));
    }
    for i in 0..fds.len() {
        script.push_str(&format!("exec {}<&{} {}<&-; ", 3 + i, 20 + i, 20 + i));
    }
    let names: Vec<&str> = fds.iter().map(|(name, _)| *name).collect();
    script.push_str(&format!(
        "LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES={} exec \"$0\"",
        fds.len(),
        names.join(":")
    ));
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .arg(binary)
        .env("NOTIFY_SOCKET", notify);
    Run::start(command)
}

/// The exit-4 restart through the store: the old process stores its listener and a state blob;
/// a client that connects while no process runs is queued by the kernel and answered by the next
/// process, which inherits the listener (validated) and restores the state; a final stop removes
/// what it stored, a restart removes nothing.
#[test]
fn a_restart_hands_the_listener_and_the_state_to_the_next_process_and_no_connection_is_refused() {
    let binary = support::example_binary("05_fd_store");
    let manager = Manager::new();

    // First process: binds anew and stores the listener.
    let mut command = Command::new(&binary);
    command.env("NOTIFY_SOCKET", manager.path());
    let mut first = Run::start(command);
    assert_eq!(first.expect("restored state="), "none");
    let addr: SocketAddr = first.expect("listening addr=").parse().unwrap();
    first.expect("ready pid=");
    let stored = manager.until(|m| m.contains("FDSTORE=1") && m.contains("FDNAME=http"));
    let (message, mut fds) = stored.into_iter().last().unwrap();
    assert_eq!(message, "FDSTORE=1\nFDNAME=http");
    assert_eq!(fds.len(), 1);
    let http = fds.remove(0);
    let first_pid = first.child.id();
    assert_eq!(greeting(addr), format!("hello from pid={first_pid}"));

    // USR2: a restart; its exit hook stores the state blob; nothing is removed.
    first.signal(Signal::SIGUSR2);
    let seen = manager.until(|m| m.contains("FDNAME=state-greeting"));
    assert!(
        !seen.iter().any(|(m, _)| m.contains("FDSTOREREMOVE")),
        "{:?}",
        seen.iter().map(|(m, _)| m).collect::<Vec<_>>()
    );
    let (_, mut state_fds) = seen.into_iter().last().unwrap();
    let state = state_fds.remove(0);
    let (lines, status) = first.wait();
    assert_eq!(status.code(), Some(4), "{lines:?}");

    // No process runs now: the stored socket still accepts into its backlog.
    let queued = std::thread::spawn(move || greeting(addr));

    let mut second = start_with_fds(
        &binary,
        &manager.path(),
        &[
            ("http", http.as_raw_fd()),
            ("state-greeting", state.as_raw_fd()),
        ],
    );
    assert_eq!(
        second.expect("restored state="),
        format!("from pid={first_pid}")
    );
    assert_eq!(second.expect("listening addr="), addr.to_string());
    second.expect("ready pid=");
    let second_pid = second.child.id();
    assert_ne!(second_pid, first_pid);
    assert_eq!(
        queued.join().unwrap(),
        format!("hello from pid={second_pid}")
    );
    assert_eq!(greeting(addr), format!("hello from pid={second_pid}"));

    // A final stop removes what this process stored.
    second.signal(Signal::SIGTERM);
    let seen = manager.until(|m| m == "FDSTOREREMOVE=1\nFDNAME=http");
    assert!(!seen.is_empty());
    let (lines, status) = second.wait();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == "summary reason=stop exit_code=0 served=2"),
        "{lines:?}"
    );

    // A descriptor of the wrong kind under the listener's name is refused with a clear error.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_fd = OwnedFd::from(udp);
    // std opens sockets close-on-exec; systemd's passed descriptors are not.
    nix::fcntl::fcntl(
        udp_fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let mut wrong = start_with_fds(&binary, &manager.path(), &[("http", udp_fd.as_raw_fd())]);
    wrong.expect("restored state=");
    let log = {
        let log = std::sync::Arc::clone(&wrong.log);
        let (lines, status) = wrong.wait();
        assert_eq!(status.code(), Some(1), "{lines:?}");
        assert!(status.signal().is_none());
        log
    };
    let log = log.lock().unwrap().join("\n");
    assert!(
        log.contains("inherited file descriptor 3 named `http` is not usable as a listening tcp 127.0.0.1:0 socket"),
        "{log}"
    );
    // And it leaves the store: kept, every start after a restart would fail on it again.
    let seen = manager.until(|m| m == "FDSTOREREMOVE=1\nFDNAME=http");
    assert!(
        seen.iter().all(|(m, _)| !m.starts_with("READY=1")),
        "{seen:?}"
    );
}

/// `store_state` twice under one name: the first blob leaves the store before the second goes
/// in, so the next process finds one blob, the last (before, systemd kept both and which one
/// `restored_state` got depended on the order it passed them).
#[tokio::test]
async fn storing_a_state_twice_keeps_only_the_last() {
    let manager = Manager::new();
    let lifecycle = lifecycle_hooks::testing::builder()
        .notify_socket(manager.path(), None)
        .build()
        .unwrap();
    let store = lifecycle.handle().fd_store();
    store.store_state("cursor", b"first").unwrap();
    let (message, fds) = manager.next();
    assert_eq!(
        (message.as_str(), fds.len()),
        ("FDSTORE=1\nFDNAME=state-cursor", 1)
    );
    store.store_state("cursor", b"second").unwrap();
    assert_eq!(manager.next().0, "FDSTOREREMOVE=1\nFDNAME=state-cursor");
    let (message, fds) = manager.next();
    assert_eq!(
        (message.as_str(), fds.len()),
        ("FDSTORE=1\nFDNAME=state-cursor", 1)
    );
}
