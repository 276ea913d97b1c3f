//! One accepted connection: its state, its I/O wrapper and the task that serves it.
//!
//! # Invariants
//!
//! 1. A connection is in its server's registry from accept until its I/O is dropped (the
//!    serving task ended, or an upgraded stream such as a WebSocket was dropped), so a cut
//!    reaches every connection that can still carry a request.
//! 2. Every request in flight on a connection is listed in `ConnShared::requests` until its
//!    guard drops; a cut marks the list `cut` under the same lock it reads the list with, so
//!    each request is counted once: as cut (named by the cut) or as completed/aborted (by its
//!    guard), never both.
//! 3. The serving task reacts to the halt (intake stopped) by a graceful shutdown, and to the
//!    cut by dropping the connection; it polls the connection before either, so a request whose
//!    bytes are already readable is parsed (and answered) before a graceful shutdown applies.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use http::uri::PathAndQuery;
use http::{Method, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use lifecycle_hooks::{BoxError, WorkGuard};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::counters::Cells;
use crate::server::Shared;
use crate::service::{RequestGuard, RequestService};

/// A request in flight, as a cut or a snapshot names it: its method and path (not the whole
/// URI, which would make every entry a hundred bytes larger to write and drop).
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) method: Method,
    pub(crate) path: Option<PathAndQuery>,
    pub(crate) started: Instant,
}

/// The requests in flight on one connection, each in a slot of its own from its beginning to
/// its end: ending one drops its entry where it is (nothing moves), and a new one takes a
/// free slot. The slot's index is the request's key.
#[derive(Debug, Default)]
pub(crate) struct InFlightList {
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    len: usize,
}

impl InFlightList {
    fn insert(&mut self, request: InFlight) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(at) => {
                self.slots[at] = Some(request);
                at
            }
            None => {
                self.slots.push(Some(request));
                self.slots.len() - 1
            }
        }
    }

    /// Ends the request in slot `at`; a slot already free is left as it is.
    fn remove(&mut self, at: usize) {
        if let Some(slot @ Some(_)) = self.slots.get_mut(at) {
            *slot = None;
            self.free.push(at);
            self.len -= 1;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &InFlight> {
        self.slots.iter().flatten()
    }
}

/// How a request is named in the stuck-work report and the log: `http GET /path from
/// 127.0.0.1:53412` (the path without its query, which may carry secrets).
pub(crate) fn request_name(method: &Method, path: Option<&PathAndQuery>, peer: &str) -> String {
    let path = path.map_or("/", PathAndQuery::path);
    format!("http {method} {path} from {peer}")
}

/// A request the cut ended: how it is named in the stuck-work report.
#[derive(Debug)]
pub(crate) struct CutRequest {
    pub(crate) name: String,
    pub(crate) age: Duration,
}

/// The requests of one connection. Its counts stay here, on the connection's own lock, while the
/// connection is open (no shared counter is touched per request); they are folded into the
/// server's counters when it closes.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    /// Requests begun so far.
    next: u64,
    pub(crate) list: InFlightList,
    /// Set by the cut, under this lock: requests listed then are counted as cut.
    pub(crate) cut: bool,
    completed: u64,
    aborted: u64,
    /// Set when the counts were folded into the server's: later ends count there directly.
    folded: bool,
}

impl Requests {
    /// This connection's share of the counters: (begun, completed, aborted).
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        if self.folded {
            (0, 0, 0)
        } else {
            (self.next, self.completed, self.aborted)
        }
    }
}

