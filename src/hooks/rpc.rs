//! `rpc:call` forwarded to `CONFAB_RPC_URL`: a signed POST on the pooled client, bounded in time
//! and in calls in flight per node, behind a circuit breaker so that a dead backend costs
//! nothing per call while it stays dead. The backend's reply is mapped to the ack here, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::config::RpcSettings;
use super::signature;
use crate::config::Secret;
use crate::error::ChatError;
use crate::metrics::Metrics;

/// The contract's error codes, which a backend's error may carry through to the client.
const CODES: [&str; 8] = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "rate_limited",
    "internal",
    "unavailable",
];
/// Longest backend error message relayed to a client.
const MAX_MESSAGE_CHARS: usize = 500;

/// The body of a forwarded call.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcRequest<'a> {
    pub id: String,
    pub method: &'a str,
    pub data: &'a Value,
    pub user: RpcUser<'a>,
    pub node: &'a str,
    pub socket_id: &'a str,
}

#[derive(Debug, Serialize)]
pub struct RpcUser<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

pub struct RpcForwarder {
    settings: RpcSettings,
    client: reqwest::Client,
    secret: Secret,
    metrics: Arc<Metrics>,
    in_flight: Arc<Semaphore>,
    breaker: Breaker,
}

impl RpcForwarder {
    pub fn new(
        settings: RpcSettings,
        client: reqwest::Client,
        secret: Secret,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown),
            settings,
            client,
            secret,
            metrics,
        }
    }

    /// Forwards one call; the ack's body, or the error to answer with.
    pub async fn call(&self, request: &RpcRequest<'_>) -> Result<Value, ChatError> {
        let Ok(_slot) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.hooks.rpc("busy");
            return Err(unavailable("too many calls in flight"));
        };
        if !self.breaker.allow() {
            self.metrics.hooks.rpc("open");
            return Err(unavailable("circuit breaker open"));
        }
        let started = Instant::now();
        let sent = self.send(request).await;
        self.metrics
            .hooks
            .rpc_duration
            .observe(started.elapsed().as_secs_f64());
        let body = match sent {
            Ok(body) => {
                self.breaker.succeeded();
                body
            }
            Err(cause) => {
                self.breaker.failed();
                self.metrics.hooks.rpc("unavailable");
                return Err(ChatError::Unavailable(cause));
            }
        };
        let reply = map_reply(body);
        let outcome = match &reply {
            Ok(v) if v["ok"] == json!(true) => "ok",
            Ok(_) => "error",
            Err(_) => "internal",
        };
        self.metrics.hooks.rpc(outcome);
        reply
    }

    /// POSTs the call; the backend's 2xx body, or why there is none.
    async fn send(&self, request: &RpcRequest<'_>) -> anyhow::Result<Option<Value>> {
        let body = serde_json::to_vec(request)?;
        let timestamp = chrono::Utc::now().timestamp();
        let signed = signature::sign(&self.secret, &request.id, timestamp, &body);
        let post = self
            .client
            .post(&self.settings.url)
            .timeout(self.settings.timeout)
            .header("content-type", "application/json")
            .body(body);
        let response = signed.apply(post).send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("backend answered {status}");
        }
        // A 2xx whose body is not JSON is the backend's fault, not an outage.
        let bytes = response.bytes().await?;
        Ok(serde_json::from_slice(&bytes).ok())
    }
}

fn unavailable(why: &'static str) -> ChatError {
    ChatError::Unavailable(anyhow::anyhow!(why))
}

/// A 2xx body to the ack: `{ result }` is relayed, `{ error: { code, message } }` too when the
/// code is one of the contract's, and anything else is `internal`.
fn map_reply(body: Option<Value>) -> Result<Value, ChatError> {
    let Some(Value::Object(mut body)) = body else {
        return Err(ChatError::Internal(anyhow::anyhow!(
            "backend reply is not a JSON object"
        )));
    };
    if let Some(error) = body.remove("error").filter(|e| !e.is_null()) {
        let code = error.get("code").and_then(Value::as_str).unwrap_or("");
        if !CODES.contains(&code) {
            return Err(ChatError::Internal(anyhow::anyhow!(
                "backend error code not in the contract"
            )));
        }
        let message: String = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or(code)
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect();
        return Ok(json!({ "ok": false, "error": { "code": code, "message": message } }));
    }
    match body.remove("result") {
        Some(result) => Ok(json!({ "ok": true, "result": result })),
        None => Err(ChatError::Internal(anyhow::anyhow!(
            "backend reply has neither result nor error"
        ))),
    }
}

/// Opens after `threshold` consecutive failures; while open, calls fail at once. After the
/// cooldown one trial call goes through: its success closes the breaker, its failure reopens it.
struct Breaker {
    threshold: u32,
    cooldown: std::time::Duration,
    failures: AtomicU32,
    opened_at: std::sync::Mutex<Option<Instant>>,
    trial: AtomicBool,
}

impl Breaker {
    fn new(threshold: u32, cooldown: std::time::Duration) -> Self {
        Self {
            threshold,
            cooldown,
            failures: AtomicU32::new(0),
            opened_at: std::sync::Mutex::new(None),
            trial: AtomicBool::new(false),
        }
    }

    fn allow(&self) -> bool {
        let opened = *self.opened_at.lock().unwrap_or_else(|p| p.into_inner());
        match opened {
            None => true,
            Some(at) if at.elapsed() < self.cooldown => false,
            // Half open: exactly one caller wins the trial.
            Some(_) => !self.trial.swap(true, Ordering::AcqRel),
        }
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
        *self.opened_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.trial.store(false, Ordering::Release);
    }

    fn failed(&self) {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let trial = self.trial.swap(false, Ordering::AcqRel);
        if trial || failures >= self.threshold {
            *self.opened_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn replies_map_to_acks() {
        let ok = map_reply(Some(json!({ "result": { "x": 1 } }))).unwrap();
        assert_eq!(ok, json!({ "ok": true, "result": { "x": 1 } }));
        let relayed = map_reply(Some(
            json!({ "error": { "code": "forbidden", "message": "no" } }),
        ));
        assert_eq!(relayed.unwrap()["error"]["code"], "forbidden");
        let unknown = map_reply(Some(json!({ "error": { "code": "teapot" } })));
        assert_eq!(unknown.unwrap_err().code(), "internal");
        assert_eq!(map_reply(None).unwrap_err().code(), "internal");
        assert_eq!(map_reply(Some(json!([1]))).unwrap_err().code(), "internal");
        assert_eq!(map_reply(Some(json!({}))).unwrap_err().code(), "internal");
    }

    #[test]
    fn breaker_opens_after_failures_and_lets_one_trial_through() {
        let breaker = Breaker::new(2, Duration::from_millis(30));
        assert!(breaker.allow());
        breaker.failed();
        assert!(breaker.allow());
        breaker.failed();
        assert!(!breaker.allow(), "open after two failures");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow(), "one trial after the cooldown");
        assert!(!breaker.allow(), "only one");
        breaker.failed();
        assert!(!breaker.allow(), "a failed trial reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow());
        breaker.succeeded();
        assert!(breaker.allow() && breaker.allow(), "closed again");
    }
}
