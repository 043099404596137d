//! One `message:send` on node A yields one trace that reaches nodes B and C: three real node
//! processes export OTLP/HTTP to a real receiver, through a real Redis and Postgres.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::otlp::{OtlpReceiver, ReceivedSpan};
use support::process::NodeProcess;
use support::redis::RedisServer;
use support::{TestClient, drop_postgres_database, fresh_postgres_database};

const SECRET: &str = "tracing-test-secret-0123456789";

async fn token(base: &str, user: &str) -> String {
    let reply: Value = reqwest::Client::new()
        .post(format!("{base}/api/dev/token"))
        .json(&json!({ "userId": user }))
        .send()
        .await
        .expect("dev token")
        .json()
        .await
        .expect("token json");
    reply["token"].as_str().expect("token").to_owned()
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The chain of parents of `span` within `trace`, nearest first.
fn ancestors<'a>(span: &ReceivedSpan, trace: &'a [ReceivedSpan]) -> Vec<&'a ReceivedSpan> {
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() {
        let Some(next) = trace.iter().find(|s| s.span_id == parent) else {
            break;
        };
        chain.push(next);
        parent = next.parent_span_id.clone();
    }
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_send_on_a_is_one_trace_through_b_and_c() {
    let receiver = OtlpReceiver::start().await;
    let redis = RedisServer::start();
    let (database_url, database) = fresh_postgres_database().await;
    let env: HashMap<String, String> = [
        ("CONFAB_DATABASE_URL", database_url.as_str()),
        ("CONFAB_REDIS_URL", &redis.url()),
        ("CONFAB_REDIS_PREFIX", "tracing-test"),
        ("CONFAB_JWT_SECRET", SECRET),
        ("CONFAB_DEV_TOKENS", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let a = NodeProcess::start("node-a", &env).await;
    let b = NodeProcess::start("node-b", &env).await;
    let c = NodeProcess::start("node-c", &env).await;

    let ann = TestClient::connect(&a.base, &token(&a.base, "ann").await).await;
    let bob = TestClient::connect(&b.base, &token(&b.base, "bob").await).await;
    let cat = TestClient::connect(&c.base, &token(&c.base, "cat").await).await;
    let created = ann
        .ok(
            "room:create",
            json!({ "name": "traced", "members": ["bob", "cat"] }),
        )
        .await;
    let room = created["room"]["id"].clone();
    bob.next("room:added").await;
    cat.next("room:added").await;
    let sent = ann
        .ok(
            "message:send",
            json!({ "roomId": room, "text": "follow me" }),
        )
        .await;
    assert_eq!(bob.next("message:new").await["id"], sent["message"]["id"]);
    assert_eq!(cat.next("message:new").await["id"], sent["message"]["id"]);

    // Spans arrive in batches; wait until the send's trace holds both receivers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (send, trace) = loop {
        let spans = receiver.spans();
        let send = spans
            .iter()
            .find(|s| s.name == "message:send" && s.instance == "node-a")
            .cloned();
        if let Some(send) = send {
            let trace: Vec<ReceivedSpan> = spans
                .into_iter()
                .filter(|s| s.trace_id == send.trace_id)
                .collect();
            let receivers = trace
                .iter()
                .filter(|s| s.name == "backplane.receive")
                .count();
            if receivers >= 2 {
                break (send, trace);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no complete trace; spans seen: {:?}\nnode-a:\n{}",
            receiver
                .spans()
                .iter()
                .map(|s| (&s.instance, &s.name))
                .collect::<Vec<_>>(),
            a.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    assert_eq!(send.attribute("user"), Some("ann"));
    assert_eq!(send.attribute("outcome"), Some("ok"));
    assert!(
        send.attributes
            .iter()
            .all(|(_, v)| !v.contains("follow me")),
        "message text leaked into a span"
    );
    for node in ["node-b", "node-c"] {
        let delivery = trace
            .iter()
            .find(|s| s.name == "backplane.receive" && s.instance == node)
            .unwrap_or_else(|| {
                panic!(
                    "no receive span from {node} in trace {}",
                    hex(&send.trace_id)
                )
            });
        assert_eq!(
            delivery.attribute("sockets_reached"),
            Some("1"),
            "{node} delivered to its member"
        );
        let chain = ancestors(delivery, &trace);
        let publish = chain.first().expect("the receive span has a parent");
        assert_eq!(publish.name, "backplane.publish");
        assert_eq!(publish.instance, "node-a");
        assert!(
            chain.iter().any(|s| s.span_id == send.span_id),
            "{node}'s delivery does not descend from the send: {chain:?}"
        );
    }
    assert!(
        trace
            .iter()
            .any(|s| s.instance == "node-a" && s.name.starts_with("storage.")),
        "storage calls are children of the send: {:?}",
        trace.iter().map(|s| &s.name).collect::<Vec<_>>()
    );

    for client in [ann, bob, cat] {
        client.close().await;
    }
    for node in [a, b, c] {
        node.stop().await;
    }
    drop_postgres_database(&database).await;
}

/// An HTTP API call continues the caller's `traceparent`: its span is named after the route
/// template and carries the route, status and outcome, and the message it posts is written
/// (`write_batch`) within the same trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_call_continues_the_callers_trace() {
    const KEY: &str = "tracing-test-api-key-0123456789";
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/confab.db", dir.path().display());
    let env: HashMap<String, String> = [
        ("CONFAB_DATABASE_URL", database.as_str()),
        ("CONFAB_API_KEY", KEY),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let node = NodeProcess::start("api-node", &env).await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/api/v1/rooms", node.base))
        .bearer_auth(KEY)
        .json(&json!({ "name": "traced", "members": ["ann"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = created["room"]["id"].as_str().unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let posted = http
        .post(format!("{}/api/v1/rooms/{room}/messages", node.base))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({ "userId": "ann", "text": "secret words" }))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);

    let route = "POST /api/v1/rooms/{roomId}/messages";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (call, trace) = loop {
        let trace: Vec<ReceivedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .collect();
        let call = trace.iter().find(|s| s.name == route).cloned();
        if let Some(call) = call
            && trace.iter().any(|s| s.name == "write_batch")
        {
            break (call, trace);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no API trace; spans seen: {:?}",
            receiver.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(hex(&call.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        call.attribute("route"),
        Some("/api/v1/rooms/{roomId}/messages")
    );
    assert_eq!(call.attribute("status"), Some("201"));
    assert_eq!(call.attribute("outcome"), Some("ok"));
    assert!(
        trace.iter().all(|s| s
            .attributes
            .iter()
            .all(|(_, v)| !v.contains("secret words"))),
        "message text leaked into a span"
    );
    node.stop().await;
}
