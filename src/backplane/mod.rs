//! Cluster-wide state that is not durable: who is online and who is typing.
//!
//! Socket.IO room emits already cross nodes through socketioxide's adapter; what the adapter
//! does not know (how many sockets a user has anywhere, typing timers) lives behind
//! [`Backplane`]. A single node uses [`LocalBackplane`]; a cluster swaps in a Redis one.
//!
//! The operations API (`http/ops.rs`) reads its cluster-wide answers from here too: each node's
//! load as published by its upkeep, the users online, one user's presence and the recent security
//! events, so any node answers for the whole cluster.

mod adapter;
pub mod driver;
mod instrumented;
mod local;
mod redis;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::domain::{RoomId, UserId};

pub use adapter::{Adapter, BackplaneDriver, SocketIo, SocketRef};
pub use driver::ReconnectingDriver;
pub use instrumented::InstrumentedBackplane;
pub use local::LocalBackplane;
pub use redis::RedisBackplane;

#[derive(Debug, thiserror::Error)]
#[error("backplane unavailable: {0}")]
pub struct BackplaneError(pub String);

/// A user typing in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typer {
    pub user_id: UserId,
    pub name: String,
}

/// A user whose last socket vanished with a dead node: presence goes offline, typing stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    pub user_id: UserId,
    /// Rooms the user was typing in when their node died.
    pub typing_rooms: Vec<RoomId>,
}

/// A typing state that ran out without a `typing:stop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredTyping {
    pub room: RoomId,
    pub user_id: UserId,
}

/// What a node measures about itself, published once a second by its upkeep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeLoad {
    /// Sockets holding a connection slot.
    pub connections: u64,
    /// Socket.IO sockets in the default namespace.
    pub sockets: u64,
    /// Socket.IO rooms with at least one socket of this node.
    pub rooms: u64,
    /// Counters since the node started, for rates.
    pub messages_stored: u64,
    pub events: u64,
    pub rate_limited: u64,
    /// The cumulative buckets `(upper bound in seconds, count)` of the node's backplane delivery
    /// lag histogram, ascending, `+Inf` last; empty when the node has none.
    pub lag_buckets: Vec<(f64, u64)>,
}

/// One live node as the whole cluster sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub id: String,
    pub connections: u64,
    pub sockets: u64,
    /// Socket.IO rooms on this node (not chat rooms).
    pub rooms: u64,
    pub started_at: DateTime<Utc>,
    /// When the node last published these numbers.
    pub updated_at: DateTime<Utc>,
    pub messages_stored: u64,
    pub events: u64,
    pub rate_limited: u64,
    /// Median delivery lag of the messages that reached this node from other nodes over the
    /// last [`LAG_WINDOW`] upkeep rounds, in milliseconds; `None` without such messages.
    pub backplane_lag_ms: Option<f64>,
    /// Median round trip of this node's latest Redis state operations, in milliseconds (`None`
    /// on a single node).
    pub redis_rtt_ms: Option<f64>,
}

/// How many upkeep rounds (seconds) the delivery lag median is taken over.
pub const LAG_WINDOW: usize = 10;

/// The median delivery lag over the last [`LAG_WINDOW`] published loads: the histogram is
/// cumulative since start, so the window is the difference between its newest and oldest
/// snapshot.
#[derive(Default)]
pub(crate) struct LagWindow {
    snapshots: std::sync::Mutex<std::collections::VecDeque<Vec<(f64, u64)>>>,
}

impl LagWindow {
    /// Adds the newest snapshot; returns the median over the window in milliseconds.
    pub(crate) fn observe(&self, cumulative: Vec<(f64, u64)>) -> Option<f64> {
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if snapshots.len() > LAG_WINDOW {
            snapshots.pop_front();
        }
        snapshots.push_back(cumulative);
        let newest = snapshots.back()?;
        let oldest = snapshots.front()?;
        let baseline = |bound: f64| {
            oldest
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0, |(_, c)| *c)
        };
        let window: Vec<(f64, u64)> = if snapshots.len() == 1 {
            newest.clone()
        } else {
            newest
                .iter()
                .map(|(b, c)| (*b, c.saturating_sub(baseline(*b))))
                .collect()
        };
        median_of_buckets(&window).map(|secs| secs * 1000.0)
    }
}

/// The median of a cumulative histogram, interpolated within its bucket as Prometheus'
/// `histogram_quantile` does; `None` when it holds no observation.
pub(crate) fn median_of_buckets(cumulative: &[(f64, u64)]) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = total as f64 / 2.0;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(bound, count) in cumulative {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let inside = (count - below) as f64;
            let fraction = if inside > 0.0 {
                (rank - below as f64) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        (lower, below) = (bound, count);
    }
    Some(lower)
}

/// Where a user is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    pub online: bool,
    pub sockets: u64,
    /// Nodes holding at least one of the user's sockets, sorted.
    pub nodes: Vec<String>,
}

