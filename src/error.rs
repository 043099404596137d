//! The error of a client event, mapped once to the contract's `{ code, message }`.
//!
//! Internal causes are logged where they are mapped and never sent to clients.

use serde_json::{Value, json};

use crate::domain::InvalidValue;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("rate limit exceeded, slow down")]
    RateLimited,
    #[error("temporarily unavailable, retry later")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ChatError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::BadRequest(_) => "bad_request",
            ChatError::Forbidden(_) => "forbidden",
            ChatError::NotFound(_) => "not_found",
            ChatError::Conflict(_) => "conflict",
            ChatError::RateLimited => "rate_limited",
            ChatError::Unavailable(_) => "unavailable",
            ChatError::Internal(_) => "internal",
        }
    }

    /// The failure reply of an ack.
    pub fn to_reply(&self) -> Value {
        json!({ "ok": false, "error": { "code": self.code(), "message": self.to_string() } })
    }

    /// The internal cause, for logs only.
    pub fn cause(&self) -> Option<&anyhow::Error> {
        match self {
            ChatError::Unavailable(e) | ChatError::Internal(e) => Some(e),
            _ => None,
        }
    }
}

impl From<InvalidValue> for ChatError {
    fn from(value: InvalidValue) -> Self {
        ChatError::BadRequest(value.0)
    }
}

impl From<StorageError> for ChatError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::InvalidReply => ChatError::bad_request(error.to_string()),
            StorageError::RoomNotFound => ChatError::NotFound("room not found"),
            StorageError::NotMember => ChatError::Forbidden("not a member of this room"),
            ref e if e.is_unreachable() => {
                ChatError::Unavailable(anyhow::anyhow!("storage unavailable: {e}"))
            }
            other => ChatError::Internal(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_causes_never_reach_the_reply() {
        let error = ChatError::Internal(anyhow::anyhow!("password=hunter2 at db-7"));
        let reply = error.to_reply().to_string();
        assert!(reply.contains("\"internal\""));
        assert!(!reply.contains("hunter2"));
    }

    #[test]
    fn storage_errors_map_to_contract_codes() {
        assert_eq!(
            ChatError::from(StorageError::InvalidReply).code(),
            "bad_request"
        );
        assert_eq!(
            ChatError::from(StorageError::RoomNotFound).code(),
            "not_found"
        );
        let pool = StorageError::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(ChatError::from(pool).code(), "unavailable");
        assert_eq!(
            ChatError::from(StorageError::Overloaded).code(),
            "unavailable"
        );
        assert_eq!(ChatError::from(StorageError::NotMember).code(), "forbidden");
        assert_eq!(
            ChatError::from(StorageError::WriteFailed).code(),
            "internal"
        );
    }
}
