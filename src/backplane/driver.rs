//! The socketioxide-redis driver of a cluster: pub/sub on redis-rs's `ConnectionManager`.
//!
//! The library does the reconnecting: the manager rebuilds its connection with backoff and, with
//! RESP3 push messages and automatic resubscription, subscribes again to every channel Redis had
//! confirmed before the new connection carries anything. What confab adds:
//!
//! - The envelope: every message carries a context (the publish time and the trace context, see
//!   `socket/relay.rs`) ahead of the adapter's payload.
//! - A publish that never fails: the stock driver's failed publish makes the adapter cancel even
//!   the local part of a broadcast. Here a failed publish is counted and swallowed; the other
//!   nodes' clients recover what they missed through `message:history`.
//! - A probe every 500 ms, which reports health for `/readyz`, makes an idle manager notice a
//!   dead connection (it only reconnects when a command fails), and subscribes the channels that
//!   were asked for while Redis was away (the manager only replays subscriptions Redis confirmed).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// Marks a payload wrapped with a context; socketioxide-redis payloads are msgpack and never
/// start with these bytes.
const MAGIC: &[u8; 3] = b"CF1";
const PROBE_EVERY: Duration = Duration::from_millis(500);
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Emits await the publish: with Redis unreachable, give up quickly and deliver locally.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Returns the context to send with a message (publish time, W3C `traceparent`).
pub type ContextProvider = Arc<dyn Fn() -> Option<String> + Send + Sync>;
/// Receives `(channel, context, payload)` of an arriving message, before the adapter delivers it.
pub type ContextSink = Arc<dyn Fn(&str, &str, &[u8]) + Send + Sync>;

/// State shared by every clone and the background tasks (which end when the last clone goes).
#[derive(Default)]
struct Shared {
    /// The adapter's stream of each subscribed channel.
    handlers: RwLock<HashMap<String, mpsc::Sender<ChanItem>>>,
    /// The last probe found the connection up with every channel subscribed.
    healthy: AtomicBool,
    dropped: AtomicU64,
    last_warn: Mutex<Option<Instant>>,
    provider: RwLock<Option<ContextProvider>>,
    sink: RwLock<Option<ContextSink>>,
}

/// Pub/sub between nodes that survives Redis restarts, and a node started without Redis.
#[derive(Clone)]
pub struct ReconnectingDriver {
    shared: Arc<Shared>,
    conn: ConnectionManager,
}

impl ReconnectingDriver {
    /// Sets the connection up without waiting for Redis: the probe connects when it can.
    pub fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let info = url.into_connection_info()?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))?;
        let (pushes, arrivals) = mpsc::unbounded_channel();
        // Few retries per attempt: a publish waits on a reconnect in progress.
        let config = ConnectionManagerConfig::new()
            .set_push_sender(pushes)
            .set_automatic_resubscription()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let shared = Arc::new(Shared::default());
        tokio::spawn(deliver_arrivals(Arc::downgrade(&shared), arrivals));
        tokio::spawn(probe(conn.clone(), Arc::downgrade(&shared)));
        Ok(Self { shared, conn })
    }

    /// True when the connection is up with every channel subscribed.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// Messages that could not be published to the other nodes.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Supplies the context sent along with each published message.
    pub fn set_context_provider(&self, f: ContextProvider) {
        *write(&self.shared.provider) = Some(f);
    }

    /// Receives `(channel, context, payload)` for each message that arrives with a context.
    pub fn set_context_sink(&self, f: ContextSink) {
        *write(&self.shared.sink) = Some(f);
    }

    fn wrap(&self, val: Vec<u8>) -> Vec<u8> {
        let provider = read(&self.shared.provider).clone();
        let context = provider.and_then(|f| f()).unwrap_or_default();
        // A context too long for the length field is dropped rather than the message.
        let context = if context.len() > usize::from(u16::MAX) {
            String::new()
        } else {
            context
        };
        let mut out = Vec::with_capacity(MAGIC.len() + 2 + context.len() + val.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(context.len() as u16).to_be_bytes());
        out.extend_from_slice(context.as_bytes());
        out.extend_from_slice(&val);
        out
    }

    fn publish_failed(&self, chan: &str, error: &str) {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        self.shared.healthy.store(false, Ordering::Relaxed);
        let mut last = self
            .shared
            .last_warn
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                chan,
                error,
                dropped = self.dropped(),
                "backplane publish failed; delivering locally only"
            );
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// Splits `(context, payload)` off an enveloped message; `None` when it is not one.
fn unwrap_envelope(data: &[u8]) -> Option<(&str, &[u8])> {
    let rest = data.strip_prefix(MAGIC.as_slice())?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return None;
    }
    let (context, payload) = rest.split_at(len);
    Some((std::str::from_utf8(context).ok()?, payload))
}

