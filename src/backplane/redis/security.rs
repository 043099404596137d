//! The security log in Redis: a list of the newest events as JSON, trimmed to the number kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::Core;
use crate::backplane::{BackplaneError, SECURITY_EVENTS_KEPT, SecurityEvent, SecurityLog};
use crate::limits::Rate;

/// Events written per second per node, after a burst of as many as are kept; a flood beyond
/// that is counted and dropped rather than turned into Redis traffic.
const WRITES_PER_SEC: u32 = 20;
const WRITE_BURST: u32 = SECURITY_EVENTS_KEPT as u32;

pub(super) struct RedisSecurityLog {
    core: Arc<Core>,
    budget: Rate,
    dropped: AtomicU64,
}

impl RedisSecurityLog {
    pub(super) fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            budget: Rate::new(WRITES_PER_SEC, WRITE_BURST),
            dropped: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl SecurityLog for RedisSecurityLog {
    async fn record(&self, event: SecurityEvent) -> Result<(), BackplaneError> {
        if !self.budget.allow() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "security events over budget; not all are kept");
            }
            return Ok(());
        }
        let json = serde_json::to_string(&event)
            .map_err(|e| BackplaneError::Unexpected(format!("security event not encoded: {e}")))?;
        let kept = (SECURITY_EVENTS_KEPT - 1).to_string();
        self.core
            .run::<i64>("record_security", &[&json, &kept])
            .await?;
        Ok(())
    }

    async fn recent(&self, limit: usize) -> Result<Vec<SecurityEvent>, BackplaneError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.core.key("security"))
            .arg(0)
            .arg(limit.min(SECURITY_EVENTS_KEPT) - 1);
        let raw: Vec<String> = self.core.query("recent_security", &cmd).await?;
        Ok(raw
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }
}
