//! The message write path where it is hardest: many senders over three nodes, a send racing a
//! leave, the database going away and coming back, and more sends than a node can store.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use confab::config::{RedisSettings, Secret};
use serde_json::{Value, json};
use sqlx::Connection;
use support::postgres::PostgresServer;
use support::redis::RedisServer;
use support::{Backend, TestApp, TestClient};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn seq_of(reply: &Value) -> i64 {
    reply["message"]["seq"]
        .as_i64()
        .expect("a stored message has a seq")
}

fn code_of(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("ok")
}

/// `count` sends from one socket, one after another (rust_socketio picks ack ids at random
/// among 1000, so a socket must not have many acks outstanding); their replies.
async fn send_in_turn(client: &TestClient, room: &Value, count: usize, tag: String) -> Vec<Value> {
    let mut replies = Vec::with_capacity(count);
    for k in 0..count {
        let payload = json!({ "roomId": room, "text": format!("{tag} {k}") });
        replies.push(client.ack("message:send", payload).await);
    }
    replies
}

/// Every seq of the room's history, read by `reader`, ascending.
async fn history(reader: &TestClient, room: &Value) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = reader
            .ok(
                "message:history",
                json!({ "roomId": room, "afterSeq": after, "limit": 200 }),
            )
            .await;
        let messages = page["messages"].as_array().expect("messages").clone();
        seqs.extend(messages.iter().map(|m| m["seq"].as_i64().unwrap()));
        after = *seqs.last().unwrap_or(&after);
        if page["hasMore"] != json!(true) {
            return seqs;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_senders_over_three_nodes_get_gapless_seqs() {
    let redis = RedisServer::start();
    let (database_url, database) = support::fresh_postgres_database().await;
    let prefix = unique("write");
    let mut nodes = Vec::new();
    for letter in ["a", "b", "c"] {
        let (url, redis_url, prefix) = (database_url.clone(), redis.url(), prefix.clone());
        nodes.push(
            TestApp::spawn_with(Backend::Sqlite, move |s| {
                s.database_url = url;
                s.node_id = format!("write-{letter}");
                s.redis = Some(RedisSettings {
                    url: Secret::new(redis_url),
                    prefix,
                });
                s.jwt_secret = Secret::new("write-path-test-secret-0123456789");
                s.dev_tokens = true;
                s.limits.send_rate_per_sec = 1000;
                s.limits.send_burst = 1000;
            })
            .await,
        );
    }
    let users: Vec<String> = (0..50).map(|i| unique(&format!("s{i:02}"))).collect();
    let owner = nodes[0].connect(&unique("owner")).await;
    let room = owner
        .ok(
            "room:create",
            json!({ "name": "busy", "kind": "private", "members": users }),
        )
        .await["room"]["id"]
        .clone();
    let mut senders = Vec::new();
    for (i, user) in users.iter().enumerate() {
        senders.push(nodes[i % 3].connect(user).await);
    }
    // Every sender sends three messages, all senders at once.
    let sends = senders
        .iter()
        .enumerate()
        .map(|(i, sender)| send_in_turn(sender, &room, 3, format!("m{i}")));
    let replies: Vec<Value> = futures::future::join_all(sends).await.concat();
    let mut seqs: Vec<i64> = replies.iter().map(seq_of).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=150).collect::<Vec<_>>(), "gapless and unique");
    assert_eq!(history(&owner, &room).await, seqs);
    // The owner, on node a, hears of every message, whichever node stored it.
    let mut heard = BTreeSet::new();
    while heard.len() < 150 {
        let message = owner.next("message:new").await;
        heard.insert(message["seq"].as_i64().unwrap());
    }
    assert_eq!(heard.into_iter().collect::<Vec<_>>(), seqs);
    for client in senders.into_iter().chain([owner]) {
        client.close().await;
    }
    for node in nodes {
        node.stop().await;
    }
    support::drop_postgres_database(&database).await;
}

