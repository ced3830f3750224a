//! Metric names of the `roomcast` processes, and the Prometheus recorder.
//!
//! Every value here is read from the live state when `/metrics` is scraped
//! (gauges set, counters set to their running totals), so nothing on the hot
//! path pays for them. Documented in `docs/metrics.md`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// 1 while the process is connected to a NATS server.
pub const NATS_CONNECTED: &str = "roomcast_nats_connected";
/// NATS connections re-established after a loss.
pub const NATS_RECONNECTS: &str = "roomcast_nats_reconnects_total";
/// NATS connections lost.
pub const NATS_DISCONNECTS: &str = "roomcast_nats_disconnects_total";
/// Messages a slow bus subscriber lost.
pub const NATS_DROPPED: &str = "roomcast_nats_dropped_messages_total";
/// Engine.IO connections open on an edge.
pub const EDGE_CONNECTIONS: &str = "roomcast_edge_connections";
/// Room subjects an edge subscribes to (rooms with a local member).
pub const EDGE_ROOM_SUBSCRIPTIONS: &str = "roomcast_edge_room_subscriptions";
/// Edges a control plane believes alive.
pub const CONTROL_LIVE_EDGES: &str = "roomcast_control_live_edges";
/// 1 while the process reports ready.
pub const READY: &str = "roomcast_ready";

/// Installs the global recorder; the handle renders the exposition text.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(NATS_CONNECTED, "1 while connected to a NATS server");
    describe_counter!(
        NATS_RECONNECTS,
        "NATS connections re-established after a loss"
    );
    describe_counter!(NATS_DISCONNECTS, "NATS connections lost");
    describe_counter!(NATS_DROPPED, "bus messages lost by a slow subscriber");
    describe_gauge!(EDGE_CONNECTIONS, "Engine.IO connections open on this edge");
    describe_gauge!(
        EDGE_ROOM_SUBSCRIPTIONS,
        "room subjects this edge subscribes to"
    );
    describe_gauge!(
        CONTROL_LIVE_EDGES,
        "edges this control plane believes alive"
    );
    describe_gauge!(READY, "1 while the process reports ready");
}
