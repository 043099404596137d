//! One set of behaviour checks for `Store`, run against both backends: SQLite in a temporary
//! directory and Postgres in a fresh database per test (`CONFAB_TEST_POSTGRES_URL`).

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use confab::domain::{ClientId, DisplayName, MessageText, RoomId, RoomKind, RoomName, UserId};
use confab::model::{Message, Room};
use confab::storage::{
    Claimed, HistoryQuery, IdempotencyClaim, NewMessage, NewRoom, PostgresStore, SeenUser, Sent,
    SqliteStore, StorageError, Store,
};
use sqlx::Connection;
use uuid::Uuid;

fn uid(id: &str) -> UserId {
    UserId::parse(id).expect("valid user id")
}

/// The store under test, with helpers that panic on errors the check does not expect.
#[derive(Clone)]
struct T(Arc<dyn Store>);

impl T {
    async fn room(&self, kind: RoomKind, creator: &str, members: &[&str]) -> RoomId {
        let name = RoomName::parse("room").expect("valid name");
        let members = members.iter().map(|m| uid(m)).collect();
        let room = NewRoom {
            name,
            kind,
            creator: uid(creator),
            members,
        };
        self.0.create_room(room).await.expect("create_room").id
    }

    async fn send_with(
        &self,
        room: RoomId,
        user: &str,
        client_id: Option<&str>,
        reply_to: Option<Uuid>,
    ) -> Result<Sent, StorageError> {
        self.0
            .send_message(new_message(room, user, client_id, reply_to))
            .await
    }

    async fn seen(&self, users: &[(&str, &str)]) {
        let users: Vec<SeenUser> = users
            .iter()
            .map(|(id, name)| SeenUser {
                user: uid(id),
                name: DisplayName::parse(name).expect("valid name"),
                at: chrono::Utc::now(),
            })
            .collect();
        self.0.record_seen(&users).await.expect("record_seen");
    }

    async fn send(&self, room: RoomId, user: &str) -> Message {
        let sent = self.send_with(room, user, None, None).await;
        sent.expect("send_message").message
    }

    async fn view(&self, room: RoomId, viewer: &str) -> Room {
        let room = self.0.room(room, &uid(viewer)).await.expect("room");
        room.expect("room exists")
    }

    async fn page(
        &self,
        room: RoomId,
        before: Option<i64>,
        after: Option<i64>,
        limit: i64,
    ) -> (Vec<i64>, bool) {
        let query = HistoryQuery {
            before_seq: before,
            after_seq: after,
            limit,
        };
        let page = self.0.history(room, query).await.expect("history");
        (page.messages.iter().map(|m| m.seq).collect(), page.has_more)
    }

    async fn mark(&self, room: RoomId, user: &str, seq: i64) -> (i64, bool) {
        let mark = self
            .0
            .mark_read(room, &uid(user), seq)
            .await
            .expect("mark_read");
        (mark.seq, mark.moved)
    }

    async fn listed(&self, user: &str) -> Vec<RoomId> {
        let rooms = self.0.rooms_of(&uid(user)).await.expect("rooms_of");
        rooms.iter().map(|r| r.id).collect()
    }

    async fn names(&self, room: RoomId) -> Vec<(String, String)> {
        let members = self.0.members(room).await.expect("members");
        members
            .into_iter()
            .map(|m| (m.user_id.to_string(), m.name))
            .collect()
    }
}

fn new_message(
    room: RoomId,
    user: &str,
    client_id: Option<&str>,
    reply_to: Option<Uuid>,
) -> NewMessage {
    NewMessage {
        room,
        user: uid(user),
        name: DisplayName::parse(user).expect("valid name"),
        text: MessageText::parse("hello", 1000).expect("valid text"),
        client_id: client_id.map(|c| ClientId::parse(c).expect("valid client id")),
        reply_to,
    }
}

/// Starts `n` tasks at once and returns their results in order.
async fn concurrently<R: Send + 'static, F: Future<Output = R> + Send + 'static>(
    n: usize,
    task: impl Fn(usize) -> F,
) -> Vec<R> {
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(task(i))).collect();
    let results = futures::future::join_all(handles).await;
    results
        .into_iter()
        .map(|r| r.expect("task panicked"))
        .collect()
}

