//! Postgres backend, for clusters: every guarantee of [`Store`] holds across nodes because it
//! rests on row locks and unique constraints in the database, never on process-local state.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{HistoryPage, HistoryQuery, NewMessage, NewRoom, ReadMark, Sent, StorageError, Store};
use crate::domain::{DisplayName, RoomId, RoomKind, RoomName, UserId};
use crate::model::{MemberRecord, Message, Room};

/// `q!(query, sql, a, b)` is `sqlx::query(sql).bind(a).bind(b)`; also for `query_scalar`.
macro_rules! q {
    ($f:ident, $sql:expr $(, $arg:expr)* $(,)?) => { sqlx::$f($sql)$(.bind($arg))* };
}

/// Columns read by [`message_at`], in its order.
const MSG_COLS: &str = "id, room_id, seq, user_id, name, text, client_id, reply_to, created_at";

/// A room as viewer `$1` sees it (`unread` 0 for a non-member), read by [`room_from`]. The
/// newest message is joined in so that listing rooms takes one query, not one per room.
const ROOM_SELECT: &str = "SELECT r.id, r.name, r.kind, r.last_seq, \
       (SELECT count(*) FROM members c WHERE c.room_id = r.id), \
       COALESCE(r.last_seq - v.read_seq, 0), \
       m.id, m.room_id, m.seq, m.user_id, m.name, m.text, m.client_id, m.reply_to, m.created_at \
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
        let row = q!(query, &sql, room, user.as_str(), client_id).fetch_optional(&self.pool);
        Ok(row.await?.map(|r| message_at(&r, 0)).transpose()?)
    }
}

fn kind_from(raw: &str) -> Result<RoomKind, sqlx::Error> {
    RoomKind::from_db(raw).ok_or_else(|| sqlx::Error::Decode(format!("room kind {raw:?}").into()))
}

/// Reads the [`MSG_COLS`] columns starting at column `at`.
fn message_at(row: &PgRow, at: usize) -> Result<Message, sqlx::Error> {
    Ok(Message {
        id: row.try_get(at)?,
        room_id: RoomId(row.try_get(at + 1)?),
        seq: row.try_get(at + 2)?,
        user_id: row.try_get(at + 3)?,
        name: row.try_get(at + 4)?,
        text: row.try_get(at + 5)?,
        client_id: row.try_get(at + 6)?,
        reply_to: row.try_get(at + 7)?,
        created_at: row.try_get(at + 8)?,
    })
}

