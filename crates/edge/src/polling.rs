//! HTTP long-polling: a GET waits for queued packets, a POST carries the
//! client's packets. At most one of each is in flight per session.
//!
//! Both answer with a [`PollReply`], which the edge that owns the session
//! turns into its HTTP response, or sends back to the edge the request came
//! to (`forward`).

use std::sync::Arc;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use roomcast_wire::engineio::{self, Frame, PacketType};

use crate::http_reply::{EioError, PollReply};
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

fn text(status: StatusCode, body: impl Into<Bytes>) -> PollReply {
    PollReply::text(status, body.into())
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

pub(crate) async fn get(edge: &Edge, session: &Arc<Session>) -> PollReply {
    match get_frames(edge, session).await {
        Ok(frames) => {
            let mut body = BytesMut::new();
            engineio::encode_payload(&frames, &mut body);
            metrics::counter!(crate::metrics::BYTES_OUT).increment(body.len() as u64);
            text(StatusCode::OK, body.freeze())
        }
        Err(reply) => reply,
    }
}

/// What a GET takes from the session's queue: frames (at least one), or the
/// answer that carries none.
pub(crate) async fn get_frames(
    edge: &Edge,
    session: &Arc<Session>,
) -> Result<Vec<Frame>, PollReply> {
    let Some(_in_flight) = claim(edge, session, PollingRequest::Get) else {
        return Err(EioError::BadRequest.reply());
    };
    if session.is_upgrading() {
        // The client pauses polling while it upgrades; release it at once.
        return Err(noop());
    }
    let Some(mut batch) = session
        .outbox
        .take(TransportKind::Polling, edge.config().max_payload)
        .await
    else {
        // The session switched to WebSocket while this GET waited.
        return Err(noop());
    };
    let close = Frame::control(PacketType::Close);
    if batch.closed {
        if batch.frames.len() > 1 && batch.frames.last() == Some(&close) {
            // The close packet goes alone, in the next GET.
            batch.frames.pop();
            session.hold_close();
        } else {
            if batch.frames.is_empty() && session.take_held_close() {
                batch.frames.push(close);
            }
            // The last frames of a closed session: nothing more to find.
            edge.sessions().remove_if(session);
        }
    }
    if batch.frames.is_empty() {
        // Closed with nothing left to say (e.g. the client sent a close packet).
        return Err(noop());
    }
    Ok(batch.frames)
}

fn noop() -> PollReply {
    text(StatusCode::OK, Bytes::from_static(b"6"))
}

/// A POST body that could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Over `max_payload`.
    TooBig,
    /// Trickled, or stalled, past the body timeout.
    TimedOut,
}

impl BodyError {
    /// Why the session ends.
    pub(crate) fn close_reason(self) -> CloseReason {
        match self {
            BodyError::TooBig => CloseReason::MessageTooBig,
            BodyError::TimedOut => CloseReason::TransportError,
        }
    }

    /// Counts the limit hit, and the answer: after it the connection is
    /// closed (what is left of the body is never read).
    pub(crate) fn reply(self) -> PollReply {
        match self {
            BodyError::TooBig => {
                Limit::Payload.hit();
                text(StatusCode::PAYLOAD_TOO_LARGE, "payload too large").closing()
            }
            BodyError::TimedOut => {
                Limit::RequestBodyTimeout.hit();
                text(StatusCode::REQUEST_TIMEOUT, "request body timed out").closing()
            }
        }
    }
}

/// Reads a POST body within `max_payload` and the body timeout. A
/// `Content-Length` over the limit is refused before any of the body is
/// read: the client learns it at once, and the edge reads nothing.
pub(crate) async fn read_body(edge: &Edge, body: Body) -> Result<Bytes, BodyError> {
    let cfg = edge.config();
    let limit = cfg.max_payload;
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(BodyError::TooBig);
    }
    match tokio::time::timeout(cfg.request_body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => {
            metrics::counter!(crate::metrics::BYTES_IN).increment(b.len() as u64);
            Ok(b)
        }
        Ok(Err(_)) => Err(BodyError::TooBig),
        Err(_) => Err(BodyError::TimedOut),
    }
}

/// A POST whose body could not be read: the session's transport failed.
fn failed_body(edge: &Edge, session: &Arc<Session>, e: BodyError) -> PollReply {
    tracing::debug!(sid = %session.sid, error = ?e, "polling body refused");
    edge.close_session(session, e.close_reason());
    e.reply()
}

pub(crate) async fn post(edge: &Edge, session: &Arc<Session>, body: Body) -> PollReply {
    let Some(in_flight) = claim(edge, session, PollingRequest::Post) else {
        return EioError::BadRequest.reply();
    };
    match read_body(edge, body).await {
        Ok(bytes) => post_payload(edge, session, in_flight, bytes).await,
        Err(e) => failed_body(edge, session, e),
    }
}

/// A POST whose body was read already (by the edge it came to).
pub(crate) async fn post_bytes(edge: &Edge, session: &Arc<Session>, bytes: Bytes) -> PollReply {
    let Some(in_flight) = claim(edge, session, PollingRequest::Post) else {
        return EioError::BadRequest.reply();
    };
    post_payload(edge, session, in_flight, bytes).await
}

async fn post_payload(
    edge: &Edge,
    session: &Arc<Session>,
    _in_flight: InFlight<'_>,
    bytes: Bytes,
) -> PollReply {
    if session.is_closed() {
        // Closed, its last frames waiting for a GET: what the client still
        // sends (a pong, a close) is too late to matter.
        return PollReply::ok();
    }
    let packets = match engineio::decode_payload(bytes, MAX_PACKETS_PER_POST) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(sid = %session.sid, error = %e, "invalid polling payload");
            edge.close_session(session, CloseReason::ProtocolError);
            return EioError::BadRequest.reply();
        }
    };
    for packet in packets {
        let closing = packet == engineio::Packet::Close;
        if let Err(reason) = edge.on_engine_packet(session, packet).await {
            edge.close_session(session, reason);
            if closing {
                // A close packet is a clean end, not a bad request.
                return PollReply::ok();
            }
            return EioError::BadRequest.reply();
        }
    }
    PollReply::ok()
}
