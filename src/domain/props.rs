//! Property tests of the domain parsers: any string in, a valid value or an `InvalidValue` out,
//! never a panic, and exactly the contract's rule deciding which.

use proptest::prelude::*;

use super::*;

/// Strings that stress trimming and counting: Unicode white space, combining marks, emoji, NUL.
fn tricky_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(" ".to_owned()),
        Just("\u{3000}".to_owned()),
        Just("\n\t".to_owned()),
        Just("\u{0}".to_owned()),
        Just("e\u{301}".to_owned()),
        Just("🙂".to_owned()),
        Just("\u{feff}".to_owned()),
        "[a-z]{1,3}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..80).prop_map(|p| p.concat())
}

fn counted_within(raw: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&raw.trim().chars().count())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn user_ids_follow_the_alphabet_rule(raw in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_.:@-]{0,70}",
    ]) {
        let rule = (1..=64).contains(&raw.len())
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || "_.:@-".contains(c));
        match UserId::parse(&raw) {
            Ok(id) => {
                prop_assert!(rule, "accepted {raw:?}");
                prop_assert_eq!(id.as_str(), raw.as_str());
                prop_assert_eq!(id.socket_room(), format!("user:{raw}"));
            }
            Err(_) => prop_assert!(!rule, "refused {raw:?}"),
        }
    }

    #[test]
    fn trimmed_values_count_scalar_values_after_trimming(raw in prop_oneof![any::<String>(), tricky_text()]) {
        let checks: [(&str, Result<String, InvalidValue>, usize); 4] = [
            ("name", DisplayName::parse(&raw).map(|v| v.as_str().to_owned()), 64),
            ("room name", RoomName::parse(&raw).map(|v| v.as_str().to_owned()), 100),
            ("clientId", ClientId::parse(&raw).map(|v| v.as_str().to_owned()), 64),
            ("text", MessageText::parse(&raw, 50).map(MessageText::into_inner), 50),
        ];
        for (what, parsed, max) in checks {
            match parsed {
                Ok(value) => {
                    prop_assert!(counted_within(&raw, 1, max), "{what} accepted {raw:?}");
                    prop_assert_eq!(value.as_str(), raw.trim());
                    prop_assert_eq!(value.trim(), value.as_str(), "already trimmed");
                }
                Err(e) => {
                    prop_assert!(!counted_within(&raw, 1, max), "{what} refused {raw:?}");
                    prop_assert!(e.0.contains(&format!("1-{max}")), "the message names the range: {e}");
                }
            }
        }
    }

    #[test]
    fn message_text_limit_is_the_configured_one(text in "[a-z🙂 ]{0,40}", max in 1usize..40) {
        let count = text.trim().chars().count();
        prop_assert_eq!(MessageText::parse(&text, max).is_ok(), (1..=max).contains(&count));
    }

    #[test]
    fn room_ids_are_uuids_and_come_back_canonical(bytes in any::<[u8; 16]>(), junk in any::<String>()) {
        let uuid = uuid::Uuid::from_bytes(bytes);
        for form in [uuid.hyphenated().to_string(), uuid.hyphenated().to_string().to_uppercase()] {
            let id = RoomId::parse(&form).unwrap();
            prop_assert_eq!(id.0, uuid);
            prop_assert_eq!(id.to_string(), uuid.hyphenated().to_string());
            prop_assert_eq!(id.socket_room(), format!("room:{}", uuid.hyphenated()));
        }
        // Arbitrary text is a UUID only when the uuid crate says so, and never panics.
        prop_assert_eq!(RoomId::parse(&junk).is_ok(), uuid::Uuid::parse_str(&junk).is_ok());
    }
}
