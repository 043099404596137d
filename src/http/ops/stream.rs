//! The live stream of snapshots and the dashboard page.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::Serialize;

use super::{ROOM_COUNT_EVERY, SNAPSHOT_EVERY, SNAPSHOT_SECURITY_EVENTS, Totals, error, totals};
use crate::backplane::{NodeStats, SecurityEvent};
use crate::state::AppState;

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
    /// The webhook outbox (`{ pending, failed, oldestPendingAt }`), null when webhooks are off.
    webhooks: serde_json::Value,
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
        let nodes = match backplane.loads.nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::debug!(error = %e, "dashboard: nodes not read");
                problems.push("backplane unavailable: nodes not read".to_owned());
                self.previous.values().map(|(s, _)| s.clone()).collect()
            }
        };
        match backplane.presence.users_online().await {
            Ok(n) => self.users_online = n,
            Err(_) => problems.push("backplane unavailable: users online not read".to_owned()),
        }
        let security = match backplane.security.recent(SNAPSHOT_SECURITY_EVENTS).await {
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

        let webhooks = match super::webhooks(&self.app).await {
            Ok(webhooks) => webhooks,
            Err(_) => {
                problems.push("storage unavailable: webhook backlog not read".to_owned());
                serde_json::Value::Null
            }
        };

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
            webhooks,
            problems,
        }
    }
}

pub(super) async fn stream(State(app): State<AppState>) -> Response {
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

pub(super) async fn dashboard_page() -> Response {
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
    (
        headers,
        Html(include_str!("../../../static/dashboard.html")),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::NodeStats;

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
