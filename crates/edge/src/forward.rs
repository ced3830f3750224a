//! Long-polling without sticky sessions (ADR 20).
//!
//! A session's sid starts with its edge's route tag. An edge that gets a
//! polling request, or a WebSocket upgrade, for a sid it does not hold and
//! whose tag is another edge's, forwards it to that tag's poll subject
//! (`rc.<cluster>.poll.<tag>`). The owner serves it with the same code as a
//! request that came to it ([`crate::polling`]), and its answer goes back as
//! the NATS reply: status, content type and body, which the edge the client
//! talks to writes as its HTTP response. Nobody listening on the tag (the
//! owner is gone) or no answer in time is answered like an unknown session,
//! and the client opens a new one.
//!
//! An upgrade that lands on another edge stays there: this edge speaks
//! WebSocket with the client and becomes the session's poller ([`relay`]). It
//! asks the owner for queued frames as a GET would, writes them to the
//! WebSocket, and hands each message the client sends to the owner. The
//! session, its sockets and their rooms stay on the owner, which keeps every
//! rule (heartbeats, limits, slow consumers, closes) as it does for polling.
//!
//! Untrusted input stays at the edge the client talks to: bodies and
//! WebSocket messages are read with the same limits before they are
//! forwarded. What comes back from another edge is checked and never panics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use fastwebsockets::upgrade::UpgradeFut;
use http::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use roomcast_bus::{Asked, Headers, Message, Subscription};
use roomcast_wire::engineio::{self, Frame, Packet, PacketType};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::http_reply::{ContentType, EioError, PollReply};
use crate::session::{close_payload, CloseReason, Session};
use crate::sink::Progress;
use crate::ws::UpgradeRefusal;
use crate::ws_read::{Message as WsMessage, MessageReader, OpCode, ReadError};
use crate::wsframe::{encode_frame, write_frames};
use crate::Edge;

const OP: &str = "rc-poll-op";
const SID: &str = "rc-poll-sid";
/// A forwarded GET's number, to cancel it when its client goes away.
const REQUEST: &str = "rc-poll-req";
/// `1` when a relayed WebSocket message is binary.
const BINARY: &str = "rc-poll-bin";
/// Why the client's transport failed ([`CloseReason::label`]).
const REASON: &str = "rc-poll-reason";
const STATUS: &str = "rc-poll-status";
const TYPE: &str = "rc-poll-type";
/// `1` when the HTTP connection closes after the answer.
const CLOSE: &str = "rc-poll-close";

/// What the edge the client talks to asks of the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A polling GET: the answer is its body.
    Get,
    /// A polling POST, with its body.
    Post,
    /// A relay's GET: the frames themselves, each as the WebSocket writes it.
    Frames,
    /// One WebSocket message of a relayed client.
    Send,
    /// The client of a forwarded GET went away: release its GET.
    Cancel,
    /// The client's transport failed at the edge it talks to.
    Fail,
    /// May a WebSocket upgrade this session?
    Check,
    /// A relayed WebSocket sent `2probe`.
    Probe,
    /// ... and `5`: it is the session's transport from now on.
    Upgraded,
    /// ... or the probe failed: the session polls on.
    Abandon,
}

impl Op {
    const ALL: [Op; 10] = [
        Op::Get,
        Op::Post,
        Op::Frames,
        Op::Send,
        Op::Cancel,
        Op::Fail,
        Op::Check,
        Op::Probe,
        Op::Upgraded,
        Op::Abandon,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Post => "post",
            Op::Frames => "frames",
            Op::Send => "send",
            Op::Cancel => "cancel",
            Op::Fail => "fail",
            Op::Check => "check",
            Op::Probe => "probe",
            Op::Upgraded => "upgraded",
            Op::Abandon => "abandon",
        }
    }

    fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == s)
    }

    /// The metrics label of the request this op serves.
    fn kind(self) -> &'static str {
        match self {
            Op::Get | Op::Cancel => "get",
            Op::Post | Op::Fail => "post",
            Op::Frames | Op::Send => "relay",
            Op::Check | Op::Probe | Op::Upgraded | Op::Abandon => "upgrade",
        }
    }
}