/// The error variant's name, or "Ok".
fn error_of<R>(result: Result<R, StorageError>) -> String {
    result.map_or_else(|e| format!("{e:?}"), |_| "Ok".to_owned())
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

async fn gapless_seqs_under_concurrency(t: T) {
    let users: Vec<String> = (0..50).map(|i| format!("u{i:02}")).collect();
    let others: Vec<&str> = users[1..].iter().map(String::as_str).collect();
    let room = t.room(RoomKind::Public, &users[0], &others).await;
    let sent = concurrently(50, |i| {
        let (t, user) = (t.clone(), users[i].clone());
        async move { t.send(room, &user).await }
    })
    .await;
    let mut seqs: Vec<i64> = sent.iter().map(|m| m.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert_eq!(t.page(room, None, Some(0), 200).await, (seqs, false));
    let page = t.0.history(
        room,
        HistoryQuery {
            before_seq: None,
            after_seq: None,
            limit: 50,
        },
    );
    let page = page.await.expect("history").messages;
    assert!(page.windows(2).all(|w| w[0].created_at <= w[1].created_at));
    // Sending moves the sender's read mark to the new seq.
    for message in &sent {
        let seen = t.view(room, &message.user_id).await;
        assert_eq!((seen.last_seq, seen.unread), (50, 50 - message.seq));
    }
}

async fn client_id_idempotency(t: T) {
    let room = t.room(RoomKind::Private, "a", &["b"]).await;
    let first = t
        .send_with(room, "a", Some("c1"), None)
        .await
        .expect("send");
    let again = t
        .send_with(room, "a", Some("c1"), None)
        .await
        .expect("send");
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(again.message, first.message);
    let other_user = t
        .send_with(room, "b", Some("c1"), None)
        .await
        .expect("send");
    assert!(!other_user.duplicate);
    assert_eq!(other_user.message.seq, 2);
    let racing = concurrently(10, |_| {
        let t = t.clone();
        async move {
            t.send_with(room, "a", Some("c2"), None)
                .await
                .expect("send")
        }
    })
    .await;
    assert_eq!(racing.iter().filter(|s| !s.duplicate).count(), 1);
    assert!(racing.iter().all(|s| s.message.id == racing[0].message.id));
    assert_eq!(racing[0].message.seq, 3);
    // Duplicates spend no seq; without a clientId nothing is deduplicated.
    t.send(room, "a").await;
    assert_eq!(t.send(room, "a").await.seq, 5);
    assert_eq!(t.view(room, "a").await.last_seq, 5);
    let elsewhere = t.room(RoomKind::Private, "a", &[]).await;
    let there = t
        .send_with(elsewhere, "a", Some("c1"), None)
        .await
        .expect("send");
    assert!(!there.duplicate && there.message.id != first.message.id);
}

async fn direct_room_is_one_per_pair(t: T) {
    let results = concurrently(40, |i| {
        let t = t.clone();
        let (me, other) = [("ann", "bob"), ("bob", "ann")][i % 2];
        async move {
            t.0.direct_room(&uid(me), &uid(other))
                .await
                .expect("direct_room")
        }
    })
    .await;
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let id = results[0].0.id;
    assert!(results.iter().all(|(room, _)| room.id == id));
    let (room, created) =
        t.0.direct_room(&uid("bob"), &uid("ann"))
            .await
            .expect("direct");
    assert!(!created);
    assert_eq!(
        (room.id, room.kind, room.member_count),
        (id, RoomKind::Direct, 2)
    );
    assert_eq!(t.names(id).await, pairs(&[("ann", "ann"), ("bob", "bob")]));
    let (other, created) =
        t.0.direct_room(&uid("ann"), &uid("cy"))
            .await
            .expect("direct");
    assert!(created && other.id != id);
}

async fn replies_and_unknown_rooms(t: T) {
    let (one, two) = (
        t.room(RoomKind::Public, "a", &[]).await,
        t.room(RoomKind::Public, "a", &[]).await,
    );
    let original = t.send(one, "a").await;
    assert_eq!(
        error_of(t.send_with(two, "a", None, Some(original.id)).await),
        "InvalidReply"
    );
    assert_eq!(
        error_of(
            t.send_with(two, "a", Some("r1"), Some(Uuid::new_v4()))
                .await
        ),
        "InvalidReply"
    );
    assert_eq!(
        t.view(two, "a").await.last_seq,
        0,
        "a refused send spends no seq"
    );
    let reply = t
        .send_with(one, "a", None, Some(original.id))
        .await
        .expect("reply");
    assert_eq!(
        (reply.message.seq, reply.message.reply_to),
        (2, Some(original.id))
    );
    let nowhere = RoomId::new();
    assert_eq!(
        error_of(t.send_with(nowhere, "a", None, None).await),
        "RoomNotFound"
    );
    assert_eq!(
        error_of(t.0.add_member(nowhere, &uid("a")).await),
        "RoomNotFound"
    );
    assert_eq!(
        error_of(t.0.mark_read(nowhere, &uid("a"), 1).await),
        "RoomNotFound"
    );
    assert!(t.0.room(nowhere, &uid("a")).await.expect("room").is_none());
    assert_eq!(t.0.room_kind(nowhere).await.expect("kind"), None);
    assert_eq!(
        t.0.room_kind(one).await.expect("kind"),
        Some(RoomKind::Public)
    );
    assert_eq!(t.page(nowhere, None, None, 5).await, (vec![], false));
}

async fn history_paging(t: T) {
    let room = t.room(RoomKind::Public, "a", &[]).await;
    for _ in 1..=10 {
        t.send(room, "a").await;
    }
    let all: Vec<i64> = (1..=10).collect();
    // No cursor or beforeSeq only: the newest, hasMore when older ones exist.
    assert_eq!(t.page(room, None, None, 3).await, (vec![8, 9, 10], true));
    assert_eq!(t.page(room, None, None, 10).await, (all.clone(), false));
    assert_eq!(t.page(room, None, None, 50).await, (all.clone(), false));
    assert_eq!(t.page(room, Some(8), None, 3).await, (vec![5, 6, 7], true));
    assert_eq!(t.page(room, Some(4), None, 3).await, (vec![1, 2, 3], false));
    assert_eq!(t.page(room, Some(1), None, 3).await, (vec![], false));
    assert_eq!(t.page(room, Some(100), None, 2).await, (vec![9, 10], true));
    // afterSeq only: the oldest, hasMore when newer ones exist.
    assert_eq!(
        t.page(room, None, Some(7), 3).await,
        (vec![8, 9, 10], false)
    );
    assert_eq!(t.page(room, None, Some(2), 3).await, (vec![3, 4, 5], true));
    assert_eq!(t.page(room, None, Some(10), 3).await, (vec![], false));
    assert_eq!(t.page(room, None, Some(0), 10).await, (all, false));
    // Both: the oldest strictly between, hasMore when more lie in that range.
    assert_eq!(
        t.page(room, Some(9), Some(2), 3).await,
        (vec![3, 4, 5], true)
    );
    assert_eq!(
        t.page(room, Some(9), Some(2), 6).await,
        (vec![3, 4, 5, 6, 7, 8], false)
    );
    assert_eq!(t.page(room, Some(6), Some(5), 3).await, (vec![], false));
    assert_eq!(t.page(room, Some(11), Some(0), 1).await, (vec![1], true));
}

async fn read_marks(t: T) {
    let room = t.room(RoomKind::Public, "a", &["b"]).await;
    for _ in 0..5 {
        t.send(room, "a").await;
    }
    assert_eq!(t.view(room, "b").await.unread, 5);
    assert_eq!(t.mark(room, "b", 3).await, (3, true));
    assert_eq!(t.view(room, "b").await.unread, 2);
    assert_eq!(t.mark(room, "b", 2).await, (3, false), "never backwards");
    assert_eq!(t.mark(room, "b", 3).await, (3, false));
    assert_eq!(
        t.mark(room, "b", 100).await,
        (5, true),
        "clamped to last_seq"
    );
    assert_eq!(t.mark(room, "b", 100).await, (5, false));
    assert_eq!(t.view(room, "b").await.unread, 0);
    // A new member starts at the room's last_seq: older history is not unread.
    assert!(t.0.add_member(room, &uid("c")).await.expect("add"));
    assert_eq!(t.mark(room, "c", 4).await, (5, false));
    t.send(room, "a").await;
    assert_eq!(t.view(room, "c").await.unread, 1);
}

async fn rooms_of_ordering(t: T) {
    let pause = || tokio::time::sleep(Duration::from_millis(5));
    let old = t.room(RoomKind::Public, "v", &[]).await;
    t.send(old, "v").await;
    pause().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(t.room(RoomKind::Private, "u", &[]).await);
        pause().await;
    }
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    assert_eq!(
        t.listed("u").await,
        [c, b, a],
        "no messages: newest membership first"
    );
    t.send(a, "u").await;
    pause().await;
    assert_eq!(t.listed("u").await, [a, c, b]);
    let newest = t.send(b, "u").await;
    pause().await;
    // Joined last, but its newest message is older than everything else.
    assert!(t.0.add_member(old, &uid("u")).await.expect("add"));
    assert_eq!(t.listed("u").await, [b, a, c, old]);
    let rooms = t.0.rooms_of(&uid("u")).await.expect("rooms_of");
    assert_eq!(rooms[0].last_message.as_ref(), Some(&newest));
    assert!(rooms[2].last_message.is_none());
    assert_eq!(
        (rooms[3].member_count, rooms[3].last_seq, rooms[3].unread),
        (2, 1, 0)
    );
    let mut all = t.0.room_ids_of(&uid("u")).await.expect("room_ids_of");
    all.sort();
    let mut expected = vec![a, b, c, old];
    expected.sort();
    assert_eq!(all, expected);
}

async fn membership_and_unread(t: T) {
    t.0.ping().await.expect("ping");
    t.seen(&[("a", "Alice")]).await;
    let room = t.room(RoomKind::Private, "a", &["c", "b"]).await;
    let seen = t.view(room, "a").await;
    assert_eq!((seen.member_count, seen.last_seq, seen.unread), (3, 0, 0));
    assert_eq!(
        (seen.kind, seen.name.as_str(), seen.last_message),
        (RoomKind::Private, "room", None)
    );
    t.seen(&[("b", "Bob")]).await;
    assert_eq!(
        t.names(room).await,
        pairs(&[("a", "Alice"), ("b", "Bob"), ("c", "c")])
    );
    for _ in 0..3 {
        t.send(room, "a").await;
    }
    assert_eq!(t.view(room, "b").await.unread, 3);
    assert_eq!(t.view(room, "a").await.unread, 0);
    assert_eq!(
        t.view(room, "stranger").await.unread,
        0,
        "non-members have none"
    );
    let of_c = t.0.rooms_of(&uid("c")).await.expect("rooms_of");
    assert_eq!((of_c.len(), of_c[0].unread, of_c[0].last_seq), (1, 3, 3));
    let d = uid("d");
    assert!(!t.0.is_member(room, &d).await.expect("is_member"));
    assert!(t.0.add_member(room, &d).await.expect("add"));
    assert!(!t.0.add_member(room, &d).await.expect("add again"));
    assert!(t.0.is_member(room, &d).await.expect("is_member"));
    let seen = t.view(room, "d").await;
    assert_eq!((seen.member_count, seen.unread), (4, 0));
    assert!(t.0.remove_member(room, &d).await.expect("remove"));
    assert!(!t.0.remove_member(room, &d).await.expect("remove again"));
    assert_eq!(t.view(room, "a").await.member_count, 3);
    assert!(t.listed("d").await.is_empty());
}

/// One batch, every outcome at once: each message is judged on its own, accepted ones get
/// their room's next seqs in batch order, and a clientId repeated within the batch is stored once.
async fn batches_judge_each_message(t: T) {
    let a = t.room(RoomKind::Private, "a", &["b"]).await;
    let b = t.room(RoomKind::Private, "a", &[]).await;
    let before = t.send_with(a, "a", Some("old"), None).await.expect("send");
    let batch = vec![
        new_message(a, "a", Some("c1"), None),
        new_message(a, "b", None, None),
        new_message(a, "stranger", None, None),
        new_message(RoomId::new(), "a", None, None),
        new_message(a, "a", None, Some(Uuid::now_v7())),
        new_message(b, "a", None, None),
        new_message(a, "a", Some("c1"), None),
        new_message(a, "a", Some("old"), None),
        new_message(a, "b", None, Some(before.message.id)),
    ];
    let outcomes = t.0.send_batch(&batch).await.expect("send_batch");
    let summary: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            Ok(sent) => format!(
                "{}{}",
                sent.message.seq,
                if sent.duplicate { "d" } else { "" }
            ),
            Err(e) => format!("{e:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "2",
            "3",
            "NotMember",
            "RoomNotFound",
            "InvalidReply",
            "1",
            "2d",
            "1d",
            "4"
        ]
    );
    let first = outcomes[0].as_ref().expect("stored");
    assert_eq!(outcomes[6].as_ref().expect("repeat").message, first.message);
    assert_eq!(
        outcomes[8].as_ref().expect("reply").message.reply_to,
        Some(before.message.id)
    );
    assert_eq!(
        t.page(a, None, Some(0), 200).await,
        (vec![1, 2, 3, 4], false)
    );
    assert_eq!(t.page(b, None, Some(0), 200).await, (vec![1], false));
    let (seen_a, seen_b) = (t.view(a, "a").await, t.view(a, "b").await);
    assert_eq!(
        (seen_a.last_seq, seen_a.unread),
        (4, 2),
        "a's mark moved to 2"
    );
    assert_eq!(seen_b.unread, 0, "b's mark moved to 4");
    assert_eq!(t.0.send_batch(&[]).await.expect("empty batch").len(), 0);
}

