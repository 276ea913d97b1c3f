//! The server and its hooks. See [`HttpServer`].
//!
//! # Invariants
//!
//! 1. The listener accepts from `NAME:start` until the halt (intake stopped, or `NAME:stop_accepting`),
//!    then it is dropped (closed, never `shutdown()`, so a socket systemd keeps stays usable).
//! 2. Every request is one lifecycle work item from the moment its head is handed to the service
//!    until its response body has ended (or, for a protocol switch, until the upgraded stream is
//!    dropped); connections themselves are not work, so an idle or half-sent connection holds
//!    the `wait` phase at most through the keep-alive grace after the halt (the request its
//!    client may be sending is counted before it arrives).
//! 3. `NAME:close` (exit) cuts every connection still open; the requests it cuts are counted,
//!    named and reported to the lifecycle before it returns.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::serve::Listener;
use futures::future::BoxFuture;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use lifecycle_hooks::{HookContext, HookSpec, LifecycleHandle, Phase, WorkSource};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{ConnShared, request_name, serve_connection};
use crate::counters::{Cells, Counters};
use crate::errors::HttpError;
use crate::service::RequestService;

/// The default server name: the prefix of its hook names.
pub const DEFAULT_NAME: &str = "http";

/// The default [`HttpServerBuilder::keep_alive_grace`]: a few round trips on a local network.
pub const DEFAULT_KEEP_ALIVE_GRACE: Duration = Duration::from_millis(50);

/// How long `NAME:close` lets connections that are closing gracefully finish (at most a quarter
/// of the time the exit hook has), and then, if it had to cut some, as long again for their
/// tasks to end: at most half the hook's time in all.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

type StartFn = Box<dyn FnOnce(Arc<Shared>) -> BoxFuture<'static, ()> + Send>;

/// Serves `service` on `listener` under a lifecycle: shorthand for [`HttpServer::builder`].
pub fn serve<L, S>(listener: L, service: S) -> HttpServerBuilder<L, S> {
    HttpServer::builder(listener, service)
}

