//! The HTTP API across nodes: three nodes with their own redis-server and one Postgres database
//! (a call on one node reaches sockets on the others, `sockets` counts the whole cluster), and
//! `Idempotency-Key` (repeats on the same node, another node and after a restart replay the
//! first answer; concurrent repeats run once; another body is `409`).

mod support;

use confab::config::{RedisSettings, Secret, Settings};
use serde_json::{Value, json};
use support::api::{Answer, Api, KEY};
use support::redis::RedisServer;
use support::{Backend, TestApp};

const JWT_SECRET: &str = "api-test-jwt-secret-0123456789";

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A node on the database at `url` (TestApp's own SQLite file goes unused), with the API key.
async fn node(url: &str, id: &str, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let (url, id) = (url.to_owned(), id.to_owned());
    TestApp::spawn_with(Backend::Sqlite, move |s| {
        s.database_url = url;
        s.node_id = id;
        s.jwt_secret = Secret::new(JWT_SECRET);
        s.dev_tokens = true;
        s.api_key = Some(Secret::new(KEY));
        adjust(s);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_on_one_node_reach_sockets_on_every_node() {
    let redis = RedisServer::start();
    let (url, database) = support::fresh_postgres_database().await;
    let prefix = unique("api");
    let mut nodes = Vec::new();
    // One at a time: the first migrates the database.
    for letter in ["a", "b", "c"] {
        let settings = RedisSettings {
            url: Secret::new(redis.url()),
            prefix: prefix.clone(),
        };
        nodes.push(
            node(&url, &format!("api-{letter}"), move |s| {
                s.redis = Some(settings)
            })
            .await,
        );
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let api = Api::new(&a.base, Some(KEY));
    let (alice, carol) = (unique("alice"), unique("carol"));
    let alice_b = b.connect(&alice).await;
    let carol_b = b.connect(&carol).await;
    let carol_c = c.connect(&carol).await;

    // A notification on A reaches the user's sockets on B and C, and counts them.
    let path = format!("/api/v1/users/{carol}/notifications");
    let sent = api
        .expect(200, "POST", &path, Some(json!({ "type": "hi" })))
        .await;
    assert_eq!(sent, json!({ "sockets": 2 }));
    for client in [&carol_b, &carol_c] {
        assert_eq!(
            client.next("notification").await,
            json!({ "type": "hi", "data": null })
        );
    }
    let presence = api
        .expect(200, "GET", &format!("/api/v1/users/{carol}/presence"), None)
        .await;
    assert_eq!(presence["sockets"], 2);
    assert_eq!(presence["nodes"], json!(["api-b", "api-c"]));

    // A member added over HTTP on A receives the room's messages on C.
    let created = api
        .expect(
            201,
            "POST",
            "/api/v1/rooms",
            Some(json!({ "name": "ops", "members": [alice] })),
        )
        .await;
    let room = created["room"]["id"].as_str().unwrap().to_owned();
    alice_b.next("room:added").await;
    let member = format!("/api/v1/rooms/{room}/members/{carol}");
    assert_eq!(api.expect(201, "PUT", &member, None).await["added"], true);
    for client in [&carol_b, &carol_c] {
        assert_eq!(client.next("room:added").await["id"], json!(room));
    }
    assert_eq!(
        alice_b.next("room:member-joined").await["userId"],
        json!(carol)
    );
    let from_b = alice_b
        .ok("message:send", json!({ "roomId": room, "text": "from b" }))
        .await;
    assert_eq!(from_b["message"]["seq"], 1);
    assert_eq!(carol_c.next("message:new").await["text"], "from b");

    // A message posted over HTTP on A gets the next seq and reaches every socket in the room,
    // the sending user's included.
    let posted = api
        .expect(
            201,
            "POST",
            &format!("/api/v1/rooms/{room}/messages"),
            Some(json!({ "userId": alice, "text": "from a" })),
        )
        .await;
    assert_eq!(posted["message"]["seq"], 2);
    for client in [&alice_b, &carol_b, &carol_c] {
        let got = client.next_where("message:new", |m| m["seq"] == 2).await;
        assert_eq!(got["text"], "from a");
    }
    let in_room = api
        .expect(
            200,
            "POST",
            &format!("/api/v1/rooms/{room}/notifications"),
            Some(json!({ "type": "r" })),
        )
        .await;
    assert_eq!(in_room, json!({ "sockets": 3 }));

    // Disconnecting on A closes the user's sockets on B and C.
    let closed = api
        .expect(
            200,
            "POST",
            &format!("/api/v1/users/{carol}/disconnect"),
            None,
        )
        .await;
    assert_eq!(closed, json!({ "sockets": 2 }));
    for client in [&carol_b, &carol_c] {
        client.next("close").await;
    }
    alice_b.close().await;
    for node in nodes {
        node.stop().await;
    }
    support::drop_postgres_database(&database).await;
}

/// A call with an `Idempotency-Key`.
async fn with_key(api: &Api, key: &str, path: &str, body: &Value) -> Answer {
    api.raw(
        "POST",
        path,
        Some(body.to_string()),
        &[("idempotency-key", key)],
    )
    .await
}

fn same_answer(first: &Answer, again: &Answer) {
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert_eq!(again.headers["idempotent-replayed"], "true");
}

async fn repeats_replay_the_first_answer(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, database) = match backend {
        Backend::Postgres => {
            let (url, name) = support::fresh_postgres_database().await;
            (url, Some(name))
        }
        Backend::Sqlite => (format!("sqlite://{}/confab.db", dir.path().display()), None),
    };
    let a = node(&url, "idem-a", |_| {}).await;
    let api_a = Api::new(&a.base, Some(KEY));
    let user = unique("u");
    let created = api_a
        .expect(
            201,
            "POST",
            "/api/v1/rooms",
            Some(json!({ "name": "r", "members": [user] })),
        )
        .await;
    let messages = format!(
        "/api/v1/rooms/{}/messages",
        created["room"]["id"].as_str().unwrap()
    );
    // No clientId: only the key keeps this post from being stored twice.
    let post = json!({ "userId": user, "text": "once" });
    let first = with_key(&api_a, "k-1", &messages, &post).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    same_answer(&first, &with_key(&api_a, "k-1", &messages, &post).await);

    // Concurrent repeats run once: every caller gets the one answer.
    let racing = (0..8).map(|_| with_key(&api_a, "k-2", &messages, &post));
    let answers = futures::future::join_all(racing).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["message"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "concurrent repeats stored {} messages",
        ids.len()
    );

    // The same key for another body or another path is a conflict, and changes nothing.
    let other = json!({ "userId": user, "text": "twice" });
    let conflict = with_key(&api_a, "k-1", &messages, &other).await;
    assert_eq!((conflict.status, conflict.code()), (409, "conflict"));
    let elsewhere = with_key(&api_a, "k-1", "/api/v1/notifications", &post).await;
    assert_eq!((elsewhere.status, elsewhere.code()), (409, "conflict"));

    // Another node on the same database replays (Postgres: nodes share it).
    let b = match backend {
        Backend::Postgres => {
            let b = node(&url, "idem-b", |_| {}).await;
            let api_b = Api::new(&b.base, Some(KEY));
            same_answer(&first, &with_key(&api_b, "k-1", &messages, &post).await);
            Some(b)
        }
        Backend::Sqlite => None,
    };

    // After a restart the key is still remembered.
    a.stop().await;
    let a = node(&url, "idem-a2", |_| {}).await;
    let api_a = Api::new(&a.base, Some(KEY));
    same_answer(&first, &with_key(&api_a, "k-1", &messages, &post).await);
    let history = api_a.expect(200, "GET", &messages, None).await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    a.stop().await;
    if let Some(b) = b {
        b.stop().await;
    }
    if let Some(name) = database {
        support::drop_postgres_database(&name).await;
    }
}
both_backends!(repeats_replay_the_first_answer);