/// Sends race their sender's leave: each is either stored (and delivered) before the leave, or
/// refused with `forbidden`; nothing refused is stored.
async fn send_racing_leave(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.limits.send_rate_per_sec = 1000;
        s.limits.send_burst = 1000;
    })
    .await;
    let leaver_id = unique("leaver");
    let owner = app.connect(&unique("owner")).await;
    let room = owner
        .ok(
            "room:create",
            json!({ "name": "race", "members": [leaver_id] }),
        )
        .await["room"]["id"]
        .clone();
    let mut tabs = Vec::new();
    for _ in 0..10 {
        tabs.push(app.connect(&leaver_id).await);
    }
    let other_tab = app.connect(&leaver_id).await;
    let sends = tabs
        .iter()
        .map(|tab| send_in_turn(tab, &room, 6, "race".into()));
    let leave = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        other_tab.ok("room:leave", json!({ "roomId": room })).await
    };
    let (replies, _) = futures::join!(futures::future::join_all(sends), leave);
    let replies: Vec<Value> = replies.concat();
    let mut stored = Vec::new();
    for reply in &replies {
        match code_of(reply) {
            "ok" => stored.push(seq_of(reply)),
            "forbidden" => {}
            other => panic!("unexpected reply {other}: {reply}"),
        }
    }
    stored.sort_unstable();
    eprintln!(
        "{} sends stored before the leave, {} refused after it",
        stored.len(),
        replies.len() - stored.len()
    );
    assert_eq!(
        history(&owner, &room).await,
        stored,
        "stored = acknowledged"
    );
    let mut heard = BTreeSet::new();
    while heard.len() < stored.len() {
        heard.insert(owner.next("message:new").await["seq"].as_i64().unwrap());
    }
    assert_eq!(heard.into_iter().collect::<Vec<_>>(), stored);
    let after = tabs[0]
        .ack(
            "message:send",
            json!({ "roomId": room, "text": "too late" }),
        )
        .await;
    assert_eq!(code_of(&after), "forbidden");
    for client in tabs.into_iter().chain([owner, other_tab]) {
        client.close().await;
    }
    app.stop().await;
}
both_backends!(send_racing_leave);