/// Batches from many writers (as from many nodes), each touching several rooms in its own
/// order, neither deadlock nor leave gaps.
async fn concurrent_batches_stay_gapless(t: T) {
    let mut rooms = Vec::new();
    for _ in 0..4 {
        rooms.push(
            t.room(RoomKind::Public, "w0", &["w1", "w2", "w3", "w4", "w5"])
                .await,
        );
    }
    let rooms = Arc::new(rooms);
    let sent = concurrently(6, |w| {
        let (t, rooms) = (t.clone(), rooms.clone());
        async move {
            let mut stored = 0;
            for round in 0..8 {
                let batch: Vec<NewMessage> = (0..10)
                    .map(|k| {
                        let room = rooms[(w + round + k * (w + 1)) % rooms.len()];
                        new_message(room, &format!("w{w}"), None, None)
                    })
                    .collect();
                let outcomes = t.0.send_batch(&batch).await.expect("send_batch");
                stored += outcomes.iter().filter(|o| o.is_ok()).count();
            }
            stored
        }
    });
    let sent = tokio::time::timeout(Duration::from_secs(60), sent)
        .await
        .expect("batches finish (no deadlock)");
    assert_eq!(sent.iter().sum::<usize>(), 6 * 8 * 10);
    let mut total = 0;
    for room in rooms.iter() {
        let (seqs, _) = t.page(*room, None, Some(0), 200).await;
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless");
        assert_eq!(t.view(*room, "w0").await.last_seq, seqs.len() as i64);
        total += seqs.len();
    }
    assert_eq!(total, 480);
}

