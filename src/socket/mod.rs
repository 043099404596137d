//! The Socket.IO side: admission, the session, and the registration of every client event.
//!
//! Rooms are Socket.IO rooms: `user:{id}` holds every socket of a user and `room:{uuid}` every
//! socket of every member, so emits reach the right sockets without a map of our own.

mod delivery;
mod handler;
pub mod membership;
mod messages;
pub(crate) mod payload;
mod presence;
pub mod relay;
mod rooms;
mod rpc;
mod security;
mod typing;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::backplane::SocketIo;
use crate::backplane::SocketRef;
use axum::extract::ConnectInfo;
use serde_json::{Value, json};
use socketioxide::extract::{State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;

use crate::error::ChatError;
use crate::limits::Rate;
use crate::state::AppState;
pub use delivery::{Origin, deliver};
pub use handler::Session;
use handler::{Ctx, Responder};
pub use presence::{announce_departures, keep_cluster_presence};
pub use typing::expire_typing;

/// Why a connection was refused; the text is the client's `connect_error` message.
#[derive(Debug, thiserror::Error)]
pub enum ConnectRefusal {
    #[error("server at capacity")]
    Capacity,
    #[error("unauthorized")]
    Unauthorized,
    #[error("unavailable")]
    Draining,
    /// No turn to read storage came within `CONFAB_ADMISSION_WAIT_MS`.
    #[error("server busy")]
    Busy,
}

/// Registers the default namespace.
pub async fn register(io: &SocketIo) -> anyhow::Result<()> {
    io.ns("/", on_connect.with(admit))
        .await
        .map_err(|e| anyhow::anyhow!("adapter did not start: {e}"))
}

/// Runs before the client learns it is connected: capacity first (before the token is even
/// looked at), then the token, then the user's rooms are joined so that no event is missed.
async fn admit(
    socket: SocketRef,
    State(app): State<AppState>,
    TryData(auth): TryData<Value>,
) -> Result<(), ConnectRefusal> {
    let outcome = admit_inner(&socket, &app, auth.ok()).await;
    let label = match &outcome {
        Ok(()) => "accepted",
        Err(ConnectRefusal::Capacity) => "capacity",
        Err(ConnectRefusal::Unauthorized) => "unauthorized",
        Err(ConnectRefusal::Draining) => "draining",
        Err(ConnectRefusal::Busy) => "busy",
    };
    app.metrics.connection(label);
    outcome
}

async fn admit_inner(
    socket: &SocketRef,
    app: &AppState,
    auth: Option<Value>,
) -> Result<(), ConnectRefusal> {
    let peer = socket
        .req_parts()
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    if app.lifecycle.is_draining() {
        return Err(ConnectRefusal::Draining);
    }
    let slot = app.connections.try_acquire(peer).map_err(|refusal| {
        tracing::warn!(peer = ?peer, reason = %refusal, "connection refused: capacity");
        security::refused(app, peer, refusal);
        ConnectRefusal::Capacity
    })?;
    let token = auth
        .as_ref()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str);
    let identity = app.tokens.verify(token).map_err(|e| {
        tracing::warn!(peer = ?peer, reason = %e, "connection refused: unauthorized");
        security::auth_failure(app, peer, &e);
        ConnectRefusal::Unauthorized
    })?;
    // The one storage call of a connect: the user's rooms, so that no event is missed. The
    // user's name and last-seen time are written later, in batches. Only so many read at once,
    // and the rest wait their turn for a bounded time.
    let Some(pending) = app.admissions.enter().await else {
        tracing::warn!(peer = ?peer, "connection refused: no admission turn in time");
        return Err(ConnectRefusal::Busy);
    };
    let rooms = app.store.room_ids_of(&identity.user_id).await;
    drop(pending);
    let rooms = rooms.map_err(|e| {
        tracing::error!(user = %identity.user_id, error = %e, "connection refused: storage");
        ConnectRefusal::Draining
    })?;
    let mut socket_rooms: Vec<String> = rooms.iter().map(|r| r.socket_room()).collect();
    socket_rooms.push(identity.user_id.socket_room());
    socket.join(socket_rooms);
    app.seen.saw(&identity);
    let limits = &app.settings.limits;
    socket.extensions.insert(Arc::new(Session {
        identity,
        peer,
        send_rate: Rate::new(limits.send_rate_per_sec, limits.send_burst),
        typing_rate: Rate::new(limits.typing_rate_per_sec, limits.typing_burst),
        rpc_rate: rpc::rate(&app.settings),
        _slot: slot,
        _counted: handler::Counted::new(&app.metrics.sockets),
    }));
    // Here, not in the connect handler: socketioxide sends the client its CONNECT before it
    // spawns that handler, so an event emitted on `connect` could otherwise find no handler
    // and go unanswered.
    register_events(socket);
    Ok(())
}

