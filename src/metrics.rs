//! Prometheus metrics, held in one registry per application (no global recorder, so tests that
//! start several nodes in one process keep their numbers apart).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventNameLabel {
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The route's path template (`/api/v1/rooms/{roomId}`), never the raw path.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    /// Socket.IO sockets connected to this node now.
    pub sockets: Gauge,
    /// Connection attempts by outcome (`accepted`, `unauthorized`, `capacity`, `per_ip`, `draining`, `busy`).
    pub connections: Family<OutcomeLabel, Counter>,
    /// Client events handled, by event name and reply code (`ok` or an error code).
    pub events: Family<EventLabels, Counter>,
    /// Time to handle a client event, by event name.
    pub event_duration: Family<EventNameLabel, Histogram>,
    /// Messages stored (duplicates by `clientId` excluded).
    pub messages_stored: Counter,
    /// Messages per write transaction (group commit).
    pub write_batch_size: Histogram,
    /// Sends refused unwritten because the write path was full or they waited too long.
    pub write_refused: Counter,
    /// Events refused by the per-socket rate limits.
    pub rate_limited: Family<EventNameLabel, Counter>,
    /// Typing states that expired without a `typing:stop`.
    pub typing_expired: Counter,
    /// Backplane messages this node published to the other nodes.
    pub backplane_published: Counter,
    /// Backplane messages this node received from the other nodes.
    pub backplane_received: Counter,
    /// Time from another node's publish to this node's receipt.
    pub backplane_lag: Histogram,
    /// Backplane publishes that failed (Redis unreachable): delivered locally only.
    pub backplane_publish_failures: Counter,
    /// Storage calls that failed, by operation.
    pub storage_errors: Family<OpLabel, Counter>,
    /// Time of storage calls, by operation.
    pub storage_duration: Family<OpLabel, Histogram>,
    /// Redis state calls (presence, typing, upkeep) that failed, by operation.
    pub redis_errors: Family<OpLabel, Counter>,
    /// Upkeep rounds (heartbeat and reaping of dead nodes).
    pub presence_sweeps: Counter,
    /// Users left without sockets by a dead node and announced offline.
    pub users_reaped: Counter,
    /// Resident memory of the process, read at scrape time.
    pub resident_memory: Gauge,
    /// The series of `events` and `event_duration` by (event, outcome), found once.
    event_series: EventSeries,
    /// Tokio tasks alive, read at each scrape: the soak test's leak detector.
    pub runtime_tasks: Gauge,
    /// HTTP API calls, by route template, method and status.
    pub api_requests: Family<ApiLabels, Counter>,
    /// Time to answer an HTTP API call, by route template.
    pub api_duration: Family<RouteLabel, Histogram>,
    /// Webhooks and forwarded calls (`hooks/metrics.rs`).
    pub hooks: crate::hooks::HookMetrics,
}

type EventSeries = std::sync::RwLock<
    std::collections::HashMap<(&'static str, &'static str), (Counter, Histogram)>,
>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: String,
}

