//! Property tests of the payload parsers: whatever JSON a client sends, the answer is a parsed
//! value or `bad_request`, never a panic or another error, and well-formed payloads parse to
//! exactly what they say.

use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

use super::*;

/// Any JSON value, with the numbers and strings that break parsers: huge, negative, fractional,
/// NUL, lone-surrogate-free Unicode, keys the parsers look for.
fn any_json() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1e300)),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        any::<String>().prop_map(Value::String),
        Just(json!("0195e7d4-8c3f-7000-8000-000000000001")),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        let key = prop_oneof![
            Just("roomId".to_owned()),
            Just("text".to_owned()),
            Just("userId".to_owned()),
            Just("userIds".to_owned()),
            Just("members".to_owned()),
            Just("limit".to_owned()),
            Just("seq".to_owned()),
            Just("beforeSeq".to_owned()),
            Just("afterSeq".to_owned()),
            Just("clientId".to_owned()),
            Just("name".to_owned()),
            any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn only_bad_request<T>(result: Result<T, ChatError>) -> Result<(), TestCaseError> {
    match result {
        Ok(_) | Err(ChatError::BadRequest(_)) => Ok(()),
        Err(other) => Err(TestCaseError::fail(format!("not a bad_request: {other:?}"))),
    }
}

fn room() -> impl Strategy<Value = String> {
    any::<[u8; 16]>().prop_map(|b| uuid::Uuid::from_bytes(b).to_string())
}

fn user_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:@-]{1,64}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_json_is_parsed_or_a_bad_request(value in any_json()) {
        let me = UserId::parse("me").unwrap();
        only_bad_request(room_only(value.clone()))?;
        only_bad_request(create_room(value.clone(), &me))?;
        only_bad_request(direct(value.clone(), &me))?;
        only_bad_request(send(value.clone(), 1000))?;
        only_bad_request(history(value.clone()))?;
        only_bad_request(read(value.clone()))?;
        only_bad_request(presence(value.clone()))?;
        only_bad_request(empty(value))?;
    }

    #[test]
    fn well_formed_sends_parse_to_what_they_say(
        room_id in room(),
        text in "\\PC{1,60}",
        client_id in prop::option::of("[a-z0-9-]{1,64}"),
        reply_to in prop::option::of(room()),
    ) {
        let payload = json!({ "roomId": room_id, "text": text, "clientId": client_id, "replyTo": reply_to });
        let trimmed = text.trim();
        match send(payload, 60) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.room.to_string(), room_id);
                prop_assert_eq!(parsed.text.as_str(), trimmed);
                prop_assert_eq!(parsed.client_id.map(|c| c.as_str().to_owned()), client_id);
                prop_assert_eq!(parsed.reply_to.map(|r| r.to_string()), reply_to);
            }
            Err(_) => prop_assert!(trimmed.is_empty(), "refused {text:?}"),
        }
    }

    #[test]
    fn history_accepts_exactly_the_contract_ranges(
        room_id in room(),
        limit in prop::option::of(-5i64..300),
        before in prop::option::of(-5i64..i64::MAX),
        after in prop::option::of(-5i64..i64::MAX),
    ) {
        let payload = json!({ "roomId": room_id, "limit": limit, "beforeSeq": before, "afterSeq": after });
        let valid = limit.is_none_or(|l| (1..=200).contains(&l))
            && before.is_none_or(|s| s >= 0)
            && after.is_none_or(|s| s >= 0);
        match history(payload) {
            Ok(h) => {
                prop_assert!(valid);
                prop_assert_eq!(h.limit, limit.unwrap_or(DEFAULT_HISTORY_LIMIT));
                prop_assert_eq!((h.before_seq, h.after_seq), (before, after));
            }
            Err(e) => {
                prop_assert!(!valid, "refused: {e:?}");
                prop_assert!(matches!(e, ChatError::BadRequest(_)));
            }
        }
    }

    #[test]
    fn numbers_beyond_i64_are_bad_requests(room_id in room(), big in (i64::MAX as u64 + 1)..=u64::MAX) {
        let room_id = room_id.as_str();
        let too_big = read(json!({ "roomId": room_id, "seq": big }));
        prop_assert!(matches!(too_big, Err(ChatError::BadRequest(_))));
        let too_big = history(json!({ "roomId": room_id, "afterSeq": big }));
        prop_assert!(matches!(too_big, Err(ChatError::BadRequest(_))));
        let fraction = read(json!({ "roomId": room_id, "seq": 1.5 }));
        prop_assert!(matches!(fraction, Err(ChatError::BadRequest(_))));
    }

    #[test]
    fn created_rooms_list_each_other_member_once(
        members in prop::collection::vec(prop_oneof![user_id(), Just("me".to_owned()), Just("bo".to_owned())], 0..40),
    ) {
        let me = UserId::parse("me").unwrap();
        let parsed = create_room(json!({ "name": "team", "members": members }), &me).unwrap();
        let mut expected: Vec<&str> = Vec::new();
        for m in &members {
            if m != "me" && !expected.contains(&m.as_str()) {
                expected.push(m);
            }
        }
        let got: Vec<&str> = parsed.members.iter().map(UserId::as_str).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn presence_takes_one_to_two_hundred_ids_in_order(ids in prop::collection::vec(user_id(), 0..230)) {
        match presence(json!({ "userIds": ids })) {
            Ok(parsed) => {
                prop_assert!((1..=MAX_PRESENCE_IDS).contains(&ids.len()));
                let got: Vec<&str> = parsed.iter().map(UserId::as_str).collect();
                prop_assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
            }
            Err(_) => prop_assert!(ids.is_empty() || ids.len() > MAX_PRESENCE_IDS),
        }
    }
}
