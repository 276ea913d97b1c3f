//! Process tests for `examples/03_axum.rs`: real HTTP clients keep requests going against the real
//! binary while it receives a real `SIGTERM`. Every request sent while the server said it was
//! ready gets a 2xx, `/ready` turns 503 before the listener closes, requests in flight outlive the
//! listener, and the process exits 0; a request longer than the drain deadline is cancelled and the
//! exit is forced (status 2). A client that sent half a request line, or an idle keep-alive one,
//! does not hold the stop; the SSE stream ends cleanly and the WebSocket closes with 1001 when the
//! service drains.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;
use support::{PATIENCE, Service};
use tokio::net::TcpStream;

/// Client tasks that keep `/work` requests going.
const CLIENTS: usize = 4;

/// The running example and the address it serves.
struct Server {
    service: Service,
    addr: SocketAddr,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut all = vec!["--port", "0"];
        all.extend(args);
        let service = Service::start("03_axum", &all, &[]);
        let ready = service.seen.last().expect("the ready line").clone();
        let addr: SocketAddr = ready
            .split_once(" addr=")
            .expect("ready names its address")
            .1
            .parse()
            .expect("ready names ip:port");
        assert!(addr.ip().is_loopback(), "listens on 127.0.0.1 only");
        assert_ne!(addr.port(), 0, "--port 0 picks a free port");
        Server { service, addr }
    }

    fn expect(&mut self, matches: impl Fn(&str) -> bool) -> String {
        self.service.expect(matches)
    }

    fn signal(&self, signal: Signal) {
        self.service.signal(signal);
    }

    fn finish(self) -> (Vec<String>, std::process::ExitStatus) {
        self.service.finish()
    }
}

/// One HTTP/1.1 keep-alive connection.
struct Connection {
    sender: SendRequest<Empty<Bytes>>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    /// `GET path`: the status and body, or the transport error as text.
    async fn get(&mut self, path: &str) -> Result<(StatusCode, String), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let request = Request::get(path)
            .header(hyper::header::HOST, "127.0.0.1")
            .body(Empty::new())
            .unwrap();
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    }
}

/// A `/work` request as one client saw it.
#[derive(Debug)]
struct WorkRecord {
    path: String,
    /// Whether the client sent it after `/ready` had said 503 (inside the propagation window).
    after_flip: bool,
    ended: Instant,
    result: Result<(StatusCode, String), String>,
}

/// A client that behaves like a load balancer in front of one instance: before each request it
/// asks `/ready`; while the answer is 200 it sends `/work` requests of varying length. When
/// `/ready` turns 503 it sends one last long request (a request already routed when the
/// instance left rotation) and stops; a `/ready` that fails at the transport level counts as not
/// ready too, as in Kubernetes. It reports on `warm` after its second completed request.
async fn client(
    addr: SocketAddr,
    index: usize,
    warm: tokio::sync::mpsc::UnboundedSender<()>,
) -> Vec<WorkRecord> {
    let mut connection = Connection::open(addr).await.expect("the server accepts");
    let mut records = Vec::new();
    let give_up = Instant::now() + PATIENCE;
    for round in 0.. {
        assert!(
            Instant::now() < give_up,
            "client {index}: /ready never flipped"
        );
        let after_flip = match connection.get("/ready").await {
            Ok((StatusCode::OK, _)) => false,
            Ok((StatusCode::SERVICE_UNAVAILABLE, body)) => {
                assert_eq!(body, "stopping\n");
                true
            }
            Ok(other) => panic!("client {index}: unexpected /ready answer {other:?}"),
            // The connection closed after a request that outlived the listener: not ready.
            Err(_) => break,
        };
        let ms = if after_flip {
            1000
        } else {
            10 + 30 * ((index + round) % 4)
        };
        let path = format!("/work?ms={ms}");
        let result = connection.get(&path).await;
        records.push(WorkRecord {
            path,
            after_flip,
            ended: Instant::now(),
            result,
        });
        if after_flip {
            break;
        }
        if round == 1 {
            let _ = warm.send(());
        }
    }
    records
}

/// What the health prober saw: when `/ready` first said 503 and when a new connection was first
/// refused (the listener had closed).
#[derive(Debug, Default)]
struct Probe {
    ready_before_stop: usize,
    first_503: Option<Instant>,
    closed: Option<Instant>,
}

