//! The SQLite write path: a batch is read and judged message by message inside its `BEGIN
//! IMMEDIATE` transaction (one `CLASSIFY` query), then what was accepted is written by three
//! statements, whatever the batch's size. The one writer connection serializes batches, so the
//! seqs read are the seqs to number from.

use std::collections::HashMap;

use chrono::Utc;
use sqlx::{Row, SqliteConnection, sqlite::SqliteRow};
use uuid::Uuid;

use super::super::sql::{self, Columns, q};
use super::super::{NewMessage, SendOutcome, Sent, StorageError, outbox};
use super::{json_rows, now_micros, time_from};
use crate::model::Message;

/// Stores `batch` on `conn`, inside the caller's transaction: one outcome per message.
pub(super) async fn store(
    conn: &mut SqliteConnection,
    outbox: bool,
    batch: &[NewMessage],
) -> Result<Vec<SendOutcome>, StorageError> {
    let input: Vec<_> = batch
        .iter()
        .map(|m| {
            let reply = m.reply_to.map(|r| r.hyphenated().to_string());
            let cid = m.client_id.as_ref().map(|c| c.as_str());
            (
                m.room.0.hyphenated().to_string(),
                m.user.as_str(),
                cid,
                reply,
            )
        })
        .collect();
    let rows = q!(query, CLASSIFY, json_rows(&input)?)
        .fetch_all(&mut *conn)
        .await?;
    if rows.len() != batch.len() {
        let found = format!("{} rows for {} messages", rows.len(), batch.len());
        return Err(sql::decode_err(found).into());
    }
    let mut accepted = Accepted::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    for (i, (row, msg)) in rows.iter().zip(batch).enumerate() {
        let repeat = batch[..i].iter().any(|m| sql::same_send(m, msg));
        outcomes.push(classify(row, msg, repeat, &mut accepted)?);
    }
    accepted.write(conn).await?;
    if outbox {
        outbox::sqlite::enqueue_messages(conn, &accepted.messages).await?;
    }
    Ok(sql::resolve_repeats(batch, outcomes))
}

/// What the database knows about each message of a batch, read inside the write transaction:
/// `[room, user, clientId, replyTo]` per message in, one row per message out.
const CLASSIFY: &str = "SELECT j.key, r.id IS NOT NULL, COALESCE(r.last_seq, 0), \
       r.last_message_at, \
       EXISTS (SELECT 1 FROM members m WHERE m.room_id = j.room AND m.user_id = j.usr), \
       j.reply IS NULL OR EXISTS (SELECT 1 FROM messages x \
                                   WHERE x.id = j.reply AND x.room_id = j.room), \
       d.id, d.room_id, d.seq, d.user_id, d.name, d.text, d.client_id, d.reply_to, d.created_at \
     FROM (SELECT key, json_extract(value, '$[0]') AS room, json_extract(value, '$[1]') AS usr, \
                  json_extract(value, '$[2]') AS cid, json_extract(value, '$[3]') AS reply \
             FROM json_each($1)) j \
     LEFT JOIN rooms r ON r.id = j.room \
     LEFT JOIN messages d ON d.room_id = j.room AND d.user_id = j.usr AND d.client_id = j.cid \
     ORDER BY j.key";

/// Inserts the accepted messages: one `[MSG_COLS…]` array each.
const INSERT_MESSAGES: &str = "INSERT INTO messages (id, room_id, seq, user_id, name, text, \
       client_id, reply_to, created_at) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
            value ->> 6, value ->> 7, value ->> 8 FROM json_each($1)";

/// Moves each room's `last_seq` and `last_message_at`: `[room, last_seq, at]` each.
const BUMP_ROOMS: &str = "UPDATE rooms SET last_seq = j.seq, last_message_at = j.at \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS seq, value ->> 2 AS at FROM json_each($1)) j \
     WHERE rooms.id = j.id";

/// Moves each sender's read mark: `[room, user, seq]` each.
const MARK_SENDERS: &str = "UPDATE members SET read_seq = MAX(read_seq, j.seq) \
     FROM (SELECT value ->> 0 AS room, value ->> 1 AS usr, value ->> 2 AS seq \
             FROM json_each($1)) j \
     WHERE members.room_id = j.room AND members.user_id = j.usr";

/// The messages of one batch that the database accepted, and what they change.
#[derive(Default)]
struct Accepted {
    messages: Vec<Message>,
    /// Per room: its new `last_seq` and `last_message_at`.
    rooms: HashMap<Uuid, (i64, i64)>,
    /// Per (room, sender): the sender's newest seq.
    senders: HashMap<(Uuid, String), i64>,
}

impl Accepted {
    /// Numbers `msg` after its room's `last_seq` (as read, or as moved by earlier messages of
    /// the batch) and records what it changes.
    fn take(&mut self, msg: &NewMessage, last_seq: i64, last_at: Option<i64>) -> Message {
        let now = now_micros();
        let (seq, at) = self
            .rooms
            .entry(msg.room.0)
            .or_insert((last_seq, last_at.map_or(now, |at| at.max(now))));
        *seq += 1;
        let senders = self.senders.entry((msg.room.0, msg.user.to_string()));
        *senders.or_default() = *seq;
        let created_at = time_from(*at).unwrap_or_else(|_| Utc::now());
        let message = msg.stored_as(Uuid::now_v7(), *seq, created_at);
        self.messages.push(message.clone());
        message
    }

    async fn write(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        if self.messages.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = self
            .messages
            .iter()
            .map(|m| {
                serde_json::json!([
                    m.id.hyphenated().to_string(),
                    m.room_id.0.hyphenated().to_string(),
                    m.seq,
                    m.user_id,
                    m.name,
                    m.text,
                    m.client_id,
                    m.reply_to.map(|r| r.hyphenated().to_string()),
                    m.created_at.timestamp_micros(),
                ])
            })
            .collect();
        q!(query, INSERT_MESSAGES, json_rows(&rows)?)
            .execute(&mut *conn)
            .await?;
        let rooms: Vec<_> = self
            .rooms
            .iter()
            .map(|(id, (seq, at))| (id.hyphenated().to_string(), seq, at))
            .collect();
        q!(query, BUMP_ROOMS, json_rows(&rooms)?)
            .execute(&mut *conn)
            .await?;
        let senders: Vec<_> = self
            .senders
            .iter()
            .map(|((room, user), seq)| (room.hyphenated().to_string(), user, seq))
            .collect();
        q!(query, MARK_SENDERS, json_rows(&senders)?)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Decides one message of a batch from its [`CLASSIFY`] row, in the contract's order of checks.
fn classify(
    row: &SqliteRow,
    msg: &NewMessage,
    repeat: bool,
    accepted: &mut Accepted,
) -> Result<Option<SendOutcome>, sqlx::Error> {
    if row.int_at(1)? == 0 {
        return Ok(Some(Err(StorageError::RoomNotFound)));
    }
    if row.int_at(4)? == 0 {
        return Ok(Some(Err(StorageError::NotMember)));
    }
    if row.uuid_at(6)?.is_some() {
        let message = sql::message_at(row, 6)?;
        return Ok(Some(Ok(Sent {
            message,
            duplicate: true,
        })));
    }
    if repeat {
        return Ok(None);
    }
    if row.int_at(5)? == 0 {
        return Ok(Some(Err(StorageError::InvalidReply)));
    }
    let last_at: Option<i64> = row.try_get(3)?;
    let message = accepted.take(msg, row.int_at(2)?, last_at);
    Ok(Some(Ok(Sent {
        message,
        duplicate: false,
    })))
}
