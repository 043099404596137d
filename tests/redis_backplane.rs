//! The Redis backplane's presence and typing parts and the pub/sub driver, against a real
//! redis-server started per test. Membership (heartbeats, reaping, outages) is
//! `redis_membership.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod support;

use confab::backplane::{Backplane, ExpiredTyping, ReconnectingDriver, Typer};
use confab::domain::{RoomId, UserId};
use futures::StreamExt;
use socketioxide_redis::drivers::Driver;
use support::redis::{NodeSpec, RedisServer, prefix};
use tokio::time::{Instant, sleep, timeout};

const TTL: Duration = Duration::from_millis(600);
const REBROADCAST: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(50);
const SECS_5: Duration = Duration::from_secs(5);

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn typer(id: &str, name: &str) -> Typer {
    Typer {
        user_id: user(id),
        name: name.to_owned(),
    }
}

async fn node(server: &RedisServer, prefix: &str, id: &str) -> Backplane {
    let mut spec = NodeSpec::new(server, prefix, id);
    spec.typing_ttl = TTL;
    spec.rebroadcast = REBROADCAST;
    spec.join().await
}

/// Terse calls for the assertions below.
trait Calls {
    async fn on(&self, user_id: &str, socket: &str) -> bool;
    async fn off(&self, user_id: &str, socket: &str) -> bool;
    async fn online_of(&self, users: &[&str]) -> Vec<bool>;
    async fn start(&self, room: RoomId, user_id: &str, name: &str) -> bool;
    async fn stop(&self, room: RoomId, user_id: &str) -> bool;
    async fn typing(&self, room: RoomId) -> Vec<Typer>;
    async fn expired(&self) -> Vec<ExpiredTyping>;
}

impl Calls for Backplane {
    async fn on(&self, user_id: &str, socket: &str) -> bool {
        self.presence
            .connected(&user(user_id), socket)
            .await
            .unwrap()
    }
    async fn off(&self, user_id: &str, socket: &str) -> bool {
        self.presence
            .disconnected(&user(user_id), socket)
            .await
            .unwrap()
    }
    async fn online_of(&self, users: &[&str]) -> Vec<bool> {
        let users: Vec<UserId> = users.iter().map(|u| user(u)).collect();
        self.presence.online(&users).await.unwrap()
    }
    async fn start(&self, room: RoomId, user_id: &str, name: &str) -> bool {
        let now = Instant::now();
        self.typing
            .start(room, typer(user_id, name), now)
            .await
            .unwrap()
    }
    async fn stop(&self, room: RoomId, user_id: &str) -> bool {
        self.typing.stop(room, &user(user_id)).await.unwrap()
    }
    async fn typing(&self, room: RoomId) -> Vec<Typer> {
        self.typing.typers(room, Instant::now()).await.unwrap()
    }
    async fn expired(&self) -> Vec<ExpiredTyping> {
        self.typing.take_expired(Instant::now()).await.unwrap()
    }
}

/// Polls `check` until it holds, failing after `within`.
async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(POLL).await;
    }
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

#[tokio::test]
async fn a_user_stays_online_while_a_socket_remains_on_any_node() {
    let server = RedisServer::start();
    let p = prefix("presence");
    let (a, b) = (node(&server, &p, "a").await, node(&server, &p, "b").await);
    assert_eq!(a.describe(), "redis");
    let (ann, bob) = (user("ann"), user("bob"));
    assert!(a.on("ann", "s1").await);
    assert!(!b.on("ann", "s2").await);
    assert!(!a.off("ann", "s1").await);
    assert_eq!(b.online_of(&["ann", "bob"]).await, [true, false]);
    assert!(b.off("ann", "s2").await);
    assert!(!b.off("ann", "s2").await);
    assert_eq!(a.online_of(&["ann"]).await, [false]);
    assert!(a.online_of(&[]).await.is_empty());
    assert!(a.membership.is_ready() && b.membership.is_ready());

    // The operations view: users online (a set, so O(1)) and where one user is connected.
    a.on("ann", "s3").await;
    b.on("ann", "s4").await;
    b.on("bob", "s5").await;
    assert_eq!(a.presence.users_online().await.unwrap(), 2);
    let presence = b.presence.user_presence(&ann).await.unwrap();
    assert_eq!(
        (presence.online, presence.sockets, presence.nodes),
        (true, 2, vec!["a".to_owned(), "b".to_owned()])
    );
    assert!(b.off("bob", "s5").await);
    assert!(!a.presence.user_presence(&bob).await.unwrap().online);
}

