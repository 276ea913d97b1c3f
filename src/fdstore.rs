//! Named listeners and small state blobs that survive a restart in systemd's file-descriptor
//! store. See [`FdStore`].
//!
//! # Invariants
//!
//! 1. Inherited descriptors are read from the environment once per process, and only when
//!    `LISTEN_PID` names this process; each is owned once (the first claim takes it) and gets
//!    `CLOEXEC` at once, so no child inherits it.
//! 2. A listening socket is never `shutdown()`: dropping this process's descriptor leaves
//!    systemd's stored copy open, so the kernel keeps queuing connections for the next process.
//! 3. On a restart nothing is removed from the store; on any other ending every name this
//!    process stored is removed (`FDSTOREREMOVE=1`), so nothing stale reaches an unrelated start.
//! 4. Inherited descriptors nobody claimed by the time the service is ready are closed, and
//!    removed from the store, each named in a warning.
//! 5. Without a notify socket (no systemd) a listener is simply bound anew and nothing is stored.
//! 6. A claim also closes the other inherited descriptors of its name that are the same open
//!    socket (a `.socket` unit's descriptor and the stored copy of it, after a restart), without
//!    removing anything from the store.

use std::ffi::CString;
use std::fs::File;
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use nix::fcntl::{FcntlArg, FdFlag, SealFlag, fcntl};
use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockType, SockaddrLike, SockaddrStorage, UnixAddr,
    getsockname, getsockopt, sendmsg, sockopt,
};
use parking_lot::Mutex;

use crate::errors::ListenError;
use crate::notify::Notifier;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The prefix of a state blob's name in the store, beside listener names.
const STATE_PREFIX: &str = "state-";

/// Where a listener listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address; port 0 accepts whatever port an inherited socket has (or binds any port).
    Tcp(SocketAddr),
    /// A Unix-domain stream socket at this path.
    Unix(PathBuf),
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr::Tcp(addr)
    }
}

impl From<PathBuf> for ListenAddr {
    fn from(path: PathBuf) -> Self {
        ListenAddr::Unix(path)
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "tcp {addr}"),
            ListenAddr::Unix(path) => write!(f, "unix {}", path.display()),
        }
    }
}

/// A listener from [`FdStore::listener`]: non-blocking, close-on-exec, ready for tokio
/// (`tokio::net::TcpListener::from_std`) or any other runtime.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-domain listener.
    Unix(UnixListener),
}

impl Listener {
    /// The TCP listener, as tokio's.
    ///
    /// # Errors
    ///
    /// If this is a Unix-domain listener, or tokio refuses the socket.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime.
    pub fn into_tokio_tcp(self) -> std::io::Result<tokio::net::TcpListener> {
        match self {
            Listener::Tcp(listener) => tokio::net::TcpListener::from_std(listener),
            Listener::Unix(_) => Err(std::io::Error::other("a Unix-domain listener, not TCP")),
        }
    }

    /// The Unix-domain listener, as tokio's.
    ///
    /// # Errors
    ///
    /// If this is a TCP listener, or tokio refuses the socket.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime.
    pub fn into_tokio_unix(self) -> std::io::Result<tokio::net::UnixListener> {
        match self {
            Listener::Unix(listener) => tokio::net::UnixListener::from_std(listener),
            Listener::Tcp(_) => Err(std::io::Error::other("a TCP listener, not Unix-domain")),
        }
    }

    /// The descriptor's number in this process.
    pub fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(listener) => listener.as_raw_fd(),
            Listener::Unix(listener) => listener.as_raw_fd(),
        }
    }
}

/// One descriptor passed in by the service manager.
#[derive(Debug)]
struct Inherited {
    name: String,
    fd: RawFd,
    /// `None` once claimed (or closed as unclaimed).
    owned: Option<OwnedFd>,
}

/// Every inherited descriptor of this process; locked only to claim or release one.
static INHERITED: OnceLock<Mutex<Vec<Inherited>>> = OnceLock::new();

fn inherited() -> &'static Mutex<Vec<Inherited>> {
    INHERITED.get_or_init(|| {
        let var = |name| std::env::var(name).ok();
        let parsed = parse_listen_env(
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
            std::process::id(),
        );
        Mutex::new(parsed.into_iter().filter_map(adopt).collect())
    })
}

