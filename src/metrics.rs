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
pub struct OutcomeLabel {
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    /// Socket.IO sockets connected to this node now.
    pub sockets: Gauge,
    /// Connection attempts by outcome (`accepted`, `unauthorized`, `capacity`, `per_ip`, `draining`).
    pub connections: Family<OutcomeLabel, Counter>,
    /// Client events handled, by event name and reply code (`ok` or an error code).
    pub events: Family<EventLabels, Counter>,
    /// Time to handle a client event, by event name.
    pub event_duration: Family<EventNameLabel, Histogram>,
    /// Messages stored (duplicates by `clientId` excluded).
    pub messages_stored: Counter,
    /// Events refused by the per-socket rate limits.
    pub rate_limited: Family<EventNameLabel, Counter>,
    /// Typing states that expired without a `typing:stop`.
    pub typing_expired: Counter,
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
        let messages_stored = Counter::default();
        registry.register(
            "messages_stored",
            "Messages durably stored",
            messages_stored.clone(),
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
        Self {
            registry,
            sockets,
            connections,
            events,
            event_duration,
            messages_stored,
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

    pub fn event(&self, event: &str, outcome: &str, seconds: f64) {
        let labels = EventLabels {
            event: event.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.events.get_or_create(&labels).inc();
        self.event_duration
            .get_or_create(&EventNameLabel {
                event: event.to_owned(),
            })
            .observe(seconds);
    }

    /// The registry in the OpenMetrics text format, which Prometheus scrapes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
