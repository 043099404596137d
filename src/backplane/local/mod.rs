//! The in-process backplane of a single node: exact for one node, wrong for two.

mod loads;
mod presence;
mod security;
mod typing;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{Backplane, BackplaneError, Beat, Departure, Membership};
use crate::domain::UserId;

pub(super) fn backplane(node_id: String, typing_ttl: Duration, rebroadcast: Duration) -> Backplane {
    Backplane {
        presence: Arc::new(presence::LocalPresence::new(node_id.clone())),
        typing: Arc::new(typing::LocalTyping::new(typing_ttl, rebroadcast)),
        membership: Arc::new(Alone),
        loads: Arc::new(loads::LocalLoads::new(node_id)),
        security: Arc::new(security::LocalSecurityLog::default()),
    }
}

/// A panic while holding one of these locks cannot leave the state half-updated in a way that
/// matters more than losing it entirely, so the guard is recovered.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A single node is the whole cluster: nobody to beat for, nobody to reap.
struct Alone;

#[async_trait]
impl Membership for Alone {
    async fn heartbeat(&self) -> Result<Beat, BackplaneError> {
        Ok(Beat::Steady)
    }

    async fn sweep(&self) -> Result<Vec<Departure>, BackplaneError> {
        Ok(Vec::new())
    }

    fn take_resync_needed(&self) -> bool {
        false
    }

    fn request_resync(&self) {}

    async fn node_sockets(&self) -> Result<Vec<(UserId, String)>, BackplaneError> {
        Ok(Vec::new())
    }

    async fn leave(&self) -> Result<Vec<Departure>, BackplaneError> {
        Ok(Vec::new())
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn describe(&self) -> &'static str {
        "in-process (single node)"
    }
}
