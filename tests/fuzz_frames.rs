//! Fuzzing raw Socket.IO frames against a running node (the real binary on port 0), over
//! websocket and long-polling at once, while a bystander stays connected: no panic, no other
//! user's connection closed, every ack well-formed and never `internal`, memory flat afterwards.
//!
//! Bounded by default (`CONFAB_FUZZ_SECS`, 20 s, in the test command); for a long run:
//! `CONFAB_FUZZ_SECS=600 cargo test --test fuzz_frames -- --nocapture`. `CONFAB_FUZZ_SEED`
//! replays a run (the seed is printed).

#[path = "fuzz/frames.rs"]
mod frames;
mod support;
#[path = "fuzz/wire.rs"]
mod wire;
#[path = "fuzz/workers.rs"]
mod workers;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::TestClient;
use support::process::NodeProcess;
use wire::SharedTally;
use workers::{Counts, Run, token, worker};

const API_KEY: &str = "fuzz-api-key-0123456789";
const WS_WORKERS: u64 = 4;
const POLLING_WORKERS: u64 = 2;
/// Memory may grow by this much over the run, allocator slack included.
const RSS_SLACK_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One series of `/metrics` (the first line starting with `name`).
async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// What the node holds: the `confab_sockets` gauge, its connection slots and Socket.IO sockets.
async fn held(base: &str) -> (f64, u64, u64) {
    let stats: Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/stats"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    let node = &stats["nodes"][0];
    (
        metric(base, "confab_sockets").await,
        node["connections"].as_u64().unwrap_or(u64::MAX),
        node["sockets"].as_u64().unwrap_or(u64::MAX),
    )
}

/// The watcher sends a message; the bystander must get it.
async fn bystander_still_hears(watcher: &TestClient, bystander: &TestClient, room: &str, n: u32) {
    let text = format!("still there? {n}");
    watcher
        .ok("message:send", json!({ "roomId": room, "text": text }))
        .await;
    bystander
        .next_where("message:new", |m| m["text"] == text.as_str())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_frames_never_hurt_the_node_or_other_users() {
    let secs = env_u64("CONFAB_FUZZ_SECS", 20).max(4);
    let seed = env_u64("CONFAB_FUZZ_SEED", rand::random());
    println!("fuzz: {secs} s, seed {seed} (CONFAB_FUZZ_SEED replays it)");
    let dir = tempfile::tempdir().unwrap();
    let env = HashMap::from([
        (
            "CONFAB_DATABASE_URL".to_owned(),
            format!("sqlite://{}/confab.db", dir.path().display()),
        ),
        ("CONFAB_API_KEY".to_owned(), API_KEY.to_owned()),
    ]);
    let node = NodeProcess::start("fuzz-node", &env).await;
    let base = node.base.clone();

    let watcher = TestClient::connect(&base, &token(&base, "watcher").await).await;
    let bystander = TestClient::connect(&base, &token(&base, "bystander").await).await;
    let created = watcher
        .ok(
            "room:create",
            json!({ "name": "lobby", "kind": "public", "members": ["bystander"] }),
        )
        .await;
    let room = created["room"]["id"].as_str().unwrap().to_owned();
    bystander.next("room:added").await;
    let rss_start = metric(&base, "confab_process_resident_memory_bytes").await;

    let counts = Arc::new(Counts::default());
    let tally: SharedTally = Arc::new(Mutex::new(wire::Tally::default()));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let warmed = started + Duration::from_secs(secs / 5);
    let run = Run {
        base: base.clone(),
        room: room.clone(),
        seed,
        until,
        counts: counts.clone(),
        tally: tally.clone(),
    };
    let workers: Vec<_> = (0..WS_WORKERS + POLLING_WORKERS)
        .map(|id| tokio::spawn(worker(id, id >= WS_WORKERS, run.clone())))
        .collect();

    // While the fuzz runs, the bystander keeps hearing the room; after the warm-up, the baseline.
    let mut checks = 0;
    let mut rss_warm = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        checks += 1;
        bystander_still_hears(&watcher, &bystander, &room, checks).await;
        if rss_warm.is_none() && Instant::now() >= warmed {
            rss_warm = Some(metric(&base, "confab_process_resident_memory_bytes").await);
        }
    }
    for w in workers {
        w.await.expect("a fuzz worker failed");
    }
    bystander_still_hears(&watcher, &bystander, &room, 0).await;

    // Every fuzz session is gone from the node: only the watcher's and the bystander's sockets,
    // connection slots and gauge counts remain (the gauge follows each session's lifetime, so a
    // socket closing between its admission and its connect handler is not counted forever).
    let deadline = Instant::now() + Duration::from_secs(30);
    let gauge = loop {
        let held = held(&base).await;
        if held == (2.0, 2, 2) {
            break held.0;
        }
        assert!(
            Instant::now() < deadline,
            "fuzz sockets were not released: (gauge, slots, sockets) = {held:?}\n{}",
            node.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rss_end = metric(&base, "confab_process_resident_memory_bytes").await;
    let rss_warm = rss_warm.unwrap_or(rss_start);
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let mib = |b: f64| b / 1024.0 / 1024.0;
    println!(
        "fuzz: {} frames ({} websocket, {} polling, {:.1} MiB) in {} sessions over {:.0?}, {} \
         closed by the server; acks {:?}, error events {:?}; RSS {:.1} → {:.1} (warm) → {:.1} MiB; \
         confab_sockets gauge at the end {gauge} (2 sockets)",
        counts.frames.load(Ordering::Relaxed),
        counts.ws_frames.load(Ordering::Relaxed),
        counts.polling_frames.load(Ordering::Relaxed),
        mib(counts.bytes.load(Ordering::Relaxed) as f64),
        counts.sessions.load(Ordering::Relaxed),
        started.elapsed(),
        counts.closed_by_server.load(Ordering::Relaxed),
        tally.acks,
        tally.errors,
        mib(rss_start),
        mib(rss_warm),
        mib(rss_end),
    );

    let drained = bystander.drain().await;
    assert!(
        !drained.iter().any(|(event, _)| event == "close"),
        "the bystander's connection was closed"
    );
    assert!(
        tally.malformed_acks.is_empty(),
        "malformed acks: {:?}",
        tally.malformed_acks
    );
    assert_eq!(
        tally.acks.get("internal"),
        None,
        "internal errors from junk input"
    );
    assert_eq!(
        tally.errors.get("internal"),
        None,
        "internal errors from junk input"
    );
    assert!(
        tally.acks.get("ok").copied().unwrap_or(0) > 0,
        "no frame reached a handler"
    );
    assert!(
        tally.acks.get("bad_request").copied().unwrap_or(0) > 0,
        "no frame was refused"
    );
    assert!(
        rss_end - rss_warm < RSS_SLACK_BYTES,
        "memory grew from {:.1} to {:.1} MiB",
        mib(rss_warm),
        mib(rss_end)
    );
    let output = node.output();
    assert!(!output.contains("panicked"), "the node panicked:\n{output}");
    let live = reqwest::get(format!("{base}/livez")).await.unwrap();
    assert_eq!(live.status(), 200);
    watcher.close().await;
    bystander.close().await;
    node.stop().await;
}
