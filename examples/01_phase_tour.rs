//! A tour of the phase graph: one hook in each of startup, stop_intake, shutdown and exit, and
//! three tracked work items that finish `--work-ms` after the drain begins.
//!
//! It prints one line per step on stdout, which the process tests read:
//!
//! ```text
//! phase startup
//! hook startup warm_cache ok
//! phase running
//! ready pid=4242
//! phase stop_intake
//! ...
//! work done 0
//! hook shutdown announce ok
//! ...
//! hook exit close_producer ok
//! summary reason=stop exit_code=0 forced=false
//! ```
//!
//! Try: `cargo run --example 01_phase_tour`, then `kill -TERM <pid>` (or `-USR2`, `-TSTP`, twice
//! `-TERM` with `--hook-ms 60000`, or `--work-ms 60000 --shutdown-timeout-ms 2000`).
//! Flags: `--work-ms N` (default 200), `--hook-ms N` (the shutdown hook, default 50),
//! `--exit-hook-ms N` (the exit hook, default 0), `--startup-ms N` (the startup hook, default 0),
//! `--shutdown-timeout-ms N` (default 25000), and `--linger`: after the summary, print
//! `lingering` and block instead of exiting, as a process stuck after its run would (a later
//! `SIGTERM` must still end it: the run gives the signals their default action back).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use lifecycle_hooks::{Event, Lifecycle, Outcome};

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
            .unwrap_or_else(|| panic!("{name} takes a number of milliseconds")),
        None => default,
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
    let work = Duration::from_millis(flag(&args, "--work-ms", 200));
    let hook = Duration::from_millis(flag(&args, "--hook-ms", 50));
    let exit_hook = Duration::from_millis(flag(&args, "--exit-hook-ms", 0));
    let budget = Duration::from_millis(flag(&args, "--shutdown-timeout-ms", 25_000));
    let startup = Duration::from_millis(flag(&args, "--startup-ms", 0));
    let linger = args.iter().any(|a| a == "--linger");

    let lifecycle = Lifecycle::builder()
        .budget(budget)
        .on_startup("warm_cache", move |_ctx| async move {
            if !startup.is_zero() {
                tokio::time::sleep(startup).await;
            }
        })
        .on_stop_intake("close_listener", |_ctx| async {})
        .on_shutdown("announce", move |_ctx| async move {
            tokio::time::sleep(hook).await;
        })
        .on_exit("close_producer", move |_ctx| async move {
            tokio::time::sleep(exit_hook).await;
        })
        .observe(|event| match event {
            Event::PhaseStarted { phase } => say(format_args!("phase {phase}")),
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
    for i in 0..3 {
        let draining = handle.draining();
        handle.spawn(async move {
            draining.await;
            tokio::time::sleep(work).await;
            say(format_args!("work done {i}"));
        });
    }

    let outcome = lifecycle.run().await;
    say(format_args!(
        "summary reason={} exit_code={} forced={}",
        outcome.reason(),
        outcome.exit_code(),
        outcome.forced()
    ));
    if linger {
        say(format_args!("lingering"));
        // Blocks the runtime's thread for good, like a task stuck in blocking code.
        loop {
            std::thread::park();
        }
    }
    outcome
}
