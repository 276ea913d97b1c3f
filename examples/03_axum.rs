//! An axum server under the lifecycle: `/ready` answers 503 from the moment the stop begins,
//! the listener stops accepting when intake stops (after `--propagation-ms`, so a load balancer
//! that polls `/ready` has time to take this instance out of rotation), and every request counts
//! as in-flight work until its handler returns, so the exit phase begins only after the last
//! response.
//!
//! Endpoints: `GET /ready` (200 `ready`, or 503 `stopping`) and `GET /work?ms=N` (answers 200
//! after N ms, or 503 if the drain deadline cancels it first).
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
//! summary reason=stop exit_code=0 forced=false
//! ```
//!
//! Try: `cargo run --example 03_axum -- --port 8080 --propagation-ms 2000`, then
//! `curl -i localhost:8080/ready`, `curl 'localhost:8080/work?ms=5000' &` and `kill -TERM <pid>`.
//! Flags: `--port N` (default 0: any free port), `--propagation-ms N` (default 0),
//! `--shutdown-timeout-ms N` (default 25000). It listens on 127.0.0.1 only.

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use lifecycle_hooks::{Event, Lifecycle, LifecycleHandle, Outcome};

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

/// Counts each request as one in-flight work item until its handler has produced the response.
///
/// The response body is streamed after this returns; the server task itself is tracked too (see
/// `main`), so the lifecycle also waits for bodies still being written.
async fn track_request(
    State(handle): State<LifecycleHandle>,
    request: Request,
    next: Next,
) -> Response {
    let _in_flight = handle.work_guard();
    next.run(request).await
}

/// 200 while the lifecycle is running, 503 from the stop on (and during startup).
async fn ready(State(handle): State<LifecycleHandle>) -> (StatusCode, &'static str) {
    if handle.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    }
}

/// Takes `ms` milliseconds, unless the drain deadline passes first: then it answers 503 at once
/// so the client can retry elsewhere, and the lifecycle does not wait for it any longer.
async fn work(
    State(handle): State<LifecycleHandle>,
    RawQuery(query): RawQuery,
) -> (StatusCode, String) {
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
        () = handle.cancelled() => {
            (StatusCode::SERVICE_UNAVAILABLE, "cancelled at the drain deadline\n".into())
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

    // Bind before the lifecycle starts, so `ready` can name the address the kernel picked.
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .unwrap_or_else(|error| panic!("cannot listen on 127.0.0.1:{port}: {error}"));
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");

    let lifecycle = Lifecycle::builder()
        .budget(budget)
        .propagation_delay(propagation)
        .observe(move |event| match event {
            Event::PhaseStarted { phase } => say(format_args!("phase {phase}")),
            Event::Ready => say(format_args!("ready pid={} addr={addr}", std::process::id())),
            _ => {}
        })
        .build()
        .expect("a valid lifecycle graph");
    let handle = lifecycle.handle();

    let app = Router::new()
        .route("/ready", get(ready))
        .route("/work", get(work))
        .layer(middleware::from_fn_with_state(
            handle.clone(),
            track_request,
        ))
        .with_state(handle.clone());
    // Graceful shutdown at stop_intake: the listener closes, requests in flight finish, idle
    // keep-alive connections close. The server task is tracked work itself: `serve` returns only
    // once every connection has closed, and the wait phase waits for that. It is critical: if
    // serving fails, the service stops with exit status 1.
    let server = axum::serve(listener, app).with_graceful_shutdown(handle.intake_stopped());
    handle.spawn_critical("http server", async move { server.await });

    let outcome = lifecycle.run().await;
    say(format_args!(
        "summary reason={} exit_code={} forced={}",
        outcome.reason(),
        outcome.exit_code(),
        outcome.forced()
    ));
    outcome
}
