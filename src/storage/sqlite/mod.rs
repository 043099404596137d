//! SQLite backend, the single-node default. All writes go through one connection, so they
//! serialize in this process and the per-room seq needs no further locking; reads use their own
//! pool, which WAL lets run beside the writer. A batch of messages is one `BEGIN IMMEDIATE …
//! COMMIT` (one fsync, `synchronous=FULL`) of a handful of statements, whatever its size.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection, sqlite::SqliteRow};
use uuid::{Uuid, fmt::Hyphenated};

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

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Whether changes write their webhook events (webhooks are configured).
    outbox: bool,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let base = SqliteConnectOptions::from_str(url)?
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // An in-memory database lives in its connections, not a file: one pool must serve all.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let file = base.get_filename();
        if !in_memory && let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        let mut writer = SqlitePoolOptions::new().max_connections(1);
        if in_memory {
            writer = writer
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        // FULL: a commit (and so an ack) means the message survives a power cut, in WAL mode too.
        let options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let writer = writer.connect_with(options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = if in_memory {
            writer.clone()
        } else {
            // Opened only now that the writer has created the file and switched it to WAL.
            let readers = SqlitePoolOptions::new().max_connections(8);
            readers.connect_with(base.read_only(true)).await?
        };
        Ok(Self {
            writer,
            reader,
            outbox: false,
        })
    }

    /// Writes webhook events with their changes (`outbox/`).
    pub fn with_outbox(mut self, on: bool) -> Self {
        self.outbox = on;
        self
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        // IMMEDIATE takes the write lock up front: a transaction that reads before it writes
        // cannot fail to upgrade its lock if another process shares the file.
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    async fn room_by_id(&self, room: RoomId, viewer: &UserId) -> Result<Room, StorageError> {
        self.room(room, viewer)
            .await?
            .ok_or(StorageError::RoomNotFound)
    }
}

impl Columns for SqliteRow {
    fn uuid_at(&self, at: usize) -> Result<Option<Uuid>, sqlx::Error> {
        Ok(self
            .try_get::<Option<Hyphenated>, _>(at)?
            .map(Hyphenated::into_uuid))
    }
    fn time_at(&self, at: usize) -> Result<DateTime<Utc>, sqlx::Error> {
        time_from(self.try_get(at)?)
    }
    fn int_at(&self, at: usize) -> Result<i64, sqlx::Error> {
        self.try_get(at)
    }
    fn text_at(&self, at: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get(at)
    }
}

/// Timestamps are stored as unix microseconds, the precision Postgres keeps.
fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn time_from(micros: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| sql::decode_err(format!("time {micros}")))
}

/// Rows as a JSON array, so one statement can read or write them all through `json_each`.
fn json_rows(rows: &impl serde::Serialize) -> Result<String, sqlx::Error> {
    serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(e.into()))
}

