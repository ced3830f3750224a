//! The Engine.IO session: one per client connection, whatever its transport.
//!
//! The session owns what Engine.IO is about: the sid, the outbound queue, the
//! heartbeat (server pings, pong deadlines, the connect timeout), the flood
//! budget, the upgrade and polling flags, and why it closed. What its packets
//! carry belongs to the layer above, reached through [`EngineHandler`]:
//! message and binary packets go to it decoded, it learns of the close, and
//! it keeps its own per-connection state in the session
//! ([`EngineSession::upper`]), which the engine neither reads nor changes. The
//! Socket.IO layer (`sio`) is that handler; the engine does not know it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use roomcast_wire::engineio::{Frame, OpenPacket, Packet, PacketType};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::outbox::Outbox;
use crate::sink::TransportKind;
use crate::Edge;

/// The layer above Engine.IO: what a session hands its decoded packets to
/// (socketioxide's `EngineIoHandler`). Called on the task that read the
/// packet; an error closes the session with that reason.
pub(crate) trait EngineHandler {
    /// The layer's own state of one connection, created with the session.
    type Connection: Default + Send + Sync + 'static;

    /// A message packet's text (valid UTF-8).
    fn on_message(
        &self,
        session: &Arc<EngineSession<Self::Connection>>,
        text: &str,
    ) -> impl Future<Output = Result<(), CloseReason>> + Send;

    /// A binary packet's bytes.
    fn on_binary(
        &self,
        session: &Arc<EngineSession<Self::Connection>>,
        data: Bytes,
    ) -> impl Future<Output = Result<(), CloseReason>> + Send;

    /// The session has closed (once, whatever closed it): the layer lets go
    /// of what it holds for the connection. Must not block.
    fn on_close(&self, session: &EngineSession<Self::Connection>, reason: CloseReason);

    /// Whether the connection has done what the connect timeout waits for
    /// (connected a Socket.IO namespace).
    fn is_connected(&self, session: &EngineSession<Self::Connection>) -> bool;
}

/// The edge's sessions: Engine.IO carrying the edge's Socket.IO layer.
pub(crate) type Session = EngineSession<<Edge as EngineHandler>::Connection>;

/// Bounds of the ping sweep's period (a tenth of the shortest of the ping
/// interval, ping timeout and connect timeout).
const SWEEP_MIN: std::time::Duration = std::time::Duration::from_millis(10);
const SWEEP_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a connection closed. Maps to logs, WebSocket close codes, metrics
/// labels and whether a session may be recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the transport (WebSocket close, EOF, close packet).
    TransportClose,
    /// The transport failed (I/O error, invalid frame).
    TransportError,
    /// No pong within the ping timeout.
    PingTimeout,
    /// The client sent something the protocol forbids.
    ProtocolError,
    /// A message over the size limit.
    MessageTooBig,
    /// No namespace connected within the connect timeout.
    ConnectTimeout,
    /// The outbound queue exceeded its bound.
    SlowConsumer,
    /// Two long-polling requests of one kind overlapped.
    PollingOverlap,
    /// The server is shutting down.
    ServerShutdown,
    /// A backend asked for the connection to be closed.
    ForcedClose,
    /// The client sent packets or WebSocket pings faster than allowed.
    Flood,
    /// The JWT a socket connected with expired (when the edge checks).
    TokenExpired,
    /// The user opened more connections than the cluster allows: this one,
    /// their oldest, was evicted.
    Evicted,
}

