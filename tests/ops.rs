//! The operations API: three in-process nodes sharing a redis-server of the test's own and one
//! Postgres database answer the same cluster-wide numbers from any node; a single node answers
//! from its in-process backplane; without a key the API is not there at all.

mod support;

use std::time::Duration;

use confab::backplane::{Backplane, NodeLoad, SecurityEvent, SecurityKind};
use confab::config::{RedisSettings, Secret, Settings};
use confab::domain::UserId;
use futures::FutureExt;
use rust_socketio::TransportType;
use rust_socketio::asynchronous::ClientBuilder;
use serde_json::{Value, json};
use support::redis::{NodeSpec, RedisServer};
use support::{Backend, TestApp, TestClient};

const KEY: &str = "ops-test-key-0123456789abcdef";
const JWT_SECRET: &str = "ops-test-jwt-secret-0123456789";
const SOON: Duration = Duration::from_secs(10);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// `GET base+path` with the key (or `None`, or a wrong one); the status and the JSON body.
async fn get(base: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn ok(base: &str, path: &str) -> Value {
    let (status, body) = get(base, path, Some(KEY)).await;
    assert_eq!(status, 200, "GET {path} from {base}: {body}");
    body
}

/// Polls `check` until it returns `Some`, or fails after `SOON` with the last value seen.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() > deadline => {
                panic!("{what} did not happen within {SOON:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `[(node id, connections)]` of a stats or nodes answer, sorted.
fn connections_by_node(nodes: &Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = nodes
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| {
            let id = n["id"].as_str().unwrap().to_owned();
            (id, n["connections"].as_u64().unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The first `snapshot` of `/api/v1/dashboard/stream` that satisfies `wanted`.
async fn snapshot_where(base: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let mut response = reqwest::Client::new()
        .get(format!("{base}/api/v1/dashboard/stream"))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .expect("stream request");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut buffer = String::new();
    let mut last = Value::Null;
    let read = async {
        while let Some(chunk) = response.chunk().await.expect("stream chunk") {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let is_snapshot = frame.lines().any(|l| l == "event: snapshot");
                let data: String = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
                    .collect();
                if !is_snapshot || data.is_empty() {
                    continue;
                }
                last = serde_json::from_str(&data).expect("snapshot is JSON");
                if wanted(&last) {
                    return Some(last.clone());
                }
            }
        }
        None
    };
    match tokio::time::timeout(SOON, read).await {
        Ok(Some(snapshot)) => snapshot,
        _ => panic!("no wanted snapshot from {base} within {SOON:?}; last: {last}"),
    }
}

/// Tries to connect with a token the node refuses (the client's result does not matter: the
/// node records the refusal).
async fn connect_with_bad_token(base: &str, token: &str) {
    let client = ClientBuilder::new(base)
        .namespace("/")
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .auth(json!({ "token": token }))
        .on_any(|_, _, _| async {}.boxed())
        .connect()
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Ok(client) = client {
        let _ = client.disconnect().await;
    }
}

struct Cluster {
    nodes: Vec<TestApp>,
    ids: Vec<String>,
    database: String,
    _redis: RedisServer,
}

impl Cluster {
    /// Three nodes with the key set, one Redis prefix and one fresh Postgres database.
    async fn start(adjust: impl Fn(&mut Settings) + Copy) -> Self {
        let redis = RedisServer::start();
        let (database_url, database) = support::fresh_postgres_database().await;
        let prefix = unique("ops");
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let mut nodes = Vec::new();
        let mut ids = Vec::new();
        // One at a time: the first migrates the database.
        for letter in ["a", "b", "c"] {
            let node_id = format!("ops-{letter}-{tag}");
            let (url, redis_url, prefix) = (database_url.clone(), redis.url(), prefix.clone());
            let id = node_id.clone();
            // TestApp's SQLite file goes unused: every node runs on the shared Postgres database.
            let node = TestApp::spawn_with(Backend::Sqlite, move |s| {
                s.database_url = url;
                s.node_id = id;
                s.redis = Some(RedisSettings {
                    url: Secret::new(redis_url),
                    prefix,
                });
                s.jwt_secret = Secret::new(JWT_SECRET);
                s.dev_tokens = true;
                s.api_key = Some(Secret::new(KEY));
                adjust(s);
            })
            .await;
            nodes.push(node);
            ids.push(node_id);
        }
        Self {
            nodes,
            ids,
            database,
            _redis: redis,
        }
    }

    async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
        support::drop_postgres_database(&self.database).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_answers_for_the_whole_cluster() {
    let mut cluster = Cluster::start(|_| {}).await;
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);

    // Sockets: a holds 3, b holds 4, c holds 1; "both" is connected to a and b.
    let both = unique("both");
    let mut clients: Vec<TestClient> = Vec::new();
    for (node, count) in [(a, 2), (b, 3), (c, 1)] {
        for i in 0..count {
            clients.push(node.connect(&unique(&format!("u{i}"))).await);
        }
    }
    let c_only = clients.pop().expect("the socket on c");
    clients.push(a.connect(&both).await);
    clients.push(b.connect(&both).await);
    let mut expected = vec![
        (cluster.ids[0].clone(), 3),
        (cluster.ids[1].clone(), 4),
        (cluster.ids[2].clone(), 1),
    ];
    expected.sort();

    // The key is required everywhere, compared exactly.
    for path in [
        "/api/v1/stats",
        "/api/v1/nodes",
        &format!("/api/v1/users/{both}/presence"),
        "/api/v1/security-events",
        "/api/v1/dashboard/stream",
    ] {
        for key in [None, Some("ops-test-key-0123456789abcdeX"), Some("wrong")] {
            let (status, body) = get(&b.base, path, key).await;
            assert_eq!(status, 401, "GET {path} with {key:?}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        }
    }
    let response = reqwest::get(format!("{}/api/v1/stats", a.base))
        .await
        .unwrap();
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");

    // Stats from each node: the same three nodes with their connections, and the totals.
    for node in [a, b, c] {
        let stats = eventually("stats converge", async || {
            let stats = ok(&node.base, "/api/v1/stats").await;
            if connections_by_node(&stats["nodes"]) == expected
                && stats["totals"]["usersOnline"] == 7
            {
                Ok(stats)
            } else {
                Err(stats.to_string())
            }
        })
        .await;
        let totals = &stats["totals"];
        assert_eq!(totals["nodes"], 3, "{stats}");
        assert_eq!(totals["connections"], 8, "{stats}");
        assert_eq!(totals["sockets"], 8, "{stats}");
        assert_eq!(totals["rooms"], 0, "{stats}");
        for n in stats["nodes"].as_array().unwrap() {
            assert_eq!(n["sockets"], n["connections"], "{n}");
            // Each socket sits in its user's Socket.IO room at least.
            assert!(n["rooms"].as_u64().unwrap() >= 1, "{n}");
            assert!(
                n["startedAt"].is_string() && n["updatedAt"].is_string(),
                "{n}"
            );
            assert!(n["redisRttMs"].as_f64().is_some(), "{n}");
        }
    }

    // Presence: on two nodes, on none, and a bad id.
    let presence = ok(&c.base, &format!("/api/v1/users/{both}/presence")).await;
    let mut two = vec![cluster.ids[0].clone(), cluster.ids[1].clone()];
    two.sort();
    assert_eq!(
        presence,
        json!({ "userId": both, "online": true, "sockets": 2, "nodes": two })
    );
    let nobody = unique("nobody");
    let presence = ok(&a.base, &format!("/api/v1/users/{nobody}/presence")).await;
    assert_eq!(
        presence,
        json!({ "userId": nobody, "online": false, "sockets": 0, "nodes": [] })
    );
    let (status, body) = get(&a.base, "/api/v1/users/bad!id/presence", Some(KEY)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );

    // Rooms are counted from storage.
    clients[0]
        .ok("room:create", json!({ "name": "ops", "kind": "public" }))
        .await;
    let stats = ok(&b.base, "/api/v1/stats").await;
    assert_eq!(stats["totals"]["rooms"], 1, "{stats}");

    // Security events from any node show on every node; never the token.
    let bad_token = "not.a.valid-token-ops";
    connect_with_bad_token(&a.base, bad_token).await;
    let events = eventually("the auth failure is recorded", async || {
        let body = ok(&c.base, "/api/v1/security-events").await;
        let found = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "auth_failure" && e["node"] == cluster.ids[0].as_str());
        if found {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    let text = events.to_string();
    assert!(!text.contains(bad_token), "{text}");
    let failure = &events["events"].as_array().unwrap()[0];
    assert_eq!(failure["detail"], "invalid token", "{failure}");
    assert_eq!(failure["peer"], "127.0.0.1", "{failure}");

    // The stream: the same cluster, live.
    let snapshot = snapshot_where(&b.base, |s| {
        s["totals"]["connections"] == 8 && s["security"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    assert_eq!(snapshot["totals"]["nodes"], 3, "{snapshot}");
    assert_eq!(snapshot["answeredBy"], cluster.ids[1].as_str());
    assert_eq!(connections_by_node(&snapshot["nodes"]), expected);

    // A socket leaves, then a whole node: every answer follows.
    c_only.close().await;
    eventually("c's socket is gone", async || {
        let stats = ok(&a.base, "/api/v1/stats").await;
        let on_c = connections_by_node(&stats["nodes"])
            .into_iter()
            .find(|(id, _)| *id == cluster.ids[2]);
        if on_c == Some((cluster.ids[2].clone(), 0)) && stats["totals"]["usersOnline"] == 6 {
            Ok(())
        } else {
            Err(stats.to_string())
        }
    })
    .await;
    let a_base = a.base.clone();
    let c = cluster.nodes.pop().expect("node c");
    c.stop().await;
    let nodes = eventually("c left", async || {
        let body = ok(&a_base, "/api/v1/nodes").await;
        if body["nodes"].as_array().unwrap().len() == 2 {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    let ids: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&cluster.ids[2].as_str()), "{nodes}");

    for client in clients {
        client.close().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_forbidden_attempts_are_security_events() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.api_key = Some(Secret::new(KEY));
        s.limits.send_rate_per_sec = 1;
        s.limits.send_burst = 1;
    })
    .await;
    let (owner_id, intruder_id) = (unique("owner"), unique("intruder"));
    let owner = app.connect(&owner_id).await;
    let intruder = app.connect(&intruder_id).await;
    let reply = owner
        .ok(
            "room:create",
            json!({ "name": "secret", "kind": "private" }),
        )
        .await;
    let room = reply["room"]["id"].as_str().unwrap().to_owned();
    let denied = intruder
        .ack("message:history", json!({ "roomId": room }))
        .await;
    assert_eq!(denied["error"]["code"], "forbidden", "{denied}");
    let text = "hush, this text is private";
    owner
        .ok("message:send", json!({ "roomId": room, "text": text }))
        .await;
    let limited = owner
        .ack("message:send", json!({ "roomId": room, "text": text }))
        .await;
    assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");

    let events = eventually("both are recorded", async || {
        let body = ok(&app.base, "/api/v1/security-events?limit=10").await;
        if body["events"].as_array().unwrap().len() >= 2 {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    let events = events["events"].as_array().unwrap();
    // Newest first.
    assert_eq!(events[0]["kind"], "rate_limited");
    assert_eq!(events[0]["user"], owner_id.as_str());
    assert_eq!(events[0]["detail"], "message:send");
    assert_eq!(events[1]["kind"], "forbidden");
    assert_eq!(events[1]["user"], intruder_id.as_str());
    assert_eq!(events[1]["detail"], "message:history");
    assert_eq!(events[1]["node"], "test-node");
    assert!(!Value::Array(events.clone()).to_string().contains(text));

    // The single node answers from its in-process backplane.
    let stats = eventually("the node published its load", async || {
        let stats = ok(&app.base, "/api/v1/stats").await;
        if stats["totals"]["connections"] == 2 {
            Ok(stats)
        } else {
            Err(stats.to_string())
        }
    })
    .await;
    assert_eq!(
        connections_by_node(&stats["nodes"]),
        vec![("test-node".to_owned(), 2)]
    );
    assert_eq!(stats["totals"]["usersOnline"], 2);
    assert_eq!(stats["totals"]["rooms"], 1);
    let presence = ok(&app.base, &format!("/api/v1/users/{owner_id}/presence")).await;
    assert_eq!(presence["nodes"], json!(["test-node"]));

    // Rates come from the counters of two publications.
    let snapshot = snapshot_where(&app.base, |s| {
        s["nodes"][0]["rates"].is_object() && s["nodes"][0]["messagesStored"] == 1
    })
    .await;
    assert_eq!(snapshot["nodes"][0]["rateLimited"], 1, "{snapshot}");
    assert!(snapshot["rates"]["eventsPerSec"].is_number(), "{snapshot}");

    // The page is served, with its stable hooks.
    let page = reqwest::get(format!("{}/dashboard", app.base))
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    for hook in [
        "api-key-input",
        "api-key-save",
        "node-count",
        "connection-count",
        "users-online",
    ] {
        assert!(
            html.contains(&format!("id=\"{hook}\"")),
            "the page lacks #{hook}"
        );
    }

    owner.close().await;
    intruder.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_api_is_not_there() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for path in [
        "/api/v1/stats",
        "/api/v1/nodes",
        "/api/v1/users/ann/presence",
        "/api/v1/security-events",
        "/api/v1/dashboard/stream",
    ] {
        for key in [None, Some(KEY)] {
            let (status, body) = get(&app.base, path, key).await;
            assert_eq!(status, 404, "GET {path}: {body}");
            assert_eq!(body["error"]["code"], "not_found", "{body}");
        }
    }
    // Unknown API paths are JSON errors too; the rest of the HTTP surface is untouched.
    let (status, body) = get(&app.base, "/api/v1/nope", Some(KEY)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let token = app.token("ann").await;
    assert!(!token.is_empty());
    app.stop().await;
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

async fn redis_node(server: &RedisServer, prefix: &str, id: &str) -> Backplane {
    let mut spec = NodeSpec::new(server, prefix, id);
    // A lapse of 1.5 s, so that the reaping below is quick.
    spec.node_timeout = Duration::from_millis(2500);
    spec.join().await
}

#[tokio::test]
async fn the_redis_backplane_counts_users_online_through_connects_disconnects_and_reaping() {
    let server = RedisServer::start();
    let prefix = format!("{}:", unique("ops-bp"));
    let one = redis_node(&server, &prefix, "one").await;
    let two = redis_node(&server, &prefix, "two").await;
    let on = async |bp: &Backplane, u: &str, s: &str| bp.presence.connected(&user(u), s).await;
    on(&one, "ann", "s1").await.unwrap();
    on(&one, "bob", "s2").await.unwrap();
    on(&two, "ann", "s3").await.unwrap();
    on(&two, "cid", "s4").await.unwrap();
    assert_eq!(one.presence.users_online().await.unwrap(), 3);
    let ann = two.presence.user_presence(&user("ann")).await.unwrap();
    assert_eq!(
        (ann.online, ann.sockets, ann.nodes),
        (true, 2, vec!["one".to_owned(), "two".to_owned()])
    );

    let load = NodeLoad {
        connections: 2,
        sockets: 2,
        rooms: 5,
        messages_stored: 7,
        ..NodeLoad::default()
    };
    one.loads.publish(load.clone()).await.unwrap();
    two.loads.publish(load).await.unwrap();
    assert_eq!(two.loads.nodes().await.unwrap().len(), 2);

    // "two" goes silent: "one", beating on, reaps it, and its published load goes with it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut reaped = Vec::new();
    while reaped.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "two was never reaped"
        );
        one.membership.heartbeat().await.unwrap();
        reaped = one.membership.sweep().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reaped.len(), 1, "cid left with two");
    let nodes = one.loads.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (
            nodes[0].id.as_str(),
            nodes[0].rooms,
            nodes[0].messages_stored
        ),
        ("one", 5, 7)
    );
    assert_eq!(one.presence.users_online().await.unwrap(), 2);
    let bob_left = one.presence.disconnected(&user("bob"), "s2").await;
    assert!(bob_left.unwrap());
    assert_eq!(one.presence.users_online().await.unwrap(), 1);
    let cid = one.presence.user_presence(&user("cid")).await.unwrap();
    assert!(!cid.online);

    // The newest 200 security events, newest first, shared by every node; a flood beyond the
    // node's budget (a burst of 200, then 20 a second) is dropped, not written.
    for i in 0..205 {
        let event = SecurityEvent {
            at: chrono::Utc::now(),
            node: "one".to_owned(),
            kind: SecurityKind::AuthFailure,
            user: None,
            peer: Some(format!("10.0.0.{}", i % 250)),
            detail: Some(format!("n{i}")),
        };
        one.security.record(event).await.unwrap();
    }
    let kept = two.security.recent(1000).await.unwrap();
    assert_eq!(kept.len(), 200);
    assert_eq!(kept[0].detail.as_deref(), Some("n199"));
    assert_eq!(kept[199].detail.as_deref(), Some("n0"));

    one.membership.leave().await.unwrap();
    assert!(two.loads.nodes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_dashboard_stream_does_not_hold_up_shutdown() {
    let mut app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.api_key = Some(Secret::new(KEY));
        s.shutdown_timeout = Duration::from_secs(20);
    })
    .await;
    let mut stream = reqwest::Client::new()
        .get(format!("{}/api/v1/dashboard/stream", app.base))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .expect("stream request");
    assert_eq!(stream.status().as_u16(), 200);
    assert!(stream.chunk().await.unwrap().is_some(), "a first snapshot");

    let started = std::time::Instant::now();
    let node = app.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(5), node)
        .await
        .expect("the node stops well before its drain deadline")
        .expect("node task")
        .expect("clean stop");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The stream ended rather than being cut.
    let rest = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ends with the node");
    app.stop().await;
}