/// What the server, the serving task, the I/O wrapper and each request share about one
/// connection.
pub(crate) struct ConnShared {
    pub(crate) id: u64,
    /// The client's address as the listener reported it (`127.0.0.1:53412`, a Unix path).
    pub(crate) peer: String,
    pub(crate) server: Arc<Shared>,
    /// Locked briefly (push, remove, a cut's read), never across an await.
    pub(crate) requests: Mutex<Requests>,
    /// Set (Release) when a response switched protocols; the I/O wrapper then watches `cut`
    /// itself (Acquire), since no serving task drives the upgraded stream.
    pub(crate) upgraded: AtomicBool,
    /// The guard of the request that upgraded the connection, released when the upgraded
    /// stream is dropped: a WebSocket is in flight for as long as it is open.
    pub(crate) upgrade_guard: Mutex<Option<RequestGuard>>,
    /// Cancelled when the server cuts this connection (what an upgraded stream watches).
    pub(crate) cut: CancellationToken,
    /// Set (Release) when the server cuts this connection, before `waker` is woken.
    cut_flag: AtomicBool,
    /// The serving task's waker: the server wakes it at the halt and at the cut.
    waker: AtomicWaker,
    /// When the connection last became idle (accepted, or a request ended), in nanoseconds
    /// since the server's epoch; relaxed: a hint read by this connection's own task.
    idle_since: AtomicU64,
    /// Set (relaxed, a hint) once a request arrived over HTTP/2, whose GOAWAY is safe at once.
    http2: AtomicBool,
    /// Held from the halt through the keep-alive grace: the request the client may be sending
    /// is work before it arrives, so the `wait` phase cannot end between the halt and that
    /// request (which would then begin after the wait and force the exit).
    grace_guard: Mutex<Option<WorkGuard>>,
}

impl fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnShared")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("requests", &self.requests.lock().list.len())
            .finish_non_exhaustive()
    }
}

impl ConnShared {
    pub(crate) fn new(id: u64, peer: String, server: Arc<Shared>) -> Self {
        ConnShared {
            id,
            peer,
            server,
            requests: Mutex::new(Requests::default()),
            upgraded: AtomicBool::new(false),
            upgrade_guard: Mutex::new(None),
            cut: CancellationToken::new(),
            cut_flag: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            idle_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            grace_guard: Mutex::new(None),
        }
        .idle_now()
    }

    fn idle_now(self) -> Self {
        self.mark_idle();
        self
    }

    fn mark_idle(&self) {
        let since = self.server.epoch.elapsed().as_nanos() as u64;
        self.idle_since.store(since, Ordering::Relaxed);
    }

    /// When the HTTP/1 connection may be closed as idle: `keep_alive_grace` after it last
    /// became idle. `None` when it can be shut down now (HTTP/2, or a request in flight: its
    /// response then carries `Connection: close`).
    fn idle_close_at(&self) -> Option<Instant> {
        if self.http2.load(Ordering::Relaxed) || self.in_flight() > 0 {
            return None;
        }
        let at = self.keep_alive_grace_ends();
        (at > Instant::now()).then_some(at)
    }

    /// When the keep-alive grace since the connection last became idle ends; a grace too long
    /// to add (`Duration::MAX`) ends in about 30 years instead of overflowing (a panic here, at
    /// the halt, would stop the accept loop and every connection task).
    fn keep_alive_grace_ends(&self) -> Instant {
        const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
        let since = Duration::from_nanos(self.idle_since.load(Ordering::Relaxed));
        let idle = self.server.epoch + since;
        idle.checked_add(self.server.keep_alive_grace)
            .unwrap_or_else(|| idle + FAR_FUTURE)
    }

    /// Lists a request; returns its key for [`finish`](Self::finish).
    pub(crate) fn begin(&self, method: Method, uri: &Uri, http2: bool) -> usize {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        let request = InFlight {
            method,
            path: uri.path_and_query().cloned(),
            started: Instant::now(),
        };
        let mut requests = self.requests.lock();
        requests.next += 1;
        if requests.folded {
            Cells::add(&self.server.counters.requests, 1);
        }
        requests.list.insert(request)
    }

    /// Unlists a request and counts how it ended, unless a cut already counted it.
    pub(crate) fn finish(&self, key: usize, completed: bool) {
        let mut requests = self.requests.lock();
        requests.list.remove(key);
        if !requests.cut {
            let counters = &self.server.counters;
            match (requests.folded, completed) {
                (false, true) => requests.completed += 1,
                (false, false) => requests.aborted += 1,
                (true, true) => Cells::add(&counters.completed, 1),
                (true, false) => Cells::add(&counters.aborted, 1),
            }
        }
        let idle = requests.list.is_empty();
        drop(requests);
        if idle {
            self.mark_idle();
        }
    }

    /// Takes the connection out of its server's registry and folds its counts into the
    /// server's, under the registry's lock so a snapshot sees them exactly once.
    fn leave(&self) {
        let mut connections = self.server.connections.lock();
        connections.remove(&self.id);
        let mut requests = self.requests.lock();
        let (begun, completed, aborted) = requests.counts();
        requests.folded = true;
        drop(requests);
        let counters = &self.server.counters;
        Cells::add(&counters.requests, begun);
        Cells::add(&counters.completed, completed);
        Cells::add(&counters.aborted, aborted);
        drop(connections);
    }

