//! The adapter inside a real lifecycle, with real clients on 127.0.0.1 (and a Unix socket), on a
//! multi-thread runtime: requests are work and connections are not, idle keep-alive closes at
//! once, slow requests finish with `Connection: close`, HTTP/2 gets GOAWAY, the readiness route
//! turns 503 while the listener still accepts, and what outlives the deadline is cut, counted
//! and named. Every wait is on a channel, a semaphore or a lifecycle signal, never a sleep.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use futures::stream;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use lifecycle_hooks::{LifecycleHandle, Outcome, testing};
use lifecycle_hooks_http::{Draining, HttpServer, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// A generous bound on any single wait (not a synchronization: each ends as soon as it can).
const PATIENCE: Duration = Duration::from_secs(30);

/// Handlers the tests hold and release: `/slow` reports on `started` and waits for a permit;
/// `/stuck` reports and never answers; `/stream` sends one chunk and never ends; `/` answers.
#[derive(Clone)]
struct Gate {
    started: mpsc::UnboundedSender<&'static str>,
    release: Arc<Semaphore>,
}

fn app(gate: Gate) -> Router {
    let slow = {
        let gate = gate.clone();
        move || {
            let gate = gate.clone();
            async move {
                let _ = gate.started.send("slow");
                let _permit = gate.release.acquire().await.expect("the gate stays open");
                "slow done\n"
            }
        }
    };
    let stuck = {
        let gate = gate.clone();
        move || {
            let gate = gate.clone();
            async move {
                let _ = gate.started.send("stuck");
                std::future::pending::<&'static str>().await
            }
        }
    };
    let endless = {
        let gate = gate.clone();
        move || {
            let gate = gate.clone();
            async move {
                let _ = gate.started.send("stream");
                let first = stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"first\n"))]);
                // One chunk, then a body that ignores the drain signal and never ends.
                let body = futures::StreamExt::chain(first, stream::pending());
                Response::new(Body::from_stream(body))
            }
        }
    };
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/slow", get(slow))
        .route("/stuck", get(stuck))
        .route("/stream", get(endless))
        .route(
            "/draining",
            get(|draining: Draining| async move { format!("{}\n", draining.draining().is_reached()) }),
        )
}

/// A lifecycle running an `HttpServer` on `listener`.
struct Running {
    server: HttpServer,
    handle: LifecycleHandle,
    run: JoinHandle<Outcome>,
    started: mpsc::UnboundedReceiver<&'static str>,
    release: Arc<Semaphore>,
}

async fn start<L>(listener: L, budget: Duration, propagation: Option<Duration>) -> Running
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let (started_tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let gate = Gate {
        started: started_tx,
        release: Arc::clone(&release),
    };
    let server = HttpServer::builder(listener, app(gate))
        .readiness_route("/ready")
        .build();
    let mut builder = testing::builder().budget(budget).hooks(server.hooks());
    if let Some(delay) = propagation {
        builder = builder.propagation_delay(delay);
    }
    let lifecycle = builder.build().expect("a valid graph");
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle
        .readiness()
        .wait_for(|ready| *ready)
        .await
        .expect("the lifecycle becomes ready");
    Running {
        server,
        handle,
        run,
        started,
        release,
    }
}

async fn tcp_server(budget: Duration) -> (Running, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (start(listener, budget, None).await, addr)
}

/// An HTTP/1.1 keep-alive connection and its driver task (which ends when the connection
/// closes).
struct H1 {
    sender: http1::SendRequest<Empty<Bytes>>,
    driver: JoinHandle<Result<(), hyper::Error>>,
}

impl H1 {
    async fn open(addr: SocketAddr) -> H1 {
        let stream = TcpStream::connect(addr).await.expect("the server accepts");
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        H1 {
            sender,
            driver: tokio::spawn(connection),
        }
    }