/// Polls `/ready` in a loop, reconnecting when the server closes the connection, until a
/// connection is refused.
async fn prober(addr: SocketAddr) -> Probe {
    let mut probe = Probe::default();
    let give_up = Instant::now() + PATIENCE;
    let mut connection = Connection::open(addr).await.expect("the server accepts");
    while Instant::now() < give_up {
        match connection.get("/ready").await {
            Ok((StatusCode::OK, _)) => {
                assert!(probe.first_503.is_none(), "/ready turned 200 again");
                probe.ready_before_stop += 1;
            }
            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {
                probe.first_503.get_or_insert_with(Instant::now);
            }
            Ok(other) => panic!("unexpected /ready answer {other:?}"),
            Err(_) => match Connection::open(addr).await {
                Ok(new) => connection = new,
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    probe.closed = Some(Instant::now());
                    return probe;
                }
                Err(error) => panic!("unexpected connect error: {error}"),
            },
        }
    }
    panic!("the listener never closed: {probe:?}");
}

#[test]
fn term_lets_every_request_finish_and_ready_flips_before_the_listener_closes() {
    let server = Server::start(&["--propagation-ms", "300"]);
    let addr = server.addr;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (records, probe) = runtime.block_on(async {
        let (warm_tx, mut warm) = tokio::sync::mpsc::unbounded_channel();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|index| tokio::spawn(client(addr, index, warm_tx.clone())))
            .collect();
        for _ in 0..CLIENTS {
            tokio::time::timeout(PATIENCE, warm.recv())
                .await
                .expect("every client completes two requests")
                .expect("a client ended early");
        }
        let prober = tokio::spawn(prober(addr));
        server.signal(Signal::SIGTERM);
        let mut records = Vec::new();
        for client in clients {
            records.extend(client.await.expect("a client panicked"));
        }
        (records, prober.await.expect("the prober panicked"))
    });

    // No request failed: every one sent while the server was in rotation got a 2xx, including
    // those sent inside the propagation window.
    for record in &records {
        match &record.result {
            Ok((status, body)) if status.is_success() => {
                assert_eq!(body, &format!("worked {} ms\n", &record.path[9..]));
            }
            _ => panic!("{} failed: {record:?}", record.path),
        }
    }
    assert!(
        records.iter().filter(|r| !r.after_flip).count() >= 2 * CLIENTS,
        "requests ran before the stop: {records:#?}"
    );

    // /ready turned 503 while the listener still accepted: the propagation window.
    let first_503 = probe.first_503.expect("the prober saw /ready say 503");
    let closed = probe.closed.expect("the prober saw the listener close");
    assert!(
        first_503 < closed,
        "/ready flips before the listener closes: {probe:?}"
    );

    // Requests routed before the instance left rotation outlived the listener.
    let late = records
        .iter()
        .filter(|r| r.after_flip && r.ended > closed)
        .count();
    assert!(
        late >= 1,
        "some request in flight when the listener closed still got its answer: {records:#?}"
    );

    let (lines, status) = server.finish();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("summary reason=stop exit_code=0 forced=false"),
        "{lines:#?}"
    );
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_request_longer_than_the_drain_deadline_is_cancelled_and_the_exit_is_forced() {
    // Budget 1 s, so the drain deadline is 800 ms after the signal (a fifth is the exit reserve).
    let mut server = Server::start(&["--shutdown-timeout-ms", "1000"]);
    let addr = server.addr;
    // A worker thread drives the request while this thread reads the server's output.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut connection = runtime
        .block_on(Connection::open(addr))
        .expect("the server accepts");
    let request = runtime.spawn(async move {
        let answer = connection.get("/work?ms=600000").await;
        (answer, Instant::now())
    });
    server.expect(|l| l == "work started ms=600000");
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let (answer, answered) = runtime
        .block_on(async { tokio::time::timeout(PATIENCE, request).await })
        .expect("the request is answered at the drain deadline")
        .expect("the request task panicked");
    let (lines, status) = server.finish();

    assert_eq!(
        answer,
        Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            "cancelled at the drain deadline\n".to_owned()
        ))
    );
    assert!(
        answered - signalled >= Duration::from_millis(800),
        "the request is tracked work: the lifecycle waits for it until the drain deadline"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("summary reason=stop exit_code=2 forced=true"),
        "{lines:#?}"
    );
    assert_eq!(status.code(), Some(2));
}