/// An HTTP server (HTTP/1.1 and HTTP/2, with upgrades) bound to a lifecycle: each request is
/// tracked work, and the server follows the phases.
///
/// Bind it by adding its [`hooks`](HttpServer::hooks) to the lifecycle's builder:
///
/// | hook (server named `http`) | phase | what it does |
/// |---|---|---|
/// | `http:start` | `startup` | start accepting on the listener |
/// | `http:stop_accepting` | `stop_intake` | (after the propagation delay, while the readiness route already says 503) close the listener, returning once new connections are refused; HTTP/1: idle keep-alive connections close at once (those that answered within the last [`keep_alive_grace`](HttpServerBuilder::keep_alive_grace), 50 ms, first give the request their client may be sending the chance to arrive), busy ones after their response, which carries `Connection: close`; a connection that has not sent a whole request head by then closes; HTTP/2: GOAWAY, open streams finish |
/// | `http:close` | `exit` | cut every connection still open; the requests it cuts are counted ([`Counters::cut`]) and each is logged by name and age; connections closing gracefully (a last HTTP/2 frame, a response being flushed) get a short bound first |
///
/// Each request is a named lifecycle work item (`http GET /path from 127.0.0.1:53412`), so the
/// requests still running at the drain deadline are named, with their age, in
/// `Outcome::stuck_work` and in the lifecycle's `WorkStuck` event; `Outcome::outlived_grace`
/// counts those still running when the exit phase began, which this server then cuts.
///
/// A request counts as in-flight work from the moment its head reaches the service until its
/// response body has been sent, so the `wait` phase waits for requests, including streamed
/// responses, but not for idle connections or for a client that has sent half a request line
/// (beyond the short keep-alive grace, see [`HttpServerBuilder::keep_alive_grace`]): a request
/// that has not started is not work. A WebSocket (any protocol switch) is work until
/// the upgraded stream is dropped. Handlers reach the drain through the [`Draining`](crate::Draining)
/// extension: a server-sent-events stream ends when it completes, a WebSocket closes with code
/// 1001. At the drain deadline the lifecycle cancels work ([`Draining::cancelled`](crate::Draining::cancelled));
/// a handler answers then, within the lifecycle's cancel grace, or is cut when the exit phase
/// begins. Exit hooks keep their reserve: the cut takes no time.
///
/// Listeners are axum's [`Listener`]: `tokio::net::TcpListener`, `tokio::net::UnixListener`,
/// or your own. TLS is left to your acceptor (this crate has no TLS dependency): implement
/// `Listener` for a type that accepts TCP and completes the handshake, for example with
/// tokio-rustls, returning its `TlsStream` as the `Io`. Bound the handshake (or run handshakes
/// in their own tasks and hand finished streams over a channel) so one slow client cannot stall
/// accepting; the server stops calling `accept` at `stop_intake` and drops the listener.
///
/// ```ignore
/// use std::time::Duration;
/// use tokio::net::{TcpListener, TcpStream};
/// use tokio_rustls::{TlsAcceptor, server::TlsStream};
///
/// struct TlsListener {
///     tcp: TcpListener,
///     acceptor: TlsAcceptor, // from your rustls ServerConfig
/// }
///
/// impl lifecycle_hooks_http::Listener for TlsListener {
///     type Io = TlsStream<TcpStream>;
///     type Addr = std::net::SocketAddr;
///
///     async fn accept(&mut self) -> (Self::Io, Self::Addr) {
///         loop {
///             let (tcp, addr) = match self.tcp.accept().await {
///                 Ok(accepted) => accepted,
///                 // Out of file descriptors and the like: back off instead of spinning.
///                 Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue }
///             };
///             let handshake = self.acceptor.accept(tcp);
///             if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
///                 return (tls, addr);
///             }
///         }
///     }
///
///     fn local_addr(&self) -> std::io::Result<Self::Addr> {
///         self.tcp.local_addr()
///     }
/// }
/// // HttpServer::builder(TlsListener { tcp, acceptor }, app).build()
/// ```
///
/// ```
/// use axum::{Router, routing::get};
/// use lifecycle_hooks::testing;
/// use lifecycle_hooks_http::HttpServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let app = Router::new().route("/", get(|| async { "hello\n" }));
/// let server = HttpServer::builder(listener, app).readiness_route("/ready").build();
/// let lifecycle = testing::builder().hooks(server.hooks()).build().unwrap();
/// testing::stop_when_ready(&lifecycle.handle());
/// let outcome = lifecycle.run().await;
/// assert_eq!(outcome.exit_code(), 0);
/// assert_eq!(server.counters().in_flight, 0);
/// # }
/// ```
#[derive(Clone)]
pub struct HttpServer {
    inner: Arc<Inner>,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("name", &self.inner.shared.name)
            .field("counters", &self.inner.shared.counters())
            .finish_non_exhaustive()
    }
}

/// Configures an [`HttpServer`]; from [`HttpServer::builder`] or [`serve`].
#[must_use = "an HttpServerBuilder does nothing until `build()` is called"]
pub struct HttpServerBuilder<L, S> {
    listener: L,
    service: S,
    name: String,
    readiness_route: Option<String>,
    keep_alive_grace: Duration,
}

impl<L, S> fmt::Debug for HttpServerBuilder<L, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServerBuilder")
            .field("name", &self.name)
            .field("readiness_route", &self.readiness_route)
            .finish_non_exhaustive()
    }
}

impl<L, S> HttpServerBuilder<L, S> {
    /// The server's name: the prefix of its hook names (`NAME:start`, `NAME:stop_accepting`,
    /// `NAME:close`) and a field of its log lines. Default [`DEFAULT_NAME`]. Two servers in one
    /// lifecycle need two names.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Answers `GET path` (any method) itself: `200 ready` while the lifecycle is ready, `503
    /// stopping` before (startup) and from the moment a stop begins, which is the propagation
    /// delay before the listener closes. For load balancers and Kubernetes readiness probes.
    /// The service never sees these requests.
    pub fn readiness_route(mut self, path: impl Into<String>) -> Self {
        self.readiness_route = Some(path.into());
        self
    }

