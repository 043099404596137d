//! Client event payloads: JSON in, typed values out. A parse failure is a `bad_request` reply.
//!
//! Shape errors come before every other check, as the contract asks, because handlers parse
//! first and only then touch storage.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::{ClientId, MessageText, RoomId, RoomKind, RoomName, UserId};
use crate::error::ChatError;

/// Most ids listed in `room:create`.
pub const MAX_CREATE_MEMBERS: usize = 1000;
/// Most ids in one `presence:get`.
pub const MAX_PRESENCE_IDS: usize = 200;
pub const DEFAULT_HISTORY_LIMIT: i64 = 50;
pub const MAX_HISTORY_LIMIT: i64 = 200;

fn shape<T: DeserializeOwned>(value: Value) -> Result<T, ChatError> {
    if !value.is_object() {
        return Err(ChatError::bad_request("payload must be an object"));
    }
    serde_json::from_value(value)
        .map_err(|e| ChatError::bad_request(format!("invalid payload: {e}")))
}

fn non_negative(field: &str, value: Option<i64>) -> Result<Option<i64>, ChatError> {
    match value {
        Some(v) if v < 0 => Err(ChatError::bad_request(format!(
            "{field} must be a non-negative integer"
        ))),
        other => Ok(other),
    }
}

#[derive(Deserialize)]
struct RoomOnlyRaw {
    #[serde(rename = "roomId")]
    room_id: String,
}

/// `{ roomId }`, shared by join, leave, members, typing and room:typing.
pub fn room_only(value: Value) -> Result<RoomId, ChatError> {
    let raw: RoomOnlyRaw = shape(value)?;
    Ok(RoomId::parse(&raw.room_id)?)
}

#[derive(Debug)]
pub struct CreateRoom {
    pub name: RoomName,
    pub kind: RoomKind,
    pub members: Vec<UserId>,
}

#[derive(Deserialize)]
struct CreateRoomRaw {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    members: Option<Vec<String>>,
}

pub fn create_room(value: Value, creator: &UserId) -> Result<CreateRoom, ChatError> {
    let raw: CreateRoomRaw = shape(value)?;
    let name = RoomName::parse(&raw.name)?;
    let kind = match raw.kind.as_deref() {
        None | Some("private") => RoomKind::Private,
        Some("public") => RoomKind::Public,
        Some(_) => {
            return Err(ChatError::bad_request(
                "kind must be \"public\" or \"private\"",
            ));
        }
    };
    let listed = raw.members.unwrap_or_default();
    if listed.len() > MAX_CREATE_MEMBERS {
        return Err(ChatError::bad_request(format!(
            "members: at most {MAX_CREATE_MEMBERS} ids"
        )));
    }
    let mut members: Vec<UserId> = Vec::with_capacity(listed.len());
    for raw_id in &listed {
        let id = UserId::parse(raw_id)?;
        if &id != creator && !members.contains(&id) {
            members.push(id);
        }
    }
    Ok(CreateRoom {
        name,
        kind,
        members,
    })
}

#[derive(Deserialize)]
struct DirectRaw {
    #[serde(rename = "userId")]
    user_id: String,
}

pub fn direct(value: Value, me: &UserId) -> Result<UserId, ChatError> {
    let raw: DirectRaw = shape(value)?;
    let other = UserId::parse(&raw.user_id)?;
    if &other == me {
        return Err(ChatError::bad_request("a direct room needs another user"));
    }
    Ok(other)
}

