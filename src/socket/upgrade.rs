//! The Socket.IO request, trimmed to what the transports use before socketioxide keeps it.
//!
//! Engine.IO stores the request of a session's first transport for the socket's whole life
//! (`req_parts()`). As hyper parses it, its URI and header values are slices of the connection's
//! read buffer (16 KB once grown), so keeping them keeps that whole buffer: measured, it was half
//! of what an idle websocket cost. The trimmed request owns small copies of the URI and of the
//! headers the transports read, and only the extensions confab reads: the peer address and
//! hyper's upgrade handle.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{CONTENT_TYPE, SEC_WEBSOCKET_KEY};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};

/// Headers Engine.IO reads: the websocket key (to answer the upgrade) and the content type of
/// polling posts (binary or text).
const KEPT: [HeaderName; 2] = [SEC_WEBSOCKET_KEY, CONTENT_TYPE];

/// Trims a request for Socket.IO's path; every other request passes untouched.
pub fn trim(request: Request<Body>) -> Request<Body> {
    if !request.uri().path().starts_with("/socket.io") {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    let mut trimmed = Request::new(body);
    *trimmed.method_mut() = parts.method;
    *trimmed.version_mut() = parts.version;
    *trimmed.uri_mut() = owned_uri(&parts.uri);
    *trimmed.headers_mut() = owned_headers(&parts.headers);
    let extensions = trimmed.extensions_mut();
    if let Some(peer) = parts.extensions.remove::<ConnectInfo<SocketAddr>>() {
        extensions.insert(peer);
    }
    if let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
        extensions.insert(upgrade);
    }
    trimmed
}

/// The path and query in an allocation of their own (the query carries `EIO`, `transport` and
/// `sid`).
fn owned_uri(uri: &Uri) -> Uri {
    let Some(path) = uri.path_and_query() else {
        return uri.clone();
    };
    // A valid path and query stays valid when copied.
    match PathAndQuery::try_from(path.as_str()) {
        Ok(owned) => Uri::from(owned),
        Err(_) => uri.clone(),
    }
}

fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(KEPT.len());
    for name in KEPT {
        if let Some(value) = headers.get(&name)
            && let Ok(copy) = HeaderValue::from_bytes(value.as_bytes())
        {
            owned.insert(name, copy);
        }
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn request(path: &str) -> Request<Body> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .header("cookie", "session=secret")
            .header("user-agent", "test")
            .body(Body::empty())
            .unwrap();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(7u32);
        request
    }

    #[test]
    fn a_socket_io_request_keeps_its_path_query_key_and_peer_only() {
        let trimmed = trim(request("/socket.io/?EIO=4&transport=websocket"));
        assert_eq!(trimmed.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(trimmed.method(), Method::GET);
        assert_eq!(trimmed.headers().len(), 1);
        assert_eq!(
            trimmed.headers()[SEC_WEBSOCKET_KEY],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        let peer = trimmed.extensions().get::<ConnectInfo<SocketAddr>>();
        assert_eq!(peer.map(|p| p.0.port()), Some(4000));
        assert!(trimmed.extensions().get::<u32>().is_none());
    }

    #[test]
    fn other_requests_pass_untouched() {
        let passed = trim(request("/api/stats"));
        assert_eq!(passed.headers().len(), 3);
        assert_eq!(passed.extensions().get::<u32>(), Some(&7));
    }
}
