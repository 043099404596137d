//! The real binary refuses an unsafe configuration before it starts anything, and says why.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn confab(dir: &tempfile::TempDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_confab"));
    command
        .env_clear()
        .env("NO_COLOR", "1")
        .env(
            "CONFAB_DATABASE_URL",
            format!("sqlite://{}/confab.db", dir.path().display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn beyond_loopback_without_a_secret_the_node_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        confab(&dir).env("CONFAB_LISTEN", "0.0.0.0:0").output(),
    )
    .await
    .expect("the refusal is immediate")
    .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it started: {stderr}");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("invalid configuration")
            && stderr.contains("beyond loopback")
            && stderr.contains("CONFAB_JWT_SECRET")
            && stderr.contains("CONFAB_DEV_TOKENS=on"),
        "the message says what is wrong and how to fix it: {stderr}"
    );
    assert!(
        !dir.path().join("confab.db").exists(),
        "nothing was started before the refusal"
    );
}

#[tokio::test]
async fn asked_for_explicitly_dev_tokens_serve_beyond_loopback_with_a_loud_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = confab(&dir)
        .env("CONFAB_LISTEN", "0.0.0.0:0")
        .env("CONFAB_DEV_TOKENS", "on")
        .spawn()
        .expect("the binary runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let (port, warned) = tokio::time::timeout(Duration::from_secs(20), async {
        let mut port = None;
        while let Some(line) = lines.next_line().await.expect("read output") {
            if let Some((_, rest)) = line.split_once("listening on http://0.0.0.0:") {
                port = rest.split_whitespace().next().map(str::to_owned);
            }
            let warned =
                line.contains("WARN") && line.contains("DEV TOKENS ARE ON BEYOND LOOPBACK");
            seen.push(line);
            if warned {
                return (port, true);
            }
        }
        (port, false)
    })
    .await
    .unwrap_or_else(|_| panic!("no warning within 20 s:\n{}", seen.join("\n")));
    assert!(warned, "{}", seen.join("\n"));
    let port = port.expect("listening line before the warning");
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/dev/token"))
        .json(&serde_json::json!({ "userId": "ann" }))
        .send()
        .await
        .expect("dev token request");
    assert_eq!(response.status(), 200, "dev tokens are served as asked");
    child.kill().await.expect("stop the node");
}

#[tokio::test]
async fn a_webhook_or_rpc_url_without_a_secret_stops_the_node_before_it_starts() {
    for url in ["CONFAB_WEBHOOK_URL", "CONFAB_RPC_URL"] {
        let dir = tempfile::tempdir().unwrap();
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            confab(&dir).env(url, "http://127.0.0.1:9/hook").output(),
        )
        .await
        .expect("the refusal is immediate")
        .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{url}: {stderr}");
        assert!(
            stderr.contains("invalid configuration") && stderr.contains("CONFAB_WEBHOOK_SECRET"),
            "{url}: {stderr}"
        );
        assert!(!dir.path().join("confab.db").exists(), "{url}");
    }
}
