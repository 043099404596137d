//! The read-only operations API and the live dashboard.
//!
//! Every `/api/*` route here needs `Authorization: Bearer <CONFAB_API_KEY>` (compared in constant
//! time; 401 otherwise) and answers 404 when no key is configured. The answers come from the
//! backplane (Redis in a cluster), so every node gives the same cluster-wide answer:
//!
//! - `GET /api/stats`: every live node with its load, and the totals.
//! - `GET /api/nodes`: every live node.
//! - `GET /api/users/{id}/presence`: whether the user is online, with how many sockets, where.
//! - `GET /api/security-events?limit=N`: the newest security events.
//! - `GET /api/dashboard/stream`: server-sent events, one `snapshot` a second: nodes with rates
//!   computed from their counters, totals, backplane lag and the newest security events.
//!
//! `GET /dashboard` serves the page (`static/dashboard.html`), which asks for the key and reads
//! the stream with `fetch`, so the key never goes in a URL.
//!
//! Each node publishes its own load once a second ([`publish_loads`]).

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::backplane::{BackplaneError, NodeStats};
use crate::domain::UserId;
use crate::error::ChatError;
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

/// The operations routes; merged into the HTTP router.
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route("/api/stats", get(stats))
        .route("/api/nodes", get(nodes))
        .route("/api/users/{id}/presence", get(presence))
        .route("/api/security-events", get(security_events))
        .route("/api/dashboard/stream", get(stream))
        .route_layer(middleware::from_fn_with_state(state, require_key));
    Router::new()
        .route("/dashboard", get(dashboard_page))
        .merge(api)
        .route("/api/{*rest}", get(unknown).post(unknown))
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

async fn unknown() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "not found")
}

/// The bearer check of every operations route: 404 when the API is off, 401 without the key.
async fn require_key(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = &app.settings.api_key else {
        return error(StatusCode::NOT_FOUND, "not_found", "not found");
    };
    if !presents_key(request.headers(), key.expose()) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>)",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"confab operations\""),
        );
        return response;
    }
    next.run(request).await
}

/// Whether the request carries `Authorization: Bearer <key>`. The comparison takes the same
/// time wherever the keys differ (a different length is told at once, which reveals only that).
fn presents_key(headers: &HeaderMap, key: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, presented)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(presented.trim().as_bytes().ct_eq(key.as_bytes()))
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

async fn stats(State(app): State<AppState>) -> Response {
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
    Json(json!({
        "generatedAt": Utc::now(),
        "answeredBy": app.settings.node_id,
        "totals": totals(&nodes, users_online, Some(rooms)),
        "nodes": nodes,
    }))
    .into_response()
}

async fn nodes(State(app): State<AppState>) -> Response {
    match app.backplane.loads.nodes().await {
        Ok(nodes) => Json(json!({ "nodes": nodes })).into_response(),
        Err(e) => backplane_failed(e),
    }
}

async fn presence(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let user = match UserId::parse(&id) {
        Ok(user) => user,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.0),
    };
    match app.backplane.presence.user_presence(&user).await {
        Ok(presence) => {
            let mut body = json!({ "userId": user });
            if let (Value::Object(body), Ok(Value::Object(fields))) =
                (&mut body, serde_json::to_value(presence))
            {
                body.extend(fields);
            }
            Json(body).into_response()
        }
        Err(e) => backplane_failed(e),
    }
}

#[derive(Deserialize)]
struct SecurityQuery {
    limit: Option<usize>,
}

async fn security_events(
    State(app): State<AppState>,
    Query(query): Query<SecurityQuery>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_must_match_exactly_after_bearer() {
        let key = "0123456789abcdef-key";
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(presents_key(&with("Bearer 0123456789abcdef-key"), key));
        assert!(presents_key(&with("bearer 0123456789abcdef-key"), key));
        assert!(!presents_key(&with("Bearer 0123456789abcdef-ke"), key));
        assert!(!presents_key(&with("Bearer 0123456789abcdef-keyX"), key));
        assert!(!presents_key(&with("Basic 0123456789abcdef-key"), key));
        assert!(!presents_key(&with("0123456789abcdef-key"), key));
        assert!(!presents_key(&HeaderMap::new(), key));
    }
}
