//! A restart during startup keeps the fd store whole: the inherited listener this start never
//! reached (its claiming hook was cut off) is neither closed nor removed from systemd's store,
//! so the next process gets it. One test in a binary of its own: it gives this very process an
//! inherited descriptor (fd 3, `LISTEN_PID` = our pid), as systemd would.

use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use lifecycle_hooks::{HookSpec, Phase, testing};
use tokio::sync::Notify;

#[test]
fn a_restart_during_startup_leaves_unclaimed_listeners_in_the_store() {
    // Before any runtime or thread exists: fd 3 becomes a listening socket, and the listen
    // variables name it for this process.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Handed over to the "service manager" side: from here fd 3 is owned by nobody in this
    // process until the lifecycle adopts it, as an inherited descriptor is.
    let fd = listener.into_raw_fd();
    if fd != 3 {
        nix::unistd::dup2(fd, 3).expect("fd 3 is ours to set");
        nix::unistd::close(fd).expect("the original closed");
    }
    // SAFETY: the only other thread is the test harness's main thread, waiting for this, the
    // binary's only test; no runtime exists yet, so nothing reads the environment meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("LISTEN_PID", std::process::id().to_string());
        std::env::set_var("LISTEN_FDS", "1");
        std::env::set_var("LISTEN_FDNAMES", "http");
    }
    let dir = std::env::temp_dir().join(format!("lh-fdstore-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_nonblocking(true).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let outcome = runtime.block_on(async {
        let entered = Arc::new(Notify::new());
        let lifecycle = testing::builder()
            .notify_socket(path.to_str().unwrap(), None)
            .budget(Duration::from_secs(5))
            // A slow startup hook that has read the store already (a restored state), then the
            // one that would claim the listener.
            .hook(HookSpec::new(Phase::STARTUP, "warm_cache", {
                let entered = Arc::clone(&entered);
                move |ctx: lifecycle_hooks::HookContext| {
                    let entered = Arc::clone(&entered);
                    async move {
                        assert!(ctx.handle().fd_store().restored_state("cache").is_none());
                        entered.notify_one();
                        std::future::pending::<()>().await
                    }
                }
            }))
            .hook(
                HookSpec::new(
                    Phase::STARTUP,
                    "listen",
                    move |ctx: lifecycle_hooks::HookContext| async move {
                        ctx.handle().fd_store().listener("http", addr).map(drop)
                    },
                )
                .after("warm_cache"),
            )
            .build()
            .unwrap();
        let handle = lifecycle.handle();
        let run = tokio::spawn(lifecycle.run());
        entered.notified().await;
        handle.restart();
        run.await.unwrap()
    });
    // A restart (the startup hook cut off at the drain deadline makes it a failed one).
    assert_eq!(
        outcome.reason(),
        lifecycle_hooks::Reason::Restart,
        "{outcome}"
    );
    let mut messages = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        messages.iter().all(|m| !m.starts_with("FDSTOREREMOVE")),
        "the store stays whole on a restart: {messages:?}"
    );
    // Still open: the descriptor the next process inherits was not closed under it.
    nix::fcntl::fcntl(3, nix::fcntl::FcntlArg::F_GETFD).expect("fd 3 still open");
    let _ = std::fs::remove_dir_all(&dir);
}