/// Every `kind` label of [`crate::metrics::FORWARDED`].
pub const KINDS: [&str; 4] = ["get", "post", "relay", "upgrade"];
/// Every `outcome` label of [`crate::metrics::FORWARDED`].
pub const OUTCOMES: [&str; 3] = ["answered", "owner_gone", "no_answer"];

/// The owner's side: forwarded GETs in flight (to cancel), and the
/// WebSockets this edge relays.
#[derive(Default)]
pub(crate) struct Forwarding {
    gets: Mutex<HashMap<u64, CancellationToken>>,
    next: AtomicU64,
    relayed: AtomicUsize,
}

impl Forwarding {
    /// WebSockets this edge relays to sessions on other edges.
    pub(crate) fn relayed(&self) -> usize {
        self.relayed.load(Ordering::Relaxed)
    }

    fn gets(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        self.gets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The tag of the edge that owns `sid`, when it is another edge's.
pub(crate) fn foreign_tag<'a>(edge: &Edge, sid: &'a str) -> Option<&'a str> {
    roomcast_bus::names::tag_of(sid).filter(|tag| *tag != edge.route_tag())
}

/// How long to wait for the owner: a GET is answered at the latest with the
/// next ping, and anything else much sooner.
fn patience(edge: &Edge) -> Duration {
    let cfg = edge.config();
    cfg.ping_interval + cfg.ping_timeout
}

// ---------------------------------------------------------------------------
// The edge the client talks to

/// The owner of a session, as seen from another edge.
struct Owner<'a> {
    edge: &'a Edge,
    tag: &'a str,
    sid: &'a str,
}

/// What the owner said.
enum Answer {
    Reply(Message),
    /// Nobody listens on the tag, or nobody answered in time.
    Gone,
}

impl Owner<'_> {
    fn headers(&self, op: Op) -> Headers {
        let mut h = Headers::new();
        h.append(OP, op.name());
        h.append(SID, self.sid);
        h
    }

    async fn ask(&self, op: Op, mut headers: Headers, body: Bytes) -> Answer {
        if headers.is_empty() {
            headers = self.headers(op);
        }
        let subject = self.edge.subjects().poll(self.tag);
        let asked = self
            .edge
            .bus()
            .ask(&subject, headers, body, patience(self.edge))
            .await;
        let (answer, outcome) = match asked {
            Ok(Asked::Reply(msg)) => (Answer::Reply(msg), "answered"),
            Ok(Asked::NoResponders) => (Answer::Gone, "owner_gone"),
            Ok(Asked::Silent) => (Answer::Gone, "no_answer"),
            Err(e) => {
                tracing::debug!(sid = self.sid, error = %e, "forwarding failed");
                (Answer::Gone, "no_answer")
            }
        };
        metrics::counter!(crate::metrics::FORWARDED, "kind" => op.kind(), "outcome" => outcome)
            .increment(1);
        answer
    }

    /// Asks and reads the answer as an HTTP answer; a gone owner is an
    /// unknown session.
    async fn reply(&self, op: Op, headers: Headers, body: Bytes) -> PollReply {
        match self.ask(op, headers, body).await {
            Answer::Reply(msg) => parse_reply(&msg).unwrap_or_else(|| {
                tracing::debug!(sid = self.sid, "unreadable answer from the owner");
                EioError::UnknownSid.reply()
            }),
            Answer::Gone => EioError::UnknownSid.reply(),
        }
    }

    /// Tells the owner something that needs no answer.
    fn tell(&self, op: Op, headers: Headers) {
        let edge = self.edge.clone();
        let subject = edge.subjects().poll(self.tag);
        tokio::spawn(async move {
            if let Err(e) = edge
                .bus()
                .publish(&subject, headers, Bytes::new(), None)
                .await
            {
                tracing::debug!(error = %e, op = op.name(), "forwarding failed");
            }
        });
    }

    fn fail(&self, reason: CloseReason) {
        let mut h = self.headers(Op::Fail);
        h.append(REASON, reason.label());
        self.tell(Op::Fail, h);
    }
}

