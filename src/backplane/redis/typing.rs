//! Typing in Redis: a sorted set per room scored by expiry (Redis 7.0 has no per-field hash
//! expiry), the typers' names, the rooms of each typer, and one global expiry index.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Core, now_ms};
use crate::backplane::{BackplaneError, ExpiredTyping, Typer, Typing};
use crate::domain::{RoomId, UserId};

/// How many expired typing states one sweep claims.
const EXPIRY_BATCH: usize = 500;

pub(super) struct RedisTyping {
    core: Arc<Core>,
    ttl: Duration,
    rebroadcast: Duration,
}

impl RedisTyping {
    pub(super) fn new(core: Arc<Core>, ttl: Duration, rebroadcast: Duration) -> Self {
        Self {
            core,
            ttl,
            rebroadcast,
        }
    }
}

/// `room\nuser`, as the expiry index stores it.
fn room_and_user(member: &str) -> Option<(RoomId, UserId)> {
    let (room, user) = member.split_once('\n')?;
    Some((RoomId::parse(room).ok()?, UserId::parse(user).ok()?))
}

#[async_trait]
impl Typing for RedisTyping {
    async fn start(
        &self,
        room: RoomId,
        typer: Typer,
        _now: Instant,
    ) -> Result<bool, BackplaneError> {
        let now = now_ms();
        let args = [
            &room.to_string(),
            typer.user_id.as_str(),
            &typer.name,
            &now.to_string(),
            &(now + self.ttl.as_millis() as u64).to_string(),
            &self.rebroadcast.as_millis().max(1).to_string(),
        ];
        Ok(self.core.run::<i64>("typing_start", &args).await? == 1)
    }

    async fn stop(&self, room: RoomId, user: &UserId) -> Result<bool, BackplaneError> {
        let args = [&room.to_string(), user.as_str()];
        Ok(self.core.run::<i64>("typing_stop", &args).await? == 1)
    }

    async fn stop_all(&self, user: &UserId) -> Result<Vec<RoomId>, BackplaneError> {
        let rooms: Vec<String> = self.core.run("stop_all", &[user.as_str()]).await?;
        Ok(rooms.iter().filter_map(|r| RoomId::parse(r).ok()).collect())
    }

    async fn typers(&self, room: RoomId, _now: Instant) -> Result<Vec<Typer>, BackplaneError> {
        let args: [&str; 2] = [&room.to_string(), &now_ms().to_string()];
        let flat: Vec<String> = self.core.run("typers", &args).await?;
        let mut typers: Vec<Typer> = flat
            .chunks_exact(2)
            .filter_map(|pair| {
                let user_id = UserId::parse(&pair[0]).ok()?;
                let name = pair[1].clone();
                Some(Typer { user_id, name })
            })
            .collect();
        typers.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(typers)
    }

    async fn take_expired(&self, _now: Instant) -> Result<Vec<ExpiredTyping>, BackplaneError> {
        let args: [&str; 2] = [&now_ms().to_string(), &EXPIRY_BATCH.to_string()];
        let claimed: Vec<String> = self.core.run("take_expired", &args).await?;
        Ok(claimed
            .iter()
            .filter_map(|m| room_and_user(m))
            .map(|(room, user_id)| ExpiredTyping { room, user_id })
            .collect())
    }
}