    /// How long after its last response an idle HTTP/1 keep-alive connection stays open once
    /// intake has stopped (default [`DEFAULT_KEEP_ALIVE_GRACE`]): long enough for a request the
    /// client is already sending on it to arrive and be answered with `Connection: close`,
    /// instead of failing under a close it could not see coming (HTTP/1 has no GOAWAY, and
    /// hyper's client retries only requests it never sent). Connections idle for longer close
    /// at once. A connection in its grace holds the `wait` phase until the grace ends or its
    /// next request arrives (which is work itself), so that request cannot begin after the
    /// wait has ended; the stop is delayed by at most the grace.
    pub fn keep_alive_grace(mut self, grace: Duration) -> Self {
        self.keep_alive_grace = grace;
        self
    }

    /// Builds the server. It does nothing until its [`hooks`](HttpServer::hooks) run in a
    /// lifecycle.
    pub fn build<B>(self) -> HttpServer
    where
        L: Listener,
        L::Addr: fmt::Debug,
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
        let HttpServerBuilder {
            listener,
            service,
            name,
            readiness_route,
            keep_alive_grace,
        } = self;
        let start: StartFn = Box::new(move |shared| Box::pin(accept(listener, service, shared)));
        HttpServer {
            inner: Arc::new(Inner {
                start_hook: format!("{name}:start"),
                stop_hook: format!("{name}:stop_accepting"),
                close_hook: format!("{name}:close"),
                started: AtomicBool::new(false),
                start: Mutex::new(Some(start)),
                shared: Arc::new(Shared {
                    name,
                    readiness_route: readiness_route.map(String::into_boxed_str),
                    keep_alive_grace,
                    epoch: tokio::time::Instant::now(),
                    counters: Cells::default(),
                    connections: Mutex::new(HashMap::new()),
                    bound: OnceLock::new(),
                    tasks: TaskTracker::new(),
                    listener_closed: CancellationToken::new(),
                    halted: AtomicBool::new(false),
                }),
            }),
        }
    }
}

impl HttpServer {
    /// A builder for a server accepting on `listener` and answering with `service` (an axum
    /// `Router`, or any tower service of `Request<hyper::body::Incoming>` that never fails).
    pub fn builder<L, S>(listener: L, service: S) -> HttpServerBuilder<L, S> {
        HttpServerBuilder {
            listener,
            service,
            name: DEFAULT_NAME.to_owned(),
            readiness_route: None,
            keep_alive_grace: DEFAULT_KEEP_ALIVE_GRACE,
        }
    }

    /// The server's three hooks, to add with `Builder::hooks`: `NAME:start` (startup),
    /// `NAME:stop_accepting` (stop_intake) and `NAME:close` (exit, the teardown of
    /// `NAME:start`). See the table on [`HttpServer`].
    ///
    /// Register them once, in one lifecycle: a second start fails with
    /// [`HttpError::AlreadyStarted`].
    pub fn hooks(&self) -> Vec<HookSpec> {
        let start = {
            let inner = Arc::clone(&self.inner);
            HookSpec::new(
                Phase::STARTUP,
                self.inner.start_hook.clone(),
                move |ctx: HookContext| Arc::clone(&inner).start(ctx),
            )
        };
        let stop = {
            let inner = Arc::clone(&self.inner);
            HookSpec::new(
                Phase::STOP_INTAKE,
                self.inner.stop_hook.clone(),
                move |_ctx: HookContext| Arc::clone(&inner).stop_accepting(),
            )
        };
        let close = {
            let inner = Arc::clone(&self.inner);
            HookSpec::new(
                Phase::EXIT,
                self.inner.close_hook.clone(),
                move |ctx: HookContext| Arc::clone(&inner).close(ctx),
            )
            .teardown_of(self.inner.start_hook.clone())
        };
        vec![start, stop, close]
    }

    /// The counters now; see [`Counters`]. They are also logged when the server closes.
    pub fn counters(&self) -> Counters {
        self.inner.shared.counters()
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }
}

struct Inner {
    start_hook: String,
    stop_hook: String,
    close_hook: String,
    /// Set once by the start hook (AcqRel swap: a second start sees the first).
    started: AtomicBool,
    /// The accept loop, typed by listener and service; taken by the start hook.
    start: Mutex<Option<StartFn>>,
    shared: Arc<Shared>,
}

/// The lifecycle a started server runs under.
#[derive(Debug)]
struct Bound {
    handle: LifecycleHandle,
    /// Cancelled when intake stops (a child of the lifecycle's intake token) or by
    /// `NAME:stop_accepting`.
    halt: CancellationToken,
}

