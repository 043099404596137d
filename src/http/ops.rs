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
//! Each node publishes its own load once a second from its upkeep ([`publish_node_stats`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::backplane::{NodeLoad, NodeStats, SecurityEvent, SocketIo};
use crate::domain::UserId;
use crate::state::AppState;

/// How often the stream sends a snapshot (and nodes publish their load).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// How long the stream reuses the count of chat rooms (a full count on Postgres).
const ROOM_COUNT_EVERY: Duration = Duration::from_secs(5);
/// Security events in each snapshot.
const SNAPSHOT_SECURITY_EVENTS: usize = 30;
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

fn error(status: StatusCode, code: &str, message: &str) -> Response {
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
struct Totals {
    nodes: usize,
    connections: u64,
    sockets: u64,
    users_online: u64,
    /// Chat rooms in storage; `None` when storage did not answer (in the stream only).
    rooms: Option<u64>,
}

fn totals(nodes: &[NodeStats], users_online: u64, rooms: Option<u64>) -> Totals {
    Totals {
        nodes: nodes.len(),
        connections: nodes.iter().map(|n| n.connections).sum(),
        sockets: nodes.iter().map(|n| n.sockets).sum(),
        users_online,
        rooms,
    }
}

async fn stats(State(app): State<AppState>) -> Response {
    let nodes = match app.backplane.cluster_nodes().await {
        Ok(nodes) => nodes,
        Err(e) => return unavailable("backplane", &e),
    };
    let users_online = match app.backplane.users_online().await {
        Ok(n) => n,
        Err(e) => return unavailable("backplane", &e),
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
    match app.backplane.cluster_nodes().await {
        Ok(nodes) => Json(json!({ "nodes": nodes })).into_response(),
        Err(e) => unavailable("backplane", &e),
    }
}

async fn presence(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let user = match UserId::parse(&id) {
        Ok(user) => user,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.0),
    };
    match app.backplane.user_presence(&user).await {
        Ok(presence) => {
            let mut body = json!({ "userId": user });
            if let (Value::Object(body), Ok(Value::Object(fields))) =
                (&mut body, serde_json::to_value(presence))
            {
                body.extend(fields);
            }
            Json(body).into_response()
        }
        Err(e) => unavailable("backplane", &e),
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
    match app.backplane.recent_security_events(limit).await {
        Ok(events) => Json(json!({ "events": events })).into_response(),
        Err(e) => unavailable("backplane", &e),
    }
}

// ---- the live stream -----------------------------------------------------------------------

/// Per-second rates of a node, from the difference of its counters between two publications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rates {
    messages_per_sec: f64,
    events_per_sec: f64,
    rate_limited_per_sec: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeView {
    #[serde(flatten)]
    stats: NodeStats,
    /// `None` until two publications of the node were seen.
    rates: Option<Rates>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    at: DateTime<Utc>,
    answered_by: String,
    nodes: Vec<NodeView>,
    totals: Totals,
    /// Sum of the nodes' rates (of those that have one).
    rates: Rates,
    /// The worst node's median delivery lag and Redis round trip, in milliseconds.
    backplane_lag_ms: Option<f64>,
    redis_rtt_ms: Option<f64>,
    security: Vec<SecurityEvent>,
    /// What could not be read this time (the rest of the snapshot is still right).
    problems: Vec<String>,
}

/// What one stream remembers between snapshots.
struct Watcher {
    app: AppState,
    tick: tokio::time::Interval,
    /// Each node's previous publication and the rates computed from it.
    previous: HashMap<String, (NodeStats, Option<Rates>)>,
    /// Users online, kept when the backplane does not answer for a moment.
    users_online: u64,
    rooms: Option<u64>,
    rooms_counted: Option<tokio::time::Instant>,
}

fn rates_between(before: &NodeStats, now: &NodeStats) -> Option<Rates> {
    let seconds = (now.updated_at - before.updated_at).num_milliseconds() as f64 / 1000.0;
    let per_sec = |a: u64, b: u64| Some(b.checked_sub(a)? as f64 / seconds);
    if seconds <= 0.0 || now.started_at != before.started_at {
        return None;
    }
    Some(Rates {
        messages_per_sec: per_sec(before.messages_stored, now.messages_stored)?,
        events_per_sec: per_sec(before.events, now.events)?,
        rate_limited_per_sec: per_sec(before.rate_limited, now.rate_limited)?,
    })
}

impl Watcher {
    async fn snapshot(&mut self) -> Snapshot {
        let backplane = &self.app.backplane;
        let mut problems = Vec::new();
        let nodes = match backplane.cluster_nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::debug!(error = %e, "dashboard: nodes not read");
                problems.push("backplane unavailable: nodes not read".to_owned());
                self.previous.values().map(|(s, _)| s.clone()).collect()
            }
        };
        match backplane.users_online().await {
            Ok(n) => self.users_online = n,
            Err(_) => problems.push("backplane unavailable: users online not read".to_owned()),
        }
        let security = match backplane
            .recent_security_events(SNAPSHOT_SECURITY_EVENTS)
            .await
        {
            Ok(events) => events,
            Err(_) => {
                problems.push("backplane unavailable: security events not read".to_owned());
                Vec::new()
            }
        };
        let due = self
            .rooms_counted
            .is_none_or(|at| at.elapsed() >= ROOM_COUNT_EVERY);
        if due {
            match self.app.store.count_rooms().await {
                Ok(n) => {
                    self.rooms = Some(n);
                    self.rooms_counted = Some(tokio::time::Instant::now());
                }
                Err(_) => problems.push("storage unavailable: rooms not counted".to_owned()),
            }
        }

        let mut views = Vec::with_capacity(nodes.len());
        let mut previous = HashMap::with_capacity(nodes.len());
        for stats in nodes {
            let rates = match self.previous.get(&stats.id) {
                // The same publication as last time: keep its rates.
                Some((before, rates)) if before.updated_at == stats.updated_at => *rates,
                Some((before, _)) => rates_between(before, &stats),
                None => None,
            };
            previous.insert(stats.id.clone(), (stats.clone(), rates));
            views.push(NodeView { stats, rates });
        }
        self.previous = previous;

        let stats: Vec<NodeStats> = views.iter().map(|v| v.stats.clone()).collect();
        let rates = views
            .iter()
            .filter_map(|v| v.rates)
            .fold(Rates::default(), |sum, r| Rates {
                messages_per_sec: sum.messages_per_sec + r.messages_per_sec,
                events_per_sec: sum.events_per_sec + r.events_per_sec,
                rate_limited_per_sec: sum.rate_limited_per_sec + r.rate_limited_per_sec,
            });
        let worst = |f: fn(&NodeStats) -> Option<f64>| stats.iter().filter_map(f).reduce(f64::max);
        Snapshot {
            at: Utc::now(),
            answered_by: self.app.settings.node_id.clone(),
            totals: totals(&stats, self.users_online, self.rooms),
            backplane_lag_ms: worst(|n| n.backplane_lag_ms),
            redis_rtt_ms: worst(|n| n.redis_rtt_ms),
            nodes: views,
            rates,
            security,
            problems,
        }
    }
}

