//! The Redis backplane's membership: joining, heartbeats, reaping dead nodes exactly once, and
//! never reaping a node over a Redis outage; against a real redis-server started per test.
//!
//! The nodes' upkeep is driven by hand here (`beat_and_sweep`), so a test decides who is alive.

use std::collections::HashSet;
use std::time::Duration;

mod support;

use confab::backplane::{Backplane, BackplaneError, Beat, Departure, Typer};
use confab::domain::{RoomId, UserId};
use support::redis::{NodeSpec, RedisServer, free_port, prefix};
use tokio::time::{Instant, sleep};

/// The judges' timeout in these tests: a lapse of 1.5 s (see `Liveness::for_timeout`).
const SHORT: Duration = Duration::from_millis(2500);
const LAPSE: Duration = Duration::from_millis(1500);
const ROUND: Duration = Duration::from_millis(100);

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn departed(user_id: &str, mut rooms: Vec<RoomId>) -> Departure {
    rooms.sort();
    Departure {
        user_id: user(user_id),
        typing_rooms: rooms,
    }
}

fn normalised(departures: Vec<Departure>) -> Vec<Departure> {
    let mut out: Vec<Departure> = departures
        .into_iter()
        .map(|d| departed(d.user_id.as_str(), d.typing_rooms))
        .collect();
    out.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    out
}

async fn node(server: &RedisServer, prefix: &str, id: &str, timeout: Duration) -> Backplane {
    let mut spec = NodeSpec::new(server, prefix, id);
    spec.node_timeout = timeout;
    spec.join().await
}

async fn on(bp: &Backplane, user_id: &str, socket: &str) -> bool {
    bp.presence.connected(&user(user_id), socket).await.unwrap()
}

async fn typing(bp: &Backplane, room: RoomId, user_id: &str) {
    let typer = Typer {
        user_id: user(user_id),
        name: user_id.to_owned(),
    };
    bp.typing.start(room, typer, Instant::now()).await.unwrap();
}

/// One upkeep round of a live node: a heartbeat, then a sweep; what the sweep reaped (errors,
/// as while Redis is away, reap nothing).
async fn beat_and_sweep(bp: &Backplane) -> Vec<Departure> {
    let _ = bp.membership.heartbeat().await;
    bp.membership.sweep().await.unwrap_or_default()
}

/// Runs rounds of every node in `alive` together for `period`; returns all departures.
async fn rounds(alive: &[&Backplane], period: Duration) -> Vec<Departure> {
    let mut departures = Vec::new();
    let until = Instant::now() + period;
    while Instant::now() < until {
        for found in futures::future::join_all(alive.iter().map(|bp| beat_and_sweep(bp))).await {
            departures.extend(found);
        }
        sleep(ROUND).await;
    }
    departures
}

async fn registered_nodes(server: &RedisServer, prefix: &str) -> HashSet<String> {
    let mut raw = server.raw().await;
    redis::cmd("SMEMBERS")
        .arg(format!("{prefix}nodes"))
        .query_async(&mut raw)
        .await
        .unwrap()
}

#[tokio::test]
async fn leaving_the_cluster_reports_users_left_without_sockets() {
    let server = RedisServer::start();
    let p = prefix("leave");
    let a = node(&server, &p, "a", SHORT).await;
    let b = node(&server, &p, "b", SHORT).await;
    let room = RoomId::new();
    on(&a, "ann", "s1").await;
    on(&a, "bob", "s2").await;
    on(&b, "ann", "s3").await;
    typing(&a, room, "bob").await;
    let left = a.membership.leave().await.unwrap();
    assert_eq!(normalised(left), [departed("bob", vec![room])]);
    let online = b.presence.online(&[user("ann"), user("bob")]).await;
    assert_eq!(online.unwrap(), [true, false]);
    assert!(
        b.typing
            .typers(room, Instant::now())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        rounds(&[&b], LAPSE + Duration::from_millis(500))
            .await
            .is_empty()
    );
    assert_eq!(
        registered_nodes(&server, &p).await,
        HashSet::from(["b".to_owned()])
    );
}

