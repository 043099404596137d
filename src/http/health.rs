//! `/livez`, `/readyz` and `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

pub async fn livez() -> impl IntoResponse {
    Json(json!({ "live": true }))
}

/// Ready when storage answers, the backplane works and the node is not draining.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let storage = matches!(
        tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await,
        Ok(Ok(()))
    );
    let backplane = app.backplane.membership.is_ready() && app.driver.is_healthy();
    let draining = app.lifecycle.is_draining();
    let ready = storage && backplane && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "checks": {
            "storage": if storage { "ok" } else { "unreachable" },
            "backplane": if backplane { "ok" } else { "down" },
            "draining": draining,
        },
    });
    (status, Json(body))
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    if let crate::backplane::BackplaneDriver::Redis(driver) = &app.driver {
        // The driver counts its failed publishes; the counter catches up at scrape time.
        let failures = &app.metrics.backplane_publish_failures;
        failures.inc_by(driver.dropped().saturating_sub(failures.get()));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