/// A send racing its sender's leave is stored before the leave or refused, never stored after.
async fn send_racing_leave(t: T) {
    let room = t.room(RoomKind::Public, "owner", &["leaver"]).await;
    let sends = concurrently(20, |i| {
        let t = t.clone();
        async move {
            if i == 10 {
                let left = t.0.remove_member(room, &uid("leaver")).await;
                assert!(left.expect("remove_member"));
                return None;
            }
            Some(t.send_with(room, "leaver", None, None).await)
        }
    })
    .await;
    let mut stored: Vec<i64> = Vec::new();
    for outcome in sends.into_iter().flatten() {
        match outcome {
            Ok(sent) => stored.push(sent.message.seq),
            Err(StorageError::NotMember) => {}
            Err(e) => panic!("unexpected outcome {e:?}"),
        }
    }
    stored.sort_unstable();
    let (history, _) = t.page(room, None, Some(0), 200).await;
    assert_eq!(history, stored, "exactly the acknowledged sends are stored");
    let after = t.send_with(room, "leaver", None, None).await;
    assert_eq!(error_of(after), "NotMember");
    assert_eq!(t.view(room, "owner").await.last_seq, stored.len() as i64);
}

/// Last-seen records: names follow the newest record, one statement takes many users.
async fn seen_users_are_recorded_in_batches(t: T) {
    let room = t.room(RoomKind::Private, "s1", &["s2"]).await;
    t.seen(&[("s1", "First"), ("s2", "Second"), ("s3", "Third")])
        .await;
    t.seen(&[("s1", "Renamed")]).await;
    assert_eq!(
        t.names(room).await,
        pairs(&[("s1", "Renamed"), ("s2", "Second")])
    );
    let many: Vec<(String, String)> = (0..500)
        .map(|i| (format!("m{i}"), format!("M{i}")))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    t.seen(&many).await;
    t.0.add_member(room, &uid("m499")).await.expect("add");
    assert!(
        t.names(room)
            .await
            .contains(&("m499".to_owned(), "M499".to_owned()))
    );
}

