//! The cluster backplane: every part shares one Redis connection and one Lua script.
//!
//! Every multi-key change runs as a function of `ops.lua` so that two nodes racing (two
//! disconnects of one user, two reapers of one dead node, two expiry sweeps) still yield exactly
//! one winner. The script builds some key names itself (a dead node's users, a user's typing
//! rooms), so this needs a standalone Redis (or a primary with replicas), not Redis Cluster.
//!
//! Keys, under the prefix: `user:{id}` (hash socket → node), `online` (set of users with a
//! socket), `node:{id}:sockets` (set of `user\nsocket`), `nodes` (registered nodes), `beats`
//! (sorted set node → last heartbeat, in Redis server milliseconds), `reaping` (sorted set of
//! claimed dead nodes → claim deadline), `node:{id}:info` (published load), `typing:*` and
//! `typing-*` (see the typing functions) and `security` (newest security events as JSON).
//!
//! The connection is made lazily: a node starts while Redis is unreachable, and every call
//! fails fast until it is back. Every call is a span (a child of the client event that made it;
//! debug level for the background upkeep) and a failure is counted in `confab_redis_errors_total`.

mod loads;
mod membership;
mod presence;
mod presence_batch;
mod security;
mod typing;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script};
use tracing::Instrument;

use super::{Backplane, BackplaneError, Liveness};
use crate::metrics::{Metrics, OpLabel};

/// How many recent round trips the latency median is taken over.
const RTT_SAMPLES: usize = 64;
/// Operations of the background upkeep: their spans are debug-level, so traces stay readable.
const QUIET: &[&str] = &[
    "heartbeat",
    "claim_dead",
    "reap",
    "take_expired",
    "publish_stats",
    "node_sockets",
    "record_security",
];

/// What a Redis backplane needs to know.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://…`; may hold a password, so it is never logged.
    pub url: String,
    pub node_id: String,
    /// Prefix of every key, e.g. `confab:`.
    pub prefix: String,
    pub node_timeout: Duration,
    pub typing_ttl: Duration,
    pub typing_rebroadcast: Duration,
}

pub(super) fn backplane(
    options: RedisOptions,
    metrics: Arc<Metrics>,
) -> Result<Backplane, BackplaneError> {
    let client = redis::Client::open(options.url.as_str())
        .map_err(|_| BackplaneError::Config("invalid Redis URL"))?;
    // Calls fail within about two seconds while Redis is away; the upkeep retries anyway.
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    let conn = ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|_| BackplaneError::Config("invalid Redis connection settings"))?;
    let core = Arc::new(Core {
        conn,
        node_id: options.node_id,
        prefix: options.prefix,
        script: Script::new(include_str!("ops.lua")),
        metrics,
        round_trips: Mutex::new(VecDeque::with_capacity(RTT_SAMPLES)),
        joined: AtomicBool::new(false),
        resync_needed: AtomicBool::new(false),
    });
    let liveness = Liveness::for_timeout(options.node_timeout);
    Ok(Backplane {
        presence: Arc::new(presence::RedisPresence::new(core.clone())),
        typing: Arc::new(typing::RedisTyping::new(
            core.clone(),
            options.typing_ttl,
            options.typing_rebroadcast,
        )),
        membership: Arc::new(membership::RedisMembership::new(core.clone(), liveness)),
        loads: Arc::new(loads::RedisLoads::new(core.clone(), options.node_timeout)),
        security: Arc::new(security::RedisSecurityLog::new(core)),
    })
}

/// What every part shares.
struct Core {
    conn: ConnectionManager,
    node_id: String,
    prefix: String,
    /// `ops.lua`: one SHA to load, one place for the invariants.
    script: Script,
    metrics: Arc<Metrics>,
    round_trips: Mutex<VecDeque<Duration>>,
    /// Set once the first heartbeat cleared a previous process's entries: until then this
    /// node's presence is not written (the clean-up would remove it again).
    joined: AtomicBool,
    /// This node's presence in Redis may differ from its sockets (a write failed, Redis came
    /// back, or the node was presumed dead): the upkeep resynchronises.
    resync_needed: AtomicBool,
}

impl Core {
    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Runs function `op` of `ops.lua` with `args`.
    async fn run<T: FromRedisValue>(
        &self,
        op: &'static str,
        args: &[&str],
    ) -> Result<T, BackplaneError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(&self.prefix).arg(op);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn.clone();
        self.observe(op, async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Sends one plain command (reads that need no script).
    async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, BackplaneError> {
        let mut conn = self.conn.clone();
        self.observe(op, async move { cmd.query_async(&mut conn).await })
            .await
    }

    async fn observe<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BackplaneError> {
        let span = if QUIET.contains(&op) {
            tracing::debug_span!(
                "redis",
                otel.name = format!("redis.{op}"),
                db.operation = op
            )
        } else {
            tracing::info_span!(
                "redis",
                otel.name = format!("redis.{op}"),
                otel.kind = "client",
                db.system = "redis",
                db.operation = op,
            )
        };
        let started = std::time::Instant::now();
        match call.instrument(span).await {
            Ok(value) => {
                self.note_round_trip(started.elapsed());
                Ok(value)
            }
            Err(e) => {
                let label = OpLabel { op: op.to_owned() };
                self.metrics.redis_errors.get_or_create(&label).inc();
                Err(e.into())
            }
        }
    }

    fn note_round_trip(&self, took: Duration) {
        let mut samples = self.round_trips.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == RTT_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(took);
    }

    /// The median round trip of the latest operations, in milliseconds.
    fn round_trip_p50_ms(&self) -> Option<f64> {
        let mut sorted: Vec<Duration> = self
            .round_trips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        sorted.sort_unstable();
        sorted
            .get(sorted.len() / 2)
            .map(|d| d.as_secs_f64() * 1000.0)
    }

    fn joined(&self) -> bool {
        self.joined.load(Ordering::SeqCst)
    }

    fn need_resync(&self) {
        self.resync_needed.store(true, Ordering::SeqCst);
    }
}

/// Wall-clock milliseconds, for typing deadlines and published times: an `Instant` means nothing
/// on another host. (Node liveness uses Redis's own clock instead; see `membership.rs`.)
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
