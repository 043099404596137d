//! This node in a Redis cluster: joining, heartbeats, judging and reaping others, leaving.
//!
//! Liveness is judged on Redis's clock (`beats` holds each node's last heartbeat in Redis server
//! milliseconds) and only over time in which the judge itself was beating: a node's own beats
//! that land at most [`Liveness::max_own_beat_gap`] apart make a *judging window*, which starts
//! again after any failure or gap. A node is reaped when it stayed silent for the lapse inside
//! the judge's window. So an outage of Redis, however long (and whatever a persisted Redis
//! remembers of expiry times), a paused Redis, or a judge that was itself cut off never count
//! against anybody: after Redis returns every node has a full lapse to beat again. Only a node
//! that stays silent while others can reach Redis is reaped — a crashed one, or one cut off from
//! Redis alone, which then re-registers its sockets when it comes back.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};

use async_trait::async_trait;

use super::Core;
use crate::backplane::membership::HEARTBEAT_BUDGET;
use crate::backplane::{BackplaneError, Beat, Departure, Liveness, Membership};
use crate::domain::{RoomId, UserId};

/// How many sockets one reaping script handles, so a huge dead node never blocks Redis for long.
const REAP_BATCH: usize = 500;

/// What this node knows of its own beats, in Redis milliseconds.
#[derive(Default)]
struct Window {
    /// The last beat that went through, while they keep going through.
    last_beat: Option<i64>,
    /// Since when this node's beats have been landing without a gap: the judging window.
    since: Option<i64>,
    /// Whether this process has beaten at all (a later re-registration means it was reaped).
    ever: bool,
}

pub(super) struct RedisMembership {
    core: Arc<Core>,
    liveness: Liveness,
    window: Mutex<Window>,
    /// The last heartbeat went through.
    ready: AtomicBool,
    /// Departures found while joining (a previous process's entries), for the next sweep.
    pending: Mutex<Vec<Departure>>,
}

impl RedisMembership {
    pub(super) fn new(core: Arc<Core>, liveness: Liveness) -> Self {
        Self {
            core,
            liveness,
            window: Mutex::default(),
            ready: AtomicBool::new(false),
            pending: Mutex::default(),
        }
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, Vec<Departure>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A beat failed: the judging window closes, and readiness goes until a beat works.
    fn lost(&self) {
        let mut window = self.window();
        window.last_beat = None;
        window.since = None;
        self.ready.store(false, Ordering::SeqCst);
    }

    /// One batch of `node`'s sockets; true when none are left (or a claimed node came back).
    async fn reap_batch(
        &self,
        node: &str,
        claimed: bool,
    ) -> Result<(bool, Vec<Departure>), BackplaneError> {
        let batch = REAP_BATCH.to_string();
        let claimed = if claimed { "1" } else { "0" };
        let (done, found): (i64, Vec<Vec<String>>) =
            self.core.run("reap", &[node, &batch, claimed]).await?;
        Ok((done == 1, found.into_iter().filter_map(departure).collect()))
    }

    /// The first contact with Redis: a previous process with this id may have crashed, and its
    /// sockets are gone, so forget them before a heartbeat makes them look alive again.
    async fn join(&self) -> Result<(), BackplaneError> {
        loop {
            let (done, found) = self.reap_batch(&self.core.node_id, false).await?;
            self.pending().extend(found);
            if done {
                self.core.joined.store(true, Ordering::SeqCst);
                return Ok(());
            }
        }
    }

    async fn beat(&self) -> Result<Beat, BackplaneError> {
        if !self.core.joined() {
            self.join().await?;
        }
        let (now, registered): (i64, i64) =
            self.core.run("heartbeat", &[&self.core.node_id]).await?;
        let mut window = self.window();
        let gap = window.last_beat.map(|prev| now - prev);
        let max_gap = self.liveness.max_own_beat_gap.as_millis() as i64;
        // A gap, or a Redis that forgot this node (restarted empty, restored, failed over): what
        // it holds of the others' beats says nothing of the time before, so judge from now.
        if registered == 1 || gap.is_none_or(|gap| gap > max_gap) {
            window.since = Some(now);
        }
        if let Some(gap) =
            gap.filter(|gap| *gap > 2 * self.liveness.heartbeat_every.as_millis() as i64)
        {
            tracing::info!(gap_ms = gap, "heartbeat late");
        }
        let rejoined = registered == 1 || window.last_beat.is_none();
        if registered == 1 && window.ever {
            tracing::warn!(
                node = %self.core.node_id,
                "this node had to register again (Redis lost its state, or the cluster presumed \
                 it dead); registering its sockets again"
            );
        }
        window.last_beat = Some(now);
        window.ever = true;
        drop(window);
        self.ready.store(true, Ordering::SeqCst);
        if rejoined {
            // The first beat, or the first after a failure: whatever happened meanwhile (Redis
            // restarted empty or from an old snapshot, writes lost), put this node's entries right.
            self.core.need_resync();
            return Ok(Beat::Rejoined);
        }
        Ok(Beat::Steady)
    }
}

fn departure(entry: Vec<String>) -> Option<Departure> {
    let mut parts = entry.into_iter();
    let user_id = UserId::parse(&parts.next()?).ok()?;
    let typing_rooms = parts.filter_map(|r| RoomId::parse(&r).ok()).collect();
    Some(Departure {
        user_id,
        typing_rooms,
    })
}

#[async_trait]
impl Membership for RedisMembership {
    async fn heartbeat(&self) -> Result<Beat, BackplaneError> {
        match tokio::time::timeout(HEARTBEAT_BUDGET, self.beat()).await {
            Ok(Ok(beat)) => Ok(beat),
            Ok(Err(e)) => {
                self.lost();
                Err(e)
            }
            Err(_) => {
                self.lost();
                let timed_out = (redis::ErrorKind::Io, "heartbeat timed out");
                Err(BackplaneError::Unreachable(timed_out.into()))
            }
        }
    }