/// The descriptors and names that `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` pass to the
/// process `our_pid`: none if the pid is another's (a child inherited the variables) or the
/// count is not a number. Names missing from `LISTEN_FDNAMES` are `unknown`, as systemd says.
pub(crate) fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Vec<(RawFd, String)> {
    let for_us = pid
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| pid == our_pid);
    let Some(count) = fds
        .and_then(|n| n.trim().parse::<RawFd>().ok())
        .filter(|_| for_us)
    else {
        return Vec::new();
    };
    let mut names = names.unwrap_or("").split(':');
    (0..count.clamp(0, 4096))
        .map(|i| {
            let name = names.next().filter(|n| !n.is_empty()).unwrap_or("unknown");
            (LISTEN_FDS_START + i, name.to_owned())
        })
        .collect()
}

/// Takes ownership of an inherited descriptor, if it is open, and marks it close-on-exec.
fn adopt((fd, name): (RawFd, String)) -> Option<Inherited> {
    // Not open (a stale environment): nothing to own.
    fcntl(fd, FcntlArg::F_GETFD).ok()?;
    // SAFETY: `LISTEN_PID` names this process, so the service manager passed it descriptors
    // `LISTEN_FDS_START ..` `LISTEN_FDS_START + LISTEN_FDS`, and `fd` is one of them and open (the
    // `F_GETFD` above succeeded). Nothing else in this process owns them: they are adopted here,
    // once per process (under `INHERITED`'s `OnceLock`), and handed out at most once each.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(error) = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
        tracing::warn!(target: "lifecycle_hooks", fd, name, %error, "cannot set CLOEXEC on an inherited descriptor");
    }
    Some(Inherited {
        name,
        fd,
        owned: Some(owned),
    })
}

/// Takes the inherited descriptor named `name`, if there is one not yet claimed.
fn claim(name: &str) -> Option<(RawFd, OwnedFd)> {
    claim_from(&mut inherited().lock(), name)
}

/// Takes the first unclaimed descriptor named `name` from `inherited`, and closes the others of
/// that name that are the same open socket or file: a `.socket` unit's descriptor comes back
/// beside the copy this service stored after a restart, and only one is needed (the store
/// keeps its copy; storing the listener again adds none).
fn claim_from(inherited: &mut [Inherited], name: &str) -> Option<(RawFd, OwnedFd)> {
    let slot = inherited
        .iter_mut()
        .find(|i| i.name == name && i.owned.is_some())?;
    let (fd, owned) = (slot.fd, slot.owned.take()?);
    if let Some(same) = file_identity(&owned) {
        for other in inherited.iter_mut().filter(|i| i.name == name) {
            if other.owned.as_ref().and_then(file_identity) == Some(same) {
                tracing::debug!(target: "lifecycle_hooks", name, fd = other.fd, kept = fd, "closed a second descriptor of the same socket");
                other.owned = None;
            }
        }
    }
    Some((fd, owned))
}

/// The device and inode of the file behind `fd`.
fn file_identity(fd: &OwnedFd) -> Option<(u64, u64)> {
    let stat = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
    #[allow(clippy::unnecessary_cast)] // their widths differ between targets
    Some((stat.st_dev as u64, stat.st_ino as u64))
}

fn check_name(name: &str) -> Result<(), ListenError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii() && !c.is_ascii_control() && c != ':');
    if ok {
        Ok(())
    } else {
        Err(ListenError::BadName {
            name: name.to_owned(),
        })
    }
}

/// Names stored by this process, for removal on a final stop.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// Locked only to add or take the list.
    names: Mutex<Vec<String>>,
}

/// systemd's file-descriptor store as the lifecycle uses it: named listeners that survive the
/// exit-4 restart, and small state blobs that ride along. Without systemd, listeners are bound
/// anew and state is not kept.
///
/// The unit needs `FileDescriptorStoreMax=` (a few more than the descriptors stored) and
/// `NotifyAccess=main` (or `all`); without `FileDescriptorStoreMax=` systemd ignores `FDSTORE=1`
/// and every start binds anew.
///
/// ```
/// use std::net::SocketAddr;
/// use lifecycle_hooks::testing;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lifecycle = testing::builder().build()?;
/// let handle = lifecycle.handle();
/// let addr: SocketAddr = "127.0.0.1:0".parse()?;
/// // Inherited from systemd if it passed one named `http`; bound here otherwise.
/// let listener = handle.fd_store().listener("http", addr)?.into_tokio_tcp()?;
/// assert!(listener.local_addr()?.port() != 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FdStore {
    notifier: Option<Arc<Notifier>>,
    stored: Arc<Stored>,
}

