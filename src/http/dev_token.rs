//! `POST /api/dev/token`: tokens for anyone, for development only (off once a secret is set).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Identity;
use crate::domain::{DisplayName, UserId};
use crate::state::AppState;

/// Dev tokens live a day: long enough for a demo, short enough to not matter.
const DEV_TOKEN_TTL_SECS: u64 = 24 * 3600;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    user_id: String,
    #[serde(default)]
    name: Option<String>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": { "code": code, "message": message.into() } });
    (status, Json(body)).into_response()
}

pub async fn issue(
    State(app): State<AppState>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Response {
    if !app.settings.dev_tokens {
        return error(StatusCode::NOT_FOUND, "not_found", "dev tokens are off");
    }
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                rejection.body_text(),
            );
        }
    };
    let user_id = match UserId::parse(&request.user_id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.0),
    };
    let name = match request.name.as_deref().map(DisplayName::parse).transpose() {
        Ok(name) => name.unwrap_or_else(|| DisplayName::from_user_id(&user_id)),
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.0),
    };
    match app
        .tokens
        .issue(&Identity { user_id, name }, DEV_TOKEN_TTL_SECS)
    {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dev token not issued");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}
