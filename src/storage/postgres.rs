//! Postgres backend, for clusters: every guarantee of [`Store`] holds across nodes because it
//! rests on row locks and unique constraints in the database, never on process-local state.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{HistoryPage, HistoryQuery, NewMessage, NewRoom, ReadMark, Sent, StorageError, Store};
use crate::domain::{DisplayName, RoomId, RoomKind, RoomName, UserId};
use crate::model::{MemberRecord, Message, Room};

const MSG_COLS: &str = "id, room_id, seq, user_id, name, text, client_id, reply_to, created_at";

/// A room as viewer `$1` sees it, with its newest message joined in (`m_` columns) so that
/// listing rooms takes one query. `unread` is 0 for a non-member.
const ROOM_SELECT: &str = "SELECT r.id, r.name, r.kind, r.last_seq, \
       (SELECT count(*) FROM members c WHERE c.room_id = r.id) AS member_count, \
       COALESCE(r.last_seq - v.read_seq, 0) AS unread, \
       m.id AS m_id, m.room_id AS m_room_id, m.seq AS m_seq, m.user_id AS m_user_id, \
       m.name AS m_name, m.text AS m_text, m.client_id AS m_client_id, \
       m.reply_to AS m_reply_to, m.created_at AS m_created_at \
     FROM rooms r \
     LEFT JOIN members v ON v.room_id = r.id AND v.user_id = $1 \
     LEFT JOIN messages m ON m.room_id = r.id AND m.seq = r.last_seq";

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StorageError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            // Fail fast enough for /readyz and acks to report `unavailable` rather than hang.
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        // sqlx takes an advisory lock, so nodes starting together migrate once.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    async fn by_client_id(
        &self,
        room: Uuid,
        user: &UserId,
        client_id: &str,
    ) -> Result<Option<Message>, StorageError> {
        let sql = format!(
            "SELECT {MSG_COLS} FROM messages WHERE room_id = $1 AND user_id = $2 AND client_id = $3"
        );
        let row = sqlx::query(&sql)
            .bind(room)
            .bind(user.as_str())
            .bind(client_id)
            .fetch_optional(&self.pool)
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

fn message_from(row: &PgRow, p: &str) -> Result<Message, sqlx::Error> {
    let col = |name: &str| format!("{p}{name}");
    Ok(Message {
        id: row.try_get(col("id").as_str())?,
        room_id: RoomId(row.try_get(col("room_id").as_str())?),
        seq: row.try_get(col("seq").as_str())?,
        user_id: row.try_get(col("user_id").as_str())?,
        name: row.try_get(col("name").as_str())?,
        text: row.try_get(col("text").as_str())?,
        client_id: row.try_get(col("client_id").as_str())?,
        reply_to: row.try_get(col("reply_to").as_str())?,
        created_at: row.try_get(col("created_at").as_str())?,
    })
}

fn room_from(row: &PgRow) -> Result<Room, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let newest: Option<Uuid> = row.try_get("m_id")?;
    Ok(Room {
        id: RoomId(row.try_get("id")?),
        name: row.try_get("name")?,
        kind: kind_from(&kind)?,
        member_count: row.try_get("member_count")?,
        last_seq: row.try_get("last_seq")?,
        unread: row.try_get("unread")?,
        last_message: newest.map(|_| message_from(row, "m_")).transpose()?,
    })
}

