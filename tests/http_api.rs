//! The HTTP API (`/api/v1/`, `api.md`) on one node, on both storage backends: every route and
//! the events it causes, the key matrix, the rate limit and the OpenAPI document's routes.
//! (Bad inputs are `http_api_inputs.rs`; clusters and idempotency `http_api_cluster.rs`.)

mod support;

use std::time::Duration;

use confab::config::{Secret, Settings};
use serde_json::json;
use support::api::{Api, KEY, READ_KEY};
use support::{Backend, TestApp};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn with_keys(s: &mut Settings) {
    s.api_key = Some(Secret::new(KEY));
    s.api_read_key = Some(Secret::new(READ_KEY));
}

/// Every route of `api.md`, as `(method, path)` with `{roomId}` and `{userId}` to fill in.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/users/{userId}/notifications"),
    ("POST", "/api/v1/notifications"),
    ("POST", "/api/v1/rooms/{roomId}/notifications"),
    ("POST", "/api/v1/rooms"),
    ("GET", "/api/v1/rooms/{roomId}"),
    ("GET", "/api/v1/rooms/{roomId}/members"),
    ("PUT", "/api/v1/rooms/{roomId}/members/{userId}"),
    ("DELETE", "/api/v1/rooms/{roomId}/members/{userId}"),
    ("POST", "/api/v1/rooms/{roomId}/messages"),
    ("GET", "/api/v1/rooms/{roomId}/messages"),
    ("GET", "/api/v1/users/{userId}/rooms"),
    ("GET", "/api/v1/users/{userId}/presence"),
    ("POST", "/api/v1/users/{userId}/disconnect"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/security-events"),
    ("GET", "/api/v1/dashboard/stream"),
    ("GET", "/api/v1/openapi.json"),
];

fn fill(path: &str, room: &str, user: &str) -> String {
    path.replace("{roomId}", room).replace("{userId}", user)
}

