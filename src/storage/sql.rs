//! What both backends share: the SQL text they run alike (SQLite accepts Postgres' `$n`
//! placeholders), the decoding of rows into contract objects, and history paging. Each backend
//! supplies only how it stores a UUID and a timestamp ([`Columns`]).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{HistoryPage, HistoryQuery, NewMessage, SendOutcome, Sent, StorageError};
use crate::domain::{RoomId, RoomKind, UserId};
use crate::model::{MemberRecord, Message, Room};

/// `q!(query, sql, a, b)` is `sqlx::query(sql).bind(a).bind(b)`; also for `query_scalar`.
macro_rules! q {
    ($f:ident, $sql:expr $(, $arg:expr)* $(,)?) => { sqlx::$f($sql)$(.bind($arg))* };
}
pub(super) use q;

/// Columns read by [`message_at`], in its order.
pub(super) const MSG_COLS: &str =
    "id, room_id, seq, user_id, name, text, client_id, reply_to, created_at";

/// A room as viewer `$1` sees it (`unread` 0 for a non-member), read by [`room_from`]. The
/// newest message is joined in so that listing rooms takes one query, not one per room.
pub(super) const ROOM_SELECT: &str = "SELECT r.id, r.name, r.kind, r.last_seq, \
       (SELECT count(*) FROM members c WHERE c.room_id = r.id), \
       COALESCE(r.last_seq - v.read_seq, 0), \
       m.id, m.room_id, m.seq, m.user_id, m.name, m.text, m.client_id, m.reply_to, m.created_at \
     FROM rooms r \
     LEFT JOIN members v ON v.room_id = r.id AND v.user_id = $1 \
     LEFT JOIN messages m ON m.room_id = r.id AND m.seq = r.last_seq";

/// One room as viewer `$1` sees it; `$2` is the room.
pub(super) const ROOM_BY_ID: &str = "WHERE r.id = $2";

/// The viewer's rooms, newest activity first, ties by id.
pub(super) const ROOMS_OF: &str = "WHERE v.user_id IS NOT NULL \
     ORDER BY COALESCE(r.last_message_at, v.joined_at) DESC, r.id ASC";

pub(super) const ROOM_IDS_OF: &str =
    "SELECT room_id FROM members WHERE user_id = $1 ORDER BY room_id";
pub(super) const ROOM_KIND: &str = "SELECT kind FROM rooms WHERE id = $1";
pub(super) const ROOM_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM rooms WHERE id = $1)";
pub(super) const IS_MEMBER: &str =
    "SELECT EXISTS (SELECT 1 FROM members WHERE room_id = $1 AND user_id = $2)";
pub(super) const MEMBERS: &str = "SELECT m.user_id, u.name FROM members m \
     JOIN users u ON u.id = m.user_id WHERE m.room_id = $1 ORDER BY m.user_id";
pub(super) const MEMBER_NAME: &str = "SELECT u.name FROM members m \
     JOIN users u ON u.id = m.user_id WHERE m.room_id = $1 AND m.user_id = $2";
/// SQLite's (one writer: nothing to race); Postgres locks the room first (`postgres.rs`).
pub(super) const REMOVE_MEMBER: &str = "DELETE FROM members WHERE room_id = $1 AND user_id = $2";
pub(super) const READ_MARK: &str =
    "SELECT read_seq FROM members WHERE room_id = $1 AND user_id = $2";
pub(super) const COUNT_ROOMS: &str = "SELECT count(*) FROM rooms";

/// A page of history: `$1` room, `$2` after (exclusive), `$3` before (exclusive), `$4` limit.
/// With afterSeq the page starts at the oldest match; otherwise it ends at the newest.
pub(super) fn history_sql(q: &HistoryQuery) -> String {
    let order = if q.after_seq.is_some() { "ASC" } else { "DESC" };
    format!(
        "SELECT {MSG_COLS} FROM messages WHERE room_id = $1 AND seq > $2 AND seq < $3 \
         ORDER BY seq {order} LIMIT $4"
    )
}

/// The bounds and row limit bound to [`history_sql`]: one row more than the page, to learn
/// whether there is more.
pub(super) fn history_bounds(q: &HistoryQuery) -> (i64, i64, i64) {
    (
        q.after_seq.unwrap_or(i64::MIN),
        q.before_seq.unwrap_or(i64::MAX),
        q.limit.max(0).saturating_add(1),
    )
}

/// Turns the rows of [`history_sql`] into a page, ascending by seq.
pub(super) fn history_page(mut messages: Vec<Message>, q: &HistoryQuery) -> HistoryPage {
    let keep = usize::try_from(q.limit.max(0)).unwrap_or(usize::MAX);
    let has_more = messages.len() > keep;
    messages.truncate(keep);
    if q.after_seq.is_none() {
        messages.reverse();
    }
    HistoryPage { messages, has_more }
}

