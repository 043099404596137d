//! Webhooks as `api.md` promises them: every event type arrives signed (the receiver verifies
//! each request), a receiver that fails at first gets every event later, a node killed right
//! after acking a message still delivers its `message.created` after a restart, and three nodes
//! deliver each event once.

mod support;

use std::collections::HashMap;

use confab::config::{RedisSettings, Secret};
use serde_json::{Value, json};
use support::api::{Api, KEY};
use support::hooks::{self, Receiver, counts_by_id};
use support::process::NodeProcess;
use support::redis::RedisServer;
use support::{Backend, TestApp, TestClient};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn every_event_type_arrives_signed(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(backend, |s| hooks::configure(s, &receiver)).await;
    let (alice, carol) = (unique("alice"), unique("carol"));
    let alice_socket = app.connect(&alice).await;
    receiver
        .wait_event("user.online", |d| d["userId"] == alice.as_str())
        .await;
    let room = alice_socket
        .ok("room:create", json!({ "name": "hooks", "kind": "public" }))
        .await["room"]
        .clone();
    let room_id = room["id"].as_str().unwrap().to_owned();
    let created = receiver
        .wait_event("room.created", |d| d["room"]["id"] == room_id.as_str())
        .await;
    assert_eq!(created["data"]["room"]["name"], "hooks");
    assert_eq!(created["data"]["room"]["kind"], "public");
    assert_eq!(created["data"]["room"]["memberCount"], 1);
    let sent = alice_socket
        .ok(
            "message:send",
            json!({ "roomId": room_id, "text": "hello hooks", "clientId": "c1" }),
        )
        .await;
    let message_id = sent["message"]["id"].as_str().unwrap().to_owned();
    let message = receiver
        .wait_event("message.created", |d| {
            d["message"]["id"] == message_id.as_str()
        })
        .await;
    assert_eq!(message["data"]["message"], sent["message"]);
    assert!(message["time"].as_str().is_some_and(|t| t.contains('T')));

    let carol_socket = app.connect(&carol).await;
    carol_socket
        .ok("room:join", json!({ "roomId": room_id }))
        .await;
    let joined = receiver
        .wait_event("member.joined", |d| d["userId"] == carol.as_str())
        .await;
    assert_eq!(
        joined["data"],
        json!({ "roomId": room_id, "userId": carol })
    );
    carol_socket
        .ok("room:leave", json!({ "roomId": room_id }))
        .await;
    receiver
        .wait_event("member.left", |d| {
            d["userId"] == carol.as_str() && d["roomId"] == room_id.as_str()
        })
        .await;
    alice_socket.close().await;
    receiver
        .wait_event("user.offline", |d| d["userId"] == alice.as_str())
        .await;

    let events = receiver.events();
    assert_eq!(receiver.bad_signatures(), 0);
    for event in &events {
        assert!(
            event["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{event}"
        );
    }
    let onlines = events
        .iter()
        .filter(|e| e["type"] == "user.online" && e["data"]["userId"] == alice.as_str())
        .count();
    assert_eq!(onlines, 1, "one user.online per change: {events:#?}");
    carol_socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_type_arrives_signed_sqlite() {
    every_event_type_arrives_signed(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_type_arrives_signed_postgres() {
    every_event_type_arrives_signed(Backend::Postgres).await;
}

async fn failing_receiver_gets_everything_later(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.refuse(4);
    let app = TestApp::spawn_with(backend, |s| {
        hooks::configure(s, &receiver);
        s.api_key = Some(Secret::new(KEY));
    })
    .await;
    let alice = app.connect(&unique("alice")).await;
    let room = alice.ok("room:create", json!({ "name": "retry" })).await;
    let room_id = room["room"]["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..5 {
        let sent = alice
            .ok(
                "message:send",
                json!({ "roomId": room_id, "text": format!("m{i}") }),
            )
            .await;
        ids.push(sent["message"]["id"].as_str().unwrap().to_owned());
    }
    let events = receiver
        .wait_events("every message after the refusals", |events| {
            ids.iter().all(|id| {
                events.iter().any(|e| {
                    e["type"] == "message.created" && e["data"]["message"]["id"] == id.as_str()
                })
            })
        })
        .await;
    assert!(receiver.refused() >= 4, "the receiver refused at first");
    let counts = counts_by_id(&events);
    assert!(counts.values().all(|&n| n == 1), "once each: {counts:?}");
    assert_eq!(receiver.bad_signatures(), 0);
    // The outbox empties once delivered (the stats route reads it).
    let api = Api::new(&app.base, Some(KEY));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stats = api.call("GET", "/api/v1/stats", None).await.body["webhooks"].clone();
        assert_eq!(stats["failed"], 0, "{stats}");
        if stats["pending"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox never emptied: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    alice.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_receiver_gets_the_events_later_once_each_sqlite() {
    failing_receiver_gets_everything_later(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_receiver_gets_the_events_later_once_each_postgres() {
    failing_receiver_gets_everything_later(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_after_acking_still_delivers_after_restart() {
    let receiver = Receiver::start().await;
    // Down while the node runs: nothing can be delivered before it dies.
    receiver.refuse(usize::MAX);
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = hooks::env(&receiver).into_iter().collect();
    env.insert(
        "CONFAB_DATABASE_URL".to_owned(),
        format!("sqlite://{}/confab.db", dir.path().display()),
    );
    let node = NodeProcess::start("hooks-kill", &env).await;
    let token = dev_token(&node.base, "alice").await;
    let alice = TestClient::connect(&node.base, &token).await;
    let room = alice.ok("room:create", json!({ "name": "crash" })).await;
    let room_id = room["room"]["id"].as_str().unwrap().to_owned();
    let sent = alice
        .ok(
            "message:send",
            json!({ "roomId": room_id, "text": "survives" }),
        )
        .await;
    let message_id = sent["message"]["id"].as_str().unwrap().to_owned();
    node.kill().await;
    drop(alice);
    receiver.refuse(0);
    let again = NodeProcess::start("hooks-kill", &env).await;
    let delivered = receiver
        .wait_event("message.created", |d| {
            d["message"]["id"] == message_id.as_str()
        })
        .await;
    assert_eq!(delivered["data"]["message"]["text"], "survives");
    receiver
        .wait_event("room.created", |d| d["room"]["id"] == room_id.as_str())
        .await;
    assert_eq!(receiver.bad_signatures(), 0);
    again.stop().await;
}

async fn dev_token(base: &str, user: &str) -> String {
    let body: Value = reqwest::Client::new()
        .post(format!("{base}/api/dev/token"))
        .json(&json!({ "userId": user, "name": user }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_deliver_each_event_once() {
    let receiver = Receiver::start().await;
    let redis = RedisServer::start();
    let (url, database) = support::fresh_postgres_database().await;
    let prefix = unique("hooks");
    let mut nodes = Vec::new();
    for letter in ["a", "b", "c"] {
        let (url, redis_settings) = (
            url.clone(),
            RedisSettings {
                url: Secret::new(redis.url()),
                prefix: prefix.clone(),
            },
        );
        let receiver = &receiver;
        nodes.push(
            TestApp::spawn_with(Backend::Sqlite, move |s| {
                s.database_url = url;
                s.node_id = format!("hooks-{letter}");
                s.redis = Some(redis_settings);
                hooks::configure(s, receiver);
            })
            .await,
        );
    }
    let creator = nodes[0].connect(&unique("alice")).await;
    let room = creator
        .ok(
            "room:create",
            json!({ "name": "cluster", "kind": "public" }),
        )
        .await;
    let room_id = room["room"]["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for node in &nodes {
        let sender = node.connect(&unique("sender")).await;
        sender.ok("room:join", json!({ "roomId": room_id })).await;
        for i in 0..10 {
            let sent = sender
                .ok(
                    "message:send",
                    json!({ "roomId": room_id, "text": format!("n{i}") }),
                )
                .await;
            ids.push(sent["message"]["id"].as_str().unwrap().to_owned());
        }
        sender.close().await;
    }
    let events = receiver
        .wait_events("all 30 messages", |events| {
            let got = events
                .iter()
                .filter(|e| e["type"] == "message.created")
                .count();
            got >= ids.len()
        })
        .await;
    let counts = counts_by_id(&events);
    assert!(
        counts.values().all(|&n| n == 1),
        "each event once: {counts:?}"
    );
    let messages: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "message.created")
        .filter_map(|e| e["data"]["message"]["id"].as_str())
        .collect();
    for id in &ids {
        assert_eq!(messages.iter().filter(|m| *m == id).count(), 1, "{id}");
    }
    assert_eq!(receiver.bad_signatures(), 0);
    creator.close().await;
    for node in nodes {
        node.stop().await;
    }
    support::drop_postgres_database(&database).await;
}

/// `user.online` once for the cluster-wide first socket, and `user.offline` once for the last,
/// here sent by the node that reaps a killed node's users.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_webhooks_follow_the_cluster_and_the_reaper() {
    const JWT: &str = "hooks-presence-jwt-0123456789";
    let receiver = Receiver::start().await;
    let redis = RedisServer::start();
    let (url, database) = support::fresh_postgres_database().await;
    let prefix = unique("presence");
    let (a_url, a_redis) = (
        url.clone(),
        RedisSettings {
            url: Secret::new(redis.url()),
            prefix: prefix.clone(),
        },
    );
    let a = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.database_url = a_url;
        s.node_id = "presence-a".to_owned();
        s.redis = Some(a_redis);
        s.jwt_secret = Secret::new(JWT);
        s.dev_tokens = true;
        s.node_timeout = std::time::Duration::from_secs(3);
        s.api_key = Some(Secret::new(KEY));
        hooks::configure(s, &receiver);
    })
    .await;
    let mut env: HashMap<String, String> = hooks::env(&receiver).into_iter().collect();
    for (k, v) in [
        ("CONFAB_DATABASE_URL", url.as_str()),
        ("CONFAB_REDIS_URL", &redis.url()),
        ("CONFAB_REDIS_PREFIX", &prefix),
        ("CONFAB_JWT_SECRET", JWT),
        ("CONFAB_DEV_TOKENS", "true"),
        ("CONFAB_NODE_TIMEOUT", "3"),
    ] {
        env.insert(k.to_owned(), v.to_owned());
    }
    let b = NodeProcess::start("presence-b", &env).await;
    let alice = unique("alice");
    let on_a = a.connect(&alice).await;
    receiver
        .wait_event("user.online", |d| d["userId"] == alice.as_str())
        .await;
    let on_b = TestClient::connect(&b.base, &a.token(&alice).await).await;
    // B records her socket just after its `session`: wait for it, or closing A's socket could
    // still be her last one.
    let api = Api::new(&a.base, Some(KEY));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let path = format!("/api/v1/users/{alice}/presence");
        let presence = api.call("GET", &path, None).await.body;
        if presence["sockets"] == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{presence}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    on_a.close().await;
    // Still online on B; then B dies without a word, and A reaps her.
    b.kill().await;
    drop(on_b);
    receiver
        .wait_event("user.offline", |d| d["userId"] == alice.as_str())
        .await;
    let events = receiver.events();
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| e["type"] == kind && e["data"]["userId"] == alice.as_str())
            .count()
    };
    assert_eq!(
        (of("user.online"), of("user.offline")),
        (1, 1),
        "{events:#?}"
    );
    assert_eq!(receiver.bad_signatures(), 0);
    a.stop().await;
    support::drop_postgres_database(&database).await;
}

/// A receiver that never answers 2xx: the event is retried until its time is up (one second
/// here, 24 hours by default), then marked failed: counted in the stats and the metrics, and
/// not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_retried_past_their_time_are_marked_failed() {
    let receiver = Receiver::start().await;
    receiver.refuse(usize::MAX);
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        hooks::configure(s, &receiver);
        if let Some(webhooks) = &mut s.hooks.webhooks {
            webhooks.retry_for = std::time::Duration::from_secs(1);
        }
        s.api_key = Some(Secret::new(KEY));
    })
    .await;
    let alice = app.connect(&unique("alice")).await;
    alice.ok("room:create", json!({ "name": "doomed" })).await;
    let api = Api::new(&app.base, Some(KEY));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let stats = api.call("GET", "/api/v1/stats", None).await.body["webhooks"].clone();
        if stats["failed"] == 1 && stats["pending"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never marked failed: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(receiver.refused() >= 2, "it was retried before giving up");
    let metrics = app.metrics().await;
    let failed = metrics
        .lines()
        .find(|l| l.starts_with("confab_webhook_events_total") && l.contains("outcome=\"failed\""))
        .unwrap_or_else(|| panic!("no failed counter in {metrics}"));
    assert!(failed.ends_with(" 1"), "{failed}");
    // Given up on: a receiver back up does not get it.
    receiver.refuse(0);
    let refused = receiver.refused();
    alice.ok("room:create", json!({ "name": "later" })).await;
    let later = receiver
        .wait_event("room.created", |d| d["room"]["name"] == "later")
        .await;
    assert!(
        receiver
            .events()
            .iter()
            .all(|e| e["data"]["room"]["name"] != "doomed")
    );
    assert_eq!(receiver.refused(), refused);
    assert!(later["id"].is_string());
    alice.close().await;
    app.stop().await;
}
