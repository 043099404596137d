//! Postgres backend, for clusters: every guarantee of [`Store`] holds across nodes because it
//! rests on row locks and unique constraints in the database, never on process-local state.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::sql::{self, Columns, q};
use super::{
    Claimed, HistoryPage, HistoryQuery, IdempotencyClaim, IdempotencyRecord, NewMessage, NewRoom,
    OutboxEvent, OutboxStats, ReadMark, SeenUser, SendOutcome, StorageError, Store, idempotency,
    outbox,
};
use crate::domain::{RoomId, RoomKind, RoomName, UserId};
use crate::model::{MemberRecord, Room};
use outbox::OutboxEntry;

mod send;
mod writers;

use writers::Writers;

pub struct PostgresStore {
    pool: PgPool,
    /// The write path's own connections, one per batch in flight, kept open: the shared pool
    /// hands its connections out in turn, so each batch met a backend whose caches had gone
    /// cold, and Postgres spent about a fifth more CPU (0.22-0.27 vs 0.17-0.18 cores at 2000
    /// msg/s, `sioload fanout` 20 rooms x 10 members); a write never waits behind a storm of
    /// reads for a connection either.
    writers: Writers,
    /// Whether changes write their webhook events (webhooks are configured).
    outbox: bool,
}

impl PostgresStore {
    /// `max_connections` serve everything but [`Store::send_batch`], which has `writers`
    /// connections of its own.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        writers: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StorageError> {
        let options = || {
            PgPoolOptions::new()
                // Long enough for a reconnect storm's reads to queue on the pool: a database
                // that refuses connections fails a request at once anyway (sends:
                // `unavailable`).
                .acquire_timeout(acquire_timeout)
                // A ping before every query would double the round trips of the write path; a
                // broken connection fails its query instead, which the caller reports and
                // retries.
                .test_before_acquire(false)
        };
        let connect_options: PgConnectOptions = url.parse()?;
        let pool = options()
            .max_connections(max_connections.max(1))
            .connect_with(connect_options.clone())
            .await?;
        // sqlx takes an advisory lock, so nodes starting together migrate once.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let writers =
            Writers::open(connect_options, writers.max(1) as usize, acquire_timeout).await?;
        Ok(Self {
            pool,
            writers,
            outbox: false,
        })
    }

    /// Writes webhook events with their changes (`outbox/`).
    pub fn with_outbox(mut self, on: bool) -> Self {
        self.outbox = on;
        self
    }

    async fn room_by_id(&self, room: RoomId, viewer: &UserId) -> Result<Room, StorageError> {
        self.room(room, viewer)
            .await?
            .ok_or(StorageError::RoomNotFound)
    }
}

/// Removes a member under its room's row lock: a message batch holds that lock while it checks
/// its senders' membership (`STORE_WHOLE` in `send.rs` through the read-mark update,
/// `confab_send_batch` with a query), so a send racing this leave is either stored before it or
/// refused (migrations/postgres/20261207000000_send_batch_room_lock_only.sql).
const REMOVE_MEMBER: &str = "WITH room AS (SELECT id FROM rooms WHERE id = $1 FOR NO KEY UPDATE) \
     DELETE FROM members m USING room WHERE m.room_id = room.id AND m.user_id = $2";

impl Columns for PgRow {
    fn uuid_at(&self, at: usize) -> Result<Option<Uuid>, sqlx::Error> {
        self.try_get(at)
    }
    fn time_at(&self, at: usize) -> Result<DateTime<Utc>, sqlx::Error> {
        self.try_get(at)
    }
    fn int_at(&self, at: usize) -> Result<i64, sqlx::Error> {
        self.try_get(at)
    }
    fn text_at(&self, at: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get(at)
    }
}

/// Creates users never seen before, named by their id. Sorted so that concurrent transactions
/// lock new user rows in one order and cannot deadlock.
async fn ensure_users(conn: &mut PgConnection, ids: &[&str]) -> Result<(), sqlx::Error> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let sql = "INSERT INTO users (id, name) SELECT u, u FROM unnest($1::text[]) AS t(u) ORDER BY u \
               ON CONFLICT (id) DO NOTHING";
    q!(query, sql, ids).execute(conn).await?;
    Ok(())
}

