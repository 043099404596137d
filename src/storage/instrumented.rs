//! Every storage call as a span (a child of the client event that made it), with its latency
//! and failures counted, whichever backend is underneath.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;

use super::{
    Claimed, HistoryPage, HistoryQuery, IdempotencyClaim, IdempotencyRecord, NewMessage, NewRoom,
    OutboxEvent, OutboxStats, ReadMark, SeenUser, SendOutcome, StorageError, Store,
};
use crate::domain::{RoomId, RoomKind, UserId};
use crate::metrics::{Metrics, OpLabel};
use crate::model::{MemberRecord, Room};

pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// `postgresql` or `sqlite`, the `db.system` of every span.
    system: &'static str,
}

impl InstrumentedStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>, system: &'static str) -> Self {
        Self {
            inner,
            metrics,
            system,
        }
    }

    async fn observe<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        let span = tracing::info_span!(
            "storage",
            otel.name = format!("storage.{op}"),
            otel.kind = "client",
            db.system = self.system,
            db.operation = op,
        );
        let started = Instant::now();
        let result = call.instrument(span).await;
        let label = OpLabel { op: op.to_owned() };
        self.metrics
            .storage_duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result
            && matches!(
                e,
                StorageError::Database(_) | StorageError::Migration(_) | StorageError::WriteFailed
            )
        {
            self.metrics.storage_errors.get_or_create(&label).inc();
        }
        result
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn ping(&self) -> Result<(), StorageError> {
        self.observe("ping", self.inner.ping()).await
    }

    async fn record_seen(&self, users: &[SeenUser]) -> Result<(), StorageError> {
        self.observe("record_seen", self.inner.record_seen(users))
            .await
    }

    async fn release_memory(&self) {
        self.inner.release_memory().await;
    }

    async fn create_room(&self, room: NewRoom) -> Result<Room, StorageError> {
        self.observe("create_room", self.inner.create_room(room))
            .await
    }

    async fn direct_room(&self, me: &UserId, other: &UserId) -> Result<(Room, bool), StorageError> {
        self.observe("direct_room", self.inner.direct_room(me, other))
            .await
    }

    async fn room_kind(&self, room: RoomId) -> Result<Option<RoomKind>, StorageError> {
        self.observe("room_kind", self.inner.room_kind(room)).await
    }

    async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        self.observe("is_member", self.inner.is_member(room, user))
            .await
    }

    async fn room(&self, room: RoomId, viewer: &UserId) -> Result<Option<Room>, StorageError> {
        self.observe("room", self.inner.room(room, viewer)).await
    }

    async fn add_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        self.observe("add_member", self.inner.add_member(room, user))
            .await
    }

    async fn remove_member(&self, room: RoomId, user: &UserId) -> Result<bool, StorageError> {
        self.observe("remove_member", self.inner.remove_member(room, user))
            .await
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<Room>, StorageError> {
        self.observe("rooms_of", self.inner.rooms_of(user)).await
    }

    async fn room_ids_of(&self, user: &UserId) -> Result<Vec<RoomId>, StorageError> {
        self.observe("room_ids_of", self.inner.room_ids_of(user))
            .await
    }

    async fn members(&self, room: RoomId) -> Result<Vec<MemberRecord>, StorageError> {
        self.observe("members", self.inner.members(room)).await
    }

    async fn send_batch(&self, batch: &[NewMessage]) -> Result<Vec<SendOutcome>, StorageError> {
        self.observe("send_batch", self.inner.send_batch(batch))
            .await
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StorageError> {
        self.observe("history", self.inner.history(room, query))
            .await
    }

    async fn mark_read(
        &self,
        room: RoomId,
        user: &UserId,
        seq: i64,
    ) -> Result<ReadMark, StorageError> {
        self.observe("mark_read", self.inner.mark_read(room, user, seq))
            .await
    }

    async fn count_rooms(&self) -> Result<u64, StorageError> {
        self.observe("count_rooms", self.inner.count_rooms()).await
    }

    async fn member_name(
        &self,
        room: RoomId,
        user: &UserId,
    ) -> Result<Option<String>, StorageError> {
        self.observe("member_name", self.inner.member_name(room, user))
            .await
    }

    async fn claim_idempotency(&self, claim: &IdempotencyClaim) -> Result<Claimed, StorageError> {
        self.observe("claim_idempotency", self.inner.claim_idempotency(claim))
            .await
    }

    async fn find_idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StorageError> {
        self.observe("find_idempotency", self.inner.find_idempotency(key))
            .await
    }

    async fn record_idempotency(
        &self,
        key: &str,
        outcome: Option<(u16, &str)>,
    ) -> Result<(), StorageError> {
        self.observe(
            "record_idempotency",
            self.inner.record_idempotency(key, outcome),
        )
        .await
    }

    async fn purge_idempotency(&self, before_ms: i64) -> Result<u64, StorageError> {
        self.observe("purge_idempotency", self.inner.purge_idempotency(before_ms))
            .await
    }

    async fn claim_outbox(
        &self,
        node: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StorageError> {
        let claim = self.inner.claim_outbox(node, now_ms, lease_until_ms, limit);
        self.observe("claim_outbox", claim).await
    }

    async fn outbox_delivered(&self, node: &str, ids: &[uuid::Uuid]) -> Result<(), StorageError> {
        self.observe("outbox_delivered", self.inner.outbox_delivered(node, ids))
            .await
    }

    async fn outbox_retry(
        &self,
        node: &str,
        ids: &[uuid::Uuid],
        due_ms: i64,
        failed_ms: Option<i64>,
    ) -> Result<(), StorageError> {
        let retry = self.inner.outbox_retry(node, ids, due_ms, failed_ms);
        self.observe("outbox_retry", retry).await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StorageError> {
        self.observe("outbox_stats", self.inner.outbox_stats())
            .await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
