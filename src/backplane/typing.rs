//! Typing: who types in which room, until a stop, an expiry or their last socket going away.

use async_trait::async_trait;
use tokio::time::Instant;

use super::BackplaneError;
use crate::domain::{RoomId, UserId};

/// A user typing in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typer {
    pub user_id: UserId,
    pub name: String,
}

/// A typing state that ran out without a `typing:stop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredTyping {
    pub room: RoomId,
    pub user_id: UserId,
}

#[async_trait]
pub trait Typing: Send + Sync + 'static {
    /// Starts or refreshes `typer` in `room` until `now` + the typing TTL; true when a
    /// `typing:start` should be broadcast (a new typer, or the last broadcast is old enough).
    async fn start(&self, room: RoomId, typer: Typer, now: Instant)
    -> Result<bool, BackplaneError>;

    /// Ends `user` typing in `room`; true when they were typing (so `typing:stop` is due).
    async fn stop(&self, room: RoomId, user: &UserId) -> Result<bool, BackplaneError>;

    /// Ends every typing of `user` (their last socket went away); returns the rooms.
    async fn stop_all(&self, user: &UserId) -> Result<Vec<RoomId>, BackplaneError>;

    /// Everyone typing in `room` at `now`, ordered by user id.
    async fn typers(&self, room: RoomId, now: Instant) -> Result<Vec<Typer>, BackplaneError>;

    /// Removes and returns the typing states that expired by `now`; each is handed to exactly
    /// one caller in the cluster.
    async fn take_expired(&self, now: Instant) -> Result<Vec<ExpiredTyping>, BackplaneError>;
}
