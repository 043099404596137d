//! Building and running one node: what `main` starts and what the tests start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::backplane::SocketIo;
use anyhow::Context;
use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tower::util::MapRequestLayer;

use crate::auth::TokenKeys;
use crate::backplane::{Adapter, Backplane, BackplaneDriver, ReconnectingDriver, RedisOptions};
use crate::config::Settings;
use crate::limits::{AdmissionGate, ConnectionLimiter};
use crate::metrics::Metrics;
use crate::state::{AppState, Lifecycle};
use crate::{http, socket, storage};

/// A node that is bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    io: SocketIo,
}

impl Application {
    /// Opens storage (applying migrations), builds the backplane and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new(&settings.node_id));
        let backend = storage::connect(
            &settings.database_url,
            settings.database_max_connections,
            settings.write.writers as u32,
            settings.database_timeout,
            settings.hooks.webhooks.is_some(),
        )
        .await
        .context("opening storage")?;
        let system = if settings.database_url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgresql"
        };
        let store: Arc<dyn storage::Store> = Arc::new(storage::InstrumentedStore::new(
            backend,
            metrics.clone(),
            system,
        ));
        let (backplane, driver) = connect_backplane(&settings, &metrics)?;
        // Join at once when Redis answers, so the first sockets find the node in the cluster;
        // otherwise the upkeep's heartbeats keep trying.
        if let Err(e) = backplane.membership.heartbeat().await {
            tracing::warn!(error = %e, "backplane unreachable at start; serving local sockets until it answers");
        }
        let limits = &settings.limits;
        // Bounded like the queue in front of it: a stalled delivery stops the writer, which
        // fills the queue, which refuses sends at once.
        let (committed, to_deliver) = tokio::sync::mpsc::channel(settings.write.queue.max(1));
        let mut write = settings.write;
        if system == "sqlite" {
            // One writer connection: concurrent batches would only queue on it.
            write.writers = 1;
        }
        let (writes, _writer) =
            storage::WriteQueue::start(store.clone(), write, committed, metrics.clone());
        let hooks = crate::hooks::Hooks::new(&settings.hooks, &metrics, &settings.node_id)
            .context("building the webhook client")?;
        let state = AppState {
            hooks,
            tokens: Arc::new(TokenKeys::new(&settings.jwt_secret)),
            metrics,
            connections: ConnectionLimiter::new(
                limits.max_connections,
                limits.max_connections_per_ip,
            ),
            admissions: AdmissionGate::new(limits.max_pending_admissions, limits.admission_wait),
            lifecycle: Lifecycle::default(),
            store,
            writes,
            seen: storage::SeenRecorder::new(settings.limits.max_connections.max(1024)),
            backplane,
            driver: driver.clone(),
            settings: Arc::new(settings),
        };
        let prefix = settings_prefix(&state.settings);
        let (layer, io) = socketioxide::SocketIo::builder()
            .max_payload(state.settings.limits.max_payload_bytes)
            .max_buffer_size(1024)
            .ws_read_buffer_size(state.settings.limits.ws_read_buffer_bytes)
            .with_state(state.clone())
            .with_adapter::<Adapter>(driver.into_adapter_state(&prefix))
            .build_layer();
        if let BackplaneDriver::Redis(driver) = &state.driver {
            driver.set_context_provider(socket::relay::outgoing(state.metrics.clone()));
            let node = state.settings.node_id.clone();
            driver.set_context_sink(socket::relay::incoming(
                io.clone(),
                state.metrics.clone(),
                node,
            ));
        }
        socket::register(&io)
            .await
            .context("subscribing the Socket.IO adapter")?;
        tokio::spawn(socket::deliver(
            io.clone(),
            state.driver.clone(),
            to_deliver,
        ));
        // Outside the Socket.IO layer, so what socketioxide keeps of a request is the trimmed one.
        let sockets = http::router(state.clone(), io.clone())
            .layer(layer)
            .layer(MapRequestLayer::new(socket::upgrade::trim));
        let router = http::common_layers(sockets, &state.settings);
        let listener = bind(state.settings.listen, state.settings.listen_backlog)
            .with_context(|| format!("binding {}", state.settings.listen))?;
        Ok(Self {
            listener,
            router,
            state,
            io,
        })
    }

    /// The address actually bound (the port is chosen by the OS when configured as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains: readiness goes false and new sockets are
    /// refused, in-flight events finish and are acked, sockets are closed (clearing presence),
    /// the HTTP server stops and storage is closed, all within the configured deadline.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            state,
            io,
        } = self;
        let background = CancellationToken::new();
        let seen_stop = CancellationToken::new();
        let seen_task = tokio::spawn(
            state
                .seen
                .clone()
                .run(state.store.clone(), seen_stop.clone()),
        );
        tokio::spawn(crate::memory::trim_after_disconnect_waves(
            state.connections.clone(),
            state.store.clone(),
            background.clone(),
        ));
        tokio::spawn(socket::expire_typing(
            state.clone(),
            io.clone(),
            background.clone(),
        ));
        // Heartbeat, reaping and the published load: stopped before leaving the cluster, so that
        // no heartbeat brings this node back once it left.
        let upkeep = background.child_token();
        let upkeep_task = tokio::spawn(socket::keep_cluster_presence(
            state.clone(),
            io.clone(),
            upkeep.clone(),
        ));
        tokio::spawn(http::api::purge_expired(state.clone(), background.clone()));
        if let Some(webhooks) = state.hooks.webhooks.clone() {
            tokio::spawn(crate::hooks::delivery::run(
                webhooks,
                state.store.clone(),
                background.clone(),
            ));
        }
        let loads_task = tokio::spawn(http::ops::publish_loads(
            state.clone(),
            io.clone(),
            upkeep.clone(),
        ));

        let stop_serving = CancellationToken::new();
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        // Acks and events are small writes that must leave at once: without TCP_NODELAY, Nagle's
        // algorithm holds them until the client's delayed ACK (milliseconds on every reply).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        });
        let server = axum::serve(listener, service)
            .with_graceful_shutdown(stop_serving.clone().cancelled_owned());
        let mut server = tokio::spawn(async move { server.await });

        tokio::select! {
            () = shutdown => {}
            result = &mut server => {
                background.cancel();
                return result.context("server task failed")?.context("server failed");
            }
        }

        let deadline = state.settings.shutdown_timeout;
        tracing::info!(deadline_secs = deadline.as_secs(), "draining");
        let drained = tokio::time::timeout(deadline, async {
            state.lifecycle.start_draining();
            state.lifecycle.wait_idle().await;
            if let Err(e) = io.local().disconnect().await {
                tracing::warn!(error = %e, "some sockets did not close");
            }
            while state.connections.in_use() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            state.lifecycle.wait_idle().await;
            upkeep.cancel();
            let _ = tokio::join!(upkeep_task, loads_task);
            match state.backplane.membership.leave().await {
                Ok(departures) => socket::announce_departures(&state, &io, departures).await,
                Err(e) => tracing::warn!(error = %e, "could not leave the cluster cleanly"),
            }
            stop_serving.cancel();
            let _ = (&mut server).await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("drain deadline reached; exiting with work left");
            server.abort();
        }
        background.cancel();
        seen_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), seen_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), state.store.close()).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Binds with a listen queue of `backlog` (tokio's own bind asks for 1024).
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's bind does: a restarted node can take its port back at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Chooses the backplane in one place: in-process for a single node, Redis for a cluster.
/// Nothing waits for Redis: a node starts while it is unreachable (serving its own sockets,
/// `/readyz` 503) and joins the cluster when it answers.
fn connect_backplane(
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Backplane, BackplaneDriver)> {
    let limits = &settings.limits;
    let Some(redis) = &settings.redis else {
        let local = Backplane::local(
            settings.node_id.clone(),
            limits.typing_ttl,
            limits.typing_rebroadcast,
        );
        return Ok((local, BackplaneDriver::InProcess));
    };
    let options = RedisOptions {
        url: redis.url.expose().to_owned(),
        node_id: settings.node_id.clone(),
        prefix: format!("{}:", redis.prefix),
        node_timeout: settings.node_timeout,
        typing_ttl: limits.typing_ttl,
        typing_rebroadcast: limits.typing_rebroadcast,
    };
    let backplane =
        Backplane::redis(options, metrics.clone()).context("setting up the Redis backplane")?;
    // The driver's errors could quote the URL, which may hold a password.
    let driver = ReconnectingDriver::connect(redis.url.expose())
        .map_err(|_| anyhow::anyhow!("setting up the Redis pub/sub driver failed"))?;
    Ok((backplane, BackplaneDriver::Redis(driver)))
}

fn settings_prefix(settings: &Settings) -> String {
    settings
        .redis
        .as_ref()
        .map(|r| r.prefix.clone())
        .unwrap_or_else(|| "confab".to_owned())
}
