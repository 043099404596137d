//! Admission under a stalled database: the connections reading their rooms are bounded, the
//! next one is shed with `server busy` once its wait for a turn is over, and the one reading is
//! admitted when the database answers.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sqlx::Connection;
use support::{Backend, TestApp};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A raw Engine.IO v4 websocket that has sent its Socket.IO CONNECT with `token`.
async fn connect_raw(base: &str, token: &str) -> Ws {
    let addr = base.trim_start_matches("http://");
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("websocket handshake");
    let open = next_text(&mut ws).await;
    assert!(open.starts_with('0'), "engine.io open first, got {open}");
    let connect = format!(r#"40{{"token":"{token}"}}"#);
    ws.send(Message::text(connect)).await.expect("send CONNECT");
    ws
}

/// The next text frame other than a ping, within 10 s.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket stays open")
            .expect("a readable frame");
        if let Message::Text(text) = frame {
            if text.as_str() == "2" {
                ws.send(Message::text("3")).await.expect("pong");
                continue;
            }
            return text.as_str().to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_sheds_extra_admissions_at_once_and_admits_the_waiting_one_after() {
    let url = Arc::new(Mutex::new(String::new()));
    let seen_url = url.clone();
    let app = TestApp::spawn_with(Backend::Postgres, move |s| {
        s.limits.max_pending_admissions = 1;
        s.limits.admission_wait = Duration::from_millis(300);
        *seen_url.lock().unwrap() = s.database_url.clone();
    })
    .await;
    let url = url.lock().unwrap().clone();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let (waiting_token, shed_token, later_token) = (
        app.token("adm-waiting").await,
        app.token("adm-shed").await,
        app.token("adm-later").await,
    );

    // Stall every read of memberships: the next admission waits on this lock.
    let mut locker = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE members IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let mut watcher = sqlx::PgConnection::connect(&url).await.expect("connect");

    let mut waiting = connect_raw(&app.base, &waiting_token).await;
    support::postgres::until_a_query_waits_on_a_lock(&mut watcher, &database, || false).await;

    let mut shed = connect_raw(&app.base, &shed_token).await;
    let refusal = next_text(&mut shed).await;
    assert_eq!(
        refusal, r#"44{"message":"server busy"}"#,
        "the second admission is shed while the first waits"
    );

    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    let connected = next_text(&mut waiting).await;
    assert!(
        connected.starts_with("40"),
        "admitted once the database answers: {connected}"
    );
    let session = next_text(&mut waiting).await;
    assert!(
        session.starts_with(r#"42["session""#) && session.contains("adm-waiting"),
        "then its session: {session}"
    );

    let mut later = connect_raw(&app.base, &later_token).await;
    assert!(
        next_text(&mut later).await.starts_with("40"),
        "the gate reopens"
    );

    let metrics = app.metrics().await;
    let busy = metrics
        .lines()
        .find(|l| l.starts_with("confab_connections_total") && l.contains(r#"outcome="busy""#))
        .unwrap_or_else(|| panic!("no busy outcome counted:\n{metrics}"));
    assert!(busy.ends_with(" 1"), "one shed connection counted: {busy}");
    app.stop().await;
}
