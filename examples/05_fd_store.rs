//! A listener and a small state blob that survive the exit-4 restart in systemd's
//! file-descriptor store: the listening socket is taken from `LISTEN_FDS` when systemd passes
//! one named `http` (else bound anew) and stored with `FDSTORE=1`; connections that arrive while
//! no process runs wait in the kernel's backlog for the next one. Each connection gets one line,
//! `hello from pid=<pid>`.
//!
//! It prints `restored state=<text|none>`, `listening addr=<addr>`, `ready pid=<pid>`, and at the
//! end `summary reason=<reason> exit_code=<n> served=<n>`. Flags: `--port N` (default 0: any
//! free port on 127.0.0.1). Under systemd the unit needs `FileDescriptorStoreMax=` and
//! `NotifyAccess=main`; see `docs/operations.md`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lifecycle_hooks::{BoxError, Event, Lifecycle, Outcome};
use tokio::io::AsyncWriteExt;

/// Prints one line and flushes it, so a reader sees it at once.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
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
    let port: u16 = match args.iter().position(|a| a == "--port") {
        Some(at) => args
            .get(at + 1)
            .and_then(|p| p.parse().ok())
            .expect("--port takes a port number"),
        None => 0,
    };
    let served = Arc::new(AtomicU64::new(0));
    let lifecycle = Lifecycle::builder()
        .on_startup("listen", {
            let served = Arc::clone(&served);
            move |ctx: lifecycle_hooks::HookContext| {
                let served = Arc::clone(&served);
                async move {
                    let store = ctx.handle().fd_store();
                    let restored = store
                        .restored_state("greeting")
                        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
                    say(format_args!(
                        "restored state={}",
                        restored.as_deref().unwrap_or("none")
                    ));
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    let listener = store.listener("http", addr)?.into_tokio_tcp()?;
                    say(format_args!("listening addr={}", listener.local_addr()?));
                    let handle = ctx.handle().clone();
                    ctx.handle().spawn(serve(listener, handle, served));
                    Ok::<(), BoxError>(())
                }
            }
        })
        .on_exit("store_state", |ctx| async move {
            let greeting = format!("from pid={}", std::process::id());
            ctx.handle()
                .fd_store()
                .store_state("greeting", greeting.as_bytes())
        })
        .observe(|event| {
            if let Event::Ready = event {
                say(format_args!("ready pid={}", std::process::id()));
            }
        })
        .build()
        .expect("a valid lifecycle graph");
    let outcome = lifecycle.run().await;
    say(format_args!(
        "summary reason={} exit_code={} served={}",
        outcome.reason(),
        outcome.exit_code(),
        served.load(Ordering::Relaxed)
    ));
    outcome
}

/// Answers each connection with one line until intake stops; the listener is then dropped
/// (never shut down), so under systemd its stored copy keeps queuing connections.
async fn serve(
    listener: tokio::net::TcpListener,
    handle: lifecycle_hooks::LifecycleHandle,
    served: Arc<AtomicU64>,
) {
    let mut stopped = std::pin::pin!(handle.intake_stopped().into_future());
    loop {
        let (mut stream, _) = tokio::select! {
            biased;
            () = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
        };
        let line = format!("hello from pid={}\n", std::process::id());
        if stream.write_all(line.as_bytes()).await.is_ok() {
            // Relaxed: a tally read once, after the run.
            served.fetch_add(1, Ordering::Relaxed);
        }
    }
}
