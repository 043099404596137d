//! HTTP routes on the same port as Socket.IO: health, metrics, dev tokens, the demo page, the
//! dashboard, and the HTTP API under `/api/v1/` (`api/`).

pub mod api;
pub mod cors;
mod dev_token;
mod health;
pub(crate) mod ops;

use axum::Router;
use axum::http::HeaderName;
use axum::response::{Html, IntoResponse};
use axum::routing::{any, get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::backplane::SocketIo;
use crate::config::Settings;
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The HTTP routes; the Socket.IO layer is added on top by the application. `io` is the handle
/// the API's emits go through.
pub fn router(state: AppState, io: SocketIo) -> Router {
    let site = Router::new()
        .route("/", get(demo_page))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/dev/token", post(dev_token::issue))
        .merge(ops::page())
        // The API bounds its own bodies (by CONFAB_MAX_PAYLOAD_BYTES, answering 400).
        .layer(RequestBodyLimitLayer::new(16 * 1024))
        .with_state(state.clone());
    site.merge(api::router(state, io))
        .route("/api/{*rest}", any(api::not_found))
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
        // `route`, `status` and `outcome` are recorded by the API's gate (http/api/).
        tracing::info_span!(
            "http",
            otel.name = format!("{} {}", request.method(), path),
            otel.kind = "server",
            method = %request.method(),
            path,
            request_id = id,
            route = tracing::field::Empty,
            status = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    };
    crate::telemetry::continue_http_trace(&span, request.headers());
    span
}

async fn demo_page() -> impl IntoResponse {
    Html(include_str!("../../static/index.html"))
}
