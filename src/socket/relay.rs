//! What crosses the backplane besides the emit itself: a publish timestamp and the trace context.
//!
//! The publisher adds `"{unix micros} {traceparent}"` to each message; the receiver measures the
//! delivery lag and opens a span that is a child of the publisher's, recording how many local
//! sockets the message reaches.

use std::sync::Arc;

use socketioxide_core::adapter::remote_packet::{RequestIn, RequestTypeIn};
use tracing::field;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::backplane::SocketIo;
use crate::backplane::driver::{ContextProvider, ContextSink};
use crate::metrics::Metrics;
use crate::telemetry;

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The context sent with every backplane message.
pub fn outgoing(metrics: Arc<Metrics>) -> ContextProvider {
    Arc::new(move || {
        metrics.backplane_published.inc();
        let sent = now_micros();
        Some(match telemetry::current_traceparent() {
            Some(traceparent) => format!("{sent} {traceparent}"),
            None => sent.to_string(),
        })
    })
}

/// Observes every backplane message that arrives, before the adapter delivers it.
pub fn incoming(io: SocketIo, metrics: Arc<Metrics>, node_id: String) -> ContextSink {
    Arc::new(move |channel, context, payload| {
        metrics.backplane_received.inc();
        tracing::debug!(channel, context, "backplane message received");
        let mut parts = context.splitn(2, ' ');
        if let Some(sent) = parts.next().and_then(|s| s.parse::<i64>().ok()) {
            let lag = (now_micros() - sent).max(0) as f64 / 1e6;
            metrics.backplane_lag.observe(lag);
        }
        let span = tracing::info_span!(
            "backplane.receive",
            otel.kind = "consumer",
            channel,
            node = %node_id,
            request = field::Empty,
            sockets_reached = field::Empty,
        );
        if let Some(traceparent) = parts.next() {
            let _ = span.set_parent(telemetry::remote_context(traceparent));
        }
        if span.is_disabled() {
            return;
        }
        let _entered = span.enter();
        let Ok(request) = rmp_serde::from_slice::<RequestIn>(payload) else {
            return;
        };
        let kind = match &request.r#type {
            RequestTypeIn::Broadcast(_) => "broadcast",
            RequestTypeIn::BroadcastWithAck(_) => "broadcast_with_ack",
            RequestTypeIn::AddSockets(_) => "add_sockets",
            RequestTypeIn::DelSockets(_) => "del_sockets",
            _ => "other",
        };
        span.record("request", kind);
        if let (RequestTypeIn::Broadcast(_), Some(opts)) = (&request.r#type, &request.opts) {
            let rooms: Vec<_> = opts.rooms.iter().cloned().collect();
            let except: Vec<_> = opts.except.iter().cloned().collect();
            let reached = io.local().to(rooms).except(except).sockets().len();
            span.record("sockets_reached", reached);
        }
    })
}
