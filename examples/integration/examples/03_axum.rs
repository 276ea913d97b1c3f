//! An axum server under the lifecycle, through the HTTP adapter (`lifecycle-hooks-http`):
//! `/ready` answers 503 from the moment the stop begins, the listener stops accepting when intake
//! stops (after `--propagation-ms`, so a load balancer that polls `/ready` has time to take this
//! instance out of rotation), idle keep-alive connections close at once, and every request counts
//! as in-flight work until its response has been sent, so the exit phase begins only after the
//! last response. A connection is not work: an idle client, or one that sent half a request, does
//! not hold the stop.
//!
//! Endpoints: `GET /ready` (200 `ready`, or 503 `stopping`), `GET /work?ms=N` (answers 200 after
//! N ms, or 503 if the drain deadline cancels it first), `GET /events` (server-sent events: one
//! `data: tick N` every 100 ms, ending cleanly when the service drains) and `GET /ws` (a
//! WebSocket echo that closes with code 1001, "going away", when the service drains).
//!
//! It prints on stdout, for the process tests:
//!
//! ```text
//! phase startup
//! phase running
//! ready pid=4242 addr=127.0.0.1:38517
//! work started ms=250
//! phase stop_intake
//! ...
//! http completed=12 cut=0 aborted=0
//! summary reason=stop exit_code=0 forced=false
//! ```
//!
//! Try: `cargo run --example 03_axum -- --port 8080 --propagation-ms 2000`, then
//! `curl -i localhost:8080/ready`, `curl 'localhost:8080/work?ms=5000' &`,
//! `curl -N localhost:8080/events &` and `kill -TERM <pid>`.
//! Flags: `--port N` (default 0: any free port), `--propagation-ms N` (default 0),
//! `--shutdown-timeout-ms N` (default 25000). It listens on 127.0.0.1 only.

use std::convert::Infallible;
use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::RawQuery;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::Response;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::routing::get;
use futures::stream::{self, Stream, StreamExt};
use lifecycle_hooks::{BoxError, Event, HookContext, Lifecycle, Outcome};
use lifecycle_hooks_http::{Draining, HttpServer};
use tokio::sync::oneshot;

/// Prints one line and flushes it, so a reader sees it at once.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn flag(args: &[String], name: &str, default: u64) -> u64 {
    match args.iter().position(|a| a == name) {
        Some(at) => args
            .get(at + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} takes a number")),
        None => default,
    }
}

/// Takes `ms` milliseconds, unless the drain deadline passes first: then it answers 503 at once
/// so the client can retry elsewhere, and the lifecycle does not wait for it any longer.
async fn work(draining: Draining, RawQuery(query): RawQuery) -> (StatusCode, String) {
    let Some(ms) = query.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("ms="))
            .and_then(|ms| ms.parse::<u64>().ok())
    }) else {
        return (StatusCode::BAD_REQUEST, "expected /work?ms=N\n".into());
    };
    say(format_args!("work started ms={ms}"));
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => {
            (StatusCode::OK, format!("worked {ms} ms\n"))
        }
        () = draining.cancelled() => {
            (StatusCode::SERVICE_UNAVAILABLE, "cancelled at the drain deadline\n".into())
        }
    }
}

/// One `data: tick N` event every 100 ms (the first at once), until the service drains: then the
/// stream ends and the response with it, so the client sees a clean end, not a cut.
async fn events(draining: Draining) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ticks = stream::unfold((every, 0_u64), |(mut every, n)| async move {
        every.tick().await;
        let event = SseEvent::default().data(format!("tick {n}"));
        Some((Ok(event), (every, n + 1)))
    });
    Sse::new(ticks.take_until(draining.draining().into_future()))
}

/// A WebSocket echo: text and binary messages come back as they are. When the service drains it
/// sends a close frame with code 1001 ("going away") and waits for the client's close reply,
/// until the drain deadline at most.
async fn ws(upgrade: WebSocketUpgrade, draining: Draining) -> Response {
    upgrade.on_upgrade(move |socket| echo(socket, draining))
}

