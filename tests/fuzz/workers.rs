//! The fuzz workers: each opens sessions of one transport and sends generated frames on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

use super::frames;
use super::wire::{PollingSession, SharedTally, WsSession};

pub const FRAMES_PER_SESSION: usize = 40;

#[derive(Default)]
/// How much was sent.
pub struct Counts {
    pub frames: AtomicU64,
    pub ws_frames: AtomicU64,
    pub polling_frames: AtomicU64,
    pub bytes: AtomicU64,
    pub sessions: AtomicU64,
    pub closed_by_server: AtomicU64,
}

/// A dev token for `user`.
pub async fn token(base: &str, user: &str) -> String {
    let reply: Value = reqwest::Client::new()
        .post(format!("{base}/api/dev/token"))
        .json(&json!({ "userId": user }))
        .send()
        .await
        .expect("dev token")
        .json()
        .await
        .expect("token json");
    reply["token"].as_str().expect("token").to_owned()
}

/// What every worker shares.
#[derive(Clone)]
pub struct Run {
    pub base: String,
    pub room: String,
    pub seed: u64,
    pub until: Instant,
    pub counts: Arc<Counts>,
    pub tally: SharedTally,
}

/// Sends generated frames on fresh sessions until `until`; a session the server closed is
/// replaced by a new one.
pub async fn worker(id: u64, polling: bool, run: Run) {
    let Run {
        base,
        room,
        seed,
        until,
        counts,
        tally,
    } = run;
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    seed_bytes[8..16].copy_from_slice(&id.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let user = format!("fuzz-{id}-{n}");
        let token = token(&base, &user).await;
        counts.sessions.fetch_add(1, Ordering::Relaxed);
        enum Session {
            Ws(WsSession),
            Polling(PollingSession),
        }
        let mut session = if polling {
            Session::Polling(
                PollingSession::open(&base, &token, tally.clone())
                    .await
                    .unwrap(),
            )
        } else {
            Session::Ws(WsSession::open(&base, &token, tally.clone()).await.unwrap())
        };
        // Generated up front: proptest's strategies are not `Send`, so none lives across an await.
        let batch: Vec<frames::Frame> = {
            let strategy = frames::frame(room.clone());
            (0..FRAMES_PER_SESSION)
                .map(|_| strategy.new_tree(&mut runner).expect("a frame").current())
                .collect()
        };
        for frame in batch {
            if Instant::now() >= until {
                break;
            }
            counts.frames.fetch_add(1, Ordering::Relaxed);
            counts
                .bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            let sent = match &mut session {
                Session::Ws(s) => {
                    counts.ws_frames.fetch_add(1, Ordering::Relaxed);
                    s.send(&frame).await
                }
                Session::Polling(s) => {
                    counts.polling_frames.fetch_add(1, Ordering::Relaxed);
                    s.send(&frame).await
                }
            };
            if sent.is_err() {
                counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        match session {
            Session::Ws(mut s) => {
                s.flush().await;
                s.close().await;
            }
            Session::Polling(mut s) => {
                s.flush().await;
                s.close().await;
            }
        }
    }
}
