//! SQLite backend, the single-node default. All writes go through one connection, so they
//! serialize in this process and the per-room seq needs no further locking; reads use their own
//! pool, which WAL lets run beside the writer.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, SqliteConnection, sqlite::SqliteRow};
use uuid::{Uuid, fmt::Hyphenated};

use super::{HistoryPage, HistoryQuery, NewMessage, NewRoom, ReadMark, Sent, StorageError, Store};
use crate::domain::{DisplayName, RoomId, RoomKind, RoomName, UserId};
use crate::model::{MemberRecord, Message, Room};

/// `q!(query, sql, a, b)` is `sqlx::query(sql).bind(a).bind(b)`; also for `query_scalar`.
macro_rules! q {
    ($f:ident, $sql:expr $(, $arg:expr)* $(,)?) => { sqlx::$f($sql)$(.bind($arg))* };
}

/// Columns read by [`message_at`], in its order.
const MSG_COLS: &str = "id, room_id, seq, user_id, name, text, client_id, reply_to, created_at";

/// A room as viewer `?1` sees it (`unread` 0 for a non-member), read by [`room_from`]. The
/// newest message is joined in so that listing rooms takes one query, not one per room.
const ROOM_SELECT: &str = "SELECT r.id, r.name, r.kind, r.last_seq, \
       (SELECT count(*) FROM members c WHERE c.room_id = r.id), \
       COALESCE(r.last_seq - v.read_seq, 0), \
       m.id, m.room_id, m.seq, m.user_id, m.name, m.text, m.client_id, m.reply_to, m.created_at \
     FROM rooms r \
     LEFT JOIN members v ON v.room_id = r.id AND v.user_id = ?1 \
     LEFT JOIN messages m ON m.room_id = r.id AND m.seq = r.last_seq";

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
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
        let options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let writer = writer.connect_with(options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = if in_memory {
            writer.clone()
        } else {
            // Opened only now that the writer has created the file and switched it to WAL.
            let readers = SqlitePoolOptions::new().max_connections(8);
            readers.connect_with(base.read_only(true)).await?
        };
        Ok(Self { writer, reader })
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        // IMMEDIATE takes the write lock up front: a transaction that reads before it writes
        // cannot fail to upgrade its lock if another process shares the file.
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    async fn by_client_id(
        &self,
        room: Uuid,
        user: &UserId,
        client_id: &str,
    ) -> Result<Option<Message>, StorageError> {
        let sql = format!(
            "SELECT {MSG_COLS} FROM messages WHERE room_id = ?1 AND user_id = ?2 AND client_id = ?3"
        );
        let select = q!(query, &sql, room.hyphenated(), user.as_str(), client_id);
        let row = select.fetch_optional(&self.reader).await?;
        Ok(row.map(|r| message_at(&r, 0)).transpose()?)
    }
}

fn decode_err(msg: String) -> sqlx::Error {
    sqlx::Error::Decode(msg.into())
}

fn kind_from(raw: &str) -> Result<RoomKind, sqlx::Error> {
    RoomKind::from_db(raw).ok_or_else(|| decode_err(format!("room kind {raw:?}")))
}

/// Timestamps are stored as unix microseconds, the precision Postgres keeps.
fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn time_from(micros: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| decode_err(format!("time {micros}")))
}

fn uuid_at(row: &SqliteRow, at: usize) -> Result<Option<Uuid>, sqlx::Error> {
    Ok(row
        .try_get::<Option<Hyphenated>, _>(at)?
        .map(Hyphenated::into_uuid))
}

fn required_uuid_at(row: &SqliteRow, at: usize) -> Result<Uuid, sqlx::Error> {
    uuid_at(row, at)?.ok_or_else(|| decode_err(format!("NULL uuid in column {at}")))
}

/// Reads the [`MSG_COLS`] columns starting at column `at`.
fn message_at(row: &SqliteRow, at: usize) -> Result<Message, sqlx::Error> {
    Ok(Message {
        id: required_uuid_at(row, at)?,
        room_id: RoomId(required_uuid_at(row, at + 1)?),
        seq: row.try_get(at + 2)?,
        user_id: row.try_get(at + 3)?,
        name: row.try_get(at + 4)?,
        text: row.try_get(at + 5)?,
        client_id: row.try_get(at + 6)?,
        reply_to: uuid_at(row, at + 7)?,
        created_at: time_from(row.try_get(at + 8)?)?,
    })
}

