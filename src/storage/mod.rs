//! Durable storage of users, rooms, members and messages.
//!
//! Two backends implement [`Store`] with one behaviour: Postgres for clusters and an SQLite file
//! for the single-node default. The integration suite runs against both.

mod instrumented;
mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{ClientId, DisplayName, MessageText, RoomId, RoomKind, RoomName, UserId};
use crate::model::{MemberRecord, Message, Room};

pub use instrumented::InstrumentedStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `replyTo` names no message of the same room.
    #[error("replyTo is not a message of this room")]
    InvalidReply,
    /// The room does not exist.
    #[error("room not found")]
    RoomNotFound,
    /// The database could not be reached or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
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

/// The result of storing a message.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: Message,
    /// True when `client_id` had been used before by this user in this room: `message` is the
    /// message stored then, and nothing new was stored.
    pub duplicate: bool,
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

    /// Records a user seen at connect time (creates it or updates its name and last-seen time).
    async fn upsert_user(&self, user: &UserId, name: &DisplayName) -> Result<(), StorageError>;

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

    /// Members ordered by user id.
    async fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StorageError>;

    /// Stores a message with the room's next seq (gapless and unique under any number of
    /// concurrent senders on any number of nodes), moves the sender's read mark to it, and
    /// commits before returning. A repeated `(room, user, client_id)` returns the stored message
    /// with `duplicate: true` and stores nothing.
    async fn send_message(&self, message: NewMessage) -> Result<Sent, StorageError>;

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

    /// Closes the pool, waiting for in-flight queries.
    async fn close(&self);
}

/// Opens the backend named by the URL (`postgres://` or `sqlite://`) and applies its migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StorageError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PostgresStore::connect(url, max_connections).await?,
        ))
    } else {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    }
}