/// A reconnect storm's presence writes are coalesced into batches: thousands of simultaneous
/// connects (two sockets per user) still say exactly once per user that they came online, and
/// as many disconnects exactly once that they went offline.
#[tokio::test]
async fn simultaneous_connects_and_disconnects_each_get_their_own_answer() {
    let server = RedisServer::start();
    let p = prefix("storm");
    let a = Arc::new(node(&server, &p, "a").await);
    const USERS: usize = 1500;
    let wave = |connect: bool| {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..USERS * 2 {
            let a = a.clone();
            tasks.spawn(async move {
                let (id, socket) = (format!("u{}", n % USERS), format!("s{n}"));
                let changed = if connect {
                    a.on(&id, &socket).await
                } else {
                    a.off(&id, &socket).await
                };
                (id, changed)
            });
        }
        tasks
    };
    for connect in [true, false] {
        let mut answers = std::collections::HashMap::<String, usize>::new();
        let mut tasks = wave(connect);
        while let Some(done) = tasks.join_next().await {
            let (id, changed) = done.unwrap();
            *answers.entry(id).or_default() += usize::from(changed);
        }
        assert_eq!(answers.len(), USERS);
        assert!(
            answers.values().all(|&n| n == 1),
            "each user changes state exactly once (connect: {connect})"
        );
        let online = a.presence.users_online().await.unwrap();
        assert_eq!(online, if connect { USERS as u64 } else { 0 });
    }
}

#[tokio::test]
async fn typing_starts_rebroadcasts_stops_and_expires_like_the_local_backplane() {
    let server = RedisServer::start();
    let p = prefix("typing");
    let bp = node(&server, &p, "a").await;
    let room = RoomId::new();

    assert!(bp.start(room, "bob", "Bob").await);
    assert!(!bp.start(room, "bob", "Bobby").await);
    assert_eq!(bp.typing(room).await, [typer("bob", "Bobby")]);
    sleep(REBROADCAST + Duration::from_millis(50)).await;
    assert!(bp.start(room, "bob", "Bob").await);
    let refreshed = Instant::now();
    assert!(bp.start(room, "amy", "Amy").await);
    let both = [typer("amy", "Amy"), typer("bob", "Bob")];
    assert_eq!(bp.typing(room).await, both);

    assert!(bp.stop(room, "amy").await);
    assert!(!bp.stop(room, "amy").await);
    assert!(!bp.stop(room, "cat").await);

    // Past bob's first deadline, the refresh keeps him typing.
    tokio::time::sleep_until(refreshed + TTL / 2).await;
    assert!(bp.expired().await.is_empty());
    assert_eq!(bp.typing(room).await, [typer("bob", "Bob")]);

    let mut expired = Vec::new();
    eventually("bob's typing expires", SECS_5, async || {
        expired = bp.expired().await;
        !expired.is_empty()
    })
    .await;
    let user_id = user("bob");
    assert_eq!(expired, [ExpiredTyping { room, user_id }]);
    assert!(bp.typing(room).await.is_empty());
    assert!(!bp.stop(room, "bob").await);
    assert!(bp.expired().await.is_empty());

    // Ran out but not swept yet: a new start is a new typer, and the sweep owes nothing.
    assert!(bp.start(room, "cat", "Cat").await);
    eventually("cat's typing runs out", SECS_5, async || {
        bp.typing(room).await.is_empty()
    })
    .await;
    assert!(bp.start(room, "cat", "Cat").await);
    assert!(bp.expired().await.is_empty());

    let (r1, r2) = (RoomId::new(), RoomId::new());
    bp.start(r1, "dan", "Dan").await;
    bp.start(r2, "dan", "Dan").await;
    let stopped = bp.typing.stop_all(&user("dan")).await.unwrap();
    assert_eq!(sorted(stopped), sorted(vec![r1, r2]));
    assert!(bp.typing(r1).await.is_empty());
    assert!(bp.typing.stop_all(&user("dan")).await.unwrap().is_empty());
}

