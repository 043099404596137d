//! Bad inputs to every route of the HTTP API (bad UUIDs and user ids, bad JSON, oversized
//! bodies, out-of-range fields) are `400 bad_request` with a message, and change nothing.

mod support;

use confab::config::Secret;
use serde_json::{Value, json};
use support::api::{Api, KEY};
use support::{Backend, TestApp};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_bad_requests_and_change_nothing() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.api_key = Some(Secret::new(KEY));
        s.limits.max_payload_bytes = 2048;
    })
    .await;
    let api = Api::new(&app.base, Some(KEY));
    let alice = unique("alice");
    let a = app.connect(&alice).await;
    let created = api
        .expect(
            201,
            "POST",
            "/api/v1/rooms",
            Some(json!({ "name": "r", "members": [alice] })),
        )
        .await;
    let room = created["room"]["id"].as_str().unwrap().to_owned();
    a.next("room:added").await;

    let huge = format!("{{\"type\":\"x\",\"data\":\"{}\"}}", "x".repeat(4096));
    let long_id = "u".repeat(65);
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let text = |t: Value| json!({ "userId": alice, "text": t }).to_string();
    let cases: Vec<(&str, String, Option<String>)> = vec![
        (
            "POST",
            "/api/v1/users/bad!id/notifications".into(),
            Some(r#"{"type":"x"}"#.into()),
        ),
        (
            "POST",
            format!("/api/v1/users/{long_id}/notifications"),
            Some(r#"{"type":"x"}"#.into()),
        ),
        (
            "POST",
            format!("/api/v1/users/{alice}/notifications"),
            Some("{".into()),
        ),
        (
            "POST",
            format!("/api/v1/users/{alice}/notifications"),
            Some(huge.clone()),
        ),
        (
            "POST",
            format!("/api/v1/users/{alice}/notifications"),
            Some(r#"{"type":"  "}"#.into()),
        ),
        (
            "POST",
            format!("/api/v1/users/{alice}/notifications"),
            Some(json!({ "type": "t".repeat(65) }).to_string()),
        ),
        (
            "POST",
            format!("/api/v1/users/{alice}/notifications"),
            Some(r#"{"type":5}"#.into()),
        ),
        (
            "POST",
            format!("/api/v1/users/{alice}/notifications"),
            Some("[]".into()),
        ),
        (
            "POST",
            "/api/v1/notifications".into(),
            Some(r#"{"userIds":[],"type":"x"}"#.into()),
        ),
        (
            "POST",
            "/api/v1/notifications".into(),
            Some(json!({ "userIds": many, "type": "x" }).to_string()),
        ),
        (
            "POST",
            "/api/v1/notifications".into(),
            Some(json!({ "userIds": [alice, "bad id"], "type": "x" }).to_string()),
        ),
        (
            "POST",
            "/api/v1/notifications".into(),
            Some(json!({ "userIds": [alice] }).to_string()),
        ),
        (
            "POST",
            "/api/v1/rooms/not-a-uuid/notifications".into(),
            Some(r#"{"type":"x"}"#.into()),
        ),
        (
            "POST",
            "/api/v1/rooms".into(),
            Some(json!({ "name": " ", "members": [alice] }).to_string()),
        ),
        (
            "POST",
            "/api/v1/rooms".into(),
            Some(json!({ "name": "r", "members": [] }).to_string()),
        ),
        (
            "POST",
            "/api/v1/rooms".into(),
            Some(json!({ "name": "r", "kind": "direct", "members": [alice] }).to_string()),
        ),
        (
            "POST",
            "/api/v1/rooms".into(),
            Some(json!({ "name": "r", "members": ["bad id"] }).to_string()),
        ),
        (
            "POST",
            "/api/v1/rooms".into(),
            Some(json!({ "name": "x".repeat(101), "members": [alice] }).to_string()),
        ),
        ("POST", "/api/v1/rooms".into(), Some("not json".into())),
        ("POST", "/api/v1/rooms".into(), None),
        ("GET", "/api/v1/rooms/not-a-uuid".into(), None),
        ("GET", "/api/v1/rooms/not-a-uuid/members".into(), None),
        (
            "PUT",
            format!("/api/v1/rooms/not-a-uuid/members/{alice}"),
            None,
        ),
        ("PUT", format!("/api/v1/rooms/{room}/members/bad!id"), None),
        (
            "DELETE",
            format!("/api/v1/rooms/not-a-uuid/members/{alice}"),
            None,
        ),
        (
            "DELETE",
            format!("/api/v1/rooms/{room}/members/{long_id}"),
            None,
        ),
        (
            "POST",
            "/api/v1/rooms/not-a-uuid/messages".into(),
            Some(text(json!("hi"))),
        ),
        (
            "POST",
            format!("/api/v1/rooms/{room}/messages"),
            Some(json!({ "userId": "bad id", "text": "hi" }).to_string()),
        ),
        (
            "POST",
            format!("/api/v1/rooms/{room}/messages"),
            Some(text(json!("   "))),
        ),
        (
            "POST",
            format!("/api/v1/rooms/{room}/messages"),
            Some(text(json!("x".repeat(1001)))),
        ),
        (
            "POST",
            format!("/api/v1/rooms/{room}/messages"),
            Some(text(json!(7))),
        ),
        (
            "POST",
            format!("/api/v1/rooms/{room}/messages"),
            Some(json!({ "userId": alice, "text": "a", "clientId": "" }).to_string()),
        ),
        (
            "POST",
            format!("/api/v1/rooms/{room}/messages"),
            Some(json!({ "userId": alice, "text": "a", "replyTo": "nope" }).to_string()),
        ),
        (
            "POST",
            format!("/api/v1/rooms/{room}/messages"),
            Some(
                json!({ "userId": alice, "text": "a", "replyTo": uuid::Uuid::new_v4() })
                    .to_string(),
            ),
        ),
        (
            "POST",
            format!("/api/v1/rooms/{room}/messages"),
            Some(huge.clone()),
        ),
        (
            "POST",
            format!("/api/v1/rooms/{room}/messages"),
            Some("{\"userId\":".into()),
        ),
        (
            "GET",
            format!("/api/v1/rooms/{room}/messages?limit=0"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/rooms/{room}/messages?limit=201"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/rooms/{room}/messages?afterSeq=-1"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/rooms/{room}/messages?beforeSeq=abc"),
            None,
        ),
        ("GET", "/api/v1/users/bad!id/rooms".into(), None),
        ("GET", "/api/v1/users/bad!id/presence".into(), None),
        ("POST", "/api/v1/users/bad!id/disconnect".into(), None),
        ("GET", "/api/v1/security-events?limit=abc".into(), None),
    ];
    for (method, path, body) in cases {
        let answer = api.raw(method, &path, body.clone(), &[]).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "bad_request"),
            "{method} {path} {:?}: {}",
            body.map(|b| b.chars().take(80).collect::<String>()),
            answer.body
        );
        assert!(answer.body["error"]["message"].is_string());
    }
    let bad_key = api
        .raw(
            "POST",
            "/api/v1/rooms",
            Some(json!({ "name": "r", "members": [alice] }).to_string()),
            &[("idempotency-key", &"k".repeat(129))],
        )
        .await;
    assert_eq!((bad_key.status, bad_key.code()), (400, "bad_request"));

    // Nothing changed: one room with one member and no messages, and no event reached alice.
    let rooms = api
        .expect(200, "GET", &format!("/api/v1/users/{alice}/rooms"), None)
        .await;
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 1);
    assert_eq!(rooms["rooms"][0]["memberCount"], 1);
    assert_eq!(rooms["rooms"][0]["lastSeq"], 0);
    let events: Vec<String> = a.drain().await.into_iter().map(|(name, _)| name).collect();
    assert!(events.is_empty(), "events after bad calls: {events:?}");
    a.close().await;
    app.stop().await;
}