async fn stream(State(app): State<AppState>) -> Response {
    if app.lifecycle.is_draining() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node is shutting down",
        );
    }
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watcher = Watcher {
        app,
        tick,
        previous: HashMap::new(),
        users_online: 0,
        rooms: None,
        rooms_counted: None,
    };
    let mut response = Sse::new(snapshots(watcher))
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies (nginx) must pass each snapshot on at once.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// One `snapshot` event a second until the client goes away or the node starts draining (an
/// endless response would otherwise hold up the graceful shutdown).
fn snapshots(watcher: Watcher) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(watcher, |mut watcher| async move {
        watcher.tick.tick().await;
        if watcher.app.lifecycle.is_draining() {
            return None;
        }
        let snapshot = watcher.snapshot().await;
        let event = Event::default()
            .event("snapshot")
            .json_data(&snapshot)
            .unwrap_or_else(|_| Event::default().comment("snapshot not encoded"));
        Some((Ok(event), watcher))
    })
}

// ---- the page ------------------------------------------------------------------------------

async fn dashboard_page() -> Response {
    let headers = [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // The page talks to its own origin only and loads nothing from anywhere else.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    ];
    (headers, Html(include_str!("../../static/dashboard.html"))).into_response()
}

// ---- what each node publishes --------------------------------------------------------------

/// Measures this node and publishes it on the backplane; called by the upkeep once a second.
pub async fn publish_node_stats(app: &AppState, io: &SocketIo) {
    let rooms = match io.local().rooms().await {
        Ok(rooms) => rooms.len() as u64,
        Err(e) => {
            tracing::debug!(error = %e, "socket rooms not counted");
            0
        }
    };
    let counters = Counters::read(&app.metrics.render());
    let load = NodeLoad {
        connections: app.connections.in_use() as u64,
        sockets: io.local().sockets().len() as u64,
        rooms,
        messages_stored: counters.messages_stored,
        events: counters.events,
        rate_limited: counters.rate_limited,
        lag_buckets: counters.lag_buckets,
    };
    if let Err(e) = app.backplane.publish_node_stats(load).await {
        tracing::debug!(error = %e, "node stats not published");
    }
}

/// The counters the dashboard charts, read from the node's metrics as Prometheus sees them
/// (so label sets of any kind are summed, and a metric that is missing reads as zero).
#[derive(Debug, Default, PartialEq)]
struct Counters {
    messages_stored: u64,
    events: u64,
    rate_limited: u64,
    lag_buckets: Vec<(f64, u64)>,
}

impl Counters {
    fn read(openmetrics: &str) -> Self {
        let mut counters = Counters::default();
        for line in openmetrics.lines() {
            if line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let (name, rest) = line.split_at(name_end);
            let (labels, rest) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}').unwrap_or(("", rest)),
                None => ("", rest),
            };
            let Some(value) = rest.split_whitespace().next() else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let count = value.max(0.0) as u64;
            match name {
                "confab_messages_stored_total" => counters.messages_stored += count,
                "confab_events_total" => counters.events += count,
                "confab_rate_limited_total" => counters.rate_limited += count,
                "confab_backplane_delivery_lag_seconds_bucket" => {
                    if let Some(bound) = label(labels, "le").and_then(parse_bound) {
                        counters.lag_buckets.push((bound, count));
                    }
                }
                _ => {}
            }
        }
        counters.lag_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        counters
    }
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

