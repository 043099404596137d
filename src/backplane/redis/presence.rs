//! Presence in Redis: a hash of sockets per user, a set of sockets per node, the `online` set.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use super::Core;
use super::presence_batch::{PresenceBatcher, Write};
use crate::backplane::{BackplaneError, Presence, UserPresence};
use crate::domain::UserId;

pub(super) struct RedisPresence {
    core: Arc<Core>,
    /// Connects and disconnects, coalesced; started on first use (within the runtime).
    writes: OnceLock<PresenceBatcher>,
}

impl RedisPresence {
    pub(super) fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            writes: OnceLock::new(),
        }
    }

    /// A write of this node's presence. Before the join, or when it fails, the node's entries
    /// no longer match its sockets: the upkeep resynchronises them once Redis answers.
    async fn write(&self, op: Write, user: &UserId, socket: &str) -> Result<bool, BackplaneError> {
        let core = &self.core;
        if !core.joined() {
            core.need_resync();
            return Err(BackplaneError::NotJoined);
        }
        let writes = self
            .writes
            .get_or_init(|| PresenceBatcher::start(core.clone()));
        writes.write(op, user.as_str(), socket).await
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError> {
        self.write(Write::Connect, user, socket).await
    }

    async fn disconnected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError> {
        self.write(Write::Disconnect, user, socket).await
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BackplaneError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("SMISMEMBER");
        cmd.arg(self.core.key("online"));
        for user in users {
            cmd.arg(user.as_str());
        }
        let flags: Vec<i64> = self.core.query("online", &cmd).await?;
        Ok(flags.into_iter().map(|f| f == 1).collect())
    }

    async fn users_online(&self) -> Result<u64, BackplaneError> {
        let mut cmd = redis::cmd("SCARD");
        cmd.arg(self.core.key("online"));
        self.core.query("users_online", &cmd).await
    }

    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, BackplaneError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.core.key(&format!("user:{user}")));
        let sockets: HashMap<String, String> = self.core.query("user_presence", &cmd).await?;
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
