//! The operations part of the HTTP API and the live dashboard.
//!
//! These routes are mounted under `/api/v1/` by the API router (`http/api/`), behind its key
//! check. The answers come from the backplane (Redis in a cluster), so every node gives the
//! same cluster-wide answer:
//!
//! - `GET /api/v1/stats`: every live node with its load, and the totals.
//! - `GET /api/v1/nodes`: every live node.
//! - `GET /api/v1/security-events?limit=N`: the newest security events.
//! - `GET /api/v1/dashboard/stream`: server-sent events, one `snapshot` a second: nodes with
//!   rates computed from their counters, totals, backplane lag and the newest security events.
//!
//! (A user's presence, `GET /api/v1/users/{userId}/presence`, is in `http/api/users.rs`.)
//!
//! `GET /dashboard` serves the page (`static/dashboard.html`), which asks for the key and reads
//! the stream with `fetch`, so the key never goes in a URL.
//!
//! Each node publishes its own load once a second ([`publish_loads`]).

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::backplane::{BackplaneError, NodeStats};
use crate::error::ChatError;
use crate::http::api::error::ApiQuery;
use crate::state::AppState;

mod load;
mod stream;

pub use load::publish_loads;
use stream::{dashboard_page, stream};

/// How often the stream sends a snapshot (and nodes publish their load).
pub(super) const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// How long the stream reuses the count of chat rooms (a full count on Postgres).
pub(super) const ROOM_COUNT_EVERY: Duration = Duration::from_secs(5);
/// Security events in each snapshot.
pub(super) const SNAPSHOT_SECURITY_EVENTS: usize = 30;
/// Default and largest `limit` of `/api/security-events`.
const DEFAULT_SECURITY_LIMIT: usize = 50;

/// The dashboard page; the API routes of this module are mounted by `http/api/`.
pub(crate) fn page() -> Router<AppState> {
    Router::new().route("/dashboard", get(dashboard_page))
}

// ---- answers -------------------------------------------------------------------------------

pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "code": code, "message": message } });
    (status, Json(body)).into_response()
}

fn unavailable(what: &str, cause: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %cause, "operations API: {what} unavailable");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        &format!("{what} unavailable, retry later"),
    )
}

/// A backplane failure, through the one mapping of backplane errors to the contract's codes:
/// `unavailable` (503) while it is away, `internal` (500) otherwise. The cause is logged only.
fn backplane_failed(e: BackplaneError) -> Response {
    let failure = ChatError::from(e);
    if let Some(cause) = failure.cause() {
        tracing::warn!(error = %cause, "operations API: backplane failed");
    }
    let status = match failure.code() {
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, failure.code(), &failure.to_string())
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Totals {
    nodes: usize,
    connections: u64,
    sockets: u64,
    users_online: u64,
    /// Chat rooms in storage; `None` when storage did not answer (in the stream only).
    rooms: Option<u64>,
}

pub(super) fn totals(nodes: &[NodeStats], users_online: u64, rooms: Option<u64>) -> Totals {
    Totals {
        nodes: nodes.len(),
        connections: nodes.iter().map(|n| n.connections).sum(),
        sockets: nodes.iter().map(|n| n.sockets).sum(),
        users_online,
        rooms,
    }
}

/// The webhook outbox, cluster-wide (it is one table): `{ pending, failed, oldestPendingAt }`,
/// or null when webhooks are off.
pub(super) async fn webhooks(app: &AppState) -> Result<Value, crate::storage::StorageError> {
    if app.hooks.webhooks.is_none() {
        return Ok(Value::Null);
    }
    let stats = app.store.outbox_stats().await?;
    let oldest = stats
        .oldest_pending_ms
        .and_then(chrono::DateTime::<Utc>::from_timestamp_millis);
    Ok(json!({ "pending": stats.pending, "failed": stats.failed, "oldestPendingAt": oldest }))
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "operations",
    responses((status = 200, description = "Every live node with its load, and the totals: \
        `{ generatedAt, answeredBy, totals: { nodes, connections, sockets, usersOnline, rooms }, nodes, \
        webhooks: { pending, failed, oldestPendingAt } | null }`",
        body = Object)))]
pub(crate) async fn stats(State(app): State<AppState>) -> Response {
    let nodes = match app.backplane.loads.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => return backplane_failed(e),
    };
    let users_online = match app.backplane.presence.users_online().await {
        Ok(n) => n,
        Err(e) => return backplane_failed(e),
    };
    let rooms = match app.store.count_rooms().await {
        Ok(n) => n,
        Err(e) => return unavailable("storage", &e),
    };
    let webhooks = match webhooks(&app).await {
        Ok(webhooks) => webhooks,
        Err(e) => return unavailable("storage", &e),
    };
    Json(json!({
        "generatedAt": Utc::now(),
        "answeredBy": app.settings.node_id,
        "totals": totals(&nodes, users_online, Some(rooms)),
        "nodes": nodes,
        "webhooks": webhooks,
    }))
    .into_response()
}

#[utoipa::path(get, path = "/api/v1/nodes", tag = "operations",
    responses((status = 200, description = "`{ nodes: [...] }`: every live node", body = Object)))]
pub(crate) async fn nodes(State(app): State<AppState>) -> Response {
    match app.backplane.loads.nodes().await {
        Ok(nodes) => Json(json!({ "nodes": nodes })).into_response(),
        Err(e) => backplane_failed(e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SecurityQuery {
    /// How many of the newest events, 1-200 (default 50).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/security-events", tag = "operations", params(SecurityQuery),
    responses((status = 200, description = "`{ events: [...] }`, newest first", body = Object),
        (status = 400, body = crate::http::api::error::ErrorBody)))]
pub(crate) async fn security_events(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<SecurityQuery>,
) -> Response {
    let limit = query
        .limit
        .unwrap_or(DEFAULT_SECURITY_LIMIT)
        .clamp(1, crate::backplane::SECURITY_EVENTS_KEPT);
    match app.backplane.security.recent(limit).await {
        Ok(events) => Json(json!({ "events": events })).into_response(),
        Err(e) => backplane_failed(e),
    }
}

#[utoipa::path(get, path = "/api/v1/dashboard/stream", tag = "operations",
    responses((status = 200, description = "Server-sent events: one `snapshot` a second",
        content_type = "text/event-stream")))]
pub(crate) async fn dashboard_stream(state: State<AppState>) -> Response {
    stream(state).await.into_response()
}
