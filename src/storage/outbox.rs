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

pub(super) mod postgres {
    use std::collections::HashMap;

    use sqlx::{PgConnection, PgPool};

    use super::*;
    use crate::storage::StorageError;
    use crate::storage::sql::{self, MSG_COLS, q};

    /// On the database's clock, as message.created is, so that the events of one database
    /// keep the order of their changes whatever the nodes' clocks say.
    const ENQUEUE_PG: &str = "INSERT INTO webhook_outbox (id, type, data, created_at, due_at) \
         SELECT $1, $2, $3, t.ms, t.ms \
           FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) t";

    pub async fn enqueue(
        conn: &mut PgConnection,
        entry: &OutboxEntry<'_>,
    ) -> Result<(), sqlx::Error> {
        let insert = q!(
            query,
            ENQUEUE_PG,
            Uuid::now_v7(),
            entry.kind(),
            entry.data()
        );
        insert.execute(conn).await?;
        Ok(())
    }

    /// SKIP LOCKED: nodes claiming at once take different rows instead of queueing.
    const CLAIM: &str = "UPDATE webhook_outbox SET claimed_by = $1, lease_until = $3 \
         WHERE id IN (SELECT id FROM webhook_outbox \
                       WHERE failed_at IS NULL AND due_at <= $2 \
                         AND (lease_until IS NULL OR lease_until < $2) \
                       ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING id, type, message_id, data, created_at, attempts";

    pub async fn claim(
        pool: &PgPool,
        node: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StorageError> {
        let rows: Vec<ClaimedRow<Uuid>> = q!(query_as, CLAIM, node, now, lease_until, limit as i64)
            .fetch_all(pool)
            .await?;
        let wanted: Vec<Uuid> = rows.iter().filter_map(|r| r.2).collect();
        let mut messages = HashMap::new();
        if !wanted.is_empty() {
            let select = format!("SELECT {MSG_COLS} FROM messages WHERE id = ANY($1)");
            for row in q!(query, &select, &wanted).fetch_all(pool).await? {
                let message = sql::message_at(&row, 0)?;
                messages.insert(message.id, message);
            }
        }
        let events = rows
            .into_iter()
            .map(|(id, kind, message, data, created, attempts)| {
                let message = message.and_then(|m| messages.get(&m));
                event_from(id, kind, data, created, attempts, message)
            })
            .collect();
        Ok(in_order(events))
    }

    pub async fn delivered(pool: &PgPool, node: &str, ids: &[Uuid]) -> Result<(), StorageError> {
        let sql = "DELETE FROM webhook_outbox WHERE id = ANY($1) AND claimed_by = $2";
        q!(query, sql, ids, node).execute(pool).await?;
        Ok(())
    }

    pub async fn retry(
        pool: &PgPool,
        node: &str,
        ids: &[Uuid],
        due: i64,
        failed: Option<i64>,
    ) -> Result<(), StorageError> {
        let sql = "UPDATE webhook_outbox SET attempts = attempts + 1, due_at = $3, failed_at = $4, \
                   claimed_by = NULL, lease_until = NULL WHERE id = ANY($1) AND claimed_by = $2";
        q!(query, sql, ids, node, due, failed).execute(pool).await?;
        Ok(())
    }

    pub async fn stats(pool: &PgPool) -> Result<OutboxStats, StorageError> {
        let (pending, failed, oldest): (i64, i64, Option<i64>) =
            sqlx::query_as(STATS).fetch_one(pool).await?;
        Ok(OutboxStats {
            pending: pending.max(0) as u64,
            failed: failed.max(0) as u64,
            oldest_pending_ms: oldest,
        })
    }
}

pub(super) mod sqlite {
    use std::collections::HashMap;

    use sqlx::{SqliteConnection, SqlitePool};
    use uuid::fmt::Hyphenated;

    use super::*;
    use crate::storage::StorageError;
    use crate::storage::sql::{self, MSG_COLS, q};

    fn json_ids(ids: &[Uuid]) -> String {
        let ids: Vec<String> = ids.iter().map(|id| id.hyphenated().to_string()).collect();
        serde_json::Value::from(ids).to_string()
    }