/// Idempotency keys: one claim wins, the others see it pending then done; a pending claim past
/// its lease and an expired key are taken over; released keys run again; old keys are purged.
async fn idempotency_keys(t: T) {
    let hour = 3_600_000;
    let now = chrono::Utc::now().timestamp_millis();
    let claim = |key: &str, at: i64, hash: &str| IdempotencyClaim {
        key: key.to_owned(),
        method: "POST".to_owned(),
        path: "/api/v1/rooms".to_owned(),
        body_hash: hash.to_owned(),
        now_ms: at,
    };
    let first = claim("k", now, "h1");
    assert_eq!(t.0.claim_idempotency(&first).await.unwrap(), Claimed::Won);
    let Claimed::Taken(pending) = t.0.claim_idempotency(&first).await.unwrap() else {
        panic!("a second claim must not win");
    };
    assert_eq!((pending.body_hash.as_str(), pending.outcome), ("h1", None));
    t.0.record_idempotency("k", Some((201, "{\"a\":1}")))
        .await
        .unwrap();
    let found = t.0.find_idempotency("k").await.unwrap().expect("the row");
    assert_eq!(found.outcome, Some((201, "{\"a\":1}".to_owned())));
    // Recorded once: a late second record changes nothing.
    t.0.record_idempotency("k", Some((500, "x"))).await.unwrap();
    assert_eq!(
        t.0.find_idempotency("k").await.unwrap().unwrap().outcome,
        found.outcome
    );

    // A key past 24 hours is claimed afresh; so is a pending one past its lease.
    let old = claim("old", now - 25 * hour, "h");
    assert_eq!(t.0.claim_idempotency(&old).await.unwrap(), Claimed::Won);
    t.0.record_idempotency("old", Some((200, "{}")))
        .await
        .unwrap();
    assert_eq!(
        t.0.claim_idempotency(&claim("old", now, "h2"))
            .await
            .unwrap(),
        Claimed::Won
    );
    let stuck = claim("stuck", now - 2 * 60_000, "h");
    assert_eq!(t.0.claim_idempotency(&stuck).await.unwrap(), Claimed::Won);
    assert_eq!(
        t.0.claim_idempotency(&claim("stuck", now, "h"))
            .await
            .unwrap(),
        Claimed::Won
    );

    // A released key (the call failed) runs again.
    t.0.record_idempotency("stuck", None).await.unwrap();
    assert!(t.0.find_idempotency("stuck").await.unwrap().is_none());

    let gone = claim("gone", now - 30 * hour, "h");
    assert_eq!(t.0.claim_idempotency(&gone).await.unwrap(), Claimed::Won);
    assert_eq!(t.0.purge_idempotency(now - 24 * hour).await.unwrap(), 1);
    assert!(t.0.find_idempotency("gone").await.unwrap().is_none());
    assert!(t.0.find_idempotency("k").await.unwrap().is_some());
}

