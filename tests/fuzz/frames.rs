//! Generators of hostile Engine.IO / Socket.IO frames: valid events with junk payloads, broken
//! JSON, deep nesting, huge numbers, binary attachments that do not add up, invalid UTF-8,
//! unknown packet types and namespaces, and frames beyond the payload limit.

use proptest::prelude::*;
use serde_json::{Value, json};

/// One thing to send on a transport.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A text frame / polling packet.
    Text(String),
    /// A binary frame (an attachment, or junk).
    Binary(Vec<u8>),
    /// Bytes that are not UTF-8, sent where text is expected.
    NotUtf8(Vec<u8>),
}

impl Frame {
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) | Frame::NotUtf8(b) => b.len(),
        }
    }
}

pub const EVENTS: &[&str] = &[
    "room:create",
    "room:direct",
    "room:join",
    "room:leave",
    "room:list",
    "room:members",
    "message:send",
    "message:history",
    "message:read",
    "typing:start",
    "typing:stop",
    "room:typing",
    "presence:get",
    "rpc:call",
];

/// Strings that matter to the server (a real room id, valid user ids) and strings that hurt.
fn string(room: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(room),
        Just("bystander".to_owned()),
        "[a-z0-9]{1,12}",
        any::<String>(),
        Just("\u{0}".to_owned()),
        Just("\u{202e}rtl".to_owned()),
        (1usize..3000).prop_map(|n| "🙂".repeat(n)),
    ]
}

fn json_value(room: String) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        string(room.clone()).prop_map(Value::String),
    ];
    let key = prop_oneof![
        Just("roomId"),
        Just("text"),
        Just("userId"),
        Just("userIds"),
        Just("name"),
        Just("kind"),
        Just("members"),
        Just("limit"),
        Just("seq"),
        Just("afterSeq"),
        Just("beforeSeq"),
        Just("clientId"),
        Just("replyTo"),
        Just("method"),
        Just("_placeholder"),
        Just("num"),
    ]
    .prop_map(str::to_owned);
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event packet `42[ack]["event", payload...]`, the most likely to reach real handlers.
fn event(room: String) -> impl Strategy<Value = String> {
    let name = prop_oneof![
        4 => prop::sample::select(EVENTS).prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    let ack = prop_oneof![
        4 => Just(String::new()),
        40 => (0u32..1000).prop_map(|n| n.to_string()),
        // Ack ids beyond u64 end the session: rarer, so most sessions live long enough.
        1 => Just(u64::MAX.to_string()),
        1 => Just("99999999999999999999999999".to_owned()),
    ];
    let args = prop::collection::vec(json_value(room), 0..3);
    (ack, name, args).prop_map(|(ack, name, args)| {
        let mut packet = vec![Value::String(name)];
        packet.extend(args);
        format!("42{ack}{}", Value::Array(packet))
    })
}

/// Broken JSON: the packet cut at a char boundary at or before `at`.
fn truncated(packet: &str, mut at: usize) -> String {
    while !packet.is_char_boundary(at) {
        at -= 1;
    }
    packet[..at].to_owned()
}

fn nested(depth: usize, open: char, close: char) -> String {
    let mut s = String::with_capacity(depth * 2 + 32);
    s.push_str("42[\"message:send\",");
    s.extend(std::iter::repeat_n(open, depth));
    if open == '{' {
        s.push_str("\"a\":1");
    }
    s.extend(std::iter::repeat_n(close, depth));
    s.push(']');
    s
}

/// Any frame, weighted toward ones that get past the transport to the parsers.
pub fn frame(room: String) -> impl Strategy<Value = Frame> {
    let valid_join = json!(["room:join", { "roomId": room.clone() }]).to_string();
    prop_oneof![
        60 => event(room.clone()).prop_map(Frame::Text),
        6 => (event(room.clone()), any::<prop::sample::Index>())
            .prop_map(|(e, cut)| Frame::Text(truncated(&e, cut.index(e.len())))),
        4 => (1usize..20_000).prop_map(|d| Frame::Text(nested(d, '[', ']'))),
        2 => (1usize..10_000).prop_map(|d| Frame::Text(nested(d, '{', '}'))),
        4 => prop_oneof![
            Just("42[\"message:history\",{\"roomId\":\"x\",\"limit\":1e999999}]"),
            Just("42[\"message:read\",{\"seq\":-0.0e-400}]"),
            Just("4299999999999999999999999999999[\"room:list\",{}]"),
            Just("42[\"presence:get\",{\"userIds\":[1e308,-1e308,123456789012345678901234567890]}]"),
            Just("43[\"room:list\"]"),
            Just("40/nope,{\"token\":\"x\"}"),
            Just("42/nope,[\"room:list\",{}]"),
            Just("41"),
            Just("44{\"message\":\"x\"}"),
            Just("4"),
            Just("2probe"),
            Just("5"),
            Just("6"),
            Just(""),
        ].prop_map(|s| Frame::Text(s.to_owned())),
        5 => (0u32..3, 0u32..4, json_value(room.clone())).prop_map(|(count, num, v)| {
            let header = if count == 0 { "99999999999".to_owned() } else { count.to_string() };
            Frame::Text(format!(
                "45{header}-[\"message:send\",{{\"_placeholder\":true,\"num\":{num}}},{v}]"
            ))
        }),
        4 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Frame::Binary),
        4 => prop::collection::vec(any::<u8>(), 1..256)
            .prop_filter_map("not UTF-8", |mut b| {
                b.push(0xff);
                std::str::from_utf8(&b).is_err().then_some(b)
            })
            .prop_map(Frame::NotUtf8),
        3 => (0u8..=255, any::<String>()).prop_map(|(t, rest)| Frame::Text(format!("{}{rest}", t as char))),
        2 => (70_000usize..300_000).prop_map(|n| Frame::Text(format!("42[\"message:send\",{{\"text\":\"{}\"}}]", "x".repeat(n)))),
        2 => Just(Frame::Text(format!("42{valid_join}"))),
    ]
}