impl FdStore {
    pub(crate) fn new(notifier: Option<Arc<Notifier>>, stored: Arc<Stored>) -> Self {
        FdStore { notifier, stored }
    }

    fn notifier(&self) -> Option<&Arc<Notifier>> {
        self.notifier.as_ref()
    }

    /// The listener named `name`: the descriptor of that name passed by systemd (socket
    /// activation or the fd store), validated against `addr`, or else a new one bound to `addr`.
    /// Under systemd it is then stored (`FDSTORE=1`, `FDNAME=name`), so the next process after a
    /// restart gets it back with the connections that queued meanwhile.
    ///
    /// # Errors
    ///
    /// [`ListenError::WrongSocket`] if the inherited descriptor is not a listening stream socket
    /// of the right family and address (naming the descriptor), [`ListenError::Bind`] if a new
    /// bind fails, [`ListenError::BadName`] for a name the store cannot carry.
    pub fn listener(
        &self,
        name: &str,
        addr: impl Into<ListenAddr>,
    ) -> Result<Listener, ListenError> {
        check_name(name)?;
        let addr = addr.into();
        let listener = match claim(name) {
            Some((fd, owned)) => {
                // Refused, it leaves the store too: left there, every start after a restart
                // would get it again and fail the same way until the unit is stopped by hand.
                let listener = validate(name, fd, owned, &addr).inspect_err(|_| {
                    if let Some(notifier) = self.notifier() {
                        notifier.fdstore_remove(name);
                    }
                })?;
                tracing::info!(target: "lifecycle_hooks", name, fd, %addr, "listener inherited from the service manager");
                listener
            }
            None => bind(name, &addr)?,
        };
        let io = |what, source| ListenError::Io {
            name: name.to_owned(),
            what,
            source,
        };
        match &listener {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
        .map_err(|e| io("set non-blocking", e))?;
        self.store(name, listener.fd());
        Ok(listener)
    }

    /// Keeps `bytes` (a few KiB: a process identity, a cursor) in the store under `name` as a
    /// sealed memory file, for [`restored_state`](Self::restored_state) in the next process
    /// after a restart. Call it from an exit hook. Without systemd it does nothing.
    ///
    /// # Errors
    ///
    /// [`ListenError::BadName`], or [`ListenError::Io`] if the memory file cannot be made.
    pub fn store_state(&self, name: &str, bytes: &[u8]) -> Result<(), ListenError> {
        let stored_name = format!("{STATE_PREFIX}{name}");
        check_name(&stored_name)?;
        if self.notifier().is_none() {
            return Ok(());
        }
        let io = |what, source: nix::Error| ListenError::Io {
            name: stored_name.clone(),
            what,
            source: source.into(),
        };
        let c_name = CString::new(stored_name.clone()).map_err(|_| ListenError::BadName {
            name: name.to_owned(),
        })?;
        let memfd = memfd_create(
            &c_name,
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .map_err(|e| io("memfd_create", e))?;
        let mut file = File::from(memfd);
        file.write_all(bytes).map_err(|source| ListenError::Io {
            name: stored_name.clone(),
            what: "write the state",
            source,
        })?;
        let seals = SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_SEAL;
        fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(|e| io("seal", e))?;
        self.store(&stored_name, file.as_raw_fd());
        Ok(())
    }

    /// The state blob stored under `name` by the process before a restart, if systemd passed
    /// one; it is taken (a second call returns `None`) and removed from the store.
    pub fn restored_state(&self, name: &str) -> Option<Vec<u8>> {
        let stored_name = format!("{STATE_PREFIX}{name}");
        let (fd, owned) = claim(&stored_name)?;
        let mut file = File::from(owned);
        let mut bytes = Vec::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes));
        if let Some(notifier) = self.notifier() {
            notifier.fdstore_remove(&stored_name);
        }
        match read {
            Ok(_) => Some(bytes),
            Err(error) => {
                tracing::warn!(target: "lifecycle_hooks", fd, name = stored_name, %error, "cannot read a stored state blob");
                None
            }
        }
    }

    /// Sends `fd` to systemd's store under `name`, if there is a notify socket.
    fn store(&self, name: &str, fd: RawFd) {
        let Some(notifier) = self.notifier() else {
            return;
        };
        // Stored before by this process (a second `store_state` of one name): the old one
        // leaves first, so the next process finds one descriptor under the name, the last.
        let again = self.stored.names.lock().iter().any(|n| n == name);
        if again {
            notifier.fdstore_remove(name);
        }
        match notifier.send_fd(&format!("FDSTORE=1\nFDNAME={name}"), fd) {
            Ok(()) => {
                let mut stored = self.stored.names.lock();
                if !stored.iter().any(|n| n == name) {
                    stored.push(name.to_owned());
                }
            }
            Err(error) => {
                tracing::warn!(target: "lifecycle_hooks", name, %error, "cannot store the descriptor with the service manager; a restart will bind anew");
            }
        }
    }
}

