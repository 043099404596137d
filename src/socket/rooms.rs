//! Room events: create, direct, join, leave, list, members.
//!
//! The membership changes themselves (with the contract's order of joins and events) are
//! `membership.rs`, shared with the HTTP API.

use serde_json::{Value, json};

use super::handler::{Ctx, Outcome};
use super::membership::{self, Actor};
use super::payload;
use crate::domain::{RoomId, RoomKind};
use crate::error::ChatError;
use crate::storage::NewRoom;

/// Checks that the room exists and the caller belongs to it.
pub async fn require_member(ctx: &Ctx, room: RoomId) -> Result<RoomKind, ChatError> {
    tracing::Span::current().record("room", tracing::field::display(room));
    let kind = ctx
        .app
        .store
        .room_kind(room)
        .await?
        .ok_or(ChatError::NotFound("room not found"))?;
    if !ctx.app.store.is_member(room, &ctx.user().user_id).await? {
        return Err(ChatError::Forbidden("not a member of this room"));
    }
    Ok(kind)
}

/// Checks membership the cheap way first: a member's sockets are in the room's Socket.IO room
/// (the contract keeps that true across the cluster), so a member in good standing costs no
/// storage call. Only a socket outside the room asks storage, to tell `not_found` from
/// `forbidden`, or to heal a socket that missed its join.
pub async fn require_joined(ctx: &Ctx, room: RoomId) -> Result<(), ChatError> {
    let name = room.socket_room();
    if ctx
        .socket
        .rooms()
        .iter()
        .any(|joined| joined.as_ref() == name.as_str())
    {
        tracing::Span::current().record("room", tracing::field::display(room));
        return Ok(());
    }
    require_member(ctx, room).await?;
    ctx.socket.join(name);
    Ok(())
}

/// The acting socket of this event, for the shared membership changes.
fn actor(ctx: &Ctx) -> Actor<'_> {
    Actor {
        io: &ctx.io,
        socket: Some(&ctx.socket),
    }
}

pub async fn create(ctx: Ctx, payload: Value) -> Outcome {
    let me = ctx.user().user_id.clone();
    let parsed = payload::create_room(payload, &me)?;
    let new = NewRoom {
        name: parsed.name,
        kind: parsed.kind,
        creator: me,
        members: parsed.members,
    };
    let room = membership::create_room(&ctx.app, actor(&ctx), new).await?;
    Ok(json!({ "ok": true, "room": room }))
}

pub async fn direct(ctx: Ctx, payload: Value) -> Outcome {
    let me = ctx.user().user_id.clone();
    let other = payload::direct(payload, &me)?;
    let (room, created) = ctx.app.store.direct_room(&me, &other).await?;
    if created {
        membership::add_sockets(actor(&ctx), &[&me, &other], &room).await;
    } else {
        ctx.socket.join(room.id.socket_room());
    }
    Ok(json!({ "ok": true, "room": room }))
}

pub async fn join(ctx: Ctx, payload: Value) -> Outcome {
    let room_id = payload::room_only(payload)?;
    let me = ctx.user().user_id.clone();
    let kind = ctx
        .app
        .store
        .room_kind(room_id)
        .await?
        .ok_or(ChatError::NotFound("room not found"))?;
    let already = ctx.app.store.is_member(room_id, &me).await?;
    if !already && kind != RoomKind::Public {
        return Err(ChatError::Forbidden("this room is not public"));
    }
    if !already {
        let name = ctx.user().name.as_str();
        if let Some(room) =
            membership::add_member(&ctx.app, actor(&ctx), room_id, &me, Some(name)).await?
        {
            return Ok(json!({ "ok": true, "room": room }));
        }
    }
    let room = ctx
        .app
        .store
        .room(room_id, &me)
        .await?
        .ok_or(ChatError::NotFound("room not found"))?;
    ctx.socket.join(room_id.socket_room());
    Ok(json!({ "ok": true, "room": room }))
}

pub async fn leave(ctx: Ctx, payload: Value) -> Outcome {
    let room_id = payload::room_only(payload)?;
    let kind = require_member(&ctx, room_id).await?;
    if kind == RoomKind::Direct {
        return Err(ChatError::bad_request("a direct room cannot be left"));
    }
    let me = ctx.user().user_id.clone();
    membership::remove_member(&ctx.app, actor(&ctx), room_id, &me).await?;
    Ok(json!({ "ok": true }))
}

pub async fn list(ctx: Ctx, payload: Value) -> Outcome {
    payload::empty(payload)?;
    let rooms = ctx.app.store.rooms_of(&ctx.user().user_id).await?;
    Ok(json!({ "ok": true, "rooms": rooms }))
}

pub async fn members(ctx: Ctx, payload: Value) -> Outcome {
    let room_id = payload::room_only(payload)?;
    require_joined(&ctx, room_id).await?;
    let members = membership::members(&ctx.app, room_id).await?;
    Ok(json!({ "ok": true, "members": members }))
}
