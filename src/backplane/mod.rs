//! Cluster-wide state that is not durable, in parts by concern.
//!
//! Socket.IO room emits already cross nodes through socketioxide's adapter (`adapter.rs`, on our
//! pub/sub driver in `driver.rs`); what the adapter does not know lives here, each concern behind
//! its own small trait:
//!
//! - [`Presence`]: which sockets each user has anywhere (online, offline, where).
//! - [`Typing`]: who types where, with expiry and the re-broadcast throttle.
//! - [`Membership`]: this node in the cluster: heartbeat, reaping dead nodes, leaving.
//! - [`NodeLoads`]: each node's published load, for the operations API.
//! - [`SecurityLog`]: the cluster's recent security events.
//!
//! A single node uses the in-process parts (`local/`), a cluster the Redis ones (`redis/`); the
//! choice is made once, in `app.rs`, and a [`Backplane`] carries the chosen parts. Every part
//! fails with a [`BackplaneError`], mapped once to the contract's codes.

mod adapter;
pub mod driver;
mod error;
mod loads;
mod local;
mod membership;
mod presence;
mod redis;
mod security;
mod typing;

use std::sync::Arc;

pub use adapter::{Adapter, BackplaneDriver, SocketIo, SocketRef};
pub use driver::ReconnectingDriver;
pub use error::BackplaneError;
pub use loads::{LAG_WINDOW, NodeLoad, NodeLoads, NodeStats};
pub use membership::{Beat, Liveness, Membership, keep_heartbeat};
pub use presence::{Departure, Presence, UserPresence};
pub use redis::RedisOptions;
pub use security::{SECURITY_EVENTS_KEPT, SecurityEvent, SecurityKind, SecurityLog};
pub use typing::{ExpiredTyping, Typer, Typing};

/// The parts of the backplane a node runs with; cheap to clone.
#[derive(Clone)]
pub struct Backplane {
    pub presence: Arc<dyn Presence>,
    pub typing: Arc<dyn Typing>,
    pub membership: Arc<dyn Membership>,
    pub loads: Arc<dyn NodeLoads>,
    pub security: Arc<dyn SecurityLog>,
}

impl Backplane {
    /// The in-process backplane of a single node.
    pub fn local(
        node_id: impl Into<String>,
        typing_ttl: std::time::Duration,
        rebroadcast: std::time::Duration,
    ) -> Self {
        local::backplane(node_id.into(), typing_ttl, rebroadcast)
    }

    /// The Redis backplane of a cluster node. Nothing is sent yet: the node joins on its first
    /// heartbeat, so it starts (and serves its own sockets) while Redis is unreachable.
    pub fn redis(
        options: RedisOptions,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, BackplaneError> {
        redis::backplane(options, metrics)
    }

    /// A short description for logs.
    pub fn describe(&self) -> &'static str {
        self.membership.describe()
    }
}