async fn echo(mut socket: WebSocket, draining: Draining) {
    let mut drain = std::pin::pin!(draining.draining().into_future());
    loop {
        let message = tokio::select! {
            biased;
            () = &mut drain => break,
            message = socket.recv() => message,
        };
        match message {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            // The client closed (axum answers its close frame), or the connection failed.
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            Some(Ok(_)) => {} // ping and pong: axum answers pings itself
        }
    }
    let going_away = Message::Close(Some(CloseFrame {
        code: close_code::AWAY,
        reason: "going away".into(),
    }));
    if socket.send(going_away).await.is_err() {
        return;
    }
    // The closing handshake: read until the client's close frame (or the end), bounded by the
    // drain deadline.
    let mut cancelled = std::pin::pin!(draining.cancelled().into_future());
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => return,
            message = socket.recv() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The server's listener, handed over by the `listen` startup hook once it has one: accepting
/// waits for it (forever, if startup failed without one: the stop then halts the server).
struct HandedListener {
    rx: Option<oneshot::Receiver<tokio::net::TcpListener>>,
    tcp: Option<tokio::net::TcpListener>,
}

impl HandedListener {
    fn new() -> (Self, oneshot::Sender<tokio::net::TcpListener>) {
        let (tx, rx) = oneshot::channel();
        let listener = HandedListener {
            rx: Some(rx),
            tcp: None,
        };
        (listener, tx)
    }
}

impl axum::serve::Listener for HandedListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        if let Some(rx) = self.rx.take() {
            match rx.await {
                Ok(tcp) => self.tcp = Some(tcp),
                Err(_) => std::future::pending().await,
            }
        }
        match self.tcp.as_mut() {
            Some(tcp) => axum::serve::Listener::accept(tcp).await,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.tcp {
            Some(tcp) => tcp.local_addr(),
            None => Err(std::io::Error::other("not listening yet")),
        }
    }
}

#[tokio::main]
async fn main() -> Outcome {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "lifecycle_hooks=info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    let port = u16::try_from(flag(&args, "--port", 0)).expect("--port takes a port number");
    let propagation = Duration::from_millis(flag(&args, "--propagation-ms", 0));
    let budget = Duration::from_millis(flag(&args, "--shutdown-timeout-ms", 25_000));

    // The listener named `http` comes from systemd's fd store (kept across a USR2 restart, so
    // no connection is refused meanwhile) or a `.socket` unit, else it is bound here; it needs
    // the lifecycle's handle, so the `listen` startup hook makes it and hands it to the server.
    let (listener, handed) = HandedListener::new();
    let bound = Arc::new(OnceLock::new());

    let app = Router::new()
        .route("/work", get(work))
        .route("/events", get(events))
        .route("/ws", get(ws));
    // The adapter answers `/ready` itself, closes the listener when intake stops (after the
    // propagation delay), counts each request as work until its response is sent, and cuts
    // what is still running when the exit phase begins. Its hooks are `http:start`,
    // `http:stop_accepting` and `http:close`.
    let server = HttpServer::builder(listener, app)
        .readiness_route("/ready")
        .build();

    let lifecycle = Lifecycle::builder()
        .budget(budget)
        .propagation_delay(propagation)
        .on_startup("listen", {
            let (handed, bound) = (Mutex::new(Some(handed)), Arc::clone(&bound));
            move |ctx: HookContext| {
                let (handed, bound) = (handed.lock().unwrap().take(), Arc::clone(&bound));
                async move {
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                    let listener = ctx.handle().fd_store().listener("http", addr)?;
                    let listener = listener.into_tokio_tcp()?;
                    let _ = bound.set(listener.local_addr()?);
                    let _ = handed.ok_or("listen runs once")?.send(listener);
                    Ok::<(), BoxError>(())
                }
            }
        })
        .hooks(server.hooks())
        .observe(move |event| match event {
            Event::PhaseStarted { phase } => say(format_args!("phase {phase}")),
            Event::Ready => say(format_args!(
                "ready pid={} addr={}",
                std::process::id(),
                bound.get().expect("listening once ready")
            )),
            _ => {}
        })
        .build()
        .expect("a valid lifecycle graph");

    let outcome = lifecycle.run().await;
    let served = server.counters();
    say(format_args!(
        "http completed={} cut={} aborted={}",
        served.completed, served.cut, served.aborted
    ));
    say(format_args!(
        "summary reason={} exit_code={} forced={}",
        outcome.reason(),
        outcome.exit_code(),
        outcome.forced()
    ));
    outcome
}
