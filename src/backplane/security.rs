//! The cluster's recent security events, for the operations dashboard.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::BackplaneError;

/// How many security events the backplane keeps.
pub const SECURITY_EVENTS_KEPT: usize = 200;

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

#[async_trait]
pub trait SecurityLog: Send + Sync + 'static {
    /// Keeps `event` among the last [`SECURITY_EVENTS_KEPT`] of the cluster.
    async fn record(&self, event: SecurityEvent) -> Result<(), BackplaneError>;

    /// The newest events first, at most `limit`.
    async fn recent(&self, limit: usize) -> Result<Vec<SecurityEvent>, BackplaneError>;
}
