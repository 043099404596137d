//! Presence at connect on a cluster node: recorded in Redis before the socket's `session`, so
//! every node answers `online` once a client has its session; and a stalled Redis holds a
//! session back only briefly. Against a real redis-server started per test.

mod support;

use std::time::{Duration, Instant};

use confab::config::{RedisSettings, Secret};
use serde_json::json;
use support::redis::RedisServer;
use support::{Backend, TestApp, TestClient};

async fn node(redis: &RedisServer, prefix: &str, id: &str) -> TestApp {
    let (redis_url, prefix, id) = (redis.url(), prefix.to_owned(), id.to_owned());
    TestApp::spawn_with(Backend::Sqlite, move |s| {
        s.node_id = id;
        s.redis = Some(RedisSettings {
            url: Secret::new(redis_url),
            prefix,
        });
        s.jwt_secret = Secret::new("presence-test-secret-0123456789");
        s.dev_tokens = true;
    })
    .await
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn presence_of(asker: &TestClient, user: &str) -> String {
    let reply = asker.ok("presence:get", json!({ "userIds": [user] })).await;
    reply["presence"][user]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Each user connects to node A and is at once asked about on node B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_is_online_on_every_node_once_its_session_arrives() {
    let redis = RedisServer::start();
    let prefix = unique("presence");
    let (a, b) = (
        node(&redis, &prefix, "node-a").await,
        node(&redis, &prefix, "node-b").await,
    );
    let asker = b.connect(&unique("asker")).await;
    for i in 0..20 {
        let user = unique(&format!("u{i}"));
        let socket = a.connect(&user).await;
        assert_eq!(presence_of(&asker, &user).await, "online", "user {i}");
        socket.close().await;
    }
    asker.close().await;
    a.stop().await;
    b.stop().await;
}

/// Redis answers nothing for 3 s: a connect still gets its session within a fraction of a
/// second (the presence write waits for it at most 250 ms; Redis's response timeout is 1 s), and
/// the user counts as online once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_holds_a_session_back_only_briefly() {
    let redis = RedisServer::start();
    let app = node(&redis, &unique("stall"), "node-s").await;
    let user = unique("stalled");
    let token = app.token(&user).await;
    let mut admin = redis.raw().await;
    let paused: String = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    assert_eq!(paused, "OK");

    let started = Instant::now();
    let socket = TestClient::connect(&app.base, &token).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(900),
        "the session waited {waited:?} for a stalled Redis"
    );
    assert_eq!(socket.session["userId"], json!(user));

    // `unavailable` while Redis is stalled, then "online".
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = socket
            .ack("presence:get", json!({ "userIds": [user] }))
            .await;
        if reply["presence"][&user] == json!("online") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "online within 10 s of a 3 s stall"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    socket.close().await;
    app.stop().await;
}
