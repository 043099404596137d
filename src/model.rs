//! The objects of the wire contract, as they are serialized to clients.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{RoomId, RoomKind, UserId};

/// A stored chat message.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: Uuid,
    #[schema(value_type = Uuid)]
    pub room_id: RoomId,
    pub seq: i64,
    pub user_id: String,
    pub name: String,
    pub text: String,
    pub client_id: Option<String>,
    pub reply_to: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// A room as one user sees it (`unread` is that user's).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    #[schema(value_type = Uuid)]
    pub id: RoomId,
    pub name: String,
    pub kind: RoomKind,
    pub member_count: i64,
    pub last_seq: i64,
    pub unread: i64,
    pub last_message: Option<Message>,
}

/// A member of a room, before presence is known.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRecord {
    pub user_id: UserId,
    pub name: String,
}

/// A member of a room as sent to clients.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub name: String,
    pub online: bool,
}
