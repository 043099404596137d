//! Client tokens: HS256 JWTs carrying `sub`, optional `name` and a required `exp`.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::domain::{DisplayName, UserId};

/// Who a socket belongs to, established once at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    pub name: DisplayName,
}

/// Why a token was refused; clients only ever see `unauthorized`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token rejected: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("claim out of range: {0}")]
    BadClaim(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    exp: u64,
}

/// Signing and verification keys derived from the configured secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }

    pub fn verify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims;
        let user_id = UserId::parse(&claims.sub).map_err(|e| AuthError::BadClaim(e.0))?;
        let name = match claims.name {
            None => DisplayName::from_user_id(&user_id),
            Some(raw) => DisplayName::parse(&raw).map_err(|e| AuthError::BadClaim(e.0))?,
        };
        Ok(Identity { user_id, name })
    }

    /// Issues a token valid for `ttl_secs`, for dev tokens and tests.
    pub fn issue(&self, identity: &Identity, ttl_secs: u64) -> Result<String, AuthError> {
        let exp = chrono::Utc::now().timestamp().max(0) as u64 + ttl_secs;
        let claims = Claims {
            sub: identity.user_id.as_str().to_owned(),
            name: Some(identity.name.as_str().to_owned()),
            exp,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "test-secret-of-enough-length";

    fn keys() -> TokenKeys {
        TokenKeys::new(&Secret::new(SECRET))
    }

    fn sign(alg: Algorithm, claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn in_an_hour() -> i64 {
        chrono::Utc::now().timestamp() + 3600
    }

    #[test]
    fn a_valid_token_yields_the_identity() {
        let token = sign(
            Algorithm::HS256,
            json!({"sub": "ann", "name": " Ann ", "exp": in_an_hour()}),
            SECRET,
        );
        let id = keys().verify(Some(&token)).unwrap();
        assert_eq!(id.user_id.as_str(), "ann");
        assert_eq!(id.name.as_str(), "Ann");
    }

    #[test]
    fn a_missing_or_null_name_defaults_to_the_user_id() {
        for claims in [
            json!({"sub": "bob", "exp": in_an_hour()}),
            json!({"sub": "bob", "name": null, "exp": in_an_hour()}),
        ] {
            let token = sign(Algorithm::HS256, claims, SECRET);
            assert_eq!(keys().verify(Some(&token)).unwrap().name.as_str(), "bob");
        }
    }

    #[test]
    fn bad_tokens_are_refused() {
        let now = chrono::Utc::now().timestamp();
        let refused = [
            sign(
                Algorithm::HS256,
                json!({"sub": "ann", "exp": now - 120}),
                SECRET,
            ),
            sign(
                Algorithm::HS256,
                json!({"sub": "ann", "exp": in_an_hour()}),
                "another-secret-entirely",
            ),
            sign(
                Algorithm::HS512,
                json!({"sub": "ann", "exp": in_an_hour()}),
                SECRET,
            ),
            sign(Algorithm::HS256, json!({"sub": "ann"}), SECRET),
            sign(
                Algorithm::HS256,
                json!({"sub": "a b", "exp": in_an_hour()}),
                SECRET,
            ),
            sign(
                Algorithm::HS256,
                json!({"sub": "x".repeat(65), "exp": in_an_hour()}),
                SECRET,
            ),
            sign(
                Algorithm::HS256,
                json!({"sub": "ann", "name": "", "exp": in_an_hour()}),
                SECRET,
            ),
            sign(
                Algorithm::HS256,
                json!({"sub": "ann", "name": 7, "exp": in_an_hour()}),
                SECRET,
            ),
            sign(
                Algorithm::HS256,
                json!({"sub": "ann", "name": "n".repeat(65), "exp": in_an_hour()}),
                SECRET,
            ),
            "not-a-jwt".to_owned(),
        ];
        for token in refused {
            assert!(keys().verify(Some(&token)).is_err(), "accepted {token}");
        }
        assert!(keys().verify(None).is_err());
        assert!(keys().verify(Some("")).is_err());
    }

    #[test]
    fn expiry_has_thirty_seconds_of_leeway() {
        let now = chrono::Utc::now().timestamp();
        let token = sign(
            Algorithm::HS256,
            json!({"sub": "ann", "exp": now - 10}),
            SECRET,
        );
        assert!(keys().verify(Some(&token)).is_ok());
    }

    #[test]
    fn issued_tokens_verify() {
        let id = Identity {
            user_id: UserId::parse("carol").unwrap(),
            name: DisplayName::parse("Carol").unwrap(),
        };
        let token = keys().issue(&id, 60).unwrap();
        assert_eq!(keys().verify(Some(&token)).unwrap(), id);
    }
}
