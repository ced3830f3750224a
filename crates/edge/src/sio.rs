//! Socket.IO on top of an Engine.IO session: namespaces, CONNECT with auth,
//! client events relayed to backends over the bus, acks, and the sockets'
//! outbound packets.
//!
//! The edge is the session layer's [`EngineHandler`]: a session hands it
//! message and binary packets, and tells it of the close. What Socket.IO keeps
//! of a connection (the attachments being assembled, the connected
//! namespaces' sockets) is its own [`Connection`], which the session carries
//! for it without looking inside.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use roomcast_bus::envelope::{self, ClientEvent};
use roomcast_wire::engineio::Frame;
use roomcast_wire::socketio::{self, Assembler, Message, PacketKind};
use serde_json::Value;

use crate::outbox::{Path, PushError};
use crate::session::{CloseReason, EngineHandler, EngineSession, Session};
use crate::Edge;

/// Why a socket left its namespace, in Socket.IO's words.
pub(crate) const CLIENT_DISCONNECT: &str = "client namespace disconnect";
pub(crate) const SERVER_DISCONNECT: &str = "server namespace disconnect";

/// Socket.IO's state of one connection, touched by its inbound packets, its
/// CONNECTs and DISCONNECTs, and its close.
#[derive(Default)]
pub(crate) struct Connection(Mutex<SioState>);

/// What [`Connection`] guards.
#[derive(Default)]
pub(crate) struct SioState {
    /// A binary packet waiting for its attachments.
    pub assembler: Assembler,
    /// Connected namespaces.
    pub sockets: Namespaces,
}

impl EngineSession<Connection> {
    /// The connection's Socket.IO state.
    pub fn sio(&self) -> MutexGuard<'_, SioState> {
        // Held only for map updates; consistent across a panic.
        self.upper.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A session's sockets, one per connected namespace. A session has one or a
/// few: a list, where a map would allocate room for several on the first.
#[derive(Default)]
pub(crate) struct Namespaces(Vec<Arc<Socket>>);

impl Namespaces {
    pub fn get(&self, ns: &str) -> Option<&Arc<Socket>> {
        self.0.iter().find(|s| s.ns == ns)
    }

    pub fn contains_key(&self, ns: &str) -> bool {
        self.get(ns).is_some()
    }

    /// Adds a socket, replacing one of the same namespace.
    pub fn insert(&mut self, socket: Arc<Socket>) {
        self.remove(&socket.ns);
        self.0.push(socket);
    }

    pub fn remove(&mut self, ns: &str) -> Option<Arc<Socket>> {
        let at = self.0.iter().position(|s| s.ns == ns)?;
        Some(self.0.swap_remove(at))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Arc<Socket>> + '_ {
        self.0.drain(..)
    }
}

impl EngineHandler for Edge {
    type Connection = Connection;

    fn on_message(
        &self,
        session: &Arc<Session>,
        text: &str,
    ) -> impl Future<Output = Result<(), CloseReason>> + Send {
        self.on_sio_text(session, text)
    }

    fn on_binary(
        &self,
        session: &Arc<Session>,
        data: Bytes,
    ) -> impl Future<Output = Result<(), CloseReason>> + Send {
        self.on_sio_binary(session, data)
    }

    /// The connection's sockets leave their rooms, are announced gone, and
    /// are saved for recovery when the reason allows it; on a task of the
    /// edge's, since the close may come from anywhere.
    fn on_close(&self, session: &Session, reason: CloseReason) {
        let sockets: Vec<Arc<Socket>> = session.sio().sockets.drain().collect();
        if sockets.is_empty() {
            return;
        }
        let edge = self.clone();
        let saved = reason.is_recoverable();
        self.spawn(async move {
            for s in sockets {
                // Its session record keeps it, with the rooms it was in,
                // for the recovery window; or goes.
                edge.remove_socket_as(&s, saved).await;
                edge.announce_disconnect(&s, reason.as_str()).await;
            }
        });
    }

