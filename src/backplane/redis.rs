//! The cluster backplane: presence and typing shared by every node through one Redis.
//!
//! Every multi-key change runs as a Lua script so that two nodes racing (two disconnects of one
//! user, two reapers of one dead node, two expiry sweeps) still yield exactly one winner. The
//! scripts build some key names themselves (a dead node's users, a user's typing rooms), so this
//! needs a standalone Redis (or a primary with replicas), not Redis Cluster.
//!
//! Keys used for the operations API, next to the presence and typing ones: `{p}online` (a set of
//! the users with at least one socket, kept by connect, disconnect and reaping, so counting is
//! O(1)), `{p}node:{id}:info` (a hash of the node's published load, expiring with its heartbeat)
//! and `{p}security` (a list of the newest security events as JSON, trimmed to 200).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisResult, Script};
use tokio::time::Instant;

use super::{
    Backplane, BackplaneError, Departure, ExpiredTyping, LagWindow, NodeLoad, NodeStats,
    SECURITY_EVENTS_KEPT, SecurityEvent, Typer, UserPresence,
};
use crate::domain::{RoomId, UserId};
use crate::limits::Rate;

/// How many sockets one reaping script handles, so a huge dead node never blocks Redis for long.
const REAP_BATCH: usize = 500;
/// How many expired typing states one sweep claims.
const EXPIRY_BATCH: usize = 500;
/// How many recent operation round trips the lag median is taken over.
const LAG_SAMPLES: usize = 64;
/// Security events written per second per node, after a burst of as many as are kept; a flood
/// beyond that is counted and dropped rather than turned into Redis traffic.
const SECURITY_PER_SEC: u32 = 20;
const SECURITY_BURST: u32 = super::SECURITY_EVENTS_KEPT as u32;

/// Every operation on the shared state, one function each; ARGV is prefix, operation, then the
/// operation's arguments. One script means one SHA to load and one place for the invariants.
const OPS_LUA: &str = include_str!("redis_ops.lua");

/// Presence and typing for a cluster of nodes sharing one Redis.
pub struct RedisBackplane {
    conn: ConnectionManager,
    node_id: String,
    prefix: String,
    node_timeout: Duration,
    typing_ttl: Duration,
    rebroadcast: Duration,
    ready: AtomicBool,
    /// Set when this node's presence in Redis may differ from its sockets (a write failed, or
    /// the node was reaped while alive); the upkeep then resynchronises.
    resync_needed: AtomicBool,
    /// Departures found while cleaning up after a previous process with this node id; handed
    /// out by the first `maintain`, when the app is ready to announce them.
    pending: Mutex<Vec<Departure>>,
    ops: Script,
    started_at: DateTime<Utc>,
    /// Round trips of the latest operations, for the lag median.
    round_trips: Mutex<VecDeque<Duration>>,
    security_budget: Rate,
    security_dropped: AtomicU64,
    lag: LagWindow,
}

impl RedisBackplane {
    pub async fn connect(
        url: &str,
        node_id: String,
        key_prefix: String,
        node_timeout: Duration,
        typing_ttl: Duration,
        rebroadcast: Duration,
    ) -> Result<Self, BackplaneError> {
        // The URL may carry a password: never echo it or the parser's message about it.
        let client =
            redis::Client::open(url).map_err(|_| BackplaneError("invalid Redis URL".to_owned()))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(to_error)?;
        let backplane = Self {
            conn,
            node_id,
            prefix: key_prefix,
            node_timeout,
            typing_ttl,
            rebroadcast,
            ready: AtomicBool::new(true),
            resync_needed: AtomicBool::new(false),
            pending: Mutex::default(),
            ops: Script::new(OPS_LUA),
            started_at: Utc::now(),
            round_trips: Mutex::new(VecDeque::with_capacity(LAG_SAMPLES)),
            security_budget: Rate::new(SECURITY_PER_SEC, SECURITY_BURST),
            security_dropped: AtomicU64::new(0),
            lag: LagWindow::default(),
        };
        // A previous process with this id may have crashed: its sockets are gone, so forget them
        // before our heartbeat makes them look alive again.
        let stale = backplane.reap(&backplane.node_id, false).await?;
        *backplane.pending_lock() = stale;
        backplane.heartbeat().await?;
        Ok(backplane)
    }

