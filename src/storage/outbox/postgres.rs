//! The outbox on Postgres: claims with `FOR UPDATE SKIP LOCKED`, so nodes never wait on
//! each other's claims.

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

pub async fn enqueue(conn: &mut PgConnection, entry: &OutboxEntry<'_>) -> Result<(), sqlx::Error> {
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