fn room_from(row: &SqliteRow) -> Result<Room, sqlx::Error> {
    let kind: String = row.try_get(2)?;
    let has_message = uuid_at(row, 6)?.is_some();
    Ok(Room {
        id: RoomId(required_uuid_at(row, 0)?),
        name: row.try_get(1)?,
        kind: kind_from(&kind)?,
        last_seq: row.try_get(3)?,
        member_count: row.try_get(4)?,
        unread: row.try_get(5)?,
        last_message: has_message.then(|| message_at(row, 6)).transpose()?,
    })
}

/// Ids as a JSON array, so one statement can insert them all through `json_each`.
fn json_ids(ids: &[&str]) -> Result<String, sqlx::Error> {
    serde_json::to_string(ids).map_err(|e| sqlx::Error::Encode(e.into()))
}

/// Creates users never seen before, named by their id.
async fn ensure_users(conn: &mut SqliteConnection, ids: &[&str]) -> Result<(), sqlx::Error> {
    // The WHERE is what SQLite needs to parse an upsert on INSERT ... SELECT.
    let sql = "INSERT INTO users (id, name, created_at) \
               SELECT value, value, ?2 FROM json_each(?1) WHERE true ON CONFLICT (id) DO NOTHING";
    q!(query, sql, json_ids(ids)?, now_micros())
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
               SELECT ?1, value, 0, ?3 FROM json_each(?2) WHERE true ON CONFLICT DO NOTHING";
    let insert = q!(query, sql, room.hyphenated(), json_ids(ids)?, now_micros());
    insert.execute(conn).await?;
    Ok(())
}

