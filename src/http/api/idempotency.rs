//! `Idempotency-Key` on `POST`, `PUT` and `DELETE`: the first call's status and body are kept
//! in storage for 24 hours and answered again to every repeat, on any node, without a second
//! effect (`storage/idempotency.rs` holds the rows).
//!
//! The first call claims the key before it runs; a concurrent repeat finds the claim and waits
//! (polling, bounded by [`WAIT_FOR_FIRST`]) for the first call's answer. The call runs in a task
//! of its own, so a caller that hangs up does not leave the key claimed with the call half done.
//! Answers with a 5xx status are not kept: the key is released, and a retry runs the call again.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::Instrument;

use super::ApiState;
use super::error::{ApiError, read_body};
use crate::storage::{Claimed, IdempotencyClaim, IdempotencyRecord};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on an answer that repeats a stored one.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest a repeat waits for the first call to finish before it is told `conflict`.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Every node deletes expired keys this often.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The key of a request, when it has one: 1–128 printable ASCII characters.
fn key_of(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 128 || !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1-128 printable ASCII characters",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

pub async fn middleware(State(api): State<ApiState>, request: Request, next: Next) -> Response {
    if !matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::DELETE
    ) {
        return next.run(request).await;
    }
    let key = match key_of(&request) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(request).await,
        Err(e) => return e.into_response(),
    };
    let (parts, body) = request.into_parts();
    let limit = api.app.settings.limits.max_payload_bytes as usize;
    let body = match read_body(body, limit).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let claim = IdempotencyClaim {
        key,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        body_hash: hex(&Sha256::digest(&body)),
        now_ms: chrono::Utc::now().timestamp_millis(),
    };
    let deadline = Instant::now() + WAIT_FOR_FIRST;
    loop {
        let record = match api.app.store.claim_idempotency(&claim).await {
            Ok(Claimed::Won) => {
                let request = Request::from_parts(parts, Body::from(body));
                return run_first(api, claim.key, request, next).await;
            }
            Ok(Claimed::Taken(record)) => record,
            Err(e) => return ApiError::from(e).into_response(),
        };
        if !same_call(&record, &claim) {
            return ApiError::conflict(
                "this Idempotency-Key was used for another method, path or body",
            )
            .into_response();
        }
        if let Some((status, body)) = record.outcome {
            return replay(status, body);
        }
        if Instant::now() >= deadline {
            return ApiError::conflict("a call with this Idempotency-Key is still in progress")
                .into_response();
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn same_call(record: &IdempotencyRecord, claim: &IdempotencyClaim) -> bool {
    record.method == claim.method
        && record.path == claim.path
        && record.body_hash == claim.body_hash
}

/// Runs the call that holds the key and keeps its answer (or releases the key on a 5xx).
async fn run_first(api: ApiState, key: String, request: Request, next: Next) -> Response {
    let span = tracing::Span::current();
    let task = tokio::spawn(async move {
        let response = next.run(request).instrument(span).await;
        let (parts, body) = response.into_parts();
        // Answers are small JSON objects; the bound only guards against a runaway body.
        let bytes = match axum::body::to_bytes(body, 16 * 1024 * 1024).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "API answer could not be read");
                let _ = api.app.store.record_idempotency(&key, None).await;
                return ApiError::from(crate::error::ChatError::Internal(e.into())).into_response();
            }
        };
        let kept = (!parts.status.is_server_error()).then(|| {
            (
                parts.status.as_u16(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        });
        let kept = kept.as_ref().map(|(status, body)| (*status, body.as_str()));
        if let Err(e) = api.app.store.record_idempotency(&key, kept).await {
            // The repeat will wait for the lease to run out, then run the call again.
            tracing::error!(error = %e, "idempotency outcome not recorded");
        }
        Response::from_parts(parts, Body::from(bytes))
    });
    match task.await {
        Ok(response) => response,
        Err(e) => ApiError::from(crate::error::ChatError::Internal(e.into())).into_response(),
    }
}

fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Background task: deletes expired keys every [`PURGE_EVERY`] until `stop` fires.
pub async fn purge_expired(api: crate::state::AppState, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let kept_for = crate::storage::idempotency::KEPT_FOR.as_millis() as i64;
        let before = chrono::Utc::now().timestamp_millis() - kept_for;
        match api.store.purge_idempotency(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(keys = n, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "expired idempotency keys not deleted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(key: &[u8]) -> Request {
        let mut request = Request::new(Body::empty());
        request
            .headers_mut()
            .insert(IDEMPOTENCY_KEY, HeaderValue::from_bytes(key).unwrap());
        request
    }

    #[test]
    fn keys_are_1_to_128_printable_ascii_characters() {
        assert_eq!(
            key_of(&request_with(b"a-1 b")).unwrap().as_deref(),
            Some("a-1 b")
        );
        assert!(key_of(&request_with(&[b'k'; 128])).unwrap().is_some());
        assert!(key_of(&request_with(&[b'k'; 129])).is_err());
        assert!(key_of(&request_with(b"")).is_err());
        assert!(key_of(&request_with(b"tab\there")).is_err());
        assert!(key_of(&request_with("é".as_bytes())).is_err());
        assert_eq!(key_of(&Request::new(Body::empty())).unwrap(), None);
    }
}
