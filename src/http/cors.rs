//! Which browser origins may call the HTTP API and Socket.IO's polling transport.
//!
//! Allowed: the node's own origin (the request's `Host`, so a proxy that keeps `Host` keeps it
//! working), the origins listed in `CONFAB_CORS_ORIGINS`, and — only when that list is unset and
//! dev tokens are on — loopback origins, for pages served by a local dev server. An allowed origin
//! is echoed with credentials, because load balancers' affinity cookies must ride along with
//! long-polling requests; any other origin gets no CORS headers at all, so browsers refuse it.
//! (WebSocket upgrades are not subject to CORS; Socket.IO authenticates them with the token.)

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Uri, header};
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};

/// The parsed value of `CONFAB_CORS_ORIGINS`: lowercase `scheme://host[:port]` origins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl FromStr for AllowedOrigins {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut origins = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            origins.push(parse_origin(item)?);
        }
        Ok(Self(origins))
    }
}

/// One origin as browsers send it: a scheme and an authority, nothing else.
fn parse_origin(item: &str) -> Result<String, String> {
    if item == "*" {
        return Err("list origins, not `*`: credentials cannot go to every origin".to_owned());
    }
    let trimmed = item.strip_suffix('/').unwrap_or(item);
    let uri: Uri = trimmed
        .parse()
        .map_err(|_| format!("`{item}` is not an origin like https://chat.example.com"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    if !scheme_ok || uri.host().is_none() || !bare || trimmed.contains('@') {
        return Err(format!(
            "`{item}` is not an origin like https://chat.example.com (http or https, no path)"
        ));
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// What the CORS layer allows, decided once from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// `CONFAB_CORS_ORIGINS`, lowercased.
    listed: Vec<String>,
    /// Whether any loopback origin is allowed (development only).
    loopback: bool,
}

impl CorsPolicy {
    /// `listed` is `CONFAB_CORS_ORIGINS`; loopback origins are allowed only in development (no
    /// list and dev tokens on).
    pub fn new(listed: Option<AllowedOrigins>, dev_tokens: bool) -> Self {
        let loopback = listed.is_none() && dev_tokens;
        Self {
            listed: listed.unwrap_or_default().0,
            loopback,
        }
    }

    /// Whether a request from `origin` to a node reached as `host` may read the answer.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.to_ascii_lowercase();
        let Ok(uri) = origin.parse::<Uri>() else {
            return false;
        };
        let Some(authority) = uri.authority().map(|a| a.as_str()) else {
            return false;
        };
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return false;
        }
        let own = host.is_some_and(|h| h.eq_ignore_ascii_case(authority));
        own || self.listed.contains(&origin) || (self.loopback && is_loopback(&uri))
    }
}

fn is_loopback(uri: &Uri) -> bool {
    let Some(host) = uri.host() else {
        return false;
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn allowed(policy: &CorsPolicy, origin: &HeaderValue, parts: &Parts) -> bool {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    origin.to_str().is_ok_and(|o| policy.allows(o, host))
}

/// The CORS layer for every route, Socket.IO included.
pub fn layer(policy: &CorsPolicy) -> CorsLayer {
    let policy = Arc::new(policy.clone());
    let for_credentials = policy.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, parts| {
            allowed(&policy, origin, parts)
        }))
        .allow_credentials(AllowCredentials::predicate(move |origin, parts| {
            allowed(&for_credentials, origin, parts)
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(raw: &str) -> Option<AllowedOrigins> {
        Some(raw.parse().unwrap())
    }

    #[test]
    fn origins_are_schemes_and_authorities_only() {
        let parsed: AllowedOrigins = " https://Chat.Example.com, http://a:8080/ ,"
            .parse()
            .unwrap();
        assert_eq!(
            parsed.0,
            vec!["https://chat.example.com", "http://a:8080"],
            "trimmed, lowercased, trailing slash dropped"
        );
        for bad in [
            "*",
            "chat.example.com",
            "ftp://x",
            "https://x/path",
            "https://u@x",
        ] {
            assert!(bad.parse::<AllowedOrigins>().is_err(), "{bad} accepted");
        }
        assert_eq!(
            "".parse::<AllowedOrigins>().unwrap(),
            AllowedOrigins::default()
        );
    }

    #[test]
    fn the_own_origin_is_always_allowed_and_listed_ones_exactly() {
        let policy = CorsPolicy::new(list("https://app.example.com"), false);
        assert!(policy.allows("https://chat.example.com", Some("chat.example.com")));
        assert!(policy.allows("http://127.0.0.1:3000", Some("127.0.0.1:3000")));
        assert!(policy.allows("https://app.example.com", Some("chat.example.com")));
        assert!(!policy.allows("https://app.example.com.evil.net", Some("chat.example.com")));
        assert!(!policy.allows("https://evil.net", Some("chat.example.com")));
        assert!(!policy.allows("null", Some("chat.example.com")));
        assert!(!policy.allows("http://localhost:5173", Some("chat.example.com")));
    }

    #[test]
    fn loopback_origins_only_in_development_without_a_list() {
        let dev = CorsPolicy::new(None, true);
        for origin in [
            "http://localhost:5173",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
        ] {
            assert!(dev.allows(origin, Some("127.0.0.1:3000")), "{origin}");
        }
        assert!(!dev.allows("http://192.168.1.5:3000", Some("127.0.0.1:3000")));
        assert!(!dev.allows("http://localhost.evil.net", Some("127.0.0.1:3000")));
        let production = CorsPolicy::new(None, false);
        assert!(!production.allows("http://localhost:5173", Some("chat.example.com")));
        let listed = CorsPolicy::new(list("https://app.example.com"), true);
        assert!(!listed.allows("http://localhost:5173", Some("chat.example.com")));
    }
}