    fn is_connected(&self, session: &Session) -> bool {
        !session.sio().sockets.is_empty()
    }
}

/// A Socket.IO socket: one namespace of one connection.
pub(crate) struct Socket {
    pub id: String,
    pub ns: String,
    pub user: String,
    /// Unix time in milliseconds when the socket connected to its namespace.
    pub connected_at_ms: i64,
    /// Application data from the connect hook (JSON), empty when none.
    pub data_json: String,
    pub session: Arc<Session>,
    /// The private id by which the client may recover this socket (only when
    /// connection state recovery is on).
    pub pid: Option<String>,
    /// Holds live packets back while a recovered socket's missed ones are
    /// replayed.
    pub gate: ReplayGate,
    /// The revision of this socket's last session record write (0: none
    /// yet), see [`crate::session_records`].
    pub record_revision: AtomicU64,
}

/// While closed, what is sent to a socket waits here, with its history
/// sequence (0: none), instead of going to the outbox. Open on every socket
/// but one being recovered; the open check is one atomic load.
///
/// Once open, a packet whose sequence the replay already covered is still
/// dropped: a fan-out that picked the socket before the gate opened may send
/// after it (the replay read the history between the two).
#[derive(Default)]
pub(crate) struct ReplayGate {
    closed: AtomicBool,
    /// The last history sequence the replay covered (0: no replay).
    upto: AtomicU64,
    held: Mutex<Vec<(u64, envelope::Packet, bool)>>,
}

impl ReplayGate {
    pub fn closed() -> Self {
        Self {
            closed: AtomicBool::new(true),
            upto: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
        }
    }

    /// Whether a packet of history sequence `seq` (0: none) is one a replay
    /// up to `upto` already sent.
    fn replayed(&self, seq: u64, upto: u64) -> bool {
        seq != 0 && seq <= upto
    }

    fn held(&self) -> MutexGuard<'_, Vec<(u64, envelope::Packet, bool)>> {
        // Held for a push or a drain only; consistent across a panic.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Socket {
    /// Queues an encoded packet; the buffers are shared, not copied. `seq` is
    /// the packet's history sequence, 0 when it has none.
    pub fn send(
        &self,
        packet: &envelope::Packet,
        volatile: bool,
        seq: u64,
        path: Path,
    ) -> Result<(), PushError> {
        if self.gate.closed.load(Ordering::Acquire) {
            let mut held = self.gate.held();
            // Checked again under the lock: `open` may have just drained it.
            if self.gate.closed.load(Ordering::Acquire) {
                held.push((seq, packet.clone(), volatile));
                return Ok(());
            }
        }
        if self
            .gate
            .replayed(seq, self.gate.upto.load(Ordering::Acquire))
        {
            return Ok(());
        }
        self.push(packet, volatile, path)
    }

    fn push(&self, packet: &envelope::Packet, volatile: bool, path: Path) -> Result<(), PushError> {
        let text = [Frame::Text(packet.text.clone())];
        let with_attachments: Vec<Frame>;
        let frames: &[Frame] = if packet.attachments.is_empty() {
            &text
        } else {
            with_attachments = text
                .into_iter()
                .chain(packet.attachments.iter().cloned().map(Frame::Binary))
                .collect();
            &with_attachments
        };
        let outbox = &self.session.outbox;
        if volatile {
            // A volatile packet the socket has no room for is simply not sent.
            outbox.push_volatile(frames, path);
            return Ok(());
        }
        outbox.push_by(frames, path)
    }

    /// Queues a replayed packet, ahead of anything the gate holds.
    pub fn push_replayed(&self, packet: &envelope::Packet) -> Result<(), PushError> {
        self.push(packet, false, Path::Direct)
    }

    /// Opens the gate: what it held goes to the outbox in order, except
    /// packets of the history up to `upto` (the replay had those).
    pub fn open_gate(&self, upto: u64) -> Result<(), PushError> {
        let mut held = self.gate.held();
        // Before the gate opens: whoever sees it open sees this too.
        self.gate.upto.store(upto, Ordering::Release);
        let mut result = Ok(());
        for (seq, packet, volatile) in held.drain(..) {
            if self.gate.replayed(seq, upto) {
                continue;
            }
            if result.is_ok() {
                result = self.push(&packet, volatile, Path::Direct);
            }
        }
        self.gate.closed.store(false, Ordering::Release);
        result
    }
}

impl Edge {
    pub(crate) async fn on_sio_text(
        &self,
        session: &Arc<Session>,
        text: &str,
    ) -> Result<(), CloseReason> {
        let max = self.config().max_attachments;
        let decoded = session.sio().assembler.on_text(text, max);
        self.on_decoded(session, decoded).await
    }

