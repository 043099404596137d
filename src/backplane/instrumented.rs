//! Every Redis state call as a span (a child of the client event that made it) with failures
//! counted. Background upkeep calls get debug-level spans, so they do not flood traces.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;
use tracing::Instrument;

use super::{
    Backplane, BackplaneError, Departure, ExpiredTyping, NodeLoad, NodeStats, SecurityEvent, Typer,
    UserPresence,
};
use crate::domain::{RoomId, UserId};
use crate::metrics::{Metrics, OpLabel};

pub struct InstrumentedBackplane {
    inner: Arc<dyn Backplane>,
    metrics: Arc<Metrics>,
}

impl InstrumentedBackplane {
    pub fn new(inner: Arc<dyn Backplane>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn observe<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, BackplaneError>>,
    ) -> Result<T, BackplaneError> {
        let span = tracing::info_span!(
            "redis",
            otel.name = format!("redis.{op}"),
            otel.kind = "client",
            db.system = "redis",
            db.operation = op,
        );
        self.count(op, call.instrument(span).await)
    }

    async fn observe_quietly<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, BackplaneError>>,
    ) -> Result<T, BackplaneError> {
        let span = tracing::debug_span!(
            "redis",
            otel.name = format!("redis.{op}"),
            db.operation = op
        );
        self.count(op, call.instrument(span).await)
    }

    fn count<T>(
        &self,
        op: &'static str,
        result: Result<T, BackplaneError>,
    ) -> Result<T, BackplaneError> {
        if result.is_err() {
            self.metrics
                .redis_errors
                .get_or_create(&OpLabel { op: op.to_owned() })
                .inc();
        }
        result
    }
}

#[async_trait]
impl Backplane for InstrumentedBackplane {
    async fn socket_connected(&self, user: &UserId, socket: &str) -> Result<bool, BackplaneError> {
        self.observe(
            "socket_connected",
            self.inner.socket_connected(user, socket),
        )
        .await
    }

    async fn socket_disconnected(
        &self,
        user: &UserId,
        socket: &str,
    ) -> Result<bool, BackplaneError> {
        self.observe(
            "socket_disconnected",
            self.inner.socket_disconnected(user, socket),
        )
        .await
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BackplaneError> {
        self.observe("online", self.inner.online(users)).await
    }

    async fn typing_start(
        &self,
        room: RoomId,
        typer: Typer,
        now: Instant,
    ) -> Result<bool, BackplaneError> {
        self.observe("typing_start", self.inner.typing_start(room, typer, now))
            .await
    }

    async fn typing_stop(&self, room: RoomId, user: &UserId) -> Result<bool, BackplaneError> {
        self.observe("typing_stop", self.inner.typing_stop(room, user))
            .await
    }

    async fn typing_stop_all(&self, user: &UserId) -> Result<Vec<RoomId>, BackplaneError> {
        self.observe("typing_stop_all", self.inner.typing_stop_all(user))
            .await
    }

    async fn typers(&self, room: RoomId, now: Instant) -> Result<Vec<Typer>, BackplaneError> {
        self.observe("typers", self.inner.typers(room, now)).await
    }

    async fn take_expired_typing(
        &self,
        now: Instant,
    ) -> Result<Vec<ExpiredTyping>, BackplaneError> {
        self.observe_quietly("take_expired_typing", self.inner.take_expired_typing(now))
            .await
    }

    async fn maintain(&self) -> Result<Vec<Departure>, BackplaneError> {
        self.observe_quietly("maintain", self.inner.maintain())
            .await
    }

    fn take_resync_needed(&self) -> bool {
        self.inner.take_resync_needed()
    }

    async fn node_sockets(&self) -> Result<Vec<(UserId, String)>, BackplaneError> {
        self.observe_quietly("node_sockets", self.inner.node_sockets())
            .await
    }

    async fn leave_cluster(&self) -> Result<Vec<Departure>, BackplaneError> {
        self.observe("leave_cluster", self.inner.leave_cluster())
            .await
    }

    async fn publish_node_stats(&self, load: NodeLoad) -> Result<(), BackplaneError> {
        self.observe_quietly("publish_node_stats", self.inner.publish_node_stats(load))
            .await
    }

    async fn cluster_nodes(&self) -> Result<Vec<NodeStats>, BackplaneError> {
        self.observe("cluster_nodes", self.inner.cluster_nodes())
            .await
    }

    async fn users_online(&self) -> Result<u64, BackplaneError> {
        self.observe("users_online", self.inner.users_online())
            .await
    }

    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, BackplaneError> {
        self.observe("user_presence", self.inner.user_presence(user))
            .await
    }

    async fn record_security_event(&self, event: SecurityEvent) -> Result<(), BackplaneError> {
        self.observe_quietly(
            "record_security_event",
            self.inner.record_security_event(event),
        )
        .await
    }

    async fn recent_security_events(
        &self,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, BackplaneError> {
        self.observe(
            "recent_security_events",
            self.inner.recent_security_events(limit),
        )
        .await
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn describe(&self) -> &'static str {
        self.inner.describe()
    }
}
