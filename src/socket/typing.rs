//! Typing indicators: refreshed by `typing:start`, ended by `typing:stop`, by expiry (5 s after
//! the last start) or by the typer's last socket going away.

use std::time::Duration;

use crate::backplane::SocketIo;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::handler::{Ctx, Outcome};
use super::payload;
use super::rooms::require_joined;
use crate::backplane::Typer;
use crate::domain::{RoomId, UserId};
use crate::error::ChatError;
use crate::state::AppState;

fn limited(ctx: &Ctx, event: &str) -> Result<(), ChatError> {
    if ctx.session.typing_rate.allow() {
        return Ok(());
    }
    ctx.app
        .metrics
        .rate_limited
        .get_or_create(&crate::metrics::EventNameLabel {
            event: event.to_owned(),
        })
        .inc();
    Err(ChatError::RateLimited)
}

pub async fn start(ctx: Ctx, payload: Value) -> Outcome {
    let room = payload::room_only(payload)?;
    limited(&ctx, "typing:start")?;
    require_joined(&ctx, room).await?;
    let user = ctx.user();
    let typer = Typer {
        user_id: user.user_id.clone(),
        name: user.name.as_str().to_owned(),
    };
    let typing = &ctx.app.backplane.typing;
    let broadcast = typing.start(room, typer, Instant::now()).await?;
    if broadcast {
        let event = json!({ "roomId": room, "userId": user.user_id, "name": user.name });
        emit_except_typer(&ctx.io, room, &user.user_id, "typing:start", &event).await;
    }
    Ok(json!({ "ok": true }))
}

pub async fn stop(ctx: Ctx, payload: Value) -> Outcome {
    let room = payload::room_only(payload)?;
    limited(&ctx, "typing:stop")?;
    require_joined(&ctx, room).await?;
    let user = &ctx.user().user_id;
    let was_typing = ctx.app.backplane.typing.stop(room, user).await?;
    if was_typing {
        announce_stop(&ctx.io, room, user).await;
    }
    Ok(json!({ "ok": true }))
}

/// `room:typing`: everyone typing, the caller included.
pub async fn list(ctx: Ctx, payload: Value) -> Outcome {
    let room = payload::room_only(payload)?;
    require_joined(&ctx, room).await?;
    let typers = ctx
        .app
        .backplane
        .typing
        .typers(room, Instant::now())
        .await?;
    let users: Vec<Value> = typers
        .iter()
        .map(|t| json!({ "userId": t.user_id, "name": t.name }))
        .collect();
    Ok(json!({ "ok": true, "users": users }))
}

/// Ends the typing of a user in one room, as a leave does.
pub async fn stop_in_room(app: &AppState, io: &SocketIo, room: RoomId, user: &UserId) {
    match app.backplane.typing.stop(room, user).await {
        Ok(true) => announce_stop(io, room, user).await,
        Ok(false) => {}
        Err(e) => tracing::warn!(user = %user, error = %e, "typing state not cleared"),
    }
}

/// Ends every typing of a user whose last socket went away.
pub async fn stop_everywhere(app: &AppState, io: &SocketIo, user: &UserId) {
    match app.backplane.typing.stop_all(user).await {
        Ok(rooms) => {
            for room in rooms {
                announce_stop(io, room, user).await;
            }
        }
        Err(e) => tracing::warn!(user = %user, error = %e, "typing state not cleared"),
    }
}

pub(super) async fn announce_stop(io: &SocketIo, room: RoomId, user: &UserId) {
    let event = json!({ "roomId": room, "userId": user });
    emit_except_typer(io, room, user, "typing:stop", &event).await;
}

async fn emit_except_typer(io: &SocketIo, room: RoomId, user: &UserId, name: &str, event: &Value) {
    let sent = io
        .to(room.socket_room())
        .except(user.socket_room())
        .emit(name, event)
        .await;
    if let Err(e) = sent {
        tracing::warn!(room = %room, error = %e, "typing event not delivered");
    }
}

/// Background task: sends `typing:stop` for typing states that ran out, until `stop` fires.
pub async fn expire_typing(app: AppState, io: SocketIo, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match app.backplane.typing.take_expired(Instant::now()).await {
            Ok(expired) => {
                for typing in expired {
                    app.metrics.typing_expired.inc();
                    announce_stop(&io, typing.room, &typing.user_id).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "typing expiry skipped"),
        }
    }
}