/// Adds members of a new room, read mark 0.
async fn insert_members(
    conn: &mut PgConnection,
    room: Uuid,
    ids: &[&str],
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO members (room_id, user_id) SELECT $1, u FROM unnest($2::text[]) AS t(u) \
               ON CONFLICT DO NOTHING";
    q!(query, sql, room, ids).execute(conn).await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn record_seen(&self, users: &[SeenUser]) -> Result<(), StorageError> {
        let mut users: Vec<&SeenUser> = users.iter().collect();
        // One order for every node's batch, so concurrent upserts cannot deadlock.
        users.sort_unstable_by(|a, b| a.user.cmp(&b.user));
        users.dedup_by(|a, b| a.user == b.user);
        let ids: Vec<&str> = users.iter().map(|u| u.user.as_str()).collect();
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        let times: Vec<DateTime<Utc>> = users.iter().map(|u| u.at).collect();
        let sql = "INSERT INTO users (id, name, seen_at) \
                   SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) \
                   ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, \
                   seen_at = GREATEST(users.seen_at, EXCLUDED.seen_at)";
        q!(query, sql, ids, names, times)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_room(&self, room: NewRoom) -> Result<Room, StorageError> {
        let id = RoomId::new();
        let mut ids = vec![room.creator.as_str()];
        ids.extend(room.members.iter().map(UserId::as_str));
        let mut tx = self.pool.begin().await?;
        ensure_users(&mut tx, &ids).await?;
        let sql = "INSERT INTO rooms (id, name, kind, created_by) VALUES ($1, $2, $3, $4)";
        let (name, kind) = (room.name.as_str(), room.kind.as_str());
        let insert = q!(query, sql, id.0, name, kind, room.creator.as_str());
        insert.execute(&mut *tx).await?;
        insert_members(&mut tx, id.0, &ids).await?;
        if self.outbox {
            let created = sql::new_room(id, &room.name, room.kind, ids.len());
            outbox::postgres::enqueue(&mut tx, &OutboxEntry::RoomCreated(&created)).await?;
        }
        tx.commit().await?;
        self.room_by_id(id, &room.creator).await
    }

    async fn direct_room(&self, me: &UserId, other: &UserId) -> Result<(Room, bool), StorageError> {
        let (key, pair) = sql::direct_key(me, other);
        let pair = [pair[0].as_str(), pair[1].as_str()];
        let fresh = RoomId::new();
        let mut tx = self.pool.begin().await?;
        ensure_users(&mut tx, &pair).await?;
        // A concurrent creator of the same key makes this wait for its commit and then do
        // nothing; read committed then lets the SELECT below see the winner's room.
        let sql = "INSERT INTO rooms (id, name, kind, direct_key, created_by) \
                   VALUES ($1, $2, 'direct', $3, $4) ON CONFLICT (direct_key) DO NOTHING";
        let name = RoomName::direct();
        let insert = q!(query, sql, fresh.0, name.as_str(), &key, me.as_str());
        let created = insert.execute(&mut *tx).await?.rows_affected() == 1;
        let id = if created {
            insert_members(&mut tx, fresh.0, &pair).await?;
            if self.outbox {
                let room = sql::new_room(fresh, &name, RoomKind::Direct, 2);
                outbox::postgres::enqueue(&mut tx, &OutboxEntry::RoomCreated(&room)).await?;
            }
            fresh
        } else {
            let sql = "SELECT id FROM rooms WHERE direct_key = $1";
            RoomId(q!(query_scalar, sql, &key).fetch_one(&mut *tx).await?)
        };
        tx.commit().await?;
        Ok((self.room_by_id(id, me).await?, created))
    }

    async fn room_kind(&self, room: RoomId) -> Result<Option<RoomKind>, StorageError> {
        let kind: Option<String> = q!(query_scalar, sql::ROOM_KIND, room.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(kind.map(|k| sql::kind_from(&k)).transpose()?)
    }

    async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let select = q!(query_scalar, sql::IS_MEMBER, room.0, user.as_str());
        Ok(select.fetch_one(&self.pool).await?)
    }

    async fn member_name(
        &self,
        room: RoomId,
        user: &UserId,
    ) -> Result<Option<String>, StorageError> {
        let select = q!(query_scalar, sql::MEMBER_NAME, room.0, user.as_str());
        Ok(select.fetch_optional(&self.pool).await?)
    }

    async fn room(&self, room: RoomId, viewer: &UserId) -> Result<Option<Room>, StorageError> {
        let sql = format!("{} {}", sql::ROOM_SELECT, sql::ROOM_BY_ID);
        let row = q!(query, &sql, viewer.as_str(), room.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(sql::room_from).transpose()?)
    }

    async fn add_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let mut tx = self.pool.begin().await?;
        ensure_users(&mut tx, &[user.as_str()]).await?;
        let sql = "INSERT INTO members (room_id, user_id, read_seq) \
                   SELECT id, $2, last_seq FROM rooms WHERE id = $1 ON CONFLICT DO NOTHING";
        let insert = q!(query, sql, room.0, user.as_str());
        let added = insert.execute(&mut *tx).await?.rows_affected() == 1;
        if !added
            && !q!(query_scalar, sql::ROOM_EXISTS, room.0)
                .fetch_one(&mut *tx)
                .await?
        {
            return Err(StorageError::RoomNotFound);
        }
        if added && self.outbox {
            let joined = OutboxEntry::MemberJoined {
                room: room.0,
                user: user.as_str(),
            };
            outbox::postgres::enqueue(&mut tx, &joined).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let delete = q!(query, REMOVE_MEMBER, room.0, user.as_str());
        if !self.outbox {
            return Ok(delete.execute(&self.pool).await?.rows_affected() > 0);
        }
        let mut tx = self.pool.begin().await?;
        let removed = delete.execute(&mut *tx).await?.rows_affected() > 0;
        if removed {
            let left = OutboxEntry::MemberLeft {
                room: room.0,
                user: user.as_str(),
            };
            outbox::postgres::enqueue(&mut tx, &left).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<Room>, StorageError> {
        let sql = format!("{} {}", sql::ROOM_SELECT, sql::ROOMS_OF);
        let rows = q!(query, &sql, user.as_str()).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(sql::room_from).collect::<Result<_, _>>()?)
    }

    async fn room_ids_of(&self, user: &UserId) -> Result<Vec<RoomId>, StorageError> {
        let ids: Vec<Uuid> = q!(query_scalar, sql::ROOM_IDS_OF, user.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(ids.into_iter().map(RoomId).collect())
    }

    async fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StorageError> {
        let rows: Vec<(String, String)> = q!(query_as, sql::MEMBERS, room.0)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(sql::member_from)
            .collect::<Result<_, _>>()?)
    }

    async fn send_batch(&self, batch: &[NewMessage]) -> Result<Vec<SendOutcome>, StorageError> {
        let mut conn = self.writers.take().await?;
        let outcome = send::send_batch(&mut conn, self.outbox, batch).await;
        self.writers.finish(conn, &outcome);
        outcome
    }

    async fn history(&self, room: RoomId, q: HistoryQuery) -> Result<HistoryPage, StorageError> {
        let (after, before, limit) = sql::history_bounds(&q);
        let sql = sql::history_sql(&q);
        let rows = q!(query, &sql, room.0, after, before, limit)
            .fetch_all(&self.pool)
            .await?;
        let messages = rows
            .iter()
            .map(|r| sql::message_at(r, 0))
            .collect::<Result<_, _>>()?;
        Ok(sql::history_page(messages, &q))
    }

    async fn mark_read(
        &self,
        room: RoomId,
        user: &UserId,
        seq: i64,
    ) -> Result<ReadMark, StorageError> {
        // Updating only when the mark moves makes `moved` exact under concurrent calls: a
        // waiting UPDATE re-checks its WHERE against the row the other one committed.
        let sql = "UPDATE members m SET read_seq = LEAST($3, r.last_seq) FROM rooms r \
                   WHERE r.id = m.room_id AND m.room_id = $1 AND m.user_id = $2 \
                     AND m.read_seq < LEAST($3, r.last_seq) \
                   RETURNING m.read_seq";
        let update = q!(query_scalar, sql, room.0, user.as_str(), seq);
        if let Some(seq) = update.fetch_optional(&self.pool).await? {
            return Ok(ReadMark { seq, moved: true });
        }
        let current = q!(query_scalar, sql::READ_MARK, room.0, user.as_str());
        match current.fetch_optional(&self.pool).await? {
            Some(seq) => Ok(ReadMark { seq, moved: false }),
            None if self.room_kind(room).await?.is_none() => Err(StorageError::RoomNotFound),
            None => Ok(ReadMark {
                seq: 0,
                moved: false,
            }),
        }
    }

    async fn count_rooms(&self) -> Result<u64, StorageError> {
        let count: i64 = sqlx::query_scalar(sql::COUNT_ROOMS)
            .fetch_one(&self.pool)
            .await?;
        Ok(count.max(0) as u64)
    }

    async fn claim_idempotency(&self, claim: &IdempotencyClaim) -> Result<Claimed, StorageError> {
        idempotency::postgres::claim(&self.pool, claim).await
    }

    async fn find_idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StorageError> {
        idempotency::postgres::find(&self.pool, key).await
    }

    async fn record_idempotency(
        &self,
        key: &str,
        outcome: Option<(u16, &str)>,
    ) -> Result<(), StorageError> {
        idempotency::postgres::record(&self.pool, key, outcome).await
    }

    async fn purge_idempotency(&self, before_ms: i64) -> Result<u64, StorageError> {
        idempotency::postgres::purge(&self.pool, before_ms).await
    }

    async fn claim_outbox(
        &self,
        node: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StorageError> {
        outbox::postgres::claim(&self.pool, node, now_ms, lease_until_ms, limit).await
    }

    async fn outbox_delivered(&self, node: &str, ids: &[Uuid]) -> Result<(), StorageError> {
        outbox::postgres::delivered(&self.pool, node, ids).await
    }

    async fn outbox_retry(
        &self,
        node: &str,
        ids: &[Uuid],
        due_ms: i64,
        failed_ms: Option<i64>,
    ) -> Result<(), StorageError> {
        outbox::postgres::retry(&self.pool, node, ids, due_ms, failed_ms).await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StorageError> {
        outbox::postgres::stats(&self.pool).await
    }

    async fn close(&self) {
        tokio::join!(self.pool.close(), self.writers.close());
    }
}
