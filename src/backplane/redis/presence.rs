//! Presence in Redis: a hash of sockets per user, a set of sockets per node, the `online` set.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::Core;
use crate::backplane::{BackplaneError, Presence, UserPresence};
use crate::domain::UserId;

pub(super) struct RedisPresence(pub(super) Arc<Core>);

impl RedisPresence {
    /// A write of this node's presence. Before the join, or when it fails, the node's entries
    /// no longer match its sockets: the upkeep resynchronises them once Redis answers.
    async fn write(
        &self,
        op: &'static str,
        user: &UserId,
        socket: &str,
    ) -> Result<bool, BackplaneError> {
        let core = &self.0;
        if !core.joined() {
            core.need_resync();
            return Err(BackplaneError::NotJoined);
        }
        let args = [user.as_str(), socket, &core.node_id];
        let changed = core.run::<i64>(op, &args).await;
        if changed.is_err() {
            core.need_resync();
        }
        Ok(changed? == 1)
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError> {
        self.write("connect", user, socket).await
    }

    async fn disconnected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError> {
        self.write("disconnect", user, socket).await
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BackplaneError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("SMISMEMBER");
        cmd.arg(self.0.key("online"));
        for user in users {
            cmd.arg(user.as_str());
        }
        let flags: Vec<i64> = self.0.query("online", &cmd).await?;
        Ok(flags.into_iter().map(|f| f == 1).collect())
    }

    async fn users_online(&self) -> Result<u64, BackplaneError> {
        let mut cmd = redis::cmd("SCARD");
        cmd.arg(self.0.key("online"));
        self.0.query("users_online", &cmd).await
    }

    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, BackplaneError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.0.key(&format!("user:{user}")));
        let sockets: HashMap<String, String> = self.0.query("user_presence", &cmd).await?;
        let mut nodes: Vec<String> = sockets.values().cloned().collect();
        nodes.sort();
        nodes.dedup();
        Ok(UserPresence {
            online: !sockets.is_empty(),
            sockets: sockets.len() as u64,
            nodes,
        })
    }
}