/// The longest a new socket's `session` waits for its presence to be recorded (one Redis round
/// trip, batched with the connects of the moment, when Redis is well).
const PRESENCE_BEFORE_SESSION: std::time::Duration = std::time::Duration::from_millis(250);

async fn on_connect(socket: SocketRef, State(app): State<AppState>, io: SocketIo) {
    let Some(session) = socket.extensions.get::<Arc<Session>>() else {
        return;
    };
    socket.on_disconnect(on_disconnect);
    let user = &session.identity;
    // Recorded online before `session`, so that every node says so once the client has it;
    // a stalled Redis delays the session by no more than PRESENCE_BEFORE_SESSION.
    let recording = presence::socket_connected(&app, &socket, user);
    tokio::pin!(recording);
    let recorded = tokio::time::timeout(PRESENCE_BEFORE_SESSION, &mut recording)
        .await
        .ok();
    let hello =
        json!({ "userId": user.user_id, "name": user.name, "nodeId": app.settings.node_id });
    if socket.emit("session", &hello).is_err() {
        return;
    }
    tracing::info!(user = %user.user_id, socket = %socket.id, transport = ?socket.transport_type(), "socket connected");
    let first = match recorded {
        Some(first) => first,
        None => recording.await,
    };
    if first {
        presence::announce_online(&app, &io, &socket, user).await;
    }
}

/// The client events of the contract.
const EVENTS: &[&str] = &[
    "room:create",
    "room:direct",
    "room:join",
    "room:leave",
    "room:list",
    "room:members",
    "message:send",
    "message:history",
    "message:read",
    "typing:start",
    "typing:stop",
    "room:typing",
    "presence:get",
    "rpc:call",
];

fn register_events(socket: &SocketRef) {
    handler::serve(socket, EVENTS, dispatch);
}

/// Runs the handler of `event`, one of [`EVENTS`], and answers it.
async fn dispatch(event: &'static str, ctx: Ctx, payload: Value, responder: Responder) {
    let outcome = match event {
        // Answered by the write path once the message is committed.
        "message:send" => return messages::send(ctx, payload, responder).await,
        "room:create" => rooms::create(ctx, payload).await,
        "room:direct" => rooms::direct(ctx, payload).await,
        "room:join" => rooms::join(ctx, payload).await,
        "room:leave" => rooms::leave(ctx, payload).await,
        "room:list" => rooms::list(ctx, payload).await,
        "room:members" => rooms::members(ctx, payload).await,
        "message:history" => messages::history(ctx, payload).await,
        "message:read" => messages::read(ctx, payload).await,
        "typing:start" => typing::start(ctx, payload).await,
        "typing:stop" => typing::stop(ctx, payload).await,
        "room:typing" => typing::list(ctx, payload).await,
        "presence:get" => presence::get(ctx, payload).await,
        "rpc:call" => rpc::call(ctx, payload).await,
        _ => Err(ChatError::bad_request("unknown event")),
    };
    responder.finish(outcome);
}

async fn on_disconnect(
    socket: SocketRef,
    State(app): State<AppState>,
    io: SocketIo,
    reason: DisconnectReason,
) {
    let _in_flight = app.lifecycle.track();
    let Some(session) = socket.extensions.get::<Arc<Session>>() else {
        return;
    };
    let user = &session.identity;
    tracing::info!(user = %user.user_id, socket = %socket.id, ?reason, "socket disconnected");
    presence::socket_disconnected(&app, &io, &socket, user).await;
    // The session (and its connection slot) goes with the socket.
    socket.extensions.remove::<Arc<Session>>();
}