    /// At the halt: holds a work guard through the keep-alive grace if the connection is in
    /// it, then wakes the serving task to look at the server's halt flag (set before this
    /// call).
    pub(crate) fn halt(&self) {
        if self.idle_close_at().is_some() {
            *self.grace_guard.lock() = Some(self.server.handle().work_guard());
        }
        self.waker.wake();
    }

    /// How many requests are in flight on this connection.
    pub(crate) fn in_flight(&self) -> usize {
        self.requests.lock().list.len()
    }

    /// Whether the keep-alive grace since the connection last became idle has passed.
    pub(crate) fn past_keep_alive_grace(&self) -> bool {
        self.keep_alive_grace_ends() <= Instant::now()
    }

    /// Whether a request has begun on this connection (a connection that only ever sent half
    /// a request line has none).
    pub(crate) fn has_begun(&self) -> bool {
        self.requests.lock().next > 0
    }

    /// Cuts the connection: names and returns the requests in flight (each counted as cut),
    /// then wakes whatever drives the connection so it drops it.
    pub(crate) fn cut(&self) -> Vec<CutRequest> {
        let now = Instant::now();
        let mut requests = self.requests.lock();
        let cut = if requests.cut {
            Vec::new()
        } else {
            requests.cut = true;
            requests
                .list
                .iter()
                .map(|r| CutRequest {
                    name: request_name(&r.method, r.path.as_ref(), &self.peer),
                    age: now.saturating_duration_since(r.started),
                })
                .collect()
        };
        drop(requests);
        Cells::add(&self.server.counters.cut, cut.len() as u64);
        self.cut_flag.store(true, Ordering::Release);
        self.cut.cancel();
        self.waker.wake();
        cut
    }
}

/// The accepted stream, wrapped: it leaves the server's registry when dropped, releases an
/// upgraded request's guard, and once upgraded fails every read and write after a cut.
pub(crate) struct Io<T> {
    inner: T,
    conn: Arc<ConnShared>,
    cut: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl<T> Io<T> {
    pub(crate) fn new(inner: T, conn: Arc<ConnShared>) -> Self {
        Io {
            inner,
            conn,
            cut: None,
        }
    }

    /// Whether the stream was upgraded and then cut: then it only fails.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> bool {
        // Acquire: pairs with the Release store made when the response switched protocols.
        if !self.conn.upgraded.load(Ordering::Acquire) {
            return false;
        }
        let conn = &self.conn;
        let cut = self
            .cut
            .get_or_insert_with(|| Box::pin(conn.cut.clone().cancelled_owned()));
        cut.as_mut().poll(cx).is_ready()
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the HTTP server cut this connection at the drain deadline",
    )
}