impl CloseReason {
    /// Every reason, e.g. for metrics series that exist from the start.
    pub const ALL: [CloseReason; 13] = [
        CloseReason::TransportClose,
        CloseReason::TransportError,
        CloseReason::PingTimeout,
        CloseReason::ProtocolError,
        CloseReason::MessageTooBig,
        CloseReason::ConnectTimeout,
        CloseReason::SlowConsumer,
        CloseReason::PollingOverlap,
        CloseReason::ServerShutdown,
        CloseReason::ForcedClose,
        CloseReason::Flood,
        CloseReason::TokenExpired,
        CloseReason::Evicted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::ConnectTimeout => "connect timeout",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::PollingOverlap => "polling overlap",
            CloseReason::ServerShutdown => "server shutting down",
            CloseReason::ForcedClose => "forced close",
            CloseReason::Flood => "flood",
            CloseReason::TokenExpired => "token expired",
            CloseReason::Evicted => "evicted",
        }
    }

    /// The metrics label of this reason.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport_close",
            CloseReason::TransportError => "transport_error",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::PollingOverlap => "polling_overlap",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::ForcedClose => "forced_close",
            CloseReason::Flood => "flood",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::Evicted => "evicted",
        }
    }

    /// The reason text of the WebSocket close frame sent with this reason:
    /// the metrics label, with what the client can do about it where that
    /// helps. At most 123 bytes (RFC 6455 5.5.1).
    pub fn ws_reason(self) -> &'static str {
        match self {
            CloseReason::Evicted => "evicted: too many connections for this user",
            other => other.label(),
        }
    }

    /// The payload of the WebSocket close frame sent with this reason: the
    /// code, then the reason text.
    pub fn ws_close_payload(self) -> Vec<u8> {
        close_payload(self.ws_code(), self.ws_reason())
    }

    fn from_index(i: u8) -> CloseReason {
        CloseReason::ALL
            .get(usize::from(i))
            .copied()
            .unwrap_or(CloseReason::TransportClose)
    }

    fn index(self) -> u8 {
        // ALL lists every variant: the position is always found.
        CloseReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0) as u8
    }

    /// The WebSocket close code sent with this reason.
    pub fn ws_code(self) -> u16 {
        match self {
            CloseReason::ProtocolError => 1002,
            CloseReason::MessageTooBig => 1009,
            CloseReason::SlowConsumer
            | CloseReason::Flood
            | CloseReason::TokenExpired
            | CloseReason::Evicted => 1008,
            CloseReason::ServerShutdown => 1001,
            _ => 1000,
        }
    }

    /// Whether Socket.IO connection state recovery would keep the session.
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            CloseReason::TransportClose
                | CloseReason::TransportError
                | CloseReason::PingTimeout
                | CloseReason::ServerShutdown
                | CloseReason::ForcedClose
        )
    }
}

/// A close frame's payload: the code, then as much of the reason as fits the
/// 123 bytes a control frame leaves it, cut on a character boundary.
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// Longest reason a close frame can carry (125 bytes less the code's 2).
const MAX_CLOSE_REASON: usize = 123;

/// What the handshake request told us, kept for CONNECT.
#[derive(Debug, Default, Clone)]
pub(crate) struct Handshake {
    /// Token from an `Authorization: Bearer` header.
    pub bearer: Option<String>,
    pub remote: Option<std::net::SocketAddr>,
    /// Query parameters, less Engine.IO's own.
    pub query: Pairs,
    /// Every header with a text value (the connect hook sees them all;
    /// FetchSockets leaves out `authorization` and `cookie`).
    pub headers: Pairs,
    /// The connection's slot among its address's connections, released at close.
    pub slot: Option<Arc<crate::limits::Slot>>,
}

/// Name/value pairs in one allocation: a session keeps its handshake's
/// headers and query for as long as it lives, and a string per name and per
/// value made that a dozen allocations (about a kilobyte) per connection.
///
/// The allocation holds the number of pairs, where each name and each value
/// ends in the text (little-endian `u32`s), then the text: each name followed
/// by its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pairs(Box<[u8]>);

