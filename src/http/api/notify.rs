//! Notifications: `notification { type, data }` to every socket of some users, or
//! `{ type, data, roomId }` to every socket in a room, on every node.
//!
//! `sockets` is how many sockets were connected there, cluster-wide, when it was sent: the
//! adapter counts them on every node (`fetch_sockets`), then the same adapter emits.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use super::{ApiState, parse_room, parse_user};
use crate::domain::{NotificationType, UserId};
use crate::error::ChatError;

/// Most users in one `POST /api/v1/notifications`.
pub const MAX_NOTIFIED_USERS: usize = 1000;

/// `POST …/notifications` to one user or one room.
#[derive(Deserialize, ToSchema)]
pub struct NotificationRequest {
    /// 1–64 characters after trimming.
    #[serde(rename = "type")]
    kind: String,
    /// Any JSON; `null` when absent.
    #[serde(default)]
    data: Value,
}

/// `POST /api/v1/notifications`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsersNotificationRequest {
    /// 1–1000 user ids.
    user_ids: Vec<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

#[derive(Serialize, ToSchema)]
pub struct SocketsReply {
    /// Sockets reached, across the cluster.
    pub sockets: usize,
}

/// Counts the sockets in `rooms` on every node, then emits to them.
pub(super) async fn count_and_emit(
    api: &ApiState,
    rooms: Vec<String>,
    event: Option<(&str, &Value)>,
) -> ApiResult<usize> {
    let sockets = api
        .io
        .to(rooms.clone())
        .fetch_sockets()
        .await
        .map_err(|e| ChatError::Unavailable(anyhow::anyhow!("counting sockets: {e}")))?;
    if let Some((name, data)) = event
        && !sockets.is_empty()
    {
        api.io
            .to(rooms)
            .emit(name, data)
            .await
            .map_err(|e| ChatError::Unavailable(anyhow::anyhow!("emitting {name}: {e}")))?;
    }
    Ok(sockets.len())
}

#[utoipa::path(post, path = "/api/v1/users/{userId}/notifications", tag = "notifications",
    params(("userId" = String, Path)),
    request_body = NotificationRequest,
    responses((status = 200, body = SocketsReply), (status = 400, body = ErrorBody)))]
pub async fn to_user(
    State(api): State<ApiState>,
    ApiPath(user): ApiPath<String>,
    ApiJson(request): ApiJson<NotificationRequest>,
) -> ApiResult<Json<SocketsReply>> {
    let user = parse_user(&user)?;
    let kind = NotificationType::parse(&request.kind)?;
    let event = json!({ "type": kind, "data": request.data });
    let sockets = count_and_emit(
        &api,
        vec![user.socket_room()],
        Some(("notification", &event)),
    )
    .await?;
    Ok(Json(SocketsReply { sockets }))
}

#[utoipa::path(post, path = "/api/v1/notifications", tag = "notifications",
    request_body = UsersNotificationRequest,
    responses((status = 200, body = SocketsReply), (status = 400, body = ErrorBody)))]
pub async fn to_users(
    State(api): State<ApiState>,
    ApiJson(request): ApiJson<UsersNotificationRequest>,
) -> ApiResult<Json<SocketsReply>> {
    if request.user_ids.is_empty() || request.user_ids.len() > MAX_NOTIFIED_USERS {
        return Err(ApiError::bad_request(format!(
            "userIds must list 1-{MAX_NOTIFIED_USERS} user ids"
        )));
    }
    let users = request
        .user_ids
        .iter()
        .map(|id| UserId::parse(id))
        .collect::<Result<Vec<_>, _>>()?;
    let kind = NotificationType::parse(&request.kind)?;
    let mut rooms: Vec<String> = users.iter().map(UserId::socket_room).collect();
    rooms.sort_unstable();
    rooms.dedup();
    let event = json!({ "type": kind, "data": request.data });
    let sockets = count_and_emit(&api, rooms, Some(("notification", &event))).await?;
    Ok(Json(SocketsReply { sockets }))
}

#[utoipa::path(post, path = "/api/v1/rooms/{roomId}/notifications", tag = "notifications",
    params(("roomId" = Uuid, Path)),
    request_body = NotificationRequest,
    responses(
        (status = 200, body = SocketsReply),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn to_room(
    State(api): State<ApiState>,
    ApiPath(room): ApiPath<String>,
    ApiJson(request): ApiJson<NotificationRequest>,
) -> ApiResult<Json<SocketsReply>> {
    let room = parse_room(&room)?;
    let kind = NotificationType::parse(&request.kind)?;
    if api.app.store.room_kind(room).await?.is_none() {
        return Err(ChatError::NotFound("room not found").into());
    }
    let event = json!({ "type": kind, "data": request.data, "roomId": room });
    let sockets = count_and_emit(
        &api,
        vec![room.socket_room()],
        Some(("notification", &event)),
    )
    .await?;
    Ok(Json(SocketsReply { sockets }))
}
