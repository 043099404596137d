//! Rooms and members: create a room, read it and its members, add and remove members.
//!
//! The membership changes are the ones `room:create`, `room:join` and `room:leave` make
//! (`socket/membership.rs`), with no acting socket, so nobody is left out of the events.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiJson, ApiPath, ApiResult, ErrorBody};
use super::{ApiState, parse_room, parse_user};
use crate::domain::{RoomId, RoomKind, RoomName, UserId};
use crate::error::ChatError;
use crate::model::{Member, Room};
use crate::socket::membership;
use crate::socket::payload::MAX_CREATE_MEMBERS;
use crate::storage::NewRoom;

/// `POST /api/v1/rooms`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateRoomRequest {
    /// 1–100 characters after trimming.
    name: String,
    /// `public` or `private` (the default).
    #[serde(default)]
    kind: Option<String>,
    /// 1–1000 user ids; repeats are ignored.
    members: Vec<String>,
}

impl CreateRoomRequest {
    fn parse(self) -> Result<NewRoom, ChatError> {
        let name = RoomName::parse(&self.name)?;
        let kind = match self.kind.as_deref() {
            None | Some("private") => RoomKind::Private,
            Some("public") => RoomKind::Public,
            Some(_) => return Err(ChatError::bad_request("kind must be public or private")),
        };
        if self.members.is_empty() || self.members.len() > MAX_CREATE_MEMBERS {
            return Err(ChatError::bad_request(format!(
                "members must list 1-{MAX_CREATE_MEMBERS} user ids"
            )));
        }
        let mut members: Vec<UserId> = Vec::with_capacity(self.members.len());
        for raw in &self.members {
            let id = UserId::parse(raw)?;
            if !members.contains(&id) {
                members.push(id);
            }
        }
        // Storage records a creator; the first listed member stands in for the backend.
        let creator = members.remove(0);
        Ok(NewRoom {
            name,
            kind,
            creator,
            members,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct RoomReply {
    room: Room,
}

#[derive(Serialize, ToSchema)]
pub struct MembersReply {
    members: Vec<Member>,
}

#[derive(Serialize, ToSchema)]
pub struct AddedReply {
    added: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RemovedReply {
    removed: bool,
}

#[utoipa::path(post, path = "/api/v1/rooms", tag = "rooms",
    request_body = CreateRoomRequest,
    responses(
        (status = 201, description = "Created; every member got `room:added`", body = RoomReply),
        (status = 400, body = ErrorBody),
    ))]
pub async fn create(
    State(api): State<ApiState>,
    ApiJson(request): ApiJson<CreateRoomRequest>,
) -> ApiResult<(StatusCode, Json<RoomReply>)> {
    let new = request.parse()?;
    let mut room = membership::create_room(&api.app, api.actor(), new).await?;
    room.unread = 0;
    Ok((StatusCode::CREATED, Json(RoomReply { room })))
}

/// A room as no member in particular sees it (`unread` 0).
async fn room_for_api(api: &ApiState, room: RoomId) -> ApiResult<Room> {
    let viewer = UserId::parse("confab.api").expect("a valid user id");
    let mut room = api
        .app
        .store
        .room(room, &viewer)
        .await?
        .ok_or(ChatError::NotFound("room not found"))?;
    room.unread = 0;
    Ok(room)
}

#[utoipa::path(get, path = "/api/v1/rooms/{roomId}", tag = "rooms",
    params(("roomId" = Uuid, Path)),
    responses(
        (status = 200, body = RoomReply),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get(
    State(api): State<ApiState>,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Json<RoomReply>> {
    let room = parse_room(&room)?;
    Ok(Json(RoomReply {
        room: room_for_api(&api, room).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/rooms/{roomId}/members", tag = "rooms",
    params(("roomId" = Uuid, Path)),
    responses(
        (status = 200, description = "Ordered by userId", body = MembersReply),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn members(
    State(api): State<ApiState>,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Json<MembersReply>> {
    let room = parse_room(&room)?;
    existing_kind(&api, room).await?;
    let members = membership::members(&api.app, room).await?;
    Ok(Json(MembersReply { members }))
}

async fn existing_kind(api: &ApiState, room: RoomId) -> ApiResult<RoomKind> {
    Ok(api
        .app
        .store
        .room_kind(room)
        .await?
        .ok_or(ChatError::NotFound("room not found"))?)
}

/// A direct room's members are its two users, for good.
async fn changeable(api: &ApiState, room: RoomId) -> ApiResult<()> {
    if existing_kind(api, room).await? == RoomKind::Direct {
        return Err(ChatError::bad_request("a direct room's members cannot be changed").into());
    }
    Ok(())
}

#[utoipa::path(put, path = "/api/v1/rooms/{roomId}/members/{userId}", tag = "rooms",
    params(("roomId" = Uuid, Path), ("userId" = String, Path)),
    responses(
        (status = 201, description = "Became a member", body = AddedReply),
        (status = 200, description = "Already was a member", body = AddedReply),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn add_member(
    State(api): State<ApiState>,
    ApiPath((room, user)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<AddedReply>)> {
    let (room, user) = (parse_room(&room)?, parse_user(&user)?);
    changeable(&api, room).await?;
    let added = membership::add_member(&api.app, api.actor(), room, &user, None)
        .await?
        .is_some();
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(AddedReply { added })))
}

#[utoipa::path(delete, path = "/api/v1/rooms/{roomId}/members/{userId}", tag = "rooms",
    params(("roomId" = Uuid, Path), ("userId" = String, Path)),
    responses(
        (status = 200, body = RemovedReply),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn remove_member(
    State(api): State<ApiState>,
    ApiPath((room, user)): ApiPath<(String, String)>,
) -> ApiResult<Json<RemovedReply>> {
    let (room, user) = (parse_room(&room)?, parse_user(&user)?);
    changeable(&api, room).await?;
    let removed = membership::remove_member(&api.app, api.actor(), room, &user).await?;
    Ok(Json(RemovedReply { removed }))
}
