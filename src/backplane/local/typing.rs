//! Typing in this process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::lock;
use crate::backplane::{BackplaneError, ExpiredTyping, Typer, Typing};
use crate::domain::{RoomId, UserId};

struct TypingState {
    name: String,
    expires_at: Instant,
    last_broadcast: Instant,
}

pub(super) struct LocalTyping {
    typing: Mutex<HashMap<(RoomId, UserId), TypingState>>,
    ttl: Duration,
    rebroadcast: Duration,
}

impl LocalTyping {
    pub(super) fn new(ttl: Duration, rebroadcast: Duration) -> Self {
        Self {
            typing: Mutex::default(),
            ttl,
            rebroadcast,
        }
    }
}

#[async_trait]
impl Typing for LocalTyping {
    async fn start(
        &self,
        room: RoomId,
        typer: Typer,
        now: Instant,
    ) -> Result<bool, BackplaneError> {
        let mut typing = lock(&self.typing);
        let expires_at = now + self.ttl;
        match typing.get_mut(&(room, typer.user_id.clone())) {
            Some(existing) if existing.expires_at > now => {
                existing.expires_at = expires_at;
                existing.name = typer.name;
                let due = now.duration_since(existing.last_broadcast) >= self.rebroadcast;
                if due {
                    existing.last_broadcast = now;
                }
                Ok(due)
            }
            _ => {
                let fresh = TypingState {
                    name: typer.name,
                    expires_at,
                    last_broadcast: now,
                };
                typing.insert((room, typer.user_id), fresh);
                Ok(true)
            }
        }
    }

    async fn stop(&self, room: RoomId, user: &UserId) -> Result<bool, BackplaneError> {
        Ok(lock(&self.typing).remove(&(room, user.clone())).is_some())
    }

    async fn stop_all(&self, user: &UserId) -> Result<Vec<RoomId>, BackplaneError> {
        let mut typing = lock(&self.typing);
        let mut rooms = Vec::new();
        typing.retain(|(room, u), _| {
            let mine = u == user;
            if mine {
                rooms.push(*room);
            }
            !mine
        });
        Ok(rooms)
    }

    async fn typers(&self, room: RoomId, now: Instant) -> Result<Vec<Typer>, BackplaneError> {
        let typing = lock(&self.typing);
        let mut typers: Vec<Typer> = typing
            .iter()
            .filter(|((r, _), t)| *r == room && t.expires_at > now)
            .map(|((_, user_id), t)| Typer {
                user_id: user_id.clone(),
                name: t.name.clone(),
            })
            .collect();
        typers.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(typers)
    }

    async fn take_expired(&self, now: Instant) -> Result<Vec<ExpiredTyping>, BackplaneError> {
        let mut typing = lock(&self.typing);
        let mut expired = Vec::new();
        typing.retain(|(room, user_id), t| {
            let done = t.expires_at <= now;
            if done {
                expired.push(ExpiredTyping {
                    room: *room,
                    user_id: user_id.clone(),
                });
            }
            !done
        });
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn typer(id: &str) -> Typer {
        Typer {
            user_id: user(id),
            name: id.to_uppercase(),
        }
    }

    fn typing() -> LocalTyping {
        LocalTyping::new(Duration::from_secs(5), Duration::from_secs(2))
    }

    #[tokio::test]
    async fn typing_rebroadcasts_at_most_every_two_seconds_and_expires_after_five() {
        let t = typing();
        let room = RoomId::new();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(t.start(room, typer("ann"), t0).await.unwrap());
        assert!(!t.start(room, typer("ann"), at(1500)).await.unwrap());
        assert!(t.start(room, typer("ann"), at(2100)).await.unwrap());
        assert_eq!(t.typers(room, at(7000)).await.unwrap().len(), 1);
        assert!(t.take_expired(at(7000)).await.unwrap().is_empty());
        let expired = t.take_expired(at(7200)).await.unwrap();
        let ann = ExpiredTyping {
            room,
            user_id: user("ann"),
        };
        assert_eq!(expired, vec![ann]);
        assert!(!t.stop(room, &user("ann")).await.unwrap());
    }

    #[tokio::test]
    async fn stop_all_ends_every_room_of_the_user() {
        let t = typing();
        let (r1, r2) = (RoomId::new(), RoomId::new());
        let now = Instant::now();
        t.start(r1, typer("ann"), now).await.unwrap();
        t.start(r2, typer("ann"), now).await.unwrap();
        t.start(r2, typer("bob"), now).await.unwrap();
        let mut rooms = t.stop_all(&user("ann")).await.unwrap();
        rooms.sort();
        let mut expected = vec![r1, r2];
        expected.sort();
        assert_eq!(rooms, expected);
        assert_eq!(t.typers(r2, now).await.unwrap(), vec![typer("bob")]);
    }
}
