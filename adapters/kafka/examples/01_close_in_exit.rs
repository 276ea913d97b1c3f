//! Why a producer closes in `exit`, not in `shutdown`: three jobs are publishing 20 messages each
//! when the stop comes, and go on while the lifecycle drains. Runs with no broker (librdkafka's
//! mock cluster, embedded), or against one with `--bootstrap-servers HOST:PORT`.
//!
//! ```text
//! $ cargo run -p lifecycle-hooks-kafka --example 01_close_in_exit
//! job 0 sent 20, refused 0 (ended in phase wait)
//! ...
//! hook exit close_producer ok
//! summary exit_code=0 delivered=60 refused_closed=0
//!
//! $ cargo run -p lifecycle-hooks-kafka --example 01_close_in_exit -- --close-on shutdown
//! job 0 sent 2, refused 18 (ended in phase shutdown)
//! ...
//! hook shutdown close_producer ok
//! summary exit_code=0 delivered=6 refused_closed=54
//! ```
//!
//! With `--close-on shutdown` the jobs' remaining messages are refused with `ProducerClosed`:
//! the producer was closed while work was still in flight (Sidekiq's `:shutdown` versus
//! `:exit`). The exact split varies from run to run. The adapter's logs (the close, and the
//! warning that it closes under running work) go to stderr; `RUST_LOG` filters them.

use std::time::Duration;

use lifecycle_hooks::testing::Recorder;
use lifecycle_hooks::{Lifecycle, Phase, Signals};
use lifecycle_hooks_kafka::Producer;
use lifecycle_hooks_kafka::rdkafka::producer::FutureRecord;

const JOBS: usize = 3;
const PER_JOB: usize = 20;

#[tokio::main]
async fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,lifecycle_hooks_kafka=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut close_on = Phase::EXIT;
    let mut servers = None;
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--close-on", Some(phase)) if phase == "exit" => close_on = Phase::EXIT,
            ("--close-on", Some(phase)) if phase == "shutdown" => close_on = Phase::SHUTDOWN,
            ("--bootstrap-servers", Some(value)) => servers = Some(value),
            _ => {
                return Err(format!(
                    "usage: [--close-on exit|shutdown] [--bootstrap-servers HOST:PORT] (got {arg})"
                )
                .into());
            }
        }
    }

    let mut producer = Producer::builder().close_on(close_on);
    if let Some(servers) = servers {
        producer = producer.bootstrap_servers(servers);
    }
    let producer = producer.build()?;
    let recorder = Recorder::new();
    let lifecycle = Lifecycle::builder()
        .signals(Signals::none())
        .budget(Duration::from_secs(10))
        .hook(producer.hook())
        .observe(recorder.observer())
        .build()?;
    let handle = lifecycle.handle();

    let (started, mut all_started) = tokio::sync::mpsc::channel::<()>(JOBS);
    for job in 0..JOBS {
        let (producer, handle, started) = (producer.clone(), handle.clone(), started.clone());
        handle.clone().spawn(async move {
            let (mut sent, mut closed) = (0, 0);
            for i in 0..PER_JOB {
                let payload = format!("job {job} message {i}");
                let record = FutureRecord::<str, str>::to("orders").payload(&payload);
                match producer.send(record).await {
                    Ok(_) => sent += 1,
                    Err(error) if error.is_closed() => closed += 1,
                    Err(error) => eprintln!("job {job}: {error}"),
                }
                if i == 0 {
                    let _ = started.send(()).await;
                }
            }
            println!(
                "job {job} sent {sent}, refused {closed} (ended in phase {})",
                handle.phase()
            );
        });
    }
    // Stop once every job is publishing: the stop finds them all in flight.
    drop(started);
    for _ in 0..JOBS {
        all_started.recv().await;
    }
    handle.stop();
    let outcome = lifecycle.run().await;
    for line in recorder.trace() {
        if line.starts_with("hook ") {
            println!("{line}");
        }
    }
    let stats = producer.stats();
    println!(
        "summary exit_code={} delivered={} refused_closed={}",
        outcome.exit_code(),
        stats.delivered,
        stats.refused_closed
    );
    Ok(std::process::ExitCode::from(outcome.exit_code()))
}
