//! Security events for the operations dashboard: refused connections, authentication failures,
//! rate-limit hits and forbidden attempts, each with the time, node, user (when known) and peer
//! address, never a token or message text.
//!
//! Recording never holds up the client: the event is handed to a task, and the Redis backplane
//! keeps at most a few per second per node (a flood is counted, not written).

use std::net::IpAddr;
use std::sync::Arc;

use super::Session;
use crate::auth::AuthError;
use crate::backplane::{SecurityEvent, SecurityKind, SecurityLog};
use crate::error::ChatError;
use crate::limits::Refusal;
use crate::state::AppState;

/// A connection refused before its token was looked at.
pub(super) fn refused(app: &AppState, peer: Option<IpAddr>, refusal: Refusal) {
    let detail = match refusal {
        Refusal::Capacity => "node at capacity",
        Refusal::PerAddress => "too many connections from this address",
    };
    let kind = SecurityKind::ConnectionRefused;
    record(
        &app.backplane.security,
        &app.settings.node_id,
        kind,
        None,
        peer,
        detail,
    );
}

/// A connection whose token was missing or refused.
pub(super) fn auth_failure(app: &AppState, peer: Option<IpAddr>, error: &AuthError) {
    use jsonwebtoken::errors::ErrorKind;
    // Fixed words only: the verifier's own message could quote what the client sent.
    let detail = match error {
        AuthError::Missing => "no token",
        AuthError::Invalid(e) => match e.kind() {
            ErrorKind::ExpiredSignature => "expired token",
            ErrorKind::InvalidSignature => "bad signature",
            _ => "invalid token",
        },
        AuthError::BadClaim(_) => "claim out of range",
    };
    let kind = SecurityKind::AuthFailure;
    record(
        &app.backplane.security,
        &app.settings.node_id,
        kind,
        None,
        peer,
        detail,
    );
}

/// Called by the event frame once the outcome of `event` is known: records rate-limit hits and
/// forbidden attempts. The user and peer come from the socket's session, so a socket carries
/// nothing extra for this.
pub fn after_event<T>(
    app: &AppState,
    session: &Session,
    event: &'static str,
    outcome: &Result<T, ChatError>,
) {
    let kind = match outcome {
        Err(ChatError::RateLimited) => SecurityKind::RateLimited,
        Err(ChatError::Forbidden(_)) => SecurityKind::Forbidden,
        _ => return,
    };
    let user = Some(session.identity.user_id.as_str());
    let log = &app.backplane.security;
    record(log, &app.settings.node_id, kind, user, session.peer, event);
}

fn record(
    log: &Arc<dyn SecurityLog>,
    node: &str,
    kind: SecurityKind,
    user: Option<&str>,
    peer: Option<IpAddr>,
    detail: &str,
) {
    let event = SecurityEvent {
        at: chrono::Utc::now(),
        node: node.to_owned(),
        kind,
        user: user.map(str::to_owned),
        peer: peer.map(|ip| ip.to_string()),
        detail: Some(detail.to_owned()),
    };
    let log = log.clone();
    tokio::spawn(async move {
        if let Err(e) = log.record(event).await {
            tracing::debug!(error = %e, "security event not recorded");
        }
    });
}