/// What connections and requests share about their server.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) readiness_route: Option<Box<str>>,
    pub(crate) keep_alive_grace: Duration,
    /// The origin of each connection's `idle_since`.
    pub(crate) epoch: tokio::time::Instant,
    pub(crate) counters: Cells,
    /// Every open connection by id; locked briefly (insert, remove, a cut's copy), never across
    /// an await.
    pub(crate) connections: Mutex<HashMap<u64, Arc<ConnShared>>>,
    bound: OnceLock<Bound>,
    /// The accept loop and the connection tasks.
    tasks: TaskTracker,
    /// Cancelled once the accept loop has dropped the listener.
    listener_closed: CancellationToken,
    /// Set (Release) once the halt fired and the listener is dropped (by the accept loop, or the
    /// exit hook): read (Acquire) for every response, where the halt token's own check would
    /// take its lock.
    halted: AtomicBool,
}

/// The requests in flight on every open connection, named `http GET /path from peer`, for the
/// lifecycle's snapshot, state dump and stuck-work report. Naming them here, when asked, costs
/// the request path no string and no shared lock.
impl WorkSource for Shared {
    fn for_each(&self, item: &mut dyn FnMut(String, tokio::time::Instant)) {
        // Copied out first: the connections' lock is not held while each one's is taken.
        let connections: Vec<Arc<ConnShared>> = self.connections.lock().values().cloned().collect();
        for conn in connections {
            let requests = conn.requests.lock();
            if requests.cut {
                // Counted and reported by the cut already.
                continue;
            }
            for request in requests.list.iter() {
                item(
                    request_name(&request.method, request.path.as_ref(), &conn.peer),
                    request.started,
                );
            }
        }
    }
}

impl Shared {
    fn bound(&self) -> &Bound {
        self.bound
            .get()
            .expect("connections exist only once the start hook has bound the server")
    }

    pub(crate) fn handle(&self) -> &LifecycleHandle {
        &self.bound().handle
    }

    /// The counters: the closed connections' (folded) plus the open ones'.
    fn counters(&self) -> Counters {
        let connections = self.connections.lock();
        let open = connections.values().fold((0, 0, 0), |sum, conn| {
            let (begun, completed, aborted) = conn.requests.lock().counts();
            (sum.0 + begun, sum.1 + completed, sum.2 + aborted)
        });
        let counters = self.counters.snapshot_with(open);
        drop(connections);
        counters
    }

    pub(crate) fn halt(&self) -> &CancellationToken {
        &self.bound().halt
    }

    /// Whether intake has stopped for this server (a lock-free read for the request path).
    pub(crate) fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }

    /// Sets the halt flag, then wakes every connection's task to see it.
    fn set_halted(&self) {
        // Release: a task woken below (or polled later) reads the flag with Acquire. Once only:
        // the grace guards are taken at the first halt.
        if self.halted.swap(true, Ordering::AcqRel) {
            return;
        }
        for conn in self.connections.lock().values() {
            conn.halt();
        }
    }

    /// Cuts the open connections `which` selects; reports and returns how many requests it
    /// cut.
    fn cut(&self, which: impl Fn(&ConnShared) -> bool) -> usize {
        let connections: Vec<Arc<ConnShared>> = self
            .connections
            .lock()
            .values()
            .filter(|conn| which(conn))
            .cloned()
            .collect();
        let mut cut = 0;
        for conn in connections {
            for request in conn.cut() {
                cut += 1;
                tracing::warn!(
                    server = %self.name,
                    request = %request.name,
                    age_ms = request.age.as_millis() as u64,
                    "request still running when the exit phase began: cut"
                );
            }
        }
        cut
    }
}