    pub async fn enqueue(
        conn: &mut SqliteConnection,
        entry: &OutboxEntry<'_>,
    ) -> Result<(), sqlx::Error> {
        let id = Uuid::now_v7().hyphenated();
        let insert = q!(query, ENQUEUE, id, entry.kind(), entry.data(), now_ms());
        insert.execute(conn).await?;
        Ok(())
    }

    /// message.created for each stored message of a batch, inside the batch's transaction.
    pub async fn enqueue_messages(
        conn: &mut SqliteConnection,
        messages: &[Message],
    ) -> Result<(), sqlx::Error> {
        if messages.is_empty() {
            return Ok(());
        }
        // A message has one message.created, so its id (a UUIDv7) is the event's id, as on
        // Postgres.
        let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
        let sql = "INSERT INTO webhook_outbox (id, type, message_id, created_at, due_at) \
                   SELECT value, 'message.created', value, $2, $2 FROM json_each($1)";
        q!(query, sql, json_ids(&ids), now_ms())
            .execute(conn)
            .await?;
        Ok(())
    }

    /// One statement, on the one writer connection: a single node claims alone.
    const CLAIM: &str = "UPDATE webhook_outbox SET claimed_by = $1, lease_until = $3 \
         WHERE id IN (SELECT id FROM webhook_outbox \
                       WHERE failed_at IS NULL AND due_at <= $2 \
                         AND (lease_until IS NULL OR lease_until < $2) \
                       ORDER BY due_at LIMIT $4) \
         RETURNING id, type, message_id, data, created_at, attempts";

    pub async fn claim(
        writer: &SqlitePool,
        reader: &SqlitePool,
        node: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StorageError> {
        let select = q!(query_as, CLAIM, node, now, lease_until, limit as i64);
        let rows: Vec<ClaimedRow<Hyphenated>> = select.fetch_all(writer).await?;
        let wanted: Vec<Uuid> = rows
            .iter()
            .filter_map(|r| r.2.map(|m| m.into_uuid()))
            .collect();
        let mut messages = HashMap::new();
        if !wanted.is_empty() {
            let select = format!(
                "SELECT {MSG_COLS} FROM messages WHERE id IN (SELECT value FROM json_each($1))"
            );
            for row in q!(query, &select, json_ids(&wanted))
                .fetch_all(reader)
                .await?
            {
                let message = sql::message_at(&row, 0)?;
                messages.insert(message.id, message);
            }
        }
        let events = rows
            .into_iter()
            .map(|(id, kind, message, data, created, attempts)| {
                let message = message.and_then(|m| messages.get(&m.into_uuid()));
                event_from(id.into_uuid(), kind, data, created, attempts, message)
            })
            .collect();
        Ok(in_order(events))
    }

    pub async fn delivered(
        pool: &SqlitePool,
        node: &str,
        ids: &[Uuid],
    ) -> Result<(), StorageError> {
        let sql = "DELETE FROM webhook_outbox \
                   WHERE id IN (SELECT value FROM json_each($1)) AND claimed_by = $2";
        q!(query, sql, json_ids(ids), node).execute(pool).await?;
        Ok(())
    }

    pub async fn retry(
        pool: &SqlitePool,
        node: &str,
        ids: &[Uuid],
        due: i64,
        failed: Option<i64>,
    ) -> Result<(), StorageError> {
        let sql = "UPDATE webhook_outbox SET attempts = attempts + 1, due_at = $3, failed_at = $4, \
                   claimed_by = NULL, lease_until = NULL \
                   WHERE id IN (SELECT value FROM json_each($1)) AND claimed_by = $2";
        q!(query, sql, json_ids(ids), node, due, failed)
            .execute(pool)
            .await?;
        Ok(())
    }

    pub async fn stats(pool: &SqlitePool) -> Result<OutboxStats, StorageError> {
        let (pending, failed, oldest): (i64, i64, Option<i64>) =
            sqlx::query_as(STATS).fetch_one(pool).await?;
        Ok(OutboxStats {
            pending: pending.max(0) as u64,
            failed: failed.max(0) as u64,
            oldest_pending_ms: oldest,
        })
    }
}
