//! Presence: the sockets of every user, wherever they are connected.

use async_trait::async_trait;
use serde::Serialize;

use super::BackplaneError;
use crate::domain::{RoomId, UserId};

/// A user whose last socket vanished with a dead node: presence goes offline, typing stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    pub user_id: UserId,
    /// Rooms the user was typing in when their node died.
    pub typing_rooms: Vec<RoomId>,
}

/// Where a user is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    pub online: bool,
    pub sockets: u64,
    /// Nodes holding at least one of the user's sockets, sorted.
    pub nodes: Vec<String>,
}

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Records a socket of `user` on this node; true when it is the user's first socket anywhere.
    async fn connected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError>;

    /// Forgets a socket of `user`; true when it was the user's last socket anywhere.
    async fn disconnected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError>;

    /// Whether each user has at least one socket, in the order asked.
    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BackplaneError>;

    /// How many users have at least one socket anywhere (O(1), not a scan).
    async fn users_online(&self) -> Result<u64, BackplaneError>;

    /// Where `user` is connected.
    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, BackplaneError>;
}
