//! The Standard Webhooks signature on every request confab makes (webhooks and `rpc:call`):
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 of HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The headers that sign one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub id: String,
    pub timestamp: i64,
    /// `v1,<base64>`.
    pub signature: String,
}

impl Signed {
    /// Adds the signature headers, and `traceparent` when the current span is traced.
    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request
            .header("webhook-id", &self.id)
            .header("webhook-timestamp", self.timestamp.to_string())
            .header("webhook-signature", &self.signature);
        match crate::telemetry::current_traceparent() {
            Some(traceparent) => request.header("traceparent", traceparent),
            None => request,
        }
    }
}

/// Signs `body` as the request `id` sent at `timestamp`.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> Signed {
    let signature = format!("v1,{}", STANDARD.encode(mac(secret, id, timestamp, body)));
    Signed {
        id: id.to_owned(),
        timestamp,
        signature,
    }
}

/// Checks a `webhook-signature` header (which may list several space-separated signatures, as
/// the scheme allows during a secret rotation) in constant time; what a receiver does, and what
/// the tests' receiver does.
pub fn verify(secret: &Secret, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let expected = mac(secret, id, timestamp, body);
    header.split(' ').any(|candidate| {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            return false;
        };
        let Ok(given) = STANDARD.decode(encoded) else {
            return false;
        };
        subtle::ConstantTimeEq::ct_eq(given.as_slice(), expected.as_slice()).into()
    })
}

fn mac(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_implementation() {
        // Computed with Python's hmac module over the secret's bytes, as a receiver would.
        let secret = Secret::new("secret-for-tests-0123456789");
        let body = br#"{"test": 2432232314}"#;
        let signed = sign(&secret, "msg_1", 1_614_265_330, body);
        assert_eq!(
            signed.signature,
            "v1,00rZp1Yg/nm0eGlGudKZy5pg8FBh+0JFCJaJ5nsL2FQ="
        );
        assert!(verify(
            &secret,
            "msg_1",
            1_614_265_330,
            body,
            &signed.signature
        ));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let secret = Secret::new("secret-for-tests-0123456789");
        let header = sign(&secret, "a", 10, b"body").signature;
        assert!(!verify(&secret, "b", 10, b"body", &header));
        assert!(!verify(&secret, "a", 11, b"body", &header));
        assert!(!verify(&secret, "a", 10, b"bodY", &header));
        let other = Secret::new("another-secret-0123456789");
        assert!(!verify(&other, "a", 10, b"body", &header));
        assert!(!verify(&secret, "a", 10, b"body", "v1,not base64!"));
        assert!(verify(
            &secret,
            "a",
            10,
            b"body",
            &format!("v1,AAAA {header}")
        ));
    }
}
