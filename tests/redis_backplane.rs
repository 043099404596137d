//! The Redis backplane and pub/sub driver against a real redis-server started per test.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod support;

use confab::backplane::{
    Backplane, Departure, ExpiredTyping, ReconnectingDriver, RedisBackplane, Typer,
};
use confab::domain::{RoomId, UserId};
use futures::StreamExt;
use socketioxide_redis::drivers::Driver;
use support::redis::RedisServer;
use tokio::time::{Instant, sleep, timeout};

const TTL: Duration = Duration::from_millis(600);
const REBROADCAST: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(50);
const SECS_5: Duration = Duration::from_secs(5);

fn prefix(test: &str) -> String {
    format!("test:{test}:{}:", uuid::Uuid::new_v4().simple())
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn typer(id: &str, name: &str) -> Typer {
    Typer {
        user_id: user(id),
        name: name.to_owned(),
    }
}

async fn node_with(
    server: &RedisServer,
    prefix: &str,
    id: &str,
    node_timeout: Duration,
    typing_ttl: Duration,
) -> RedisBackplane {
    let (url, id, prefix) = (server.url(), id.to_owned(), prefix.to_owned());
    RedisBackplane::connect(&url, id, prefix, node_timeout, typing_ttl, REBROADCAST)
        .await
        .unwrap()
}

async fn node(server: &RedisServer, prefix: &str, id: &str) -> RedisBackplane {
    node_with(server, prefix, id, Duration::from_secs(10), TTL).await
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

impl Calls for RedisBackplane {
    async fn on(&self, user_id: &str, socket: &str) -> bool {
        self.socket_connected(&user(user_id), socket).await.unwrap()
    }
    async fn off(&self, user_id: &str, socket: &str) -> bool {
        self.socket_disconnected(&user(user_id), socket)
            .await
            .unwrap()
    }
    async fn online_of(&self, users: &[&str]) -> Vec<bool> {
        let users: Vec<UserId> = users.iter().map(|u| user(u)).collect();
        self.online(&users).await.unwrap()
    }
    async fn start(&self, room: RoomId, user_id: &str, name: &str) -> bool {
        let now = Instant::now();
        self.typing_start(room, typer(user_id, name), now)
            .await
            .unwrap()
    }
    async fn stop(&self, room: RoomId, user_id: &str) -> bool {
        self.typing_stop(room, &user(user_id)).await.unwrap()
    }
    async fn typing(&self, room: RoomId) -> Vec<Typer> {
        self.typers(room, Instant::now()).await.unwrap()
    }
    async fn expired(&self) -> Vec<ExpiredTyping> {
        self.take_expired_typing(Instant::now()).await.unwrap()
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

fn departed(user_id: &str, rooms: Vec<RoomId>) -> Departure {
    let typing_rooms = sorted(rooms);
    Departure {
        user_id: user(user_id),
        typing_rooms,
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
    assert!(a.on("ann", "s1").await);
    assert!(!b.on("ann", "s2").await);
    assert!(!a.off("ann", "s1").await);
    assert_eq!(b.online_of(&["ann", "bob"]).await, [true, false]);
    assert!(b.off("ann", "s2").await);
    assert!(!b.off("ann", "s2").await);
    assert_eq!(a.online_of(&["ann"]).await, [false]);
    assert!(a.online_of(&[]).await.is_empty());
    assert!(a.is_ready() && b.is_ready());
}

#[tokio::test]
async fn leaving_the_cluster_reports_users_left_without_sockets() {
    let server = RedisServer::start();
    let p = prefix("leave");
    let (a, b) = (node(&server, &p, "a").await, node(&server, &p, "b").await);
    let room = RoomId::new();
    a.on("ann", "s1").await;
    a.on("bob", "s2").await;
    b.on("ann", "s3").await;
    a.start(room, "bob", "Bob").await;
    assert_eq!(
        a.leave_cluster().await.unwrap(),
        [departed("bob", vec![room])]
    );
    assert_eq!(b.online_of(&["ann", "bob"]).await, [true, false]);
    assert!(b.typing(room).await.is_empty());
    assert!(b.maintain().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dead_nodes_users_depart_exactly_once() {
    let server = RedisServer::start();
    let p = prefix("reap");
    let (short, long) = (Duration::from_secs(1), Duration::from_secs(30));
    let a = node_with(&server, &p, "a", short, long).await;
    let b = node_with(&server, &p, "b", long, long).await;
    let c = node_with(&server, &p, "c", long, long).await;
    let (r1, r2) = (RoomId::new(), RoomId::new());
    a.on("ann", "s1").await;
    a.on("bob", "s2").await;
    b.on("bob", "s3").await;
    a.start(r1, "ann", "Ann").await;
    a.start(r2, "ann", "Ann").await;

    // `a` stops maintaining: its heartbeat lapses after 1 s while b and c race to reap it.
    let mut departures = Vec::new();
    let mut rounds_after = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while rounds_after < 5 {
        assert!(Instant::now() < deadline, "node a was never reaped");
        let (from_b, from_c) = tokio::join!(b.maintain(), c.maintain());
        departures.extend(from_b.unwrap().into_iter().chain(from_c.unwrap()));
        rounds_after += usize::from(!departures.is_empty());
        sleep(Duration::from_millis(100)).await;
    }
    let departures: Vec<Departure> = departures
        .into_iter()
        .map(|d| departed(d.user_id.as_str(), d.typing_rooms))
        .collect();
    assert_eq!(departures, [departed("ann", vec![r1, r2])]);
    assert_eq!(b.online_of(&["ann", "bob"]).await, [false, true]);
    assert!(c.typing(r1).await.is_empty());
    let mut raw = server.raw().await;
    let (nodes, sockets_left, typing_left): (HashSet<String>, bool, u64) = redis::pipe()
        .smembers(format!("{p}nodes"))
        .exists(format!("{p}node:a:sockets"))
        .zcard(format!("{p}typing-expiry"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(nodes, HashSet::from(["b".to_owned(), "c".to_owned()]));
    assert_eq!((sockets_left, typing_left), (false, 0));
    // Bob's last socket going away is still reported, once, by its own node.
    assert!(b.off("bob", "s3").await);
}

#[tokio::test]
async fn a_restarted_node_does_not_resurrect_stale_entries() {
    let server = RedisServer::start();
    let p = prefix("restart");
    let room = RoomId::new();
    let crashed = node(&server, &p, "n1").await;
    crashed.on("ann", "s1").await;
    crashed.start(room, "ann", "Ann").await;
    drop(crashed);

    let other = node(&server, &p, "n2").await;
    let restarted = node(&server, &p, "n1").await;
    assert_eq!(other.online_of(&["ann"]).await, [false]);
    assert!(other.typing(room).await.is_empty());
    assert!(other.maintain().await.unwrap().is_empty());
    assert_eq!(
        restarted.maintain().await.unwrap(),
        [departed("ann", vec![room])]
    );
    assert!(restarted.maintain().await.unwrap().is_empty());
    assert!(restarted.on("ann", "s2").await);
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
    let stopped = bp.typing_stop_all(&user("dan")).await.unwrap();
    assert_eq!(sorted(stopped), sorted(vec![r1, r2]));
    assert!(bp.typing(r1).await.is_empty());
    assert!(bp.typing_stop_all(&user("dan")).await.unwrap().is_empty());
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
    let sender = ReconnectingDriver::connect(&server.url()).await.unwrap();
    let receiver = ReconnectingDriver::connect(&server.url()).await.unwrap();
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
    assert!(sender.is_healthy() && receiver.is_healthy());

    let port = server.port;
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

    let _server = RedisServer::start_on(port);
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
    eventually(
        "both drivers are healthy",
        deadline - Instant::now(),
        healthy,
    )
    .await;
}