async fn room_exists(conn: &mut SqliteConnection, room: Uuid) -> Result<bool, sqlx::Error> {
    let sql = "SELECT EXISTS (SELECT 1 FROM rooms WHERE id = ?1)";
    q!(query_scalar, sql, room.hyphenated())
        .fetch_one(conn)
        .await
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn upsert_user(&self, user: &UserId, name: &DisplayName) -> Result<(), StorageError> {
        let sql = "INSERT INTO users (id, name, created_at, seen_at) VALUES (?1, ?2, ?3, ?3) \
                   ON CONFLICT (id) DO UPDATE SET name = excluded.name, seen_at = excluded.seen_at";
        let upsert = q!(query, sql, user.as_str(), name.as_str(), now_micros());
        upsert.execute(&self.writer).await?;
        Ok(())
    }

    async fn create_room(&self, room: NewRoom) -> Result<Room, StorageError> {
        let id = RoomId::new();
        let mut ids = vec![room.creator.as_str()];
        ids.extend(room.members.iter().map(UserId::as_str));
        let mut tx = self.begin().await?;
        ensure_users(&mut tx, &ids).await?;
        let sql = "INSERT INTO rooms (id, name, kind, created_by, created_at) \
                   VALUES (?1, ?2, ?3, ?4, ?5)";
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
        tx.commit().await?;
        let created = self.room(id, creator).await?;
        created.ok_or(StorageError::RoomNotFound)
    }

    async fn direct_room(&self, me: &UserId, other: &UserId) -> Result<(Room, bool), StorageError> {
        let (lo, hi) = (me.min(other), me.max(other));
        let key = format!("{lo}\n{hi}");
        let (fresh, pair) = (RoomId::new(), [lo.as_str(), hi.as_str()]);
        let mut tx = self.begin().await?;
        ensure_users(&mut tx, &pair).await?;
        let sql = "INSERT INTO rooms (id, name, kind, direct_key, created_by, created_at) \
                   VALUES (?1, ?2, 'direct', ?3, ?4, ?5) ON CONFLICT (direct_key) DO NOTHING";
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
            fresh
        } else {
            let sql = "SELECT id FROM rooms WHERE direct_key = ?1";
            let id: Hyphenated = q!(query_scalar, sql, &key).fetch_one(&mut *tx).await?;
            RoomId(id.into_uuid())
        };
        tx.commit().await?;
        let room = self.room(id, me).await?.ok_or(StorageError::RoomNotFound)?;
        Ok((room, created))
    }

    async fn room_kind(&self, room: RoomId) -> Result<Option<RoomKind>, StorageError> {
        let sql = "SELECT kind FROM rooms WHERE id = ?1";
        let select = q!(query_scalar, sql, room.0.hyphenated());
        let kind: Option<String> = select.fetch_optional(&self.reader).await?;
        Ok(kind.map(|k| kind_from(&k)).transpose()?)
    }

    async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let sql = "SELECT EXISTS (SELECT 1 FROM members WHERE room_id = ?1 AND user_id = ?2)";
        let select = q!(query_scalar, sql, room.0.hyphenated(), user.as_str());
        Ok(select.fetch_one(&self.reader).await?)
    }

    async fn room(&self, room: RoomId, viewer: &UserId) -> Result<Option<Room>, StorageError> {
        let sql = format!("{ROOM_SELECT} WHERE r.id = ?2");
        let select = q!(query, &sql, viewer.as_str(), room.0.hyphenated());
        let row = select.fetch_optional(&self.reader).await?;
        Ok(row.as_ref().map(room_from).transpose()?)
    }

    async fn add_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let mut tx = self.begin().await?;
        ensure_users(&mut tx, &[user.as_str()]).await?;
        let sql = "INSERT INTO members (room_id, user_id, read_seq, joined_at) \
                   SELECT id, ?2, last_seq, ?3 FROM rooms WHERE id = ?1 ON CONFLICT DO NOTHING";
        let insert = q!(query, sql, room.0.hyphenated(), user.as_str(), now_micros());
        let added = insert.execute(&mut *tx).await?.rows_affected() == 1;
        if !added && !room_exists(&mut tx, room.0).await? {
            return Err(StorageError::RoomNotFound);
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let sql = "DELETE FROM members WHERE room_id = ?1 AND user_id = ?2";
        let delete = q!(query, sql, room.0.hyphenated(), user.as_str());
        Ok(delete.execute(&self.writer).await?.rows_affected() > 0)
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<Room>, StorageError> {
        let sql = format!(
            "{ROOM_SELECT} WHERE v.user_id IS NOT NULL \
             ORDER BY COALESCE(r.last_message_at, v.joined_at) DESC, r.id ASC"
        );
        let rows = q!(query, &sql, user.as_str())
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(room_from).collect::<Result<_, _>>()?)
    }

    async fn room_ids_of(&self, user: &UserId) -> Result<Vec<RoomId>, StorageError> {
        let sql = "SELECT room_id FROM members WHERE user_id = ?1 ORDER BY room_id";
        let select = q!(query_scalar, sql, user.as_str());
        let ids: Vec<Hyphenated> = select.fetch_all(&self.reader).await?;
        Ok(ids.into_iter().map(|id| RoomId(id.into_uuid())).collect())
    }

    async fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StorageError> {
        let sql = "SELECT m.user_id, u.name FROM members m JOIN users u ON u.id = m.user_id \
                   WHERE m.room_id = ?1 ORDER BY m.user_id";
        let select = q!(query_as, sql, room.0.hyphenated());
        let rows: Vec<(String, String)> = select.fetch_all(&self.reader).await?;
        let member = |(id, name): (String, String)| -> Result<MemberRecord, sqlx::Error> {
            let user_id = UserId::parse(&id).map_err(|e| sqlx::Error::Decode(e.into()))?;
            Ok(MemberRecord { user_id, name })
        };
        Ok(rows.into_iter().map(member).collect::<Result<_, _>>()?)
    }

    async fn send_message(&self, msg: NewMessage) -> Result<Sent, StorageError> {
        let (room, user) = (msg.room.0, msg.user.as_str());
        let client_id = msg.client_id.as_ref().map(|c| c.as_str());
        // Fast path for retries: no write lock taken, no seq spent.
        if let Some(cid) = client_id
            && let Some(message) = self.by_client_id(room, &msg.user, cid).await?
        {
            return Ok(Sent {
                message,
                duplicate: true,
            });
        }
        let mut tx = self.begin().await?;
        // MAX keeps created_at from decreasing as seq grows if the wall clock steps back.
        let sql = "UPDATE rooms SET last_seq = last_seq + 1, \
                   last_message_at = MAX(?2, COALESCE(last_message_at, ?2)) \
                   WHERE id = ?1 RETURNING last_seq, last_message_at";
        let update = q!(query, sql, room.hyphenated(), now_micros());
        let Some(row) = update.fetch_optional(&mut *tx).await? else {
            return Err(StorageError::RoomNotFound);
        };
        let (seq, at): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(reply) = msg.reply_to {
            let sql = "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND room_id = ?2)";
            let select = q!(query_scalar, sql, reply.hyphenated(), room.hyphenated());
            if !select.fetch_one(&mut *tx).await? {
                return Err(StorageError::InvalidReply);
            }
        }
        let sql = format!(
            "INSERT INTO messages ({MSG_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (room_id, user_id, client_id) DO NOTHING RETURNING {MSG_COLS}"
        );
        let (id, room_text) = (Uuid::now_v7().hyphenated(), room.hyphenated());
        let (name, text, reply_to) = (msg.name.as_str(), msg.text.as_str(), msg.reply_to);
        let reply_to = reply_to.map(Uuid::hyphenated);
        let insert = q!(
            query, &sql, id, room_text, seq, user, name, text, client_id, reply_to, at
        );
        let Some(row) = insert.fetch_optional(&mut *tx).await? else {
            // A send with this clientId committed between the fast path and the write lock.
            tx.rollback().await?;
            let stored = self.by_client_id(room, &msg.user, client_id.unwrap_or_default());
            let message = stored.await?.ok_or(sqlx::Error::RowNotFound)?;
            return Ok(Sent {
                message,
                duplicate: true,
            });
        };
        let message = message_at(&row, 0)?;
        let sql = "UPDATE members SET read_seq = MAX(read_seq, ?3) \
                   WHERE room_id = ?1 AND user_id = ?2";
        q!(query, sql, room.hyphenated(), user, seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Sent {
            message,
            duplicate: false,
        })
    }

    async fn history(&self, room: RoomId, q: HistoryQuery) -> Result<HistoryPage, StorageError> {
        // With afterSeq the page starts at the oldest match; otherwise it ends at the newest.
        let ascending = q.after_seq.is_some();
        let order = if ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {MSG_COLS} FROM messages WHERE room_id = ?1 AND seq > ?2 AND seq < ?3 \
             ORDER BY seq {order} LIMIT ?4"
        );
        let limit = q.limit.max(0);
        let (after, before) = (
            q.after_seq.unwrap_or(i64::MIN),
            q.before_seq.unwrap_or(i64::MAX),
        );
        let room = room.0.hyphenated();
        let select = q!(query, &sql, room, after, before, limit.saturating_add(1));
        let rows = select.fetch_all(&self.reader).await?;
        let mut messages: Vec<Message> = rows
            .iter()
            .map(|r| message_at(r, 0))
            .collect::<Result<_, _>>()?;
        let keep = usize::try_from(limit).unwrap_or(usize::MAX);
        let has_more = messages.len() > keep;
        messages.truncate(keep);
        if !ascending {
            messages.reverse();
        }
        Ok(HistoryPage { messages, has_more })
    }

    async fn mark_read(
        &self,
        room: RoomId,
        user: &UserId,
        seq: i64,
    ) -> Result<ReadMark, StorageError> {
        let (id, user) = (room.0.hyphenated(), user.as_str());
        let mut tx = self.begin().await?;
        let sql = "UPDATE members SET read_seq = MIN(?3, (SELECT last_seq FROM rooms WHERE id = ?1)) \
                   WHERE room_id = ?1 AND user_id = ?2 \
                     AND read_seq < MIN(?3, (SELECT last_seq FROM rooms WHERE id = ?1)) \
                   RETURNING read_seq";
        let update = q!(query_scalar, sql, id, user, seq);
        let mark = if let Some(seq) = update.fetch_optional(&mut *tx).await? {
            ReadMark { seq, moved: true }
        } else {
            let sql = "SELECT read_seq FROM members WHERE room_id = ?1 AND user_id = ?2";
            let select = q!(query_scalar, sql, id, user);
            match select.fetch_optional(&mut *tx).await? {
                Some(seq) => ReadMark { seq, moved: false },
                None if !room_exists(&mut tx, room.0).await? => {
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
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM rooms")
            .fetch_one(&self.reader)
            .await?;
        Ok(count.max(0) as u64)
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
