//! Raw Engine.IO v4 sessions over websocket and long-polling, authenticated like a real client,
//! that send whatever frame they are given and tally the acks that come back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::frames::Frame;

const STEP: Duration = Duration::from_secs(10);
/// How long a batch's flush ack may take; a session left waiting for binary attachments that
/// never come never answers, and that is fine.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// What came back from the server across every session.
#[derive(Debug, Default)]
pub struct Tally {
    /// Ack codes seen (`ok` for successes).
    pub acks: BTreeMap<String, u64>,
    /// `error` events (replies to ack-less events) by code.
    pub errors: BTreeMap<String, u64>,
    /// Acks that were not `{ ok: true, … }` or `{ ok: false, error: { code, message } }`.
    pub malformed_acks: Vec<String>,
}

pub type SharedTally = Arc<Mutex<Tally>>;

/// The ack id of the event that ends a batch: once its ack is back, the server has read the
/// batch (a socket's packets are read in order).
const FLUSH_ID: &str = "4242424242";

/// Records every ack (`43<id>[reply]`) and `error` event in a batch of Engine.IO packets; true
/// when the flush ack is among them.
fn record(tally: &SharedTally, packets: &str) -> bool {
    let mut flushed = false;
    for packet in packets.split('\u{1e}') {
        if let Some(event) = packet.strip_prefix("42") {
            if let Ok(Value::Array(args)) = serde_json::from_str::<Value>(event)
                && args.first().is_some_and(|e| e == "error")
            {
                let code = args.get(1).and_then(|e| e["code"].as_str()).unwrap_or("?");
                *tally
                    .lock()
                    .unwrap()
                    .errors
                    .entry(code.to_owned())
                    .or_default() += 1;
            }
            continue;
        }
        let Some(rest) = packet.strip_prefix("43") else {
            continue;
        };
        flushed |= rest.starts_with(FLUSH_ID);
        let json = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        let reply = serde_json::from_str::<Value>(json)
            .ok()
            .and_then(|v| v.get(0).cloned());
        let code = match &reply {
            Some(r) if r["ok"] == true => Some("ok".to_owned()),
            Some(r) if r["ok"] == false && r["error"]["message"].is_string() => {
                r["error"]["code"].as_str().map(str::to_owned)
            }
            _ => None,
        };
        let mut tally = tally.lock().unwrap();
        match code {
            Some(code) => *tally.acks.entry(code).or_default() += 1,
            None => tally
                .malformed_acks
                .push(packet.chars().take(200).collect()),
        }
    }
    flushed
}

fn flush_packet() -> String {
    format!(r#"42{FLUSH_ID}["room:list",{{}}]"#)
}

type WsSink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// A websocket session; `send` fails once the server closed it. Pings are answered, as a real
/// client does, so only the fuzzed frames can get a session closed.
pub struct WsSession {
    sink: Arc<tokio::sync::Mutex<WsSink>>,
    reader: JoinHandle<()>,
    flushed: Arc<tokio::sync::Notify>,
}

impl WsSession {
    pub async fn open(base: &str, token: &str, tally: SharedTally) -> anyhow::Result<Self> {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            base.replacen("http", "ws", 1)
        );
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url)).await??;
        let (mut sink, mut stream) = ws.split();
        let open = tokio::time::timeout(STEP, stream.next()).await?;
        anyhow::ensure!(
            matches!(&open, Some(Ok(Message::Text(t))) if t.starts_with('0')),
            "no open packet: {open:?}"
        );
        sink.send(Message::text(format!(r#"40{{"token":"{token}"}}"#)))
            .await?;
        loop {
            match tokio::time::timeout(STEP, stream.next()).await? {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    sink.send(Message::text("3")).await?;
                }
                Some(Ok(Message::Text(t))) if t.starts_with("40{") => break,
                other => anyhow::bail!("not connected: {other:?}"),
            }
        }
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        let pong = sink.clone();
        let flushed = Arc::new(tokio::sync::Notify::new());
        let notify = flushed.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    if text.as_str() == "2" {
                        let _ = pong.lock().await.send(Message::text("3")).await;
                    }
                    if record(&tally, &text) {
                        notify.notify_one();
                    }
                }
            }
            notify.notify_one();
        });
        Ok(Self {
            sink,
            reader,
            flushed,
        })
    }

    pub async fn send(&mut self, frame: &Frame) -> anyhow::Result<()> {
        let message = match frame {
            Frame::Text(t) => Message::text(t.clone()),
            Frame::Binary(b) => Message::binary(b.clone()),
            Frame::NotUtf8(b) => {
                Message::Frame(WsFrame::message(b.clone(), OpCode::Data(Data::Text), true))
            }
        };
        tokio::time::timeout(STEP, self.sink.lock().await.send(message)).await??;
        anyhow::ensure!(!self.reader.is_finished(), "closed by the server");
        Ok(())
    }

    /// Waits until the server has read everything sent (or closed the session).
    pub async fn flush(&mut self) {
        if self.reader.is_finished() {
            return;
        }
        let notify = self.flushed.clone();
        let flushed = notify.notified();
        if self.send(&Frame::Text(flush_packet())).await.is_ok() {
            let _ = tokio::time::timeout(FLUSH_WAIT, flushed).await;
        }
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(STEP, self.sink.lock().await.close()).await;
        let _ = tokio::time::timeout(STEP, &mut self.reader).await;
        self.reader.abort();
    }
}

