//! The contract through a real Socket.IO client, against both storage backends.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Backend, TestApp, TestClient};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn public_room(owner: &TestClient) -> String {
    let reply = owner
        .ok("room:create", json!({ "name": "lobby", "kind": "public" }))
        .await;
    reply["room"]["id"].as_str().unwrap().to_owned()
}

async fn fifty_clients_sending_at_once_get_seqs_one_to_fifty(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.limits.max_connections = 100).await;
    let owner = app.connect(&unique("owner")).await;
    let room = public_room(&owner).await;
    let mut clients = Vec::new();
    for i in 0..50 {
        let client = app.connect(&unique(&format!("sender{i}"))).await;
        client.ok("room:join", json!({ "roomId": room })).await;
        clients.push(client);
    }
    let sends = clients.iter().enumerate().map(|(i, c)| {
        let room = room.clone();
        async move {
            c.ok(
                "message:send",
                json!({ "roomId": room, "text": format!("m{i}") }),
            )
            .await
        }
    });
    let acks = futures::future::join_all(sends).await;
    let mut seqs: Vec<i64> = acks
        .iter()
        .map(|a| a["message"]["seq"].as_i64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<i64>>());

    let history = owner
        .ok("message:history", json!({ "roomId": room, "limit": 200 }))
        .await;
    let stored: Vec<i64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(stored, (1..=50).collect::<Vec<i64>>());
    for client in clients {
        client.close().await;
    }
    app.stop().await;
}
both_backends!(fifty_clients_sending_at_once_get_seqs_one_to_fifty);

async fn messages_reach_every_other_socket_and_resends_are_idempotent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (ann, bob) = (unique("ann"), unique("bob"));
    let ann_phone = app.connect(&ann).await;
    let ann_laptop = app.connect(&ann).await;
    let bob_socket = app.connect(&bob).await;
    let created = ann_phone
        .ok("room:create", json!({ "name": "pair", "members": [bob] }))
        .await;
    let room = created["room"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["room"]["kind"], "private");
    assert_eq!(created["room"]["memberCount"], 2);
    assert_eq!(bob_socket.next("room:added").await["id"], json!(room));
    assert_eq!(ann_laptop.next("room:added").await["id"], json!(room));

    let first = ann_phone
        .ok(
            "message:send",
            json!({ "roomId": room, "text": "  hi  ", "clientId": "c-1" }),
        )
        .await;
    assert_eq!(first["message"]["text"], "hi");
    assert_eq!(first["message"]["seq"], 1);
    assert_eq!(
        bob_socket.next("message:new").await["id"],
        first["message"]["id"]
    );
    assert_eq!(
        ann_laptop.next("message:new").await["id"],
        first["message"]["id"]
    );

    let again = ann_phone
        .ok(
            "message:send",
            json!({ "roomId": room, "text": "hi", "clientId": "c-1" }),
        )
        .await;
    assert_eq!(again["message"], first["message"]);
    let second = ann_phone
        .ok(
            "message:send",
            json!({ "roomId": room, "text": "next", "clientId": "c-2" }),
        )
        .await;
    assert_eq!(second["message"]["seq"], 2);
    // The resend broadcast nothing: the next message Bob sees is the second one.
    assert_eq!(bob_socket.next("message:new").await["seq"], 2);
    let phone_events = ann_phone.drain().await;
    assert!(
        phone_events.iter().all(|(e, _)| e != "message:new"),
        "sender got its own message: {phone_events:?}"
    );

    let rooms = bob_socket.ok("room:list", json!({})).await;
    assert_eq!(rooms["rooms"][0]["unread"], 2);
    assert_eq!(rooms["rooms"][0]["lastMessage"]["seq"], 2);
    app.stop().await;
}
both_backends!(messages_reach_every_other_socket_and_resends_are_idempotent);

async fn a_reconnecting_client_recovers_what_it_missed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (ann, bob) = (unique("ann"), unique("bob"));
    let ann_socket = app.connect(&ann).await;
    let created = ann_socket
        .ok("room:create", json!({ "name": "r", "members": [bob] }))
        .await;
    let room = created["room"]["id"].as_str().unwrap().to_owned();
    ann_socket
        .ok("message:send", json!({ "roomId": room, "text": "seen" }))
        .await;
    let bob_socket = app.connect(&bob).await;
    bob_socket.close().await;
    for text in ["one", "two", "three"] {
        ann_socket
            .ok("message:send", json!({ "roomId": room, "text": text }))
            .await;
    }
    let bob_again = app.connect(&bob).await;
    let missed = bob_again
        .ok("message:history", json!({ "roomId": room, "afterSeq": 1 }))
        .await;
    let texts: Vec<&str> = missed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert_eq!(missed["hasMore"], false);
    let page = bob_again
        .ok(
            "message:history",
            json!({ "roomId": room, "beforeSeq": 4, "limit": 2 }),
        )
        .await;
    let seqs: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(page["hasMore"], true);
    app.stop().await;
}
both_backends!(a_reconnecting_client_recovers_what_it_missed);

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<ok>")
}

