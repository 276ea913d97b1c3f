//! A hello-world route through the adapter versus plain `axum::serve`, side by side in one run:
//! the same `Router`, the same 2-worker tokio runtime, the same in-process load of HTTP/1.1
//! keep-alive clients on 127.0.0.1.
//!
//! Two parts:
//!
//! - criterion (`hello/adapter`, `hello/axum_serve`): the time for a batch of requests spread
//!   over 16 connections, as requests per second;
//! - paired rounds after it: the two servers alternate, round after round, and every request's
//!   latency is recorded, so throughput and p99 come from the same interleaved conditions.
//!   Printed as a table at the end, with the median of the per-round adapter/axum_serve ratios
//!   (a burst of load from elsewhere skews one pair, not the median).
//!
//! `cargo bench -p lifecycle-hooks-http --bench hello`; figures in `BENCHMARKS.md`.
//! `HELLO_ONLY=adapter|axum_serve HELLO_N=<n>` sends n requests to one server and exits (for
//! callgrind's instruction counts, which a busy machine does not skew).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use lifecycle_hooks::{LifecycleHandle, testing};
use lifecycle_hooks_http::HttpServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Client connections per server, each sending its requests one after the other.
const CONNECTIONS: usize = 16;
/// Requests per criterion iteration.
const BATCH: usize = 1_600;
/// Paired rounds, and requests per server per round.
const ROUNDS: usize = 30;
const PER_ROUND: usize = 16_000;

fn app() -> Router {
    Router::new().route("/", get(|| async { "Hello, World!" }))
}

struct Servers {
    adapter: SocketAddr,
    plain: SocketAddr,
    /// Keeps the adapter's lifecycle running.
    _handle: LifecycleHandle,
}

async fn servers() -> Servers {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let adapter = listener.local_addr().unwrap();
    let server = HttpServer::builder(listener, app()).build();
    let lifecycle = testing::builder().hooks(server.hooks()).build().unwrap();
    let handle = lifecycle.handle();
    tokio::spawn(lifecycle.run());
    handle.readiness().wait_for(|ready| *ready).await.unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app()).await });
    Servers {
        adapter,
        plain,
        _handle: handle,
    }
}

/// Keep-alive connections to one server.
struct Clients {
    senders: Vec<SendRequest<Empty<Bytes>>>,
}

