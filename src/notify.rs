//! The systemd notify protocol: one datagram per state change to `$NOTIFY_SOCKET`.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends state lines (`READY=1`, `STOPPING=1`, `STATUS=...`) to the service manager.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when the watchdog is ours.
    pub(crate) watchdog: Option<Duration>,
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
        })
    }

    /// Sends one datagram; errors are logged, never fatal (systemd may be gone).
    pub(crate) fn send(&self, state: &str) {
        if let Err(error) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::warn!(target: "lifecycle_hooks", %error, state, "systemd notify failed");
        }
    }

    /// Asks systemd to wait `time` longer before it kills a stop in progress.
    pub(crate) fn extend_timeout(&self, time: Duration) {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", time.as_micros()));
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` in the same datagram, as `Type=notify-reload` needs.
    pub(crate) fn reloading(&self) {
        match monotonic_usec() {
            Ok(now) => self.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}")),
            Err(error) => {
                tracing::warn!(target: "lifecycle_hooks", %error, "no monotonic clock; RELOADING=1 alone");
                self.send("RELOADING=1");
            }
        }
    }
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
        let notifier = Notifier::connect(path.to_str().unwrap()).unwrap();
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
        let notifier = Notifier::connect(path.to_str().unwrap()).unwrap();
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
        let notifier = Notifier::connect(&format!("@{name}")).unwrap();
        notifier.send("READY=1");
        assert_eq!(recv(&receiver), "READY=1");
    }
}
