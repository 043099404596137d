//! The one error of every backplane part, and its mapping to the contract's codes.

use crate::error::ChatError;

// Clone: one failed batch of presence writes is the error of every write in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackplaneError {
    /// Redis did not answer, refused, or timed out: the caller may retry later.
    #[error("redis unreachable: {0}")]
    Unreachable(#[source] redis::RedisError),
    /// The node has not joined the cluster yet (Redis unreachable since it started), so writing
    /// its presence now would be undone by the join's clean-up.
    #[error("not joined the cluster yet")]
    NotJoined,
    /// The configuration cannot work (a Redis URL that does not parse). Never quotes the URL,
    /// which may hold a password.
    #[error("{0}")]
    Config(&'static str),
    /// Redis answered something this version does not understand.
    #[error("unexpected backplane data: {0}")]
    Unexpected(String),
}

impl BackplaneError {
    /// True when the backplane is away (as opposed to a bug): worth a retry, not an alarm.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::NotJoined)
    }
}

impl From<redis::RedisError> for BackplaneError {
    fn from(e: redis::RedisError) -> Self {
        match e.kind() {
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
                Self::Unexpected(e.to_string())
            }
            _ => Self::Unreachable(e),
        }
    }
}

/// A client event that needed the backplane: `unavailable` while it is away, `internal` for what
/// a retry will not fix. The cause is logged where the reply is sent, never shown.
impl From<BackplaneError> for ChatError {
    fn from(e: BackplaneError) -> Self {
        if e.is_outage() {
            ChatError::Unavailable(e.into())
        } else {
            ChatError::Internal(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_unavailable_and_the_rest_internal() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            ChatError::from(BackplaneError::from(refused)).code(),
            "unavailable"
        );
        assert_eq!(
            ChatError::from(BackplaneError::NotJoined).code(),
            "unavailable"
        );
        let odd = BackplaneError::Unexpected("a reply of the wrong shape".to_owned());
        assert_eq!(ChatError::from(odd).code(), "internal");
    }
}
