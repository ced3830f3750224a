//! HTTP long-polling: a GET waits for queued packets, a POST carries the
//! client's packets. At most one of each is in flight per session.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::BytesMut;
use http::StatusCode;
use roomcast_wire::engineio;

use crate::http_reply::{response, EioError};
use crate::limits::Limit;
use crate::session::{CloseReason, PollingRequest, Session};
use crate::sink::TransportKind;
use crate::Edge;

/// Most packets one POST body may hold.
const MAX_PACKETS_PER_POST: usize = 1024;

/// Ends a polling request when it ends, however it ends.
struct InFlight<'a>(&'a Session, PollingRequest);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.end_request(self.1);
    }
}

fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    response(status, "text/plain; charset=UTF-8", body.into())
}

/// Claims a session's GET or POST slot: the session must still be polling, and
/// a second request of the same kind in flight closes it. `None`: refuse with 400.
fn claim<'a>(edge: &Edge, session: &'a Arc<Session>, kind: PollingRequest) -> Option<InFlight<'a>> {
    if session.outbox.transport() != TransportKind::Polling {
        return None;
    }
    if !session.begin_request(kind) {
        edge.close_session(session, CloseReason::PollingOverlap);
        return None;
    }
    Some(InFlight(session, kind))
}

pub(crate) async fn get(edge: &Edge, session: &Arc<Session>) -> Response {
    let Some(_in_flight) = claim(edge, session, PollingRequest::Get) else {
        return EioError::BadRequest.response();
    };
    if session.is_upgrading() {
        // The client pauses polling while it upgrades; release it at once.
        return noop();
    }
    let Some(batch) = session
        .outbox
        .take(TransportKind::Polling, edge.config().max_payload)
        .await
    else {
        // The session switched to WebSocket while this GET waited.
        return noop();
    };
    if batch.frames.is_empty() {
        // Closed with nothing left to say (e.g. the client sent a close packet).
        return noop();
    }
    let mut body = BytesMut::new();
    engineio::encode_payload(&batch.frames, &mut body);
    metrics::counter!(crate::metrics::BYTES_OUT).increment(body.len() as u64);
    text(StatusCode::OK, body.freeze())
}

fn noop() -> Response {
    text(StatusCode::OK, "6")
}

pub(crate) async fn post(edge: &Edge, session: &Arc<Session>, body: Body) -> Response {
    let Some(_in_flight) = claim(edge, session, PollingRequest::Post) else {
        return EioError::BadRequest.response();
    };
    let cfg = edge.config();
    let limit = cfg.max_payload;
    // A `Content-Length` over the limit is refused before any of the body is
    // read: the client learns it at once, and the edge reads nothing.
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        return too_big(edge, session);
    }
    let bytes =
        match tokio::time::timeout(cfg.request_body_timeout, axum::body::to_bytes(body, limit))
            .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => return too_big(edge, session),
            Err(_) => {
                // Trickled, or stalled: the session's transport failed.
                Limit::RequestBodyTimeout.hit();
                tracing::debug!(sid = %session.sid, "polling body timed out");
                edge.close_session(session, CloseReason::TransportError);
                return closing(text(StatusCode::REQUEST_TIMEOUT, "request body timed out"));
            }
        };
    metrics::counter!(crate::metrics::BYTES_IN).increment(bytes.len() as u64);
    let packets = match engineio::decode_payload(bytes, MAX_PACKETS_PER_POST) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(sid = %session.sid, error = %e, "invalid polling payload");
            edge.close_session(session, CloseReason::ProtocolError);
            return EioError::BadRequest.response();
        }
    };
    for packet in packets {
        let closing = packet == engineio::Packet::Close;
        if let Err(reason) = edge.on_engine_packet(session, packet).await {
            edge.close_session(session, reason);
            if closing {
                // A close packet is a clean end, not a bad request.
                return ok_response();
            }
            return EioError::BadRequest.response();
        }
    }
    ok_response()
}

/// A body over `max_payload`: the session ends, and so does the connection
/// (the rest of the body is not read).
fn too_big(edge: &Edge, session: &Arc<Session>) -> Response {
    Limit::Payload.hit();
    tracing::debug!(sid = %session.sid, "polling body over max payload");
    edge.close_session(session, CloseReason::MessageTooBig);
    closing(text(StatusCode::PAYLOAD_TOO_LARGE, "payload too large"))
}

/// `res`, after which the connection is closed: what is left of the request
/// body is never read.
fn closing(mut res: Response) -> Response {
    res.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    res
}

fn ok_response() -> Response {
    response(StatusCode::OK, "text/html", Body::from("ok"))
}