async fn with_sqlite<F: Future<Output = ()>>(check: impl FnOnce(T) -> F) {
    let dir = tempfile::tempdir().expect("tempdir");
    // A missing parent directory is created, as for the default `sqlite://confab-data/…`.
    let url = format!("sqlite://{}/nested/confab.db", dir.path().display());
    let store = Arc::new(SqliteStore::connect(&url).await.expect("open sqlite"));
    check(T(store.clone())).await;
    store.close().await;
}

/// Drops the test database when the test ends, also when it panicked (best effort).
struct TestDatabase {
    admin_url: String,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Its own runtime: the test's runtime may be the one unwinding.
        let drop_db = move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await.ok()?;
                sqlx::raw_sql(&sql).execute(&mut conn).await.ok()
            })
        };
        let _ = std::thread::spawn(drop_db).join();
    }
}

/// The admin URL with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let root = base[authority..]
        .find('/')
        .map_or(base, |i| &base[..authority + i]);
    format!(
        "{root}/{db}{}",
        query.map(|q| format!("?{q}")).unwrap_or_default()
    )
}

/// A fresh database on the test server (`CONFAB_TEST_POSTGRES_URL`): its URL, and the guard that
/// drops it.
async fn fresh_postgres() -> (String, TestDatabase) {
    let admin_url = std::env::var("CONFAB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "cannot reach Postgres at {admin_url}: {e}\n\
             The storage tests need a Postgres server whose user may CREATE DATABASE. Start one \
             (e.g. `pg_ctlcluster 15 main start`, or `docker run -d -p 5432:5432 \
             -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`) or set CONFAB_TEST_POSTGRES_URL."
        ),
    };
    let name = format!("confab_test_{}", Uuid::new_v4().simple());
    let create = format!("CREATE DATABASE {name}");
    sqlx::raw_sql(&create)
        .execute(&mut admin)
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let url = with_database(&admin_url, &name);
    (url, TestDatabase { admin_url, name })
}

