//! A throwaway `redis-server` on a free 127.0.0.1 port, killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

/// A running `redis-server` with no persistence, bound to loopback only.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server and returns once it has said it accepts connections and answered `PING`.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed (`.ci/setup.d/20-redis.sh` installs it) or does not
    /// start.
    pub fn start() -> RedisServer {
        // Another process may take the port between our probe and the server's bind; then the
        // server exits before it is ready, and we try another port.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--dir", &std::env::temp_dir().to_string_lossy()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "`redis-server` could not be started; install it with \
                     `bash .ci/setup.d/20-redis.sh` (apt-get install redis-server)",
                );
            let stdout = child.stdout.take().expect("piped stdout");
            let mut lines = BufReader::new(stdout);
            let mut ready = false;
            let mut line = String::new();
            while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line.contains("Ready to accept connections") {
                    ready = true;
                    break;
                }
                line.clear();
            }
            if !ready {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            // Keep draining the log so the server never blocks on a full pipe.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut lines, &mut std::io::sink());
            });
            let server = RedisServer {
                child: Some(child),
                port,
            };
            server.ping();
            return server;
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A client for this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a valid URL")
    }

    /// Kills the server now (a crash, as far as clients can tell).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (`SIGSTOP` to the pid this harness started): a host that stops
    /// answering, its connections open and silent. [`resume`](Self::resume) thaws it.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Thaws a [`freeze`](Self::freeze)d server (`SIGCONT`).
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let child = self.child.as_ref().expect("the server runs");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
        nix::sys::signal::kill(pid, signal).expect("signal the server we started");
    }

    fn ping(&self) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream.write_all(b"PING\r\n").expect("send PING");
        let mut answer = [0u8; 7];
        stream.read_exact(&mut answer).expect("read PONG");
        assert_eq!(&answer, b"+PONG\r\n");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
