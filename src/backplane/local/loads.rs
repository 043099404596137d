//! The single node's own load, as the operations API lists it.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::lock;
use crate::backplane::{BackplaneError, NodeLoad, NodeLoads, NodeStats};

pub(super) struct LocalLoads {
    node_id: String,
    started_at: DateTime<Utc>,
    /// The last load published, and when.
    last: Mutex<Option<(NodeLoad, DateTime<Utc>)>>,
}

impl LocalLoads {
    pub(super) fn new(node_id: String) -> Self {
        Self {
            node_id,
            started_at: Utc::now(),
            last: Mutex::default(),
        }
    }
}

#[async_trait]
impl NodeLoads for LocalLoads {
    async fn publish(&self, load: NodeLoad) -> Result<(), BackplaneError> {
        *lock(&self.last) = Some((load, Utc::now()));
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeStats>, BackplaneError> {
        let last = lock(&self.last);
        Ok(last
            .iter()
            .map(|(load, at)| NodeStats {
                id: self.node_id.clone(),
                connections: load.connections,
                sockets: load.sockets,
                rooms: load.rooms,
                started_at: self.started_at,
                updated_at: *at,
                messages_stored: load.messages_stored,
                events: load.events,
                rate_limited: load.rate_limited,
                backplane_lag_ms: None,
                redis_rtt_ms: None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_node_is_listed_once_it_published() {
        let loads = LocalLoads::new("solo".to_owned());
        assert!(loads.nodes().await.unwrap().is_empty());
        let load = NodeLoad {
            connections: 3,
            sockets: 3,
            ..NodeLoad::default()
        };
        loads.publish(load).await.unwrap();
        let nodes = loads.nodes().await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!((nodes[0].id.as_str(), nodes[0].connections), ("solo", 3));
    }
}