#[tokio::test]
async fn a_dead_nodes_users_depart_exactly_once_within_the_timeout() {
    let server = RedisServer::start();
    let p = prefix("reap");
    let a = node(&server, &p, "a", SHORT).await;
    let b = node(&server, &p, "b", SHORT).await;
    let c = node(&server, &p, "c", SHORT).await;
    let (r1, r2) = (RoomId::new(), RoomId::new());
    on(&a, "ann", "s1").await;
    on(&a, "bob", "s2").await;
    on(&b, "bob", "s3").await;
    typing(&a, r1, "ann").await;
    typing(&a, r2, "ann").await;
    // All three beat for a while, then `a` dies; b and c race to reap it.
    assert!(
        rounds(&[&a, &b, &c], Duration::from_millis(500))
            .await
            .is_empty()
    );
    let died = Instant::now();
    let mut departures = Vec::new();
    while departures.is_empty() {
        assert!(
            died.elapsed() < SHORT,
            "node a was not reaped within its timeout"
        );
        departures = rounds(&[&b, &c], ROUND).await;
    }
    let healed = died.elapsed();
    assert!(healed >= LAPSE - ROUND, "reaped after only {healed:?}");
    departures.extend(rounds(&[&b, &c], Duration::from_millis(500)).await);
    assert_eq!(normalised(departures), [departed("ann", vec![r1, r2])]);
    let online = b.presence.online(&[user("ann"), user("bob")]).await;
    assert_eq!(online.unwrap(), [false, true]);
    assert!(
        c.typing
            .typers(r1, Instant::now())
            .await
            .unwrap()
            .is_empty()
    );
    let mut raw = server.raw().await;
    let (sockets_left, typing_left, reaping): (bool, u64, u64) = redis::pipe()
        .exists(format!("{p}node:a:sockets"))
        .zcard(format!("{p}typing-expiry"))
        .zcard(format!("{p}reaping"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!((sockets_left, typing_left, reaping), (false, 0, 0));
    let both = HashSet::from(["b".to_owned(), "c".to_owned()]);
    assert_eq!(registered_nodes(&server, &p).await, both);
    // Bob's last socket going away is still reported, once, by its own node.
    assert!(b.presence.disconnected(&user("bob"), "s3").await.unwrap());
}

#[tokio::test]
async fn a_large_dead_node_is_reaped_in_batches() {
    let server = RedisServer::start();
    let p = prefix("large");
    let a = node(&server, &p, "a", SHORT).await;
    let b = node(&server, &p, "b", SHORT).await;
    let mut pipe = redis::pipe();
    for i in 0..1200 {
        let (u, s) = (format!("u{i}"), format!("s{i}"));
        pipe.hset(format!("{p}user:{u}"), &s, "a")
            .sadd(format!("{p}node:a:sockets"), format!("{u}\n{s}"))
            .sadd(format!("{p}online"), &u);
    }
    pipe.query_async::<()>(&mut server.raw().await)
        .await
        .unwrap();
    assert!(
        rounds(&[&a, &b], Duration::from_millis(300))
            .await
            .is_empty()
    );
    let died = Instant::now();
    let mut departures = Vec::new();
    while departures.len() < 1200 {
        assert!(
            died.elapsed() < SHORT + SHORT,
            "reaped {} of 1200",
            departures.len()
        );
        departures.extend(rounds(&[&b], ROUND).await);
    }
    assert_eq!(departures.len(), 1200, "each user departs once");
    assert_eq!(b.presence.users_online().await.unwrap(), 0);
    assert!(!registered_nodes(&server, &p).await.contains("a"));
}

#[tokio::test]
async fn a_node_presumed_dead_registers_again_when_it_beats() {
    let server = RedisServer::start();
    let p = prefix("presumed");
    let a = node(&server, &p, "a", SHORT).await;
    let b = node(&server, &p, "b", SHORT).await;
    on(&a, "ann", "s1").await;
    assert!(
        rounds(&[&a, &b], Duration::from_millis(300))
            .await
            .is_empty()
    );
    let _ = a.membership.take_resync_needed();
    // `a` stalls longer than the lapse (a frozen process, say) and is reaped...
    let reaped = rounds(&[&b], LAPSE + Duration::from_millis(700)).await;
    assert_eq!(normalised(reaped), [departed("ann", vec![])]);
    // ...then beats again: it re-registers and owes a resync of its sockets.
    assert_eq!(a.membership.heartbeat().await.unwrap(), Beat::Rejoined);
    assert!(a.membership.take_resync_needed());
    assert!(registered_nodes(&server, &p).await.contains("a"));
}

#[tokio::test]
async fn a_restarted_node_does_not_resurrect_stale_entries() {
    let server = RedisServer::start();
    let p = prefix("restart");
    let room = RoomId::new();
    let crashed = node(&server, &p, "n1", SHORT).await;
    on(&crashed, "ann", "s1").await;
    typing(&crashed, room, "ann").await;
    drop(crashed);

    let other = node(&server, &p, "n2", SHORT).await;
    let restarted = node(&server, &p, "n1", SHORT).await;
    assert_eq!(
        other.presence.online(&[user("ann")]).await.unwrap(),
        [false]
    );
    assert!(
        other
            .typing
            .typers(room, Instant::now())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(other.membership.sweep().await.unwrap().is_empty());
    let stale = restarted.membership.sweep().await.unwrap();
    assert_eq!(normalised(stale), [departed("ann", vec![room])]);
    assert!(restarted.membership.sweep().await.unwrap().is_empty());
    assert!(on(&restarted, "ann", "s2").await);
}

/// Redis persists its state (append-only file) and is away for twice the node timeout: its
/// heartbeats look ancient when it returns, yet nobody is reaped, whoever comes back first.
#[tokio::test]
async fn an_outage_longer_than_the_timeout_reaps_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = RedisServer::start_persistent(dir.path());
    let p = prefix("outage");
    let a = node(&server, &p, "a", SHORT).await;
    let b = node(&server, &p, "b", SHORT).await;
    on(&a, "ann", "s1").await;
    on(&b, "bob", "s2").await;
    assert!(
        rounds(&[&a, &b], Duration::from_millis(500))
            .await
            .is_empty()
    );

    server.kill();
    assert!(rounds(&[&a, &b], 2 * SHORT).await.is_empty());
    assert!(!a.membership.is_ready() && !b.membership.is_ready());
    server.restart();
    // `a` is back first and sweeps alone for longer than the lapse of its judging window
    // would need, had it judged from `b`'s old heartbeat.
    assert!(rounds(&[&a], Duration::from_millis(1000)).await.is_empty());
    assert!(
        rounds(&[&a, &b], LAPSE + Duration::from_millis(1000))
            .await
            .is_empty()
    );
    let both = HashSet::from(["a".to_owned(), "b".to_owned()]);
    assert_eq!(registered_nodes(&server, &p).await, both);
    let online = a.presence.online(&[user("ann"), user("bob")]).await;
    assert_eq!(online.unwrap(), [true, true]);
    assert!(a.membership.is_ready() && b.membership.is_ready());

    // Judging resumed: now `b` really dies, and is reaped.
    let died = Instant::now();
    let mut reaped = Vec::new();
    while reaped.is_empty() {
        assert!(died.elapsed() < SHORT, "b was not reaped after the outage");
        reaped = rounds(&[&a], ROUND).await;
    }
    assert_eq!(normalised(reaped), [departed("bob", vec![])]);
}

/// A node made while Redis is unreachable answers at once (no presence written, so nothing the
/// join's clean-up would undo), is not ready, and joins when Redis comes up.
#[tokio::test]
async fn a_node_starts_without_redis_and_joins_when_it_comes_up() {
    let port = free_port();
    let p = prefix("late");
    let spec = NodeSpec {
        url: format!("redis://127.0.0.1:{port}/"),
        prefix: &p,
        id: "late",
        node_timeout: SHORT,
        typing_ttl: Duration::from_secs(5),
        rebroadcast: Duration::from_secs(2),
    };
    let late = spec.build();
    assert!(!late.membership.is_ready());
    let started = Instant::now();
    assert!(late.membership.heartbeat().await.is_err());
    let written = late.presence.connected(&user("ann"), "s1").await;
    assert!(
        matches!(written, Err(BackplaneError::NotJoined)),
        "{written:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "calls stalled");
    assert!(late.membership.sweep().await.unwrap().is_empty());

    let server = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(5);
    while late.membership.heartbeat().await.is_err() {
        assert!(Instant::now() < deadline, "never joined");
        sleep(ROUND).await;
    }
    assert!(late.membership.is_ready());
    assert!(
        late.membership.take_resync_needed(),
        "its sockets are registered next"
    );
    assert!(on(&late, "ann", "s1").await);
    let other = node(&server, &p, "other", SHORT).await;
    assert_eq!(other.presence.online(&[user("ann")]).await.unwrap(), [true]);
}
