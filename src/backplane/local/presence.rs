//! Presence in this process.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::backplane::{BackplaneError, Presence, UserPresence};
use crate::domain::UserId;

pub(super) struct LocalPresence {
    sockets: Mutex<HashMap<UserId, HashSet<String>>>,
    node_id: String,
}

impl LocalPresence {
    pub(super) fn new(node_id: String) -> Self {
        Self {
            sockets: Mutex::default(),
            node_id,
        }
    }
}

#[async_trait]
impl Presence for LocalPresence {
    async fn connected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError> {
        let mut all = lock(&self.sockets);
        let sockets = all.entry(user.clone()).or_default();
        let first = sockets.is_empty();
        sockets.insert(socket.to_owned());
        Ok(first)
    }

    async fn disconnected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError> {
        let mut all = lock(&self.sockets);
        let Some(sockets) = all.get_mut(user) else {
            return Ok(false);
        };
        let last = sockets.remove(socket) && sockets.is_empty();
        if sockets.is_empty() {
            all.remove(user);
            crate::memory::shrink_when_sparse(&mut all);
        }
        Ok(last)
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BackplaneError> {
        let all = lock(&self.sockets);
        Ok(users.iter().map(|u| all.contains_key(u)).collect())
    }

    async fn users_online(&self) -> Result<u64, BackplaneError> {
        Ok(lock(&self.sockets).len() as u64)
    }

    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, BackplaneError> {
        let sockets = lock(&self.sockets).get(user).map_or(0, HashSet::len) as u64;
        let nodes = if sockets > 0 {
            vec![self.node_id.clone()]
        } else {
            Vec::new()
        };
        Ok(UserPresence {
            online: sockets > 0,
            sockets,
            nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[tokio::test]
    async fn a_user_is_online_while_any_socket_remains() {
        let p = LocalPresence::new("solo".to_owned());
        assert!(p.connected(&user("ann"), "s1").await.unwrap());
        assert!(!p.connected(&user("ann"), "s2").await.unwrap());
        assert!(!p.disconnected(&user("ann"), "s1").await.unwrap());
        assert_eq!(
            p.online(&[user("ann"), user("bob")]).await.unwrap(),
            vec![true, false]
        );
        assert!(p.disconnected(&user("ann"), "s2").await.unwrap());
        assert!(!p.disconnected(&user("ann"), "s2").await.unwrap());
        assert_eq!(p.online(&[user("ann")]).await.unwrap(), vec![false]);
    }

    #[tokio::test]
    async fn users_online_and_one_users_presence_are_counted() {
        let p = LocalPresence::new("solo".to_owned());
        p.connected(&user("ann"), "s1").await.unwrap();
        p.connected(&user("ann"), "s2").await.unwrap();
        p.connected(&user("bob"), "s3").await.unwrap();
        assert_eq!(p.users_online().await.unwrap(), 2);
        let ann = p.user_presence(&user("ann")).await.unwrap();
        assert_eq!(
            (ann.online, ann.sockets, ann.nodes),
            (true, 2, vec!["solo".to_owned()])
        );
        let cid = p.user_presence(&user("cid")).await.unwrap();
        assert_eq!((cid.online, cid.sockets, cid.nodes.len()), (false, 0, 0));
    }
}