impl Pairs {
    fn word(&self, i: usize) -> usize {
        self.0
            .get(i * 4..i * 4 + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let count = self.word(0);
        let base = 4 + count * 8;
        // Built from `&str`s: the text is UTF-8 and every end falls between
        // characters.
        let text = self
            .0
            .get(base..)
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or_default();
        let mut start = 0;
        (0..count).map(move |i| {
            let (name_end, value_end) = (self.word(1 + 2 * i), self.word(2 + 2 * i));
            let name = text.get(start..name_end).unwrap_or_default();
            let value = text.get(name_end..value_end).unwrap_or_default();
            start = value_end;
            (name, value)
        })
    }

    /// Owned copies, less the pairs whose name is in `except`.
    pub fn to_vec(&self, except: &[&str]) -> Vec<(String, String)> {
        self.iter()
            .filter(|(name, _)| !except.contains(name))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Pairs {
    /// Pairs past 4 GiB of text in all are left out (request heads are
    /// bounded far below that).
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut text = String::new();
        let mut ends: Vec<u32> = Vec::new();
        for (name, value) in pairs {
            let (Ok(name_end), Ok(value_end)) = (
                u32::try_from(text.len() + name.len()),
                u32::try_from(text.len() + name.len() + value.len()),
            ) else {
                break;
            };
            text.push_str(name);
            text.push_str(value);
            ends.extend([name_end, value_end]);
        }
        if ends.is_empty() {
            return Self::default();
        }
        let count = u32::try_from(ends.len() / 2).unwrap_or(u32::MAX);
        let mut bytes = Vec::with_capacity(4 + ends.len() * 4 + text.len());
        bytes.extend_from_slice(&count.to_le_bytes());
        for end in ends {
            bytes.extend_from_slice(&end.to_le_bytes());
        }
        bytes.extend_from_slice(text.as_bytes());
        Self(bytes.into_boxed_slice())
    }
}

/// A session's heartbeat: Engine.IO's server pings, and the connect timeout.
struct Heartbeat {
    /// Until a namespace is connected: when the session gives up waiting.
    connect_by: Option<Instant>,
    /// When the next ping is due (while no ping waits for its pong).
    next_ping: Instant,
    /// While a ping waits for its pong: when it times out.
    pong_by: Option<Instant>,
}

/// One Engine.IO connection, whatever its transport; `C` is the state the
/// layer above keeps for it.
pub(crate) struct EngineSession<C> {
    pub sid: String,
    pub outbox: Outbox,
    pub handshake: Handshake,
    /// Where the session's heartbeat stands: the edge's ping sweep moves it.
    heartbeat: Mutex<Heartbeat>,
    closed: AtomicBool,
    /// Why the session closed (an index into [`CloseReason::ALL`]), for the
    /// close frame.
    close_reason: AtomicU8,
    /// A WebSocket probe is in progress for this polling session.
    upgrading: AtomicBool,
    /// The client upgraded to a WebSocket on another edge, which polls for
    /// it (ADR 20).
    relayed: AtomicBool,
    /// A closed polling session's close packet waits for the next GET: like
    /// the reference server, it never shares a response with the packets
    /// before it (socket.io-client handles a close at once, and the packets
    /// before it a tick later).
    close_pending: AtomicBool,
    /// A long-polling GET, and a POST, in flight.
    get_busy: AtomicBool,
    post_busy: AtomicBool,
    /// Engine.IO packets the client may still send (flood limit).
    pub packet_budget: crate::limits::SharedBucket,
    /// The layer above's state of this connection ([`EngineHandler::Connection`]).
    pub upper: C,
    /// Wakes what waits for the session's end ([`Session::ended`]). A
    /// `Notify` in the session rather than a cancellation token of the
    /// edge's: the token would be an allocation of its own per session.
    end: Notify,
    /// The connection's span (debug level): its id and peer on every log line
    /// its tasks write.
    pub span: tracing::Span,
}

/// One of the two requests a long-polling client has in flight at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollingRequest {
    Get,
    Post,
}

impl<C> EngineSession<C> {
    /// Whether a WebSocket probe is taking this polling session over.
    pub fn is_upgrading(&self) -> bool {
        self.upgrading.load(Ordering::Acquire)
    }

    /// Marks a WebSocket probe begun; `false` if another one is in progress.
    pub fn begin_upgrade(&self) -> bool {
        self.upgrading
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The transport the client uses: a polling session whose client
    /// upgraded on another edge is on a WebSocket.
    pub fn transport_name(&self) -> &'static str {
        if self.is_relayed() {
            TransportKind::WebSocket.name()
        } else {
            self.outbox.transport().name()
        }
    }

    /// Holds a closed session's close packet back for the next GET.
    pub fn hold_close(&self) {
        self.close_pending.store(true, Ordering::Release);
    }

    /// The close packet held back, once.
    pub fn take_held_close(&self) -> bool {
        self.close_pending.swap(false, Ordering::AcqRel)
    }

    /// Whether the client upgraded to a WebSocket on another edge.
    pub fn is_relayed(&self) -> bool {
        self.relayed.load(Ordering::Acquire)
    }

