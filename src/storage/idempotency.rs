//! Idempotency keys of the HTTP API, stored in the database so that a repeat is recognised on
//! any node and after a restart.
//!
//! A call claims its key by inserting a pending row (the key is the primary key, so exactly one
//! concurrent caller wins); the winner runs the call and records its outcome, the others find
//! the row and wait for the outcome. A pending row whose call died with its node is taken over
//! after [`PENDING_LEASE`]. Rows live [`KEPT_FOR`]; every node deletes expired ones.

use std::time::Duration;

/// How long a key is remembered.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a pending claim holds before another caller may take it over (its node died).
pub const PENDING_LEASE: Duration = Duration::from_secs(60);

/// A claim on a key: what the call is, and when it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    pub key: String,
    pub method: String,
    pub path: String,
    /// SHA-256 of the body, hex.
    pub body_hash: String,
    /// Unix milliseconds.
    pub now_ms: i64,
}

/// What was found under a key that another call claimed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub method: String,
    pub path: String,
    pub body_hash: String,
    /// `None` while the first call still runs.
    pub outcome: Option<(u16, String)>,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This call holds the key and must run, then record its outcome (or release the key).
    Won,
    /// Another call holds it.
    Taken(IdempotencyRecord),
}

/// Removes the key's row when it expired, or when it is a pending claim past its lease.
pub(super) const CLEAR_STALE: &str = "DELETE FROM api_idempotency WHERE key = $1 \
     AND (created_at < $2 OR (status IS NULL AND created_at < $3))";
pub(super) const CLAIM: &str = "INSERT INTO api_idempotency (key, method, path, body_hash, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING";
pub(super) const FIND: &str =
    "SELECT method, path, body_hash, status, body FROM api_idempotency WHERE key = $1";
pub(super) const RECORD: &str =
    "UPDATE api_idempotency SET status = $2, body = $3 WHERE key = $1 AND status IS NULL";
pub(super) const RELEASE: &str = "DELETE FROM api_idempotency WHERE key = $1 AND status IS NULL";
pub(super) const PURGE: &str = "DELETE FROM api_idempotency WHERE created_at < $1";

type Row = (String, String, String, Option<i32>, Option<String>);

pub(super) fn record_from((method, path, body_hash, status, body): Row) -> IdempotencyRecord {
    let outcome = status.map(|s| (u16::try_from(s).unwrap_or(500), body.unwrap_or_default()));
    IdempotencyRecord {
        method,
        path,
        body_hash,
        outcome,
    }
}

/// The cut-offs of [`CLEAR_STALE`] for a claim made at `now_ms`.
pub(super) fn stale_before(now_ms: i64) -> (i64, i64) {
    (
        now_ms - KEPT_FOR.as_millis() as i64,
        now_ms - PENDING_LEASE.as_millis() as i64,
    )
}

/// The idempotency calls for a backend whose pool is `$pool` (the SQL is the same on both).
macro_rules! backend {
    ($module:ident, $pool:ty) => {
        pub(super) mod $module {
            use super::*;
            use crate::storage::StorageError;

            pub async fn claim(
                pool: &$pool,
                claim: &IdempotencyClaim,
            ) -> Result<Claimed, StorageError> {
                let (expired, abandoned) = stale_before(claim.now_ms);
                // Twice at most: the row found may vanish (expired, released) before it is read.
                for _ in 0..2 {
                    sqlx::query(CLEAR_STALE)
                        .bind(&claim.key)
                        .bind(expired)
                        .bind(abandoned)
                        .execute(pool)
                        .await?;
                    let inserted = sqlx::query(CLAIM)
                        .bind(&claim.key)
                        .bind(&claim.method)
                        .bind(&claim.path)
                        .bind(&claim.body_hash)
                        .bind(claim.now_ms)
                        .execute(pool)
                        .await?;
                    if inserted.rows_affected() == 1 {
                        return Ok(Claimed::Won);
                    }
                    if let Some(row) = find(pool, &claim.key).await? {
                        return Ok(Claimed::Taken(row));
                    }
                }
                Err(StorageError::WriteFailed)
            }

            pub async fn find(
                pool: &$pool,
                key: &str,
            ) -> Result<Option<IdempotencyRecord>, StorageError> {
                let row: Option<Row> = sqlx::query_as(FIND).bind(key).fetch_optional(pool).await?;
                Ok(row.map(record_from))
            }

            pub async fn record(
                pool: &$pool,
                key: &str,
                outcome: Option<(u16, &str)>,
            ) -> Result<(), StorageError> {
                match outcome {
                    Some((status, body)) => {
                        sqlx::query(RECORD)
                            .bind(key)
                            .bind(i32::from(status))
                            .bind(body)
                            .execute(pool)
                            .await?
                    }
                    None => sqlx::query(RELEASE).bind(key).execute(pool).await?,
                };
                Ok(())
            }

            pub async fn purge(pool: &$pool, before_ms: i64) -> Result<u64, StorageError> {
                let done = sqlx::query(PURGE).bind(before_ms).execute(pool).await?;
                Ok(done.rows_affected())
            }
        }
    };
}

backend!(postgres, sqlx::PgPool);
backend!(sqlite, sqlx::SqlitePool);