/// What kind of security-relevant thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityKind {
    /// A connection with a missing, invalid or expired token.
    AuthFailure,
    /// An event refused by a per-socket rate limit.
    RateLimited,
    /// A connection refused before authentication (node or address at capacity).
    ConnectionRefused,
    /// An authenticated user asked for something they may not do.
    Forbidden,
}

/// A security event for the dashboard: never a token or message text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityEvent {
    pub at: DateTime<Utc>,
    pub node: String,
    pub kind: SecurityKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The client's address as this node saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// A short, fixed description: the event name, or why a connection was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// How many security events the backplane keeps.
pub const SECURITY_EVENTS_KEPT: usize = 200;

#[async_trait]
pub trait Backplane: Send + Sync + 'static {
    /// Records a socket of `user`; true when it is the user's first socket anywhere.
    async fn socket_connected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError>;

    /// Forgets a socket of `user`; true when it was the user's last socket anywhere.
    async fn socket_disconnected(
        &self,
        user: &UserId,
        socket: &str,
    ) -> Result<bool, BackplaneError>;

    /// Whether each user has at least one socket, in the order asked.
    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BackplaneError>;

    /// Starts or refreshes `user` typing in `room` until `now + ttl`; true when a `typing:start`
    /// should be broadcast (a new typer, or the last broadcast is `rebroadcast` old).
    async fn typing_start(
        &self,
        room: RoomId,
        typer: Typer,
        now: Instant,
    ) -> Result<bool, BackplaneError>;

    /// Ends `user` typing in `room`; true when they were typing (so `typing:stop` is due).
    async fn typing_stop(&self, room: RoomId, user: &UserId) -> Result<bool, BackplaneError>;

    /// Ends every typing of `user` (their last socket went away); returns the rooms.
    async fn typing_stop_all(&self, user: &UserId) -> Result<Vec<RoomId>, BackplaneError>;

    /// Everyone typing in `room` at `now`, ordered by user id.
    async fn typers(&self, room: RoomId, now: Instant) -> Result<Vec<Typer>, BackplaneError>;

    /// Removes and returns the typing states that expired by `now`.
    async fn take_expired_typing(&self, now: Instant)
    -> Result<Vec<ExpiredTyping>, BackplaneError>;

    /// Periodic upkeep, run by every node about once a second: refresh this node's heartbeat and
    /// reap the sockets of nodes whose heartbeat expired. Returns the users that reaping left
    /// without any socket, for whom exactly one node (the caller) must announce the departure.
    async fn maintain(&self) -> Result<Vec<Departure>, BackplaneError>;

    /// True (once) when this node's presence entries may differ from its live sockets: a
    /// presence write failed during an outage, or the node was reaped while alive.
    fn take_resync_needed(&self) -> bool {
        false
    }

    /// The sockets registered for this node, as `(user, socket id)`.
    async fn node_sockets(&self) -> Result<Vec<(UserId, String)>, BackplaneError> {
        Ok(Vec::new())
    }

    /// Forgets this node's sockets on an orderly shutdown; returns users left without sockets.
    async fn leave_cluster(&self) -> Result<Vec<Departure>, BackplaneError>;

    /// Publishes this node's load for the operations API (the upkeep calls it once a second);
    /// in a cluster it expires with the node's heartbeat.
    async fn publish_node_stats(&self, load: NodeLoad) -> Result<(), BackplaneError>;

    /// Every live node that published its load, sorted by id.
    async fn cluster_nodes(&self) -> Result<Vec<NodeStats>, BackplaneError>;

    /// How many users have at least one socket anywhere (O(1), not a scan).
    async fn users_online(&self) -> Result<u64, BackplaneError>;

    /// Where `user` is connected.
    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, BackplaneError>;

    /// Keeps a security event among the last [`SECURITY_EVENTS_KEPT`] of the cluster.
    async fn record_security_event(&self, event: SecurityEvent) -> Result<(), BackplaneError>;

    /// The newest security events first, at most `limit`.
    async fn recent_security_events(
        &self,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, BackplaneError>;

    /// Whether cross-node delivery works right now (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// A short description for logs and `/readyz`.
    fn describe(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_median_covers_the_window_only() {
        let window = LagWindow::default();
        assert_eq!(window.observe(Vec::new()), None);
        // Ten messages between 1 and 2 ms long ago...
        let old = vec![(0.001, 0), (0.002, 10), (f64::INFINITY, 10)];
        assert!((window.observe(old.clone()).unwrap() - 1.5).abs() < 1e-9);
        for _ in 0..LAG_WINDOW {
            window.observe(old.clone());
        }
        // ...then nothing new: no lag to report.
        assert_eq!(window.observe(old), None);
        // Four new ones under 1 ms.
        let now = vec![(0.001, 4), (0.002, 14), (f64::INFINITY, 14)];
        assert!((window.observe(now).unwrap() - 0.5).abs() < 1e-9);
    }
}
