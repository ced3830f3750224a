//! Readiness and metrics of each kind of process.

use std::sync::Arc;

use roomcast_bus::nats::NatsBus;
use roomcast_control::{EdgeDirectory, LiveEdges};
use roomcast_edge::Edge;

use crate::admin::Probe;
use crate::metrics as m;

fn sample_nats(nats: &NatsBus) {
    metrics::gauge!(m::NATS_CONNECTED).set(f64::from(u8::from(nats.is_connected())));
    metrics::counter!(m::NATS_RECONNECTS).absolute(nats.reconnects());
    metrics::counter!(m::NATS_DISCONNECTS).absolute(nats.disconnects());
    metrics::counter!(m::NATS_DROPPED).absolute(nats.dropped());
    metrics::counter!(m::NATS_SLOW_CONSUMER_EVENTS).absolute(nats.slow_consumer_events());
}

/// An edge: ready while connected to NATS (always, on the in-memory bus) and
/// not shutting down. An edge that loses NATS keeps its sockets; it only
/// stops being ready, so no new clients are sent to it meanwhile.
pub struct EdgeProbe {
    pub edge: Edge,
    pub nats: Option<NatsBus>,
}

impl Probe for EdgeProbe {
    fn ready(&self) -> bool {
        !self.edge.is_draining() && self.nats.as_ref().is_none_or(NatsBus::is_connected)
    }

    fn sample(&self) {
        if let Some(nats) = &self.nats {
            sample_nats(nats);
        }
        let g = self.edge.gauges();
        let total = g.websocket_connections + g.polling_connections;
        metrics::gauge!(m::EDGE_CONNECTIONS).set(total as f64);
        metrics::gauge!(m::EDGE_CONNECTIONS_BY_TRANSPORT, "transport" => "websocket")
            .set(g.websocket_connections as f64);
        metrics::gauge!(m::EDGE_CONNECTIONS_BY_TRANSPORT, "transport" => "polling")
            .set(g.polling_connections as f64);
        // The configured namespaces: the only values of the `namespace` label.
        for ns in &self.edge.config().namespaces {
            let n = g
                .sockets_by_namespace
                .iter()
                .find(|(name, _)| name == ns)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!(m::EDGE_SOCKETS, "namespace" => ns.clone()).set(n as f64);
        }
        metrics::gauge!(m::EDGE_OUTBOUND_QUEUE_BYTES).set(g.queued_bytes as f64);
        metrics::gauge!(m::EDGE_ROOM_SUBSCRIPTIONS).set(g.room_subscriptions as f64);
        metrics::gauge!(m::EDGE_SESSION_RECORDS_QUEUED).set(g.session_records_queued as f64);
        metrics::gauge!(m::EDGE_RELAYED_WEBSOCKETS).set(g.relayed_websockets as f64);
    }
}

/// A control plane: ready while connected to NATS.
pub struct ControlProbe {
    pub nats: NatsBus,
    pub edges: Arc<LiveEdges>,
}

impl Probe for ControlProbe {
    fn ready(&self) -> bool {
        self.nats.is_connected()
    }

    fn sample(&self) {
        sample_nats(&self.nats);
        metrics::gauge!(m::CONTROL_LIVE_EDGES).set(self.edges.live().len() as f64);
    }
}
