//! What each node measures of itself and publishes once a second.

use tokio_util::sync::CancellationToken;

use super::SNAPSHOT_EVERY;
use crate::backplane::{NodeLoad, SocketIo};
use crate::state::AppState;

/// Background task of every node: publishes its load once a second until `stop` (before the
/// node leaves the cluster, so that nothing republishes it afterwards).
pub async fn publish_loads(app: AppState, io: SocketIo, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => publish_load(&app, &io).await,
        }
    }
}

/// Measures this node and publishes it on the backplane.
async fn publish_load(app: &AppState, io: &SocketIo) {
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
    if let Err(e) = app.backplane.loads.publish(load).await {
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
}
