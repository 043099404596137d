//! Node loads in Redis: a hash `node:{id}:info` per node, expiring with the node timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Core, now_ms};
use crate::backplane::loads::LagWindow;
use crate::backplane::{BackplaneError, NodeLoad, NodeLoads, NodeStats};

pub(super) struct RedisLoads {
    core: Arc<Core>,
    ttl: Duration,
    started_at: DateTime<Utc>,
    lag: LagWindow,
}

impl RedisLoads {
    pub(super) fn new(core: Arc<Core>, ttl: Duration) -> Self {
        Self {
            core,
            ttl,
            started_at: Utc::now(),
            lag: LagWindow::default(),
        }
    }
}

/// A node's published load, from `nodes_info`'s `node, field, value, ...`.
fn node_stats(entry: Vec<String>) -> Option<NodeStats> {
    let mut parts = entry.into_iter();
    let id = parts.next()?;
    let mut fields = HashMap::new();
    while let (Some(field), Some(value)) = (parts.next(), parts.next()) {
        fields.insert(field, value);
    }
    let int = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
    let float = |name: &str| fields.get(name).and_then(|v| v.parse::<f64>().ok());
    let time = |name: &str| {
        int(name)
            .and_then(|ms| DateTime::from_timestamp_millis(ms as i64))
            .unwrap_or_default()
    };
    Some(NodeStats {
        connections: int("connections").unwrap_or(0),
        sockets: int("sockets").unwrap_or(0),
        rooms: int("rooms").unwrap_or(0),
        started_at: time("started_at"),
        updated_at: time("updated_at"),
        messages_stored: int("messages_stored").unwrap_or(0),
        events: int("events").unwrap_or(0),
        rate_limited: int("rate_limited").unwrap_or(0),
        backplane_lag_ms: float("backplane_lag_ms"),
        redis_rtt_ms: float("redis_rtt_ms"),
        id,
    })
}

#[async_trait]
impl NodeLoads for RedisLoads {
    async fn publish(&self, load: NodeLoad) -> Result<(), BackplaneError> {
        let lag = self.lag.observe(load.lag_buckets);
        let rtt = self.core.round_trip_p50_ms();
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        let ttl = self.ttl.as_millis().max(1).to_string();
        let fields = [
            ("connections", load.connections.to_string()),
            ("sockets", load.sockets.to_string()),
            ("rooms", load.rooms.to_string()),
            ("started_at", self.started_at.timestamp_millis().to_string()),
            ("updated_at", now_ms().to_string()),
            ("messages_stored", load.messages_stored.to_string()),
            ("events", load.events.to_string()),
            ("rate_limited", load.rate_limited.to_string()),
            ("backplane_lag_ms", ms(lag)),
            ("redis_rtt_ms", ms(rtt)),
        ];
        let mut args: Vec<&str> = vec![&self.core.node_id, &ttl];
        for (field, value) in &fields {
            args.push(field);
            args.push(value);
        }
        self.core.run::<i64>("publish_stats", &args).await?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeStats>, BackplaneError> {
        let found: Vec<Vec<String>> = self.core.run("nodes_info", &[]).await?;
        let mut nodes: Vec<NodeStats> = found.into_iter().filter_map(node_stats).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }
}