async fn open_postgres(url: &str) -> Arc<PostgresStore> {
    // Small pools: all tests run at once against the same server.
    Arc::new(
        PostgresStore::connect(url, 5, 1, Duration::from_secs(10))
            .await
            .expect("open postgres"),
    )
}

/// Takes `room`'s row lock in `tx`, the lock a message batch and a leave both hold.
async fn lock_room(tx: &mut sqlx::PgConnection, room: RoomId) {
    sqlx::query("SELECT 1 FROM rooms WHERE id = $1 FOR NO KEY UPDATE")
        .bind(room.0)
        .execute(tx)
        .await
        .expect("lock the room");
}

async fn with_postgres<F: Future<Output = ()>>(check: impl FnOnce(T) -> F) {
    let (url, _drop) = fresh_postgres().await;
    let store = open_postgres(&url).await;
    check(T(store.clone())).await;
    store.close().await;
}

/// A send racing a leave is stored before it or refused: a write batch checks its senders'
/// membership under the room's row lock (not the member's), so a leave must take that lock too
/// and wait for a batch holding it. The test holds the lock the way a batch in flight does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_leave_waits_for_a_batch_holding_its_room() {
    let (url, db) = fresh_postgres().await;
    let store = open_postgres(&url).await;
    let t = T(store.clone());
    let room = t.room(RoomKind::Public, "owner", &["leaver"]).await;
    let mut batch = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut in_flight = batch.begin().await.expect("begin");
    lock_room(&mut in_flight, room).await;
    let leave = tokio::spawn({
        let t = t.clone();
        async move { t.0.remove_member(room, &uid("leaver")).await }
    });
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
    support::postgres::until_a_query_waits_on_a_lock(&mut admin, &db.name, || leave.is_finished())
        .await;
    assert!(!leave.is_finished(), "the leave went ahead of the batch");
    in_flight.commit().await.expect("commit");
    let left = tokio::time::timeout(Duration::from_secs(10), leave)
        .await
        .expect("the leave finishes once the batch commits")
        .expect("join");
    assert!(left.expect("remove_member"));
    let after = t.send_with(room, "leaver", None, None).await;
    assert_eq!(error_of(after), "NotMember");
    store.close().await;
}

