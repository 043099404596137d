//! API keys and their rate limits.
//!
//! `CONFAB_API_KEY` allows every call, `CONFAB_API_READ_KEY` only `GET`s. Keys are compared in
//! constant time; each key has its own token bucket on each node.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode, header};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::Settings;
use crate::error::ChatError;
use crate::limits::Rate;

/// One configured key and its bucket.
struct Key {
    secret: Vec<u8>,
    rate: Rate,
}

/// What a request may do, by the key it presents.
#[derive(Clone)]
pub struct ApiKeys {
    full: Option<Arc<Key>>,
    read: Option<Arc<Key>>,
}

impl ApiKeys {
    pub fn new(settings: &Settings) -> Self {
        let limits = &settings.limits;
        let key = |secret: &Option<crate::config::Secret>| {
            secret.as_ref().map(|s| {
                Arc::new(Key {
                    secret: s.expose().as_bytes().to_vec(),
                    rate: Rate::new(limits.api_rate_per_sec, limits.api_rate_burst),
                })
            })
        };
        Self {
            full: key(&settings.api_key),
            read: key(&settings.api_read_key),
        }
    }

    /// Whether the API exists at all (some key is configured).
    pub fn enabled(&self) -> bool {
        self.full.is_some() || self.read.is_some()
    }

    /// Admits a call: `not_found` when the API is off, `unauthorized` without a known key,
    /// `forbidden` for the read key on a call that changes anything, `rate_limited` beyond the
    /// key's rate.
    pub fn admit(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.enabled() {
            return Err(ApiError::not_found());
        }
        let presented = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        let matches = |key: &Option<Arc<Key>>| {
            key.as_ref()
                .filter(|k| bool::from(presented.ct_eq(&k.secret)))
                .cloned()
        };
        let key = if let Some(full) = matches(&self.full) {
            full
        } else if let Some(read) = matches(&self.read) {
            if !matches!(*method, Method::GET | Method::HEAD) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the read-only key allows GET calls only",
                ));
            }
            read
        } else {
            return Err(ApiError::unauthorized());
        };
        if !key.rate.allow() {
            return Err(ChatError::RateLimited.into());
        }
        Ok(())
    }
}

/// The key of `Authorization: Bearer <key>`. Comparing it takes the same time wherever the
/// keys differ (a different length is told at once, which reveals only that).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, presented) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| presented.trim().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const FULL: &str = "0123456789abcdef-full";
    const READ: &str = "0123456789abcdef-read";

    fn keys(full: Option<&str>, read: Option<&str>) -> ApiKeys {
        let mut settings = Settings::for_tests("sqlite::memory:");
        settings.api_key = full.map(crate::config::Secret::new);
        settings.api_read_key = read.map(crate::config::Secret::new);
        settings.limits.api_rate_per_sec = 1;
        settings.limits.api_rate_burst = 2;
        ApiKeys::new(&settings)
    }

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn code(result: Result<(), ApiError>) -> String {
        match result {
            Ok(()) => "ok".into(),
            Err(e) => format!("{e:?}"),
        }
    }

    #[test]
    fn the_key_must_match_exactly_after_bearer() {
        let keys = keys(Some(FULL), None);
        let get = Method::GET;
        assert!(keys.admit(&get, &with(&format!("Bearer {FULL}"))).is_ok());
        assert!(keys.admit(&get, &with(&format!("bearer {FULL}"))).is_ok());
        for wrong in [
            format!("Bearer {}", &FULL[1..]),
            format!("Bearer {FULL}X"),
            format!("Basic {FULL}"),
            FULL.to_owned(),
        ] {
            assert!(code(keys.admit(&get, &with(&wrong))).contains("unauthorized"));
        }
        assert!(code(keys.admit(&get, &HeaderMap::new())).contains("unauthorized"));
    }

    #[test]
    fn the_read_key_reads_only_and_no_key_means_no_api() {
        let keys = keys(Some(FULL), Some(READ));
        let read = with(&format!("Bearer {READ}"));
        assert!(keys.admit(&Method::GET, &read).is_ok());
        assert!(code(keys.admit(&Method::POST, &read)).contains("forbidden"));
        assert!(code(keys.admit(&Method::DELETE, &read)).contains("forbidden"));
        let off = self::keys(None, None);
        assert!(code(off.admit(&Method::GET, &read)).contains("not_found"));
    }

    #[test]
    fn each_key_has_its_own_bucket() {
        let keys = keys(Some(FULL), Some(READ));
        let full = with(&format!("Bearer {FULL}"));
        assert!(keys.admit(&Method::GET, &full).is_ok());
        assert!(keys.admit(&Method::GET, &full).is_ok());
        assert!(code(keys.admit(&Method::GET, &full)).contains("rate_limited"));
        assert!(
            keys.admit(&Method::GET, &with(&format!("Bearer {READ}")))
                .is_ok()
        );
    }
}
