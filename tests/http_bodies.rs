//! Property tests of the HTTP inputs against a real node: whatever body `POST /api/dev/token`
//! gets, and whatever path or query the operations API gets, the answer is a JSON success or a
//! JSON client error (4xx), never a 5xx, and the node keeps serving.

mod support;

use confab::config::Secret;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use support::{Backend, TestApp};

const KEY: &str = "fuzz-key-0123456789abcdef";

/// A node of the test's own and the runtime it runs on; the cases run on the test's thread, each
/// request driven to completion with `block_on`.
struct Node {
    rt: tokio::runtime::Runtime,
    app: Option<TestApp>,
    base: String,
    http: reqwest::Client,
}

impl Node {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(TestApp::spawn_with(Backend::Sqlite, |s| {
            s.api_key = Some(Secret::new(KEY));
        }));
        let base = app.base.clone();
        Self {
            rt,
            app: Some(app),
            base,
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request; returns the status and the body as JSON (`Null` when it is not JSON).
    fn send(
        &self,
        request: impl FnOnce(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> (u16, Value) {
        self.rt.block_on(async {
            let response = request(&self.http, &self.base)
                .send()
                .await
                .expect("node answers");
            let status = response.status().as_u16();
            let bytes = response.bytes().await.expect("body");
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    /// The node still answers, then stops.
    fn stop(mut self) {
        let (status, _) = self.send(|c, base| c.get(format!("{base}/livez")));
        assert_eq!(status, 200, "the node still serves");
        if let Some(app) = self.app.take() {
            self.rt.block_on(app.stop());
        }
    }
}

fn json_text() -> impl Strategy<Value = String> {
    let user = prop_oneof![
        "[A-Za-z0-9_.:@-]{1,64}",
        any::<String>(),
        Just(String::new())
    ];
    let name = prop_oneof![
        Just(Value::Null),
        any::<String>().prop_map(Value::String),
        "\\PC{1,64}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
    ];
    prop_oneof![
        (user, name).prop_map(|(u, n)| json!({ "userId": u, "name": n }).to_string()),
        any::<i64>().prop_map(|n| json!({ "userId": n }).to_string()),
        Just("[]".to_owned()),
        Just("{\"userId\":\"a\"".to_owned()),
        Just(format!("{}1{}", "[".repeat(5000), "]".repeat(5000))),
        Just(format!(
            "{{\"userId\":\"a\",\"name\":\"{}\"}}",
            "x".repeat(20_000)
        )),
        any::<String>(),
    ]
}

/// The rule the contract gives for a dev-token request.
fn should_issue(body: &[u8]) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let user_ok = map
        .get("userId")
        .and_then(Value::as_str)
        .is_some_and(|u| confab::domain::UserId::parse(u).is_ok());
    let name_ok = match map.get("name") {
        None | Some(Value::Null) => true,
        Some(Value::String(n)) => confab::domain::DisplayName::parse(n).is_ok(),
        Some(_) => false,
    };
    user_ok && name_ok && body.len() <= 16 * 1024
}

#[test]
fn dev_token_bodies_get_a_token_or_a_json_client_error() {
    let node = Node::start();
    let mut runner = TestRunner::new(Config::with_cases(400));
    let body = prop_oneof![
        json_text().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..512),
    ];
    runner
        .run(&body, |body| {
            let expect_token = should_issue(&body);
            let sent = body.clone();
            let (status, reply) = node.send(move |c, base| {
                c.post(format!("{base}/api/dev/token"))
                    .header("content-type", "application/json")
                    .body(sent)
            });
            if expect_token {
                prop_assert_eq!(status, 200, "{}", reply);
                prop_assert!(reply["token"].is_string());
            } else {
                prop_assert!(
                    status == 400 || status == 413,
                    "status {}: {}",
                    status,
                    reply
                );
                if status == 400 {
                    prop_assert_eq!(&reply["error"]["code"], "bad_request");
                }
            }
            Ok(())
        })
        .unwrap();
    node.stop();
}

#[test]
fn dev_tokens_need_a_json_content_type() {
    let node = Node::start();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (status, reply) = node.send(|c, base| {
            let request = c
                .post(format!("{base}/api/dev/token"))
                .body(r#"{"userId":"ann"}"#);
            match content_type {
                Some(t) => request.header("content-type", t),
                None => request,
            }
        });
        assert_eq!(status, 400, "{content_type:?}: {reply}");
        assert_eq!(reply["error"]["code"], "bad_request");
    }
    node.stop();
}

#[test]
fn operations_api_paths_and_queries_never_fail_the_server() {
    let node = Node::start();
    let mut runner = TestRunner::new(Config::with_cases(300));
    let input = (
        prop_oneof![any::<String>(), "[A-Za-z0-9_.:@-]{1,70}"],
        prop_oneof![
            any::<String>(),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("99999999999999999999999".to_owned())
        ],
    );
    runner
        .run(&input, |(id, limit)| {
            let (status, reply) = node.send(|c, base| {
                let mut url = reqwest::Url::parse(base).unwrap();
                url.path_segments_mut()
                    .unwrap()
                    .extend(["api", "v1", "users", &id, "presence"]);
                c.get(url).bearer_auth(KEY)
            });
            prop_assert!(status < 500, "presence of {:?}: {} {}", id, status, reply);
            if status == 200 {
                prop_assert!(confab::domain::UserId::parse(&id).is_ok());
                prop_assert_eq!(&reply["userId"], &json!(id));
            }
            let (status, reply) = node.send(|c, base| {
                c.get(format!("{base}/api/v1/security-events"))
                    .query(&[("limit", &limit)])
                    .bearer_auth(KEY)
            });
            prop_assert!(status < 500, "limit {:?}: {} {}", limit, status, reply);
            Ok(())
        })
        .unwrap();
    node.stop();
}
