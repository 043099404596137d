//! This node in the cluster: its heartbeat, the reaping of nodes that died, and leaving.
//!
//! The timing is derived from one setting, `CONFAB_NODE_TIMEOUT` (T): a crashed node's users must
//! be announced offline within T of the crash, *including* the sweep that notices. So a node is
//! judged dead after a silence of T − sweep period − a margin for reaping and announcing
//! ([`Liveness::lapse`]), heartbeats go every 500 ms and sweeps every 500 ms. With the default
//! T = 5 s a node must miss 8 heartbeats in a row (4 s) before it is reaped.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{BackplaneError, Departure};
use crate::domain::UserId;

/// How often a node refreshes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// How often a node looks for dead nodes.
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Time left, within the node timeout, to reap a dead node and announce its users.
const ANNOUNCE_MARGIN: Duration = Duration::from_millis(500);
/// A node only judges others over time in which its own heartbeats landed at least this often:
/// a gap means Redis (or this node) was away, and nobody could beat meanwhile.
const MAX_OWN_BEAT_GAP: Duration = Duration::from_millis(1500);
/// A heartbeat that takes longer than this counts as failed (Redis paused or unreachable).
pub(crate) const HEARTBEAT_BUDGET: Duration = Duration::from_secs(1);

/// The cluster's liveness timing, derived from the node timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub heartbeat_every: Duration,
    pub sweep_every: Duration,
    /// Silence after which a node is reaped.
    pub lapse: Duration,
    /// See [`MAX_OWN_BEAT_GAP`].
    pub max_own_beat_gap: Duration,
}

impl Liveness {
    /// The timing for a node timeout (validated to be at least 3 s by the configuration).
    pub fn for_timeout(node_timeout: Duration) -> Self {
        let lapse = node_timeout
            .saturating_sub(SWEEP_EVERY + ANNOUNCE_MARGIN)
            .max(MAX_OWN_BEAT_GAP);
        Self {
            heartbeat_every: HEARTBEAT_EVERY,
            sweep_every: SWEEP_EVERY,
            lapse,
            max_own_beat_gap: MAX_OWN_BEAT_GAP,
        }
    }
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Registered as before.
    Steady,
    /// (Re)registered: the first contact since start, the first beat after an outage, or the
    /// cluster had presumed this node dead. Its local sockets are registered again by the
    /// upkeep's resync.
    Rejoined,
}

#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Refreshes this node's heartbeat. The first one that reaches Redis first clears what a
    /// previous process with this node id left (its departures come out of the next sweep).
    async fn heartbeat(&self) -> Result<Beat, BackplaneError>;

    /// Claims the nodes that stayed silent for the lapse while this node was beating, and
    /// reaps their sockets. Returns the users left without any socket, whose departure the
    /// caller (and only it) announces.
    async fn sweep(&self) -> Result<Vec<Departure>, BackplaneError>;

    /// True (once) when this node's presence entries may differ from its live sockets.
    fn take_resync_needed(&self) -> bool;

    /// Asks for another resync (the last one could not finish).
    fn request_resync(&self);

    /// The sockets registered for this node, as `(user, socket id)`.
    async fn node_sockets(&self) -> Result<Vec<(UserId, String)>, BackplaneError>;

    /// Forgets this node's sockets on an orderly shutdown; returns users left without sockets.
    async fn leave(&self) -> Result<Vec<Departure>, BackplaneError>;

    /// Whether the node is in the cluster right now (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// A short description for logs.
    fn describe(&self) -> &'static str;
}

/// Beats until `stop`, in a task of its own so that reaping or announcing never delays a beat;
/// logs when the node loses and regains the cluster.
pub async fn keep_heartbeat(
    membership: &dyn Membership,
    liveness: Liveness,
    stop: &CancellationToken,
) {
    let mut tick = tokio::time::interval(liveness.heartbeat_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut up = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match membership.heartbeat().await {
            Ok(_) if !up => {
                tracing::info!("backplane reachable again; heartbeat resumed");
                up = true;
            }
            Err(e) if up => {
                tracing::warn!(error = %e, "heartbeat failed; not judging other nodes until it works");
                up = false;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healing_fits_in_the_node_timeout_including_the_sweep() {
        for secs in [3, 5, 10, 30] {
            let timeout = Duration::from_secs(secs);
            let l = Liveness::for_timeout(timeout);
            // Worst case: the lapse runs out just after a sweep, the next one notices.
            assert!(
                l.lapse + l.sweep_every + ANNOUNCE_MARGIN <= timeout,
                "{secs} s"
            );
            assert!(l.lapse >= l.max_own_beat_gap);
        }
        let default = Liveness::for_timeout(Duration::from_secs(5));
        assert_eq!(default.lapse, Duration::from_secs(4));
        assert_eq!(
            default.lapse.as_millis() / default.heartbeat_every.as_millis(),
            8
        );
    }
}