impl Inner {
    async fn start(self: Arc<Self>, ctx: HookContext) -> Result<(), HttpError> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(HttpError::AlreadyStarted {
                server: self.shared.name.clone(),
            });
        }
        let start = self
            .start
            .lock()
            .take()
            .expect("`started` lets the start hook through once");
        let handle = ctx.handle().clone();
        let bound = Bound {
            halt: handle.intake_stopped().token(),
            handle,
        };
        if self.shared.bound.set(bound).is_err() {
            unreachable!("`started` lets the start hook through once");
        }
        // Requests are counted by plain work guards and named only when a snapshot or the
        // stuck-work report asks (see `WorkSource for Shared`).
        ctx.handle().work_source(&self.shared);
        self.shared.tasks.spawn(start(Arc::clone(&self.shared)));
        tracing::info!(server = %self.shared.name, "HTTP server accepting");
        Ok(())
    }

    async fn stop_accepting(self: Arc<Self>) {
        let Some(bound) = self.shared.bound.get() else {
            return;
        };
        bound.halt.cancel();
        // Returns once new connections are refused, so the phases after it can rely on that.
        self.shared.listener_closed.cancelled().await;
        let counters = self.shared.counters();
        tracing::info!(
            server = %self.shared.name,
            connections = self.shared.connections.lock().len(),
            in_flight = counters.in_flight,
            "listener closed; idle connections closing, requests in flight go on"
        );
    }

    async fn close(self: Arc<Self>, ctx: HookContext) -> Result<(), HttpError> {
        let shared = &self.shared;
        let Some(bound) = shared.bound.get() else {
            return Ok(());
        };
        shared.set_halted();
        bound.halt.cancel();
        let open = shared.connections.lock().len();
        // Cut now: requests still running after the drain deadline (handlers that ignored the
        // drain and the cancel, upgraded streams), and connections that never started a
        // request and are past the keep-alive grace (half a request line, nothing at all):
        // nothing they hold can finish. A request that began after the wait phase ended (a
        // client reusing its connection just then) is not cut yet: it is answered with
        // `Connection: close` within the grace below.
        let deadline_passed = ctx.handle().cancelled().is_reached();
        let mut cut = shared.cut(|conn| {
            if conn.in_flight() > 0 {
                deadline_passed
            } else {
                !conn.has_begun() && conn.past_keep_alive_grace()
            }
        });
        shared.tasks.close();
        // The rest are closing gracefully: an HTTP/2 connection still writing its last frames
        // and its GOAWAY, an HTTP/1 response still being flushed, an idle connection within its
        // keep-alive grace. A short bound keeps the other exit hooks' time; whatever is left
        // then is cut.
        let grace = ctx
            .time_left()
            .map_or(CLOSE_GRACE, |left| (left / 4).min(CLOSE_GRACE));
        if tokio::time::timeout(grace, shared.tasks.wait())
            .await
            .is_err()
        {
            cut += shared.cut(|_| true);
            let _ = tokio::time::timeout(grace, shared.tasks.wait()).await;
        }
        if cut > 0 {
            tracing::warn!(
                server = %shared.name,
                cut,
                "requests cut: they outlived the drain deadline and the cancel grace"
            );
        }
        let c = shared.counters();
        // In the Outcome: `outcome.hook("http:close").note`.
        ctx.note(format!(
            "requests completed={} cut={} aborted={}",
            c.completed, c.cut, c.aborted
        ));
        tracing::info!(
            server = %shared.name,
            connections = c.connections,
            requests = c.requests,
            completed = c.completed,
            cut = c.cut,
            aborted = c.aborted,
            open_at_close = open,
            "HTTP server closed"
        );
        Ok(())
    }
}

/// Accepts until the halt, then drops the listener.
async fn accept<L, S, B>(mut listener: L, service: S, shared: Arc<Shared>)
where
    L: Listener,
    L::Addr: fmt::Debug,
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
    let builder = auto::Builder::new(TokioExecutor::new());
    let halt = shared.halt().clone();
    let mut next_id: u64 = 0;
    loop {
        let (io, addr) = tokio::select! {
            biased;
            () = halt.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        Cells::add(&shared.counters.connections, 1);
        let conn = Arc::new(ConnShared::new(
            next_id,
            format!("{addr:?}"),
            Arc::clone(&shared),
        ));
        next_id += 1;
        shared.connections.lock().insert(conn.id, Arc::clone(&conn));
        let service = RequestService {
            inner: service.clone(),
            conn: Arc::clone(&conn),
        };
        shared
            .tasks
            .spawn(serve_connection(builder.clone(), io, conn, service));
    }
    // The listener first: once a response says `Connection: close`, the client's next
    // connection must be refused, not left in the accept backlog to be reset when the listener
    // is dropped.
    drop(listener);
    shared.set_halted();
    shared.listener_closed.cancel();
    tracing::debug!(server = %shared.name, "listener dropped");
}
