//! `rpc:call` as `api.md` says: the backend's result and error codes relayed (unknown codes as
//! `internal`), timeouts and refused connections as `unavailable` within the timeout, `not_found`
//! when not configured, the per-socket rate limit, and a breaker that stops calling a dead
//! backend. The receiver verifies the signature of every call.

mod support;

use std::time::{Duration, Instant};

use confab::config::Settings;
use serde_json::json;
use support::hooks::{self, Receiver, RpcMode};
use support::{Backend, TestApp};

async fn app_with(receiver: &Receiver, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |s| {
        hooks::configure(s, receiver);
        adjust(s);
    })
    .await
}

fn code(reply: &serde_json::Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_result_is_relayed_and_the_call_is_signed_and_described() {
    let receiver = Receiver::start().await;
    let app = app_with(&receiver, |_| {}).await;
    let alice = app.connect("alice").await;
    let reply = alice
        .ack(
            "rpc:call",
            json!({ "method": "orders.get", "data": { "n": 1 } }),
        )
        .await;
    assert_eq!(
        reply,
        json!({ "ok": true, "result": { "method": "orders.get", "data": { "n": 1 } } })
    );
    let calls = receiver.rpc_calls();
    assert_eq!(calls.len(), 1);
    let (headers, body) = &calls[0];
    assert_eq!(receiver.bad_signatures(), 0);
    assert_eq!(
        headers["webhook-id"].to_str().unwrap(),
        body["id"].as_str().unwrap()
    );
    assert_eq!(body["user"], json!({ "id": "alice", "name": "ALICE" }));
    assert_eq!(body["node"], "test-node");
    assert!(body["socketId"].as_str().is_some_and(|s| !s.is_empty()));
    let second = alice
        .ack("rpc:call", json!({ "method": "orders.get" }))
        .await;
    assert_eq!(second["result"]["data"], json!(null));
    let ids: Vec<_> = receiver
        .rpc_calls()
        .iter()
        .map(|(_, b)| b["id"].clone())
        .collect();
    assert_ne!(ids[0], ids[1], "an id per call");
    let bad = alice
        .ack("rpc:call", json!({ "method": "no spaces" }))
        .await;
    assert_eq!(code(&bad), "bad_request");
    alice.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_errors_are_relayed_or_internal() {
    let receiver = Receiver::start().await;
    let app = app_with(&receiver, |_| {}).await;
    let alice = app.connect("alice").await;
    receiver.set_rpc(RpcMode::Error("forbidden"));
    let reply = alice.ack("rpc:call", json!({ "method": "m" })).await;
    assert_eq!(
        reply,
        json!({ "ok": false, "error": { "code": "forbidden", "message": "from the backend" } })
    );
    receiver.set_rpc(RpcMode::Error("teapot"));
    let reply = alice.ack("rpc:call", json!({ "method": "m" })).await;
    assert_eq!(code(&reply), "internal");
    receiver.set_rpc(RpcMode::Status(500));
    let reply = alice.ack("rpc:call", json!({ "method": "m" })).await;
    assert_eq!(code(&reply), "unavailable");
    alice.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeouts_and_refused_connections_are_unavailable_within_the_timeout() {
    let receiver = Receiver::start().await;
    receiver.set_rpc(RpcMode::Slow(Duration::from_secs(3)));
    let app = app_with(&receiver, |_| {}).await;
    let alice = app.connect("alice").await;
    let started = Instant::now();
    let reply = alice.ack("rpc:call", json!({ "method": "slow" })).await;
    assert_eq!(code(&reply), "unavailable");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    alice.close().await;
    app.stop().await;

    // Nothing listens on a port that was just freed.
    let port = support::redis::free_port();
    let refused = TestApp::spawn_with(Backend::Sqlite, |s| {
        hooks::configure(s, &receiver);
        if let Some(rpc) = &mut s.hooks.rpc {
            rpc.url = format!("http://127.0.0.1:{port}/rpc");
        }
    })
    .await;
    let bob = refused.connect("bob").await;
    let started = Instant::now();
    let reply = bob.ack("rpc:call", json!({ "method": "m" })).await;
    assert_eq!(code(&reply), "unavailable");
    assert!(started.elapsed() < Duration::from_millis(500));
    bob.close().await;
    refused.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_url_rpc_is_not_found() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let alice = app.connect("alice").await;
    let reply = alice.ack("rpc:call", json!({ "method": "m" })).await;
    assert_eq!(code(&reply), "not_found");
    alice.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_is_per_socket() {
    let receiver = Receiver::start().await;
    let app = app_with(&receiver, |s| {
        let rpc = s.hooks.rpc.as_mut().unwrap();
        rpc.rate_per_sec = 1;
        rpc.burst = 3;
    })
    .await;
    let alice = app.connect("alice").await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let reply = alice.ack("rpc:call", json!({ "method": "m" })).await;
        codes.push(if reply["ok"] == true {
            "ok".to_owned()
        } else {
            code(&reply).to_owned()
        });
    }
    assert_eq!(&codes[..3], ["ok", "ok", "ok"]);
    assert!(codes[3..].iter().all(|c| c == "rate_limited"), "{codes:?}");
    // Another socket has its own budget.
    let other = app.connect("alice").await;
    assert_eq!(
        other.ack("rpc:call", json!({ "method": "m" })).await["ok"],
        true
    );
    assert_eq!(receiver.rpc_calls().len(), 4);
    alice.close().await;
    other.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_backend_opens_the_breaker() {
    let receiver = Receiver::start().await;
    receiver.set_rpc(RpcMode::Status(503));
    let app = app_with(&receiver, |s| {
        let rpc = s.hooks.rpc.as_mut().unwrap();
        rpc.breaker_failures = 3;
        rpc.breaker_cooldown = Duration::from_millis(300);
    })
    .await;
    let alice = app.connect("alice").await;
    for _ in 0..3 {
        let reply = alice.ack("rpc:call", json!({ "method": "m" })).await;
        assert_eq!(code(&reply), "unavailable");
    }
    assert_eq!(receiver.rpc_calls().len(), 3);
    for _ in 0..5 {
        let reply = alice.ack("rpc:call", json!({ "method": "m" })).await;
        assert_eq!(code(&reply), "unavailable");
    }
    assert_eq!(
        receiver.rpc_calls().len(),
        3,
        "an open breaker does not call"
    );
    // The backend recovers: after the cooldown one trial call closes the breaker again.
    receiver.set_rpc(RpcMode::Echo);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = alice.ack("rpc:call", json!({ "method": "m" })).await;
        if reply["ok"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "breaker never closed: {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        alice.ack("rpc:call", json!({ "method": "m" })).await["ok"],
        true
    );
    alice.close().await;
    app.stop().await;
}

/// With tracing on, the forwarded call carries `traceparent`: the backend's work joins the trace
/// of the client's `rpc:call`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_call_carries_its_traceparent() {
    let otlp = support::otlp::OtlpReceiver::start().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env: std::collections::HashMap<String, String> = [
        (
            "CONFAB_DATABASE_URL",
            format!("sqlite://{}/confab.db", dir.path().display()),
        ),
        ("CONFAB_RPC_URL", receiver.rpc_url()),
        ("CONFAB_WEBHOOK_SECRET", hooks::HOOK_SECRET.to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let node = support::process::NodeProcess::start("rpc-traced", &env).await;
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/dev/token", node.base))
        .json(&json!({ "userId": "ann" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ann = support::TestClient::connect(&node.base, token["token"].as_str().unwrap()).await;
    let reply = ann.ack("rpc:call", json!({ "method": "traced" })).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let calls = receiver.rpc_calls();
    let traceparent = calls[0].0["traceparent"].to_str().unwrap().to_owned();
    let trace_id = traceparent.split('-').nth(1).unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = otlp.spans().into_iter().any(|s| {
            s.name == "rpc:call"
                && s.trace_id
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    == trace_id
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rpc:call span in trace {trace_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.bad_signatures(), 0);
    ann.close().await;
    node.stop().await;
}