    fn pending_lock(&self) -> std::sync::MutexGuard<'_, Vec<Departure>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Any failure marks the backplane down; only a heartbeat brings it back (see `heartbeat`).
    fn track<T>(&self, result: RedisResult<T>) -> Result<T, BackplaneError> {
        if result.is_err() {
            self.ready.store(false, Ordering::Relaxed);
        }
        result.map_err(to_error)
    }

    async fn run<T: FromRedisValue>(&self, op: &str, args: &[&str]) -> Result<T, BackplaneError> {
        let mut invocation = self.ops.prepare_invoke();
        invocation.arg(&self.prefix).arg(op);
        for arg in args {
            invocation.arg(*arg);
        }
        let started = std::time::Instant::now();
        let result = invocation.invoke_async(&mut self.conn.clone()).await;
        if result.is_ok() {
            self.note_round_trip(started.elapsed());
        }
        self.track(result)
    }

    fn note_round_trip(&self, took: Duration) {
        let mut samples = self.round_trips.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == LAG_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(took);
    }

    /// The median round trip of the latest operations, in milliseconds.
    fn round_trip_p50_ms(&self) -> Option<f64> {
        let samples = self.round_trips.lock().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<Duration> = samples.iter().copied().collect();
        drop(samples);
        sorted.sort_unstable();
        sorted
            .get(sorted.len() / 2)
            .map(|d| d.as_secs_f64() * 1000.0)
    }

    /// Refreshes this node's heartbeat; true when the node had to re-register, i.e. others
    /// presumed it dead and reaped it.
    ///
    /// Only this marks the backplane ready again after a failure: the upkeep compares readiness
    /// before and after `maintain` to re-register the local sockets once Redis is back, and a
    /// typing sweep or a stats read that happens to succeed first must not hide the outage.
    async fn heartbeat(&self) -> Result<bool, BackplaneError> {
        let ttl = self.node_timeout.as_millis().max(1).to_string();
        let args = [self.node_id.as_str(), &ttl];
        let rejoined = self.run::<i64>("heartbeat", &args).await? == 1;
        self.ready.store(true, Ordering::Relaxed);
        Ok(rejoined)
    }

    /// Forgets every socket of `node`, in batches, returning who went offline. `claimed`: a
    /// foreign node this caller claimed, as opposed to this node's own id.
    async fn reap(&self, node: &str, claimed: bool) -> Result<Vec<Departure>, BackplaneError> {
        let batch = REAP_BATCH.to_string();
        let claimed = if claimed { "1" } else { "0" };
        let mut departures = Vec::new();
        loop {
            let (done, found): (i64, Vec<Vec<String>>) =
                self.run("reap", &[node, &batch, claimed]).await?;
            departures.extend(found.into_iter().filter_map(departure));
            if done == 1 {
                return Ok(departures);
            }
        }
    }
}

fn departure(entry: Vec<String>) -> Option<Departure> {
    let mut parts = entry.into_iter();
    let user_id = UserId::parse(&parts.next()?).ok()?;
    let typing_rooms = parts.filter_map(|r| RoomId::parse(&r).ok()).collect();
    Some(Departure {
        user_id,
        typing_rooms,
    })
}

/// A node's published load, from `nodes_info`'s `node, field, value, ...`.
fn node_stats(entry: Vec<String>) -> Option<NodeStats> {
    let mut parts = entry.into_iter();
    let id = parts.next()?;
    let mut fields = std::collections::HashMap::new();
    while let (Some(field), Some(value)) = (parts.next(), parts.next()) {
        fields.insert(field, value);
    }
    let int = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
    let float = |name: &str| fields.get(name).and_then(|v| v.parse::<f64>().ok());
    let time = |name: &str| {
        int(name)
            .and_then(|ms| DateTime::from_timestamp_millis(ms as i64))
            .unwrap_or_default()
    };
    Some(NodeStats {
        connections: int("connections").unwrap_or(0),
        sockets: int("sockets").unwrap_or(0),
        rooms: int("rooms").unwrap_or(0),
        started_at: time("started_at"),
        updated_at: time("updated_at"),
        messages_stored: int("messages_stored").unwrap_or(0),
        events: int("events").unwrap_or(0),
        rate_limited: int("rate_limited").unwrap_or(0),
        backplane_lag_ms: float("backplane_lag_ms"),
        redis_rtt_ms: float("redis_rtt_ms"),
        id,
    })
}