fn parse_bound(raw: &str) -> Option<f64> {
    match raw {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
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

    #[test]
    fn counters_sum_every_label_set_of_the_metrics_they_chart() {
        let metrics = crate::metrics::Metrics::new("n1");
        metrics.event("message:send", "ok", 0.001);
        metrics.event("message:send", "ok", 0.001);
        metrics.event("room:join", "forbidden", 0.001);
        metrics.messages_stored.inc();
        let counters = Counters::read(&metrics.render());
        assert_eq!(counters.events, 3);
        assert_eq!(counters.messages_stored, 1);
        assert_eq!(counters.rate_limited, 0);

        let text = "# TYPE confab_backplane_delivery_lag_seconds histogram\n\
            confab_backplane_delivery_lag_seconds_bucket{le=\"0.002\",node=\"n\"} 10\n\
            confab_backplane_delivery_lag_seconds_bucket{node=\"n\",le=\"+Inf\"} 12\n\
            confab_backplane_delivery_lag_seconds_bucket{le=\"0.001\",node=\"n\"} 4\n\
            confab_rate_limited_total{node=\"n\",event=\"message:send\"} 7 # {} 1\n\
            confab_rate_limited_total{node=\"n\",event=\"typing:start\"} 2\n";
        let counters = Counters::read(text);
        assert_eq!(counters.rate_limited, 9);
        assert_eq!(
            counters.lag_buckets,
            vec![(0.001, 4), (0.002, 10), (f64::INFINITY, 12)]
        );
    }

    fn node(at_ms: i64, messages: u64) -> NodeStats {
        NodeStats {
            id: "n".to_owned(),
            connections: 0,
            sockets: 0,
            rooms: 0,
            started_at: DateTime::from_timestamp_millis(0).unwrap(),
            updated_at: DateTime::from_timestamp_millis(at_ms).unwrap(),
            messages_stored: messages,
            events: messages * 2,
            rate_limited: 0,
            backplane_lag_ms: None,
            redis_rtt_ms: None,
        }
    }

    #[test]
    fn rates_come_from_counter_differences_over_the_nodes_own_clock() {
        let rates = rates_between(&node(1_000, 10), &node(3_000, 30)).unwrap();
        assert_eq!(rates.messages_per_sec, 10.0);
        assert_eq!(rates.events_per_sec, 20.0);
        // A restart (counters went down) or no time passing gives no rate.
        assert_eq!(rates_between(&node(1_000, 10), &node(2_000, 5)), None);
        assert_eq!(rates_between(&node(1_000, 10), &node(1_000, 10)), None);
    }
}
