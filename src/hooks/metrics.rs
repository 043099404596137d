//! Metrics of webhooks and forwarded calls, in the application's registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::OutcomeLabel;

pub struct HookMetrics {
    /// Webhook events by outcome: `delivered`, `retried` (an attempt failed), `failed` (an outbox
    /// event given up on), `dropped` (a presence event given up on).
    pub webhook_events: Family<OutcomeLabel, Counter>,
    /// Outbox events waiting for delivery, as last seen by this node.
    pub webhook_backlog: Gauge,
    /// Outbox events given up on, as last seen by this node.
    pub webhook_failed: Gauge,
    /// Age of the oldest pending outbox event, in seconds (0 when none).
    pub webhook_oldest_seconds: Gauge,
    /// Time from a change being stored to its webhook being acknowledged.
    pub webhook_lag: Histogram,
    /// Forwarded calls by outcome (`ok`, `error`, `unavailable`, `rate_limited`, `busy`, `open`).
    pub rpc_calls: Family<OutcomeLabel, Counter>,
    /// Time of forwarded calls that reached the backend.
    pub rpc_duration: Histogram,
}

impl HookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            webhook_events: Family::default(),
            webhook_backlog: Gauge::default(),
            webhook_failed: Gauge::default(),
            webhook_oldest_seconds: Gauge::default(),
            webhook_lag: Histogram::new(exponential_buckets(0.005, 2.0, 20)),
            rpc_calls: Family::default(),
            rpc_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        };
        registry.register(
            "webhook_events",
            "Webhook events by outcome (delivered, retried, failed, dropped)",
            metrics.webhook_events.clone(),
        );
        registry.register(
            "webhook_backlog",
            "Outbox events waiting for delivery",
            metrics.webhook_backlog.clone(),
        );
        registry.register(
            "webhook_failed",
            "Outbox events given up on after retrying",
            metrics.webhook_failed.clone(),
        );
        registry.register_with_unit(
            "webhook_oldest_pending",
            "Age of the oldest pending outbox event",
            Unit::Seconds,
            metrics.webhook_oldest_seconds.clone(),
        );
        registry.register_with_unit(
            "webhook_delivery_lag",
            "Time from a stored change to its acknowledged webhook",
            Unit::Seconds,
            metrics.webhook_lag.clone(),
        );
        registry.register(
            "rpc_calls",
            "Forwarded rpc:call calls by outcome",
            metrics.rpc_calls.clone(),
        );
        registry.register_with_unit(
            "rpc_duration",
            "Time of forwarded calls that reached the backend",
            Unit::Seconds,
            metrics.rpc_duration.clone(),
        );
        metrics
    }

    pub fn webhook(&self, outcome: &str, events: u64) {
        let label = OutcomeLabel {
            outcome: outcome.to_owned(),
        };
        self.webhook_events.get_or_create(&label).inc_by(events);
    }

    pub fn rpc(&self, outcome: &str) {
        let label = OutcomeLabel {
            outcome: outcome.to_owned(),
        };
        self.rpc_calls.get_or_create(&label).inc();
    }
}
