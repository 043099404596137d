//! SQLite backend, the single-node default. All writes go through one connection, so they
//! serialize in this process and the per-room seq needs no further locking; reads use their own
//! pool, which WAL lets run beside the writer.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, Sqlite, Transaction};
use uuid::{Uuid, fmt::Hyphenated};

use super::{HistoryPage, HistoryQuery, NewMessage, NewRoom, ReadMark, Sent, StorageError, Store};
use crate::domain::{DisplayName, RoomId, RoomKind, RoomName, UserId};
use crate::model::{MemberRecord, Message, Room};

const MSG_COLS: &str = "id, room_id, seq, user_id, name, text, client_id, reply_to, created_at";

/// A room as viewer `?1` sees it, with its newest message joined in (`m_` columns) so that
/// listing rooms takes one query. `unread` is 0 for a non-member.
const ROOM_SELECT: &str = "SELECT r.id, r.name, r.kind, r.last_seq, \
       (SELECT count(*) FROM members c WHERE c.room_id = r.id) AS member_count, \
       COALESCE(r.last_seq - v.read_seq, 0) AS unread, \
       m.id AS m_id, m.room_id AS m_room_id, m.seq AS m_seq, m.user_id AS m_user_id, \
       m.name AS m_name, m.text AS m_text, m.client_id AS m_client_id, \
       m.reply_to AS m_reply_to, m.created_at AS m_created_at \
     FROM rooms r \
     LEFT JOIN members v ON v.room_id = r.id AND v.user_id = ?1 \
     LEFT JOIN messages m ON m.room_id = r.id AND m.seq = r.last_seq";

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

type Tx = Transaction<'static, Sqlite>;

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let base = SqliteConnectOptions::from_str(url)?
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // An in-memory database exists per connection set, not on disk: one pool must serve all.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory
            && let Some(dir) = base.get_filename().parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        let writer_options = base.clone().create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
        let mut writer = SqlitePoolOptions::new().max_connections(1);
        if in_memory {
            // The database vanishes with its last connection.
            writer = writer.min_connections(1).idle_timeout(None).max_lifetime(None);
        }
        let writer = writer.connect_with(writer_options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = if in_memory {
            writer.clone()
        } else {
            // Opened after the writer has created the file and switched it to WAL.
            SqlitePoolOptions::new().max_connections(8).connect_with(base.read_only(true)).await?
        };
        Ok(Self { writer, reader })
    }

    async fn begin(&self) -> Result<Tx, sqlx::Error> {
        // IMMEDIATE takes the write lock up front, so a transaction that read first never fails
        // to upgrade if another process shares the file.
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
        let row = sqlx::query(&sql)
            .bind(room.hyphenated())
            .bind(user.as_str())
            .bind(client_id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| message_from(&r, "")).transpose()?)
    }
}

fn decode_err(msg: String) -> sqlx::Error {
    sqlx::Error::Decode(msg.into())
}

fn kind_from(raw: &str) -> Result<RoomKind, sqlx::Error> {
    RoomKind::from_db(raw).ok_or_else(|| decode_err(format!("unknown room kind {raw:?}")))
}

/// Timestamps are stored as unix microseconds, Postgres's precision.
fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn micros_to_time(micros: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| decode_err(format!("bad time {micros}")))
}

fn uuid_at(row: &SqliteRow, col: &str) -> Result<Option<Uuid>, sqlx::Error> {
    Ok(row.try_get::<Option<Hyphenated>, _>(col)?.map(Hyphenated::into_uuid))
}

fn message_from(row: &SqliteRow, p: &str) -> Result<Message, sqlx::Error> {
    let col = |name: &str| format!("{p}{name}");
    let required = |name: &str| {
        uuid_at(row, &col(name))?.ok_or_else(|| decode_err(format!("{p}{name} is NULL")))
    };
    Ok(Message {
        id: required("id")?,
        room_id: RoomId(required("room_id")?),
        seq: row.try_get(col("seq").as_str())?,
        user_id: row.try_get(col("user_id").as_str())?,
        name: row.try_get(col("name").as_str())?,
        text: row.try_get(col("text").as_str())?,
        client_id: row.try_get(col("client_id").as_str())?,
        reply_to: uuid_at(row, &col("reply_to"))?,
        created_at: micros_to_time(row.try_get(col("created_at").as_str())?)?,
    })
}

