//! Membership changes, shared by the Socket.IO events (`room:create`, `room:join`,
//! `room:leave`) and the HTTP API (`POST /rooms`, `PUT`/`DELETE …/members/{userId}`).
//!
//! Each change reaches sockets in the contract's order, on every node (the emits go through the
//! adapter): a new member's sockets join the room's Socket.IO room before `room:member-joined`
//! is emitted; a leaving member's sockets leave it before `room:member-left`, and their typing
//! there stops. The acting socket, when there is one, is left out of `room:added`,
//! `room:removed` and `room:member-joined`; the HTTP API acts without a socket, so nobody is.

use serde::Serialize;
use serde_json::json;

use crate::backplane::{SocketIo, SocketRef};
use crate::domain::{RoomId, UserId};
use crate::error::ChatError;
use crate::model::{Member, Room};
use crate::state::AppState;
use crate::storage::NewRoom;

/// Who caused a change: the Socket.IO handle every emit goes through, and the socket that
/// acted (`None` for the HTTP API).
#[derive(Clone, Copy)]
pub struct Actor<'a> {
    pub io: &'a SocketIo,
    pub socket: Option<&'a SocketRef>,
}

impl Actor<'_> {
    /// Emits to `rooms`, leaving out the acting socket.
    async fn emit(&self, rooms: Vec<String>, event: &str, data: &impl Serialize) {
        let sent = match self.socket {
            Some(socket) => socket.to(rooms).emit(event, data).await,
            None => self.io.to(rooms).emit(event, data).await,
        };
        if let Err(e) = sent {
            tracing::warn!(event, error = %e, "event not delivered");
        }
    }
}

/// Makes every socket of `users`, on every node, join the room, then tells them (except the
/// acting socket) with `room:added`.
pub(super) async fn add_sockets(actor: Actor<'_>, users: &[&UserId], room: &Room) {
    let targets: Vec<String> = users.iter().map(|u| u.socket_room()).collect();
    if let Err(e) = actor
        .io
        .to(targets.clone())
        .join(room.id.socket_room())
        .await
    {
        tracing::error!(room = %room.id, error = %e, "sockets did not join the room");
    }
    actor.emit(targets, "room:added", room).await;
}

/// Creates a public or private room: every member's sockets join it and get `room:added`.
/// Returns the room as its creator sees it.
pub async fn create_room(
    app: &AppState,
    actor: Actor<'_>,
    new: NewRoom,
) -> Result<Room, ChatError> {
    let mut everyone: Vec<UserId> = vec![new.creator.clone()];
    everyone.extend(new.members.iter().cloned());
    let room = app.store.create_room(new).await?;
    let everyone: Vec<&UserId> = everyone.iter().collect();
    add_sockets(actor, &everyone, &room).await;
    tracing::info!(room = %room.id, kind = room.kind.as_str(), members = room.member_count, "room created");
    Ok(room)
}

/// Makes `user` a member of an existing room. `Ok(None)` when they already were one (nothing
/// is emitted); otherwise their sockets join and get `room:added`, the room gets
/// `room:member-joined`, and the room as the new member sees it is returned. `name` is the
/// member's display name when the caller knows it (the socket's identity); otherwise storage
/// says.
pub async fn add_member(
    app: &AppState,
    actor: Actor<'_>,
    room_id: RoomId,
    user: &UserId,
    name: Option<&str>,
) -> Result<Option<Room>, ChatError> {
    if !app.store.add_member(room_id, user).await? {
        return Ok(None);
    }
    let room = app
        .store
        .room(room_id, user)
        .await?
        .ok_or(ChatError::NotFound("room not found"))?;
    let name = match name {
        Some(name) => name.to_owned(),
        None => app
            .store
            .member_name(room_id, user)
            .await?
            .unwrap_or_else(|| user.to_string()),
    };
    add_sockets(actor, &[user], &room).await;
    let joined = json!({
        "roomId": room_id, "userId": user, "name": name, "memberCount": room.member_count,
    });
    actor
        .emit(vec![room_id.socket_room()], "room:member-joined", &joined)
        .await;
    Ok(Some(room))
}

/// Ends `user`'s membership. `Ok(false)` when they were not a member (nothing is emitted);
/// otherwise their sockets leave the room, the room gets `room:member-left`, their sockets
/// (except the acting one) get `room:removed`, and their typing there stops.
pub async fn remove_member(
    app: &AppState,
    actor: Actor<'_>,
    room_id: RoomId,
    user: &UserId,
) -> Result<bool, ChatError> {
    if !app.store.remove_member(room_id, user).await? {
        return Ok(false);
    }
    if let Err(e) = actor
        .io
        .to(user.socket_room())
        .leave(room_id.socket_room())
        .await
    {
        tracing::error!(room = %room_id, error = %e, "sockets did not leave the room");
    }
    let member_count = app
        .store
        .room(room_id, user)
        .await?
        .map(|r| r.member_count)
        .unwrap_or(0);
    let left = json!({ "roomId": room_id, "userId": user, "memberCount": member_count });
    // The leaver's sockets are out of the room already, the acting one included.
    if let Err(e) = actor
        .io
        .to(room_id.socket_room())
        .emit("room:member-left", &left)
        .await
    {
        tracing::warn!(room = %room_id, error = %e, "room:member-left not delivered");
    }
    let removed = json!({ "roomId": room_id });
    actor
        .emit(vec![user.socket_room()], "room:removed", &removed)
        .await;
    super::typing::stop_in_room(app, actor.io, room_id, user).await;
    Ok(true)
}

/// The members of a room, ordered by user id, each with whether they are online anywhere.
pub async fn members(app: &AppState, room_id: RoomId) -> Result<Vec<Member>, ChatError> {
    let records = app.store.members(room_id).await?;
    let ids: Vec<UserId> = records.iter().map(|m| m.user_id.clone()).collect();
    let online = app
        .backplane
        .presence
        .online(&ids)
        .await
        .map_err(|e| ChatError::Unavailable(e.into()))?;
    Ok(records
        .into_iter()
        .zip(online)
        .map(|(m, online)| Member {
            user_id: m.user_id,
            name: m.name,
            online,
        })
        .collect())
}