/// Checks that an inherited descriptor is a listening stream socket of `addr`'s family (and
/// address, where `addr` names one), and makes it a listener.
fn validate(
    name: &str,
    fd: RawFd,
    owned: OwnedFd,
    addr: &ListenAddr,
) -> Result<Listener, ListenError> {
    let wrong = |found: String| ListenError::WrongSocket {
        name: name.to_owned(),
        fd,
        expected: format!("a listening {addr} socket"),
        found,
    };
    let sock_type =
        getsockopt(&owned, sockopt::SockType).map_err(|e| wrong(format!("not a socket ({e})")))?;
    if sock_type != SockType::Stream {
        return Err(wrong(format!(
            "a {sock_type:?} socket, not a stream socket"
        )));
    }
    if !getsockopt(&owned, sockopt::AcceptConn).unwrap_or(false) {
        return Err(wrong("a socket that is not listening".into()));
    }
    let local: SockaddrStorage =
        getsockname(owned.as_raw_fd()).map_err(|e| wrong(format!("no local address ({e})")))?;
    match addr {
        ListenAddr::Tcp(want) => {
            let found = local
                .as_sockaddr_in()
                .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)))
                .or_else(|| {
                    local
                        .as_sockaddr_in6()
                        .map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a)))
                });
            let Some(found) = found else {
                return Err(wrong(format!("a {:?} socket", local.family())));
            };
            let port_ok = want.port() == 0 || want.port() == found.port();
            let ip_ok = want.ip().is_unspecified() && want.is_ipv4() == found.is_ipv4()
                || want.ip() == found.ip();
            if !(port_ok && ip_ok) {
                return Err(wrong(format!("bound to {found}")));
            }
            Ok(Listener::Tcp(TcpListener::from(owned)))
        }
        ListenAddr::Unix(want) => {
            if local.family() != Some(AddressFamily::Unix) {
                return Err(wrong(format!("a {:?} socket", local.family())));
            }
            let found = local.as_unix_addr().and_then(UnixAddr::path);
            if found.is_some_and(|path| path != want.as_path()) {
                return Err(wrong(format!(
                    "bound to {}",
                    found.map(|p| p.display().to_string()).unwrap_or_default()
                )));
            }
            Ok(Listener::Unix(UnixListener::from(owned)))
        }
    }
}

fn bind(name: &str, addr: &ListenAddr) -> Result<Listener, ListenError> {
    let failed = |source| ListenError::Bind {
        name: name.to_owned(),
        addr: addr.to_string(),
        source,
    };
    match addr {
        ListenAddr::Tcp(addr) => TcpListener::bind(addr).map(Listener::Tcp).map_err(failed),
        ListenAddr::Unix(path) => UnixListener::bind(path).map(Listener::Unix).map_err(failed),
    }
}

/// When the service is ready: closes inherited descriptors nobody claimed, and removes them from
/// the store (a listener the new version no longer has must not linger there).
pub(crate) fn release_unclaimed(notifier: Option<&Arc<Notifier>>) {
    let Some(inherited) = INHERITED.get() else {
        return;
    };
    let unclaimed: Vec<(String, RawFd)> = inherited
        .lock()
        .iter_mut()
        .filter_map(|i| i.owned.take().map(|fd| (i.name.clone(), fd)))
        .map(|(name, fd)| {
            let raw = fd.as_raw_fd();
            drop(fd);
            (name, raw)
        })
        .collect();
    for (name, fd) in unclaimed {
        tracing::warn!(target: "lifecycle_hooks", name, fd, "an inherited descriptor nobody claimed was closed and removed from the store");
        if let Some(notifier) = notifier {
            notifier.fdstore_remove(&name);
        }
    }
}

/// At the end of a run: on any ending but a restart, removes what this process stored.
pub(crate) fn release_stored(notifier: Option<&Arc<Notifier>>, stored: &Stored, restart: bool) {
    let names = std::mem::take(&mut *stored.names.lock());
    if restart || names.is_empty() {
        return;
    }
    if let Some(notifier) = notifier {
        for name in names {
            notifier.fdstore_remove(&name);
        }
    }
}