    async fn get(&mut self, path: &str) -> Result<(Response<()>, String), hyper::Error> {
        self.sender.ready().await?;
        let request = Request::get(path)
            .header(http::header::HOST, "127.0.0.1")
            .body(Empty::new())
            .unwrap();
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((
            Response::from_parts(parts, ()),
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

async fn next_started(running: &mut Running) -> &'static str {
    timeout(PATIENCE, running.started.recv())
        .await
        .expect("a handler starts")
        .expect("the gate lives")
}

async fn finish(run: JoinHandle<Outcome>) -> Outcome {
    timeout(PATIENCE, run)
        .await
        .expect("the lifecycle finishes")
        .expect("the lifecycle task panicked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_client_does_not_delay_the_stop() {
    let (running, addr) = tcp_server(Duration::from_secs(30)).await;
    let mut idle = H1::open(addr).await;
    let (response, body) = idle.get("/").await.unwrap();
    assert_eq!(
        (response.status(), body.as_str()),
        (StatusCode::OK, "hello\n")
    );
    // A HEAD request: hyper sends no body, and the request completes with the head.
    idle.sender.ready().await.unwrap();
    let head = Request::head("/")
        .header(http::header::HOST, "127.0.0.1")
        .body(Empty::new())
        .unwrap();
    let response = idle.sender.send_request(head).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    assert_eq!(
        running.handle.in_flight(),
        0,
        "an idle connection is not work"
    );

    running.handle.stop();
    let outcome = finish(running.run).await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    assert!(!outcome.forced());
    // The drain deadline is 24 s away: the idle connection held nothing.
    assert!(
        outcome.stop_elapsed() < Duration::from_secs(2),
        "the stop took {:?}",
        outcome.stop_elapsed()
    );
    // The server closed the idle connection: the client's driver ended cleanly.
    timeout(PATIENCE, idle.driver)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .expect("a clean close");
    let counters = running.server.counters();
    assert_eq!(
        (
            counters.requests,
            counters.completed,
            counters.aborted,
            counters.in_flight
        ),
        (2, 2, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_finishes_with_connection_close_and_the_exit_follows_at_once() {
    let (mut running, addr) = tcp_server(Duration::from_secs(30)).await;
    let mut idle = H1::open(addr).await;
    idle.get("/").await.unwrap();
    let mut busy = H1::open(addr).await;
    let slow = tokio::spawn(async move {
        let answer = busy.get("/slow").await;
        (answer, Instant::now(), busy.driver)
    });
    assert_eq!(next_started(&mut running).await, "slow");
    assert_eq!(running.handle.in_flight(), 1, "the request is work");

    running.handle.stop();
    running.handle.draining().await;
    // Intake stopped: the listener is closed, the idle connection too, and the slow request is
    // still running (the lifecycle waits for it).
    let refused = TcpStream::connect(addr).await;
    assert_eq!(
        refused.map(drop).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    timeout(PATIENCE, idle.driver)
        .await
        .expect("the idle connection is closed at once")
        .unwrap()
        .expect("a clean close");
    assert!(
        !running.run.is_finished(),
        "the slow request holds the wait"
    );

    let released = Instant::now();
    running.release.add_permits(1);
    let (answer, answered, driver) = slow.await.unwrap();
    let (response, body) = answer.expect("the slow request completes");
    assert_eq!(
        (response.status(), body.as_str()),
        (StatusCode::OK, "slow done\n")
    );
    assert_eq!(
        response.headers().get(http::header::CONNECTION).unwrap(),
        "close",
        "a response finished after intake stopped tells the client not to reuse the connection"
    );
    timeout(PATIENCE, driver)
        .await
        .expect("the connection closes after the response")
        .unwrap()
        .expect("a clean close");
    let outcome = finish(running.run).await;
    let finished = Instant::now();
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    assert!(answered >= released);
    assert!(
        finished - released < Duration::from_secs(1),
        "the exit follows the last response, not the deadline: {:?}",
        finished - released
    );
    let counters = running.server.counters();
    assert_eq!(
        (
            counters.requests,
            counters.completed,
            counters.cut,
            counters.aborted
        ),
        (2, 2, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_sees_goaway_and_its_open_stream_completes() {
    let (mut running, addr) = tcp_server(Duration::from_secs(30)).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = Request::get(format!("http://{addr}/slow"))
        .body(())
        .unwrap();
    let (open, _) = client.send_request(request, true).unwrap();
    assert_eq!(next_started(&mut running).await, "slow");

    running.handle.stop();
    running.handle.draining().await;
    assert!(!running.run.is_finished(), "the open stream holds the wait");
    running.release.add_permits(1);
    let response = timeout(PATIENCE, open)
        .await
        .unwrap()
        .expect("the open stream completes");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(text, b"slow done\n");
    // The server said GOAWAY and closed once the stream was done.
    timeout(PATIENCE, driver)
        .await
        .expect("the connection closes")
        .unwrap()
        .expect("a graceful HTTP/2 close");
    let refused = client
        .send_request(
            Request::get(format!("http://{addr}/")).body(()).unwrap(),
            true,
        )
        .map(drop)
        .expect_err("no new stream after GOAWAY");
    assert!(
        refused.is_go_away() && refused.is_remote(),
        "the server sent GOAWAY: {refused:?}"
    );
    let outcome = finish(running.run).await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    assert_eq!(running.server.counters().completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_ignore_the_drain_are_cut_counted_and_named() {
    // A 1 s budget: the drain deadline is 800 ms after the stop.
    let (mut running, addr) = tcp_server(Duration::from_secs(1)).await;
    let mut stuck = H1::open(addr).await;
    let stuck = tokio::spawn(async move { stuck.get("/stuck").await.map(drop) });
    assert_eq!(next_started(&mut running).await, "stuck");
    let mut streaming = H1::open(addr).await;
    streaming.sender.ready().await.unwrap();
    let response = streaming
        .sender
        .send_request(
            Request::get("/stream")
                .header(http::header::HOST, "127.0.0.1")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first\n");
    assert_eq!(running.handle.in_flight(), 2);
    // While they run, the lifecycle's snapshot (and `SIGTTIN` dump) names both: the server is
    // its work source, the requests plain guards.
    let mut listed: Vec<String> = running
        .handle
        .snapshot()
        .work
        .into_iter()
        .map(|item| item.name)
        .collect();
    listed.sort();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (name, path) in listed.iter().zip(["/stream", "/stuck"]) {
        assert!(
            name.starts_with(&format!("http GET {path} from 127.0.0.1:")),
            "{name}"
        );
    }

    let stopped = Instant::now();
    running.handle.stop();
    let outcome = finish(running.run).await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(800),
        "they were work until the deadline"
    );
    assert_eq!(outcome.exit_code(), 2, "{outcome:?}");
    assert!(outcome.forced());
    // The lifecycle's stuck-work report names both, with their age at the deadline.
    let mut named = outcome.stuck_work().to_vec();
    named.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(named.len(), 2, "{named:?}");
    for (item, path) in named.iter().zip(["/stream", "/stuck"]) {
        let prefix = format!("http GET {path} from 127.0.0.1:");
        assert!(item.name.starts_with(&prefix), "{item:?} names {prefix}…");
        assert_eq!(item.phase, lifecycle_hooks::Phase::RUNNING, "{item:?}");
        assert!(item.age >= Duration::from_millis(800), "{item:?}");
    }
    // Neither answered within the cancel grace: the server cut both in the exit phase.
    assert_eq!((outcome.cancelled_work(), outcome.outlived_grace()), (2, 2));
    let counters = running.server.counters();
    assert_eq!(
        (
            counters.requests,
            counters.completed,
            counters.cut,
            counters.in_flight
        ),
        (2, 0, 2, 0)
    );
    // The Outcome says so too: cut versus completed, in the close hook's report.
    assert_eq!(
        outcome.hook("http:close").unwrap().note.as_deref(),
        Some("requests completed=0 cut=2 aborted=0"),
        "{outcome:?}"
    );
    // Both clients see their connection end without a (complete) answer.
    timeout(PATIENCE, stuck)
        .await
        .unwrap()
        .unwrap()
        .expect_err("the stuck request is cut");
    let rest = timeout(PATIENCE, body.collect()).await.unwrap();
    assert!(rest.is_err(), "the endless body is cut: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_line_is_not_work() {
    let (running, addr) = tcp_server(Duration::from_secs(30)).await;
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /wo").await.unwrap();
    // A full request on another connection proves the server has read what it was sent.
    let mut other = H1::open(addr).await;
    other.get("/").await.unwrap();

    running.handle.stop();
    let outcome = finish(running.run).await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    assert!(!outcome.forced() && outcome.stuck_work().is_empty());
    assert!(outcome.stop_elapsed() < Duration::from_secs(2));
    // The exit hook closed the half-sent connection.
    let mut rest = Vec::new();
    let read = timeout(PATIENCE, half.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(
        read.is_err() || rest.is_empty(),
        "closed without an answer: {read:?} {rest:?}"
    );
    assert_eq!(running.server.counters().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_while_the_listener_still_accepts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = start(
        listener,
        Duration::from_secs(30),
        Some(Duration::from_secs(2)),
    )
    .await;
    let mut probe = H1::open(addr).await;
    let (response, body) = probe.get("/ready").await.unwrap();
    assert_eq!(
        (response.status(), body.as_str()),
        (StatusCode::OK, "ready\n")
    );

    running.handle.stop();
    running
        .handle
        .readiness()
        .wait_for(|ready| !*ready)
        .await
        .unwrap();
    // Inside the propagation delay: a new connection is still accepted, and told 503.
    let mut fresh = H1::open(addr).await;
    let (response, body) = fresh.get("/ready").await.unwrap();
    assert_eq!(
        (response.status(), body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    );
    assert!(!running.handle.intake_stopped().is_reached());
    // Requests other than the probe are still served, and see no drain yet.
    let (_, body) = fresh.get("/draining").await.unwrap();
    assert_eq!(body, "false\n");

    let outcome = finish(running.run).await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    assert_eq!(
        TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "the listener closed at stop_intake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_unix_socket() {
    let path = std::env::temp_dir().join(format!(
        "lifecycle-hooks-http-{}-{}.sock",
        std::process::id(),
        line!()
    ));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let running = start(listener, Duration::from_secs(30), None).await;
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    let driver = tokio::spawn(connection);
    let request = Request::get("/")
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello\n");

    running.handle.stop();
    let outcome = finish(running.run).await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    timeout(PATIENCE, driver).await.unwrap().unwrap().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(running.server.counters().completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hooks_start_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = HttpServer::builder(listener, Router::new()).build();
    let first = testing::builder().hooks(server.hooks()).build().unwrap();
    testing::stop_when_ready(&first.handle());
    assert_eq!(first.run().await.exit_code(), 0);
    let second = testing::builder().hooks(server.hooks()).build().unwrap();
    let outcome = second.run().await;
    assert_eq!(outcome.exit_code(), 1);
    let failure = outcome.failures().join("\n");
    assert!(
        failure.contains("HTTP server `http` was already started"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_clients_sending_through_the_stop_see_no_failed_request() {
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;

    const LOOPS: usize = 4;
    let (running, addr) = tcp_server(Duration::from_secs(30)).await;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let (warm_tx, mut warm) = mpsc::unbounded_channel();
    let loops: Vec<_> = (0..LOOPS)
        .map(|_| {
            let client = client.clone();
            let warm = warm_tx.clone();
            tokio::spawn(async move {
                let mut answered = 0_usize;
                loop {
                    let request = Request::get(format!("http://{addr}/"))
                        .body(Empty::new())
                        .unwrap();
                    match client.request(request).await {
                        Ok(response) => {
                            assert_eq!(response.status(), StatusCode::OK);
                            let body = response.into_body().collect().await;
                            assert_eq!(body.expect("a whole body").to_bytes(), "hello\n");
                            answered += 1;
                            if answered == 2 {
                                let _ = warm.send(());
                            }
                        }
                        // The listener closed: this instance is out of rotation, the request
                        // was never accepted (a balancer sends it elsewhere).
                        Err(error) if error.is_connect() => return answered,
                        Err(error) => panic!(
                            "a request failed on an accepted connection after {answered} answers: {error:?}"
                        ),
                    }
                }
            })
        })
        .collect();
    for _ in 0..LOOPS {
        timeout(PATIENCE, warm.recv()).await.unwrap().unwrap();
    }
    running.handle.stop();
    let mut answered = 0;
    for one in loops {
        answered += timeout(PATIENCE, one).await.unwrap().unwrap();
    }
    let outcome = finish(running.run).await;
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    let counters = running.server.counters();
    assert_eq!(counters.completed as usize, answered, "{counters:?}");
    assert_eq!((counters.cut, counters.aborted), (0, 0), "{counters:?}");
}

/// `keep_alive_grace(Duration::MAX)`: the grace's end saturates instead of overflowing. Before,
/// `idle + grace` panicked at the halt inside the accept loop, so `stop_accepting` never saw the
/// listener close and the stop hung until its hook timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_grace_of_duration_max_does_not_break_the_stop() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (started, _) = mpsc::unbounded_channel();
    let gate = Gate {
        started,
        release: Arc::new(Semaphore::new(0)),
    };
    let server = HttpServer::builder(listener, app(gate))
        .keep_alive_grace(Duration::MAX)
        .build();
    let lifecycle = testing::builder()
        .budget(Duration::from_secs(2))
        .hooks(server.hooks())
        .build()
        .expect("a valid graph");
    let handle = lifecycle.handle();
    let run = tokio::spawn(lifecycle.run());
    handle.readiness().wait_for(|ready| *ready).await.unwrap();
    let mut client = H1::open(addr).await;
    let (response, _) = client.get("/").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    handle.stop();
    let outcome = finish(run).await;
    // The idle connection is held through the (endless) grace until the drain deadline, then
    // cut: the stop ends within its 2 s budget, every hook having run to its end.
    assert!(
        outcome.stop_elapsed() < Duration::from_secs(2),
        "{outcome:?}"
    );
    for hook in ["http:stop_accepting", "http:close"] {
        let report = outcome.hook(hook).expect("the hook ran");
        assert!(
            matches!(report.result, lifecycle_hooks::HookResult::Ok),
            "{hook}: {outcome:?}"
        );
    }
    // New connections are refused: the listener closed.
    assert!(TcpStream::connect(addr).await.is_err());
}
