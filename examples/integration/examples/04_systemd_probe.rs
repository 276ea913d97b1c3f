//! A service whose tokio runtime can be made to stall, to show what systemd's watchdog does with
//! it (`tests/systemd.rs`). Under `WatchdogSec=` the lifecycle sends `WATCHDOG=1` from its own
//! runtime; with `--stall-after-ms N`, N ms after it is ready a task blocks the runtime's only
//! thread (a blocking sleep, as a hook stuck in a synchronous call would), so the pings stop and
//! systemd kills the service with `Result=watchdog`. Without the flag it is a healthy, idle
//! service that stops on `SIGTERM` (status 0) and restarts on `SIGUSR2` (status 4).
//!
//! stdout: `ready pid=<pid>`, `stalling` when the runtime is about to block, and a last
//! `summary reason=... exit_code=... forced=...` line when it ends normally.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use lifecycle_hooks::{Event, Lifecycle, Outcome};

/// Prints one line and flushes it, so a reader sees it at once.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// One runtime thread: a task that blocks it stalls the whole runtime, watchdog pings included.
#[tokio::main(flavor = "current_thread")]
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
    let stall_after = args.iter().position(|a| a == "--stall-after-ms").map(|at| {
        let ms = args.get(at + 1).and_then(|v| v.parse().ok());
        Duration::from_millis(ms.expect("--stall-after-ms takes a number of milliseconds"))
    });

    let lifecycle = Lifecycle::builder()
        .observe(|event| {
            if let Event::Ready = event {
                say(format_args!("ready pid={}", std::process::id()));
            }
        })
        .build()
        .expect("a valid lifecycle graph");
    if let Some(after) = stall_after {
        let handle = lifecycle.handle();
        tokio::spawn(async move {
            let mut ready = handle.readiness();
            let _ = ready.wait_for(|ready| *ready).await;
            tokio::time::sleep(after).await;
            say(format_args!("stalling"));
            // Deliberately blocks the runtime: this is the fault the watchdog exists for.
            std::thread::sleep(Duration::from_secs(3600));
        });
    }
    let outcome = lifecycle.run().await;
    say(format_args!(
        "summary reason={} exit_code={} forced={}",
        outcome.reason(),
        outcome.exit_code(),
        outcome.forced()
    ));
    outcome
}
