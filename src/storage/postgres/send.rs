//! The Postgres write path: a batch is stored by one statement when every message of it is
//! accepted, which is nearly always (the node checked membership before queueing it), and
//! judged message by message by `confab_send_batch` (migrations/postgres) otherwise.
//!
//! The one statement (`STORE_WHOLE`) locks the batch's rooms in id order, moves each room's
//! `last_seq` on by its number of messages, moves the senders' read marks, and inserts the
//! messages with seqs the node numbered within each room (`base + k`). Membership is the
//! read-mark update itself: a member row that a concurrent leave deleted is skipped by it (the
//! leave holds the room's lock until it commits, so this statement waits and then sees the
//! row gone), and a message whose sender's row was not updated is not inserted. Anything not
//! stored (not a member, unknown room, bad `replyTo`) makes the statement raise `CF001`; a
//! resent `clientId` makes the insert raise a unique violation. Either way nothing of the
//! batch is kept, no seq is used, and the batch goes to `confab_send_batch`, which returns one
//! outcome per message. The plpgsql function costs Postgres more CPU per batch than the
//! statement (pgbench, 6-message batches, medians of 10 runs: 605 vs 530 µs, both including a
//! query they shared), which is why it is only the fallback.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::super::sql::{self, q};
use super::super::{NewMessage, SendOutcome, Sent, StorageError};

const STORE_WHOLE: &str = "\
WITH bumped AS (
    UPDATE rooms r SET last_seq = r.last_seq + c.n,
                       last_message_at = GREATEST(r.last_message_at, clock_timestamp())
      FROM (SELECT l.id, c.n
              FROM (SELECT id FROM rooms WHERE id = ANY ($9) ORDER BY id FOR NO KEY UPDATE) l
              JOIN unnest($9::uuid[], $10::int4[]) AS c(id, n) ON c.id = l.id) c
     WHERE r.id = c.id
 RETURNING r.id, r.last_seq - c.n AS base, r.last_message_at AS at
), marked AS (
    UPDATE members m SET read_seq = GREATEST(m.read_seq, b.base + x.k)
      FROM unnest($11::uuid[], $12::text[], $13::int4[]) AS x(room_id, user_id, k)
      JOIN bumped b ON b.id = x.room_id
     WHERE m.room_id = x.room_id AND m.user_id = x.user_id COLLATE \"C\"
 RETURNING m.room_id, m.user_id
), stored AS (
    INSERT INTO messages (id, room_id, seq, user_id, name, text, client_id, reply_to, created_at)
    SELECT i.id, i.room_id, b.base + i.k, i.user_id, i.name, i.text, i.client_id, i.reply_to, b.at
      FROM unnest($1::uuid[], $2::uuid[], $3::int4[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::uuid[])
           AS i(id, room_id, k, user_id, name, text, client_id, reply_to)
      JOIN bumped b ON b.id = i.room_id
      JOIN marked s ON s.room_id = i.room_id AND s.user_id = i.user_id COLLATE \"C\"
     WHERE i.reply_to IS NULL
        OR EXISTS (SELECT 1 FROM messages p WHERE p.id = i.reply_to AND p.room_id = i.room_id)
 RETURNING id, created_at
), queued AS (
    INSERT INTO webhook_outbox (id, type, message_id, created_at, due_at)
    SELECT s.id, 'message.created', s.id, (extract(epoch FROM s.created_at) * 1000)::bigint,
           (extract(epoch FROM s.created_at) * 1000)::bigint
      FROM stored s WHERE $14
)
SELECT b.id, b.base, b.at FROM bumped b
 WHERE (SELECT confab_batch_incomplete(count(*), cardinality($1::uuid[])) FROM stored)";

/// Raised by `STORE_WHOLE` when some message of the batch was not stored.
const INCOMPLETE: &str = "CF001";
/// Unique violation: a `clientId` used before (or twice in the batch).
const UNIQUE_VIOLATION: &str = "23505";

pub(super) async fn send_batch(
    conn: &mut PgConnection,
    outbox: bool,
    batch: &[NewMessage],
) -> Result<Vec<SendOutcome>, StorageError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let columns = BatchColumns::of(batch);
    match store_whole(conn, outbox, batch, &columns).await {
        Ok(Some(sent)) => return Ok(sent.into_iter().map(Ok).collect()),
        Ok(None) => {}
        Err(sqlx::Error::Database(e))
            if e.code()
                .is_some_and(|c| c == INCOMPLETE || c == UNIQUE_VIOLATION) => {}
        Err(e) => return Err(e.into()),
    }
    judge_each(conn, outbox, batch, &columns).await
}

/// The batch as the columns both statements take; each message's id is chosen once, so the
/// fallback stores a message under the id the first attempt gave it.
struct BatchColumns<'a> {
    ids: Vec<Uuid>,
    rooms: Vec<Uuid>,
    users: Vec<&'a str>,
    names: Vec<&'a str>,
    texts: Vec<&'a str>,
    client_ids: Vec<Option<&'a str>>,
    reply_to: Vec<Option<Uuid>>,
}