    pub(crate) async fn on_sio_binary(
        &self,
        session: &Arc<Session>,
        data: Bytes,
    ) -> Result<(), CloseReason> {
        let decoded = {
            let mut sio = session.sio();
            let r = sio.assembler.on_binary(data);
            if sio.assembler.pending_bytes() > self.config().max_payload {
                return Err(CloseReason::MessageTooBig);
            }
            r
        };
        self.on_decoded(session, decoded).await
    }

    /// Dispatches a complete packet; waits for pending attachments; closes on
    /// a packet the protocol forbids.
    async fn on_decoded(
        &self,
        session: &Arc<Session>,
        decoded: Result<Option<Message>, socketio::DecodeError>,
    ) -> Result<(), CloseReason> {
        match decoded {
            Ok(Some(msg)) => self.dispatch(session, msg).await,
            Ok(None) => Ok(()),
            Err(e) => {
                if let socketio::DecodeError::TooManyAttachments(..) = e {
                    crate::limits::Limit::Attachments.hit();
                    tracing::info!(sid = %session.sid, error = %e, "limit hit, closing");
                } else {
                    tracing::debug!(sid = %session.sid, error = %e, "invalid socket.io packet");
                }
                Err(CloseReason::ProtocolError)
            }
        }
    }

    async fn dispatch(&self, session: &Arc<Session>, msg: Message) -> Result<(), CloseReason> {
        let Message {
            packet,
            attachments,
        } = msg;
        if packet.kind == PacketKind::Connect {
            return self
                .connect(session, &packet.nsp, packet.data.as_ref())
                .await;
        }
        let socket = session.sio().sockets.get(&packet.nsp).cloned();
        let Some(socket) = socket else {
            // A packet for a namespace that is not connected.
            tracing::debug!(sid = %session.sid, nsp = %packet.nsp, "packet for unconnected namespace");
            return Err(CloseReason::ProtocolError);
        };
        match packet.kind {
            PacketKind::Disconnect => {
                session.sio().sockets.remove(&packet.nsp);
                self.remove_socket(&socket).await;
                self.announce_disconnect(&socket, CLIENT_DISCONNECT).await;
                Ok(())
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                let (event, args_json) = packet.event().ok_or(CloseReason::ProtocolError)?;
                if event.len() > roomcast_bus::names::MAX_NAME_LEN {
                    // Event names become bus subjects, whose length NATS bounds.
                    crate::limits::Limit::EventName.hit();
                    tracing::info!(sid = %session.sid, len = event.len(), "event name too long, closing");
                    return Err(CloseReason::ProtocolError);
                }
                if self.config().is_admin_namespace(&socket.ns) {
                    self.admin_event(&event, &args_json).await;
                    return Ok(());
                }
                self.relay_event(&socket, event, args_json, attachments, packet.id)
                    .await;
                Ok(())
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let args = packet.ack_args().ok_or(CloseReason::ProtocolError)?;
                self.on_client_ack(&socket, packet.id, args, attachments)
                    .await;
                Ok(())
            }
            PacketKind::Connect | PacketKind::ConnectError => Err(CloseReason::ProtocolError),
        }
    }