/// The other side of that race: a batch that waited for a leave holding the room's lock sees
/// the member gone when it runs. The leaver's message is refused, the rest of the batch is
/// stored, and no seq is lost to the refused one (the batch is first tried as one statement,
/// which must undo itself when a sender's member row went away under it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_batch_behind_a_leave_refuses_the_leaver() {
    let (url, db) = fresh_postgres().await;
    let store = open_postgres(&url).await;
    let t = T(store.clone());
    let room = t.room(RoomKind::Public, "owner", &["leaver"]).await;
    let before = t.send(room, "owner").await.seq;
    let mut leave = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut leaving = leave.begin().await.expect("begin");
    lock_room(&mut leaving, room).await;
    sqlx::query("DELETE FROM members WHERE room_id = $1 AND user_id = 'leaver'")
        .bind(room.0)
        .execute(&mut *leaving)
        .await
        .expect("delete the member");
    let batch = tokio::spawn({
        let t = t.clone();
        async move {
            let batch = [
                new_message(room, "owner", None, None),
                new_message(room, "leaver", None, None),
                new_message(room, "owner", None, None),
            ];
            t.0.send_batch(&batch).await
        }
    });
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
    support::postgres::until_a_query_waits_on_a_lock(&mut admin, &db.name, || batch.is_finished())
        .await;
    assert!(!batch.is_finished(), "the batch went ahead of the leave");
    leaving.commit().await.expect("commit the leave");
    let outcomes = tokio::time::timeout(Duration::from_secs(10), batch)
        .await
        .expect("the batch finishes once the leave commits")
        .expect("join")
        .expect("send_batch");
    let seqs: Vec<Result<i64, String>> = outcomes
        .into_iter()
        .map(|o| o.map(|sent| sent.message.seq).map_err(|e| format!("{e:?}")))
        .collect();
    assert_eq!(
        seqs,
        vec![Ok(before + 1), Err("NotMember".to_owned()), Ok(before + 2)]
    );
    assert_eq!(t.send(room, "owner").await.seq, before + 3);
    let (stored, _) = t.page(room, None, None, 10).await;
    assert_eq!(stored, (1..=before + 3).collect::<Vec<_>>());
    store.close().await;
}

/// Deleting a room (an operator's act; confab never does) still deletes its messages, though
/// messages.room_id has no foreign key (a trigger does it: see the migration
/// 20261207000100_messages_room_fk_as_trigger.sql).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deleting_a_room_deletes_its_messages() {
    let (url, _db) = fresh_postgres().await;
    let store = open_postgres(&url).await;
    let t = T(store.clone());
    let doomed = t.room(RoomKind::Public, "owner", &[]).await;
    let kept = t.room(RoomKind::Public, "owner", &[]).await;
    for room in [doomed, kept, doomed] {
        t.send(room, "owner").await;
    }
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
    let count = |room: RoomId| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM messages WHERE room_id = $1")
            .bind(room.0)
    };
    assert_eq!(count(doomed).fetch_one(&mut admin).await.expect("count"), 2);
    sqlx::query("DELETE FROM rooms WHERE id = $1")
        .bind(doomed.0)
        .execute(&mut admin)
        .await
        .expect("delete the room");
    assert_eq!(count(doomed).fetch_one(&mut admin).await.expect("count"), 0);
    assert_eq!(count(kept).fetch_one(&mut admin).await.expect("count"), 1);
    store.close().await;
}

macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() { super::with_sqlite(super::$check).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() { super::with_postgres(super::$check).await })*
        }
    };
}

on_both_backends!(
    gapless_seqs_under_concurrency,
    client_id_idempotency,
    direct_room_is_one_per_pair,
    replies_and_unknown_rooms,
    history_paging,
    read_marks,
    rooms_of_ordering,
    membership_and_unread,
    batches_judge_each_message,
    concurrent_batches_stay_gapless,
    send_racing_leave,
    seen_users_are_recorded_in_batches,
    idempotency_keys,
);
