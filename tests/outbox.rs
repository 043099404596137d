//! The webhook outbox at the storage layer, on both backends: nothing is written while webhooks
//! are off; with them on, every change writes its event in its own transaction; a claim holds
//! events for one node until its lease ends; delivered events are deleted; failed ones come back
//! when due, or stay failed.

mod support;

use std::sync::Arc;

use confab::domain::{DisplayName, MessageText, RoomKind, RoomName, UserId};
use confab::storage::outbox::now_ms;
use confab::storage::{NewMessage, NewRoom, PostgresStore, SqliteStore, Store};
use serde_json::json;

fn uid(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn message(room: confab::domain::RoomId, user: &str, text: &str) -> NewMessage {
    NewMessage {
        room,
        user: uid(user),
        name: DisplayName::parse(user).unwrap(),
        text: MessageText::parse(text, 1000).unwrap(),
        client_id: None,
        reply_to: None,
    }
}

async fn changes(store: &dyn Store) -> confab::domain::RoomId {
    let room = store
        .create_room(NewRoom {
            name: RoomName::parse("outbox").unwrap(),
            kind: RoomKind::Public,
            creator: uid("alice"),
            members: vec![uid("bob")],
        })
        .await
        .unwrap();
    store
        .send_batch(&[
            message(room.id, "alice", "one"),
            message(room.id, "bob", "two"),
        ])
        .await
        .unwrap();
    assert!(store.add_member(room.id, &uid("carol")).await.unwrap());
    assert!(store.remove_member(room.id, &uid("carol")).await.unwrap());
    room.id
}

async fn off_writes_nothing(store: Arc<dyn Store>) {
    changes(store.as_ref()).await;
    assert_eq!(store.outbox_stats().await.unwrap().pending, 0);
    let claimed = store
        .claim_outbox("n", now_ms(), now_ms() + 1000, 100)
        .await
        .unwrap();
    assert!(claimed.is_empty());
}

async fn on_writes_claims_and_retries(store: Arc<dyn Store>) {
    let room = changes(store.as_ref()).await;
    assert_eq!(store.outbox_stats().await.unwrap().pending, 5);
    let now = now_ms();
    let claimed = store
        .claim_outbox("a", now, now + 60_000, 100)
        .await
        .unwrap();
    let kinds: Vec<&str> = claimed.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "room.created",
            "message.created",
            "message.created",
            "member.joined",
            "member.left"
        ]
    );
    assert_eq!(claimed[0].data["room"]["id"], json!(room));
    assert_eq!(claimed[0].data["room"]["memberCount"], 2);
    let texts: Vec<_> = claimed[1..3]
        .iter()
        .map(|e| e.data["message"]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("one"), json!("two")]);
    assert_eq!(
        claimed[3].data,
        json!({ "roomId": room, "userId": "carol" })
    );
    // Held by node a: another node finds nothing until the lease ends.
    assert!(
        store
            .claim_outbox("b", now, now + 60_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let after_lease = now + 60_001;
    let taken_over = store
        .claim_outbox("b", after_lease, after_lease + 1000, 2)
        .await
        .unwrap();
    assert_eq!(
        taken_over.len(),
        2,
        "a dead node's claims are taken over after the lease"
    );

    // Node a lost those two: its delivery of them deletes nothing; the rest it delivers.
    let ids: Vec<_> = claimed.iter().map(|e| e.id).collect();
    store.outbox_delivered("a", &ids).await.unwrap();
    assert_eq!(store.outbox_stats().await.unwrap().pending, 2);

    // Node b fails: one event due again later, one given up on.
    store
        .outbox_retry("b", &[taken_over[0].id], after_lease + 500, None)
        .await
        .unwrap();
    store
        .outbox_retry("b", &[taken_over[1].id], after_lease, Some(after_lease))
        .await
        .unwrap();
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed), (1, 1));
    assert!(
        store
            .claim_outbox("c", after_lease + 100, after_lease + 2000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = store
        .claim_outbox("c", after_lease + 500, after_lease + 2000, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, taken_over[0].id);
    assert_eq!(due[0].attempts, 1);
}

async fn sqlite(outbox: bool) -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/confab.db", dir.path().display());
    let store = SqliteStore::connect(&url)
        .await
        .unwrap()
        .with_outbox(outbox);
    (Arc::new(store), dir)
}

async fn postgres(outbox: bool) -> (Arc<dyn Store>, String) {
    let (url, name) = support::fresh_postgres_database().await;
    let store = PostgresStore::connect(&url, 5, 1, std::time::Duration::from_secs(10))
        .await
        .unwrap()
        .with_outbox(outbox);
    (Arc::new(store), name)
}

#[tokio::test]
async fn sqlite_writes_no_events_while_webhooks_are_off() {
    let (store, _dir) = sqlite(false).await;
    off_writes_nothing(store).await;
}

#[tokio::test]
async fn sqlite_writes_claims_delivers_and_retries_events() {
    let (store, _dir) = sqlite(true).await;
    on_writes_claims_and_retries(store).await;
}

#[tokio::test]
async fn postgres_writes_no_events_while_webhooks_are_off() {
    let (store, name) = postgres(false).await;
    off_writes_nothing(store.clone()).await;
    store.close().await;
    support::drop_postgres_database(&name).await;
}

#[tokio::test]
async fn postgres_writes_claims_delivers_and_retries_events() {
    let (store, name) = postgres(true).await;
    on_writes_claims_and_retries(store.clone()).await;
    store.close().await;
    support::drop_postgres_database(&name).await;
}
