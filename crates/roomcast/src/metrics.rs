//! Metric names of the `roomcast` processes, and the Prometheus recorder.
//!
//! Every value here is read from the live state when `/metrics` is scraped
//! (gauges set, counters set to their running totals), so nothing on the hot
//! path pays for them. Documented in `docs/metrics.md`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds: from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// 1 while the process is connected to a NATS server.
pub const NATS_CONNECTED: &str = "roomcast_nats_connected";
/// NATS connections re-established after a loss.
pub const NATS_RECONNECTS: &str = "roomcast_nats_reconnects_total";
/// NATS connections lost.
pub const NATS_DISCONNECTS: &str = "roomcast_nats_disconnects_total";
/// Messages a slow bus subscriber lost.
pub const NATS_DROPPED: &str = "roomcast_nats_dropped_messages_total";
/// Slow-consumer events reported by the NATS client (part of the dropped).
pub const NATS_SLOW_CONSUMER_EVENTS: &str = "roomcast_nats_slow_consumer_events_total";
/// Engine.IO connections open on an edge.
pub const EDGE_CONNECTIONS: &str = "roomcast_edge_connections";
/// Engine.IO connections by transport (label `transport`).
pub const EDGE_CONNECTIONS_BY_TRANSPORT: &str = "roomcast_edge_connections_by_transport";
/// Socket.IO sockets by namespace (label `namespace`).
pub const EDGE_SOCKETS: &str = "roomcast_edge_sockets";
/// Bytes waiting in the outbound queues of every connection.
pub const EDGE_OUTBOUND_QUEUE_BYTES: &str = "roomcast_edge_outbound_queue_bytes";
/// Room subjects an edge subscribes to (rooms with a local member).
pub const EDGE_ROOM_SUBSCRIPTIONS: &str = "roomcast_edge_room_subscriptions";
/// Edges a control plane believes alive.
pub const CONTROL_LIVE_EDGES: &str = "roomcast_control_live_edges";
/// 1 while the process reports ready.
pub const READY: &str = "roomcast_ready";

/// Installs the global recorder; the handle renders the exposition text.
pub fn install(role: crate::config::Role) -> anyhow::Result<PrometheusHandle> {
    // Latencies are histograms (not summaries), so dashboards can aggregate
    // them over every process.
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| anyhow::anyhow!("invalid histogram buckets: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    describe();
    use crate::config::Role;
    if role != Role::Control {
        roomcast_edge::metrics::describe();
    }
    if role != Role::Edge {
        roomcast_control::metrics::describe();
    }
    roomcast_presence::metrics::describe();
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
    describe_counter!(
        NATS_SLOW_CONSUMER_EVENTS,
        "slow-consumer events reported by the nats client"
    );
    describe_gauge!(EDGE_CONNECTIONS, "Engine.IO connections open on this edge");
    describe_gauge!(
        EDGE_CONNECTIONS_BY_TRANSPORT,
        "Engine.IO connections open on this edge, by transport"
    );
    describe_gauge!(EDGE_SOCKETS, "socket.io sockets on this edge, by namespace");
    describe_gauge!(
        EDGE_OUTBOUND_QUEUE_BYTES,
        metrics::Unit::Bytes,
        "bytes waiting in this edge's outbound queues"
    );
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