#[derive(Debug)]
pub struct Send {
    pub room: RoomId,
    pub text: MessageText,
    pub client_id: Option<ClientId>,
    pub reply_to: Option<Uuid>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendRaw {
    room_id: String,
    text: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    reply_to: Option<String>,
}

pub fn send(value: Value, max_chars: usize) -> Result<Send, ChatError> {
    let raw: SendRaw = shape(value)?;
    let room = RoomId::parse(&raw.room_id)?;
    let text = MessageText::parse(&raw.text, max_chars)?;
    let client_id = raw.client_id.as_deref().map(ClientId::parse).transpose()?;
    let reply_to = raw
        .reply_to
        .as_deref()
        .map(|r| {
            Uuid::parse_str(r).map_err(|_| ChatError::bad_request("replyTo must be a message id"))
        })
        .transpose()?;
    Ok(Send {
        room,
        text,
        client_id,
        reply_to,
    })
}

#[derive(Debug, PartialEq)]
pub struct History {
    pub room: RoomId,
    pub before_seq: Option<i64>,
    pub after_seq: Option<i64>,
    pub limit: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryRaw {
    room_id: String,
    #[serde(default)]
    before_seq: Option<i64>,
    #[serde(default)]
    after_seq: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

pub fn history(value: Value) -> Result<History, ChatError> {
    let raw: HistoryRaw = shape(value)?;
    let room = RoomId::parse(&raw.room_id)?;
    let limit = raw.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ChatError::bad_request(format!(
            "limit must be 1-{MAX_HISTORY_LIMIT}"
        )));
    }
    Ok(History {
        room,
        before_seq: non_negative("beforeSeq", raw.before_seq)?,
        after_seq: non_negative("afterSeq", raw.after_seq)?,
        limit,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadRaw {
    room_id: String,
    seq: i64,
}

pub fn read(value: Value) -> Result<(RoomId, i64), ChatError> {
    let raw: ReadRaw = shape(value)?;
    let room = RoomId::parse(&raw.room_id)?;
    let seq = non_negative("seq", Some(raw.seq))?.unwrap_or_default();
    Ok((room, seq))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresenceRaw {
    user_ids: Vec<String>,
}

pub fn presence(value: Value) -> Result<Vec<UserId>, ChatError> {
    let raw: PresenceRaw = shape(value)?;
    if raw.user_ids.is_empty() || raw.user_ids.len() > MAX_PRESENCE_IDS {
        return Err(ChatError::bad_request(format!(
            "userIds must list 1-{MAX_PRESENCE_IDS} ids"
        )));
    }
    raw.user_ids
        .iter()
        .map(|id| UserId::parse(id).map_err(ChatError::from))
        .collect()
}

/// `rpc:call { method, data? }`.
#[derive(Debug, PartialEq)]
pub struct RpcCall {
    pub method: String,
    pub data: Value,
}

#[derive(Deserialize)]
struct RpcCallRaw {
    method: String,
    #[serde(default)]
    data: Value,
}

pub fn rpc_call(value: Value) -> Result<RpcCall, ChatError> {
    let raw: RpcCallRaw = shape(value)?;
    let valid = |c: char| c.is_ascii_alphanumeric() || "_.:-".contains(c);
    if raw.method.is_empty() || raw.method.len() > 64 || !raw.method.chars().all(valid) {
        return Err(ChatError::bad_request(
            "method must be 1-64 characters of A-Z a-z 0-9 _ . : -",
        ));
    }
    Ok(RpcCall {
        method: raw.method,
        data: raw.data,
    })
}

/// `room:list` takes `{}`; a missing payload is the same.
pub fn empty(value: Value) -> Result<(), ChatError> {
    match value {
        Value::Null | Value::Object(_) => Ok(()),
        _ => Err(ChatError::bad_request("payload must be an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROOM: &str = "0195e7d4-8c3f-7000-8000-000000000001";

    fn me() -> UserId {
        UserId::parse("me").unwrap()
    }

    fn is_bad_request<T: std::fmt::Debug>(result: Result<T, ChatError>) -> bool {
        matches!(result, Err(ChatError::BadRequest(_)))
    }

    #[test]
    fn non_objects_are_bad_requests_everywhere() {
        for junk in [
            json!(null),
            json!(5),
            json!("x"),
            json!([1, 2]),
            json!(true),
        ] {
            assert!(is_bad_request(room_only(junk.clone())));
            assert!(is_bad_request(create_room(junk.clone(), &me())));
            assert!(is_bad_request(send(junk.clone(), 10)));
            assert!(is_bad_request(history(junk.clone())));
            assert!(is_bad_request(read(junk.clone())));
            assert!(is_bad_request(presence(junk.clone())));
            assert!(is_bad_request(direct(junk, &me())));
        }
    }

    #[test]
    fn room_ids_must_be_uuid_strings() {
        assert!(room_only(json!({"roomId": ROOM})).is_ok());
        assert!(is_bad_request(room_only(json!({"roomId": "lobby"}))));
        assert!(is_bad_request(room_only(json!({"roomId": 12}))));
        assert!(is_bad_request(room_only(json!({}))));
    }

    #[test]
    fn create_room_defaults_to_private_and_drops_creator_and_repeats() {
        let parsed = create_room(
            json!({"name": " team ", "members": ["me", "bo", "bo"]}),
            &me(),
        )
        .unwrap();
        assert_eq!(parsed.kind, RoomKind::Private);
        assert_eq!(parsed.name.as_str(), "team");
        assert_eq!(parsed.members, vec![UserId::parse("bo").unwrap()]);
        let public = create_room(json!({"name": "x", "kind": "public"}), &me()).unwrap();
        assert_eq!(public.kind, RoomKind::Public);
    }

    #[test]
    fn create_room_refuses_bad_names_kinds_and_member_lists() {
        assert!(is_bad_request(create_room(json!({"name": "  "}), &me())));
        assert!(is_bad_request(create_room(
            json!({"name": "x".repeat(101)}),
            &me()
        )));
        assert!(is_bad_request(create_room(
            json!({"name": "x", "kind": "direct"}),
            &me()
        )));
        assert!(is_bad_request(create_room(
            json!({"name": "x", "members": ["bad id"]}),
            &me()
        )));
        assert!(is_bad_request(create_room(
            json!({"name": "x", "members": "bo"}),
            &me()
        )));
        let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
        assert!(is_bad_request(create_room(
            json!({"name": "x", "members": many}),
            &me()
        )));
    }

    #[test]
    fn direct_needs_another_valid_user() {
        assert_eq!(
            direct(json!({"userId": "bo"}), &me()).unwrap().as_str(),
            "bo"
        );
        assert!(is_bad_request(direct(json!({"userId": "me"}), &me())));
        assert!(is_bad_request(direct(json!({"userId": ""}), &me())));
    }

    #[test]
    fn send_trims_text_and_checks_optional_fields() {
        let ok = send(
            json!({"roomId": ROOM, "text": "  hi  ", "clientId": null, "replyTo": null}),
            10,
        )
        .unwrap();
        assert_eq!(ok.text.as_str(), "hi");
        assert!(ok.client_id.is_none() && ok.reply_to.is_none());
        assert!(is_bad_request(send(
            json!({"roomId": ROOM, "text": "   "}),
            10
        )));
        assert!(is_bad_request(send(
            json!({"roomId": ROOM, "text": "x".repeat(11)}),
            10
        )));
        assert!(is_bad_request(send(json!({"roomId": ROOM, "text": 5}), 10)));
        assert!(is_bad_request(send(json!({"roomId": ROOM}), 10)));
        assert!(is_bad_request(send(
            json!({"roomId": ROOM, "text": "a", "clientId": ""}),
            10
        )));
        assert!(is_bad_request(send(
            json!({"roomId": ROOM, "text": "a", "clientId": "c".repeat(65)}),
            10
        )));
        assert!(is_bad_request(send(
            json!({"roomId": ROOM, "text": "a", "replyTo": "nope"}),
            10
        )));
        assert!(is_bad_request(send(
            json!({"roomId": ROOM, "text": "a", "replyTo": 3}),
            10
        )));
    }

    #[test]
    fn history_checks_limits_and_cursors() {
        let default = history(json!({"roomId": ROOM})).unwrap();
        assert_eq!(default.limit, 50);
        assert_eq!(
            history(json!({"roomId": ROOM, "afterSeq": 0, "limit": 200}))
                .unwrap()
                .after_seq,
            Some(0)
        );
        for bad in [
            json!({"roomId": ROOM, "limit": 0}),
            json!({"roomId": ROOM, "limit": 201}),
            json!({"roomId": ROOM, "limit": 2.5}),
            json!({"roomId": ROOM, "beforeSeq": -1}),
            json!({"roomId": ROOM, "afterSeq": "3"}),
        ] {
            assert!(is_bad_request(history(bad)));
        }
    }

    #[test]
    fn read_needs_a_non_negative_seq() {
        assert_eq!(read(json!({"roomId": ROOM, "seq": 4})).unwrap().1, 4);
        assert!(is_bad_request(read(json!({"roomId": ROOM, "seq": -4}))));
        assert!(is_bad_request(read(json!({"roomId": ROOM}))));
    }

    #[test]
    fn presence_takes_one_to_two_hundred_valid_ids() {
        assert_eq!(presence(json!({"userIds": ["a", "b"]})).unwrap().len(), 2);
        assert!(is_bad_request(presence(json!({"userIds": []}))));
        let many: Vec<String> = (0..201).map(|i| format!("u{i}")).collect();
        assert!(is_bad_request(presence(json!({"userIds": many}))));
        assert!(is_bad_request(presence(
            json!({"userIds": ["ok", "not ok"]})
        )));
    }

    #[test]
    fn rpc_call_checks_the_method() {
        let call = rpc_call(json!({"method": "orders.get:v1-x_y"})).unwrap();
        assert_eq!(call.data, Value::Null);
        assert!(is_bad_request(rpc_call(json!({"method": ""}))));
        assert!(is_bad_request(rpc_call(json!({"method": "a b"}))));
        assert!(is_bad_request(rpc_call(json!({"method": "x".repeat(65)}))));
        assert!(is_bad_request(rpc_call(json!({"data": 1}))));
        assert!(is_bad_request(rpc_call(json!("orders.get"))));
    }

    #[test]
    fn room_list_accepts_nothing_or_an_object() {
        assert!(empty(Value::Null).is_ok());
        assert!(empty(json!({})).is_ok());
        assert!(is_bad_request(empty(json!(3))));
    }
}

#[cfg(test)]
mod props;
