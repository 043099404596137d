//! A redis-server of the test's own on a free port, so tests can stop and restart it without
//! disturbing anything else on the machine.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Where an append-only file is kept, for a Redis that persists its state.
    dir: Option<PathBuf>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port")
        .port()
}

impl RedisServer {
    /// A Redis that keeps nothing: a restart comes back empty.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        let mut server = Self {
            child: None,
            port,
            dir: None,
        };
        server.restart();
        server
    }

    /// A Redis that persists every write to an append-only file in `dir`, as production Redis
    /// usually does: a restart (even after SIGKILL) comes back with its state.
    pub fn start_persistent(dir: &Path) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            dir: Some(dir.to_owned()),
        };
        server.restart();
        server
    }

    /// Starts it (again) on the same port, and waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
        match &self.dir {
            Some(dir) => command
                .args([
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ])
                .arg("--dir")
                .arg(dir),
            None => command.args(["--save", "", "--appendonly", "no"]),
        };
        let child = command.stdout(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}); these tests need it on PATH: \
                 `apt-get install redis-server` or `brew install redis`"
            )
        });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server on port {port} exited: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: a crash, or an outage.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Settings of a Redis backplane node under test.
pub struct NodeSpec<'a> {
    pub url: String,
    pub prefix: &'a str,
    pub id: &'a str,
    pub node_timeout: Duration,
    pub typing_ttl: Duration,
    pub rebroadcast: Duration,
}

impl<'a> NodeSpec<'a> {
    pub fn new(server: &RedisServer, prefix: &'a str, id: &'a str) -> Self {
        Self {
            url: server.url(),
            prefix,
            id,
            node_timeout: Duration::from_secs(10),
            typing_ttl: Duration::from_secs(5),
            rebroadcast: Duration::from_secs(2),
        }
    }

    /// The node's backplane, not joined yet (nothing sent to Redis).
    pub fn build(&self) -> confab::backplane::Backplane {
        let options = confab::backplane::RedisOptions {
            url: self.url.clone(),
            node_id: self.id.to_owned(),
            prefix: self.prefix.to_owned(),
            node_timeout: self.node_timeout,
            typing_ttl: self.typing_ttl,
            typing_rebroadcast: self.rebroadcast,
        };
        let metrics = std::sync::Arc::new(confab::metrics::Metrics::new(self.id));
        confab::backplane::Backplane::redis(options, metrics).expect("a valid Redis URL")
    }

    /// The node's backplane after its first heartbeat (it joined the cluster).
    pub async fn join(&self) -> confab::backplane::Backplane {
        let backplane = self.build();
        backplane
            .membership
            .heartbeat()
            .await
            .expect("the first heartbeat");
        backplane
    }
}

/// A key prefix of its own for each test.
pub fn prefix(test: &str) -> String {
    format!("test:{test}:{}:", uuid::Uuid::new_v4().simple())
}
