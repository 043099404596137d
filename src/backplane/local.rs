//! The in-process backplane of a single node.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{
    Backplane, BackplaneError, ExpiredTyping, NodeLoad, NodeStats, SECURITY_EVENTS_KEPT,
    SecurityEvent, Typer, UserPresence,
};
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
    /// The last load published by the upkeep.
    load: Option<(NodeLoad, DateTime<Utc>)>,
    /// The newest security events, newest first.
    security: VecDeque<SecurityEvent>,
}

/// Presence and typing held in this process: exact for one node, wrong for two.
pub struct LocalBackplane {
    state: Mutex<State>,
    typing_ttl: Duration,
    rebroadcast: Duration,
    node_id: String,
    started_at: DateTime<Utc>,
}

impl LocalBackplane {
    pub fn new(typing_ttl: Duration, rebroadcast: Duration) -> Self {
        Self {
            state: Mutex::default(),
            typing_ttl,
            rebroadcast,
            node_id: "local".to_owned(),
            started_at: Utc::now(),
        }
    }

    /// Names the node in the operations API (`local` otherwise).
    pub fn with_node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = node_id.into();
        self
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

    async fn publish_node_stats(&self, load: NodeLoad) -> Result<(), BackplaneError> {
        self.lock().load = Some((load, Utc::now()));
        Ok(())
    }

    async fn cluster_nodes(&self) -> Result<Vec<NodeStats>, BackplaneError> {
        let state = self.lock();
        Ok(state
            .load
            .iter()
            .map(|(load, at)| NodeStats {
                id: self.node_id.clone(),
                connections: load.connections,
                sockets: load.sockets,
                rooms: load.rooms,
                started_at: self.started_at,
                updated_at: *at,
                messages_stored: load.messages_stored,
                events: load.events,
                rate_limited: load.rate_limited,
                backplane_lag_ms: None,
                redis_rtt_ms: None,
            })
            .collect())
    }

    async fn users_online(&self) -> Result<u64, BackplaneError> {
        Ok(self.lock().sockets.len() as u64)
    }

    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, BackplaneError> {
        let sockets = self.lock().sockets.get(user).map_or(0, HashSet::len) as u64;
        Ok(UserPresence {
            online: sockets > 0,
            sockets,
            nodes: if sockets > 0 {
                vec![self.node_id.clone()]
            } else {
                Vec::new()
            },
        })
    }

    async fn record_security_event(&self, event: SecurityEvent) -> Result<(), BackplaneError> {
        let mut state = self.lock();
        state.security.push_front(event);
        state.security.truncate(SECURITY_EVENTS_KEPT);
        Ok(())
    }

    async fn recent_security_events(
        &self,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, BackplaneError> {
        Ok(self.lock().security.iter().take(limit).cloned().collect())
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
    async fn the_operations_view_counts_users_and_keeps_the_newest_security_events() {
        let bp = backplane().with_node_id("solo");
        assert!(bp.cluster_nodes().await.unwrap().is_empty());
        bp.socket_connected(&user("ann"), "s1").await.unwrap();
        bp.socket_connected(&user("ann"), "s2").await.unwrap();
        bp.socket_connected(&user("bob"), "s3").await.unwrap();
        assert_eq!(bp.users_online().await.unwrap(), 2);
        let ann = bp.user_presence(&user("ann")).await.unwrap();
        assert_eq!(
            (ann.online, ann.sockets, ann.nodes),
            (true, 2, vec!["solo".to_owned()])
        );
        let cid = bp.user_presence(&user("cid")).await.unwrap();
        assert_eq!((cid.online, cid.sockets, cid.nodes.len()), (false, 0, 0));

        let load = NodeLoad {
            connections: 3,
            sockets: 3,
            ..NodeLoad::default()
        };
        bp.publish_node_stats(load).await.unwrap();
        let nodes = bp.cluster_nodes().await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!((nodes[0].id.as_str(), nodes[0].connections), ("solo", 3));

        for i in 0..(SECURITY_EVENTS_KEPT + 5) {
            let event = SecurityEvent {
                at: Utc::now(),
                node: "solo".to_owned(),
                kind: super::super::SecurityKind::RateLimited,
                user: Some(format!("u{i}")),
                peer: None,
                detail: None,
            };
            bp.record_security_event(event).await.unwrap();
        }
        let recent = bp.recent_security_events(1000).await.unwrap();
        assert_eq!(recent.len(), SECURITY_EVENTS_KEPT);
        let newest = format!("u{}", SECURITY_EVENTS_KEPT + 4);
        assert_eq!(recent[0].user.as_deref(), Some(newest.as_str()));
        assert_eq!(bp.recent_security_events(3).await.unwrap().len(), 3);
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
