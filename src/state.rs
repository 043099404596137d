//! The one clonable context of handles shared by HTTP routes and Socket.IO handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::auth::TokenKeys;
use crate::backplane::{Backplane, BackplaneDriver};
use crate::config::Settings;
use crate::limits::{AdmissionGate, ConnectionLimiter};
use crate::metrics::Metrics;
use crate::socket::Origin;
use crate::storage::{SeenRecorder, Store, WriteQueue};

#[derive(Clone)]
pub struct AppState {
    /// Validated settings, including every limit.
    pub settings: Arc<Settings>,
    /// Durable storage (Postgres or SQLite).
    pub store: Arc<dyn Store>,
    /// The message write path: group commit in front of `store`.
    pub writes: WriteQueue<Origin>,
    /// Users seen connecting, recorded in batches off the connect path.
    pub seen: SeenRecorder,
    /// Presence, typing, membership, node loads and security events (in-process or
    /// cluster-wide).
    pub backplane: Backplane,
    /// Where the Socket.IO adapter publishes emits for other nodes.
    pub driver: BackplaneDriver,
    /// Verifies client tokens and issues dev tokens.
    pub tokens: Arc<TokenKeys>,
    /// This node's metrics registry.
    pub metrics: Arc<Metrics>,
    /// Connection slots of this node.
    pub connections: ConnectionLimiter,
    /// Connections waiting on storage during admission.
    pub admissions: AdmissionGate,
    /// Draining flag and in-flight work, for an orderly shutdown.
    pub lifecycle: Lifecycle,
    /// Webhooks and forwarded calls, when configured.
    pub hooks: crate::hooks::Hooks,
}

/// Tracks whether the node is draining and which client events are still being handled.
#[derive(Clone, Default)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    in_flight: TaskTracker,
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Held by a handler while it works, so shutdown can wait for its ack.
    pub fn track(&self) -> TaskTrackerToken {
        self.in_flight.token()
    }

    /// Waits until no handler holds a token.
    pub async fn wait_idle(&self) {
        self.in_flight.close();
        self.in_flight.wait().await;
        self.in_flight.reopen();
    }
}