/// How a backend's row yields the columns whose storage differs between backends.
pub(super) trait Columns {
    fn uuid_at(&self, at: usize) -> Result<Option<Uuid>, sqlx::Error>;
    fn time_at(&self, at: usize) -> Result<DateTime<Utc>, sqlx::Error>;
    fn int_at(&self, at: usize) -> Result<i64, sqlx::Error>;
    fn text_at(&self, at: usize) -> Result<Option<String>, sqlx::Error>;

    fn required_uuid_at(&self, at: usize) -> Result<Uuid, sqlx::Error> {
        self.uuid_at(at)?
            .ok_or_else(|| decode_err(format!("NULL uuid in column {at}")))
    }

    fn required_text_at(&self, at: usize) -> Result<String, sqlx::Error> {
        self.text_at(at)?
            .ok_or_else(|| decode_err(format!("NULL text in column {at}")))
    }
}

pub(super) fn decode_err(msg: String) -> sqlx::Error {
    sqlx::Error::Decode(msg.into())
}

pub(super) fn kind_from(raw: &str) -> Result<RoomKind, sqlx::Error> {
    RoomKind::from_db(raw).ok_or_else(|| decode_err(format!("room kind {raw:?}")))
}

/// Reads the [`MSG_COLS`] columns starting at column `at`.
pub(super) fn message_at(row: &impl Columns, at: usize) -> Result<Message, sqlx::Error> {
    Ok(Message {
        id: row.required_uuid_at(at)?,
        room_id: RoomId(row.required_uuid_at(at + 1)?),
        seq: row.int_at(at + 2)?,
        user_id: row.required_text_at(at + 3)?,
        name: row.required_text_at(at + 4)?,
        text: row.required_text_at(at + 5)?,
        client_id: row.text_at(at + 6)?,
        reply_to: row.uuid_at(at + 7)?,
        created_at: row.time_at(at + 8)?,
    })
}

/// Reads a row of [`ROOM_SELECT`].
pub(super) fn room_from(row: &impl Columns) -> Result<Room, sqlx::Error> {
    let has_message = row.uuid_at(6)?.is_some();
    Ok(Room {
        id: RoomId(row.required_uuid_at(0)?),
        name: row.required_text_at(1)?,
        kind: kind_from(&row.required_text_at(2)?)?,
        last_seq: row.int_at(3)?,
        member_count: row.int_at(4)?,
        unread: row.int_at(5)?,
        last_message: has_message.then(|| message_at(row, 6)).transpose()?,
    })
}

/// Reads a row of [`MEMBERS`].
pub(super) fn member_from((id, name): (String, String)) -> Result<MemberRecord, sqlx::Error> {
    let user_id = UserId::parse(&id).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(MemberRecord { user_id, name })
}

/// The direct-room key of two users: the unique index on it makes concurrent `room:direct`
/// calls for one pair converge on a single room.
pub(super) fn direct_key(me: &UserId, other: &UserId) -> (String, [String; 2]) {
    let (lo, hi) = (me.min(other), me.max(other));
    (format!("{lo}\n{hi}"), [lo.to_string(), hi.to_string()])
}

/// Gives each repeat (`None`: a message whose `clientId` an earlier message of the same batch
/// used) the outcome of that earlier message, as a resend after a lost ack would get it.
pub(super) fn resolve_repeats(
    batch: &[NewMessage],
    outcomes: Vec<Option<SendOutcome>>,
) -> Vec<SendOutcome> {
    let mut resolved: Vec<SendOutcome> = Vec::with_capacity(outcomes.len());
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let outcome = outcome.unwrap_or_else(|| {
            let first = batch[..i].iter().position(|m| same_send(m, &batch[i]));
            match first.map(|j| &resolved[j]) {
                Some(Ok(sent)) => Ok(Sent {
                    message: sent.message.clone(),
                    duplicate: true,
                }),
                Some(Err(StorageError::RoomNotFound)) => Err(StorageError::RoomNotFound),
                Some(Err(StorageError::NotMember)) => Err(StorageError::NotMember),
                Some(Err(StorageError::InvalidReply)) => Err(StorageError::InvalidReply),
                // The first send of this clientId failed as a whole: so does its repeat.
                _ => Err(StorageError::WriteFailed),
            }
        });
        resolved.push(outcome);
    }
    resolved
}

/// Whether two messages are the same send (same room, sender and `clientId`).
pub(super) fn same_send(a: &NewMessage, b: &NewMessage) -> bool {
    a.client_id.is_some() && a.room == b.room && a.user == b.user && a.client_id == b.client_id
}

/// A room just created, as its creator sees it: what `room.created` carries, known inside the
/// creating transaction without reading it back.
pub(super) fn new_room(
    id: RoomId,
    name: &crate::domain::RoomName,
    kind: RoomKind,
    members: usize,
) -> Room {
    Room {
        id,
        name: name.as_str().to_owned(),
        kind,
        member_count: members as i64,
        last_seq: 0,
        unread: 0,
        last_message: None,
    }
}