async fn every_route_answers_as_the_contract_says(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_keys).await;
    let api = Api::new(&app.base, Some(KEY));
    let (alice, bob, carol, dave) = (
        unique("alice"),
        unique("bob"),
        unique("carol"),
        unique("dave"),
    );
    let a = app.connect(&alice).await;
    let b = app.connect(&bob).await;
    let d = app.connect(&dave).await;

    // A room with three members, one of whom never connected: the connected ones are told.
    let created = api
        .expect(
            201,
            "POST",
            "/api/v1/rooms",
            Some(json!({
                "name": " support ", "kind": "public", "members": [alice, bob, carol, bob],
            })),
        )
        .await;
    let room = created["room"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["room"]["name"], "support");
    assert_eq!(created["room"]["memberCount"], 3);
    assert_eq!(created["room"]["unread"], 0);
    for client in [&a, &b] {
        assert_eq!(client.next("room:added").await["id"], json!(room));
    }
    let got = api
        .expect(200, "GET", &format!("/api/v1/rooms/{room}"), None)
        .await;
    assert_eq!(got["room"]["kind"], "public");
    assert_eq!(got["room"]["memberCount"], 3);
    let members = api
        .expect(200, "GET", &format!("/api/v1/rooms/{room}/members"), None)
        .await;
    let mut expected = vec![alice.clone(), bob.clone(), carol.clone()];
    expected.sort();
    let listed: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, expected);
    let online = |id: &str| {
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["userId"] == id)
            .unwrap()["online"]
            .clone()
    };
    assert_eq!(
        (online(&alice), online(&carol)),
        (json!(true), json!(false))
    );

    // Adding a member: their sockets join and are told, the room (the joiner included) is told.
    let member = format!("/api/v1/rooms/{room}/members/{dave}");
    assert_eq!(
        api.expect(201, "PUT", &member, None).await,
        json!({ "added": true })
    );
    assert_eq!(d.next("room:added").await["id"], json!(room));
    let joined = a.next("room:member-joined").await;
    assert_eq!(
        (joined["userId"].as_str(), joined["memberCount"].as_i64()),
        (Some(dave.as_str()), Some(4))
    );
    assert_eq!(d.next("room:member-joined").await["userId"], json!(dave));
    assert_eq!(
        api.expect(200, "PUT", &member, None).await,
        json!({ "added": false })
    );

    // Posting as a member: the next seq, to every socket in the room (nobody is the sender).
    let messages = format!("/api/v1/rooms/{room}/messages");
    let post = json!({ "userId": alice, "text": "  hello  ", "clientId": "c1" });
    let first = api.expect(201, "POST", &messages, Some(post.clone())).await;
    assert_eq!(
        (
            first["message"]["seq"].as_i64(),
            first["message"]["text"].as_str()
        ),
        (Some(1), Some("hello"))
    );
    for client in [&a, &b, &d] {
        assert_eq!(
            client.next("message:new").await["id"],
            first["message"]["id"]
        );
    }
    let again = api.expect(200, "POST", &messages, Some(post)).await;
    assert_eq!(again["message"]["id"], first["message"]["id"]);
    let second = api
        .expect(
            201,
            "POST",
            &messages,
            Some(json!({ "userId": bob, "text": "two", "replyTo": first["message"]["id"] })),
        )
        .await;
    assert_eq!(second["message"]["seq"], 2);
    // The resend broadcast nothing: the next message:new anyone sees is seq 2.
    assert_eq!(a.next("message:new").await["seq"], 2);
    let outsider = api
        .call(
            "POST",
            &messages,
            Some(json!({ "userId": unique("eve"), "text": "hi" })),
        )
        .await;
    assert_eq!((outsider.status, outsider.code()), (403, "forbidden"));
    let nowhere = format!("/api/v1/rooms/{}/messages", uuid::Uuid::new_v4());
    let missing = api
        .call(
            "POST",
            &nowhere,
            Some(json!({ "userId": alice, "text": "hi" })),
        )
        .await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));
    let page = api
        .expect(200, "GET", &format!("{messages}?afterSeq=0&limit=1"), None)
        .await;
    assert_eq!(
        (
            page["messages"][0]["seq"].as_i64(),
            page["hasMore"].as_bool()
        ),
        (Some(1), Some(true))
    );
    let page = api.expect(200, "GET", &messages, None).await;
    assert_eq!(
        (
            page["messages"].as_array().unwrap().len(),
            page["hasMore"].as_bool()
        ),
        (2, Some(false))
    );

    // Removing a member: their sockets leave first, so they see room:removed, not member-left.
    assert_eq!(
        api.expect(200, "DELETE", &member, None).await,
        json!({ "removed": true })
    );
    let left = a.next("room:member-left").await;
    assert_eq!(
        (left["userId"].as_str(), left["memberCount"].as_i64()),
        (Some(dave.as_str()), Some(3))
    );
    assert_eq!(d.next("room:removed").await, json!({ "roomId": room }));
    assert_eq!(
        api.expect(200, "DELETE", &member, None).await,
        json!({ "removed": false })
    );

    // A user's rooms, as room:list answers them (carol, who never connected, read nothing).
    let rooms = api
        .expect(200, "GET", &format!("/api/v1/users/{carol}/rooms"), None)
        .await;
    assert_eq!(
        (
            rooms["rooms"][0]["id"].as_str(),
            rooms["rooms"][0]["unread"].as_i64()
        ),
        (Some(room.as_str()), Some(2))
    );
    let none = api
        .expect(
            200,
            "GET",
            &format!("/api/v1/users/{}/rooms", unique("nobody")),
            None,
        )
        .await;
    assert_eq!(none, json!({ "rooms": [] }));

    // Notifications, with the sockets reached.
    let to_alice = json!({ "type": "ping", "data": { "n": 1 } });
    let sent = api
        .expect(
            200,
            "POST",
            &format!("/api/v1/users/{alice}/notifications"),
            Some(to_alice),
        )
        .await;
    assert_eq!(sent, json!({ "sockets": 1 }));
    assert_eq!(
        a.next("notification").await,
        json!({ "type": "ping", "data": { "n": 1 } })
    );
    let many = json!({ "userIds": [alice, bob, unique("zed")], "type": "all" });
    assert_eq!(
        api.expect(200, "POST", "/api/v1/notifications", Some(many))
            .await,
        json!({ "sockets": 2 })
    );
    assert_eq!(
        b.next("notification").await,
        json!({ "type": "all", "data": null })
    );
    let to_room = format!("/api/v1/rooms/{room}/notifications");
    let in_room = api
        .expect(
            200,
            "POST",
            &to_room,
            Some(json!({ "type": "r", "data": [1] })),
        )
        .await;
    assert_eq!(in_room, json!({ "sockets": 2 }));
    assert_eq!(
        a.next_where("notification", |n| n["type"] == "r").await,
        json!({ "type": "r", "data": [1], "roomId": room })
    );

    // Presence and the operations answers.
    let presence = api
        .expect(200, "GET", &format!("/api/v1/users/{alice}/presence"), None)
        .await;
    assert_eq!(
        (presence["online"].as_bool(), presence["sockets"].as_u64()),
        (Some(true), Some(1))
    );
    for path in [
        "/api/v1/stats",
        "/api/v1/nodes",
        "/api/v1/security-events?limit=5",
    ] {
        api.expect(200, "GET", path, None).await;
    }

    // A direct room's members cannot be changed.
    let direct = a.ok("room:direct", json!({ "userId": bob })).await;
    let direct = direct["room"]["id"].as_str().unwrap();
    for method in ["PUT", "DELETE"] {
        let answer = api
            .call(
                method,
                &format!("/api/v1/rooms/{direct}/members/{carol}"),
                None,
            )
            .await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "bad_request"),
            "{method}"
        );
    }
    let unknown = format!("/api/v1/rooms/{}/members/{carol}", uuid::Uuid::new_v4());
    assert_eq!(api.call("PUT", &unknown, None).await.status, 404);

    // Disconnecting a user closes every socket they have; presence follows.
    let sent = api
        .expect(
            200,
            "POST",
            &format!("/api/v1/users/{bob}/disconnect"),
            None,
        )
        .await;
    assert_eq!(sent, json!({ "sockets": 1 }));
    b.next("close").await;
    let presence = format!("/api/v1/users/{bob}/presence");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while api.expect(200, "GET", &presence, None).await["online"] != json!(false) {
        assert!(tokio::time::Instant::now() < deadline, "bob still online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Metrics per route template and status.
    let metrics = app.metrics().await;
    let series = metrics
        .lines()
        .find(|l| {
            l.starts_with("confab_api_requests_total{")
                && l.contains(r#"route="/api/v1/rooms/{roomId}/messages""#)
                && l.contains(r#"method="POST""#)
                && l.contains(r#"status="201""#)
        })
        .unwrap_or_else(|| panic!("no API series in:\n{metrics}"));
    assert!(series.ends_with(" 2"), "{series}");
    assert!(metrics.contains("confab_api_duration_seconds_count{"));
    for client in [a, d] {
        client.close().await;
    }
    app.stop().await;
}
both_backends!(every_route_answers_as_the_contract_says);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_decide_who_may_call_what() {
    let off = TestApp::spawn(Backend::Sqlite).await;
    let on = TestApp::spawn_with(Backend::Sqlite, with_keys).await;
    let room = uuid::Uuid::new_v4().to_string();
    for (method, path) in ROUTES {
        let path = fill(path, &room, "ann");
        // No key configured: the API does not exist, whatever is presented.
        for key in [None, Some(KEY)] {
            let answer = Api::new(&off.base, key).call(method, &path, None).await;
            assert_eq!(
                (answer.status, answer.code()),
                (404, "not_found"),
                "{method} {path} off"
            );
        }
        if path.ends_with("openapi.json") {
            assert_eq!(
                Api::new(&on.base, None)
                    .call(method, &path, None)
                    .await
                    .status,
                200
            );
            continue;
        }
        for key in [None, Some("api-test-key-0123456789abcdeX"), Some("short")] {
            let answer = Api::new(&on.base, key).call(method, &path, None).await;
            assert_eq!(
                (answer.status, answer.code()),
                (401, "unauthorized"),
                "{method} {path} {key:?}"
            );
            assert!(answer.headers.contains_key("www-authenticate"));
        }
        if path.ends_with("/stream") {
            continue;
        }
        let read = Api::new(&on.base, Some(READ_KEY))
            .call(method, &path, None)
            .await;
        if *method == "GET" {
            assert!(
                read.status != 401 && read.status != 403,
                "{method} {path} read key: {}",
                read.status
            );
        } else {
            assert_eq!(
                (read.status, read.code()),
                (403, "forbidden"),
                "{method} {path} read key"
            );
        }
        let full = Api::new(&on.base, Some(KEY))
            .call(method, &path, None)
            .await;
        assert!(
            full.status != 401 && full.status != 403,
            "{method} {path} full key: {}",
            full.status
        );
    }
    // Paths that name no route are JSON 404s too.
    let nope = Api::new(&on.base, Some(KEY))
        .call("GET", "/api/v1/nope", None)
        .await;
    assert_eq!((nope.status, nope.code()), (404, "not_found"));
    off.stop().await;
    on.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_is_rate_limited_with_retry_after() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        with_keys(s);
        s.limits.api_rate_per_sec = 1;
        s.limits.api_rate_burst = 3;
    })
    .await;
    let api = Api::new(&app.base, Some(KEY));
    for _ in 0..3 {
        api.expect(200, "GET", "/api/v1/nodes", None).await;
    }
    let limited = api.call("GET", "/api/v1/nodes", None).await;
    assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // The read key has its own bucket.
    Api::new(&app.base, Some(READ_KEY))
        .expect(200, "GET", "/api/v1/nodes", None)
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let app = TestApp::spawn_with(Backend::Sqlite, with_keys).await;
    let answer = Api::new(&app.base, None)
        .call("GET", "/api/v1/openapi.json", None)
        .await;
    assert_eq!(answer.status, 200);
    let doc = answer.body;
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in ROUTES {
        let operation = &doc["paths"][path][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {path} is not in the document"
        );
        assert!(
            operation["responses"].is_object(),
            "{method} {path} has no responses"
        );
    }
    let listed: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        listed,
        ROUTES.len(),
        "the document lists routes the contract does not"
    );
    app.stop().await;
}
