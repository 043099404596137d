//! The outbox's delivery task, one per node: claim due events for a lease, POST them as one
//! batch, delete them once acknowledged, and otherwise put them back with exponential backoff
//! and jitter until they have been retried for the configured time (24 hours), then mark them
//! failed. A node that dies holding a claim delays its events by one lease only: the lease
//! outlives the request's timeout by little, and then any node claims them again.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::webhooks::{Webhooks, WireEvent};
use crate::storage::outbox::now_ms;
use crate::storage::{OutboxEvent, Store};

/// Pause after the outbox could not be read.
const STORAGE_RETRY: Duration = Duration::from_secs(1);
/// How often the backlog gauges are refreshed from the database.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Runs until `stop`.
pub async fn run(hooks: Arc<Webhooks>, store: Arc<dyn Store>, stop: CancellationToken) {
    let mut stats = tokio::time::interval(STATS_EVERY);
    stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let pause = match deliver_once(&hooks, store.as_ref()).await {
            // A full batch means more is probably due: go on at once (still stoppable).
            Ok(claimed) if claimed >= hooks.settings.batch => Duration::ZERO,
            Ok(_) => hooks.settings.poll,
            // The database is away: try again, but not at the polling rate.
            Err(e) => {
                tracing::warn!(error = %e, "webhook outbox not read; retrying");
                hooks.settings.poll.max(STORAGE_RETRY)
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
            _ = stats.tick() => refresh_stats(&hooks, store.as_ref()).await,
        }
    }
}

/// Claims and sends one batch; how many events it claimed.
async fn deliver_once(
    hooks: &Webhooks,
    store: &dyn Store,
) -> Result<usize, crate::storage::StorageError> {
    let now = now_ms();
    let lease = hooks.settings.timeout * 2 + Duration::from_secs(1);
    let lease_until = now + lease.as_millis() as i64;
    let events = store
        .claim_outbox(&hooks.node, now, lease_until, hooks.settings.batch)
        .await?;
    if events.is_empty() {
        return Ok(0);
    }
    let wire: Vec<WireEvent> = events.iter().map(wire_event).collect();
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    match hooks.post(&wire).await {
        Ok(()) => {
            store.outbox_delivered(&hooks.node, &ids).await?;
            let done = now_ms();
            for event in &events {
                let lag = (done - event.created_ms).max(0) as f64 / 1000.0;
                hooks.metrics.hooks.webhook_lag.observe(lag);
            }
            hooks.metrics.hooks.webhook("delivered", ids.len() as u64);
        }
        Err(e) => {
            tracing::warn!(error = %e, events = ids.len(), "webhook delivery failed; will retry");
            give_back(hooks, store, &events).await?;
        }
    }
    Ok(events.len())
}

/// Puts failed events back: later, or for good when they have been retried long enough.
async fn give_back(
    hooks: &Webhooks,
    store: &dyn Store,
    events: &[OutboxEvent],
) -> Result<(), crate::storage::StorageError> {
    let now = now_ms();
    let retry_for = hooks.settings.retry_for.as_millis() as i64;
    let (expired, again): (Vec<&OutboxEvent>, Vec<&OutboxEvent>) =
        events.iter().partition(|e| now - e.created_ms >= retry_for);
    if !expired.is_empty() {
        let ids: Vec<Uuid> = expired.iter().map(|e| e.id).collect();
        store
            .outbox_retry(&hooks.node, &ids, now, Some(now))
            .await?;
        tracing::error!(
            events = ids.len(),
            "webhook events given up on after retrying"
        );
        hooks.metrics.hooks.webhook("failed", ids.len() as u64);
    }
    if !again.is_empty() {
        let ids: Vec<Uuid> = again.iter().map(|e| e.id).collect();
        let attempts = again.iter().map(|e| e.attempts).max().unwrap_or(0);
        let delay = backoff(
            hooks.settings.retry_base,
            hooks.settings.retry_max,
            attempts,
        );
        let due = now + delay.as_millis() as i64;
        store.outbox_retry(&hooks.node, &ids, due, None).await?;
        hooks.metrics.hooks.webhook("retried", ids.len() as u64);
    }
    Ok(())
}

/// `base · 2^attempts`, capped at `max`, then a random point in its upper half, so that the
/// nodes' retries after an outage spread out instead of arriving together.
pub fn backoff(base: Duration, max: Duration, attempts: i32) -> Duration {
    let exp = attempts.clamp(0, 30) as u32;
    let full = base.saturating_mul(1u32 << exp.min(31)).min(max);
    let half = full / 2;
    let spread = full.saturating_sub(half).as_millis() as u64;
    half + Duration::from_millis(rand::rng().random_range(0..=spread))
}

fn wire_event(event: &OutboxEvent) -> WireEvent {
    WireEvent {
        id: event.id,
        kind: event.kind.clone(),
        time: chrono::DateTime::from_timestamp_millis(event.created_ms)
            .unwrap_or_else(chrono::Utc::now),
        data: event.data.clone(),
    }
}

async fn refresh_stats(hooks: &Webhooks, store: &dyn Store) {
    match store.outbox_stats().await {
        Ok(stats) => {
            let metrics = &hooks.metrics.hooks;
            metrics.webhook_backlog.set(stats.pending as i64);
            metrics.webhook_failed.set(stats.failed as i64);
            let age = stats
                .oldest_pending_ms
                .map_or(0, |at| (now_ms() - at).max(0) / 1000);
            metrics.webhook_oldest_seconds.set(age);
        }
        Err(e) => tracing::debug!(error = %e, "webhook backlog not read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_cap() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(10));
        for attempts in 0..40 {
            let full = (base * 2u32.saturating_pow(attempts.min(20) as u32)).min(max);
            let got = backoff(base, max, attempts);
            assert!(
                got >= full / 2 && got <= full,
                "{attempts}: {got:?} vs {full:?}"
            );
        }
        assert!(backoff(base, max, 1000) <= max);
    }
}
