//! Process tests for `examples/03_axum.rs`: real HTTP clients keep requests going against the real
//! binary while it receives a real `SIGTERM`. Every request sent while the server said it was
//! ready gets a 2xx, `/ready` turns 503 before the listener closes, requests in flight outlive the
//! listener, and the process exits 0; a request longer than the drain deadline is cancelled and the
//! exit is forced (status 2).

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
