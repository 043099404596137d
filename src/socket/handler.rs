//! The frame every client event runs in: identity, a span, metrics, shutdown tracking, and
//! exactly one reply (an ack, or an `error` event when the client gave no ack callback).

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::backplane::SocketIo;
use crate::backplane::{Adapter, SocketRef};
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Event, State, TryData};
use socketioxide::handler::FromMessageParts;
use socketioxide::handler::Value as RawValue;
use socketioxide::socket::Socket;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{Instrument, field};

use crate::auth::Identity;
use crate::error::ChatError;
use crate::limits::{ConnectionSlot, Rate};
use crate::state::AppState;

/// What a socket carries from connect to disconnect (in its extensions).
pub struct Session {
    pub identity: Identity,
    /// The client's address, for security events.
    pub peer: Option<IpAddr>,
    /// `message:send` budget.
    pub send_rate: Rate,
    /// `typing:start`/`typing:stop` budget.
    pub typing_rate: Rate,
    /// `rpc:call` budget.
    pub rpc_rate: Rate,
    /// Held until the socket is gone, so the node's connection count stays exact.
    pub _slot: ConnectionSlot,
    /// Counts the socket in `confab_sockets` for exactly as long as the session lives, however
    /// the socket ends (even between admission and the connect handler).
    pub _counted: Counted,
}

/// One socket in the `confab_sockets` gauge, from creation to drop.
pub struct Counted(prometheus_client::metrics::gauge::Gauge);

impl Counted {
    pub fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Everything a handler needs.
pub struct Ctx {
    pub app: AppState,
    pub io: SocketIo,
    pub socket: SocketRef,
    pub session: Arc<Session>,
}

impl Ctx {
    pub fn user(&self) -> &Identity {
        &self.session.identity
    }
}

pub type Outcome = Result<Value, ChatError>;

/// The reply channel of one event: the ack when the client asked for one.
pub struct Reply {
    ack: AckSender<Adapter>,
    wants_ack: bool,
    socket: SocketRef,
}

impl FromMessageParts<Adapter> for Reply {
    type Error = Infallible;

    fn from_message_parts(
        socket: &Arc<Socket<Adapter>>,
        value: &mut RawValue,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(Reply {
            ack: AckSender::from_message_parts(socket, value, ack_id)?,
            wants_ack: ack_id.is_some(),
            socket: SocketRef::from_message_parts(socket, value, ack_id)?,
        })
    }
}

impl Reply {
    fn send(self, event: &str, outcome: &Outcome) {
        let sent = match (outcome, self.wants_ack) {
            (Ok(body), true) => self.ack.send(body),
            (Err(error), true) => self.ack.send(&error.to_reply()),
            (Ok(_), false) => Ok(()),
            (Err(error), false) => self.socket.emit(
                "error",
                &json!({ "event": event, "code": error.code(), "message": error.to_string() }),
            ),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "reply not delivered (socket closing)");
        }
    }
}

/// Serves every client event of `socket` with one handler: `handler` gets the events named in
/// `events` and anything else is answered `bad_request`. One fallback rather than a handler per
/// event: socketioxide keeps per-event handlers in a map of boxed closures on every socket,
/// about 1 KB of each idle socket for 13 events.
///
/// `handler` answers through the [`Responder`] it is given, now or later (`message:send` hands it
/// to the write path, which answers from the task that committed the message).
pub fn serve<F, Fut>(socket: &SocketRef, events: &'static [&'static str], handler: F)
where
    F: Fn(&'static str, Ctx, Value, Responder) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    socket.on_fallback(
        move |socket: SocketRef,
              io: SocketIo,
              State(app): State<AppState>,
              reply: Reply,
              Event(name): Event,
              TryData(data): TryData<Value>| {
            let handler = handler.clone();
            async move {
                let Some(event) = events.iter().copied().find(|e| *e == name) else {
                    // Metrics label all unknown events alike (bounded cardinality); the
                    // client's `error` event names what it sent.
                    let sent_as = Cow::Owned(name);
                    return run(
                        "unknown",
                        sent_as,
                        socket,
                        io,
                        app,
                        reply,
                        |_, responder| async {
                            responder.finish(Err(ChatError::bad_request("unknown event")))
                        },
                    )
                    .await;
                };
                let payload = data.unwrap_or(Value::Null);
                let sent_as = Cow::Borrowed(event);
                run(
                    event,
                    sent_as,
                    socket,
                    io,
                    app,
                    reply,
                    move |ctx, responder| handler(event, ctx, payload, responder),
                )
                .await;
            }
        },
    );
}