async fn readiness(base: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_outage_is_unavailable_fast_and_heals() {
    let postgres = PostgresServer::start();
    let url = postgres.url();
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| s.database_url = url).await;
    let alice = app.connect(&unique("alice")).await;
    let room = alice.ok("room:create", json!({ "name": "outage" })).await["room"]["id"].clone();
    let before = alice
        .ok(
            "message:send",
            json!({ "roomId": room, "text": "before", "clientId": "c-1" }),
        )
        .await;

    postgres.stop();
    let started = Instant::now();
    let failed = alice
        .ack(
            "message:send",
            json!({ "roomId": room, "text": "during", "clientId": "c-2" }),
        )
        .await;
    let waited = started.elapsed();
    assert_eq!(code_of(&failed), "unavailable", "{failed}");
    assert!(
        waited < Duration::from_secs(2),
        "unavailable after {waited:?}"
    );
    let (status, body) = readiness(&app.base).await;
    assert_eq!(
        (status, &body["checks"]["storage"]),
        (503, &json!("unreachable"))
    );

    postgres.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    while readiness(&app.base).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The resend of the refused message is stored once; the acked one is still there.
    let resent = alice
        .ok(
            "message:send",
            json!({ "roomId": room, "text": "during", "clientId": "c-2" }),
        )
        .await;
    let again = alice
        .ok(
            "message:send",
            json!({ "roomId": room, "text": "during", "clientId": "c-2" }),
        )
        .await;
    assert_eq!(again["message"]["id"], resent["message"]["id"]);
    assert_eq!(
        history(&alice, &room).await,
        vec![seq_of(&before), seq_of(&resent)]
    );
    assert_eq!((seq_of(&before), seq_of(&resent)), (1, 2));
    alice.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_at_once_and_nothing_refused_is_stored() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.write.queue = 4;
        s.write.max_batch = 1;
        s.limits.send_rate_per_sec = 10_000;
        s.limits.send_burst = 10_000;
    })
    .await;
    let owner = app.connect(&unique("owner")).await;
    let room = owner.ok("room:create", json!({ "name": "flood" })).await["room"]["id"].clone();
    let owner_id = owner.session["userId"].as_str().unwrap().to_owned();
    let mut tabs = Vec::new();
    for _ in 0..40 {
        tabs.push(app.connect(&owner_id).await);
    }
    let started = Instant::now();
    let sends = tabs
        .iter()
        .map(|tab| send_in_turn(tab, &room, 8, "flood".into()));
    let replies: Vec<Value> = futures::future::join_all(sends).await.concat();
    let took = started.elapsed();
    eprintln!("320 sends answered in {took:?}");
    let mut stored = Vec::new();
    let mut refused = 0;
    for reply in &replies {
        match code_of(reply) {
            "ok" => stored.push(seq_of(reply)),
            "unavailable" => refused += 1,
            other => panic!("unexpected reply {other}: {reply}"),
        }
    }
    assert!(
        refused > 0,
        "40 senders at once overflow a queue of 4 (took {took:?})"
    );
    stored.sort_unstable();
    assert_eq!(stored, (1..=stored.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        history(&owner, &room).await,
        stored,
        "refused sends are not stored"
    );
    let metrics = scrape(&app).await;
    let counted: f64 = metrics
        .lines()
        .find(|l| l.starts_with("confab_write_refused_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("confab_write_refused_total");
    assert_eq!(counted as usize, refused, "every refusal is counted");
    for client in tabs.into_iter().chain([owner]) {
        client.close().await;
    }
    app.stop().await;
}

/// The node's metrics, as text.
async fn scrape(app: &TestApp) -> String {
    reqwest::get(format!("{}/metrics", app.base))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text")
}

/// How many storage calls of each operation this node made so far, from its own metrics.
async fn storage_calls(app: &TestApp) -> std::collections::BTreeMap<String, u64> {
    let text = scrape(app).await;
    text.lines()
        .filter(|l| l.starts_with("confab_storage_duration_seconds_count{"))
        .filter_map(|l| {
            let op = l.split("op=\"").nth(1)?.split('"').next()?.to_owned();
            let count = l.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some((op, count))
        })
        .collect()
}

/// A member in good standing types, lists typers and sends without any membership query: the
/// Socket.IO room is the fast check, and storage is only asked to store.
async fn members_cost_no_membership_queries(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.limits.typing_rate_per_sec = 1000;
        s.limits.typing_burst = 1000;
    })
    .await;
    let ann = app.connect(&unique("ann")).await;
    let bob = app.connect(&unique("bob")).await;
    let bob_id = bob.session["userId"].clone();
    let room = ann
        .ok(
            "room:create",
            json!({ "name": "quiet", "members": [bob_id] }),
        )
        .await["room"]["id"]
        .clone();
    bob.next("room:added").await;
    let before = storage_calls(&app).await;
    for _ in 0..30 {
        ann.ok("typing:start", json!({ "roomId": room })).await;
        bob.ok("room:typing", json!({ "roomId": room })).await;
    }
    ann.ok("typing:stop", json!({ "roomId": room })).await;
    for i in 0..5 {
        ann.ok(
            "message:send",
            json!({ "roomId": room, "text": format!("hi {i}") }),
        )
        .await;
    }
    let after = storage_calls(&app).await;
    let moved: Vec<(&String, u64)> = after
        .iter()
        .map(|(op, n)| (op, n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        moved.iter().all(|(op, _)| op.as_str() == "send_batch"),
        "only the sends reached storage: {moved:?}"
    );
    // And a stranger still gets the contract's answers, from storage.
    let stranger = app.connect(&unique("stranger")).await;
    let refused = stranger
        .ack("typing:start", json!({ "roomId": room }))
        .await;
    assert_eq!(code_of(&refused), "forbidden");
    let unknown = json!({ "roomId": uuid::Uuid::now_v7() });
    assert_eq!(
        code_of(&stranger.ack("typing:start", unknown).await),
        "not_found"
    );
    for client in [ann, bob, stranger] {
        client.close().await;
    }
    app.stop().await;
}
both_backends!(members_cost_no_membership_queries);

/// The count and sum of the node's write batches so far (`confab_write_batch_messages`).
async fn write_batches(app: &TestApp) -> (u64, u64) {
    let text = scrape(app).await;
    let value = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or_else(|| panic!("{name} in the metrics"))
    };
    (
        value("confab_write_batch_messages_count"),
        value("confab_write_batch_messages_sum"),
    )
}

