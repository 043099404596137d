//! Each node's load, published once a second, so any node answers for the whole cluster.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::BackplaneError;

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

#[async_trait]
pub trait NodeLoads: Send + Sync + 'static {
    /// Publishes this node's load; in a cluster it expires with the node's timeout, so only
    /// live nodes are listed.
    async fn publish(&self, load: NodeLoad) -> Result<(), BackplaneError>;

    /// Every live node that published its load, sorted by id.
    async fn nodes(&self) -> Result<Vec<NodeStats>, BackplaneError>;
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
