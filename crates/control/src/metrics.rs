//! Metric names of the control plane, and the wrapper that measures every RPC.

use std::future::Future;

use tokio::time::Instant;
use tonic::{Code, Status};

/// gRPC calls (labels `method`, `code`).
pub const GRPC_REQUESTS: &str = "roomcast_grpc_requests_total";
/// gRPC call latency until the response (label `method`); for streams, until
/// the stream is open.
pub const GRPC_DURATION: &str = "roomcast_grpc_request_duration_seconds";

/// gRPC calls refused for a missing or wrong API key (before any method).
pub const GRPC_UNAUTHENTICATED: &str = "roomcast_grpc_unauthenticated_total";

/// Commands and emits for sockets and users, by route (label `via`:
/// `directory`, to the edges holding them; `broadcast`, to every edge).
pub const ROUTED: &str = "roomcast_control_routed_total";
/// Lookups of the sockets of a command's users, by where they were answered
/// (label `source`: `directory`, the watched user directory; `store`, one
/// presence read per user, when the directory could not answer in time).
pub const USER_LOOKUPS: &str = "roomcast_control_user_lookups_total";

/// At-least-once emits accepted, one per recipient.
pub const DELIVERY_ACCEPTED: &str = "roomcast_delivery_accepted_total";
/// At-least-once sends (first sends and resends) to a recipient's sockets.
pub const DELIVERY_ATTEMPTS: &str = "roomcast_delivery_attempts_total";
/// At-least-once messages finished per recipient (label `outcome`: acked,
/// expired, purged).
pub const DELIVERY_DONE: &str = "roomcast_delivery_done_total";

pub fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        DELIVERY_ACCEPTED,
        "at-least-once emits accepted, one per recipient"
    );
    describe_counter!(
        DELIVERY_ATTEMPTS,
        "at-least-once sends and resends to a recipient's sockets"
    );
    describe_counter!(
        DELIVERY_DONE,
        "at-least-once messages finished per recipient, by outcome"
    );
    metrics::counter!(DELIVERY_ACCEPTED).absolute(0);
    metrics::counter!(DELIVERY_ATTEMPTS).absolute(0);
    for outcome in ["acked", "expired", "purged"] {
        metrics::counter!(DELIVERY_DONE, "outcome" => outcome).absolute(0);
    }
    describe_counter!(
        GRPC_UNAUTHENTICATED,
        "gRPC calls refused for a missing or wrong api key"
    );
    metrics::counter!(GRPC_UNAUTHENTICATED).absolute(0);
    describe_counter!(
        ROUTED,
        "commands and emits for sockets and users, by route: directory or broadcast"
    );
    for via in ["directory", "broadcast"] {
        metrics::counter!(ROUTED, "via" => via).absolute(0);
    }
    describe_counter!(
        USER_LOOKUPS,
        "lookups of the sockets of a command's users, by source: directory or store"
    );
    for source in ["directory", "store"] {
        metrics::counter!(USER_LOOKUPS, "source" => source).absolute(0);
    }
    describe_counter!(GRPC_REQUESTS, "gRPC calls, by method and status code");
    describe_histogram!(GRPC_DURATION, Unit::Seconds, "gRPC call latency, by method");
}

fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Runs one RPC in its span (exported when tracing is on) and records its
/// outcome and latency.
pub async fn observe<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    use tracing::field::Empty;
    use tracing::Instrument;
    let start = Instant::now();
    // A SERVER span that continues the caller's trace (its `traceparent`),
    // with the status code, and an error status when the call failed.
    let span = if roomcast_bus::trace::enabled() {
        tracing::info_span!(
            "grpc",
            otel.name = method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "roomcast.v1.Roomcast",
            rpc.method = method,
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        )
    } else {
        tracing::Span::none()
    };
    roomcast_bus::trace::adopt_caller(&span);
    let result = call.instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    span.record("rpc.grpc.status_code", code as i64);
    if let Err(status) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", status.message());
    }
    metrics::counter!(GRPC_REQUESTS, "method" => method, "code" => code_label(code)).increment(1);
    metrics::histogram!(GRPC_DURATION, "method" => method).record(start.elapsed().as_secs_f64());
    result
}
