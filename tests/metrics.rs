//! `/metrics` in the Prometheus/OpenMetrics text format: counters move when events happen, and
//! names follow the conventions (prefix, `_total` counters, base units in names).

mod support;

use std::collections::HashMap;

use serde_json::json;
use support::{Backend, TestApp};

/// Samples of one scrape: `name{labels}` → value.
async fn scrape(app: &TestApp) -> (String, HashMap<String, f64>) {
    let response = reqwest::get(format!("{}/metrics", app.base))
        .await
        .expect("scrape");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect();
    (text, samples)
}

fn value(samples: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(key, _)| {
            let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn counters_move_with_events() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.limits.send_burst = 2;
        s.limits.send_rate_per_sec = 1;
    })
    .await;
    let (_, before) = scrape(&app).await;
    let ann = app.connect("metrics-ann").await;
    let room = ann.ok("room:create", json!({ "name": "m" })).await["room"]["id"].clone();
    ann.ok("message:send", json!({ "roomId": room, "text": "one" }))
        .await;
    ann.ok("message:send", json!({ "roomId": room, "text": "two" }))
        .await;
    let limited = ann
        .ack("message:send", json!({ "roomId": room, "text": "three" }))
        .await;
    assert_eq!(limited["error"]["code"], "rate_limited");
    let bad = ann.ack("room:join", json!({ "roomId": "nope" })).await;
    assert_eq!(bad["error"]["code"], "bad_request");
    let (_, after) = scrape(&app).await;

    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(delta("confab_sockets", &[]), 1.0);
    assert_eq!(
        delta("confab_connections_total", &[("outcome", "accepted")]),
        1.0
    );
    assert_eq!(
        delta(
            "confab_events_total",
            &[("event", "message:send"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "confab_events_total",
            &[("event", "message:send"), ("outcome", "rate_limited")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "confab_events_total",
            &[("event", "room:join"), ("outcome", "bad_request")]
        ),
        1.0
    );
    assert_eq!(
        delta("confab_rate_limited_total", &[("event", "message:send")]),
        1.0
    );
    assert_eq!(delta("confab_messages_stored_total", &[]), 2.0);
    assert_eq!(
        delta(
            "confab_event_duration_seconds_count",
            &[("event", "message:send")]
        ),
        3.0
    );
    assert!(
        delta(
            "confab_storage_duration_seconds_count",
            &[("op", "send_batch")]
        ) >= 2.0
    );
    assert!(value(&after, "confab_process_resident_memory_bytes", &[]) > 1_000_000.0);
    app.stop().await;
}

#[tokio::test]
async fn names_follow_prometheus_conventions() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let _client = app.connect("metrics-bob").await;
    let (text, _) = scrape(&app).await;
    let mut families = 0;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        families += 1;
        assert!(name.starts_with("confab_"), "{name}: no namespace");
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{name}: not snake_case"
        );
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: no HELP");
        match kind {
            "counter" => assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name}_total")))
                    || !text.contains(&format!("\n{name}")),
                "{name}: counter samples must end in _total"
            ),
            "histogram" => assert!(
                name.ends_with("_seconds")
                    || name.ends_with("_bytes")
                    || name.ends_with("_messages"),
                "{name}: histograms carry their base unit"
            ),
            "gauge" => assert!(!name.ends_with("_total"), "{name}: gauges are not totals"),
            other => panic!("{name}: unexpected type {other}"),
        }
    }
    assert!(families >= 10, "only {families} metric families:\n{text}");
    assert!(text.trim_end().ends_with("# EOF"));
    app.stop().await;
}