/// Serves a polling request for a session of the edge tagged `tag`.
pub(crate) async fn poll(
    edge: &Edge,
    tag: &str,
    sid: &str,
    method: &Method,
    body: Body,
) -> PollReply {
    let owner = Owner { edge, tag, sid };
    match *method {
        Method::GET => {
            let id = edge.inner.forwarding.next.fetch_add(1, Ordering::Relaxed);
            let mut h = owner.headers(Op::Get);
            h.append(REQUEST, id.to_string());
            // If the client goes away first, the owner releases the GET: the
            // client's next one must not find this one still in flight.
            let mut pending = PendingGet {
                owner: &owner,
                id,
                done: false,
            };
            let reply = owner.reply(Op::Get, h, Bytes::new()).await;
            pending.done = true;
            reply
        }
        Method::POST => match crate::polling::read_body(edge, body).await {
            Ok(bytes) => owner.reply(Op::Post, Headers::new(), bytes).await,
            Err(e) => {
                owner.fail(e.close_reason());
                e.reply()
            }
        },
        _ => EioError::BadRequest.reply(),
    }
}

struct PendingGet<'a> {
    owner: &'a Owner<'a>,
    id: u64,
    done: bool,
}

impl Drop for PendingGet<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut h = self.owner.headers(Op::Cancel);
            h.append(REQUEST, self.id.to_string());
            self.owner.tell(Op::Cancel, h);
        }
    }
}

/// Whether a WebSocket may upgrade the session of the edge tagged `tag`:
/// `Ok` to accept it, or the refusal, or the HTTP answer (unknown session).
pub(crate) async fn check_upgrade(
    edge: &Edge,
    tag: &str,
    sid: &str,
) -> Result<Result<(), UpgradeRefusal>, PollReply> {
    let owner = Owner { edge, tag, sid };
    let reply = owner.reply(Op::Check, Headers::new(), Bytes::new()).await;
    match reply.status {
        StatusCode::OK => Ok(Ok(())),
        StatusCode::CONFLICT => Ok(Err(UpgradeRefusal::from_reason(&reply.body))),
        _ => Err(reply),
    }
}

fn parse_reply(msg: &Message) -> Option<PollReply> {
    let status = StatusCode::from_u16(msg.headers.get(STATUS)?.parse().ok()?).ok()?;
    let content_type = ContentType::from_code(msg.headers.get(TYPE)?)?;
    Some(PollReply {
        status,
        content_type,
        body: msg.payload.clone(),
        close: msg.headers.get(CLOSE) == Some("1"),
    })
}

// ---------------------------------------------------------------------------
// The relay: a WebSocket here, its session on another edge

/// Counts a relayed WebSocket while it lives.
struct Relayed<'a>(&'a Forwarding);