fn to_error(e: redis::RedisError) -> BackplaneError {
    BackplaneError(format!("redis: {e}"))
}

/// Typing deadlines are wall-clock milliseconds: an `Instant` means nothing on another host.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[async_trait]
impl Backplane for RedisBackplane {
    async fn socket_connected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError> {
        let args = [user.as_str(), socket, &self.node_id];
        let first = self.run::<i64>("connect", &args).await;
        if first.is_err() {
            self.resync_needed.store(true, Ordering::SeqCst);
        }
        Ok(first? == 1)
    }

    async fn socket_disconnected(
        &self,
        user: &UserId,
        socket: &str,
    ) -> Result<bool, BackplaneError> {
        let args = [user.as_str(), socket, &self.node_id];
        let last = self.run::<i64>("disconnect", &args).await;
        if last.is_err() {
            self.resync_needed.store(true, Ordering::SeqCst);
        }
        Ok(last? == 1)
    }

    fn take_resync_needed(&self) -> bool {
        self.resync_needed.swap(false, Ordering::SeqCst)
    }

    async fn node_sockets(&self) -> Result<Vec<(UserId, String)>, BackplaneError> {
        let key = format!("{}node:{}:sockets", self.prefix, self.node_id);
        let mut conn = self.conn.clone();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(to_error)?;
        Ok(members
            .iter()
            .filter_map(|m| {
                let (user, socket) = m.split_once('\n')?;
                Some((UserId::parse(user).ok()?, socket.to_owned()))
            })
            .collect())
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BackplaneError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("EXISTS")
                .arg(format!("{}user:{user}", self.prefix));
        }
        self.track(pipe.query_async(&mut self.conn.clone()).await)
    }

    async fn typing_start(
        &self,
        room: RoomId,
        typer: Typer,
        _now: Instant,
    ) -> Result<bool, BackplaneError> {
        let now = now_ms();
        let args = [
            &room.to_string(),
            typer.user_id.as_str(),
            &typer.name,
            &now.to_string(),
            &(now + self.typing_ttl.as_millis() as u64).to_string(),
            &self.rebroadcast.as_millis().max(1).to_string(),
        ];
        Ok(self.run::<i64>("typing_start", &args).await? == 1)
    }

    async fn typing_stop(&self, room: RoomId, user: &UserId) -> Result<bool, BackplaneError> {
        let args = [&room.to_string(), user.as_str()];
        Ok(self.run::<i64>("typing_stop", &args).await? == 1)
    }

    async fn typing_stop_all(&self, user: &UserId) -> Result<Vec<RoomId>, BackplaneError> {
        let rooms: Vec<String> = self.run("stop_all", &[user.as_str()]).await?;
        Ok(rooms.iter().filter_map(|r| RoomId::parse(r).ok()).collect())
    }

    async fn typers(&self, room: RoomId, _now: Instant) -> Result<Vec<Typer>, BackplaneError> {
        let args: [&str; 2] = [&room.to_string(), &now_ms().to_string()];
        let flat: Vec<String> = self.run("typers", &args).await?;
        let mut typers: Vec<Typer> = flat
            .chunks_exact(2)
            .filter_map(|pair| {
                let user_id = UserId::parse(&pair[0]).ok()?;
                let name = pair[1].clone();
                Some(Typer { user_id, name })
            })
            .collect();
        typers.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(typers)
    }

    async fn take_expired_typing(
        &self,
        _now: Instant,
    ) -> Result<Vec<ExpiredTyping>, BackplaneError> {
        let args: [&str; 2] = [&now_ms().to_string(), &EXPIRY_BATCH.to_string()];
        let claimed: Vec<String> = self.run("take_expired", &args).await?;
        Ok(claimed
            .iter()
            .filter_map(|m| {
                let (room, user) = m.split_once('\n')?;
                let room = RoomId::parse(room).ok()?;
                let user_id = UserId::parse(user).ok()?;
                Some(ExpiredTyping { room, user_id })
            })
            .collect())
    }

    async fn maintain(&self) -> Result<Vec<Departure>, BackplaneError> {
        if self.heartbeat().await? {
            tracing::warn!(
                node = %self.node_id,
                "this node was presumed dead and reaped; registering its sockets again"
            );
            self.resync_needed.store(true, Ordering::SeqCst);
        }
        let mut departures = std::mem::take(&mut *self.pending_lock());
        let dead: Vec<String> = self.run("claim_dead", &[&self.node_id]).await?;
        for node in dead {
            tracing::info!(node = %node, "reaping the sockets of a node without heartbeat");
            departures.extend(self.reap(&node, true).await?);
        }
        Ok(departures)
    }

    async fn leave_cluster(&self) -> Result<Vec<Departure>, BackplaneError> {
        let mut departures = std::mem::take(&mut *self.pending_lock());
        departures.extend(self.reap(&self.node_id, false).await?);
        self.run::<i64>("leave", &[&self.node_id]).await?;
        Ok(departures)
    }

    async fn publish_node_stats(&self, load: NodeLoad) -> Result<(), BackplaneError> {
        let lag = self.lag.observe(load.lag_buckets);
        let rtt = self.round_trip_p50_ms();
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        let ttl = self.node_timeout.as_millis().max(1).to_string();
        let fields = [
            ("connections", load.connections.to_string()),
            ("sockets", load.sockets.to_string()),
            ("rooms", load.rooms.to_string()),
            ("started_at", self.started_at.timestamp_millis().to_string()),
            ("updated_at", now_ms().to_string()),
            ("messages_stored", load.messages_stored.to_string()),
            ("events", load.events.to_string()),
            ("rate_limited", load.rate_limited.to_string()),
            ("backplane_lag_ms", ms(lag)),
            ("redis_rtt_ms", ms(rtt)),
        ];
        let mut args: Vec<&str> = vec![&self.node_id, &ttl];
        for (field, value) in &fields {
            args.push(field);
            args.push(value);
        }
        self.run::<i64>("publish_stats", &args).await?;
        Ok(())
    }

    async fn cluster_nodes(&self) -> Result<Vec<NodeStats>, BackplaneError> {
        let found: Vec<Vec<String>> = self.run("nodes_info", &[]).await?;
        let mut nodes: Vec<NodeStats> = found.into_iter().filter_map(node_stats).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn users_online(&self) -> Result<u64, BackplaneError> {
        let mut cmd = redis::cmd("SCARD");
        cmd.arg(format!("{}online", self.prefix));
        self.track(cmd.query_async(&mut self.conn.clone()).await)
    }

    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, BackplaneError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(format!("{}user:{user}", self.prefix));
        let sockets: std::collections::HashMap<String, String> =
            self.track(cmd.query_async(&mut self.conn.clone()).await)?;
        let mut nodes: Vec<String> = sockets.values().cloned().collect();
        nodes.sort();
        nodes.dedup();
        Ok(UserPresence {
            online: !sockets.is_empty(),
            sockets: sockets.len() as u64,
            nodes,
        })
    }

    async fn record_security_event(&self, event: SecurityEvent) -> Result<(), BackplaneError> {
        if !self.security_budget.allow() {
            let dropped = self.security_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "security events over budget; not all are kept");
            }
            return Ok(());
        }
        let json = serde_json::to_string(&event)
            .map_err(|e| BackplaneError(format!("security event not encoded: {e}")))?;
        let key = format!("{}security", self.prefix);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LPUSH")
            .arg(&key)
            .arg(json)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(SECURITY_EVENTS_KEPT - 1)
            .ignore();
        self.track(pipe.query_async::<()>(&mut self.conn.clone()).await)
    }

    async fn recent_security_events(
        &self,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, BackplaneError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(format!("{}security", self.prefix))
            .arg(0)
            .arg(limit.min(SECURITY_EVENTS_KEPT) - 1);
        let raw: Vec<String> = self.track(cmd.query_async(&mut self.conn.clone()).await)?;
        Ok(raw
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn describe(&self) -> &'static str {
        "redis"
    }
}