impl Metrics {
    pub fn new(node_id: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "confab",
            [(
                std::borrow::Cow::Borrowed("node"),
                std::borrow::Cow::Owned(node_id.to_owned()),
            )]
            .into_iter(),
        );
        let sockets = Gauge::default();
        registry.register(
            "sockets",
            "Socket.IO sockets connected to this node",
            sockets.clone(),
        );
        let connections = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "connections",
            "Socket.IO connection attempts by outcome",
            connections.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Client events handled, by event and outcome",
            events.clone(),
        );
        let event_duration = Family::<EventNameLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register_with_unit(
            "event_duration",
            "Time to handle a client event",
            Unit::Seconds,
            event_duration.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "HTTP API calls, by route, method and status",
            api_requests.clone(),
        );
        let api_duration = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register_with_unit(
            "api_duration",
            "Time to answer an HTTP API call",
            Unit::Seconds,
            api_duration.clone(),
        );
        let messages_stored = Counter::default();
        registry.register(
            "messages_stored",
            "Messages durably stored",
            messages_stored.clone(),
        );
        let write_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register_with_unit(
            "write_batch",
            "Messages stored per write transaction",
            Unit::Other("messages".into()),
            write_batch_size.clone(),
        );
        let write_refused = Counter::default();
        registry.register(
            "write_refused",
            "Sends refused unwritten because the write path was full or too slow",
            write_refused.clone(),
        );
        let rate_limited = Family::<EventNameLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Events refused by rate limits",
            rate_limited.clone(),
        );
        let typing_expired = Counter::default();
        registry.register(
            "typing_expired",
            "Typing states that expired",
            typing_expired.clone(),
        );
        let backplane_published = Counter::default();
        registry.register(
            "backplane_published",
            "Backplane messages published to other nodes",
            backplane_published.clone(),
        );
        let backplane_received = Counter::default();
        registry.register(
            "backplane_received",
            "Backplane messages received from other nodes",
            backplane_received.clone(),
        );
        let backplane_lag = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "backplane_delivery_lag",
            "Time from another node's publish to receipt here",
            Unit::Seconds,
            backplane_lag.clone(),
        );
        let backplane_publish_failures = Counter::default();
        registry.register(
            "backplane_publish_failures",
            "Backplane publishes that failed and were delivered locally only",
            backplane_publish_failures.clone(),
        );
        let storage_errors = Family::<OpLabel, Counter>::default();
        registry.register(
            "storage_errors",
            "Failed storage calls",
            storage_errors.clone(),
        );
        let storage_duration = Family::<OpLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register_with_unit(
            "storage_duration",
            "Time of storage calls",
            Unit::Seconds,
            storage_duration.clone(),
        );
        let redis_errors = Family::<OpLabel, Counter>::default();
        registry.register(
            "redis_errors",
            "Failed Redis state calls",
            redis_errors.clone(),
        );
        let presence_sweeps = Counter::default();
        registry.register(
            "presence_sweeps",
            "Upkeep rounds: heartbeat and reaping of dead nodes",
            presence_sweeps.clone(),
        );
        let users_reaped = Counter::default();
        registry.register(
            "users_reaped",
            "Users left without sockets by a dead node",
            users_reaped.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the process",
            Unit::Bytes,
            resident_memory.clone(),
        );
        let runtime_tasks = Gauge::default();
        registry.register(
            "runtime_tasks",
            "Tokio tasks alive in the process (flat under steady load, or something leaks)",
            runtime_tasks.clone(),
        );
        let hooks = crate::hooks::HookMetrics::register(&mut registry);
        Self {
            hooks,
            registry,
            runtime_tasks,
            backplane_published,
            backplane_received,
            backplane_lag,
            backplane_publish_failures,
            storage_errors,
            storage_duration,
            redis_errors,
            presence_sweeps,
            users_reaped,
            resident_memory,
            event_series: EventSeries::default(),
            api_requests,
            api_duration,
            sockets,
            connections,
            events,
            event_duration,
            messages_stored,
            write_batch_size,
            write_refused,
            rate_limited,
            typing_expired,
        }
    }

    pub fn connection(&self, outcome: &str) {
        self.connections
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one handled event. The series of each (event, outcome) are looked up once and
    /// kept, so the hot path allocates no label strings.
    pub fn event(&self, event: &'static str, outcome: &'static str, seconds: f64) {
        let known = self.event_series.read().unwrap_or_else(|e| e.into_inner());
        if let Some((count, duration)) = known.get(&(event, outcome)) {
            count.inc();
            duration.observe(seconds);
            return;
        }
        drop(known);
        let labels = EventLabels {
            event: event.to_owned(),
            outcome: outcome.to_owned(),
        };
        let count = self.events.get_or_create(&labels).clone();
        let name = EventNameLabel {
            event: event.to_owned(),
        };
        let duration = self.event_duration.get_or_create(&name).clone();
        count.inc();
        duration.observe(seconds);
        let mut known = self.event_series.write().unwrap_or_else(|e| e.into_inner());
        known.insert((event, outcome), (count, duration));
    }

    /// Counts one HTTP API call.
    pub fn api_call(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let labels = ApiLabels {
            route: route.to_owned(),
            method: method.to_owned(),
            status,
        };
        self.api_requests.get_or_create(&labels).inc();
        let route = RouteLabel {
            route: route.to_owned(),
        };
        self.api_duration.get_or_create(&route).observe(seconds);
    }

    /// The registry in the OpenMetrics text format, which Prometheus scrapes.
    pub fn render(&self) -> String {
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes);
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = runtime.metrics().num_alive_tasks();
            self.runtime_tasks
                .set(i64::try_from(tasks).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Resident set size from `/proc/self/statm` (Linux); `None` elsewhere.
fn resident_memory_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // 4 KiB pages: the size on every Linux this runs on (x86_64, aarch64 defaults).
    Some(pages * 4096)
}
