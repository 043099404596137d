//! Durable storage of users, rooms, members and messages.
//!
//! Two backends implement [`Store`] with one behaviour: Postgres for clusters and an SQLite file
//! for the single-node default. The integration suite runs against both. What they share (SQL
//! text, row decoding, paging) is in `sql.rs`; each backend keeps only what differs.
//!
//! Messages are written in batches ([`Store::send_batch`]): `writer.rs` groups the messages that
//! arrive together on a node into one transaction (group commit), and `seen.rs` records users'
//! names and last-seen times in batches, off the connect path.

pub mod idempotency;
mod instrumented;
pub mod outbox;
mod postgres;
mod seen;
mod sql;
mod sqlite;
pub mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{ClientId, DisplayName, MessageText, RoomId, RoomKind, RoomName, UserId};
use crate::model::{MemberRecord, Message, Room};

pub use idempotency::{Claimed, IdempotencyClaim, IdempotencyRecord};
pub use instrumented::InstrumentedStore;
pub use outbox::{OutboxEvent, OutboxStats};
pub use postgres::PostgresStore;
pub use seen::SeenRecorder;
pub use sqlite::SqliteStore;
pub use writer::{WriteQueue, WriteSettings};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `replyTo` names no message of the same room.
    #[error("replyTo is not a message of this room")]
    InvalidReply,
    /// The room does not exist.
    #[error("room not found")]
    RoomNotFound,
    /// The sender is not a member of the room (checked inside the write).
    #[error("not a member of this room")]
    NotMember,
    /// The write path is full or the message waited too long for it: nothing was stored.
    #[error("storage is overloaded")]
    Overloaded,
    /// The database could not be reached: the batch was not stored.
    #[error("storage unreachable")]
    Unreachable,
    /// The batch's statement failed for another reason: nothing was stored.
    #[error("storage write failed")]
    WriteFailed,
    /// The database could not be reached or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl StorageError {
    /// Whether the database is away (connection refused or lost, pool exhausted, shutting down)
    /// rather than the request at fault: such errors are `unavailable` and worth a retry.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StorageError::Unreachable | StorageError::Overloaded => true,
            StorageError::Database(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
                sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_) => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    // Connection exceptions, insufficient resources, operator intervention
                    // (e.g. the server shutting down), and SQLite's busy/locked.
                    ["08", "53", "57"]
                        .iter()
                        .any(|class| code.starts_with(class))
                        || code == "5"
                        || code == "6"
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// A room to create: the creator and the listed members all become members.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub name: RoomName,
    pub kind: RoomKind,
    pub creator: UserId,
    /// Members besides the creator, without repeats and without the creator.
    pub members: Vec<UserId>,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room: RoomId,
    pub user: UserId,
    /// The sender's display name at the time of sending.
    pub name: DisplayName,
    pub text: MessageText,
    pub client_id: Option<ClientId>,
    pub reply_to: Option<Uuid>,
}

impl NewMessage {
    /// The message as stored with `id`, `seq` and `created_at`.
    pub fn stored_as(&self, id: Uuid, seq: i64, created_at: DateTime<Utc>) -> Message {
        Message {
            id,
            room_id: self.room,
            seq,
            user_id: self.user.to_string(),
            name: self.name.as_str().to_owned(),
            text: self.text.as_str().to_owned(),
            client_id: self.client_id.as_ref().map(|c| c.as_str().to_owned()),
            reply_to: self.reply_to,
            created_at,
        }
    }
}

/// The result of storing a message.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: Message,
    /// True when `client_id` had been used before by this user in this room: `message` is the
    /// message stored then, and nothing new was stored.
    pub duplicate: bool,
}

/// What one message of a batch came to: stored (or found stored, by its `clientId`), or refused
/// with [`StorageError::RoomNotFound`], [`StorageError::NotMember`] or
/// [`StorageError::InvalidReply`] while the rest of the batch went on.
pub type SendOutcome = Result<Sent, StorageError>;

/// A user seen connecting, recorded in batches (see [`SeenRecorder`]).
#[derive(Debug, Clone)]
pub struct SeenUser {
    pub user: UserId,
    pub name: DisplayName,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Which page of a room's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub before_seq: Option<i64>,
    pub after_seq: Option<i64>,
    /// 1..=200, checked by the caller.
    pub limit: i64,
}