impl Drop for Relayed<'_> {
    fn drop(&mut self) {
        self.0.relayed.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves a WebSocket that upgrades a session of the edge tagged `tag`.
pub(crate) async fn relay(edge: Edge, fut: UpgradeFut, tag: String, sid: String) {
    let upgraded = match fut.await {
        Ok(ws) => ws.into_inner().into_inner(),
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    let forwarding = &edge.inner.forwarding;
    forwarding.relayed.fetch_add(1, Ordering::Relaxed);
    let _relayed = Relayed(forwarding);
    let (r, w) = tokio::io::split(TokioIo::new(upgraded));
    let cfg = edge.config();
    let mut reader = MessageReader::new(r, cfg.max_payload, cfg.ws_pings_per_sec);
    let writer = tokio::sync::Mutex::new(w);
    let owner = Owner {
        edge: &edge,
        tag: &tag,
        sid: &sid,
    };
    let end = relay_session(&owner, &mut reader, &writer).await;
    tracing::debug!(sid, reason = end.label(), "relayed websocket closed");
    let mut w = writer.into_inner();
    let close = async {
        if let Some(code) = end.close_code {
            let payload = close_payload(code, end.reason);
            w.write_all(&encode_frame(OpCode::Close, &payload)).await?;
        }
        w.flush().await?;
        w.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
    // Read what the client still sends for a moment: a reset could destroy
    // the last frames before the client reads them.
    let linger = async {
        while reader
            .next(&mut |_: OpCode, _: &[u8]| async { Ok::<(), ()>(()) })
            .await
            .is_ok()
        {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}

/// How a relayed WebSocket ended, and the close frame it gets.
struct RelayEnd {
    /// `None`: no close frame (the client is gone, or closed first and got
    /// its echo).
    close_code: Option<u16>,
    reason: &'static str,
}

impl RelayEnd {
    fn label(&self) -> &'static str {
        self.reason
    }

    fn normal() -> RelayEnd {
        RelayEnd {
            close_code: Some(1000),
            reason: "",
        }
    }

    fn silent() -> RelayEnd {
        RelayEnd {
            close_code: None,
            reason: "",
        }
    }
}

type Writer = tokio::sync::Mutex<tokio::io::WriteHalf<TokioIo<hyper::upgrade::Upgraded>>>;

async fn write_control(w: &Writer, opcode: OpCode, payload: &[u8]) -> std::io::Result<()> {
    let mut w = w.lock().await;
    w.write_all(&encode_frame(opcode, payload)).await?;
    w.flush().await
}

async fn relay_session<R: tokio::io::AsyncRead + Unpin + Send>(
    owner: &Owner<'_>,
    reader: &mut MessageReader<R>,
    writer: &Writer,
) -> RelayEnd {
    let edge = owner.edge;
    let mut send = |opcode: OpCode, payload: &[u8]| {
        let frame = encode_frame(opcode, payload);
        async move {
            let mut w = writer.lock().await;
            w.write_all(&frame).await?;
            w.flush().await
        }
    };
    // The probe: `2probe` → `3probe`, then `5`.
    let probed = tokio::time::timeout(edge.config().upgrade_timeout, async {
        match reader.next(&mut send).await {
            Ok(WsMessage::Text(t)) if t == "2probe" => {}
            Ok(_) => return Err(failed_read(None)),
            Err(e) => return Err(failed_read(Some(e))),
        }
        let reply = owner.reply(Op::Probe, Headers::new(), Bytes::new()).await;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::CONFLICT => {
                return Err(RelayEnd {
                    close_code: Some(1008),
                    reason: UpgradeRefusal::from_reason(&reply.body).reason(),
                })
            }
            _ => return Err(RelayEnd::normal()),
        }
        if write_control(writer, OpCode::Text, b"3probe")
            .await
            .is_err()
        {
            owner.tell(Op::Abandon, owner.headers(Op::Abandon));
            return Err(RelayEnd::silent());
        }
        match reader.next(&mut send).await {
            Ok(WsMessage::Text(t)) if t == "5" => Ok(()),
            other => {
                owner.tell(Op::Abandon, owner.headers(Op::Abandon));
                Err(failed_read(other.err()))
            }
        }
    })
    .await;
    match probed {
        Ok(Ok(())) => {}
        Ok(Err(end)) => return end,
        Err(_) => {
            owner.tell(Op::Abandon, owner.headers(Op::Abandon));
            return RelayEnd::normal();
        }
    }
    if !matches!(
        owner.ask(Op::Upgraded, Headers::new(), Bytes::new()).await,
        Answer::Reply(_)
    ) {
        return RelayEnd::normal();
    }
    tracing::debug!(sid = owner.sid, "upgraded to a relayed websocket");
    let down = async {
        loop {
            let reply = match owner.ask(Op::Frames, Headers::new(), Bytes::new()).await {
                Answer::Reply(msg) => msg,
                Answer::Gone => return RelayEnd::normal(),
            };
            if reply.headers.get(STATUS) != Some("200") {
                return RelayEnd::normal();
            }
            let Some(frames) = decode_frames(reply.payload) else {
                tracing::debug!(sid = owner.sid, "unreadable frames from the owner");
                owner.fail(CloseReason::TransportError);
                return RelayEnd::normal();
            };
            let bytes: usize = frames.iter().map(Frame::len).sum();
            let mut w = writer.lock().await;
            if write_frames(&mut *w, &frames, Progress::default())
                .await
                .is_err()
            {
                owner.fail(CloseReason::TransportError);
                return RelayEnd::silent();
            }
            metrics::counter!(crate::metrics::BYTES_OUT).increment(bytes as u64);
        }
    };
    let up = async {
        loop {
            let (payload, binary) = match reader.next(&mut send).await {
                Ok(WsMessage::Text(t)) => (t, false),
                Ok(WsMessage::Binary(b)) => (b, true),
                Ok(WsMessage::Close) => {
                    owner.fail(CloseReason::TransportClose);
                    return RelayEnd::silent();
                }
                Err(e) => {
                    // The owner closes the session for this reason (and
                    // counts a payload over the limit); the client gets the
                    // close frame here.
                    let reason = crate::ws::close_reason(e);
                    owner.fail(reason);
                    return RelayEnd {
                        close_code: e.close_code(),
                        reason: reason.ws_reason(),
                    };
                }
            };
            metrics::counter!(crate::metrics::BYTES_IN).increment(payload.len() as u64);
            let mut h = owner.headers(Op::Send);
            if binary {
                h.append(BINARY, "1");
            }
            match owner.ask(Op::Send, h, payload).await {
                Answer::Reply(msg) if msg.headers.get(STATUS) == Some("200") => {}
                _ => return RelayEnd::normal(),
            }
        }
    };
    let shutdown = edge.shutdown_token().cancelled();
    tokio::select! {
        end = down => end,
        end = up => end,
        _ = shutdown => {
            owner.fail(CloseReason::TransportClose);
            RelayEnd { close_code: Some(1001), reason: CloseReason::ServerShutdown.ws_reason() }
        }
    }
}

/// The close frame after a read error during the probe (or an unexpected
/// message: `None`); the session polls on.
fn failed_read(e: Option<ReadError>) -> RelayEnd {
    match e {
        None => RelayEnd {
            close_code: Some(1002),
            reason: CloseReason::ProtocolError.ws_reason(),
        },
        Some(e) => {
            if e == ReadError::TooBig {
                crate::limits::Limit::Payload.hit();
            }
            RelayEnd {
                close_code: e.close_code(),
                reason: crate::ws::close_reason(e).ws_reason(),
            }
        }
    }
}

/// Frames as the owner sends them to a relay: each a kind byte (`t` or
/// `b`), a big-endian u32 length, and the bytes.
fn encode_frames(frames: &[Frame]) -> Bytes {
    let mut out = BytesMut::with_capacity(frames.iter().map(|f| f.len() + 5).sum());
    for frame in frames {
        let (kind, data) = match frame {
            Frame::Text(b) => (b't', b),
            Frame::Binary(b) => (b'b', b),
        };
        out.put_u8(kind);
        out.put_u32(data.len() as u32);
        out.put_slice(data);
    }
    out.freeze()
}

/// Reverses [`encode_frames`]; `None` for bytes it cannot produce.
fn decode_frames(mut bytes: Bytes) -> Option<Vec<Frame>> {
    let mut frames = Vec::new();
    while bytes.has_remaining() {
        if bytes.remaining() < 5 {
            return None;
        }
        let kind = bytes.get_u8();
        let len = bytes.get_u32() as usize;
        if bytes.remaining() < len {
            return None;
        }
        let data = bytes.split_to(len);
        frames.push(match kind {
            b't' if std::str::from_utf8(&data).is_ok() => Frame::Text(data),
            b'b' => Frame::Binary(data),
            _ => return None,
        });
    }
    Some(frames)
}

// ---------------------------------------------------------------------------
// The owner

/// Serves forwarded requests for this edge's sessions until the edge stops.
pub(crate) async fn serve(edge: Edge, mut sub: Subscription) {
    loop {
        let msg = tokio::select! {
            msg = sub.next() => msg,
            _ = edge.shutdown_token().cancelled() => None,
        };
        let Some(msg) = msg else { return };
        let serving = edge.clone();
        edge.spawn(async move { serve_one(serving, msg).await });
    }
}

async fn serve_one(edge: Edge, msg: Message) {
    let Some(op) = msg.headers.get(OP).and_then(Op::parse) else {
        return;
    };
    let sid = msg.headers.get(SID).unwrap_or_default().to_owned();
    let reply = match op {
        Op::Cancel => {
            if let Some(id) = request_id(&msg) {
                if let Some(token) = edge.inner.forwarding.gets().remove(&id) {
                    token.cancel();
                }
            }
            return;
        }
        Op::Fail => {
            if let Some(session) = edge.find_session(&sid) {
                let reason = msg
                    .headers
                    .get(REASON)
                    .and_then(|r| CloseReason::ALL.into_iter().find(|c| c.label() == r))
                    .unwrap_or(CloseReason::TransportError);
                edge.close_session(&session, reason);
            }
            return;
        }
        _ => match edge.find_session(&sid) {
            None => Some(EioError::UnknownSid.reply()),
            // A closed session is found only to answer its last GET.
            Some(session)
                if session.is_closed()
                    && !matches!(op, Op::Get | Op::Post | Op::Frames | Op::Send) =>
            {
                Some(EioError::UnknownSid.reply())
            }
            Some(session) => serve_op(&edge, &session, op, &msg).await,
        },
    };
    // `None`: cancelled, nobody waits for an answer.
    let (Some(reply), Some(to)) = (reply, msg.reply.as_deref()) else {
        return;
    };
    let mut h = Headers::new();
    h.append(STATUS, reply.status.as_u16().to_string());
    h.append(TYPE, reply.content_type.code());
    if reply.close {
        h.append(CLOSE, "1");
    }
    if let Err(e) = edge.bus().publish(to, h, reply.body, None).await {
        // Frames taken for this answer are lost with it: the session ends,
        // and its client reconnects (and recovers, in a recovery room).
        tracing::warn!(%sid, error = %e, "answer to a forwarded request not sent");
        if let Some(session) = edge.find_session(&sid) {
            edge.close_session(&session, CloseReason::TransportError);
        }
    }
}

fn request_id(msg: &Message) -> Option<u64> {
    msg.headers.get(REQUEST)?.parse().ok()
}

async fn serve_op(edge: &Edge, session: &Arc<Session>, op: Op, msg: &Message) -> Option<PollReply> {
    Some(match op {
        Op::Get | Op::Post | Op::Frames | Op::Send => {
            // A request after the pong deadline finds the session closed.
            if !session.is_closed() && edge.check_heartbeat_now(session).is_err() {
                return Some(EioError::UnknownSid.reply());
            }
            match op {
                Op::Get => {
                    let get = crate::polling::get(edge, session);
                    return cancellable(edge, request_id(msg), get).await;
                }
                Op::Frames => match crate::polling::get_frames(edge, session).await {
                    Ok(frames) => PollReply::text(StatusCode::OK, encode_frames(&frames)),
                    Err(reply) if reply.status == StatusCode::OK => {
                        // A noop, or nothing: the relay asks again.
                        PollReply::text(StatusCode::OK, Bytes::new())
                    }
                    Err(reply) => reply,
                },
                Op::Post => crate::polling::post_bytes(edge, session, msg.payload.clone()).await,
                _ => relayed_message(edge, session, msg).await,
            }
        }
        Op::Check => match UpgradeRefusal::of(session) {
            Some(refused) => conflict(refused),
            None => PollReply::ok(),
        },
        Op::Probe => {
            if let Some(refused) = UpgradeRefusal::of(session) {
                return Some(conflict(refused));
            }
            if !session.begin_upgrade() {
                return Some(conflict(UpgradeRefusal::UpgradeInProgress));
            }
            // Release a GET the client is waiting on, so it can finish the
            // upgrade.
            let _ = session.outbox.push(&[Frame::control(PacketType::Noop)]);
            PollReply::ok()
        }
        Op::Upgraded => {
            session.set_relayed();
            session.end_upgrade();
            PollReply::ok()
        }
        Op::Abandon => {
            session.end_upgrade();
            PollReply::ok()
        }
        Op::Cancel | Op::Fail => return None,
    })
}

/// A refused upgrade, as the owner tells the edge the WebSocket came to.
fn conflict(refused: UpgradeRefusal) -> PollReply {
    PollReply::text(
        StatusCode::CONFLICT,
        Bytes::from_static(refused.reason().as_bytes()),
    )
}

/// One message of a relayed WebSocket, handled as the owner's own reader
/// would.
async fn relayed_message(edge: &Edge, session: &Arc<Session>, msg: &Message) -> PollReply {
    let packet = if msg.headers.get(BINARY) == Some("1") {
        Ok(Packet::Binary(msg.payload.clone()))
    } else {
        engineio::decode_text(msg.payload.clone())
    };
    let packet = match packet {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(sid = %session.sid, error = %e, "invalid relayed packet");
            edge.close_session(session, CloseReason::ProtocolError);
            return EioError::BadRequest.reply();
        }
    };
    match edge.on_engine_packet(session, packet).await {
        Ok(()) => PollReply::ok(),
        Err(reason) => {
            edge.close_session(session, reason);
            EioError::BadRequest.reply()
        }
    }
}

/// Runs a forwarded GET until it is answered or its client goes away.
async fn cancellable(
    edge: &Edge,
    id: Option<u64>,
    get: impl std::future::Future<Output = PollReply>,
) -> Option<PollReply> {
    let Some(id) = id else {
        return Some(get.await);
    };
    let token = CancellationToken::new();
    edge.inner.forwarding.gets().insert(id, token.clone());
    let reply = tokio::select! {
        reply = get => Some(reply),
        _ = token.cancelled() => None,
    };
    edge.inner.forwarding.gets().remove(&id);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_the_trip_between_edges() {
        let frames = vec![
            Frame::Text(Bytes::from_static(b"42[\"a\"]")),
            Frame::Binary(Bytes::from_static(&[0, 1, 2, 0x1e])),
            Frame::Text(Bytes::new()),
        ];
        assert_eq!(decode_frames(encode_frames(&frames)), Some(frames));
        assert_eq!(decode_frames(Bytes::new()), Some(vec![]));
    }

    #[test]
    fn bad_frames_from_another_edge_are_refused() {
        for bad in [
            &b"t"[..],
            b"t\0\0\0\x05abc",
            b"x\0\0\0\x01a",
            b"t\0\0\0\x01\xff",
            b"t\xff\xff\xff\xffa",
        ] {
            assert_eq!(decode_frames(Bytes::copy_from_slice(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn ops_parse_back() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.name()), Some(op));
            assert!(KINDS.contains(&op.kind()));
        }
        assert_eq!(Op::parse("GET"), None);
    }
}