/// With a long linger: a lone message is written at once, and messages that follow it closely
/// share one commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_message_waits_for_nobody_and_a_burst_shares_a_commit() {
    let linger = Duration::from_secs(3);
    let app = TestApp::spawn_with(Backend::Sqlite, move |s| {
        s.write.linger = linger;
        s.write.max_wait = linger * 3;
    })
    .await;
    let owner = app.connect(&unique("owner")).await;
    let room = owner.ok("room:create", json!({ "name": "linger" })).await["room"]["id"].clone();
    let owner_id = owner.session["userId"].as_str().unwrap().to_owned();
    let mut tabs = Vec::new();
    for _ in 0..5 {
        tabs.push(app.connect(&owner_id).await);
    }

    let started = Instant::now();
    owner
        .ok("message:send", json!({ "roomId": room, "text": "alone" }))
        .await;
    let alone = started.elapsed();
    assert!(
        alone < linger / 3,
        "a lone message waited {alone:?} (linger {linger:?})"
    );
    assert_eq!(write_batches(&app).await, (1, 1));

    // Sent right after the first: the writer is busy, so they gather into one batch.
    let sends = tabs.iter().enumerate().map(|(k, tab)| {
        tab.ok(
            "message:send",
            json!({ "roomId": room, "text": format!("burst {k}") }),
        )
    });
    let replies = futures::future::join_all(sends).await;
    let mut seqs: Vec<i64> = replies.iter().map(seq_of).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6]);
    assert_eq!(
        write_batches(&app).await,
        (2, 6),
        "five messages in one commit"
    );
    for client in tabs.into_iter().chain([owner]) {
        client.close().await;
    }
    app.stop().await;
}

/// The Postgres backends that have run the write path's statements (their last statement is the
/// batch statement or the writer's session setup); the read pool never runs either.
async fn writer_backends(url: &str) -> BTreeSet<i32> {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND (query LIKE 'WITH bumped AS%' OR query LIKE 'SELECT set_config(''plan_cache_mode''%')",
    )
    .fetch_all(&mut conn)
    .await
    .expect("pg_stat_activity");
    conn.close().await.expect("close");
    pids.into_iter().collect()
}

/// The write path keeps its Postgres connections: many batches, one after another, run on the
/// connections the writers opened at start, neither reconnecting per batch nor piling up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batches_reuse_the_writers_connections() {
    let url = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen_url = url.clone();
    let app = TestApp::spawn_with(Backend::Postgres, move |s| {
        s.limits.send_rate_per_sec = 1000;
        s.limits.send_burst = 1000;
        *seen_url.lock().unwrap() = s.database_url.clone();
    })
    .await;
    let url = url.lock().unwrap().clone();
    let writers = writer_backends(&url).await;
    assert!(!writers.is_empty(), "the writers connect at start");

    let owner = app.connect(&unique("reuse")).await;
    let room = owner.ok("room:create", json!({ "name": "reuse" })).await["room"]["id"].clone();
    let replies = send_in_turn(&owner, &room, 40, "reuse".to_owned()).await;
    assert_eq!(
        replies.iter().map(seq_of).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    assert_eq!(
        write_batches(&app).await.0,
        40,
        "one batch per message, sent in turn"
    );
    assert_eq!(
        writer_backends(&url).await,
        writers,
        "40 batches ran on the connections opened at start"
    );
    owner.close().await;
    app.stop().await;
}
