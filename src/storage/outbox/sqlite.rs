//! The outbox on SQLite: one node, one writer connection.

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

pub async fn delivered(pool: &SqlitePool, node: &str, ids: &[Uuid]) -> Result<(), StorageError> {
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