#[test]
fn half_a_request_line_and_an_idle_client_do_not_hold_a_clean_stop() {
    let server = Server::start(&[]);
    let addr = server.addr;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (mut half, idle_closed) = runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut half = TcpStream::connect(addr).await.expect("the server accepts");
        half.write_all(b"GET /wo").await.unwrap();
        let stream = TcpStream::connect(addr).await.expect("the server accepts");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let idle_closed = tokio::spawn(connection);
        let request = Request::get("/work?ms=1")
            .header(hyper::header::HOST, "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        (half, (idle_closed, sender))
    });
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let (lines, status) = server.finish();
    let exited = signalled.elapsed();

    assert_eq!(
        &lines[lines.len() - 2..],
        [
            "http completed=1 cut=0 aborted=0",
            "summary reason=stop exit_code=0 forced=false"
        ],
        "{lines:#?}"
    );
    assert_eq!(status.code(), Some(0));
    // The drain deadline is 20 s after the signal: neither connection held the stop.
    assert!(exited < Duration::from_secs(5), "the stop took {exited:?}");
    runtime.block_on(async {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(PATIENCE, half.read_to_end(&mut rest))
            .await
            .expect("the half-sent connection is closed");
        assert!(
            read.is_err() || rest.is_empty(),
            "no answer to half a request: {rest:?}"
        );
        let (idle_closed, _sender) = idle_closed;
        tokio::time::timeout(PATIENCE, idle_closed)
            .await
            .expect("the idle keep-alive connection is closed")
            .unwrap()
            .expect("a clean close");
    });
}

#[test]
fn the_event_stream_ends_cleanly_when_the_service_drains() {
    let server = Server::start(&[]);
    let addr = server.addr;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (text, body) = runtime.block_on(async {
        let stream = TcpStream::connect(addr).await.expect("the server accepts");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::get("/events")
            .header(hyper::header::HOST, "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get(hyper::header::CONTENT_TYPE).unwrap(),
            "text/event-stream"
        );
        let mut body = response.into_body();
        let mut text = String::new();
        while !text.contains("data: tick 2\n\n") {
            let frame = tokio::time::timeout(PATIENCE, body.frame())
                .await
                .expect("an event every 100 ms")
                .expect("the stream goes on")
                .expect("a clean frame");
            if let Ok(data) = frame.into_data() {
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        (text, body)
    });
    server.signal(Signal::SIGTERM);
    let text = runtime.block_on(async move {
        let rest = tokio::time::timeout(PATIENCE, body.collect())
            .await
            .expect("the stream ends when the service drains")
            .expect("it ends cleanly, not cut");
        text + std::str::from_utf8(&rest.to_bytes()).unwrap()
    });
    let (lines, status) = server.finish();

    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    let expected: Vec<String> = (0..events.len())
        .map(|n| format!("data: tick {n}"))
        .collect();
    assert_eq!(events, expected, "one event per tick, in order: {text:?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("summary reason=stop exit_code=0 forced=false"),
        "{lines:#?}"
    );
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_websocket_closes_with_going_away_when_the_service_drains() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let server = Server::start(&[]);
    let addr = server.addr;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut socket = runtime.block_on(async {
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .expect("the WebSocket handshake succeeds");
        socket.send(Message::text("hello")).await.unwrap();
        let echo = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("an echo")
            .expect("the socket is open")
            .unwrap();
        assert_eq!(echo, Message::text("hello"));
        socket
    });
    server.signal(Signal::SIGTERM);
    let close = runtime.block_on(async {
        let close = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a close frame when the service drains")
            .expect("the socket is open")
            .unwrap();
        // Reading on completes the closing handshake (tungstenite answers the close frame).
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, socket.next()).await {}
        close
    });
    let (lines, status) = server.finish();

    match close {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Away);
            assert_eq!(u16::from(frame.code), 1001);
            assert_eq!(frame.reason.as_str(), "going away");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some("summary reason=stop exit_code=0 forced=false"),
        "{lines:#?}"
    );
    assert_eq!(status.code(), Some(0));
}