impl<'a> BatchColumns<'a> {
    fn of(batch: &'a [NewMessage]) -> Self {
        Self {
            ids: batch.iter().map(|_| Uuid::now_v7()).collect(),
            rooms: batch.iter().map(|m| m.room.0).collect(),
            users: batch.iter().map(|m| m.user.as_str()).collect(),
            names: batch.iter().map(|m| m.name.as_str()).collect(),
            texts: batch.iter().map(|m| m.text.as_str()).collect(),
            client_ids: batch
                .iter()
                .map(|m| m.client_id.as_ref().map(|c| c.as_str()))
                .collect(),
            reply_to: batch.iter().map(|m| m.reply_to).collect(),
        }
    }
}

/// Where each message goes among its room's messages of the batch, and the per-room and
/// per-sender figures `STORE_WHOLE` takes.
struct Numbering<'a> {
    /// 1-based position of each message among the batch's messages to its room.
    ks: Vec<i32>,
    /// Messages per room, by room id (the order rooms are locked in).
    rooms: BTreeMap<Uuid, i32>,
    /// Each sender's last `k` per room: where its read mark goes.
    senders: BTreeMap<(Uuid, &'a str), i32>,
}

impl<'a> Numbering<'a> {
    fn of(batch: &'a [NewMessage]) -> Self {
        let mut rooms = BTreeMap::new();
        let mut senders = BTreeMap::new();
        let ks = batch
            .iter()
            .map(|m| {
                let k = rooms.entry(m.room.0).or_insert(0);
                *k += 1;
                senders.insert((m.room.0, m.user.as_str()), *k);
                *k
            })
            .collect();
        Self { ks, rooms, senders }
    }
}

/// Stores the whole batch, or nothing (`None` or an error: see the module's comment).
async fn store_whole(
    conn: &mut PgConnection,
    outbox: bool,
    batch: &[NewMessage],
    columns: &BatchColumns<'_>,
) -> Result<Option<Vec<Sent>>, sqlx::Error> {
    let numbering = Numbering::of(batch);
    let room_ids: Vec<Uuid> = numbering.rooms.keys().copied().collect();
    let counts: Vec<i32> = numbering.rooms.values().copied().collect();
    let sender_rooms: Vec<Uuid> = numbering.senders.keys().map(|(r, _)| *r).collect();
    let sender_users: Vec<&str> = numbering.senders.keys().map(|(_, u)| *u).collect();
    let sender_ks: Vec<i32> = numbering.senders.values().copied().collect();
    let rows = q!(
        query,
        STORE_WHOLE,
        &columns.ids,
        &columns.rooms,
        &numbering.ks,
        &columns.users,
        &columns.names,
        &columns.texts,
        &columns.client_ids,
        &columns.reply_to,
        room_ids,
        counts,
        sender_rooms,
        sender_users,
        sender_ks,
        outbox
    )
    .fetch_all(&mut *conn)
    .await?;
    // No row: no room of the batch exists, and nothing was changed.
    if rows.len() != numbering.rooms.len() {
        return Ok(None);
    }
    let mut bases: Vec<(Uuid, i64, DateTime<Utc>)> = rows
        .iter()
        .map(|row: &PgRow| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    bases.sort_unstable_by_key(|(room, _, _)| *room);
    batch
        .iter()
        .zip(&columns.ids)
        .zip(&numbering.ks)
        .map(|((m, id), k)| {
            let at = bases
                .binary_search_by_key(&m.room.0, |(room, _, _)| *room)
                .map_err(|_| sql::decode_err(format!("no base for room {}", m.room.0)))?;
            let (_, base, created_at) = bases[at];
            Ok(Sent {
                message: m.stored_as(*id, base + i64::from(*k), created_at),
                duplicate: false,
            })
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// One outcome per message, from `confab_send_batch`.
async fn judge_each(
    conn: &mut PgConnection,
    outbox: bool,
    batch: &[NewMessage],
    c: &BatchColumns<'_>,
) -> Result<Vec<SendOutcome>, StorageError> {
    // One round trip, one transaction (autocommit): see the function's comments.
    let sql = "SELECT * FROM confab_send_batch($1, $2, $3, $4, $5, $6, $7, $8)";
    let call = q!(
        query,
        sql,
        &c.ids,
        &c.rooms,
        &c.users,
        &c.names,
        &c.texts,
        &c.client_ids,
        &c.reply_to,
        outbox
    );
    let rows = call.fetch_all(&mut *conn).await?;
    if rows.len() != batch.len() {
        return Err(sql::decode_err(format!("{} outcomes for {}", rows.len(), batch.len())).into());
    }
    let outcomes: Vec<_> = rows.iter().map(outcome_from).collect::<Result<_, _>>()?;
    Ok(sql::resolve_repeats(batch, outcomes))
}

/// Reads one row of `confab_send_batch`: its outcome and message, or `None` for a repeat of an
/// earlier message of the batch.
fn outcome_from(row: &PgRow) -> Result<Option<SendOutcome>, sqlx::Error> {
    let outcome: String = row.try_get(1)?;
    Ok(Some(match outcome.as_str() {
        "ok" | "duplicate" => Ok(Sent {
            message: sql::message_at(row, 2)?,
            duplicate: outcome == "duplicate",
        }),
        "repeat" => return Ok(None),
        "not_found" => Err(StorageError::RoomNotFound),
        "forbidden" => Err(StorageError::NotMember),
        "invalid_reply" => Err(StorageError::InvalidReply),
        other => return Err(sql::decode_err(format!("send outcome {other:?}"))),
    }))
}
