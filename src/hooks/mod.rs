//! The backend integration going out of confab: webhooks and forwarded client calls
//! (`rpc:call`), both signed the same way (`signature.rs`).
//!
//! - Change events (message.created, room.created, member.joined, member.left) are written by
//!   storage into an outbox table in the transaction of the change (`storage/outbox/`), and
//!   `delivery.rs` sends them from there: a crash between the change and its webhook loses
//!   nothing.
//! - Presence events (user.online, user.offline) are sent by the node that saw the cluster-wide
//!   change (`webhooks.rs`), called from `socket/presence.rs`.
//! - `rpc.rs` forwards `rpc:call` (registered in `socket/rpc.rs`).

pub mod config;
pub mod delivery;
mod metrics;
pub mod rpc;
pub mod signature;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

pub use config::{HookArgs, HookSettings};
pub use metrics::HookMetrics;
pub use rpc::RpcForwarder;
pub use webhooks::Webhooks;

use crate::domain::UserId;

/// The configured integrations; cheap to clone, and empty when neither URL is set.
#[derive(Clone, Default)]
pub struct Hooks {
    pub webhooks: Option<Arc<Webhooks>>,
    pub rpc: Option<Arc<RpcForwarder>>,
}

impl Hooks {
    /// Builds the pooled HTTP client shared by both (keep-alive connections to the backend).
    pub fn new(
        settings: &HookSettings,
        metrics: &Arc<crate::metrics::Metrics>,
        node: &str,
    ) -> anyhow::Result<Self> {
        let Some(secret) = settings.secret.clone() else {
            return Ok(Self::default());
        };
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            webhooks: settings.webhooks.clone().map(|w| {
                let webhooks = Webhooks::new(
                    w,
                    client.clone(),
                    secret.clone(),
                    metrics.clone(),
                    node.to_owned(),
                );
                Arc::new(webhooks)
            }),
            rpc: settings
                .rpc
                .clone()
                .map(|r| Arc::new(RpcForwarder::new(r, client, secret, metrics.clone()))),
        })
    }

    /// A user's first socket in the cluster appeared (`online`) or the last one went.
    pub fn presence(&self, user: &UserId, online: bool) {
        if let Some(webhooks) = &self.webhooks {
            webhooks.presence(user, online);
        }
    }
}
