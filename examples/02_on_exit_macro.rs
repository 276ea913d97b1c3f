//! A small order service whose cleanup is declared with the hook attributes: the producer is
//! closed in `#[on_exit]`, which runs only after every job has finished, so a job that is still
//! publishing during the stop never meets a closed producer (Sidekiq's `:exit`, the fix for
//! Karafka's `ProducerClosedError`).
//!
//! Three jobs are in flight when the stop arrives; each publishes once it is done. The hooks
//! (`stop_accepting`, `announce`, `flush_metrics`, `close_producer`) are declared below with
//! `#[on_stop_intake]`, `#[on_shutdown]` and `#[on_exit]`, and collected with
//! `Builder::registered_hooks()`. It prints one line per step:
//!
//! ```text
//! ready pid=4242
//! intake stopped: no new orders
//! hook stop_intake stop_accepting ok
//! shutting down (stop): jobs may still be running
//! hook shutdown announce ok
//! job 0 published order-0
//! job 1 published order-1
//! job 2 published order-2
//! metrics flushed
//! hook exit flush_metrics ok
//! producer closed after 3 messages
//! hook exit close_producer ok
//! summary reason=stop exit_code=0 failed_jobs=0
//! ```
//!
//! Try: `cargo run --example 02_on_exit_macro`, then `kill -TERM <pid>` (status 0) or
//! `kill -USR2 <pid>` (a restart: status 4). Flags: `--stop-after-ms N` stops by itself;
//! `--job-ms N` is how long the jobs still run after the stop (default 300);
//! `--close-in-shutdown` also closes the producer in `#[on_shutdown]`, the wrong place, and the
//! jobs fail with "producer closed".

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use lifecycle_hooks::{
    Event, HookContext, Lifecycle, Outcome, hooks, on_exit, on_shutdown, on_stop_intake,
};

/// The stand-in for a Kafka producer: it accepts messages until it is closed.
struct Producer {
    open: AtomicBool,
    sent: AtomicUsize,
}

/// What `publish` returns once the producer is closed.
#[derive(Debug)]
struct ProducerClosed;

impl fmt::Display for ProducerClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("producer closed")
    }
}

impl std::error::Error for ProducerClosed {}

impl Producer {
    const fn new() -> Self {
        Producer {
            open: AtomicBool::new(true),
            sent: AtomicUsize::new(0),
        }
    }

    fn publish(&self, _message: &str) -> Result<(), ProducerClosed> {
        // SeqCst: `close` and `publish` run on different tasks; one total order keeps
        // "published" and "closed" consistent with what the closing hook reports.
        if !self.open.load(Ordering::SeqCst) {
            return Err(ProducerClosed);
        }
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Closes the producer; returns how many messages it sent, or `None` if it was closed.
    fn close(&self) -> Option<usize> {
        // SeqCst: see `publish`.
        self.open
            .swap(false, Ordering::SeqCst)
            .then(|| self.sent.load(Ordering::SeqCst))
    }
}

static PRODUCER: Producer = Producer::new();

/// Prints one line and flushes it, so a reader sees it at once.
fn say(line: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[on_stop_intake]
fn stop_accepting() {
    say(format_args!("intake stopped: no new orders"));
}

#[on_shutdown]
async fn announce(ctx: HookContext) {
    let reason = ctx.reason().map_or("unknown", |r| r.as_str());
    say(format_args!(
        "shutting down ({reason}): jobs may still be running"
    ));
}

#[on_exit]
async fn flush_metrics() {
    say(format_args!("metrics flushed"));
}

/// Closes the producer once every job is done, after the metrics are flushed, within 5 s.
#[on_exit(after = flush_metrics, timeout = "5s")]
async fn close_producer() -> Result<(), ProducerClosed> {
    match PRODUCER.close() {
        Some(sent) => say(format_args!("producer closed after {sent} messages")),
        None => say(format_args!("producer was already closed")),
    }
    Ok(())
}

/// The mistake this framework makes visible: closing in `shutdown`, while jobs still run.
/// `global = false` keeps it out of `registered_hooks()`; `--close-in-shutdown` adds it.
#[on_shutdown(global = false, after = announce)]
fn close_producer_too_early() {
    if let Some(sent) = PRODUCER.close() {
        say(format_args!(
            "producer closed in shutdown after {sent} messages"
        ));
    }
}

fn flag(args: &[String], name: &str) -> Option<u64> {
    let at = args.iter().position(|a| a == name)?;
    let value = args.get(at + 1).and_then(|v| v.parse().ok());
    Some(value.unwrap_or_else(|| panic!("{name} takes a number of milliseconds")))
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
    let job_time = Duration::from_millis(flag(&args, "--job-ms").unwrap_or(300));
    let stop_after = flag(&args, "--stop-after-ms").map(Duration::from_millis);
    let close_in_shutdown = args.iter().any(|a| a == "--close-in-shutdown");

    let mut builder = Lifecycle::builder().registered_hooks();
    if close_in_shutdown {
        builder = builder.hooks(hooks![close_producer_too_early]);
    }
    let lifecycle = builder
        .observe(|event| match event {
            Event::HookFinished {
                phase,
                name,
                result,
                ..
            } => say(format_args!("hook {phase} {name} {result}")),
            Event::Ready => say(format_args!("ready pid={}", std::process::id())),
            _ => {}
        })
        .build()
        .expect("a valid lifecycle graph");

    let handle = lifecycle.handle();
    let failed = std::sync::Arc::new(AtomicUsize::new(0));
    for i in 0..3 {
        // Each job is mid-way when the stop arrives, and publishes its result when done.
        let draining = handle.draining();
        let failed = failed.clone();
        handle.spawn(async move {
            draining.await;
            tokio::time::sleep(job_time).await;
            let message = format!("order-{i}");
            match PRODUCER.publish(&message) {
                Ok(()) => say(format_args!("job {i} published {message}")),
                Err(error) => {
                    // Relaxed: read once, after every job has ended.
                    failed.fetch_add(1, Ordering::Relaxed);
                    say(format_args!("job {i} failed: {error}"));
                }
            }
        });
    }
    if let Some(delay) = stop_after {
        let handle = handle.clone();
        tokio::spawn(async move {
            handle.readiness().wait_for(|ready| *ready).await.ok();
            tokio::time::sleep(delay).await;
            handle.stop();
        });
    }

    let outcome = lifecycle.run().await;
    say(format_args!(
        "summary reason={} exit_code={} failed_jobs={}",
        outcome.reason(),
        outcome.exit_code(),
        failed.load(Ordering::Relaxed)
    ));
    outcome
}
