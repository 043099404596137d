//! The API's error answer `{ error: { code, message } }`, mapped once from [`ChatError`], and
//! the extractors that turn every rejection (path, query, body) into a `bad_request`.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use super::ApiState;
use crate::error::ChatError;

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `rate_limited`, `internal`, `unavailable`.
    pub code: String,
    pub message: String,
}

/// The error code of an answer, left in its extensions for the span and the logs.
#[derive(Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// A failed API call.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "not found")
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
}

impl From<ChatError> for ApiError {
    fn from(error: ChatError) -> Self {
        if let Some(cause) = error.cause() {
            tracing::error!(code = error.code(), cause = %format!("{cause:#}"), "API call failed");
        }
        let status = match &error {
            ChatError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ChatError::Forbidden(_) => StatusCode::FORBIDDEN,
            ChatError::NotFound(_) => StatusCode::NOT_FOUND,
            ChatError::Conflict(_) => StatusCode::CONFLICT,
            ChatError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ChatError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ChatError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<crate::domain::InvalidValue> for ApiError {
    fn from(value: crate::domain::InvalidValue) -> Self {
        Self::bad_request(value.0)
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(error: crate::storage::StorageError) -> Self {
        ChatError::from(error).into()
    }
}

impl From<crate::backplane::BackplaneError> for ApiError {
    fn from(error: crate::backplane::BackplaneError) -> Self {
        ChatError::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self.code {
            "unauthorized" => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"confab\""),
                );
            }
            // The limit refills at least one call a second.
            "rate_limited" => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// A path's parameters; a rejection is `bad_request`. Values stay strings here and are parsed
/// into domain values by the handler, first.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|e: PathRejection| ApiError::bad_request(e.body_text()))
    }
}

/// A query string; a rejection (a non-integer cursor, say) is `bad_request`.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

/// Reads a body of at most `limit` bytes; a larger one is `bad_request`.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::bad_request(format!("body larger than {limit} bytes")))
}

/// A JSON body of at most `CONFAB_MAX_PAYLOAD_BYTES`, deserialized into its raw request type;
/// a body that is too large, not JSON, or of another shape is `bad_request` (axum's own
/// rejections would be 413, 415 or 422).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    ApiState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let api = ApiState::from_ref(state);
        let limit = api.app.settings.limits.max_payload_bytes as usize;
        let bytes = read_body(request.into_body(), limit).await?;
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