    /// The client upgraded to a WebSocket on another edge.
    pub fn set_relayed(&self) {
        self.relayed.store(true, Ordering::Release);
    }

    /// The probe is over, whichever way it ended.
    pub fn end_upgrade(&self) {
        self.upgrading.store(false, Ordering::Release);
    }

    /// Marks a polling request of this kind in flight; `false` if one
    /// already is.
    pub fn begin_request(&self, kind: PollingRequest) -> bool {
        !self.request_flag(kind).swap(true, Ordering::AcqRel)
    }

    /// The polling request of this kind is over.
    pub fn end_request(&self, kind: PollingRequest) {
        self.request_flag(kind).store(false, Ordering::Release);
    }

    fn request_flag(&self, kind: PollingRequest) -> &AtomicBool {
        match kind {
            PollingRequest::Get => &self.get_busy,
            PollingRequest::Post => &self.post_busy,
        }
    }

    fn heartbeat(&self) -> MutexGuard<'_, Heartbeat> {
        // Plain field updates: consistent across a panic.
        self.heartbeat
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Why the session closed ([`CloseReason::TransportClose`] while open).
    pub fn close_reason(&self) -> CloseReason {
        CloseReason::from_index(self.close_reason.load(Ordering::Acquire))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once the session is closed.
    pub async fn ended(&self) {
        loop {
            // Registered before the check: a close between the two still
            // wakes this wait (`notify_waiters` reaches every `Notified`
            // created before it).
            let notified = self.end.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl Edge {
    /// Creates a session (the ping sweep looks after its heartbeat) and queues
    /// the open packet.
    pub(crate) fn open_session(
        &self,
        transport: TransportKind,
        handshake: Handshake,
    ) -> Arc<Session> {
        let cfg = self.config();
        // The sid carries this edge's route tag: any edge can tell where a
        // polling request for it goes (ADR 20).
        let sid = roomcast_bus::names::new_socket_id(self.route_tag());
        let span = tracing::debug_span!("connection", sid = %sid, peer = ?handshake.remote);
        let session = Arc::new(Session {
            outbox: Outbox::new(transport, cfg.outbound_queue_bytes),
            sid: sid.clone(),
            handshake,
            heartbeat: Mutex::new(Heartbeat {
                connect_by: Some(Instant::now() + cfg.connect_timeout),
                next_ping: Instant::now() + cfg.ping_interval,
                pong_by: None,
            }),
            closed: AtomicBool::new(false),
            close_reason: AtomicU8::new(CloseReason::TransportClose.index()),
            upgrading: AtomicBool::new(false),
            relayed: AtomicBool::new(false),
            close_pending: AtomicBool::new(false),
            get_busy: AtomicBool::new(false),
            post_busy: AtomicBool::new(false),
            packet_budget: crate::limits::SharedBucket::new(cfg.packets_per_sec),
            upper: Default::default(),
            end: Notify::new(),
            span,
        });
        let open = OpenPacket {
            sid: &sid,
            upgrades: transport.upgrades(),
            ping_interval: cfg.ping_interval.as_millis() as u64,
            ping_timeout: cfg.ping_timeout.as_millis() as u64,
            max_payload: cfg.max_payload as u64,
        };
        // A fresh queue is empty and open: this push cannot fail.
        let _ = session.outbox.push(&[open.frame()]);
        self.sessions().insert(sid, session.clone());
        tracing::debug!(sid = %session.sid, transport = transport.name(), remote = ?session.handshake.remote, "session opened");
        // The edge's shutdown closes the sessions in the map after it is
        // cancelled: a session that went in after that is closed here.
        if self.shutdown_token().is_cancelled() {
            self.close_session(&session, CloseReason::ServerShutdown);
        }
        session
    }

    pub(crate) fn find_session(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions().get(sid)
    }

    /// Server pings every interval and no pong within the timeout closes the
    /// session; a session with no namespace connected within the connect
    /// timeout closes too. One task per edge sweeps every session a few times
    /// per shortest interval, so an idle session carries no task or timer of
    /// its own; pings and connect timeouts are late by at most one sweep
    /// period. A pong's deadline is counted from when its ping was due, and
    /// the sweep keeps the deadlines that fall before its next tick aside to
    /// wake for them on time: a silent client is closed at ping interval +
    /// ping timeout, not a sweep or two later. Only sessions whose pong is
    /// overdue land there, so the extra wakes cost what the dead clients do.
    pub(crate) async fn ping_sweep(&self) {
        let cfg = self.config();
        let period = (cfg
            .ping_interval
            .min(cfg.ping_timeout)
            .min(cfg.connect_timeout)
            / 10)
            .clamp(SWEEP_MIN, SWEEP_MAX);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Pong deadlines before the next tick, latest first.
        let mut soon: Vec<(Instant, Arc<Session>)> = Vec::new();
        loop {
            let wake = soon
                .last()
                .map_or_else(|| Instant::now() + SWEEP_MAX, |(d, _)| *d);
            tokio::select! {
                _ = self.shutdown_token().cancelled() => return,
                _ = ticks.tick() => {
                    soon.clear();
                    // Out of the map's lock first: the checks take each session's own.
                    let sessions: Vec<Arc<Session>> = self.sessions().all();
                    let now = Instant::now();
                    let horizon = now + period;
                    for session in sessions {
                        match self.check_heartbeat(&session, now) {
                            Err(reason) => self.close_session(&session, reason),
                            Ok(Some(deadline)) if deadline < horizon => soon.push((deadline, session)),
                            Ok(_) => {}
                        }
                    }
                    soon.sort_unstable_by_key(|(d, _)| std::cmp::Reverse(*d));
                }
                _ = tokio::time::sleep_until(wake), if !soon.is_empty() => {
                    let now = Instant::now();
                    while let Some((_, session)) = soon.pop_if(|(d, _)| *d <= now) {
                        if let Err(reason) = self.check_heartbeat(&session, now) {
                            self.close_session(&session, reason);
                        }
                    }
                }
            }
        }
    }

    /// Moves a session's heartbeat on to now when a request of its client
    /// arrives: a long-polling request that comes after the pong deadline
    /// finds the session closed, whatever the sweep's timing.
    pub(crate) fn check_heartbeat_now(&self, session: &Arc<Session>) -> Result<(), CloseReason> {
        self.check_heartbeat(session, Instant::now())
            .map(|_| ())
            .inspect_err(|reason| {
                self.close_session(session, *reason);
            })
    }

    /// Moves one session's heartbeat on to `now`: sends the ping that is due,
    /// or says why the session must close. Returns the pong deadline the
    /// session waits for, if any.
    fn check_heartbeat(
        &self,
        session: &Session,
        now: Instant,
    ) -> Result<Option<Instant>, CloseReason> {
        let cfg = self.config();
        let mut heartbeat = session.heartbeat();
        if heartbeat.connect_by.is_some_and(|d| d <= now) {
            heartbeat.connect_by = None;
            if !self.is_connected(session) {
                return Err(CloseReason::ConnectTimeout);
            }
        }
        match heartbeat.pong_by {
            Some(d) if d <= now => Err(CloseReason::PingTimeout),
            Some(d) => Ok(Some(d)),
            None if heartbeat.next_ping <= now => {
                match session.outbox.push(&[Frame::control(PacketType::Ping)]) {
                    Ok(()) => {
                        // From when the ping was due, as a timer of its own
                        // would have sent it; a sweep held up for long (a
                        // stalled runtime) still leaves the client half the
                        // timeout.
                        let due = heartbeat.next_ping + cfg.ping_timeout;
                        let pong_by = due.max(now + cfg.ping_timeout / 2);
                        heartbeat.pong_by = Some(pong_by);
                        Ok(Some(pong_by))
                    }
                    Err(crate::outbox::PushError::Full) => Err(CloseReason::SlowConsumer),
                    // Closing already.
                    Err(crate::outbox::PushError::Closed) => Ok(None),
                }
            }
            None => Ok(None),
        }
    }

    /// Handles one Engine.IO packet from the client (after the handshake and
    /// outside the upgrade probe). An error closes the session.
    pub(crate) async fn on_engine_packet(
        &self,
        session: &Arc<Session>,
        packet: Packet,
    ) -> Result<(), CloseReason> {
        if !session.packet_budget.take() {
            crate::limits::Limit::PacketRate.hit();
            tracing::info!(sid = %session.sid, limit = self.config().packets_per_sec, "packet flood, closing");
            return Err(CloseReason::Flood);
        }
        match packet {
            Packet::Pong(_) => {
                let mut heartbeat = session.heartbeat();
                let now = Instant::now();
                match heartbeat.pong_by {
                    // Too late: the session timed out, whether or not the
                    // sweep has closed it yet.
                    Some(d) if d <= now => Err(CloseReason::PingTimeout),
                    Some(_) => {
                        heartbeat.pong_by = None;
                        heartbeat.next_ping = now + self.config().ping_interval;
                        Ok(())
                    }
                    // A pong nobody waits for changes nothing.
                    None => Ok(()),
                }
            }
            Packet::Message(text) => {
                // The decoder checked UTF-8 already.
                let text = std::str::from_utf8(&text).map_err(|_| CloseReason::ProtocolError)?;
                self.on_message(session, text).await
            }
            Packet::Binary(data) => self.on_binary(session, data).await,
            Packet::Close => Err(CloseReason::TransportClose),
            Packet::Noop => Ok(()),
            Packet::Open | Packet::Ping(_) | Packet::Upgrade => Err(CloseReason::ProtocolError),
        }
    }

    /// Closes a session: the layer above lets go of the connection (its
    /// sockets leave every room), its queue is closed (the transport flushes
    /// what is queued, then closes), its tasks stop.
    pub(crate) fn close_session(&self, session: &Arc<Session>, reason: CloseReason) {
        if session.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        session
            .close_reason
            .store(reason.index(), Ordering::Release);
        tracing::debug!(sid = %session.sid, reason = reason.as_str(), "session closed");
        let limit = match reason {
            CloseReason::SlowConsumer => Some(crate::limits::Limit::OutboundQueue),
            CloseReason::MessageTooBig => Some(crate::limits::Limit::Payload),
            _ => None,
        };
        if let Some(limit) = limit {
            limit.hit();
            tracing::info!(sid = %session.sid, limit = limit.label(), "limit hit, connection closed");
        }
        metrics::counter!(crate::metrics::DISCONNECTS, "reason" => reason.label()).increment(1);
        if let Some(slot) = &session.handshake.slot {
            slot.release();
        }
        self.on_close(session, reason);
        // A polling client learns of a close the server chose from its next
        // GET: what was queued, then a close packet. The session stays
        // findable (closed) until a GET takes them, or for a ping timeout at
        // most. A close for the client's fault or its transport's ends the
        // session at once.
        let told = session.outbox.transport() == TransportKind::Polling
            && matches!(
                reason,
                CloseReason::ForcedClose
                    | CloseReason::ServerShutdown
                    | CloseReason::Evicted
                    | CloseReason::PingTimeout
            );
        if told {
            let _ = session.outbox.push(&[Frame::control(PacketType::Close)]);
        }
        session.outbox.close();
        if told {
            let (table, closed, linger) =
                (self.clone(), session.clone(), self.config().ping_timeout);
            tokio::spawn(async move {
                tokio::time::sleep(linger).await;
                table.sessions().remove_if(&closed);
            });
        } else {
            self.sessions().remove_if(session);
        }
        session.end.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::Pairs;

    #[test]
    fn pairs_keep_every_name_and_value_as_given() {
        let given = [
            ("host", "127.0.0.1:3000"),
            ("", "empty name"),
            ("empty-value", ""),
            ("x-weird", "a\0b=c&d"),
            ("naïve", "значение"),
            ("host", "again"),
        ];
        let pairs: Pairs = given.iter().copied().collect();
        assert_eq!(pairs.iter().collect::<Vec<_>>(), given);
        assert_eq!(
            pairs.to_vec(&["host", ""]),
            vec![
                ("empty-value".to_owned(), String::new()),
                ("x-weird".to_owned(), "a\0b=c&d".to_owned()),
                ("naïve".to_owned(), "значение".to_owned()),
            ]
        );
        let none: Pairs = std::iter::empty().collect();
        assert_eq!(none.iter().count(), 0);
        assert_eq!(none, Pairs::default());
    }
}
