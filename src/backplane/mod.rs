//! Cluster-wide state that is not durable: who is online and who is typing.
//!
//! Socket.IO room emits already cross nodes through socketioxide's adapter; what the adapter
//! does not know (how many sockets a user has anywhere, typing timers) lives behind
//! [`Backplane`]. A single node uses [`LocalBackplane`]; a cluster swaps in a Redis one.

mod adapter;
mod driver;
mod local;
mod redis;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::domain::{RoomId, UserId};

pub use adapter::{Adapter, BackplaneDriver, SocketIo, SocketRef};
pub use driver::ReconnectingDriver;
pub use local::LocalBackplane;
pub use redis::RedisBackplane;

#[derive(Debug, thiserror::Error)]
#[error("backplane unavailable: {0}")]
pub struct BackplaneError(pub String);

/// A user typing in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typer {
    pub user_id: UserId,
    pub name: String,
}

/// A user whose last socket vanished with a dead node: presence goes offline, typing stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    pub user_id: UserId,
    /// Rooms the user was typing in when their node died.
    pub typing_rooms: Vec<RoomId>,
}

/// A typing state that ran out without a `typing:stop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredTyping {
    pub room: RoomId,
    pub user_id: UserId,
}

#[async_trait]
pub trait Backplane: Send + Sync + 'static {
    /// Records a socket of `user`; true when it is the user's first socket anywhere.
    async fn socket_connected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError>;

    /// Forgets a socket of `user`; true when it was the user's last socket anywhere.
    async fn socket_disconnected(
        &self,
        user: &UserId,
        socket: &str,
    ) -> Result<bool, BackplaneError>;

    /// Whether each user has at least one socket, in the order asked.
    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BackplaneError>;

    /// Starts or refreshes `user` typing in `room` until `now + ttl`; true when a `typing:start`
    /// should be broadcast (a new typer, or the last broadcast is `rebroadcast` old).
    async fn typing_start(
        &self,
        room: RoomId,
        typer: Typer,
        now: Instant,
    ) -> Result<bool, BackplaneError>;

    /// Ends `user` typing in `room`; true when they were typing (so `typing:stop` is due).
    async fn typing_stop(&self, room: RoomId, user: &UserId) -> Result<bool, BackplaneError>;

    /// Ends every typing of `user` (their last socket went away); returns the rooms.
    async fn typing_stop_all(&self, user: &UserId) -> Result<Vec<RoomId>, BackplaneError>;

    /// Everyone typing in `room` at `now`, ordered by user id.
    async fn typers(&self, room: RoomId, now: Instant) -> Result<Vec<Typer>, BackplaneError>;

    /// Removes and returns the typing states that expired by `now`.
    async fn take_expired_typing(&self, now: Instant)
    -> Result<Vec<ExpiredTyping>, BackplaneError>;

    /// Periodic upkeep, run by every node about once a second: refresh this node's heartbeat and
    /// reap the sockets of nodes whose heartbeat expired. Returns the users that reaping left
    /// without any socket, for whom exactly one node (the caller) must announce the departure.
    async fn maintain(&self) -> Result<Vec<Departure>, BackplaneError>;

    /// Forgets this node's sockets on an orderly shutdown; returns users left without sockets.
    async fn leave_cluster(&self) -> Result<Vec<Departure>, BackplaneError>;

    /// Whether cross-node delivery works right now (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// A short description for logs and `/readyz`.
    fn describe(&self) -> &'static str;
}
