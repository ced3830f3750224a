//! The Engine.IO session: one per client connection, whatever its transport.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use roomcast_wire::engineio::{Frame, OpenPacket, Packet, PacketType};
use roomcast_wire::socketio::Assembler;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Mode, Outbox};
use crate::sio::Socket;
use crate::Edge;

/// Why a connection closed. Maps to logs, WebSocket close codes and, later,
/// metrics labels and whether a session may be recovered.
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
}

impl CloseReason {
    /// Every reason, e.g. for metrics series that exist from the start.
    pub const ALL: [CloseReason; 12] = [
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
        }
    }

    /// The WebSocket close code sent with this reason.
    pub fn ws_code(self) -> u16 {
        match self {
            CloseReason::ProtocolError => 1002,
            CloseReason::MessageTooBig => 1009,
            CloseReason::SlowConsumer | CloseReason::Flood | CloseReason::TokenExpired => 1008,
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

/// What the handshake request told us, kept for CONNECT.
#[derive(Debug, Default, Clone)]
pub(crate) struct Handshake {
    /// Token from an `Authorization: Bearer` header.
    pub bearer: Option<String>,
    pub remote: Option<std::net::SocketAddr>,
    /// Query parameters, less Engine.IO's own.
    pub query: Vec<(String, String)>,
    /// Every header with a text value (the connect hook sees them all;
    /// FetchSockets leaves out `authorization` and `cookie`).
    pub headers: Vec<(String, String)>,
    /// The connection's slot among its address's connections, released at close.
    pub slot: Option<Arc<crate::limits::Slot>>,
}

/// Socket.IO state of a session, touched by its inbound packets.
#[derive(Default)]
pub(crate) struct SioState {
    pub assembler: Assembler,
    /// Connected namespaces.
    pub sockets: HashMap<String, Arc<Socket>>,
}

pub(crate) struct Session {
    pub sid: String,
    pub outbox: Outbox,
    pub handshake: Handshake,
    pong: Notify,
    closed: AtomicBool,
    /// The WebSocket close code of the reason the session closed.
    close_code: AtomicU16,
    /// A WebSocket probe is in progress for this polling session.
    pub upgrading: AtomicBool,
    pub get_busy: AtomicBool,
    pub post_busy: AtomicBool,
    /// Engine.IO packets the client may still send (flood limit).
    pub packet_budget: crate::limits::SharedBucket,
    sio: Mutex<SioState>,
    pub cancel: CancellationToken,
    /// The connection's span (debug level): its id and peer on every log line
    /// its tasks write.
    pub span: tracing::Span,
}

impl Session {
    pub fn sio(&self) -> MutexGuard<'_, SioState> {
        // Held only for map updates; consistent across a panic.
        self.sio.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn close_code(&self) -> u16 {
        self.close_code.load(Ordering::Acquire)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Edge {
    /// Creates a session and its heartbeat task, and queues the open packet.
    pub(crate) fn open_session(&self, mode: Mode, handshake: Handshake) -> Arc<Session> {
        let cfg = &self.inner.config;
        let sid = roomcast_bus::names::new_id();
        let span = tracing::debug_span!("connection", sid = %sid, peer = ?handshake.remote);
        let session = Arc::new(Session {
            outbox: Outbox::new(mode, cfg.outbound_queue_bytes),
            sid: sid.clone(),
            handshake,
            pong: Notify::new(),
            closed: AtomicBool::new(false),
            close_code: AtomicU16::new(1000),
            upgrading: AtomicBool::new(false),
            get_busy: AtomicBool::new(false),
            post_busy: AtomicBool::new(false),
            packet_budget: crate::limits::SharedBucket::new(cfg.packets_per_sec),
            sio: Mutex::new(SioState::default()),
            cancel: self.inner.shutdown.child_token(),
            span,
        });
        let upgrades: &[&str] = match mode {
            Mode::Polling => &["websocket"],
            Mode::WebSocket => &[],
        };
        let open = OpenPacket {
            sid: &sid,
            upgrades,
            ping_interval: cfg.ping_interval.as_millis() as u64,
            ping_timeout: cfg.ping_timeout.as_millis() as u64,
            max_payload: cfg.max_payload as u64,
        };
        // A fresh queue is empty and open: this push cannot fail.
        let _ = session.outbox.push([open.frame()]);
        self.sessions().insert(sid, session.clone());
        let edge = self.clone();
        let s = session.clone();
        let span = session.span.clone();
        self.spawn(tracing::Instrument::instrument(
            async move { edge.heartbeat(s).await },
            span,
        ));
        tracing::debug!(sid = %session.sid, ?mode, remote = ?session.handshake.remote, "session opened");
        session
    }

    pub(crate) fn find_session(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions().get(sid).cloned()
    }

    /// Server pings every interval; no pong within the timeout closes the
    /// session. Also enforces the connect timeout.
    async fn heartbeat(&self, session: Arc<Session>) {
        use tokio::time::Instant;
        let cfg = &self.inner.config;
        // One timer, reset to the next thing due, and one pong waiter: this
        // task lives as long as the session, so its size is per connection.
        let mut connect_deadline = Some(Instant::now() + cfg.connect_timeout);
        let mut next_ping = Instant::now() + cfg.ping_interval;
        // While a ping waits for its pong: when it times out.
        let mut pong_deadline: Option<Instant> = None;
        let timer = tokio::time::sleep_until(next_ping);
        tokio::pin!(timer);
        let pong = session.pong.notified();
        tokio::pin!(pong);
        loop {
            let due = pong_deadline.unwrap_or(next_ping);
            timer
                .as_mut()
                .reset(connect_deadline.map_or(due, |c| c.min(due)));
            tokio::select! {
                _ = session.cancel.cancelled() => return,
                _ = pong.as_mut(), if pong_deadline.is_some() => {
                    pong_deadline = None;
                    next_ping = Instant::now() + cfg.ping_interval;
                    pong.set(session.pong.notified());
                }
                _ = timer.as_mut() => {
                    let now = Instant::now();
                    if connect_deadline.is_some_and(|d| d <= now) {
                        connect_deadline = None;
                        if session.sio().sockets.is_empty() {
                            self.close_session(&session, CloseReason::ConnectTimeout);
                            return;
                        }
                    }
                    match pong_deadline {
                        Some(d) if d <= now => {
                            self.close_session(&session, CloseReason::PingTimeout);
                            return;
                        }
                        Some(_) => {}
                        None if next_ping <= now => {
                            // Listening before the ping goes: the pong may be quick.
                            pong.as_mut().enable();
                            if let Err(e) = session.outbox.push([Frame::control(PacketType::Ping)]) {
                                if e == crate::outbox::PushError::Full {
                                    self.close_session(&session, CloseReason::SlowConsumer);
                                }
                                return;
                            }
                            pong_deadline = Some(now + cfg.ping_timeout);
                        }
                        None => {}
                    }
                }
            }
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
            tracing::info!(sid = %session.sid, limit = self.inner.config.packets_per_sec, "packet flood, closing");
            return Err(CloseReason::Flood);
        }
        match packet {
            Packet::Pong(_) => {
                session.pong.notify_waiters();
                Ok(())
            }
            Packet::Message(text) => {
                // The decoder checked UTF-8 already.
                let text = std::str::from_utf8(&text).map_err(|_| CloseReason::ProtocolError)?;
                self.on_sio_text(session, text).await
            }
            Packet::Binary(data) => self.on_sio_binary(session, data).await,
            Packet::Close => Err(CloseReason::TransportClose),
            Packet::Noop => Ok(()),
            Packet::Open | Packet::Ping(_) | Packet::Upgrade => Err(CloseReason::ProtocolError),
        }
    }

    /// Closes a session: its sockets leave every room, its queue is closed (the
    /// transport flushes what is queued, then closes), its tasks stop.
    pub(crate) fn close_session(&self, session: &Arc<Session>, reason: CloseReason) {
        if session.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        session
            .close_code
            .store(reason.ws_code(), Ordering::Release);
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
        self.sessions().remove(&session.sid);
        if let Some(slot) = &session.handshake.slot {
            slot.release();
        }
        let sockets: Vec<Arc<Socket>> = session.sio().sockets.drain().map(|(_, s)| s).collect();
        if !sockets.is_empty() {
            let edge = self.clone();
            let saved = reason.is_recoverable();
            self.spawn(async move {
                for s in sockets {
                    // Saved once it is out of the index: a client recovering
                    // it on this edge cannot meet its old self there.
                    let rooms =
                        (saved && s.pid.is_some()).then(|| edge.read_index().rooms_of(&s.id));
                    edge.remove_socket(&s).await;
                    if let Some(rooms) = rooms {
                        edge.save_for_recovery(&s, rooms).await;
                    }
                }
            });
        }
        if session.outbox.mode() == Mode::Polling
            && matches!(
                reason,
                CloseReason::ForcedClose | CloseReason::ServerShutdown
            )
        {
            // A polling client learns of the close from its next GET.
            let _ = session.outbox.push([Frame::control(PacketType::Close)]);
        }
        session.outbox.close();
        session.cancel.cancel();
    }
}
