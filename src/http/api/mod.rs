//! The HTTP API, v1 (`/api/v1/`): what a company's backend uses to drive confab (the contract is
//! `api.md`; `docs/api.md` explains it).
//!
//! Every call passes, in order: the gate ([`gate`]: the route's span fields and metrics, the
//! key and its rate limit), the idempotency layer (`idempotency.rs`) for changing calls, then a
//! handler that parses its input into domain values before anything else. Effects go through
//! the Socket.IO adapter, so they reach every node. The OpenAPI document is generated from the
//! handlers' annotations and types by `utoipa`, and the router is built from the same
//! annotations, so neither can drift from the other.

mod auth;
pub mod error;
pub mod idempotency;
mod messages;
mod notify;
mod rooms;
mod users;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::backplane::SocketIo;
use crate::domain::{RoomId, UserId};
use crate::socket::membership::Actor;
use crate::state::AppState;
pub use auth::ApiKeys;
use error::{ApiError, ErrorCode};
pub use idempotency::purge_expired;

/// The path of the OpenAPI document, served without a key.
const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// What the API's handlers share: the node's state and the Socket.IO handle their emits go
/// through.
#[derive(Clone)]
pub struct ApiState {
    pub app: AppState,
    pub io: SocketIo,
    keys: ApiKeys,
    /// The OpenAPI document, rendered once the router is built.
    openapi: Arc<OnceLock<String>>,
}

impl FromRef<ApiState> for AppState {
    fn from_ref(api: &ApiState) -> AppState {
        api.app.clone()
    }
}

impl ApiState {
    /// The API acts without a socket: nobody is left out of the events.
    fn actor(&self) -> Actor<'_> {
        Actor {
            io: &self.io,
            socket: None,
        }
    }
}

/// A `roomId` of a path, parsed first.
fn parse_room(raw: &str) -> Result<RoomId, ApiError> {
    Ok(RoomId::parse(raw)?)
}

/// A `userId` of a path or body, parsed first.
fn parse_user(raw: &str) -> Result<UserId, ApiError> {
    Ok(UserId::parse(raw)?)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "confab HTTP API",
        version = "1",
        description = "Push notifications, post messages, manage rooms and members, read state. \
                       See docs/api.md."
    ),
    modifiers(&BearerKey),
    security(("bearer" = [])),
    tags(
        (name = "notifications"), (name = "rooms"), (name = "messages"), (name = "users"),
        (name = "operations"),
    )
)]
struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/api/v1/` routes with their OpenAPI document.
fn routes() -> OpenApiRouter<ApiState> {
    use crate::http::ops;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(notify::to_user))
        .routes(routes!(notify::to_users))
        .routes(routes!(notify::to_room))
        .routes(routes!(rooms::create))
        .routes(routes!(rooms::get))
        .routes(routes!(rooms::members))
        .routes(routes!(rooms::add_member, rooms::remove_member))
        .routes(routes!(messages::post, messages::history))
        .routes(routes!(users::rooms))
        .routes(routes!(users::presence))
        .routes(routes!(users::disconnect))
        .routes(routes!(ops::stats))
        .routes(routes!(ops::nodes))
        .routes(routes!(ops::security_events))
        .routes(routes!(ops::dashboard_stream))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document as JSON, for tests and tools.
pub fn openapi_document() -> String {
    routes().into_openapi().to_pretty_json().unwrap_or_default()
}

/// The API router, with its state; merged into the node's router.
pub fn router(app: AppState, io: SocketIo) -> Router {
    let state = ApiState {
        keys: ApiKeys::new(&app.settings),
        app,
        io,
        openapi: Arc::default(),
    };
    let (router, doc) = routes().split_for_parts();
    let _ = state.openapi.set(doc.to_pretty_json().unwrap_or_default());
    router
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::middleware,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), gate))
        .method_not_allowed_fallback(not_found)
        .with_state(state)
}

/// Answers paths under `/api/` that name no route, and methods a route does not have.
pub async fn not_found() -> Response {
    ApiError::not_found().into_response()
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
async fn openapi_json(State(api): State<ApiState>) -> Response {
    let body = api.openapi.get().cloned().unwrap_or_default();
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Every call: the route and its outcome on the request's span, metrics per route and status,
/// then the key (`404` with no key configured, `401`, `403`) and the key's rate limit (`429`).
async fn gate(
    State(api): State<ApiState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = matched
        .as_ref()
        .map(MatchedPath::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let method = request.method().clone();
    let span = tracing::Span::current();
    span.record("route", route.as_str());
    crate::telemetry::rename(&span, format!("{method} {route}"));
    let admitted = if route == OPENAPI_PATH && api.keys.enabled() {
        Ok(())
    } else {
        api.keys.admit(&method, request.headers())
    };
    let response = match admitted {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            // Not found while the API is off is no attempt worth a warning.
            if api.keys.enabled() {
                tracing::warn!(route, method = %method, refused = ?refused, "API call refused");
            }
            refused.into_response()
        }
    };
    let status = response.status().as_u16();
    let outcome = response
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0)
        .unwrap_or(if status < 400 { "ok" } else { "error" });
    span.record("status", status);
    span.record("outcome", outcome);
    api.app.metrics.api_call(
        &route,
        method.as_str(),
        status,
        started.elapsed().as_secs_f64(),
    );
    response
}