    async fn connect(
        &self,
        session: &Arc<Session>,
        nsp: &str,
        auth: Option<&Value>,
    ) -> Result<(), CloseReason> {
        if session.sio().sockets.contains_key(nsp) {
            tracing::debug!(sid = %session.sid, nsp, "duplicate connect");
            return Err(CloseReason::ProtocolError);
        }
        let refuse = |message: &str| {
            let packet = socketio::encode_connect_error(nsp, message);
            match session.outbox.push(&[Frame::Text(packet)]) {
                Err(PushError::Full) => Err(CloseReason::SlowConsumer),
                _ => Ok(()),
            }
        };
        let refused = |cause: &'static str| {
            metrics::counter!(crate::metrics::CONNECTS_REFUSED, "cause" => cause).increment(1);
        };
        if !self.config().has_namespace(nsp) {
            refused("invalid_namespace");
            return refuse("Invalid namespace");
        }
        if self.config().is_admin_namespace(nsp) {
            return self.admin_connect(session, nsp, auth).await;
        }
        let (identity, data_json) = if let Some(hook) = self.hook() {
            match hook
                .authorize(self.authorize_request(session, nsp, auth))
                .await
            {
                Ok(granted) => (granted.identity, granted.data_json),
                Err(e) => {
                    tracing::info!(sid = %session.sid, nsp, error = %e, source = ?std::error::Error::source(&e), "connect refused by the hook");
                    refused(e.label());
                    return refuse(&e.to_string());
                }
            }
        } else {
            let token = match auth.and_then(|a| a.get("token")) {
                Some(Value::String(t)) => Some(t.as_str()),
                Some(_) => {
                    refused("malformed_token");
                    return refuse("invalid token: token must be a string");
                }
                None => session.handshake.bearer.as_deref(),
            };
            match self.authenticator().authenticate(token) {
                Ok(identity) => (identity, String::new()),
                Err(e) => {
                    tracing::debug!(sid = %session.sid, nsp, error = %e, "connect refused");
                    refused(e.label());
                    return refuse(&e.to_string());
                }
            }
        };
        let max_rooms = self.config().max_rooms_per_socket;
        if max_rooms > 0 && identity.rooms.len() > max_rooms {
            crate::limits::Limit::RoomsPerSocket.hit();
            refused("too_many_rooms");
            tracing::info!(sid = %session.sid, nsp, rooms = identity.rooms.len(), max_rooms, "connect refused: too many rooms");
            return refuse(&format!(
                "too many rooms: {} exceed the limit of {max_rooms} per socket",
                identity.rooms.len()
            ));
        }
        if session.is_closed() {
            return Ok(());
        }
        if let Some(done) = self.recover(session, nsp, &identity, auth).await {
            return done;
        }
        let socket = Arc::new(Socket {
            id: roomcast_bus::names::new_socket_id(self.route_tag()),
            ns: nsp.to_owned(),
            user: identity.user_id,
            connected_at_ms: crate::now_ms(),
            data_json,
            session: session.clone(),
            pid: self.new_pid(),
            gate: ReplayGate::default(),
            record_revision: AtomicU64::new(0),
        });
        session.sio().sockets.insert(socket.clone());
        // Join first, reply after: when the client sees `connect`, its socket is
        // in every room it was given.
        self.add_socket(&socket, &identity.rooms).await;
        if session.is_closed() {
            self.remove_socket(&socket).await;
            return Ok(());
        }
        let rooms = self.read_index().rooms_of(&socket.id);
        self.announce_connect(&socket, rooms, auth, false).await;
        if let (true, Some(exp)) = (
            self.config().disconnect_on_token_expiry,
            identity.expires_at,
        ) {
            self.expire_at(&socket, exp);
        }
        let packet = socketio::encode_connect_with_pid(nsp, &socket.id, socket.pid.as_deref());
        // The namespace is one of the configured ones: a bounded label.
        metrics::counter!(crate::metrics::SOCKETS_CONNECTED, "namespace" => nsp.to_owned())
            .increment(1);
        tracing::debug!(sid = %session.sid, socket = %socket.id, nsp, user = %socket.user, "socket connected");
        match session.outbox.push(&[Frame::Text(packet)]) {
            Err(PushError::Full) => Err(CloseReason::SlowConsumer),
            _ => Ok(()),
        }
    }