impl Notifier {
    /// Sends `state` with `fd` attached (`SCM_RIGHTS`), as `FDSTORE=1` needs.
    pub(crate) fn send_fd(&self, state: &str, fd: RawFd) -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.connect_addr(self.addr())?;
        let fds = [fd];
        sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &[IoSlice::new(state.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_env_is_for_this_process_only() {
        assert_eq!(
            parse_listen_env(Some("42"), Some("2"), Some("http:state-pool"), 42),
            [(3, "http".to_owned()), (4, "state-pool".to_owned())]
        );
        assert!(parse_listen_env(Some("41"), Some("2"), Some("http:x"), 42).is_empty());
        assert!(parse_listen_env(None, Some("2"), None, 42).is_empty());
        assert!(parse_listen_env(Some("42"), Some("two"), None, 42).is_empty());
        assert_eq!(
            parse_listen_env(Some("42"), Some("2"), Some("http"), 42),
            [(3, "http".to_owned()), (4, "unknown".to_owned())]
        );
        assert!(parse_listen_env(Some("42"), Some("-3"), None, 42).is_empty());
    }

    #[test]
    fn a_second_descriptor_of_the_same_socket_is_closed_when_the_first_is_claimed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dup = OwnedFd::from(listener.try_clone().unwrap());
        let other = OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap());
        let state = OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap());
        let entry = |name: &str, owned: OwnedFd| Inherited {
            name: name.to_owned(),
            fd: owned.as_raw_fd(),
            owned: Some(owned),
        };
        let first = OwnedFd::from(listener);
        let first_fd = first.as_raw_fd();
        let mut inherited = vec![
            entry("http", first),
            entry("http", dup),
            entry("http", other),
            entry("state-x", state),
        ];
        let (fd, _owned) = claim_from(&mut inherited, "http").unwrap();
        assert_eq!(fd, first_fd);
        // The duplicate is gone (closed), another socket of that name and other names stay.
        let left: Vec<bool> = inherited.iter().map(|i| i.owned.is_some()).collect();
        assert_eq!(left, [false, false, true, true]);
        let (second, _) = claim_from(&mut inherited, "http").unwrap();
        assert_eq!(second, inherited[2].fd);
        assert!(claim_from(&mut inherited, "http").is_none());
    }

    #[test]
    fn names_that_cannot_travel_are_refused() {
        assert!(check_name("http").is_ok());
        for bad in ["", "a:b", "tab\there", &"x".repeat(256)] {
            let error = check_name(bad).unwrap_err();
            assert!(matches!(error, ListenError::BadName { .. }), "{bad:?}");
        }
    }

    #[test]
    fn a_socket_of_the_wrong_kind_is_refused_with_its_name_and_number() {
        let datagram = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let owned = OwnedFd::from(datagram);
        let fd = owned.as_raw_fd();
        let error = validate(
            "http",
            fd,
            owned,
            &ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!("descriptor {fd} named `http`")),
            "{message}"
        );
        assert!(message.contains("not a stream socket"), "{message}");
    }

    #[test]
    fn a_listener_on_another_address_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let owned = OwnedFd::from(listener);
        let fd = owned.as_raw_fd();
        let want: SocketAddr = format!("127.0.0.1:{}", port.wrapping_add(1).max(1))
            .parse()
            .unwrap();
        let message = validate("http", fd, owned, &ListenAddr::Tcp(want))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&format!("bound to 127.0.0.1:{port}")),
            "{message}"
        );
    }

    #[test]
    fn a_matching_listener_is_accepted_and_a_new_one_bound_otherwise() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let owned = OwnedFd::from(listener);
        let fd = owned.as_raw_fd();
        let adopted = validate("http", fd, owned, &ListenAddr::Tcp(addr)).unwrap();
        assert_eq!(adopted.fd(), fd);
        let any = validate(
            "http",
            fd,
            OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap()),
            &ListenAddr::Tcp("0.0.0.0:0".parse().unwrap()),
        );
        assert!(any.is_ok());
        let bound = bind("http", &ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
        assert!(matches!(bound, Listener::Tcp(_)));
    }

    #[test]
    fn a_unix_listener_is_checked_by_path() {
        let dir = std::env::temp_dir().join(format!("lh-fdstore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let owned = OwnedFd::from(listener);
        let fd = owned.as_raw_fd();
        let message = validate("api", fd, owned, &ListenAddr::Unix(dir.join("b.sock")))
            .unwrap_err()
            .to_string();
        assert!(message.contains("a.sock"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
