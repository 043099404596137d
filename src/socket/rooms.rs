//! Room events: create, direct, join, leave, list, members.
//!
//! Membership changes reach sockets in the contract's order: a new member's sockets join the
//! Socket.IO room before `room:member-joined` is emitted; a leaving member's sockets leave it
//! before `room:member-left`.

use serde_json::{Value, json};

use super::handler::{Ctx, Outcome};
use super::payload;
use crate::domain::{RoomId, RoomKind, UserId};
use crate::error::ChatError;
use crate::model::{Member, Room};
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

/// Makes every socket of `users`, on every node, join the room, then tells them (except the
/// acting socket) with `room:added`.
async fn add_sockets(ctx: &Ctx, users: &[&UserId], room: &Room) {
    let targets: Vec<String> = users.iter().map(|u| u.socket_room()).collect();
    if let Err(e) = ctx.io.to(targets.clone()).join(room.id.socket_room()).await {
        tracing::error!(room = %room.id, error = %e, "sockets did not join the room");
    }
    if let Err(e) = ctx.socket.to(targets).emit("room:added", room).await {
        tracing::warn!(room = %room.id, error = %e, "room:added not delivered");
    }
}

pub async fn create(ctx: Ctx, payload: Value) -> Outcome {
    let me = ctx.user().user_id.clone();
    let parsed = payload::create_room(payload, &me)?;
    let room = ctx
        .app
        .store
        .create_room(NewRoom {
            name: parsed.name,
            kind: parsed.kind,
            creator: me.clone(),
            members: parsed.members.clone(),
        })
        .await?;
    let mut everyone: Vec<&UserId> = vec![&me];
    everyone.extend(parsed.members.iter());
    add_sockets(&ctx, &everyone, &room).await;
    tracing::info!(room = %room.id, kind = room.kind.as_str(), members = room.member_count, "room created");
    Ok(json!({ "ok": true, "room": room }))
}

pub async fn direct(ctx: Ctx, payload: Value) -> Outcome {
    let me = ctx.user().user_id.clone();
    let other = payload::direct(payload, &me)?;
    let (room, created) = ctx.app.store.direct_room(&me, &other).await?;
    if created {
        add_sockets(&ctx, &[&me, &other], &room).await;
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
    let added = !already && ctx.app.store.add_member(room_id, &me).await?;
    let room = ctx
        .app
        .store
        .room(room_id, &me)
        .await?
        .ok_or(ChatError::NotFound("room not found"))?;
    if !added {
        ctx.socket.join(room_id.socket_room());
        return Ok(json!({ "ok": true, "room": room }));
    }
    add_sockets(&ctx, &[&me], &room).await;
    let joined = json!({
        "roomId": room_id, "userId": me, "name": ctx.user().name, "memberCount": room.member_count,
    });
    let sent = ctx
        .socket
        .to(room_id.socket_room())
        .emit("room:member-joined", &joined)
        .await;
    if let Err(e) = sent {
        tracing::warn!(room = %room_id, error = %e, "room:member-joined not delivered");
    }
    Ok(json!({ "ok": true, "room": room }))
}

pub async fn leave(ctx: Ctx, payload: Value) -> Outcome {
    let room_id = payload::room_only(payload)?;
    let kind = require_member(&ctx, room_id).await?;
    if kind == RoomKind::Direct {
        return Err(ChatError::bad_request("a direct room cannot be left"));
    }
    let me = ctx.user().user_id.clone();
    if !ctx.app.store.remove_member(room_id, &me).await? {
        return Ok(json!({ "ok": true }));
    }
    if let Err(e) = ctx
        .io
        .to(me.socket_room())
        .leave(room_id.socket_room())
        .await
    {
        tracing::error!(room = %room_id, error = %e, "sockets did not leave the room");
    }
    let member_count = ctx
        .app
        .store
        .room(room_id, &me)
        .await?
        .map(|r| r.member_count)
        .unwrap_or(0);
    let left = json!({ "roomId": room_id, "userId": me, "memberCount": member_count });
    if let Err(e) = ctx
        .io
        .to(room_id.socket_room())
        .emit("room:member-left", &left)
        .await
    {
        tracing::warn!(room = %room_id, error = %e, "room:member-left not delivered");
    }
    let removed = json!({ "roomId": room_id });
    if let Err(e) = ctx
        .socket
        .to(me.socket_room())
        .emit("room:removed", &removed)
        .await
    {
        tracing::warn!(room = %room_id, error = %e, "room:removed not delivered");
    }
    super::typing::stop_in_room(&ctx.app, &ctx.io, room_id, &me).await;
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
    let records = ctx.app.store.members(room_id).await?;
    let ids: Vec<UserId> = records.iter().map(|m| m.user_id.clone()).collect();
    let online = ctx
        .app
        .backplane
        .presence
        .online(&ids)
        .await
        .map_err(|e| ChatError::Unavailable(e.into()))?;
    let members: Vec<Member> = records
        .into_iter()
        .zip(online)
        .map(|(m, online)| Member {
            user_id: m.user_id,
            name: m.name,
            online,
        })
        .collect();
    Ok(json!({ "ok": true, "members": members }))
}
