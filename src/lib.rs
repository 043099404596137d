//! confab: a realtime chat server speaking Socket.IO v4.
//!
//! A tour, following one message from a client's emit to the other clients' screens:
//!
//! 1. `main.rs` parses [`Config`] (flags and `CONFAB_*` variables), validates it into
//!    [`config::Settings`] and starts an [`Application`] (`app.rs`), which opens storage
//!    (`storage/`), builds the backplane (`backplane/`) and mounts Socket.IO on the axum router
//!    (`http/`).
//! 2. A client connects: `socket/mod.rs` admits it (capacity, then the JWT from `auth.rs`), reads
//!    the user's rooms once, joins its Socket.IO rooms (`user:{id}` and `room:{uuid}` of each of
//!    its chat rooms) and emits `session`; the user's name and last-seen time are written later,
//!    in batches (`storage/seen.rs`).
//! 3. The client emits `message:send`. `socket/handler.rs` wraps the event (span, metrics, one
//!    reply); `socket/payload.rs` parses the payload into domain values (`domain.rs`);
//!    `socket/messages.rs` checks membership against the socket's Socket.IO rooms and puts the
//!    message in the node's write queue (`storage/writer.rs`), which stores whatever has gathered
//!    with one [`storage::Store::send_batch`]: one transaction that checks membership again,
//!    assigns each room's next seqs and moves read marks.
//! 4. After the commit, the message goes to the delivery task (`socket/delivery.rs`) and the
//!    task that wrote the batch acks the sender (the handler gave it its `Responder`);
//!    `message:new` goes to the room's Socket.IO room, which socketioxide's adapter delivers to
//!    every member's sockets except the sender's.
//!
//! Presence, typing and cluster membership live in the parts of a [`backplane::Backplane`];
//! room emits go through socketioxide's adapter.
//!
//! A company's backend drives the same paths over the HTTP API (`http/api/`, `/api/v1/`): a
//! posted message enters the write queue of step 3 with no sending socket, membership changes
//! run `socket/membership.rs` (the code of `room:create`, `room:join` and `room:leave`), and
//! notifications are adapter emits to `user:{id}` and `room:{uuid}` rooms.
//!
//! The other direction (`hooks/`): with webhooks on, the transaction of step 3 (and those of
//! room and membership changes) also writes the change's event to an outbox table, which
//! `hooks/delivery.rs` sends, signed (`hooks/signature.rs`), to the backend; `rpc:call`
//! (`socket/rpc.rs`) forwards a client's call to the backend through `hooks/rpc.rs`.

pub mod auth;
pub mod backplane;
pub mod config;
pub mod domain;
pub mod error;
pub mod hooks;
pub mod http;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod socket;
pub mod state;
pub mod storage;
pub mod telemetry;

mod app;

pub use app::Application;
pub use config::Config;

/// The first log lines: what this node is and how it is configured (never the secret).
pub fn announce(app: &Application, tracing_enabled: bool) {
    let settings = &app.state().settings;
    let storage = if settings.database_url.starts_with("sqlite:") {
        "SQLite"
    } else {
        "Postgres"
    };
    tracing::info!(node = %settings.node_id, "confab listening on http://{}", app.local_addr());
    tracing::info!(
        storage,
        backplane = app.state().backplane.describe(),
        dev_tokens = settings.dev_tokens,
        random_secret = settings.jwt_secret_generated,
        traces = if tracing_enabled { "OTLP" } else { "off" },
        "configuration"
    );
    if settings.dev_tokens_exposed {
        tracing::warn!(
            listen = %settings.listen,
            "DEV TOKENS ARE ON BEYOND LOOPBACK (CONFAB_DEV_TOKENS=on): anyone who can reach this port can impersonate any user; never run this in production"
        );
    } else if settings.dev_tokens {
        tracing::warn!(
            "dev tokens are ON: anyone can get a token at POST /api/dev/token; set CONFAB_JWT_SECRET for production"
        );
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