fn room_from(row: &PgRow) -> Result<Room, sqlx::Error> {
    let kind: String = row.try_get(2)?;
    let has_message = row.try_get::<Option<Uuid>, _>(6)?.is_some();
    Ok(Room {
        id: RoomId(row.try_get(0)?),
        name: row.try_get(1)?,
        kind: kind_from(&kind)?,
        last_seq: row.try_get(3)?,
        member_count: row.try_get(4)?,
        unread: row.try_get(5)?,
        last_message: has_message.then(|| message_at(row, 6)).transpose()?,
    })
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

async fn room_exists(conn: &mut PgConnection, room: Uuid) -> Result<bool, sqlx::Error> {
    let sql = "SELECT EXISTS (SELECT 1 FROM rooms WHERE id = $1)";
    q!(query_scalar, sql, room).fetch_one(conn).await
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn upsert_user(&self, user: &UserId, name: &DisplayName) -> Result<(), StorageError> {
        let sql = "INSERT INTO users (id, name, seen_at) VALUES ($1, $2, now()) \
                   ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, seen_at = EXCLUDED.seen_at";
        q!(query, sql, user.as_str(), name.as_str())
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
        tx.commit().await?;
        let created = self.room(id, &room.creator).await?;
        created.ok_or(StorageError::RoomNotFound)
    }

    async fn direct_room(&self, me: &UserId, other: &UserId) -> Result<(Room, bool), StorageError> {
        let (lo, hi) = (me.min(other), me.max(other));
        let key = format!("{lo}\n{hi}");
        let (fresh, pair) = (RoomId::new(), [lo.as_str(), hi.as_str()]);
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
            fresh
        } else {
            let sql = "SELECT id FROM rooms WHERE direct_key = $1";
            RoomId(q!(query_scalar, sql, &key).fetch_one(&mut *tx).await?)
        };
        tx.commit().await?;
        let room = self.room(id, me).await?.ok_or(StorageError::RoomNotFound)?;
        Ok((room, created))
    }

    async fn room_kind(&self, room: RoomId) -> Result<Option<RoomKind>, StorageError> {
        let sql = "SELECT kind FROM rooms WHERE id = $1";
        let kind: Option<String> = q!(query_scalar, sql, room.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(kind.map(|k| kind_from(&k)).transpose()?)
    }

    async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let sql = "SELECT EXISTS (SELECT 1 FROM members WHERE room_id = $1 AND user_id = $2)";
        Ok(q!(query_scalar, sql, room.0, user.as_str())
            .fetch_one(&self.pool)
            .await?)
    }

    async fn room(&self, room: RoomId, viewer: &UserId) -> Result<Option<Room>, StorageError> {
        let sql = format!("{ROOM_SELECT} WHERE r.id = $2");
        let row = q!(query, &sql, viewer.as_str(), room.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(room_from).transpose()?)
    }

    async fn add_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let mut tx = self.pool.begin().await?;
        ensure_users(&mut tx, &[user.as_str()]).await?;
        let sql = "INSERT INTO members (room_id, user_id, read_seq) \
                   SELECT id, $2, last_seq FROM rooms WHERE id = $1 ON CONFLICT DO NOTHING";
        let insert = q!(query, sql, room.0, user.as_str());
        let added = insert.execute(&mut *tx).await?.rows_affected() == 1;
        if !added && !room_exists(&mut tx, room.0).await? {
            return Err(StorageError::RoomNotFound);
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        let sql = "DELETE FROM members WHERE room_id = $1 AND user_id = $2";
        let done = q!(query, sql, room.0, user.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<Room>, StorageError> {
        let sql = format!(
            "{ROOM_SELECT} WHERE v.user_id IS NOT NULL \
             ORDER BY COALESCE(r.last_message_at, v.joined_at) DESC, r.id ASC"
        );
        let rows = q!(query, &sql, user.as_str()).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(room_from).collect::<Result<_, _>>()?)
    }

    async fn room_ids_of(&self, user: &UserId) -> Result<Vec<RoomId>, StorageError> {
        let sql = "SELECT room_id FROM members WHERE user_id = $1 ORDER BY room_id";
        let ids: Vec<Uuid> = q!(query_scalar, sql, user.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(ids.into_iter().map(RoomId).collect())
    }

    async fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StorageError> {
        let sql = "SELECT m.user_id, u.name FROM members m JOIN users u ON u.id = m.user_id \
                   WHERE m.room_id = $1 ORDER BY m.user_id";
        let rows: Vec<(String, String)> = q!(query_as, sql, room.0).fetch_all(&self.pool).await?;
        let member = |(id, name): (String, String)| -> Result<MemberRecord, sqlx::Error> {
            let user_id = UserId::parse(&id).map_err(|e| sqlx::Error::Decode(e.into()))?;
            Ok(MemberRecord { user_id, name })
        };
        Ok(rows.into_iter().map(member).collect::<Result<_, _>>()?)
    }

    async fn send_message(&self, msg: NewMessage) -> Result<Sent, StorageError> {
        let (room, user) = (msg.room.0, msg.user.as_str());
        let client_id = msg.client_id.as_ref().map(|c| c.as_str());
        // Fast path for retries: no room lock taken, no seq spent.
        if let Some(cid) = client_id
            && let Some(message) = self.by_client_id(room, &msg.user, cid).await?
        {
            return Ok(Sent {
                message,
                duplicate: true,
            });
        }
        let mut tx = self.pool.begin().await?;
        // The row lock taken here serializes the room's senders on every node until commit,
        // and a rollback gives the seq back, so seqs stay gapless. clock_timestamp(), unlike
        // now(), is read after the lock, so created_at does not decrease as seq grows.
        let sql = "UPDATE rooms SET last_seq = last_seq + 1, \
                   last_message_at = GREATEST(clock_timestamp(), last_message_at) \
                   WHERE id = $1 RETURNING last_seq, last_message_at";
        let Some(row) = q!(query, sql, room).fetch_optional(&mut *tx).await? else {
            return Err(StorageError::RoomNotFound);
        };
        let (seq, at): (i64, DateTime<Utc>) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(reply) = msg.reply_to {
            let sql = "SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1 AND room_id = $2)";
            if !q!(query_scalar, sql, reply, room)
                .fetch_one(&mut *tx)
                .await?
            {
                return Err(StorageError::InvalidReply);
            }
        }
        let sql = format!(
            "INSERT INTO messages ({MSG_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (room_id, user_id, client_id) DO NOTHING RETURNING {MSG_COLS}"
        );
        let (name, text) = (msg.name.as_str(), msg.text.as_str());
        let id = Uuid::now_v7();
        let insert = q!(
            query,
            &sql,
            id,
            room,
            seq,
            user,
            name,
            text,
            client_id,
            msg.reply_to,
            at
        );
        let Some(row) = insert.fetch_optional(&mut *tx).await? else {
            // A send with this clientId committed between the fast path and the lock.
            tx.rollback().await?;
            let stored = self.by_client_id(room, &msg.user, client_id.unwrap_or_default());
            let message = stored.await?.ok_or(sqlx::Error::RowNotFound)?;
            return Ok(Sent {
                message,
                duplicate: true,
            });
        };
        let message = message_at(&row, 0)?;
        let sql = "UPDATE members SET read_seq = GREATEST(read_seq, $3) \
                   WHERE room_id = $1 AND user_id = $2";
        q!(query, sql, room, user, seq).execute(&mut *tx).await?;
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
            "SELECT {MSG_COLS} FROM messages WHERE room_id = $1 AND seq > $2 AND seq < $3 \
             ORDER BY seq {order} LIMIT $4"
        );
        let limit = q.limit.max(0);
        let (after, before) = (
            q.after_seq.unwrap_or(i64::MIN),
            q.before_seq.unwrap_or(i64::MAX),
        );
        let select = q!(query, &sql, room.0, after, before, limit.saturating_add(1));
        let rows = select.fetch_all(&self.pool).await?;
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
        let sql = "SELECT read_seq FROM members WHERE room_id = $1 AND user_id = $2";
        let current = q!(query_scalar, sql, room.0, user.as_str());
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
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM rooms")
            .fetch_one(&self.pool)
            .await?;
        Ok(count.max(0) as u64)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