    /// Disconnects a socket when its token expires (`exp`, Unix seconds): the
    /// client sees "io server disconnect", then the connection closes.
    pub(crate) fn expire_at(&self, socket: &Arc<Socket>, exp: u64) {
        let now_ms = u64::try_from(crate::now_ms()).unwrap_or(0);
        let wait =
            std::time::Duration::from_millis(exp.saturating_mul(1000).saturating_sub(now_ms));
        let edge = self.clone();
        let socket = socket.clone();
        self.spawn(async move {
            let session = &socket.session;
            tokio::select! {
                _ = session.ended() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            tracing::info!(sid = %session.sid, socket = %socket.id, "token expired, disconnecting");
            let _ = session
                .outbox
                .push(&[Frame::Text(socketio::encode_disconnect(&socket.ns))]);
            edge.close_session(session, CloseReason::TokenExpired);
        });
    }

    /// What the connect hook is told about a CONNECT.
    fn authorize_request(
        &self,
        session: &Session,
        nsp: &str,
        auth: Option<&Value>,
    ) -> roomcast_api::v1::AuthorizeRequest {
        let hs = &session.handshake;
        roomcast_api::v1::AuthorizeRequest {
            namespace: nsp.to_owned(),
            auth_json: auth.map(Value::to_string).unwrap_or_default(),
            headers: hs.headers.to_vec(&[]).into_iter().collect(),
            query: hs.query.to_vec(&[]).into_iter().collect(),
            remote_addr: hs.remote.map(|a| a.to_string()).unwrap_or_default(),
            node_id: self.config().node_id.clone(),
        }
    }

    async fn relay_event(
        &self,
        socket: &Socket,
        event: String,
        args_json: String,
        attachments: Vec<Bytes>,
        ack_id: Option<u64>,
    ) {
        let subjects = self.subjects();
        let ev = ClientEvent {
            ns: socket.ns.clone(),
            socket: socket.id.clone(),
            user: socket.user.clone(),
            event,
            args_json,
            attachments,
            ack_id,
            reply_to: subjects.node(&self.config().node_id),
            received_at_ms: crate::now_ms(),
        };
        metrics::counter!(crate::metrics::CLIENT_EVENTS).increment(1);
        let subject = subjects.client_events(Some(&ev.ns), Some(&ev.event));
        // Backends on NATS answer an ack with a plain NATS reply.
        let reply = ack_id.map(|id| subjects.ack_reply(&self.config().node_id, &socket.id, id));
        let (headers, payload) = ev.encode();
        if let Err(e) = self
            .inner
            .bus
            .publish(&subject, headers, payload, reply.as_deref())
            .await
        {
            tracing::warn!(socket = %socket.id, error = %e, "client event not published");
        }
    }
}

impl Edge {
    /// A backend answered a client event's ack with a NATS reply: check it and
    /// write the ack to the socket. Anything wrong is logged and dropped.
    pub(crate) async fn on_ack_reply(&self, msg: roomcast_bus::Message) {
        let node = &self.config().node_id;
        let Some((sid, ack_id)) = self.subjects().parse_ack_reply(node, &msg.subject) else {
            tracing::debug!(subject = %msg.subject, "ack reply to an unknown subject");
            return;
        };
        let Some(socket) = self.read_index().socket(&sid) else {
            return; // the socket is gone; so is its ack callback
        };
        let packet = match envelope::decode_ack_reply(&msg.headers, msg.payload) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(socket = %sid, error = %e, "invalid ack reply");
                return;
            }
        };
        let Ok(args_json) = std::str::from_utf8(&packet.text) else {
            tracing::warn!(socket = %sid, "ack reply is not utf-8");
            return;
        };
        let max = self.config().max_attachments;
        if packet.attachments.len() > max {
            tracing::warn!(socket = %sid, max, "ack reply has too many attachments");
            return;
        }
        let checked = socketio::parse_args(args_json).and_then(|args| {
            socketio::check_args_attachments(args_json, packet.attachments.len())?;
            Ok(socketio::encode_ack(
                &socket.ns,
                ack_id,
                &args,
                packet.attachments.len(),
            ))
        });
        match checked {
            Ok(text) => {
                let packet = envelope::Packet {
                    text,
                    attachments: packet.attachments,
                };
                self.deliver(&[socket], &packet, false, 0);
            }
            Err(e) => tracing::warn!(socket = %sid, error = %e, "invalid ack reply"),
        }
    }
}