/// Creates users never seen before, named by their id.
async fn ensure_users(conn: &mut SqliteConnection, ids: &[&str]) -> Result<(), sqlx::Error> {
    // The WHERE is what SQLite needs to parse an upsert on INSERT ... SELECT.
    let sql = "INSERT INTO users (id, name, created_at) \
               SELECT value, value, $2 FROM json_each($1) WHERE true ON CONFLICT (id) DO NOTHING";
    q!(query, sql, json_rows(&ids)?, now_micros())
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds members of a new room, read mark 0.
async fn insert_members(
    conn: &mut SqliteConnection,
    room: Uuid,
    ids: &[&str],
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO members (room_id, user_id, read_seq, joined_at) \
               SELECT $1, value, 0, $3 FROM json_each($2) WHERE true ON CONFLICT DO NOTHING";
    let insert = q!(
        query,
        sql,
        room.hyphenated(),
        json_rows(&ids)?,
        now_micros()
    );
    insert.execute(conn).await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn record_seen(&self, users: &[SeenUser]) -> Result<(), StorageError> {
        let rows: Vec<_> = users
            .iter()
            .map(|u| (u.user.as_str(), u.name.as_str(), u.at.timestamp_micros()))
            .collect();
        let sql = "INSERT INTO users (id, name, created_at, seen_at) \
                   SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 2 FROM json_each($1) \
                   WHERE true ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                   seen_at = MAX(COALESCE(seen_at, 0), excluded.seen_at)";
        q!(query, sql, json_rows(&rows)?)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn release_memory(&self) {
        // The writer's page cache keeps what a connect storm's last-seen writes read (~1 MB of
        // the users table for 10,000 new users, of its 2 MB cap); it refills on demand.
        if let Err(e) = sqlx::query("PRAGMA shrink_memory")
            .execute(&self.writer)
            .await
        {
            tracing::debug!(error = %e, "SQLite cache not shrunk");
        }
    }

    async fn create_room(&self, room: NewRoom) -> Result<Room, StorageError> {
        let id = RoomId::new();
        let mut ids = vec![room.creator.as_str()];
        ids.extend(room.members.iter().map(UserId::as_str));
        let mut tx = self.begin().await?;
        ensure_users(&mut tx, &ids).await?;
        let sql = "INSERT INTO rooms (id, name, kind, created_by, created_at) \
                   VALUES ($1, $2, $3, $4, $5)";
        let (name, kind, creator) = (room.name.as_str(), room.kind.as_str(), &room.creator);
        let insert = q!(
            query,
            sql,
            id.0.hyphenated(),
            name,
            kind,
            creator.as_str(),
            now_micros()
        );
        insert.execute(&mut *tx).await?;
        insert_members(&mut tx, id.0, &ids).await?;
        if self.outbox {
            let created = sql::new_room(id, &room.name, room.kind, ids.len());
            outbox::sqlite::enqueue(&mut tx, &OutboxEntry::RoomCreated(&created)).await?;
        }
        tx.commit().await?;
        self.room_by_id(id, creator).await
    }

    async fn direct_room(&self, me: &UserId, other: &UserId) -> Result<(Room, bool), StorageError> {
        let (key, pair) = sql::direct_key(me, other);
        let pair = [pair[0].as_str(), pair[1].as_str()];
        let fresh = RoomId::new();
        let mut tx = self.begin().await?;
        ensure_users(&mut tx, &pair).await?;
        let sql = "INSERT INTO rooms (id, name, kind, direct_key, created_by, created_at) \
                   VALUES ($1, $2, 'direct', $3, $4, $5) ON CONFLICT (direct_key) DO NOTHING";
        let (id, name) = (fresh.0.hyphenated(), RoomName::direct());
        let insert = q!(
            query,
            sql,
            id,
            name.as_str(),
            &key,
            me.as_str(),
            now_micros()
        );
        let created = insert.execute(&mut *tx).await?.rows_affected() == 1;
        let id = if created {
            insert_members(&mut tx, fresh.0, &pair).await?;
            if self.outbox {
                let room = sql::new_room(fresh, &name, RoomKind::Direct, 2);
                outbox::sqlite::enqueue(&mut tx, &OutboxEntry::RoomCreated(&room)).await?;
            }
            fresh
        } else {
            let sql = "SELECT id FROM rooms WHERE direct_key = $1";
            let id: Hyphenated = q!(query_scalar, sql, &key).fetch_one(&mut *tx).await?;
            RoomId(id.into_uuid())
        };
        tx.commit().await?;
        Ok((self.room_by_id(id, me).await?, created))
    }

    async fn room_kind(&self, room: RoomId) -> Result<Option<RoomKind>, StorageError> {
        let select = q!(query_scalar, sql::ROOM_KIND, room.0.hyphenated());
        let kind: Option<String> = select.fetch_optional(&self.reader).await?;
        Ok(kind.map(|k| sql::kind_from(&k)).transpose()?)
    }

    async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let select = q!(
            query_scalar,
            sql::IS_MEMBER,
            room.0.hyphenated(),
            user.as_str()
        );
        Ok(select.fetch_one(&self.reader).await?)
    }

    async fn member_name(
        &self,
        room: RoomId,
        user: &UserId,
    ) -> Result<Option<String>, StorageError> {
        let select = q!(
            query_scalar,
            sql::MEMBER_NAME,
            room.0.hyphenated(),
            user.as_str()
        );
        Ok(select.fetch_optional(&self.reader).await?)
    }

    async fn room(&self, room: RoomId, viewer: &UserId) -> Result<Option<Room>, StorageError> {
        let sql = format!("{} {}", sql::ROOM_SELECT, sql::ROOM_BY_ID);
        let select = q!(query, &sql, viewer.as_str(), room.0.hyphenated());
        let row = select.fetch_optional(&self.reader).await?;
        Ok(row.as_ref().map(sql::room_from).transpose()?)
    }

    async fn add_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let mut tx = self.begin().await?;
        ensure_users(&mut tx, &[user.as_str()]).await?;
        let sql = "INSERT INTO members (room_id, user_id, read_seq, joined_at) \
                   SELECT id, $2, last_seq, $3 FROM rooms WHERE id = $1 ON CONFLICT DO NOTHING";
        let insert = q!(query, sql, room.0.hyphenated(), user.as_str(), now_micros());
        let added = insert.execute(&mut *tx).await?.rows_affected() == 1;
        let exists = q!(query_scalar, sql::ROOM_EXISTS, room.0.hyphenated());
        if !added && !exists.fetch_one(&mut *tx).await? {
            return Err(StorageError::RoomNotFound);
        }
        if added && self.outbox {
            let joined = OutboxEntry::MemberJoined {
                room: room.0,
                user: user.as_str(),
            };
            outbox::sqlite::enqueue(&mut tx, &joined).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let delete = q!(
            query,
            sql::REMOVE_MEMBER,
            room.0.hyphenated(),
            user.as_str()
        );
        if !self.outbox {
            return Ok(delete.execute(&self.writer).await?.rows_affected() > 0);
        }
        let mut tx = self.begin().await?;
        let removed = delete.execute(&mut *tx).await?.rows_affected() > 0;
        if removed {
            let left = OutboxEntry::MemberLeft {
                room: room.0,
                user: user.as_str(),
            };
            outbox::sqlite::enqueue(&mut tx, &left).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<Room>, StorageError> {
        let sql = format!("{} {}", sql::ROOM_SELECT, sql::ROOMS_OF);
        let rows = q!(query, &sql, user.as_str())
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(sql::room_from).collect::<Result<_, _>>()?)
    }

    async fn room_ids_of(&self, user: &UserId) -> Result<Vec<RoomId>, StorageError> {
        let select = q!(query_scalar, sql::ROOM_IDS_OF, user.as_str());
        let ids: Vec<Hyphenated> = select.fetch_all(&self.reader).await?;
        Ok(ids.into_iter().map(|id| RoomId(id.into_uuid())).collect())
    }

    async fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StorageError> {
        let select = q!(query_as, sql::MEMBERS, room.0.hyphenated());
        let rows: Vec<(String, String)> = select.fetch_all(&self.reader).await?;
        Ok(rows
            .into_iter()
            .map(sql::member_from)
            .collect::<Result<_, _>>()?)
    }

    async fn send_batch(&self, batch: &[NewMessage]) -> Result<Vec<SendOutcome>, StorageError> {
        let mut tx = self.begin().await?;
        let outcomes = send::store(&mut tx, self.outbox, batch).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn history(&self, room: RoomId, q: HistoryQuery) -> Result<HistoryPage, StorageError> {
        let (after, before, limit) = sql::history_bounds(&q);
        let sql = sql::history_sql(&q);
        let select = q!(query, &sql, room.0.hyphenated(), after, before, limit);
        let rows = select.fetch_all(&self.reader).await?;
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
        let (id, user) = (room.0.hyphenated(), user.as_str());
        let mut tx = self.begin().await?;
        let sql = "UPDATE members SET read_seq = MIN($3, (SELECT last_seq FROM rooms WHERE id = $1)) \
                   WHERE room_id = $1 AND user_id = $2 \
                     AND read_seq < MIN($3, (SELECT last_seq FROM rooms WHERE id = $1)) \
                   RETURNING read_seq";
        let update = q!(query_scalar, sql, id, user, seq);
        let mark = if let Some(seq) = update.fetch_optional(&mut *tx).await? {
            ReadMark { seq, moved: true }
        } else {
            let select = q!(query_scalar, sql::READ_MARK, id, user);
            match select.fetch_optional(&mut *tx).await? {
                Some(seq) => ReadMark { seq, moved: false },
                None if !q!(query_scalar, sql::ROOM_EXISTS, id)
                    .fetch_one(&mut *tx)
                    .await? =>
                {
                    return Err(StorageError::RoomNotFound);
                }
                None => ReadMark {
                    seq: 0,
                    moved: false,
                },
            }
        };
        tx.commit().await?;
        Ok(mark)
    }

    async fn count_rooms(&self) -> Result<u64, StorageError> {
        let count: i64 = sqlx::query_scalar(sql::COUNT_ROOMS)
            .fetch_one(&self.reader)
            .await?;
        Ok(count.max(0) as u64)
    }

    // On the writer: a claim is read right after it is written.
    async fn claim_idempotency(&self, claim: &IdempotencyClaim) -> Result<Claimed, StorageError> {
        idempotency::sqlite::claim(&self.writer, claim).await
    }

    async fn find_idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StorageError> {
        idempotency::sqlite::find(&self.writer, key).await
    }

    async fn record_idempotency(
        &self,
        key: &str,
        outcome: Option<(u16, &str)>,
    ) -> Result<(), StorageError> {
        idempotency::sqlite::record(&self.writer, key, outcome).await
    }

    async fn purge_idempotency(&self, before_ms: i64) -> Result<u64, StorageError> {
        idempotency::sqlite::purge(&self.writer, before_ms).await
    }

    // Claims and their releases write, so they go on the writer.
    async fn claim_outbox(
        &self,
        node: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StorageError> {
        let (writer, reader) = (&self.writer, &self.reader);
        outbox::sqlite::claim(writer, reader, node, now_ms, lease_until_ms, limit).await
    }

    async fn outbox_delivered(&self, node: &str, ids: &[Uuid]) -> Result<(), StorageError> {
        outbox::sqlite::delivered(&self.writer, node, ids).await
    }

    async fn outbox_retry(
        &self,
        node: &str,
        ids: &[Uuid],
        due_ms: i64,
        failed_ms: Option<i64>,
    ) -> Result<(), StorageError> {
        outbox::sqlite::retry(&self.writer, node, ids, due_ms, failed_ms).await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StorageError> {
        outbox::sqlite::stats(&self.reader).await
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
