//! Users' names and last-seen times, recorded off the connect path.
//!
//! A connect only notes the user here (a map insert); a background task writes what gathered
//! with one statement, as soon as it can (the way the message writer commits): one user alone is
//! written within a round trip, and while a write is in flight the next users gather for the
//! next one. A reconnect storm of N sockets becomes a few writes of up to [`MAX_PER_WRITE`]
//! users each, not N writes, and no handshake waits for storage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{SeenUser, Store};
use crate::auth::Identity;
use crate::domain::{DisplayName, UserId};

/// Pause after a failed write, so that an absent database is not asked in a loop.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Most users written by one statement; more wait for the next round.
const MAX_PER_WRITE: usize = 2000;

/// Users noted since the last write: their newest name and when they were seen.
type Noted = HashMap<UserId, (DisplayName, chrono::DateTime<chrono::Utc>)>;

/// Gathers users seen connecting; cheap to clone.
#[derive(Clone)]
pub struct SeenRecorder {
    pending: Arc<Mutex<Noted>>,
    /// Wakes the writer task when a user is noted.
    noted: Arc<Notify>,
    /// Users held at most; beyond, new ones are dropped until the next write (their rows are
    /// written on their next connect; nothing but a last-seen time is lost).
    capacity: usize,
}

impl SeenRecorder {
    pub fn new(capacity: usize) -> Self {
        Self {
            pending: Arc::default(),
            noted: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// Notes a user seen now. Never blocks on storage.
    pub fn saw(&self, identity: &Identity) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= self.capacity && !pending.contains_key(&identity.user_id) {
            return;
        }
        pending.insert(
            identity.user_id.clone(),
            (identity.name.clone(), chrono::Utc::now()),
        );
        drop(pending);
        self.noted.notify_one();
    }

    fn take(&self) -> Vec<SeenUser> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<UserId> = pending.keys().take(MAX_PER_WRITE).cloned().collect();
        let users = keys
            .into_iter()
            .filter_map(|user| {
                let (name, at) = pending.remove(&user)?;
                Some(SeenUser { user, name, at })
            })
            .collect();
        // A connect storm grows the map to thousands of users; once written, its table would
        // otherwise stay allocated (and pin heap pages) after the storm.
        crate::memory::shrink_when_sparse(&mut pending);
        users
    }

    /// Writes everything gathered, in rounds of at most [`MAX_PER_WRITE`]; false when a write
    /// failed (what it held is kept for later, room permitting).
    pub async fn flush(&self, store: &dyn Store) -> bool {
        loop {
            let users = self.take();
            if users.is_empty() {
                return true;
            }
            if let Err(e) = store.record_seen(&users).await {
                // Only names and last-seen times: kept for the next round if there is room.
                tracing::warn!(error = %e, users = users.len(), "last-seen times not recorded");
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                for user in users {
                    if pending.len() < self.capacity {
                        pending.entry(user.user).or_insert((user.name, user.at));
                    }
                }
                return false;
            }
        }
    }

    /// Background task: writes whatever was noted, as it is noted, until `stop`; then once more.
    pub async fn run(self, store: Arc<dyn Store>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.noted.notified() => {}
            }
            if !self.flush(store.as_ref()).await {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(RETRY_AFTER) => self.noted.notify_one(),
                }
            }
        }
        self.flush(store.as_ref()).await;
    }
}