/// Creates users never seen before, named by their id. Sorted so that concurrent transactions
/// lock new user rows in one order and cannot deadlock.
async fn ensure_users(tx: &mut Transaction<'_, Postgres>, ids: &[&str]) -> Result<(), sqlx::Error> {
    let mut ids: Vec<&str> = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query(
        "INSERT INTO users (id, name) SELECT u, u FROM unnest($1::text[]) AS t(u) ORDER BY u \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds members with read mark 0 (the room is new); returns how many were added.
async fn insert_members(
    tx: &mut Transaction<'_, Postgres>,
    room: Uuid,
    ids: &[&str],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO members (room_id, user_id, read_seq) \
         SELECT $1, u, 0 FROM unnest($2::text[]) AS t(u) ON CONFLICT DO NOTHING",
    )
    .bind(room)
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn upsert_user(&self, user: &UserId, name: &DisplayName) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO users (id, name, seen_at) VALUES ($1, $2, now()) \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, seen_at = EXCLUDED.seen_at",
        )
        .bind(user.as_str())
        .bind(name.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_room(&self, room: NewRoom) -> Result<Room, StorageError> {
        let id = RoomId::new();
        let mut ids: Vec<&str> = vec![room.creator.as_str()];
        ids.extend(room.members.iter().map(UserId::as_str));
        let mut tx = self.pool.begin().await?;
        ensure_users(&mut tx, &ids).await?;
        sqlx::query("INSERT INTO rooms (id, name, kind, created_by) VALUES ($1, $2, $3, $4)")
            .bind(id.0)
            .bind(room.name.as_str())
            .bind(room.kind.as_str())
            .bind(room.creator.as_str())
            .execute(&mut *tx)
            .await?;
        let added = insert_members(&mut tx, id.0, &ids).await?;
        tx.commit().await?;
        Ok(Room {
            id,
            name: room.name.as_str().to_owned(),
            kind: room.kind,
            member_count: i64::try_from(added).unwrap_or(i64::MAX),
            last_seq: 0,
            unread: 0,
            last_message: None,
        })
    }

    async fn direct_room(&self, me: &UserId, other: &UserId) -> Result<(Room, bool), StorageError> {
        let (lo, hi) = if me <= other { (me, other) } else { (other, me) };
        let key = format!("{lo}\n{hi}");
        let fresh = RoomId::new();
        let mut tx = self.pool.begin().await?;
        ensure_users(&mut tx, &[lo.as_str(), hi.as_str()]).await?;
        // A concurrent creator of the same key makes this wait for its commit and then do
        // nothing; read committed lets the SELECT below see the winner's room.
        let inserted = sqlx::query(
            "INSERT INTO rooms (id, name, kind, direct_key, created_by) \
             VALUES ($1, $2, 'direct', $3, $4) ON CONFLICT (direct_key) DO NOTHING",
        )
        .bind(fresh.0)
        .bind(RoomName::direct().as_str())
        .bind(&key)
        .bind(me.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let id = if inserted {
            insert_members(&mut tx, fresh.0, &[lo.as_str(), hi.as_str()]).await?;
            fresh
        } else {
            RoomId(
                sqlx::query_scalar("SELECT id FROM rooms WHERE direct_key = $1")
                    .bind(&key)
                    .fetch_one(&mut *tx)
                    .await?,
            )
        };
        tx.commit().await?;
        let room = self.room(id, me).await?.ok_or(StorageError::RoomNotFound)?;
        Ok((room, inserted))
    }

    async fn room_kind(&self, room: RoomId) -> Result<Option<RoomKind>, StorageError> {
        let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM rooms WHERE id = $1")
            .bind(room.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(kind.map(|k| kind_from(&k)).transpose()?)
    }

    async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM members WHERE room_id = $1 AND user_id = $2)",
        )
        .bind(room.0)
        .bind(user.as_str())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn room(&self, room: RoomId, viewer: &UserId) -> Result<Option<Room>, StorageError> {
        let row = sqlx::query(&format!("{ROOM_SELECT} WHERE r.id = $2"))
            .bind(viewer.as_str())
            .bind(room.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(room_from).transpose()?)
    }

    async fn add_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let mut tx = self.pool.begin().await?;
        ensure_users(&mut tx, &[user.as_str()]).await?;
        let added = sqlx::query(
            "INSERT INTO members (room_id, user_id, read_seq) \
             SELECT id, $2, last_seq FROM rooms WHERE id = $1 ON CONFLICT DO NOTHING",
        )
        .bind(room.0)
        .bind(user.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !added {
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rooms WHERE id = $1)")
                .bind(room.0)
                .fetch_one(&mut *tx)
                .await?;
            if !exists {
                return Err(StorageError::RoomNotFound);
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM members WHERE room_id = $1 AND user_id = $2")
            .bind(room.0)
            .bind(user.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<Room>, StorageError> {
        let sql = format!(
            "{ROOM_SELECT} WHERE v.user_id IS NOT NULL \
             ORDER BY COALESCE(r.last_message_at, v.joined_at) DESC, r.id ASC"
        );
        let rows = sqlx::query(&sql).bind(user.as_str()).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(room_from).collect::<Result<_, _>>()?)
    }

    async fn room_ids_of(&self, user: &UserId) -> Result<Vec<RoomId>, StorageError> {
        let ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT room_id FROM members WHERE user_id = $1 ORDER BY room_id")
                .bind(user.as_str())
                .fetch_all(&self.pool)
                .await?;
        Ok(ids.into_iter().map(RoomId).collect())
    }

    async fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StorageError> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.name FROM members m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = $1 ORDER BY m.user_id",
        )
        .bind(room.0)
        .fetch_all(&self.pool)
        .await?;
        let member = |row: &PgRow| -> Result<MemberRecord, sqlx::Error> {
            let id: String = row.try_get("user_id")?;
            Ok(MemberRecord {
                user_id: UserId::parse(&id).map_err(|e| sqlx::Error::Decode(e.into()))?,
                name: row.try_get("name")?,
            })
        };
        Ok(rows.iter().map(member).collect::<Result<_, _>>()?)
    }

    async fn send_message(&self, msg: NewMessage) -> Result<Sent, StorageError> {
        let room = msg.room.0;
        let client_id = msg.client_id.as_ref().map(|c| c.as_str());
        // Fast path for retries: no room lock, no seq spent.
        if let Some(cid) = client_id
            && let Some(message) = self.by_client_id(room, &msg.user, cid).await?
        {
            return Ok(Sent { message, duplicate: true });
        }
        let mut tx = self.pool.begin().await?;
        // The row lock taken here serializes senders to the room on every node until commit;
        // a rollback below gives the seq back, so seqs stay gapless. clock_timestamp (not now())
        // is read after the lock, so created_at never decreases as seq grows.
        let Some(row) = sqlx::query(
            "UPDATE rooms SET last_seq = last_seq + 1, \
             last_message_at = GREATEST(clock_timestamp(), last_message_at) \
             WHERE id = $1 RETURNING last_seq, last_message_at",
        )
        .bind(room)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Err(StorageError::RoomNotFound);
        };
        let seq: i64 = row.try_get("last_seq")?;
        let at: DateTime<Utc> = row.try_get("last_message_at")?;
        if let Some(reply) = msg.reply_to {
            let ok: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1 AND room_id = $2)",
            )
            .bind(reply)
            .bind(room)
            .fetch_one(&mut *tx)
            .await?;
            if !ok {
                return Err(StorageError::InvalidReply);
            }
        }
        let sql = format!(
            "INSERT INTO messages ({MSG_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (room_id, user_id, client_id) DO NOTHING RETURNING {MSG_COLS}"
        );
        let inserted = sqlx::query(&sql)
            .bind(Uuid::now_v7())
            .bind(room)
            .bind(seq)
            .bind(msg.user.as_str())
            .bind(msg.name.as_str())
            .bind(msg.text.as_str())
            .bind(client_id)
            .bind(msg.reply_to)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = inserted else {
            // A concurrent send with this clientId committed between the fast path and the lock.
            tx.rollback().await?;
            let cid = client_id.unwrap_or_default();
            let message = self.by_client_id(room, &msg.user, cid).await?;
            let message = message.ok_or(sqlx::Error::RowNotFound)?;
            return Ok(Sent { message, duplicate: true });
        };
        let message = message_from(&row, "")?;
        sqlx::query(
            "UPDATE members SET read_seq = GREATEST(read_seq, $3) \
             WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room)
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
            "SELECT {MSG_COLS} FROM messages WHERE room_id = $1 AND seq > $2 AND seq < $3 \
             ORDER BY seq {order} LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(room.0)
            .bind(q.after_seq.unwrap_or(i64::MIN))
            .bind(q.before_seq.unwrap_or(i64::MAX))
            .bind(limit.saturating_add(1))
            .fetch_all(&self.pool)
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
        // Updating only when the mark moves makes `moved` exact under concurrent calls: a
        // waiting UPDATE re-checks its WHERE against the row the other one committed.
        let moved: Option<i64> = sqlx::query_scalar(
            "UPDATE members m SET read_seq = LEAST($3, r.last_seq) FROM rooms r \
             WHERE r.id = m.room_id AND m.room_id = $1 AND m.user_id = $2 \
               AND m.read_seq < LEAST($3, r.last_seq) \
             RETURNING m.read_seq",
        )
        .bind(room.0)
        .bind(user.as_str())
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(seq) = moved {
            return Ok(ReadMark { seq, moved: true });
        }
        let current: Option<i64> =
            sqlx::query_scalar("SELECT read_seq FROM members WHERE room_id = $1 AND user_id = $2")
                .bind(room.0)
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
        match current {
            Some(seq) => Ok(ReadMark { seq, moved: false }),
            None if self.room_kind(room).await?.is_none() => Err(StorageError::RoomNotFound),
            None => Ok(ReadMark { seq: 0, moved: false }),
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
