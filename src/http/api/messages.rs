//! Posting a message as a user, and reading a room's history.
//!
//! A post goes through the same write path as `message:send` (`app.writes`, group commit, then
//! `message:new` from the delivery task in commit order), with no sending socket: every socket
//! in the room gets it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::{ApiState, parse_room, parse_user};
use crate::domain::{ClientId, DisplayName, MessageText};
use crate::error::ChatError;
use crate::model::Message;
use crate::socket::payload::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
use crate::storage::{HistoryQuery, NewMessage};

/// `POST /api/v1/rooms/{roomId}/messages`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostMessageRequest {
    /// The sender, who must be a member.
    user_id: String,
    /// 1–`CONFAB_MAX_MESSAGE_CHARS` characters after trimming.
    text: String,
    /// 1–64 characters; a repeat by the same user in the same room answers the stored message.
    #[serde(default)]
    client_id: Option<String>,
    /// The id of a message of the same room.
    #[serde(default)]
    reply_to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageReply {
    message: Message,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryReply {
    /// Ascending by seq.
    messages: Vec<Message>,
    has_more: bool,
}

/// The paging of `message:history`.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Messages with a seq above this one (the oldest first).
    #[param(minimum = 0)]
    after_seq: Option<i64>,
    /// Messages with a seq below this one (the newest first).
    #[param(minimum = 0)]
    before_seq: Option<i64>,
    /// 1–200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/rooms/{roomId}/messages", tag = "messages",
    params(("roomId" = Uuid, Path)),
    request_body = PostMessageRequest,
    responses(
        (status = 201, description = "Stored, then sent to every socket in the room", body = MessageReply),
        (status = 200, description = "A repeated clientId: the stored message, sent to nobody", body = MessageReply),
        (status = 400, body = ErrorBody),
        (status = 403, description = "userId is not a member", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "The write path is full; retry with the same clientId", body = ErrorBody),
    ))]
pub async fn post(
    State(api): State<ApiState>,
    ApiPath(room): ApiPath<String>,
    ApiJson(request): ApiJson<PostMessageRequest>,
) -> ApiResult<(StatusCode, Json<MessageReply>)> {
    let room = parse_room(&room)?;
    let user = parse_user(&request.user_id)?;
    let limits = &api.app.settings.limits;
    let text = MessageText::parse(&request.text, limits.max_message_chars)?;
    let client_id = request
        .client_id
        .as_deref()
        .map(ClientId::parse)
        .transpose()?;
    let reply_to = request
        .reply_to
        .as_deref()
        .map(|r| {
            Uuid::parse_str(r).map_err(|_| ChatError::bad_request("replyTo must be a message id"))
        })
        .transpose()?;
    let store = &api.app.store;
    if store.room_kind(room).await?.is_none() {
        return Err(ChatError::NotFound("room not found").into());
    }
    // The name shown with the message; storage checks membership again inside the write.
    let name = store
        .member_name(room, &user)
        .await?
        .ok_or(ChatError::Forbidden("userId is not a member of this room"))?;
    let name = DisplayName::parse(&name).unwrap_or_else(|_| DisplayName::from_user_id(&user));
    let message = NewMessage {
        room,
        user,
        name,
        text,
        client_id,
        reply_to,
    };
    let sent = api.app.writes.send(message, None).await?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(MessageReply {
            message: sent.message,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/rooms/{roomId}/messages", tag = "messages",
    params(("roomId" = Uuid, Path), HistoryParams),
    responses(
        (status = 200, body = HistoryReply),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn history(
    State(api): State<ApiState>,
    ApiPath(room): ApiPath<String>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> ApiResult<Json<HistoryReply>> {
    let room = parse_room(&room)?;
    let limit = params.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ChatError::bad_request(format!("limit must be 1-{MAX_HISTORY_LIMIT}")).into());
    }
    if params.after_seq.is_some_and(|s| s < 0) || params.before_seq.is_some_and(|s| s < 0) {
        return Err(ChatError::bad_request("afterSeq and beforeSeq must be non-negative").into());
    }
    if api.app.store.room_kind(room).await?.is_none() {
        return Err(ChatError::NotFound("room not found").into());
    }
    let query = HistoryQuery {
        before_seq: params.before_seq,
        after_seq: params.after_seq,
        limit,
    };
    let page = api.app.store.history(room, query).await?;
    Ok(Json(HistoryReply {
        messages: page.messages,
        has_more: page.has_more,
    }))
}