async fn only_members_act_in_rooms(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.connect(&unique("owner")).await;
    let stranger_id = unique("stranger");
    let stranger = app.connect(&stranger_id).await;
    let private = owner.ok("room:create", json!({ "name": "secret" })).await["room"]["id"].clone();
    let public = public_room(&owner).await;
    let missing = uuid::Uuid::new_v4().to_string();

    assert_eq!(
        code(
            &stranger
                .ack("message:send", json!({ "roomId": private, "text": "x" }))
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            &stranger
                .ack("message:history", json!({ "roomId": private }))
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            &stranger
                .ack("room:join", json!({ "roomId": private }))
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            &stranger
                .ack("room:members", json!({ "roomId": private }))
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            &stranger
                .ack("message:send", json!({ "roomId": missing, "text": "x" }))
                .await
        ),
        "not_found"
    );
    assert_eq!(
        code(
            &stranger
                .ack("message:send", json!({ "roomId": "nope", "text": "x" }))
                .await
        ),
        "bad_request"
    );
    assert_eq!(
        code(
            &stranger
                .ack("message:send", json!({ "roomId": private, "text": " " }))
                .await
        ),
        "bad_request"
    );

    let joined = stranger.ok("room:join", json!({ "roomId": public })).await;
    assert_eq!(joined["room"]["memberCount"], 2);
    let event = owner.next("room:member-joined").await;
    assert_eq!(event["userId"], json!(stranger_id));
    assert_eq!(event["memberCount"], 2);
    stranger.ok("room:leave", json!({ "roomId": public })).await;
    let left = owner.next("room:member-left").await;
    assert_eq!(left["memberCount"], 1);
    assert_eq!(
        code(
            &stranger
                .ack("message:send", json!({ "roomId": public, "text": "x" }))
                .await
        ),
        "forbidden"
    );
    app.stop().await;
}
both_backends!(only_members_act_in_rooms);

async fn presence_follows_the_last_socket(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (ann, bob) = (unique("ann"), unique("bob"));
    let ann_socket = app.connect(&ann).await;
    ann_socket
        .ok("room:create", json!({ "name": "r", "members": [bob] }))
        .await;
    let bob_one = app.connect(&bob).await;
    let about_bob = |v: &Value| v["userId"] == json!(bob);
    let online = ann_socket.next_where("presence:update", about_bob).await;
    assert_eq!(online, json!({ "userId": bob, "status": "online" }));
    let bob_two = app.connect(&bob).await;
    bob_one.close().await;
    let asked = ann_socket
        .ok("presence:get", json!({ "userIds": [bob] }))
        .await;
    assert_eq!(asked["presence"][&bob], "online");
    bob_two.close().await;
    let offline = ann_socket.next_where("presence:update", about_bob).await;
    assert_eq!(offline, json!({ "userId": bob, "status": "offline" }));
    app.stop().await;
}
both_backends!(presence_follows_the_last_socket);

async fn shutdown_closes_sockets_then_stops(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let client = app.connect(&unique("ann")).await;
    let ready = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let task = app.begin_shutdown();
    let finished = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "node did not stop cleanly: {finished:?}"
    );
    // The server closed the socket rather than waiting for the client to leave.
    client.next("close").await;
    app.stop().await;
}
both_backends!(shutdown_closes_sockets_then_stops);

#[tokio::test]
async fn health_metrics_and_dev_tokens_over_http() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{}/livez", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        json!({ "ready": true, "checks": { "storage": "ok", "backplane": "ok", "draining": false } })
    );
    let bad = http
        .post(format!("{}/api/dev/token", app.base))
        .json(&json!({ "userId": "no spaces" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let client = app.connect(&unique("ann")).await;
    client.ok("room:create", json!({ "name": "m" })).await;
    let metrics = http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("confab_sockets{node=\"test-node\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("confab_events_total{"), "{metrics}");
    assert!(
        metrics.contains("event=\"room:create\",outcome=\"ok\"")
            || metrics.contains("outcome=\"ok\",event=\"room:create\""),
        "{metrics}"
    );
    assert!(metrics.contains("confab_connections_total{"), "{metrics}");
    app.stop().await;

    let locked = TestApp::spawn_with(Backend::Sqlite, |s| s.dev_tokens = false).await;
    let refused = http
        .post(format!("{}/api/dev/token", locked.base))
        .json(&json!({ "userId": "ann" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    locked.stop().await;
}