#[tokio::test]
async fn each_typing_expiry_is_claimed_by_exactly_one_node() {
    let server = RedisServer::start();
    let p = prefix("expiry");
    let (a, b) = (node(&server, &p, "a").await, node(&server, &p, "b").await);
    let (r1, r2) = (RoomId::new(), RoomId::new());
    let mut expected = Vec::new();
    for i in 0..10 {
        let (bp, room) = if i % 2 == 0 { (&a, r1) } else { (&b, r2) };
        let id = format!("user{i}");
        bp.start(room, &id, &id).await;
        expected.push((room, user(&id)));
    }
    let mut claimed = Vec::new();
    let mut rounds_after = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while rounds_after < 5 {
        assert!(
            Instant::now() < deadline,
            "{} expiries claimed",
            claimed.len()
        );
        let (from_a, from_b) = tokio::join!(a.expired(), b.expired());
        claimed.extend(from_a.into_iter().chain(from_b));
        rounds_after += usize::from(claimed.len() >= expected.len());
        sleep(POLL).await;
    }
    let claimed: Vec<_> = claimed.into_iter().map(|e| (e.room, e.user_id)).collect();
    assert_eq!(sorted(claimed), sorted(expected));
}

#[tokio::test]
async fn the_driver_strips_its_envelope_and_survives_a_redis_restart() {
    let mut server = RedisServer::start();
    let sender = ReconnectingDriver::connect(&server.url()).unwrap();
    let receiver = ReconnectingDriver::connect(&server.url()).unwrap();
    let contexts = Arc::new(Mutex::new(Vec::new()));
    let seen = contexts.clone();
    receiver.set_context_sink(Arc::new(move |chan: &str, ctx: &str, _payload: &[u8]| {
        seen.lock().unwrap().push((chan.to_owned(), ctx.to_owned()));
    }));
    sender.set_context_provider(Arc::new(|| Some("00-trace-span-01".to_owned())));
    let chan = format!("{}#/#", prefix("driver"));
    let mut messages = receiver.subscribe(chan.clone(), 64).await.unwrap();
    let wait = Duration::from_millis(200);
    let mut next = async || timeout(wait, messages.next()).await.ok().flatten();
    let item = |data: &[u8]| Some((chan.clone(), data.to_vec()));

    sender
        .publish(chan.clone(), b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(next().await, item(b"hello"));
    let context = (chan.clone(), "00-trace-span-01".to_owned());
    assert_eq!(*contexts.lock().unwrap(), [context]);
    // Anything without the envelope passes through untouched.
    let raw: redis::RedisResult<i64> = redis::cmd("PUBLISH")
        .arg(&chan)
        .arg(b"\x81\xa3raw")
        .query_async(&mut server.raw().await)
        .await;
    assert_eq!(raw.unwrap(), 1);
    assert_eq!(next().await, item(b"\x81\xa3raw"));
    assert_eq!(sender.num_serv(&chan).await.unwrap(), 1);
    let healthy = async || sender.is_healthy() && receiver.is_healthy();
    eventually("both drivers are healthy", SECS_5, healthy).await;

    server.kill();
    let started = Instant::now();
    sender
        .publish(chan.clone(), b"lost".to_vec())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a failed publish stalled"
    );
    assert!(!sender.is_healthy());
    assert_eq!(sender.dropped(), 1);
    assert_eq!(sender.num_serv(&chan).await.unwrap(), 1);
    eventually("the subscriber notices", SECS_5, async || {
        !receiver.is_healthy()
    })
    .await;

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(
            Instant::now() < deadline,
            "no message crossed after the restart"
        );
        sender
            .publish(chan.clone(), b"again".to_vec())
            .await
            .unwrap();
        if next().await == item(b"again") {
            break;
        }
    }
    let healthy = async || sender.is_healthy() && receiver.is_healthy();
    eventually("both drivers are healthy again", SECS_5, healthy).await;
}

#[tokio::test]
async fn a_driver_made_while_redis_is_away_subscribes_once_it_is_back() {
    let port = support::redis::free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let driver = ReconnectingDriver::connect(&url).unwrap();
    let chan = format!("{}#/#", prefix("driver-late"));
    let started = Instant::now();
    let mut messages = driver.subscribe(chan.clone(), 64).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "subscribe stalled"
    );
    assert!(!driver.is_healthy());

    let server = RedisServer::start_on(port);
    eventually("the driver is healthy", SECS_5, async || {
        driver.is_healthy()
    })
    .await;
    let mut raw = server.raw().await;
    let published: i64 = redis::cmd("PUBLISH")
        .arg(&chan)
        .arg(b"late")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        published, 1,
        "the channel asked for before Redis was up is subscribed"
    );
    let got = timeout(SECS_5, messages.next()).await.ok().flatten();
    assert_eq!(got, Some((chan, b"late".to_vec())));
}
