//! The systemd notify protocol: one datagram per state change to `$NOTIFY_SOCKET`.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Sends state lines (`READY=1`, `STOPPING=1`, `STATUS=...`) to the service manager.
///
/// # Invariants
///
/// 1. Sending never blocks: the socket is non-blocking.
/// 2. A state change (`READY=1`, `STOPPING=1`, `RELOADING=1`) is never dropped: if the socket's
///    queue is full it waits in `pending`, in order, and goes out before any later message (a
///    retry task flushes it when nothing else is sent). Transient lines (`STATUS=`, `WATCHDOG=1`,
///    `EXTEND_TIMEOUT_USEC=`) are dropped on a full queue: the next one replaces them.
/// 3. A failing socket is warned about once, then logged at debug level.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when the watchdog is ours.
    pub(crate) watchdog: Option<Duration>,
    /// State changes not yet delivered, oldest first. Locked only to send; never across an await.
    pending: Mutex<Vec<String>>,
    /// Whether a retry task is flushing `pending` (SeqCst: set and cleared by that task alone).
    retrying: AtomicBool,
    /// Whether a send failure was already warned about (Relaxed: a log throttle only).
    warned: AtomicBool,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, or `None` when it is unset or empty.
    ///
    /// The watchdog is enabled when `$WATCHDOG_USEC` is set and `$WATCHDOG_PID` is unset or
    /// names this process (systemd sets it for the main process only).
    pub(crate) fn from_env() -> io::Result<Option<Notifier>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let mut notifier = Notifier::connect(&path.to_string_lossy())?;
        let ours = std::env::var("WATCHDOG_PID")
            .map_or(true, |pid| pid.trim() == std::process::id().to_string());
        notifier.watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0 && ours)
            .map(|usec| Duration::from_micros(usec / 2));
        Ok(Some(notifier))
    }

    /// A notifier for a socket path; a leading `@` names an abstract socket, whose address is
    /// the name's bytes only, not a NUL-padded `sockaddr_un`.
    pub(crate) fn connect(path: &str) -> io::Result<Notifier> {
        let addr = match path.strip_prefix('@') {
            Some(name) => abstract_addr(name)?,
            None => SocketAddr::from_pathname(path)?,
        };
        let socket = UnixDatagram::unbound()?;
        // Never block the runtime on a service manager that is slow to read: a full queue drops
        // the message (logged), the next state replaces it anyway.
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            socket,
            addr,
            watchdog: None,
            pending: Mutex::new(Vec::new()),
            retrying: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        })
    }

    /// Removes the descriptors stored under `name` from systemd's fd store.
    pub(crate) fn fdstore_remove(self: &Arc<Self>, name: &str) {
        self.send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"));
    }

    /// Sends one datagram; errors are logged, never fatal (systemd may be gone). A state change
    /// that meets a full queue is kept and sent later, in order.
    pub(crate) fn send(self: &Arc<Self>, state: &str) {
        let keep = is_state_change(state);
        let queued = {
            let mut pending = self.pending.lock();
            let blocked = !self.flush_locked(&mut pending);
            if blocked {
                if keep {
                    pending.push(state.to_owned());
                }
                true
            } else {
                match self.socket.send_to_addr(state.as_bytes(), &self.addr) {
                    Ok(_) => false,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        if keep {
                            pending.push(state.to_owned());
                        }
                        true
                    }
                    Err(error) => {
                        self.failed(&error, state);
                        false
                    }
                }
            }
        };
        if queued && keep {
            self.retry_later();
        }
    }

    /// Sends what is pending, in order; false if the queue is still full.
    fn flush_locked(&self, pending: &mut Vec<String>) -> bool {
        while let Some(state) = pending.first() {
            match self.socket.send_to_addr(state.as_bytes(), &self.addr) {
                Ok(_) => {
                    pending.remove(0);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return false,
                Err(error) => {
                    self.failed(&error, state);
                    pending.remove(0);
                }
            }
        }
        true
    }

    fn failed(&self, error: &io::Error, state: &str) {
        if self.warned.swap(true, Ordering::Relaxed) {
            tracing::debug!(target: "lifecycle_hooks", %error, state, "systemd notify failed");
        } else {
            tracing::warn!(target: "lifecycle_hooks", %error, state, "systemd notify failed (further failures are logged at debug level)");
        }
    }

    /// Flushes `pending` from a task, backing off from 5 ms to 1 s, until it is empty.
    fn retry_later(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.retrying.swap(true, Ordering::SeqCst) {
            return;
        }
        let notifier = Arc::clone(self);
        runtime.spawn(async move {
            let mut wait = Duration::from_millis(5);
            loop {
                tokio::time::sleep(wait).await;
                let done = {
                    let mut pending = notifier.pending.lock();
                    notifier.flush_locked(&mut pending)
                };
                if done {
                    notifier.retrying.store(false, Ordering::SeqCst);
                    // A state queued between the flush and the store would have found
                    // `retrying` set: look once more.
                    if notifier.pending.lock().is_empty()
                        || notifier.retrying.swap(true, Ordering::SeqCst)
                    {
                        return;
                    }
                }
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        });
    }

    /// The service manager's socket address.
    pub(crate) fn addr(&self) -> &SocketAddr {
        &self.addr
    }

    /// Asks systemd to wait `time` longer before it kills a stop in progress.
    pub(crate) fn extend_timeout(self: &Arc<Self>, time: Duration) {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", time.as_micros()));
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` in the same datagram, as `Type=notify-reload` needs.
    pub(crate) fn reloading(self: &Arc<Self>) {
        match monotonic_usec() {
            Ok(now) => self.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}")),
            Err(error) => {
                tracing::warn!(target: "lifecycle_hooks", %error, "no monotonic clock; RELOADING=1 alone");
                self.send("RELOADING=1");
            }
        }
    }
}

/// Whether `state` is a state change that must not be lost (as opposed to a transient line).
fn is_state_change(state: &str) -> bool {
    state.lines().any(|line| {
        matches!(line, "READY=1" | "STOPPING=1" | "RELOADING=1") || line.starts_with("FDSTORE")
    })
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` against.
fn monotonic_usec() -> nix::Result<u128> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    Ok(Duration::from(now).as_micros())
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &str) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver() -> (UnixDatagram, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "lh-notify-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        (UnixDatagram::bind(&path).unwrap(), path)
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn path_socket_receives_each_state() {
        let (receiver, path) = receiver();
        let notifier = Arc::new(Notifier::connect(path.to_str().unwrap()).unwrap());
        notifier.send("READY=1");
        notifier.send("STOPPING=1");
        notifier.extend_timeout(Duration::from_millis(1500));
        assert_eq!(recv(&receiver), "READY=1");
        assert_eq!(recv(&receiver), "STOPPING=1");
        assert_eq!(recv(&receiver), "EXTEND_TIMEOUT_USEC=1500000");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn reloading_carries_the_monotonic_clock_in_the_same_datagram() {
        let (receiver, path) = receiver();
        let notifier = Arc::new(Notifier::connect(path.to_str().unwrap()).unwrap());
        let before = monotonic_usec().unwrap();
        notifier.reloading();
        let message = recv(&receiver);
        let after = monotonic_usec().unwrap();
        let (first, second) = message.split_once('\n').expect("two lines, one datagram");
        assert_eq!(first, "RELOADING=1");
        let usec: u128 = second
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            before <= usec && usec <= after,
            "{before} <= {usec} <= {after}"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_receives() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("lifecycle-hooks-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Arc::new(Notifier::connect(&format!("@{name}")).unwrap());
        notifier.send("READY=1");
        assert_eq!(recv(&receiver), "READY=1");
    }

    /// A receiver whose queue is full: the state changes wait, in order, and arrive once it is
    /// read; transient lines sent meanwhile are dropped.
    #[test]
    fn a_full_queue_keeps_state_changes_in_order_and_drops_transient_lines() {
        let (receiver, path) = receiver();
        let notifier = Arc::new(Notifier::connect(path.to_str().unwrap()).unwrap());
        // Fill the receiver's queue (a datagram socket's queue holds a bounded number).
        let mut filler = 0;
        while notifier
            .socket
            .send_to_addr(b"STATUS=filler", &notifier.addr)
            .is_ok()
        {
            filler += 1;
            assert!(filler < 1_000_000, "the queue never filled");
        }
        notifier.send("READY=1");
        notifier.send("WATCHDOG=1");
        notifier.send("STOPPING=1");
        assert_eq!(*notifier.pending.lock(), ["READY=1", "STOPPING=1"]);
        for _ in 0..filler {
            assert_eq!(recv(&receiver), "STATUS=filler");
        }
        // The next send flushes what waited, first.
        notifier.send("STATUS=after");
        assert_eq!(recv(&receiver), "READY=1");
        assert_eq!(recv(&receiver), "STOPPING=1");
        assert_eq!(recv(&receiver), "STATUS=after");
        assert!(notifier.pending.lock().is_empty());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// With nothing else sent, the retry task delivers a queued `READY=1` once there is room.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queued_state_change_is_retried_without_another_send() {
        let (receiver, path) = receiver();
        let notifier = Arc::new(Notifier::connect(path.to_str().unwrap()).unwrap());
        let mut filler = 0;
        while notifier
            .socket
            .send_to_addr(b"STATUS=filler", &notifier.addr)
            .is_ok()
        {
            filler += 1;
        }
        notifier.send("READY=1");
        let receiver = tokio::task::spawn_blocking(move || {
            for _ in 0..filler {
                assert_eq!(recv(&receiver), "STATUS=filler");
            }
            recv(&receiver) // blocks until the retry task delivers
        });
        assert_eq!(receiver.await.unwrap(), "READY=1");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
