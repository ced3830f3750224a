//! Metric names of the edge. Counters are incremented where things happen
//! (once per bus message, connection or packet, never per byte); gauges are
//! read from the live state at scrape time by the binary. No label carries a
//! room, user or socket id.

/// Sockets connected to a namespace (label `namespace`: configured names only).
pub const SOCKETS_CONNECTED: &str = "roomcast_edge_sockets_connected_total";
/// CONNECTs refused (label `cause`).
pub const CONNECTS_REFUSED: &str = "roomcast_edge_connects_refused_total";
/// Connections closed (label `reason`).
pub const DISCONNECTS: &str = "roomcast_edge_disconnects_total";
/// Commands received from the bus (label `op`: emit, join, ...).
pub const BUS_MESSAGES: &str = "roomcast_edge_bus_messages_total";
/// Connects of users' sockets the presence store did not record in time
/// (queued instead: user-addressed calls may miss them until written).
pub const PRESENCE_LATE: &str = "roomcast_edge_presence_connects_queued_total";
/// Packets queued on sockets: one per recipient of each emit.
pub const DELIVERIES: &str = "roomcast_edge_deliveries_total";
/// Message ids of multi-copy emits forgotten for the table's bounds before
/// their time (a copy that comes later may reach a socket twice).
pub const MULTIROOM_EVICTIONS: &str = "roomcast_edge_multiroom_evictions_total";
/// Client events relayed to backends.
pub const CLIENT_EVENTS: &str = "roomcast_edge_client_events_total";
/// Bytes read from clients (WebSocket payloads, polling bodies).
pub const BYTES_IN: &str = "roomcast_edge_bytes_in_total";
/// Bytes written to clients.
pub const BYTES_OUT: &str = "roomcast_edge_bytes_out_total";
/// Limits hit (label `limit`: one per kind of limit).
pub const LIMIT_HITS: &str = "roomcast_edge_limit_hits_total";
/// Seconds from an emit's publication by the control plane to its packet
/// being queued on the recipients of this edge.
pub const FANOUT_LATENCY: &str = "roomcast_fanout_latency_seconds";

/// CONNECTs that asked to recover a session (label `outcome`).
pub const RECOVERIES: &str = "roomcast_edge_recoveries_total";

/// Session record writes for recovery, by `op`: `live` (a connected
/// socket's), `closed` (kept at a recoverable close), `removed`, `taken`
/// (another edge had taken it), `failed` (ADR 18).
pub const SESSION_RECORDS: &str = "roomcast_edge_session_records_total";

/// Requests for sessions held by other edges, forwarded to them (ADR 20):
/// label `kind` (`get`, `post`, `relay`: a relayed WebSocket's, `upgrade`)
/// and `outcome` (`answered`, `owner_gone`: nobody listens on its tag,
/// `no_answer`: no answer in time).
pub const FORWARDED: &str = "roomcast_edge_forwarded_requests_total";

/// Every refusal cause, so their series exist from the start.
const CAUSES: [&str; 14] = [
    "invalid_namespace",
    "missing_token",
    "malformed_token",
    "expired_token",
    "bad_signature",
    "algorithm_not_allowed",
    "wrong_audience_or_issuer",
    "bad_claims",
    "hook_denied",
    "hook_timeout",
    "hook_unavailable",
    "hook_invalid_answer",
    "too_many_rooms",
    "admin_credentials",
];

/// The label values of the counters whose series exist from the start: each
/// list comes from the module that owns the values (close reasons from the
/// session, recovery outcomes from recovery, limits from limits), so this
/// module names metrics and imports nothing of the crate.
pub struct Labels {
    pub close_reasons: Vec<&'static str>,
    pub recovery_outcomes: Vec<&'static str>,
    pub session_record_ops: Vec<&'static str>,
    pub limits: Vec<&'static str>,
    pub forward_kinds: Vec<&'static str>,
    pub forward_outcomes: Vec<&'static str>,
}

/// Registers descriptions with the installed recorder, and zero values for
/// the counters, so that alerts and dashboards see series before the first
/// event.
pub fn describe(labels: Labels) {
    for reason in labels.close_reasons {
        metrics::counter!(DISCONNECTS, "reason" => reason).absolute(0);
    }
    for cause in CAUSES {
        metrics::counter!(CONNECTS_REFUSED, "cause" => cause).absolute(0);
    }
    for outcome in labels.recovery_outcomes {
        metrics::counter!(RECOVERIES, "outcome" => outcome).absolute(0);
    }
    for op in labels.session_record_ops {
        metrics::counter!(SESSION_RECORDS, "op" => op).absolute(0);
    }
    for limit in labels.limits {
        metrics::counter!(LIMIT_HITS, "limit" => limit).absolute(0);
    }
    for kind in &labels.forward_kinds {
        for outcome in &labels.forward_outcomes {
            metrics::counter!(FORWARDED, "kind" => *kind, "outcome" => *outcome).absolute(0);
        }
    }
    describe_counter!(
        MULTIROOM_EVICTIONS,
        "emits sent as several copies whose delivered sockets were forgotten early, for the table's bounds"
    );
    for name in [
        DELIVERIES,
        CLIENT_EVENTS,
        BYTES_IN,
        BYTES_OUT,
        MULTIROOM_EVICTIONS,
    ] {
        metrics::counter!(name).absolute(0);
    }
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(SOCKETS_CONNECTED, "sockets connected, by namespace");
    describe_counter!(CONNECTS_REFUSED, "socket.io CONNECTs refused, by cause");
    describe_counter!(DISCONNECTS, "connections closed, by reason");
    describe_counter!(
        RECOVERIES,
        "connects that asked to recover a session, by outcome"
    );
    describe_counter!(
        SESSION_RECORDS,
        "session record writes for connection state recovery, by operation"
    );
    describe_counter!(LIMIT_HITS, "limits hit by clients, by limit");
    describe_counter!(
        FORWARDED,
        "requests forwarded to the edge that holds their session, by kind and outcome"
    );
    describe_counter!(BUS_MESSAGES, "commands received from the bus, by operation");
    describe_counter!(
        PRESENCE_LATE,
        "user connects the presence store did not record before the connect was answered"
    );
    describe_counter!(DELIVERIES, "packets queued on sockets (one per recipient)");
    describe_counter!(CLIENT_EVENTS, "client events relayed to backends");
    describe_counter!(BYTES_IN, Unit::Bytes, "bytes read from clients");
    describe_counter!(BYTES_OUT, Unit::Bytes, "bytes written to clients");
    describe_histogram!(
        FANOUT_LATENCY,
        Unit::Seconds,
        "emit published by the control plane to queued on this edge's recipients"
    );
}
