//! The in-process backplane of a single node.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Backplane, BackplaneError, ExpiredTyping, Typer};
use crate::domain::{RoomId, UserId};

struct TypingState {
    name: String,
    expires_at: Instant,
    last_broadcast: Instant,
}

#[derive(Default)]
struct State {
    sockets: HashMap<UserId, HashSet<String>>,
    typing: HashMap<(RoomId, UserId), TypingState>,
}

/// Presence and typing held in this process: exact for one node, wrong for two.
pub struct LocalBackplane {
    state: Mutex<State>,
    typing_ttl: Duration,
    rebroadcast: Duration,
}

impl LocalBackplane {
    pub fn new(typing_ttl: Duration, rebroadcast: Duration) -> Self {
        Self {
            state: Mutex::default(),
            typing_ttl,
            rebroadcast,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters more than losing presence entirely, so recover the guard.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Backplane for LocalBackplane {
    async fn socket_connected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError> {
        let mut state = self.lock();
        let sockets = state.sockets.entry(user.clone()).or_default();
        let first = sockets.is_empty();
        sockets.insert(socket.to_owned());
        Ok(first)
    }

    async fn socket_disconnected(
        &self,
        user: &UserId,
        socket: &str,
    ) -> Result<bool, BackplaneError> {
        let mut state = self.lock();
        let Some(sockets) = state.sockets.get_mut(user) else {
            return Ok(false);
        };
        let removed = sockets.remove(socket);
        let last = removed && sockets.is_empty();
        if sockets.is_empty() {
            state.sockets.remove(user);
        }
        Ok(last)
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BackplaneError> {
        let state = self.lock();
        Ok(users
            .iter()
            .map(|u| state.sockets.contains_key(u))
            .collect())
    }

    async fn typing_start(
        &self,
        room: RoomId,
        typer: Typer,
        now: Instant,
    ) -> Result<bool, BackplaneError> {
        let mut state = self.lock();
        let expires_at = now + self.typing_ttl;
        let key = (room, typer.user_id);
        match state.typing.get_mut(&key) {
            Some(existing) if existing.expires_at > now => {
                existing.expires_at = expires_at;
                existing.name = typer.name;
                if now.duration_since(existing.last_broadcast) >= self.rebroadcast {
                    existing.last_broadcast = now;
                    return Ok(true);
                }
                Ok(false)
            }
            _ => {
                let fresh = TypingState {
                    name: typer.name,
                    expires_at,
                    last_broadcast: now,
                };
                state.typing.insert(key, fresh);
                Ok(true)
            }
        }
    }

    async fn typing_stop(&self, room: RoomId, user: &UserId) -> Result<bool, BackplaneError> {
        Ok(self.lock().typing.remove(&(room, user.clone())).is_some())
    }

    async fn typing_stop_all(&self, user: &UserId) -> Result<Vec<RoomId>, BackplaneError> {
        let mut state = self.lock();
        let rooms: Vec<RoomId> = state
            .typing
            .keys()
            .filter(|(_, u)| u == user)
            .map(|(r, _)| *r)
            .collect();
        for room in &rooms {
            state.typing.remove(&(*room, user.clone()));
        }
        Ok(rooms)
    }

    async fn typers(&self, room: RoomId, now: Instant) -> Result<Vec<Typer>, BackplaneError> {
        let state = self.lock();
        let mut typers: Vec<Typer> = state
            .typing
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

    async fn take_expired_typing(
        &self,
        now: Instant,
    ) -> Result<Vec<ExpiredTyping>, BackplaneError> {
        let mut state = self.lock();
        let expired: Vec<(RoomId, UserId)> = state
            .typing
            .iter()
            .filter(|(_, t)| t.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        Ok(expired
            .into_iter()
            .map(|key| {
                state.typing.remove(&key);
                ExpiredTyping {
                    room: key.0,
                    user_id: key.1,
                }
            })
            .collect())
    }

    async fn maintain(&self) -> Result<Vec<super::Departure>, BackplaneError> {
        Ok(Vec::new())
    }

    async fn leave_cluster(&self) -> Result<Vec<super::Departure>, BackplaneError> {
        Ok(Vec::new())
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn describe(&self) -> &'static str {
        "in-process (single node)"
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

    fn backplane() -> LocalBackplane {
        LocalBackplane::new(Duration::from_secs(5), Duration::from_secs(2))
    }

    #[tokio::test]
    async fn a_user_is_online_while_any_socket_remains() {
        let bp = backplane();
        assert!(bp.socket_connected(&user("ann"), "s1").await.unwrap());
        assert!(!bp.socket_connected(&user("ann"), "s2").await.unwrap());
        assert!(!bp.socket_disconnected(&user("ann"), "s1").await.unwrap());
        assert_eq!(
            bp.online(&[user("ann"), user("bob")]).await.unwrap(),
            vec![true, false]
        );
        assert!(bp.socket_disconnected(&user("ann"), "s2").await.unwrap());
        assert!(!bp.socket_disconnected(&user("ann"), "s2").await.unwrap());
        assert_eq!(bp.online(&[user("ann")]).await.unwrap(), vec![false]);
    }

    #[tokio::test]
    async fn typing_rebroadcasts_at_most_every_two_seconds_and_expires_after_five() {
        let bp = backplane();
        let room = RoomId::new();
        let t0 = Instant::now();
        assert!(bp.typing_start(room, typer("ann"), t0).await.unwrap());
        assert!(
            !bp.typing_start(room, typer("ann"), t0 + Duration::from_millis(1500))
                .await
                .unwrap()
        );
        assert!(
            bp.typing_start(room, typer("ann"), t0 + Duration::from_millis(2100))
                .await
                .unwrap()
        );
        let later = t0 + Duration::from_millis(7000);
        assert_eq!(bp.typers(room, later).await.unwrap().len(), 1);
        assert!(bp.take_expired_typing(later).await.unwrap().is_empty());
        let expired = bp
            .take_expired_typing(t0 + Duration::from_millis(7200))
            .await
            .unwrap();
        assert_eq!(
            expired,
            vec![ExpiredTyping {
                room,
                user_id: user("ann")
            }]
        );
        assert!(!bp.typing_stop(room, &user("ann")).await.unwrap());
    }

    #[tokio::test]
    async fn stop_all_ends_every_room_of_the_user() {
        let bp = backplane();
        let (r1, r2) = (RoomId::new(), RoomId::new());
        let now = Instant::now();
        bp.typing_start(r1, typer("ann"), now).await.unwrap();
        bp.typing_start(r2, typer("ann"), now).await.unwrap();
        bp.typing_start(r2, typer("bob"), now).await.unwrap();
        let mut rooms = bp.typing_stop_all(&user("ann")).await.unwrap();
        rooms.sort();
        let mut expected = vec![r1, r2];
        expected.sort();
        assert_eq!(rooms, expected);
        assert_eq!(bp.typers(r2, now).await.unwrap(), vec![typer("bob")]);
    }
}