/// One page of history, always ascending by seq.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// The effect of `message:read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMark {
    /// The user's read mark after the call.
    pub seq: i64,
    /// Whether it moved.
    pub moved: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<(), StorageError>;

    /// Records users seen connecting, in one statement: creates them or updates their names and
    /// last-seen times (never moving a last-seen time backwards).
    async fn record_seen(&self, users: &[SeenUser]) -> Result<(), StorageError>;

    /// Gives back caches that a burst of work grew; called after a wave of disconnects, before
    /// the heap is trimmed (`memory.rs`). Nothing to give back by default.
    async fn release_memory(&self) {}

    /// Creates a public or private room with its members; users that were never seen are
    /// created with their id as name. Every read mark starts at 0. Returns the room as the
    /// creator sees it.
    async fn create_room(&self, room: NewRoom) -> Result<Room, StorageError>;

    /// Returns the one direct room of the two users, creating it if needed, as `me` sees it;
    /// the bool is true when this call created it. Concurrent calls for the same pair, in either
    /// order, all return the same room and exactly one of them reports `true`.
    async fn direct_room(&self, me: &UserId, other: &UserId) -> Result<(Room, bool), StorageError>;

    /// The kind of a room, or `None` when it does not exist.
    async fn room_kind(&self, room: RoomId) -> Result<Option<RoomKind>, StorageError>;

    async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError>;

    /// The room as `viewer` sees it (`unread` is 0 for a non-member), or `None` if it does not exist.
    async fn room(&self, room: RoomId, viewer: &UserId) -> Result<Option<Room>, StorageError>;

    /// Makes `user` a member with the read mark at the room's `last_seq`; creates an unseen
    /// user. Returns false when they already were a member.
    async fn add_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError>;

    /// Returns false when they were not a member.
    async fn remove_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError>;

    /// The user's rooms, newest activity first (the newest message's time, or the time the
    /// user became a member when the room has none), ties by id ascending.
    async fn rooms_of(&self, user: &UserId) -> Result<Vec<Room>, StorageError>;

    /// The ids of the user's rooms, for joining Socket.IO rooms and presence fan-out.
    async fn room_ids_of(&self, user: &UserId) -> Result<Vec<RoomId>, StorageError>;

    /// The display name of `user` when they are a member of `room`; `None` otherwise.
    async fn member_name(
        &self,
        room: RoomId,
        user: &UserId,
    ) -> Result<Option<String>, StorageError>;

    /// Members ordered by user id.
    async fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StorageError>;

    /// Stores a batch of messages in one transaction and commits before returning. Each message
    /// gets its room's next seq (gapless and unique under any number of concurrent senders on any
    /// number of nodes, in batch order within a room), and its sender's read mark moves to it.
    /// Membership is checked inside the write, so a send racing a leave is either stored before
    /// the leave or refused. A repeated `(room, user, client_id)`, stored before or earlier in the
    /// same batch, yields the stored message with `duplicate: true` and stores nothing. One
    /// outcome per message, in order; `Err` only when the whole batch failed (nothing stored).
    async fn send_batch(&self, batch: &[NewMessage]) -> Result<Vec<SendOutcome>, StorageError>;

    /// One message, as a batch of one.
    async fn send_message(&self, message: NewMessage) -> Result<Sent, StorageError> {
        let mut outcomes = self.send_batch(std::slice::from_ref(&message)).await?;
        // A backend answers one outcome per message; none means it failed.
        outcomes.pop().unwrap_or(Err(StorageError::WriteFailed))
    }

    async fn history(&self, room: RoomId, query: HistoryQuery)
    -> Result<HistoryPage, StorageError>;

    /// Moves the read mark forward to `min(seq, last_seq)`; never backwards.
    async fn mark_read(
        &self,
        room: RoomId,
        user: &UserId,
        seq: i64,
    ) -> Result<ReadMark, StorageError>;

    /// How many chat rooms exist (every kind), for the operations API.
    async fn count_rooms(&self) -> Result<u64, StorageError>;

    /// Claims an idempotency key for a call, or finds who holds it (`idempotency.rs`). An
    /// expired row, or a pending one past its lease, is replaced.
    async fn claim_idempotency(&self, claim: &IdempotencyClaim) -> Result<Claimed, StorageError>;

    /// The row of an idempotency key, if there is one.
    async fn find_idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StorageError>;

    /// Records the outcome (status, body) of the call that won the key, or, with `None`,
    /// releases the key so that a retry runs the call again.
    async fn record_idempotency(
        &self,
        key: &str,
        outcome: Option<(u16, &str)>,
    ) -> Result<(), StorageError>;

    /// Deletes idempotency keys created before `before_ms` (unix milliseconds); how many.
    async fn purge_idempotency(&self, before_ms: i64) -> Result<u64, StorageError>;

    /// Claims up to `limit` due webhook events for `node` until `lease_until_ms` (`outbox/`),
    /// in the order of their changes.
    async fn claim_outbox(
        &self,
        node: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StorageError>;

    /// Deletes delivered events that `node` still holds.
    async fn outbox_delivered(&self, node: &str, ids: &[Uuid]) -> Result<(), StorageError>;

    /// Releases events that `node` failed to deliver: due again at `due_ms`, or, with
    /// `failed_ms`, given up on.
    async fn outbox_retry(
        &self,
        node: &str,
        ids: &[Uuid],
        due_ms: i64,
        failed_ms: Option<i64>,
    ) -> Result<(), StorageError>;

    /// Pending and failed webhook events.
    async fn outbox_stats(&self) -> Result<OutboxStats, StorageError>;

    /// Closes the pool, waiting for in-flight queries.
    async fn close(&self);
}

/// Opens the backend named by the URL (`postgres://` or `sqlite://`) and applies its migrations.
/// With `outbox`, changes write their webhook events in their own transactions; without it the
/// write path does nothing extra. `writers` is how many write batches may be in flight (Postgres
/// keeps a connection for each).
pub async fn connect(
    url: &str,
    max_connections: u32,
    writers: u32,
    acquire_timeout: std::time::Duration,
    outbox: bool,
) -> Result<Arc<dyn Store>, StorageError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url, max_connections, writers, acquire_timeout).await?;
        Ok(Arc::new(store.with_outbox(outbox)))
    } else {
        Ok(Arc::new(
            SqliteStore::connect(url).await?.with_outbox(outbox),
        ))
    }
}
