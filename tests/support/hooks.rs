//! A real HTTP receiver for webhooks and forwarded calls (axum on port 0): it verifies the
//! signature of every request, records what arrived, and answers as the test asks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use confab::config::{Secret, Settings};
use confab::hooks::config::{HookSettings, RpcSettings, WebhookSettings};
use confab::hooks::signature;
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const HOOK_SECRET: &str = "hook-test-secret-0123456789";

/// How `/rpc` answers.
#[derive(Debug, Clone)]
pub enum RpcMode {
    /// `{ result: { method, data } }`.
    Echo,
    /// `{ error: { code, message } }`.
    Error(&'static str),
    /// This status and an empty body.
    Status(u16),
    /// Echo, after this long.
    Slow(Duration),
}

#[derive(Default)]
struct Recorded {
    /// Every event of every acknowledged webhook request, in arrival order (repeats included).
    events: std::sync::Mutex<Vec<Value>>,
    /// Bodies of forwarded calls, with their headers.
    rpc: std::sync::Mutex<Vec<(HeaderMap, Value)>>,
    /// Requests whose signature did not verify.
    bad_signatures: AtomicUsize,
    /// Webhook requests still to refuse with 500.
    refuse: AtomicUsize,
    /// Webhook requests refused so far.
    refused: AtomicUsize,
    rpc_mode: std::sync::Mutex<Option<RpcMode>>,
    changed: Notify,
}

pub struct Receiver {
    pub base: String,
    recorded: Arc<Recorded>,
}

impl Receiver {
    pub async fn start() -> Self {
        let recorded = Arc::new(Recorded::default());
        let router = Router::new()
            .route("/hook", post(hook))
            .route("/rpc", post(rpc))
            .with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { base, recorded }
    }

    pub fn hook_url(&self) -> String {
        format!("{}/hook", self.base)
    }

    pub fn rpc_url(&self) -> String {
        format!("{}/rpc", self.base)
    }

    /// Refuses the next `n` webhook requests with 500 (`usize::MAX`: until told otherwise).
    pub fn refuse(&self, n: usize) {
        self.recorded.refuse.store(n, Ordering::SeqCst);
    }

    pub fn refused(&self) -> usize {
        self.recorded.refused.load(Ordering::SeqCst)
    }

    pub fn set_rpc(&self, mode: RpcMode) {
        *self.recorded.rpc_mode.lock().unwrap() = Some(mode);
    }

    pub fn bad_signatures(&self) -> usize {
        self.recorded.bad_signatures.load(Ordering::SeqCst)
    }

    pub fn events(&self) -> Vec<Value> {
        self.recorded.events.lock().unwrap().clone()
    }

    pub fn rpc_calls(&self) -> Vec<(HeaderMap, Value)> {
        self.recorded.rpc.lock().unwrap().clone()
    }

    /// Waits until the events received so far satisfy `done`, and returns them.
    pub async fn wait_events(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let changed = self.recorded.changed.notified();
            let events = self.events();
            if done(&events) {
                return events;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("webhooks never showed {what}; got {events:#?}");
            }
        }
    }

    /// Waits for an event of `kind` whose data satisfies `matches`.
    pub async fn wait_event(&self, kind: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let found = |events: &[Value]| {
            events
                .iter()
                .find(|e| e["type"] == kind && matches(&e["data"]))
                .cloned()
        };
        let events = self
            .wait_events(kind, |events| found(events).is_some())
            .await;
        found(&events).unwrap()
    }
}

/// How many times each event id arrived.
pub fn counts_by_id(events: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for event in events {
        *counts
            .entry(event["id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    counts
}

fn verified(recorded: &Recorded, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(sig)) = (
        header("webhook-id"),
        header("webhook-timestamp").and_then(|t| t.parse::<i64>().ok()),
        header("webhook-signature"),
    ) else {
        recorded.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return false;
    };
    let secret = Secret::new(HOOK_SECRET);
    let fresh = (chrono::Utc::now().timestamp() - timestamp).abs() < 300;
    let ok = fresh && signature::verify(&secret, id, timestamp, body, sig);
    if !ok {
        recorded.bad_signatures.fetch_add(1, Ordering::SeqCst);
    }
    ok
}

async fn hook(State(recorded): State<Arc<Recorded>>, headers: HeaderMap, body: Bytes) -> Response {
    if !verified(&recorded, &headers, &body) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let refuse = recorded
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if refuse.is_ok() {
        recorded.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let body: Value = serde_json::from_slice(&body).expect("webhook body is JSON");
    let events = body["events"].as_array().expect("events array").clone();
    recorded.events.lock().unwrap().extend(events);
    recorded.changed.notify_waiters();
    StatusCode::NO_CONTENT.into_response()
}

async fn rpc(State(recorded): State<Arc<Recorded>>, headers: HeaderMap, body: Bytes) -> Response {
    if !verified(&recorded, &headers, &body) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let call: Value = serde_json::from_slice(&body).expect("rpc body is JSON");
    recorded.rpc.lock().unwrap().push((headers, call.clone()));
    recorded.changed.notify_waiters();
    let mode = recorded.rpc_mode.lock().unwrap().clone();
    let echo = || json!({ "result": { "method": call["method"], "data": call["data"] } });
    match mode.unwrap_or(RpcMode::Echo) {
        RpcMode::Echo => axum::Json(echo()).into_response(),
        RpcMode::Error(code) => {
            axum::Json(json!({ "error": { "code": code, "message": "from the backend" } }))
                .into_response()
        }
        RpcMode::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        RpcMode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            axum::Json(echo()).into_response()
        }
    }
}

/// Webhooks (and `rpc:call`) to `receiver`, with retries fast enough for a test.
pub fn configure(settings: &mut Settings, receiver: &Receiver) {
    settings.hooks = HookSettings {
        webhooks: Some(WebhookSettings {
            url: receiver.hook_url(),
            timeout: Duration::from_secs(2),
            batch: 100,
            poll: Duration::from_millis(20),
            retry_base: Duration::from_millis(50),
            retry_max: Duration::from_millis(200),
            retry_for: Duration::from_secs(86_400),
        }),
        rpc: Some(RpcSettings {
            url: receiver.rpc_url(),
            timeout: Duration::from_millis(500),
            rate_per_sec: 10,
            burst: 20,
            max_in_flight: 64,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(5),
        }),
        secret: Some(Secret::new(HOOK_SECRET)),
    };
}

/// The same as environment variables, for nodes run as processes.
pub fn env(receiver: &Receiver) -> Vec<(String, String)> {
    [
        ("CONFAB_WEBHOOK_URL", receiver.hook_url()),
        ("CONFAB_WEBHOOK_SECRET", HOOK_SECRET.to_owned()),
        ("CONFAB_WEBHOOK_POLL_MS", "20".to_owned()),
        ("CONFAB_WEBHOOK_RETRY_BASE_MS", "50".to_owned()),
        ("CONFAB_WEBHOOK_RETRY_MAX_MS", "200".to_owned()),
        ("CONFAB_WEBHOOK_TIMEOUT_MS", "1000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