    async fn sweep(&self) -> Result<Vec<Departure>, BackplaneError> {
        let mut departures = std::mem::take(&mut *self.pending());
        let Some(since) = self.window().since else {
            return Ok(departures);
        };
        let lapse = self.liveness.lapse.as_millis().to_string();
        let gap = self.liveness.max_own_beat_gap.as_millis().to_string();
        let me = self.core.node_id.as_str();
        let (claimed, mut outcome) = match self
            .core
            .run::<Vec<String>>("claim_dead", &[me, &since.to_string(), &lapse, &gap])
            .await
        {
            Ok(claimed) => (claimed, Ok(())),
            Err(e) => (Vec::new(), Err(e)),
        };
        for node in claimed {
            tracing::info!(node = %node, "reaping the sockets of a node without heartbeat");
            loop {
                match self.reap_batch(&node, true).await {
                    Ok((done, found)) => {
                        departures.extend(found);
                        if done {
                            break;
                        }
                    }
                    // The claim lapses and a sweep (this one or another node's) takes over.
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
        }
        match outcome {
            Ok(()) => Ok(departures),
            Err(e) => {
                // Nobody else will announce these: keep them for the next sweep.
                self.pending().extend(departures);
                Err(e)
            }
        }
    }

    fn take_resync_needed(&self) -> bool {
        self.core.resync_needed.swap(false, Ordering::SeqCst)
    }

    fn request_resync(&self) {
        self.core.need_resync();
    }

    async fn node_sockets(&self) -> Result<Vec<(UserId, String)>, BackplaneError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(
            self.core
                .key(&format!("node:{}:sockets", self.core.node_id)),
        );
        let members: Vec<String> = self.core.query("node_sockets", &cmd).await?;
        Ok(members
            .iter()
            .filter_map(|m| {
                let (user, socket) = m.split_once('\n')?;
                Some((UserId::parse(user).ok()?, socket.to_owned()))
            })
            .collect())
    }

    async fn leave(&self) -> Result<Vec<Departure>, BackplaneError> {
        let mut departures = std::mem::take(&mut *self.pending());
        loop {
            let (done, found) = self.reap_batch(&self.core.node_id, false).await?;
            departures.extend(found);
            if done {
                break;
            }
        }
        self.core.run::<i64>("leave", &[&self.core.node_id]).await?;
        self.ready.store(false, Ordering::SeqCst);
        Ok(departures)
    }

    fn is_ready(&self) -> bool {
        self.core.joined() && self.ready.load(Ordering::SeqCst)
    }

    fn describe(&self) -> &'static str {
        "redis"
    }
}
