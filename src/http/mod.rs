//! HTTP routes on the same port as Socket.IO: health, metrics, dev tokens and the demo page.

pub mod cors;
mod dev_token;
mod health;
pub(crate) mod ops;

use axum::Router;
use axum::http::HeaderName;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The HTTP routes; the Socket.IO layer is added on top by the application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(demo_page))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/dev/token", post(dev_token::issue))
        .merge(ops::routes(state.clone()))
        .layer(RequestBodyLimitLayer::new(16 * 1024))
        .with_state(state)
}

/// Layers shared by every request, Socket.IO included.
pub fn common_layers(router: Router, settings: &Settings) -> Router {
    router
        .layer(cors::layer(&settings.cors))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(http_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// One span per HTTP request, continuing the caller's trace. Socket.IO's own transport requests
/// are only debug spans: the events they carry have spans of their own.
fn http_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The path only: query strings may carry Socket.IO session ids.
    let path = request.uri().path();
    let span = if path.starts_with("/socket.io") {
        tracing::debug_span!("http", method = %request.method(), path, request_id = id)
    } else {
        tracing::info_span!(
            "http",
            otel.name = format!("{} {}", request.method(), path),
            otel.kind = "server",
            method = %request.method(),
            path,
            request_id = id,
        )
    };
    crate::telemetry::continue_http_trace(&span, request.headers());
    span
}

async fn demo_page() -> impl IntoResponse {
    Html(include_str!("../../static/index.html"))
}
