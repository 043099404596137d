//! Domain values that are parsed once at the edge: once a `UserId` or a `MessageText` exists, it is valid.
//!
//! Every length here counts Unicode scalar values after trimming Unicode white space, as the
//! wire contract says.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a value could not be parsed; the text goes to the client as a `bad_request` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(msg: impl Into<String>) -> InvalidValue {
    InvalidValue(msg.into())
}

/// Trims Unicode white space and checks the length in scalar values.
fn trimmed_within(field: &str, raw: &str, min: usize, max: usize) -> Result<String, InvalidValue> {
    let trimmed = raw.trim();
    let len = trimmed.chars().count();
    if len < min || len > max {
        return Err(invalid(format!("{field} must be {min}-{max} characters")));
    }
    Ok(trimmed.to_owned())
}

/// A user id: 1–64 characters of `[A-Za-z0-9_.:@-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let valid_chars = raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '-'));
        if raw.is_empty() || raw.len() > 64 || !valid_chars {
            return Err(invalid(
                "user id must be 1-64 characters of A-Z a-z 0-9 _ . : @ -",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Socket.IO room that holds every socket of this user, on every node.
    pub fn socket_room(&self) -> String {
        format!("user:{}", self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 1–64 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        trimmed_within("name", raw, 1, 64).map(Self)
    }

    /// The name of a user who never said otherwise is their id.
    pub fn from_user_id(id: &UserId) -> Self {
        Self(id.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A chat room id (a UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomId(pub Uuid);

impl RoomId {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| invalid("roomId must be a UUID"))
    }

    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The Socket.IO room that holds every socket of every member.
    pub fn socket_room(&self) -> String {
        format!("room:{}", self.0)
    }
}

impl Default for RoomId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A room name: 1–100 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RoomName(String);

impl RoomName {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        trimmed_within("name", raw, 1, 100).map(Self)
    }

    /// Direct rooms carry no meaningful name; clients show the other member.
    pub fn direct() -> Self {
        Self("direct".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    Public,
    Private,
    Direct,
}

impl RoomKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Public => "public",
            RoomKind::Private => "private",
            RoomKind::Direct => "direct",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "public" => Some(RoomKind::Public),
            "private" => Some(RoomKind::Private),
            "direct" => Some(RoomKind::Direct),
            _ => None,
        }
    }
}

/// Message text: trimmed, 1..=max characters (the max is configurable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, InvalidValue> {
        trimmed_within("text", raw, 1, max_chars).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A client-chosen idempotency key: 1–64 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        trimmed_within("clientId", raw, 1, 64).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `type` of a notification sent by the HTTP API: 1–64 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct NotificationType(String);

impl NotificationType {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        trimmed_within("type", raw, 1, 64).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_accept_the_contract_alphabet_only() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("a.b_c:d@e-f").is_ok());
        assert!(UserId::parse(&"x".repeat(64)).is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"x".repeat(65)).is_err());
        assert!(UserId::parse("has space").is_err());
        assert!(UserId::parse("émile").is_err());
        assert!(UserId::parse("a/b").is_err());
    }

    #[test]
    fn names_are_trimmed_and_counted_in_scalar_values() {
        assert_eq!(DisplayName::parse("  Ann \n").unwrap().as_str(), "Ann");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"é".repeat(64)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(65)).is_err());
        assert!(RoomName::parse(&"ü".repeat(100)).is_ok());
        assert!(RoomName::parse(&"ü".repeat(101)).is_err());
        assert!(RoomName::parse("\u{3000}lobby\u{3000}").unwrap().as_str() == "lobby");
    }

    #[test]
    fn message_text_respects_the_configured_limit() {
        assert_eq!(MessageText::parse("  hi  ", 5).unwrap().as_str(), "hi");
        assert!(MessageText::parse("", 5).is_err());
        assert!(MessageText::parse(" \t\n ", 5).is_err());
        assert!(MessageText::parse("🙂🙂🙂🙂🙂", 5).is_ok());
        assert!(MessageText::parse("🙂🙂🙂🙂🙂🙂", 5).is_err());
    }

    #[test]
    fn room_ids_must_be_uuids() {
        assert!(RoomId::parse("0195e7d4-8c3f-7000-8000-000000000000").is_ok());
        assert!(RoomId::parse("lobby").is_err());
        assert!(RoomId::parse("").is_err());
    }

    #[test]
    fn notification_types_are_1_to_64_characters() {
        assert!(NotificationType::parse(" order.shipped ").is_ok());
        assert!(NotificationType::parse("  ").is_err());
        assert!(NotificationType::parse(&"t".repeat(65)).is_err());
    }

    #[test]
    fn client_ids_are_1_to_64_characters() {
        assert!(ClientId::parse("c1").is_ok());
        assert!(ClientId::parse("").is_err());
        assert!(ClientId::parse(&"c".repeat(65)).is_err());
    }
}

#[cfg(test)]
mod props;
