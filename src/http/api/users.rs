//! Users: their rooms, their presence, and disconnecting every socket they have.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiPath, ApiResult, ErrorBody};
use super::notify::{SocketsReply, count_and_emit};
use super::{ApiState, parse_user};
use crate::error::ChatError;
use crate::model::Room;

#[derive(Serialize, ToSchema)]
pub struct RoomsReply {
    /// As `room:list` answers the user: newest activity first.
    rooms: Vec<Room>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceReply {
    user_id: String,
    online: bool,
    /// The user's sockets, across the cluster.
    sockets: u64,
    /// Nodes holding at least one of them, sorted.
    nodes: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/users/{userId}/rooms", tag = "users",
    params(("userId" = String, Path)),
    responses((status = 200, body = RoomsReply), (status = 400, body = ErrorBody)))]
pub async fn rooms(
    State(api): State<ApiState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<RoomsReply>> {
    let user = parse_user(&user)?;
    let rooms = api.app.store.rooms_of(&user).await?;
    Ok(Json(RoomsReply { rooms }))
}

#[utoipa::path(get, path = "/api/v1/users/{userId}/presence", tag = "users",
    params(("userId" = String, Path)),
    responses((status = 200, body = PresenceReply), (status = 400, body = ErrorBody)))]
pub async fn presence(
    State(api): State<ApiState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<PresenceReply>> {
    let user = parse_user(&user)?;
    let presence = api.app.backplane.presence.user_presence(&user).await?;
    Ok(Json(PresenceReply {
        user_id: user.to_string(),
        online: presence.online,
        sockets: presence.sockets,
        nodes: presence.nodes,
    }))
}

#[utoipa::path(post, path = "/api/v1/users/{userId}/disconnect", tag = "users",
    params(("userId" = String, Path)),
    responses(
        (status = 200, description = "Every socket of the user, on every node, was disconnected", body = SocketsReply),
        (status = 400, body = ErrorBody),
    ))]
pub async fn disconnect(
    State(api): State<ApiState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<SocketsReply>> {
    let user = parse_user(&user)?;
    let sockets = count_and_emit(&api, vec![user.socket_room()], None).await?;
    if sockets > 0 {
        api.io
            .to(user.socket_room())
            .disconnect()
            .await
            .map_err(|e| ChatError::Unavailable(anyhow::anyhow!("disconnecting: {e}")))?;
    }
    tracing::info!(user = %user, sockets, "user disconnected by the API");
    Ok(Json(SocketsReply { sockets }))
}
