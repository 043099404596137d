//! Presence: a user is online while they have at least one socket anywhere.

use crate::backplane::SocketIo;
use crate::backplane::SocketRef;
use serde_json::{Value, json};

use super::handler::{Ctx, Outcome};
use super::payload;
use crate::auth::Identity;
use crate::domain::UserId;
use crate::error::ChatError;
use crate::state::AppState;

/// `presence:get`: any user may ask about any user.
pub async fn get(ctx: Ctx, payload: Value) -> Outcome {
    let users = payload::presence(payload)?;
    let online = ctx
        .app
        .backplane
        .online(&users)
        .await
        .map_err(|e| ChatError::Unavailable(e.into()))?;
    let presence: serde_json::Map<String, Value> = users
        .iter()
        .zip(online)
        .map(|(user, on)| {
            (
                user.to_string(),
                json!(if on { "online" } else { "offline" }),
            )
        })
        .collect();
    Ok(json!({ "ok": true, "presence": presence }))
}

pub async fn socket_connected(app: &AppState, io: &SocketIo, socket: &SocketRef, user: &Identity) {
    match app
        .backplane
        .socket_connected(&user.user_id, &socket.id.to_string())
        .await
    {
        Ok(true) => announce(app, io, &user.user_id, "online").await,
        Ok(false) => {}
        Err(e) => tracing::error!(user = %user.user_id, error = %e, "presence not recorded"),
    }
}

pub async fn socket_disconnected(
    app: &AppState,
    io: &SocketIo,
    socket: &SocketRef,
    user: &Identity,
) {
    let last = match app
        .backplane
        .socket_disconnected(&user.user_id, &socket.id.to_string())
        .await
    {
        Ok(last) => last,
        Err(e) => {
            tracing::error!(user = %user.user_id, error = %e, "presence not updated");
            return;
        }
    };
    if !last {
        return;
    }
    super::typing::stop_everywhere(app, io, &user.user_id).await;
    announce(app, io, &user.user_id, "offline").await;
}

/// Sends `presence:update` to every room of the user and to the user's own sockets.
async fn announce(app: &AppState, io: &SocketIo, user: &UserId, status: &str) {
    let rooms = match app.store.room_ids_of(user).await {
        Ok(rooms) => rooms,
        Err(e) => {
            tracing::error!(user = %user, error = %e, "presence not announced: storage");
            return;
        }
    };
    let mut targets: Vec<String> = rooms.iter().map(|r| r.socket_room()).collect();
    targets.push(user.socket_room());
    let update = json!({ "userId": user, "status": status });
    if let Err(e) = io.to(targets).emit("presence:update", &update).await {
        tracing::warn!(user = %user, error = %e, "presence:update not delivered");
    }
}