impl<T> Drop for Io<T> {
    fn drop(&mut self) {
        // The upgraded request ends first, so its count is folded with the rest.
        let guard = self.conn.upgrade_guard.lock().take();
        drop(guard);
        self.conn.leave();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Io<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.poll_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Io<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.poll_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.poll_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.poll_cut(cx) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What woke a connection's task.
enum Signal {
    /// The connection future ended.
    Served(Result<(), BoxError>),
    /// The server halted (intake stopped).
    Halted,
    /// The server cut the connection.
    Cut,
}

/// Drives the connection until it ends, the server cuts it, or (with `watch_halt`) the server
/// halts. The wake-ups come from the connection's own `AtomicWaker`, registered before the
/// flags are read: no shared lock on the request path, where a cancellation token's
/// `cancelled()` would lock its node at every wake-up of every connection.
fn next<'a, F>(
    conn: &'a ConnShared,
    mut connection: Pin<&'a mut F>,
    watch_halt: bool,
) -> impl Future<Output = Signal> + 'a
where
    F: Future<Output = Result<(), BoxError>>,
{
    std::future::poll_fn(move |cx| {
        conn.waker.register(cx.waker());
        // Acquire: pairs with the Release stores made before the wake-ups.
        if conn.cut_flag.load(Ordering::Acquire) {
            return Poll::Ready(Signal::Cut);
        }
        if let Poll::Ready(served) = connection.as_mut().poll(cx) {
            return Poll::Ready(Signal::Served(served));
        }
        if watch_halt && conn.server.is_halted() {
            return Poll::Ready(Signal::Halted);
        }
        Poll::Pending
    })
}

/// Serves one connection until it closes, is cut, or (after the halt) finishes gracefully.
pub(crate) async fn serve_connection<I, S, B>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    conn: Arc<ConnShared>,
    service: RequestService<S>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<lifecycle_hooks::BoxError>,
{
    let io = TokioIo::new(Io::new(io, Arc::clone(&conn)));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let served = 'served: {
        match next(&conn, connection.as_mut(), true).await {
            Signal::Cut => break 'served None,
            Signal::Served(served) => break 'served Some(served),
            Signal::Halted => {}
        }
        // HTTP/1 has no GOAWAY: a client may be writing its next request on an idle connection
        // right now, and closing under it fails that request (hyper's client retries only
        // requests it never sent). So a connection that became idle less than
        // `keep_alive_grace` ago stays open that long; a request arriving meanwhile is answered
        // with `Connection: close`, after which hyper closes the connection.
        while let Some(at) = conn.idle_close_at() {
            tokio::select! {
                biased;
                signal = next(&conn, connection.as_mut(), false) => match signal {
                    Signal::Cut => break 'served None,
                    Signal::Served(served) => break 'served Some(served),
                    Signal::Halted => unreachable!("the halt is not watched again"),
                },
                () = tokio::time::sleep_until(at) => {}
            }
        }
        // The grace is over (or a request is running, and is work itself).
        drop(conn.grace_guard.lock().take());
        if !conn.has_begun() {
            // Nothing at all, or half a request head, and no request by the end of the grace:
            // not work, and hyper would wait for the rest of the head (it has no timer here).
            // Close it.
            break 'served None;
        }
        // HTTP/1: an idle connection closes now, a busy one after its response (which carries
        // `Connection: close`); HTTP/2: GOAWAY, open streams finish.
        connection.as_mut().graceful_shutdown();
        match next(&conn, connection.as_mut(), false).await {
            Signal::Cut => None,
            Signal::Served(served) => Some(served),
            Signal::Halted => unreachable!("the halt is not watched again"),
        }
    };
    drop(conn.grace_guard.lock().take());
    match served {
        None => tracing::debug!(server = %conn.server.name, peer = %conn.peer, "connection cut"),
        Some(Ok(())) => {}
        Some(Err(error)) => tracing::debug!(
            server = %conn.server.name,
            peer = %conn.peer,
            error = %lifecycle_hooks::errors::chain(&*error),
            "connection ended with an error"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> InFlight {
        InFlight {
            method: Method::GET,
            path: Some(PathAndQuery::try_from(path).unwrap()),
            started: Instant::now(),
        }
    }

    fn paths(list: &InFlightList) -> Vec<&str> {
        let mut paths: Vec<&str> = list
            .iter()
            .map(|r| r.path.as_ref().unwrap().path())
            .collect();
        paths.sort_unstable();
        paths
    }

    #[test]
    fn ended_requests_leave_the_list_and_their_slots_are_reused() {
        let mut list = InFlightList::default();
        let a = list.insert(request("/a"));
        let b = list.insert(request("/b"));
        let c = list.insert(request("/c"));
        assert_eq!((list.len(), paths(&list)), (3, vec!["/a", "/b", "/c"]));
        list.remove(b);
        assert_eq!((list.len(), paths(&list)), (2, vec!["/a", "/c"]));
        // A second removal of a free slot changes nothing.
        list.remove(b);
        assert_eq!(list.len(), 2);
        let d = list.insert(request("/d"));
        assert_eq!(d, b, "the free slot is reused");
        assert_eq!(paths(&list), vec!["/a", "/c", "/d"]);
        list.remove(a);
        list.remove(c);
        list.remove(d);
        assert!(list.is_empty() && list.iter().next().is_none());
        assert_eq!(
            list.slots.len(),
            3,
            "never more slots than requests at once"
        );
    }

    #[test]
    fn a_request_without_a_path_is_named_by_the_root() {
        assert_eq!(
            request_name(&Method::POST, None, "127.0.0.1:9"),
            "http POST / from 127.0.0.1:9"
        );
        let path = PathAndQuery::from_static("/orders?token=secret");
        assert_eq!(
            request_name(&Method::GET, Some(&path), "127.0.0.1:9"),
            "http GET /orders from 127.0.0.1:9",
            "the query, which may carry secrets, is left out"
        );
    }
}
