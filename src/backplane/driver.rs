//! A socketioxide-redis driver that survives Redis restarts.
//!
//! The stock driver subscribes on one multiplexed connection that never resubscribes, and its
//! publish errors make the adapter fail even the local part of a broadcast. Here a background
//! task owns a dedicated pub/sub connection and rebuilds it (resubscribing every channel) for as
//! long as the driver lives, and a failed publish is counted and swallowed: the other nodes'
//! clients recover what they missed through `message:history`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};

/// Marks a payload wrapped with a trace context; socketioxide-redis payloads are msgpack and
/// never start with these bytes.
const MAGIC: &[u8; 3] = b"CF1";
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A half-open TCP connection never ends the stream, so the subscriber pings to notice.
const PING_EVERY: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Returns the trace context to send with a message (e.g. a W3C `traceparent`).
pub type ContextProvider = Arc<dyn Fn() -> Option<String> + Send + Sync>;
/// Receives `(channel, context, payload)` of an arriving message, before the adapter delivers it.
pub type ContextSink = Arc<dyn Fn(&str, &str, &[u8]) + Send + Sync>;

enum Command {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

/// State shared by every clone and the subscriber task.
#[derive(Default)]
struct Shared {
    handlers: RwLock<HashMap<String, mpsc::Sender<ChanItem>>>,
    subscribed: AtomicBool,
    publish_ok: AtomicBool,
    dropped: AtomicU64,
    last_warn: Mutex<Option<Instant>>,
    provider: RwLock<Option<ContextProvider>>,
    sink: RwLock<Option<ContextSink>>,
}

/// Pub/sub between nodes that reconnects and resubscribes by itself.
///
/// The subscriber task ends once every clone is dropped (the command channel closes).
#[derive(Clone)]
pub struct ReconnectingDriver {
    shared: Arc<Shared>,
    conn: ConnectionManager,
    commands: mpsc::UnboundedSender<Command>,
}

impl ReconnectingDriver {
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        // Few retries per attempt: a publish waits on a reconnect in progress, and an emit
        // must not stall for long while Redis is away.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let shared = Arc::new(Shared::default());
        shared.publish_ok.store(true, Ordering::Relaxed);
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(subscriber(client, conn.clone(), shared.clone(), rx));
        Ok(Self {
            shared,
            conn,
            commands,
        })
    }

    /// True when the subscriber connection is up with every channel subscribed and the
    /// publishing connection works.
    pub fn is_healthy(&self) -> bool {
        self.shared.subscribed.load(Ordering::Relaxed)
            && self.shared.publish_ok.load(Ordering::Relaxed)
    }

    /// Messages that could not be published to the other nodes.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Supplies the trace context sent along with each published message.
    pub fn set_context_provider(&self, f: ContextProvider) {
        *self
            .shared
            .provider
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Receives `(channel, context, payload)` for each message that arrives with a context.
    pub fn set_context_sink(&self, f: ContextSink) {
        *self.shared.sink.write().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    fn wrap(&self, val: Vec<u8>) -> Vec<u8> {
        let provider = self
            .shared
            .provider
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
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
        self.shared.publish_ok.store(false, Ordering::Relaxed);
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
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&chan).arg(wrapped);
        // Emits await this: with Redis unreachable, give up quickly and deliver locally.
        let sent = timeout(PUBLISH_TIMEOUT, cmd.query_async::<i64>(&mut conn))
            .instrument(span)
            .await;
        match sent {
            Ok(Ok(_)) => self.shared.publish_ok.store(true, Ordering::Relaxed),
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
        // The map is registered first: a reconnect in between then subscribes it anyway.
        self.shared
            .handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(chan.clone(), tx);
        let (ack, acked) = oneshot::channel();
        if self
            .commands
            .send(Command::Subscribe(chan.clone(), ack))
            .is_ok()
            && timeout(IO_TIMEOUT, acked).await.is_err()
        {
            tracing::warn!(chan, "backplane subscription pending until Redis is back");
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Infallible> {
        self.shared
            .handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&chan);
        let _ = self.commands.send(Command::Unsubscribe(chan));
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Infallible> {
        let count: redis::RedisResult<(String, u16)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut self.conn.clone())
            .await;
        // This node is always one of the servers, even while its subscription is down.
        Ok(count.map_or(1, |(_, n)| n.max(1)))
    }
}

/// Owns the pub/sub connection: (re)connects with backoff, resubscribes, delivers messages.
async fn subscriber(
    client: redis::Client,
    mut conn: ConnectionManager,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect_subscribed(&client, &shared).await {
            Ok((mut sink, mut stream)) => {
                backoff = BACKOFF_MIN;
                shared.subscribed.store(true, Ordering::Relaxed);
                tracing::info!("backplane subscriber connected");
                let closed = serve(&mut sink, &mut stream, &mut conn, &shared, &mut commands).await;
                shared.subscribed.store(false, Ordering::Relaxed);
                if closed {
                    return;
                }
                tracing::warn!("backplane subscriber lost its connection; reconnecting");
            }
            Err(e) => tracing::debug!(error = %e, "backplane subscriber cannot connect yet"),
        }
        // Subscriptions asked for meanwhile are already in the map; their waiters are released.
        let wake = Instant::now() + backoff;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => break,
                cmd = commands.recv() => if cmd.is_none() { return },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connect_subscribed(
    client: &redis::Client,
    shared: &Shared,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let timed_out = || redis::RedisError::from((redis::ErrorKind::Io, "timed out"));
    let pubsub = timeout(IO_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| timed_out())??;
    let (mut sink, stream) = pubsub.split();
    let channels: Vec<String> = shared
        .handlers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    if !channels.is_empty() {
        timeout(IO_TIMEOUT, sink.subscribe(&channels))
            .await
            .map_err(|_| timed_out())??;
    }
    Ok((sink, stream))
}

/// Runs until the connection fails (false) or every driver clone is gone (true).
async fn serve(
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
    conn: &mut ConnectionManager,
    shared: &Shared,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> bool {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => return true,
                Some(Command::Subscribe(chan, ack)) => {
                    if !matches!(timeout(IO_TIMEOUT, sink.subscribe(&chan)).await, Ok(Ok(()))) {
                        return false;
                    }
                    let _ = ack.send(());
                }
                Some(Command::Unsubscribe(chan)) => {
                    if !matches!(timeout(IO_TIMEOUT, sink.unsubscribe(&chan)).await, Ok(Ok(()))) {
                        return false;
                    }
                }
            },
            msg = stream.next() => match msg {
                Some(msg) => deliver(shared, msg.get_channel_name(), msg.get_payload_bytes()),
                None => return false,
            },
            _ = ping.tick() => {
                let pong: Result<redis::RedisResult<redis::Value>, _> =
                    timeout(IO_TIMEOUT, sink.ping()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return false;
                }
                // A quiet node must still notice that publishing works again.
                if !shared.publish_ok.load(Ordering::Relaxed) {
                    let probe: redis::RedisResult<String> =
                        redis::cmd("PING").query_async(conn).await;
                    shared.publish_ok.store(probe.is_ok(), Ordering::Relaxed);
                }
            }
        }
    }
}

fn deliver(shared: &Shared, chan: &str, data: &[u8]) {
    let payload = match unwrap_envelope(data) {
        Some((context, payload)) => {
            if !context.is_empty() {
                let sink = shared
                    .sink
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if let Some(sink) = sink {
                    sink(chan, context, payload);
                }
            }
            payload
        }
        None => data,
    };
    let handlers = shared.handlers.read().unwrap_or_else(|p| p.into_inner());
    match handlers.get(chan) {
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