impl Driver for ReconnectingDriver {
    type Error = Infallible;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Infallible> {
        use tracing::Instrument;
        let span = tracing::info_span!("backplane.publish", channel = %chan, bytes = val.len());
        // The context is taken inside the publish span, so receivers become its children.
        let wrapped = span.in_scope(|| self.wrap(val));
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&chan).arg(wrapped);
        let mut conn = self.conn.clone();
        let sent = timeout(PUBLISH_TIMEOUT, cmd.query_async::<i64>(&mut conn))
            .instrument(span)
            .await;
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.publish_failed(&chan, &e.to_string()),
            Err(_) => self.publish_failed(&chan, "timed out"),
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Infallible> {
        let (tx, rx) = mpsc::channel(size.max(1));
        // Registered first: should Redis be away, the probe subscribes it once it is back.
        write(&self.shared.handlers).insert(chan.clone(), tx);
        let subscribed = timeout(IO_TIMEOUT, self.conn.clone().subscribe(&chan)).await;
        if !matches!(subscribed, Ok(Ok(()))) {
            tracing::warn!(
                chan,
                "backplane subscription pending until Redis is reachable"
            );
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Infallible> {
        write(&self.shared.handlers).remove(&chan);
        let _ = timeout(IO_TIMEOUT, self.conn.clone().unsubscribe(&chan)).await;
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Infallible> {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("NUMSUB").arg(chan);
        let mut conn = self.conn.clone();
        let count = timeout(IO_TIMEOUT, cmd.query_async::<(String, u16)>(&mut conn)).await;
        // This node is always one of the servers, even while its subscription is down.
        Ok(match count {
            Ok(Ok((_, n))) => n.max(1),
            _ => 1,
        })
    }
}

/// Checks the connection every [`PROBE_EVERY`] for as long as a driver clone lives.
async fn probe(mut conn: ConnectionManager, shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let healthy = check(&mut conn, &shared).await;
        if shared.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                tracing::info!("backplane subscriber connected");
            } else {
                tracing::warn!("backplane subscriber lost its connection; reconnecting");
            }
        }
    }
}

/// True when the connection answers and holds every channel's subscription.
async fn check(conn: &mut ConnectionManager, shared: &Shared) -> bool {
    // CLIENT INFO describes the very connection it is sent on: `sub=` counts its channels.
    let info = timeout(
        IO_TIMEOUT,
        redis::cmd("CLIENT").arg("INFO").query_async::<String>(conn),
    )
    .await;
    let Ok(Ok(info)) = info else {
        return false;
    };
    let subscribed = info
        .split_whitespace()
        .find_map(|field| field.strip_prefix("sub="))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let wanted: Vec<String> = read(&shared.handlers).keys().cloned().collect();
    if subscribed >= wanted.len() {
        return true;
    }
    // Asked for while Redis was away: never confirmed, so not the manager's to replay.
    matches!(
        timeout(IO_TIMEOUT, conn.subscribe(&wanted)).await,
        Ok(Ok(()))
    )
}

/// Hands each arriving message to its channel's stream, off the connection's own task.
async fn deliver_arrivals(shared: Weak<Shared>, mut arrivals: mpsc::UnboundedReceiver<PushInfo>) {
    while let Some(push) = arrivals.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match push.kind {
            PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(chan), Some(payload)) = (data.next(), data.next()) else {
                    continue;
                };
                let chan: Result<String, _> = redis::from_redis_value(chan);
                let payload: Result<Vec<u8>, _> = redis::from_redis_value(payload);
                if let (Ok(chan), Ok(payload)) = (chan, payload) {
                    deliver(&shared, &chan, &payload);
                }
            }
            PushKind::Disconnection => shared.healthy.store(false, Ordering::Relaxed),
            _ => {}
        }
    }
}

fn deliver(shared: &Shared, chan: &str, data: &[u8]) {
    let payload = match unwrap_envelope(data) {
        Some((context, payload)) => {
            if !context.is_empty()
                && let Some(sink) = read(&shared.sink).clone()
            {
                sink(chan, context, payload);
            }
            payload
        }
        None => data,
    };
    match read(&shared.handlers).get(chan) {
        Some(tx) => {
            if let Err(e) = tx.try_send((chan.to_owned(), payload.to_vec())) {
                tracing::warn!(chan, error = %e, "backplane message dropped: handler lagging");
            }
        }
        None => tracing::debug!(chan, "backplane message for a channel without handler"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_foreign_payloads_pass_through() {
        let mut enveloped = MAGIC.to_vec();
        enveloped.extend_from_slice(&3u16.to_be_bytes());
        enveloped.extend_from_slice(b"ctxpayload");
        assert_eq!(unwrap_envelope(&enveloped), Some(("ctx", &b"payload"[..])));
        assert_eq!(unwrap_envelope(b"\x82\xa3abc"), None);
        assert_eq!(unwrap_envelope(b"CF1\x00\x09short"), None);
    }
}
