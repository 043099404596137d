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

use std::net::SocketAddr;
use std::sync::Arc;

use crate::backplane::SocketIo;
use crate::backplane::SocketRef;
use axum::extract::ConnectInfo;
use serde_json::{Value, json};
use socketioxide::extract::{State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;

use crate::limits::Rate;
use crate::state::AppState;
pub use delivery::{Origin, deliver};
pub use handler::Session;
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
    // user's name and last-seen time are written later, in batches.
    let rooms = app.store.room_ids_of(&identity.user_id).await;
    let rooms = rooms.map_err(|e| {
        tracing::error!(user = %identity.user_id, error = %e, "connection refused: storage");
        ConnectRefusal::Draining
    })?;
    let mut socket_rooms: Vec<String> = rooms.iter().map(|r| r.socket_room()).collect();
    socket_rooms.push(identity.user_id.socket_room());
    socket.join(socket_rooms);
    app.seen.saw(&identity);
    security::watch(socket, app, identity.user_id.as_str(), peer);
    let limits = &app.settings.limits;
    socket.extensions.insert(Arc::new(Session {
        identity,
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

async fn on_connect(socket: SocketRef, State(app): State<AppState>, io: SocketIo) {
    let Some(session) = socket.extensions.get::<Arc<Session>>() else {
        return;
    };
    socket.on_disconnect(on_disconnect);
    let user = &session.identity;
    let hello =
        json!({ "userId": user.user_id, "name": user.name, "nodeId": app.settings.node_id });
    if socket.emit("session", &hello).is_err() {
        return;
    }
    tracing::info!(user = %user.user_id, socket = %socket.id, transport = ?socket.transport_type(), "socket connected");
    presence::socket_connected(&app, &io, &socket, user).await;
}

fn register_events(socket: &SocketRef) {
    handler::on(socket, "room:create", rooms::create);
    handler::on(socket, "room:direct", rooms::direct);
    handler::on(socket, "room:join", rooms::join);
    handler::on(socket, "room:leave", rooms::leave);
    handler::on(socket, "room:list", rooms::list);
    handler::on(socket, "room:members", rooms::members);
    handler::on(socket, "message:send", messages::send);
    handler::on(socket, "message:history", messages::history);
    handler::on(socket, "message:read", messages::read);
    handler::on(socket, "typing:start", typing::start);
    handler::on(socket, "typing:stop", typing::stop);
    handler::on(socket, "room:typing", typing::list);
    handler::on(socket, "presence:get", presence::get);
    handler::on(socket, "rpc:call", rpc::call);
    handler::on_unknown(socket);
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
