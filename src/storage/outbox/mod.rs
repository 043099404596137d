//! The webhook outbox (see the migrations `*_webhook_outbox.sql`): change events written in the
//! transaction of their change, claimed by one node at a time for a lease, deleted once
//! delivered, retried later otherwise, and finally marked failed.

use serde_json::Value;
use uuid::Uuid;

use crate::model::{Message, Room};

/// An event to write with its change (message.created is written by the batch itself).
#[derive(Debug, Clone)]
pub enum OutboxEntry<'a> {
    RoomCreated(&'a Room),
    MemberJoined { room: Uuid, user: &'a str },
    MemberLeft { room: Uuid, user: &'a str },
}

impl OutboxEntry<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            OutboxEntry::RoomCreated(_) => "room.created",
            OutboxEntry::MemberJoined { .. } => "member.joined",
            OutboxEntry::MemberLeft { .. } => "member.left",
        }
    }

    pub fn data(&self) -> String {
        let data = match self {
            OutboxEntry::RoomCreated(room) => serde_json::json!({ "room": room }),
            OutboxEntry::MemberJoined { room, user } | OutboxEntry::MemberLeft { room, user } => {
                serde_json::json!({ "roomId": room, "userId": user })
            }
        };
        data.to_string()
    }
}

/// A claimed event, ready to send.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: Uuid,
    pub kind: String,
    /// When the change was stored, unix milliseconds.
    pub created_ms: i64,
    /// Deliveries tried before this one.
    pub attempts: i32,
    pub data: Value,
}

/// The outbox at a glance, for metrics and the operations API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Events waiting for delivery (due or backing off).
    pub pending: u64,
    /// Events given up on after retrying for the configured time.
    pub failed: u64,
    /// Creation time of the oldest pending event, unix milliseconds.
    pub oldest_pending_ms: Option<i64>,
}

/// A claimed row: id, type, message (for message.created), data, created_at, attempts.
pub(super) type ClaimedRow<Id> = (Id, String, Option<Id>, Option<String>, i64, i32);

/// Builds the event of a claimed row; `message` is its message when it names one.
pub(super) fn event_from(
    id: Uuid,
    kind: String,
    data: Option<String>,
    created_ms: i64,
    attempts: i32,
    message: Option<&Message>,
) -> OutboxEvent {
    let data = match (message, data) {
        (Some(message), _) => serde_json::json!({ "message": message }),
        (None, Some(text)) => serde_json::from_str(&text).unwrap_or(Value::Null),
        (None, None) => Value::Null,
    };
    OutboxEvent {
        id,
        kind,
        created_ms,
        attempts,
        data,
    }
}

pub(super) const STATS: &str = "SELECT \
       COALESCE(SUM(CASE WHEN failed_at IS NULL THEN 1 ELSE 0 END), 0), \
       COALESCE(SUM(CASE WHEN failed_at IS NULL THEN 0 ELSE 1 END), 0), \
       MIN(CASE WHEN failed_at IS NULL THEN created_at END) \
     FROM webhook_outbox";

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Orders a claimed batch as the changes happened.
pub(super) fn in_order(mut events: Vec<OutboxEvent>) -> Vec<OutboxEvent> {
    events.sort_by_key(|e| (e.created_ms, e.id));
    events
}

/// SQLite's enqueue: one node, one clock.
pub(super) const ENQUEUE: &str = "INSERT INTO webhook_outbox (id, type, data, created_at, due_at) \
     VALUES ($1, $2, $3, $4, $4)";

pub(super) mod postgres;
pub(super) mod sqlite;