async fn run<F, Fut>(
    event: &'static str,
    sent_as: Cow<'static, str>,
    socket: SocketRef,
    io: SocketIo,
    app: AppState,
    reply: Reply,
    body: F,
) where
    F: FnOnce(Ctx, Responder) -> Fut,
    Fut: Future<Output = ()>,
{
    let in_flight = app.lifecycle.track();
    let Some(session) = socket.extensions.get::<Arc<Session>>() else {
        return;
    };
    let span = tracing::info_span!(
        "event",
        otel.name = event,
        otel.kind = "server",
        event,
        user = %session.identity.user_id,
        node = %app.settings.node_id,
        room = field::Empty,
        outcome = field::Empty,
        trace_id = field::Empty,
    );
    if let Some(trace_id) = crate::telemetry::trace_id(&span) {
        span.record("trace_id", trace_id);
    }
    let responder = Responder {
        answer: Some(Answer {
            event,
            sent_as,
            started: Instant::now(),
            span: span.clone(),
            app: app.clone(),
            session: session.clone(),
            reply,
            _in_flight: in_flight,
        }),
    };
    let ctx = Ctx {
        app,
        io,
        socket,
        session,
    };
    body(ctx, responder).instrument(span).await;
}

/// Answers one event exactly once: records its outcome (span, log, metrics, security events)
/// and replies. Dropped unanswered (a handler that gave up, a write path that stopped), it
/// answers `unavailable`, as a send the write path never took.
pub struct Responder {
    answer: Option<Answer>,
}

struct Answer {
    event: &'static str,
    sent_as: Cow<'static, str>,
    started: Instant,
    span: tracing::Span,
    app: AppState,
    session: Arc<Session>,
    reply: Reply,
    /// Shutdown waits for events that are not answered yet.
    _in_flight: TaskTrackerToken,
}

impl Responder {
    pub fn finish(mut self, outcome: Outcome) {
        if let Some(answer) = self.answer.take() {
            answer.finish(outcome);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            answer.finish(Err(crate::storage::StorageError::Overloaded.into()));
        }
    }
}

impl Answer {
    fn finish(self, outcome: Outcome) {
        let Answer {
            event,
            span,
            app,
            session,
            ..
        } = &self;
        let code = match &outcome {
            Ok(_) => "ok",
            Err(error) => error.code(),
        };
        span.record("outcome", code);
        match &outcome {
            Err(error @ (ChatError::Internal(_) | ChatError::Unavailable(_))) => {
                let cause = error.cause().map(|c| format!("{c:#}")).unwrap_or_default();
                span.in_scope(|| tracing::error!(code, cause, "event failed"));
            }
            Err(ChatError::Forbidden(_)) => {
                span.in_scope(|| tracing::warn!(code, "forbidden attempt"))
            }
            Err(ChatError::RateLimited) => span.in_scope(|| tracing::warn!(code, "rate limit hit")),
            _ => span.in_scope(|| tracing::debug!(code, "event handled")),
        }
        app.metrics
            .event(event, code, self.started.elapsed().as_secs_f64());
        super::security::after_event(app, session, event, &outcome);
        self.reply.send(&self.sent_as, &outcome);
    }
}
