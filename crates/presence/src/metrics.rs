//! Metric names of presence.

/// Users going online or offline (label `status`), counted once per
/// transition in the whole cluster (by the process that made it).
pub const TRANSITIONS: &str = "roomcast_presence_transitions_total";
/// Edge leases found expired by this control plane.
pub const LEASE_EXPIRIES: &str = "roomcast_presence_lease_expiries_total";
/// Leases this edge found taken away (it had been taken for dead) and wrote
/// anew, recording its sockets again.
pub const LEASES_LOST: &str = "roomcast_presence_leases_lost_total";
/// Times this control plane opened its presence watches again: they had
/// missed lease updates (it was cut off from the store), or one ended.
pub const WATCH_RESTARTS: &str = "roomcast_presence_watch_restarts_total";
/// Sockets evicted by the per-user connection limit.
pub const EVICTIONS: &str = "roomcast_presence_evictions_total";

pub fn describe() {
    use metrics::describe_counter;
    for status in ["online", "offline"] {
        metrics::counter!(TRANSITIONS, "status" => status).absolute(0);
    }
    metrics::counter!(LEASE_EXPIRIES).absolute(0);
    metrics::counter!(LEASES_LOST).absolute(0);
    metrics::counter!(EVICTIONS).absolute(0);
    metrics::counter!(WATCH_RESTARTS).absolute(0);
    describe_counter!(TRANSITIONS, "users going online or offline, by status");
    describe_counter!(LEASE_EXPIRIES, "edge leases found expired");
    describe_counter!(
        LEASES_LOST,
        "leases this edge found taken away and wrote anew, recording its sockets again"
    );
    describe_counter!(
        WATCH_RESTARTS,
        "times the presence watches were opened again (missed lease updates, or a watch ended)"
    );
    describe_counter!(
        EVICTIONS,
        "sockets evicted by the per-user connection limit"
    );
}