/// A long-polling session: a background GET loop reads, each frame is one POST.
pub struct PollingSession {
    http: reqwest::Client,
    url: String,
    reader: JoinHandle<()>,
    flushed: Arc<tokio::sync::Notify>,
    /// A ping came: the next POST carries the pong. Engine.IO closes a session that gets two
    /// POSTs at once, so the reader never posts itself.
    pong_due: Arc<std::sync::atomic::AtomicBool>,
}

impl PollingSession {
    pub async fn open(base: &str, token: &str, tally: SharedTally) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()?;
        let handshake = http
            .get(format!("{base}/socket.io/?EIO=4&transport=polling"))
            .send()
            .await?
            .text()
            .await?;
        let open: Value = serde_json::from_str(handshake.strip_prefix('0').unwrap_or(""))?;
        let sid = open["sid"].as_str().unwrap_or_default().to_owned();
        let url = format!("{base}/socket.io/?EIO=4&transport=polling&sid={sid}");
        let posted = http
            .post(&url)
            .body(format!(r#"40{{"token":"{token}"}}"#))
            .send()
            .await?;
        anyhow::ensure!(
            posted.status() == 200,
            "connect refused: {}",
            posted.status()
        );
        loop {
            let got = http.get(&url).send().await?.text().await?;
            if got.split('\u{1e}').any(|p| p == "2") {
                http.post(&url).body("3").send().await?;
            }
            if got.split('\u{1e}').any(|p| p.starts_with("40{")) {
                break;
            }
            anyhow::ensure!(
                got.split('\u{1e}').all(|p| p == "2"),
                "not connected: {got}"
            );
        }
        let (reader_http, reader_url) = (http.clone(), url);
        let url = reader_url.clone();
        let flushed = Arc::new(tokio::sync::Notify::new());
        let notify = flushed.clone();
        let pong_due = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ping = pong_due.clone();
        let reader = tokio::spawn(async move {
            let _done = Finally(notify.clone());
            loop {
                let Ok(response) = reader_http.get(&reader_url).send().await else {
                    return;
                };
                if response.status() != 200 {
                    return;
                }
                let Ok(body) = response.text().await else {
                    return;
                };
                if record(&tally, &body) {
                    notify.notify_one();
                }
                if body.split('\u{1e}').any(|p| p == "2") {
                    ping.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if body.split('\u{1e}').any(|p| p == "1") {
                    return;
                }
            }
        });
        Ok(Self {
            http,
            url,
            reader,
            flushed,
            pong_due,
        })
    }

    pub async fn send(&mut self, frame: &Frame) -> anyhow::Result<()> {
        let mut body = Vec::new();
        if self
            .pong_due
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            body.extend_from_slice(b"3\x1e");
        }
        match frame {
            Frame::Text(t) => body.extend_from_slice(t.as_bytes()),
            Frame::Binary(b) | Frame::NotUtf8(b) => body.extend_from_slice(b),
        }
        let response = self.http.post(&self.url).body(body).send().await?;
        anyhow::ensure!(
            response.status() == 200 && !self.reader.is_finished(),
            "closed by the server ({})",
            response.status()
        );
        Ok(())
    }

    /// Waits until the server has read everything sent (or closed the session).
    pub async fn flush(&mut self) {
        if self.reader.is_finished() {
            return;
        }
        let notify = self.flushed.clone();
        let flushed = notify.notified();
        if self.send(&Frame::Text(flush_packet())).await.is_ok() {
            let _ = tokio::time::timeout(FLUSH_WAIT, flushed).await;
        }
    }

    /// Closes the session (Engine.IO `1`) so the node frees it at once.
    pub async fn close(self) {
        let _ = self.http.post(&self.url).body("1").send().await;
        self.reader.abort();
    }
}

/// Wakes a waiting `flush` when the reader ends, however it ends.
struct Finally(Arc<tokio::sync::Notify>);

impl Drop for Finally {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}
