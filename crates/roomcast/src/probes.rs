//! Readiness and metrics of each kind of process.

use std::sync::atomic::{AtomicBool, Ordering};
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
}

/// An edge: ready while connected to NATS (always, on the in-memory bus) and
/// not shutting down. An edge that loses NATS keeps its sockets; it only
/// stops being ready, so no new clients are sent to it meanwhile.
pub struct EdgeProbe {
    pub edge: Edge,
    pub nats: Option<NatsBus>,
    pub draining: Arc<AtomicBool>,
}

impl Probe for EdgeProbe {
    fn ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
            && self.nats.as_ref().is_none_or(NatsBus::is_connected)
    }

    fn sample(&self) {
        if let Some(nats) = &self.nats {
            sample_nats(nats);
        }
        metrics::gauge!(m::EDGE_CONNECTIONS).set(self.edge.connection_count() as f64);
        metrics::gauge!(m::EDGE_ROOM_SUBSCRIPTIONS).set(self.edge.room_subscription_count() as f64);
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
