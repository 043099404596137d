//! Test harness: the real application on port 0, on a fresh SQLite file or a fresh Postgres
//! database, driven by a real Socket.IO client.
#![allow(dead_code)]

pub mod api;
pub mod hooks;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use confab::Application;
use confab::config::Settings;
use futures::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the machine's Postgres is; each test gets its own database on it.
fn postgres_admin_url() -> String {
    std::env::var("CONFAB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates an empty database on the machine's Postgres; returns its URL and name.
pub async fn fresh_postgres_database() -> (String, String) {
    let name = format!("confab_it_{}", uuid::Uuid::new_v4().simple());
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Postgres is required for these tests and is not reachable at {admin} ({e}). \
             Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) \
             or point CONFAB_TEST_POSTGRES_URL at one."
            )
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(admin);
    (format!("{base}/{name}"), name)
}

/// Drops a database made by [`fresh_postgres_database`].
pub async fn drop_postgres_database(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

enum Database {
    Sqlite(tempfile::TempDir),
    Postgres { name: String },
}

pub struct TestApp {
    pub base: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    database: Database,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> Self {
        let (url, database) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                (
                    format!("sqlite://{}/confab.db", dir.path().display()),
                    Database::Sqlite(dir),
                )
            }
            Backend::Postgres => {
                let (url, name) = fresh_postgres_database().await;
                (url, Database::Postgres { name })
            }
        };
        let mut settings = Settings::for_tests(url);
        settings.node_id = "test-node".to_owned();
        adjust(&mut settings);
        let app = Application::build(settings)
            .await
            .expect("application builds");
        let base = format!("http://{}", app.local_addr());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self {
            base,
            shutdown: Some(tx),
            task: Some(task),
            database,
        }
    }

    pub async fn token(&self, user: &str) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/api/dev/token", self.base))
            .json(&json!({ "userId": user, "name": user.to_uppercase() }))
            .send()
            .await
            .expect("dev token request");
        assert!(
            response.status().is_success(),
            "dev token refused: {}",
            response.status()
        );
        let body: Value = response.json().await.expect("token json");
        body["token"].as_str().expect("token field").to_owned()
    }

    /// The node's Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(format!("{}/metrics", self.base));
        let response = response.await.expect("metrics request");
        response.text().await.expect("metrics body")
    }

    pub async fn connect(&self, user: &str) -> TestClient {
        TestClient::connect(&self.base, &self.token(user).await).await
    }

    /// Starts the drain and returns the handle of the running node.
    pub fn begin_shutdown(&mut self) -> JoinHandle<anyhow::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("node still running")
    }

    /// Stops the node and drops its database.
    pub async fn stop(mut self) {
        if self.task.is_some() {
            let task = self.begin_shutdown();
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("node stops in time")
                .ok();
        }
        if let Database::Postgres { name } = &self.database {
            drop_postgres_database(name).await;
        }
    }
}

/// A Socket.IO client that records every event it receives.
pub struct TestClient {
    pub client: Client,
    pub session: Value,
    events: Arc<Mutex<mpsc::UnboundedReceiver<(String, Value)>>>,
}

fn first_value(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) if !values.is_empty() => values.remove(0),
        _ => Value::Null,
    }
}

impl TestClient {
    pub async fn connect(base: &str, token: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let closed = tx.clone();
        let client = ClientBuilder::new(base)
            .namespace("/")
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .auth(json!({ "token": token }))
            .on(Event::Close, move |_, _| {
                let _ = closed.send(("close".to_owned(), Value::Null));
                async {}.boxed()
            })
            .on_any(move |event, payload, _| {
                let name = match event {
                    Event::Custom(name) => name,
                    other => String::from(other.as_str()),
                };
                let _ = tx.send((name, first_value(payload)));
                async {}.boxed()
            })
            .connect()
            .await
            .expect("socket connects");
        let mut me = Self {
            client,
            session: Value::Null,
            events: Arc::new(Mutex::new(rx)),
        };
        me.session = me.next("session").await;
        me
    }

    /// The ack of `event`.
    pub async fn ack(&self, event: &str, payload: Value) -> Value {
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
        self.client
            .emit_with_ack(event, payload, WAIT, move |reply, _| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    // Ack arguments arrive as one array.
                    let value = match first_value(reply) {
                        Value::Array(mut args) if args.len() == 1 => args.remove(0),
                        other => other,
                    };
                    let _ = tx.send(value);
                }
                async {}.boxed()
            })
            .await
            .expect("emit");
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("ack in time")
            .expect("ack delivered")
    }

    /// The ack of `event`, which must be a success.
    pub async fn ok(&self, event: &str, payload: Value) -> Value {
        let reply = self.ack(event, payload).await;
        assert_eq!(reply["ok"], json!(true), "{event} failed: {reply}");
        reply
    }

    /// The next event named `name`, skipping others.
    pub async fn next(&self, name: &str) -> Value {
        self.next_where(name, |_| true).await
    }

    /// The next event named `name` that matches, skipping others.
    pub async fn next_where(&self, name: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let mut events = self.events.lock().await;
        let found = tokio::time::timeout(WAIT, async {
            while let Some((event, value)) = events.recv().await {
                if event == name && matches(&value) {
                    return Some(value);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(value)) => value,
            _ => panic!("no {name} event within {WAIT:?}"),
        }
    }

    /// Every event received so far, without waiting.
    pub async fn drain(&self) -> Vec<(String, Value)> {
        let mut events = self.events.lock().await;
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            seen.push(event);
        }
        seen
    }

    pub async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}

/// Runs an async test body once per storage backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await;
            }
        }
    };
}