fn room_from(row: &SqliteRow) -> Result<Room, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let id = uuid_at(row, "id")?.ok_or_else(|| decode_err("room id is NULL".into()))?;
    Ok(Room {
        id: RoomId(id),
        name: row.try_get("name")?,
        kind: kind_from(&kind)?,
        member_count: row.try_get("member_count")?,
        last_seq: row.try_get("last_seq")?,
        unread: row.try_get("unread")?,
        last_message: match uuid_at(row, "m_id")? {
            Some(_) => Some(message_from(row, "m_")?),
            None => None,
        },
    })
}

/// Creates users never seen before, named by their id.
async fn ensure_users(tx: &mut Tx, ids: &[&str]) -> Result<(), sqlx::Error> {
    let now = now_micros();
    for id in ids {
        sqlx::query("INSERT INTO users (id, name, created_at) VALUES (?1, ?1, ?2) ON CONFLICT (id) DO NOTHING")
            .bind(*id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Adds members with read mark 0 (the room is new); returns how many were added.
async fn insert_members(tx: &mut Tx, room: Uuid, ids: &[&str]) -> Result<i64, sqlx::Error> {
    let (now, mut added) = (now_micros(), 0);
    for id in ids {
        added += sqlx::query(
            "INSERT INTO members (room_id, user_id, read_seq, joined_at) VALUES (?1, ?2, 0, ?3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(room.hyphenated())
        .bind(*id)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(i64::try_from(added).unwrap_or(i64::MAX))
}

async fn room_exists(tx: &mut Tx, room: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rooms WHERE id = ?1)")
        .bind(room.hyphenated())
        .fetch_one(&mut **tx)
        .await
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn upsert_user(&self, user: &UserId, name: &DisplayName) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO users (id, name, created_at, seen_at) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, seen_at = excluded.seen_at",
        )
        .bind(user.as_str())
        .bind(name.as_str())
        .bind(now_micros())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn create_room(&self, room: NewRoom) -> Result<Room, StorageError> {
        let id = RoomId::new();
        let mut ids: Vec<&str> = vec![room.creator.as_str()];
        ids.extend(room.members.iter().map(UserId::as_str));
        let mut tx = self.begin().await?;
        ensure_users(&mut tx, &ids).await?;
        sqlx::query("INSERT INTO rooms (id, name, kind, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(id.0.hyphenated())
            .bind(room.name.as_str())
            .bind(room.kind.as_str())
            .bind(room.creator.as_str())
            .bind(now_micros())
            .execute(&mut *tx)
            .await?;
        let member_count = insert_members(&mut tx, id.0, &ids).await?;
        tx.commit().await?;
        let (name, kind) = (room.name.as_str().to_owned(), room.kind);
        Ok(Room { id, name, kind, member_count, last_seq: 0, unread: 0, last_message: None })
    }

    async fn direct_room(&self, me: &UserId, other: &UserId) -> Result<(Room, bool), StorageError> {
        let (lo, hi) = if me <= other { (me, other) } else { (other, me) };
        let key = format!("{lo}\n{hi}");
        let fresh = RoomId::new();
        let mut tx = self.begin().await?;
        ensure_users(&mut tx, &[lo.as_str(), hi.as_str()]).await?;
        let inserted = sqlx::query(
            "INSERT INTO rooms (id, name, kind, direct_key, created_by, created_at) \
             VALUES (?1, ?2, 'direct', ?3, ?4, ?5) ON CONFLICT (direct_key) DO NOTHING",
        )
        .bind(fresh.0.hyphenated())
        .bind(RoomName::direct().as_str())
        .bind(&key)
        .bind(me.as_str())
        .bind(now_micros())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let id = if inserted {
            insert_members(&mut tx, fresh.0, &[lo.as_str(), hi.as_str()]).await?;
            fresh
        } else {
            let id: Hyphenated = sqlx::query_scalar("SELECT id FROM rooms WHERE direct_key = ?1")
                .bind(&key)
                .fetch_one(&mut *tx)
                .await?;
            RoomId(id.into_uuid())
        };
        tx.commit().await?;
        let room = self.room(id, me).await?.ok_or(StorageError::RoomNotFound)?;
        Ok((room, inserted))
    }

    async fn room_kind(&self, room: RoomId) -> Result<Option<RoomKind>, StorageError> {
        let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM rooms WHERE id = ?1")
            .bind(room.0.hyphenated())
            .fetch_optional(&self.reader)
            .await?;
        Ok(kind.map(|k| kind_from(&k)).transpose()?)
    }

    async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let sql = "SELECT EXISTS (SELECT 1 FROM members WHERE room_id = ?1 AND user_id = ?2)";
        let query = sqlx::query_scalar(sql).bind(room.0.hyphenated()).bind(user.as_str());
        Ok(query.fetch_one(&self.reader).await?)
    }

    async fn room(&self, room: RoomId, viewer: &UserId) -> Result<Option<Room>, StorageError> {
        let row = sqlx::query(&format!("{ROOM_SELECT} WHERE r.id = ?2"))
            .bind(viewer.as_str())
            .bind(room.0.hyphenated())
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.as_ref().map(room_from).transpose()?)
    }

    async fn add_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let mut tx = self.begin().await?;
        ensure_users(&mut tx, &[user.as_str()]).await?;
        // The WHERE is also what SQLite needs to parse an upsert on INSERT ... SELECT.
        let added = sqlx::query(
            "INSERT INTO members (room_id, user_id, read_seq, joined_at) \
             SELECT id, ?2, last_seq, ?3 FROM rooms WHERE id = ?1 ON CONFLICT DO NOTHING",
        )
        .bind(room.0.hyphenated())
        .bind(user.as_str())
        .bind(now_micros())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !added && !room_exists(&mut tx, room.0).await? {
            return Err(StorageError::RoomNotFound);
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2")
            .bind(room.0.hyphenated())
            .bind(user.as_str())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<Room>, StorageError> {
        let sql = format!(
            "{ROOM_SELECT} WHERE v.user_id IS NOT NULL \
             ORDER BY COALESCE(r.last_message_at, v.joined_at) DESC, r.id ASC"
        );
        let rows = sqlx::query(&sql).bind(user.as_str()).fetch_all(&self.reader).await?;
        Ok(rows.iter().map(room_from).collect::<Result<_, _>>()?)
    }

    async fn room_ids_of(&self, user: &UserId) -> Result<Vec<RoomId>, StorageError> {
        let sql = "SELECT room_id FROM members WHERE user_id = ?1 ORDER BY room_id";
        let ids: Vec<Hyphenated> =
            sqlx::query_scalar(sql).bind(user.as_str()).fetch_all(&self.reader).await?;
        Ok(ids.into_iter().map(|id| RoomId(id.into_uuid())).collect())
    }

    async fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StorageError> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.name FROM members m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = ?1 ORDER BY m.user_id",
        )
        .bind(room.0.hyphenated())
        .fetch_all(&self.reader)
        .await?;
        let member = |row: &SqliteRow| -> Result<MemberRecord, sqlx::Error> {
            let id: String = row.try_get("user_id")?;
            let user_id = UserId::parse(&id).map_err(|e| sqlx::Error::Decode(e.into()))?;
            Ok(MemberRecord { user_id, name: row.try_get("name")? })
        };
        Ok(rows.iter().map(member).collect::<Result<_, _>>()?)
    }

    async fn send_message(&self, msg: NewMessage) -> Result<Sent, StorageError> {
        let room = msg.room.0;
        let client_id = msg.client_id.as_ref().map(|c| c.as_str());
        // Fast path for retries: no write lock, no seq spent.
        if let Some(cid) = client_id
            && let Some(message) = self.by_client_id(room, &msg.user, cid).await?
        {
            return Ok(Sent { message, duplicate: true });
        }
        let mut tx = self.begin().await?;
        // MAX keeps created_at from decreasing as seq grows if the wall clock steps back.
        let Some(row) = sqlx::query(
            "UPDATE rooms SET last_seq = last_seq + 1, \
             last_message_at = MAX(?2, COALESCE(last_message_at, ?2)) \
             WHERE id = ?1 RETURNING last_seq, last_message_at",
        )
        .bind(room.hyphenated())
        .bind(now_micros())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Err(StorageError::RoomNotFound);
        };
        let (seq, at): (i64, i64) = (row.try_get("last_seq")?, row.try_get("last_message_at")?);
        if let Some(reply) = msg.reply_to {
            let sql = "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND room_id = ?2)";
            let query = sqlx::query_scalar(sql).bind(reply.hyphenated()).bind(room.hyphenated());
            if !query.fetch_one(&mut *tx).await? {
                return Err(StorageError::InvalidReply);
            }
        }
        let sql = format!(
            "INSERT INTO messages ({MSG_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (room_id, user_id, client_id) DO NOTHING RETURNING {MSG_COLS}"
        );
        let inserted = sqlx::query(&sql)
            .bind(Uuid::now_v7().hyphenated())
            .bind(room.hyphenated())
            .bind(seq)
            .bind(msg.user.as_str())
            .bind(msg.name.as_str())
            .bind(msg.text.as_str())
            .bind(client_id)
            .bind(msg.reply_to.map(Uuid::hyphenated))
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = inserted else {
            // A concurrent send with this clientId committed between the fast path and the lock.
            tx.rollback().await?;
            let message = self.by_client_id(room, &msg.user, client_id.unwrap_or_default()).await?;
            let message = message.ok_or(sqlx::Error::RowNotFound)?;
            return Ok(Sent { message, duplicate: true });
        };
        let message = message_from(&row, "")?;
        sqlx::query("UPDATE members SET read_seq = MAX(read_seq, ?3) WHERE room_id = ?1 AND user_id = ?2")
            .bind(room.hyphenated())
            .bind(msg.user.as_str())
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Sent { message, duplicate: false })
    }

    async fn history(&self, room: RoomId, q: HistoryQuery) -> Result<HistoryPage, StorageError> {
        // With afterSeq the page starts at the oldest match; otherwise it ends at the newest.
        let ascending = q.after_seq.is_some();
        let order = if ascending { "ASC" } else { "DESC" };
        let limit = q.limit.max(0);
        let sql = format!(
            "SELECT {MSG_COLS} FROM messages WHERE room_id = ?1 AND seq > ?2 AND seq < ?3 \
             ORDER BY seq {order} LIMIT ?4"
        );
        let rows = sqlx::query(&sql)
            .bind(room.0.hyphenated())
            .bind(q.after_seq.unwrap_or(i64::MIN))
            .bind(q.before_seq.unwrap_or(i64::MAX))
            .bind(limit.saturating_add(1))
            .fetch_all(&self.reader)
            .await?;
        let mut messages: Vec<Message> =
            rows.iter().map(|r| message_from(r, "")).collect::<Result<_, _>>()?;
        let keep = usize::try_from(limit).unwrap_or(usize::MAX);
        let has_more = messages.len() > keep;
        messages.truncate(keep);
        if !ascending {
            messages.reverse();
        }
        Ok(HistoryPage { messages, has_more })
    }

    async fn mark_read(&self, room: RoomId, user: &UserId, seq: i64) -> Result<ReadMark, StorageError> {
        let mut tx = self.begin().await?;
        let moved: Option<i64> = sqlx::query_scalar(
            "UPDATE members SET read_seq = MIN(?3, (SELECT last_seq FROM rooms WHERE id = ?1)) \
             WHERE room_id = ?1 AND user_id = ?2 \
               AND read_seq < MIN(?3, (SELECT last_seq FROM rooms WHERE id = ?1)) \
             RETURNING read_seq",
        )
        .bind(room.0.hyphenated())
        .bind(user.as_str())
        .bind(seq)
        .fetch_optional(&mut *tx)
        .await?;
        let mark = match moved {
            Some(seq) => ReadMark { seq, moved: true },
            None => {
                let sql = "SELECT read_seq FROM members WHERE room_id = ?1 AND user_id = ?2";
                let query = sqlx::query_scalar(sql).bind(room.0.hyphenated()).bind(user.as_str());
                match query.fetch_optional(&mut *tx).await? {
                    Some(seq) => ReadMark { seq, moved: false },
                    None if !room_exists(&mut tx, room.0).await? => {
                        return Err(StorageError::RoomNotFound);
                    }
                    None => ReadMark { seq: 0, moved: false },
                }
            }
        };
        tx.commit().await?;
        Ok(mark)
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
