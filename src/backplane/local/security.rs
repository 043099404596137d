//! The single node's recent security events.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::backplane::{BackplaneError, SECURITY_EVENTS_KEPT, SecurityEvent, SecurityLog};

/// The newest events, newest first.
#[derive(Default)]
pub(super) struct LocalSecurityLog(Mutex<VecDeque<SecurityEvent>>);

#[async_trait]
impl SecurityLog for LocalSecurityLog {
    async fn record(&self, event: SecurityEvent) -> Result<(), BackplaneError> {
        let mut events = lock(&self.0);
        events.push_front(event);
        events.truncate(SECURITY_EVENTS_KEPT);
        Ok(())
    }

    async fn recent(&self, limit: usize) -> Result<Vec<SecurityEvent>, BackplaneError> {
        Ok(lock(&self.0).iter().take(limit).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::SecurityKind;

    #[tokio::test]
    async fn only_the_newest_events_are_kept() {
        let log = LocalSecurityLog::default();
        for i in 0..(SECURITY_EVENTS_KEPT + 5) {
            let event = SecurityEvent {
                at: chrono::Utc::now(),
                node: "solo".to_owned(),
                kind: SecurityKind::RateLimited,
                user: Some(format!("u{i}")),
                peer: None,
                detail: None,
            };
            log.record(event).await.unwrap();
        }
        let recent = log.recent(1000).await.unwrap();
        assert_eq!(recent.len(), SECURITY_EVENTS_KEPT);
        let newest = format!("u{}", SECURITY_EVENTS_KEPT + 4);
        assert_eq!(recent[0].user.as_deref(), Some(newest.as_str()));
        assert_eq!(log.recent(3).await.unwrap().len(), 3);
    }
}
