//! Sending webhook batches `{ events: [ { id, type, time, data } ] }` to `CONFAB_WEBHOOK_URL`,
//! signed, on one pooled HTTP client. The outbox (`delivery.rs`) sends change events through
//! this; presence events come here directly from the node that saw the change.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::config::WebhookSettings;
use super::signature;
use crate::config::Secret;
use crate::domain::UserId;
use crate::metrics::Metrics;

/// One event as the receiver sees it.
#[derive(Debug, Clone, Serialize)]
pub struct WireEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub time: DateTime<Utc>,
    pub data: Value,
}

/// Why a batch was not acknowledged; the events are tried again.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("receiver answered {0}")]
    Status(u16),
    #[error("receiver unreachable or too slow: {0}")]
    Transport(#[from] reqwest::Error),
}

/// Attempts of a presence event, which has no outbox row to retry from.
const PRESENCE_ATTEMPTS: u32 = 3;

pub struct Webhooks {
    pub(super) settings: WebhookSettings,
    client: reqwest::Client,
    secret: Secret,
    pub(super) metrics: Arc<Metrics>,
    /// The node's id: claims of the outbox are made in its name.
    pub(super) node: String,
}

impl Webhooks {
    pub fn new(
        settings: WebhookSettings,
        client: reqwest::Client,
        secret: Secret,
        metrics: Arc<Metrics>,
        node: String,
    ) -> Self {
        Self {
            settings,
            client,
            secret,
            metrics,
            node,
        }
    }

    /// POSTs one signed batch; Ok once the receiver answered 2xx.
    pub async fn post(&self, events: &[WireEvent]) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(&serde_json::json!({ "events": events }))
            .unwrap_or_else(|_| b"{\"events\":[]}".to_vec());
        // A fresh id per request: a retried event may travel in another batch, so receivers
        // deduplicate by the events' ids, not this one.
        let id = format!("msg_{}", Uuid::now_v7().simple());
        let signed = signature::sign(&self.secret, &id, Utc::now().timestamp(), &body);
        let request = self
            .client
            .post(&self.settings.url)
            .timeout(self.settings.timeout)
            .header("content-type", "application/json")
            .body(body);
        let response = signed.apply(request).send().await?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(status.as_u16()))
        }
    }

    /// Sends `user.online` / `user.offline` in the background, retried a few times: presence has
    /// no durable row, and a newer change soon supersedes it anyway.
    pub fn presence(self: &Arc<Self>, user: &UserId, online: bool) {
        let event = WireEvent {
            id: Uuid::now_v7(),
            kind: if online {
                "user.online"
            } else {
                "user.offline"
            }
            .to_owned(),
            time: Utc::now(),
            data: serde_json::json!({ "userId": user }),
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut delay = this.settings.retry_base;
            for attempt in 1..=PRESENCE_ATTEMPTS {
                match this.post(std::slice::from_ref(&event)).await {
                    Ok(()) => {
                        this.metrics.hooks.webhook("delivered", 1);
                        return;
                    }
                    Err(e) if attempt < PRESENCE_ATTEMPTS => {
                        tracing::debug!(error = %e, kind = %event.kind, "presence webhook retried");
                        this.metrics.hooks.webhook("retried", 1);
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, kind = %event.kind, "presence webhook dropped");
                        this.metrics.hooks.webhook("dropped", 1);
                    }
                }
            }
        });
    }
}