impl Clients {
    async fn open(addr: SocketAddr) -> Clients {
        let mut senders = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(connection);
            senders.push(sender);
        }
        Clients { senders }
    }

    /// Sends `total` requests spread over the connections; each request's latency is pushed
    /// to `latencies` when given. Returns the wall time.
    async fn load(&mut self, total: usize, mut latencies: Option<&mut Vec<Duration>>) -> Duration {
        let per = total / self.senders.len();
        let record = latencies.is_some();
        let started = Instant::now();
        let tasks: Vec<_> = self
            .senders
            .drain(..)
            .map(|mut sender| {
                tokio::spawn(async move {
                    let mut own = Vec::with_capacity(if record { per } else { 0 });
                    for _ in 0..per {
                        let sent = Instant::now();
                        sender.ready().await.unwrap();
                        let request = Request::get("/")
                            .header(http::header::HOST, "127.0.0.1")
                            .body(Empty::new())
                            .unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        assert_eq!(response.status(), StatusCode::OK);
                        response.into_body().collect().await.unwrap();
                        if record {
                            own.push(sent.elapsed());
                        }
                    }
                    (sender, own)
                })
            })
            .collect();
        for task in tasks {
            let (sender, own) = task.await.unwrap();
            self.senders.push(sender);
            if let Some(all) = latencies.as_deref_mut() {
                all.extend(own);
            }
        }
        started.elapsed()
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn criterion_part(c: &mut Criterion, rt: &Runtime, servers: &Servers) {
    let mut group = c.benchmark_group("hello");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, addr) in [("adapter", servers.adapter), ("axum_serve", servers.plain)] {
        let mut clients = rt.block_on(Clients::open(addr));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += clients.load(BATCH, None).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

struct Tally {
    requests: usize,
    time: Duration,
    latencies: Vec<Duration>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            time: Duration::ZERO,
            latencies: Vec::with_capacity(ROUNDS * PER_ROUND),
        }
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.time.as_secs_f64()
    }

    fn quantile(&mut self, q: f64) -> Duration {
        self.latencies.sort_unstable();
        let at = ((self.latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        self.latencies[at]
    }
}

fn paired_rounds(rt: &Runtime, servers: &Servers) {
    let (mut adapter, mut plain) = rt.block_on(async {
        (
            Clients::open(servers.adapter).await,
            Clients::open(servers.plain).await,
        )
    });
    let mut tallies = [Tally::new(), Tally::new()];
    // Per round: adapter/axum_serve throughput and p99 ratios of the two adjacent runs, so a
    // burst of load from elsewhere skews one pair, not the summary (their median).
    let mut rate_ratios = Vec::with_capacity(ROUNDS);
    let mut p99_ratios = Vec::with_capacity(ROUNDS);
    rt.block_on(async {
        // One unrecorded round each to warm up.
        adapter.load(PER_ROUND, None).await;
        plain.load(PER_ROUND, None).await;
        for round in 0..ROUNDS {
            // Alternate which goes first, so neither always follows the other.
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut pair = [(Duration::ZERO, Duration::ZERO); 2];
            for which in order {
                let clients = if which == 0 { &mut adapter } else { &mut plain };
                let mut latencies = Vec::with_capacity(PER_ROUND);
                let time = clients.load(PER_ROUND, Some(&mut latencies)).await;
                let tally = &mut tallies[which];
                tally.time += time;
                tally.requests += PER_ROUND;
                latencies.sort_unstable();
                pair[which] = (time, latencies[PER_ROUND * 99 / 100 - 1]);
                tally.latencies.extend(latencies);
            }
            // Throughput ratio = inverse time ratio.
            rate_ratios.push(pair[1].0.as_secs_f64() / pair[0].0.as_secs_f64());
            p99_ratios.push(pair[0].1.as_secs_f64() / pair[1].1.as_secs_f64());
        }
    });
    let [mut a, mut p] = tallies;
    let (a_rate, p_rate) = (a.rate(), p.rate());
    let (a50, p50) = (a.quantile(0.50), p.quantile(0.50));
    let (a99, p99) = (a.quantile(0.99), p.quantile(0.99));
    let rate_median = median(&mut rate_ratios);
    let p99_median = median(&mut p99_ratios);
    println!();
    println!(
        "paired rounds: {ROUNDS} x {PER_ROUND} requests per server, {CONNECTIONS} keep-alive connections"
    );
    println!("| server | requests/s | p50 | p99 |");
    println!("|---|---|---|---|");
    println!("| adapter | {a_rate:.0} | {a50:?} | {a99:?} |");
    println!("| axum_serve | {p_rate:.0} | {p50:?} | {p99:?} |");
    println!(
        "adapter/axum_serve over all rounds: throughput {:.3}x ({:+.1} %), p99 {:.3}x ({:+.1} %)",
        a_rate / p_rate,
        (a_rate / p_rate - 1.0) * 100.0,
        a99.as_secs_f64() / p99.as_secs_f64(),
        (a99.as_secs_f64() / p99.as_secs_f64() - 1.0) * 100.0
    );
    println!(
        "adapter/axum_serve, median of per-round pairs: throughput {rate_median:.3}x ({:+.1} %), p99 {p99_median:.3}x ({:+.1} %)",
        (rate_median - 1.0) * 100.0,
        (p99_median - 1.0) * 100.0
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn hello(c: &mut Criterion) {
    let rt = runtime();
    let servers = rt.block_on(servers());
    if let Ok(only) = std::env::var("HELLO_ONLY") {
        // For profiles: `HELLO_ONLY=adapter|axum_serve HELLO_N=<n>` sends n requests to one
        // server and stops; under callgrind, per request = ΔIr / Δn between two sizes.
        let addr = match only.as_str() {
            "adapter" => servers.adapter,
            "axum_serve" => servers.plain,
            other => panic!("HELLO_ONLY: adapter or axum_serve, not {other}"),
        };
        let n = std::env::var("HELLO_N").map_or(16_000, |n| n.parse().expect("HELLO_N: a count"));
        rt.block_on(async {
            let mut clients = Clients::open(addr).await;
            clients.load(n, None).await;
        });
        std::process::exit(0);
    }
    criterion_part(c, &rt, &servers);
    paired_rounds(&rt, &servers);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(10);
    targets = hello
}
criterion_main!(benches);
