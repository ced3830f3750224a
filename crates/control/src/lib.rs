//! The control plane: the gRPC API backends use, served over the bus.
//!
//! The control plane holds no state of its own (at-least-once emits keep
//! theirs in a store shared by every control plane, see [`delivery`]). `Emit` validates the request,
//! encodes the Socket.IO packet once and publishes it on the subjects of the
//! target rooms (or of the namespace, or the edges subject for sockets named by
//! id); edges deliver it. `JoinRooms`/`LeaveRooms` ask every edge and wait for
//! their confirmations, so an emit that follows the call reaches the new members.
//! `ConsumeEvents` streams the client events edges publish, and `Reply` sends a
//! backend's answer to the edge that holds the socket.
//!
//! Layout: [`error`] maps domain errors to gRPC codes once; [`auth`] checks API
//! keys; this file holds the service.

#![forbid(unsafe_code)]

pub mod auth;
pub mod delivery;
pub mod edges;
pub mod error;
pub mod metrics;

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roomcast_api::v1::roomcast_server::Roomcast;
use roomcast_api::v1::{
    AckResult, ClientEvent, ConnectionEvent, ConsumeEventsRequest, DisconnectSocketsRequest,
    DisconnectSocketsResponse, EmitRequest, EmitResponse, EmitStreamResponse, EmitWithAckRequest,
    EmitWithAckResponse, FetchSocketsRequest, FetchSocketsResponse, ListRoomsRequest,
    ListRoomsResponse, ReplyRequest, ReplyResponse, RoomInfo, RoomsRequest, RoomsResponse,
    Selector, SocketInfo, WatchConnectionsRequest,
};
use roomcast_api::v1::{
    GetDeliveryRequest, GetDeliveryResponse, GetInboxRequest, GetInboxResponse, PurgeInboxRequest,
    PurgeInboxResponse,
};
use roomcast_api::v1::{
    GetPresenceRequest, GetPresenceResponse, PresenceEvent, UserPresence, WatchPresenceRequest,
};
use roomcast_bus::envelope::{self, Closing, Command, EdgeReply, Target};
use roomcast_bus::names::{looks_like_socket_id, valid_namespace, valid_room};
use roomcast_bus::subject::Subjects;
use roomcast_bus::Bus;
use roomcast_presence::{EventKind, Presence};
use roomcast_wire::socketio;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub use error::ControlError;

use edges::EdgeRequest;

pub use delivery::{Delivery, DeliveryConfig};
pub use edges::{EdgeDirectory, LiveEdges, StaticEdges};

/// Default and largest `EmitWithAck` timeouts.
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub cluster: String,
    /// Largest encoded packet (text and attachments) an emit may produce.
    pub max_payload: usize,
    pub max_attachments: usize,
    /// How long edges have to confirm joins and leaves.
    pub request_timeout: Duration,
    /// Most entries in each list of a selector, and rooms in a join or leave.
    pub max_selector_size: usize,
    /// Client events buffered per `ConsumeEvents` stream.
    pub consumer_buffer: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            cluster: "roomcast".into(),
            max_payload: 1_000_000,
            max_attachments: 10,
            request_timeout: Duration::from_secs(5),
            max_selector_size: 10_000,
            consumer_buffer: 1024,
        }
    }
}

const MAX_ACK_ID: u64 = 1 << 31;

/// The `roomcast.v1.Roomcast` service.
#[derive(Clone)]
pub struct Control {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    config: Arc<ControlConfig>,
    edges: Arc<dyn EdgeDirectory>,
    /// Ack ids of this control plane's `EmitWithAck`s: from a random start, so
    /// that two replicas are unlikely to use one id for one socket at once.
    next_ack_id: Arc<AtomicU64>,
    presence: Option<Presence>,
    /// Connection state recovery: emits to recoverable rooms go through its
    /// history.
    recovery: Option<roomcast_bus::recovery::Recovery>,
    /// At-least-once emits and inboxes; needs presence.
    delivery: Option<Delivery>,
    /// Ends every open stream at shutdown (a graceful gRPC shutdown waits
    /// for them otherwise).
    stop: tokio_util::sync::CancellationToken,
}

impl Control {
    pub fn new(config: ControlConfig, bus: Arc<dyn Bus>, edges: Arc<dyn EdgeDirectory>) -> Self {
        Self {
            subjects: Subjects::new(&config.cluster),
            bus,
            config: Arc::new(config),
            edges,
            next_ack_id: Arc::new(AtomicU64::new(rand::random_range(1..MAX_ACK_ID))),
            presence: None,
            recovery: None,
            delivery: None,
            stop: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Ends the open ConsumeEvents and WatchPresence streams.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Serves GetPresence and WatchPresence from this presence.
    pub fn with_presence(mut self, presence: Presence) -> Self {
        self.presence = Some(presence);
        self
    }

    /// Keeps emits to recoverable rooms in the recovery history.
    pub fn with_recovery(mut self, recovery: roomcast_bus::recovery::Recovery) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// Serves at-least-once emits, GetDelivery and the inbox calls, keeping
    /// their state in `store`; `me` names this control plane as queue owner.
    /// Needs presence (call [`Control::with_presence`] first). Run the
    /// returned [`Delivery`] (`run`) to follow connects and take over queues.
    pub fn with_delivery(
        mut self,
        store: Arc<dyn roomcast_bus::KvStore>,
        cfg: DeliveryConfig,
        me: String,
    ) -> Result<(Self, Delivery), ControlError> {
        // Deliveries follow the connects presence announces.
        self.presence()?;
        let delivery = Delivery::new(self.clone(), store, cfg, me);
        self.delivery = Some(delivery.clone());
        Ok((self, delivery))
    }

    fn delivery(&self) -> Result<&Delivery, ControlError> {
        self.delivery.as_ref().ok_or(ControlError::DeliveryOff)
    }

    /// An emit, plain or at-least-once; returns the message id of the latter.
    pub async fn emit_any(&self, req: EmitRequest) -> Result<String, ControlError> {
        if req.at_least_once {
            return self.delivery()?.emit(req).await;
        }
        if req.ttl_ms != 0 {
            return Err(ControlError::TtlWithoutAck);
        }
        self.emit(req).await?;
        Ok(String::new())
    }

    fn presence(&self) -> Result<&Presence, ControlError> {
        self.presence.as_ref().ok_or(ControlError::PresenceOff)
    }

    /// User statuses and room members.
    pub async fn get_presence(
        &self,
        req: GetPresenceRequest,
    ) -> Result<GetPresenceResponse, ControlError> {
        let presence = self.presence()?;
        let users = Self::user_ids(&req.user_ids)?;
        let mut out = GetPresenceResponse::default();
        for user in users {
            let state = presence.user(&user).await?;
            out.users.push(UserPresence {
                online: state.is_online(),
                last_seen_ms: state.last_seen_ms,
                sockets: u32::try_from(state.sockets.len()).unwrap_or(u32::MAX),
                user_id: user,
            });
        }
        if !req.room.is_empty() {
            let sockets = self
                .fetch(FetchSocketsRequest {
                    target: Some(Selector {
                        namespace: req.namespace,
                        rooms: vec![req.room],
                        ..Selector::default()
                    }),
                })
                .await?;
            let users: std::collections::BTreeSet<&str> = sockets
                .iter()
                .map(|s| s.user_id.as_str())
                .filter(|u| !u.is_empty())
                .collect();
            out.room_user_ids = users.into_iter().map(str::to_owned).collect();
            out.room_sockets = sockets;
        }
        Ok(out)
    }

    /// Streams presence events that pass the request's filters.
    pub async fn watch_presence(
        &self,
        req: WatchPresenceRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<PresenceEvent, Status>>, ControlError> {
        self.presence()?;
        let ns = if req.namespace.is_empty() {
            None
        } else {
            Some(Self::namespace(&req.namespace)?)
        };
        let room = (!req.room.is_empty())
            .then(|| Self::rooms(std::slice::from_ref(&req.room)))
            .transpose()?
            .map(|mut r| r.remove(0));
        let users: HashSet<String> = Self::user_ids(&req.user_ids)?.into_iter().collect();
        let sub = self
            .bus
            .subscribe(&self.subjects.presence_events(), None)
            .await?;
        // Live before the response headers go out: they are the caller's
        // signal that nothing after them is missed.
        self.bus.sync().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(self.config.consumer_buffer);
        forward(sub, tx, self.stop.clone(), move |msg| {
            let ev =
                serde_json::from_slice::<roomcast_presence::PresenceEvent>(&msg.payload).ok()?;
            let transition = matches!(ev.kind, EventKind::Online | EventKind::Offline);
            if ns.as_ref().is_some_and(|n| !transition && *n != ev.ns)
                || room.as_ref().is_some_and(|r| !ev.rooms.contains(r))
                || (!users.is_empty() && !users.contains(&ev.user))
            {
                return None;
            }
            let kind = serde_json::to_value(ev.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            Some(PresenceEvent {
                kind,
                user_id: ev.user,
                socket_id: ev.socket,
                namespace: ev.ns,
                node_id: ev.node,
                rooms: ev.rooms,
                at_ms: ev.at_ms,
                last_seen_ms: ev.last_seen_ms,
            })
        });
        Ok(rx)
    }

    /// An ack id for an emit; ids stay below 2^31 (any client parses them).
    fn ack_id(&self) -> u64 {
        let id = self.next_ack_id.fetch_add(1, Ordering::Relaxed);
        id % MAX_ACK_ID + 1
    }

    fn namespace(ns: &str) -> Result<String, ControlError> {
        let ns = if ns.is_empty() { "/" } else { ns };
        if !valid_namespace(ns) {
            return Err(ControlError::InvalidNamespace(ns.to_owned()));
        }
        Ok(ns.to_owned())
    }

    fn rooms(rooms: &[String]) -> Result<Vec<String>, ControlError> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rooms.len());
        for r in rooms {
            if !valid_room(r) {
                return Err(ControlError::InvalidRoom(r.clone()));
            }
            if seen.insert(r) {
                out.push(r.clone());
            }
        }
        Ok(out)
    }

    fn socket_ids(ids: &[String]) -> Result<Vec<String>, ControlError> {
        for id in ids {
            if id.is_empty() || id.len() > roomcast_bus::names::MAX_NAME_LEN {
                return Err(ControlError::InvalidSocketId(id.clone()));
            }
        }
        Ok(ids.to_vec())
    }

    fn user_ids(ids: &[String]) -> Result<Vec<String>, ControlError> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if id.is_empty() || id.len() > roomcast_bus::names::MAX_NAME_LEN {
                return Err(ControlError::InvalidUserId(id.clone()));
            }
            if seen.insert(id) {
                out.push(id.clone());
            }
        }
        Ok(out)
    }

    /// Validates a selector. Rooms that have the form of a socket id are also
    /// addressed as sockets: every socket is in the room of its own id, and that
    /// room is never a subject of its own.
    pub(crate) fn target(&self, sel: Option<Selector>) -> Result<Target, ControlError> {
        let sel = sel.unwrap_or_default();
        for (what, len) in [
            ("rooms", sel.rooms.len()),
            ("socket_ids", sel.socket_ids.len()),
            ("user_ids", sel.user_ids.len()),
            ("except_rooms", sel.except_rooms.len()),
            ("except_socket_ids", sel.except_socket_ids.len()),
        ] {
            self.check_selector_size(what, len)?;
        }
        let rooms = Self::rooms(&sel.rooms)?;
        let mut sockets = Self::socket_ids(&sel.socket_ids)?;
        sockets.extend(rooms.iter().filter(|r| looks_like_socket_id(r)).cloned());
        let mut seen = HashSet::new();
        sockets.retain(|s| seen.insert(s.clone()));
        Ok(Target {
            ns: Self::namespace(&sel.namespace)?,
            rooms,
            sockets,
            users: Self::user_ids(&sel.user_ids)?,
            except_rooms: Self::rooms(&sel.except_rooms)?,
            except_sockets: Self::socket_ids(&sel.except_socket_ids)?,
        })
    }

    /// Bounds one list of a request: what a call costs grows with it.
    fn check_selector_size(&self, what: &'static str, len: usize) -> Result<(), ControlError> {
        let limit = self.config.max_selector_size;
        if len > limit {
            return Err(ControlError::SelectorTooLarge { what, len, limit });
        }
        Ok(())
    }

    fn packet_size(text: &Bytes, attachments: &[Bytes]) -> usize {
        text.len() + attachments.iter().map(Bytes::len).sum::<usize>()
    }

    fn check_attachments(&self, attachments: &[Bytes]) -> Result<(), ControlError> {
        if attachments.len() > self.config.max_attachments {
            return Err(ControlError::TooManyAttachments(
                attachments.len(),
                self.config.max_attachments,
            ));
        }
        Ok(())
    }

    fn check_size(&self, text: &Bytes, attachments: &[Bytes]) -> Result<(), ControlError> {
        let size = Self::packet_size(text, attachments);
        if size > self.config.max_payload {
            return Err(ControlError::PayloadTooLarge(size, self.config.max_payload));
        }
        Ok(())
    }

    /// Validates and publishes an emit; the packet is encoded here, once.
    pub async fn emit(&self, req: EmitRequest) -> Result<(), ControlError> {
        let target = self.target(req.to)?;
        socketio::check_event_name(&req.event)?;
        let args = socketio::parse_args(&req.args_json)?;
        let attachments: Vec<Bytes> = req.attachments.into_iter().map(Bytes::from).collect();
        self.check_attachments(&attachments)?;
        socketio::check_args_attachments(&req.args_json, attachments.len())?;
        let text = socketio::encode_event(&target.ns, &req.event, &args, None, attachments.len());
        self.check_size(&text, &attachments)?;
        let cmd = Command::Emit {
            packet: envelope::Packet { text, attachments },
            volatile: req.volatile,
            target,
        };
        self.publish_routed(&cmd).await
    }

    /// Publishes a command on every subject its target needs.
    async fn publish_routed(&self, cmd: &Command) -> Result<(), ControlError> {
        let Command::Emit {
            target, volatile, ..
        } = cmd
        else {
            return Ok(());
        };
        let (mut headers, payload) = cmd.encode();
        roomcast_bus::trace::inject(&mut headers);
        // A volatile emit is not worth recovering.
        let recovery = self.recovery.as_ref().filter(|_| !volatile);
        for subject in self.subjects.emit_subjects(target) {
            let recoverable = recovery.zip(self.subjects.parse_room(&subject));
            if let Some((recovery, (ns, room))) = recoverable {
                if recovery.config.recoverable(&room) {
                    recovery
                        .history
                        .append(&ns, &room, headers.clone(), payload.clone())
                        .await?;
                    continue;
                }
            }
            self.bus
                .publish(&subject, headers.clone(), payload.clone(), None)
                .await?;
        }
        Ok(())
    }

    /// Sends a command to every edge and waits for each one's answer.
    async fn ask_edges(&self, cmd: &Command) -> Result<Vec<EdgeReply>, ControlError> {
        let req = EdgeRequest::send(
            self.bus.as_ref(),
            &self.subjects,
            self.edges.as_ref(),
            cmd,
            self.config.request_timeout,
        )
        .await?;
        req.gather().await
    }

    /// Sums what edges report for a join, leave or disconnect.
    fn count(replies: &[EdgeReply]) -> u64 {
        replies
            .iter()
            .map(|r| match r {
                EdgeReply::Done { count, .. } => *count,
                _ => 0,
            })
            .sum()
    }

    /// Asks every edge to apply a join or leave and waits for each to confirm.
    async fn rooms_command(&self, req: RoomsRequest, join: bool) -> Result<u64, ControlError> {
        let target = self.target(req.target)?;
        self.check_selector_size("rooms to join or leave", req.rooms.len())?;
        let rooms = Self::rooms(&req.rooms)?;
        if rooms.is_empty() {
            return Err(ControlError::NoRooms);
        }
        let cmd = if join {
            Command::Join { target, rooms }
        } else {
            Command::Leave { target, rooms }
        };
        let replies = self.ask_edges(&cmd).await?;
        let refused: u64 = replies
            .iter()
            .map(|r| match r {
                EdgeReply::Done { refused, .. } => *refused,
                _ => 0,
            })
            .sum();
        if refused > 0 {
            return Err(ControlError::TooManyRooms {
                refused,
                joined: Self::count(&replies),
            });
        }
        Ok(Self::count(&replies))
    }

    /// Disconnects the selected sockets on every edge; returns how many.
    pub async fn disconnect(&self, req: DisconnectSocketsRequest) -> Result<u64, ControlError> {
        let cmd = Command::Disconnect {
            target: self.target(req.target)?,
            close: if req.close {
                Closing::Close
            } else {
                Closing::Keep
            },
        };
        Ok(Self::count(&self.ask_edges(&cmd).await?))
    }

    /// Describes the selected sockets of every edge.
    pub async fn fetch(&self, req: FetchSocketsRequest) -> Result<Vec<SocketInfo>, ControlError> {
        let cmd = Command::Fetch {
            target: self.target(req.target)?,
        };
        let mut out = Vec::new();
        for reply in self.ask_edges(&cmd).await? {
            if let EdgeReply::Sockets { sockets, .. } = reply {
                out.extend(sockets.into_iter().map(|s| SocketInfo {
                    id: s.id,
                    user_id: s.user,
                    namespace: s.ns,
                    node_id: s.node,
                    rooms: s.rooms,
                    connected_at_ms: s.connected_at_ms,
                    remote_addr: s.remote_addr,
                    transport: s.transport,
                    query: s.query.into_iter().collect(),
                    headers: s.headers.into_iter().collect(),
                    data_json: s.data_json,
                }));
            }
        }
        Ok(out)
    }

    /// Member counts of a namespace's rooms, summed over every edge.
    pub async fn list_rooms(&self, req: ListRoomsRequest) -> Result<Vec<RoomInfo>, ControlError> {
        let ns = Self::namespace(&req.namespace)?;
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for reply in self.ask_edges(&Command::ListRooms { ns }).await? {
            if let EdgeReply::Rooms { rooms, .. } = reply {
                for (room, n) in rooms {
                    *counts.entry(room).or_default() += n;
                }
            }
        }
        Ok(counts
            .into_iter()
            .map(|(name, n)| RoomInfo {
                name,
                members: u32::try_from(n).unwrap_or(u32::MAX),
            })
            .collect())
    }

    /// Emits with an ack id to the selected sockets of every edge and gathers
    /// their acks until all answered or the timeout passed.
    pub async fn emit_with_ack(
        &self,
        req: EmitWithAckRequest,
    ) -> Result<EmitWithAckResponse, ControlError> {
        let timeout = match req.timeout_ms {
            0 => DEFAULT_ACK_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        if timeout > MAX_ACK_TIMEOUT {
            return Err(ControlError::InvalidTimeout(MAX_ACK_TIMEOUT.as_millis()));
        }
        let target = self.target(req.to)?;
        socketio::check_event_name(&req.event)?;
        let args = socketio::parse_args(&req.args_json)?;
        let attachments: Vec<Bytes> = req.attachments.into_iter().map(Bytes::from).collect();
        self.check_attachments(&attachments)?;
        socketio::check_args_attachments(&req.args_json, attachments.len())?;
        let ack_id = self.ack_id();
        let text = socketio::encode_event(
            &target.ns,
            &req.event,
            &args,
            Some(ack_id),
            attachments.len(),
        );
        self.check_size(&text, &attachments)?;
        let cmd = Command::EmitWithAck {
            target,
            packet: envelope::Packet { text, attachments },
            ack_id,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let mut req = EdgeRequest::send(
            self.bus.as_ref(),
            &self.subjects,
            self.edges.as_ref(),
            &cmd,
            timeout,
        )
        .await?;
        // Socket id → (node, ack) for every socket written to; acks may come
        // before their edge's list of targets.
        let mut targets: HashMap<String, String> = HashMap::new();
        let mut acks: HashMap<String, AckResult> = HashMap::new();
        loop {
            let done = req.waiting.is_empty() && targets.keys().all(|s| acks.contains_key(s));
            if done {
                break;
            }
            let Some(reply) = req.next().await else { break };
            match reply {
                EdgeReply::Targets { node, sockets } => {
                    req.waiting.remove(&node);
                    targets.extend(sockets.into_iter().map(|s| (s, node.clone())));
                }
                EdgeReply::Ack { node, socket, args } => {
                    let result = AckResult {
                        socket_id: socket.clone(),
                        node_id: node,
                        acked: true,
                        args_json: String::from_utf8_lossy(&args.text).into_owned(),
                        attachments: args.attachments.into_iter().map(|b| b.to_vec()).collect(),
                    };
                    acks.insert(socket, result);
                }
                _ => {}
            }
        }
        let complete = req.waiting.is_empty();
        let mut results: Vec<AckResult> = targets
            .into_iter()
            .map(|(socket, node)| {
                acks.remove(&socket).unwrap_or(AckResult {
                    socket_id: socket,
                    node_id: node,
                    ..AckResult::default()
                })
            })
            .collect();
        // Acks from sockets whose edge's list was lost still count.
        results.extend(acks.into_values());
        Ok(EmitWithAckResponse { results, complete })
    }

    /// Sends a backend's answer to a client's ack.
    pub async fn reply(&self, req: ReplyRequest) -> Result<(), ControlError> {
        // Only node subjects of this cluster: a backend cannot publish elsewhere.
        if !self.subjects.is_node(&req.reply_to) {
            return Err(ControlError::InvalidReplyTo);
        }
        let ns = Self::namespace(&req.namespace)?;
        let socket = Self::socket_ids(std::slice::from_ref(&req.socket_id))?.remove(0);
        let args = socketio::parse_args(&req.args_json)?;
        let attachments: Vec<Bytes> = req.attachments.into_iter().map(Bytes::from).collect();
        self.check_attachments(&attachments)?;
        socketio::check_args_attachments(&req.args_json, attachments.len())?;
        let text = socketio::encode_ack(&ns, req.ack_id, &args, attachments.len());
        self.check_size(&text, &attachments)?;
        let cmd = Command::Reply {
            ns,
            socket,
            packet: envelope::Packet { text, attachments },
        };
        let (headers, payload) = cmd.encode();
        self.bus
            .publish(&req.reply_to, headers, payload, None)
            .await?;
        Ok(())
    }

    /// Streams sockets' connects and disconnects, live once it returns.
    pub async fn watch_connections(
        &self,
        req: WatchConnectionsRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ConnectionEvent, Status>>, ControlError> {
        let ns = if req.namespace.is_empty() {
            None
        } else {
            Some(Self::namespace(&req.namespace)?)
        };
        let group = (!req.group.is_empty()).then_some(req.group.as_str());
        let sub = self
            .bus
            .subscribe(&self.subjects.connections(ns.as_deref()), group)
            .await?;
        self.bus.sync().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(self.config.consumer_buffer);
        forward(sub, tx, self.stop.clone(), |msg| {
            let ev = match envelope::ConnectionEvent::decode(&msg.payload) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "invalid connection event on the bus");
                    return None;
                }
            };
            Some(ConnectionEvent {
                kind: ev.kind,
                socket_id: ev.socket,
                user_id: ev.user,
                namespace: ev.ns,
                node_id: ev.node,
                at_ms: ev.at_ms,
                rooms: ev.rooms,
                auth_json: ev.auth_json,
                query: ev.query.into_iter().collect(),
                headers: ev.headers.into_iter().collect(),
                remote_addr: ev.remote_addr,
                transport: ev.transport,
                data_json: ev.data_json,
                recovered: ev.recovered,
                reason: ev.reason,
            })
        });
        Ok(rx)
    }

    /// Subscribes to client events and streams them until the receiver is gone.
    pub async fn consume(
        &self,
        req: ConsumeEventsRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ClientEvent, Status>>, ControlError> {
        let ns = if req.namespace.is_empty() {
            None
        } else {
            Some(Self::namespace(&req.namespace)?)
        };
        let group = (!req.group.is_empty()).then_some(req.group.as_str());
        let events: Vec<Option<&str>> = if req.events.is_empty() {
            vec![None]
        } else {
            req.events.iter().map(|e| Some(e.as_str())).collect()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(self.config.consumer_buffer);
        let mut subs = Vec::with_capacity(events.len());
        for event in events {
            let subject = self.subjects.client_events(ns.as_deref(), event);
            subs.push(self.bus.subscribe(&subject, group).await?);
        }
        // Live before the response headers go out: they are the caller's
        // signal that events sent after them reach the stream.
        self.bus.sync().await?;
        for sub in subs {
            forward(sub, tx.clone(), self.stop.clone(), |msg| {
                let ev = match envelope::ClientEvent::decode(&msg.headers, msg.payload) {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(error = %e, "invalid client event on the bus");
                        return None;
                    }
                };
                Some(ClientEvent {
                    socket_id: ev.socket,
                    user_id: ev.user,
                    namespace: ev.ns,
                    event: ev.event,
                    args_json: ev.args_json,
                    attachments: ev.attachments.into_iter().map(|b| b.to_vec()).collect(),
                    ack_id: ev.ack_id,
                    reply_to: ev.reply_to,
                    received_at_ms: ev.received_at_ms,
                })
            });
        }
        Ok(rx)
    }
}

/// How long a stream's last word (its `UNAVAILABLE`) may wait for room in a
/// caller's full channel.
const LAST_WORD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The response header that says a stream is live: sent once its
/// subscriptions are, so nothing published after the caller sees it is
/// missed.
pub const LIVE_HEADER: &str = "roomcast-stream";

/// A streaming response whose headers say it is live.
fn live<S>(stream: S) -> Response<S> {
    let mut res = Response::new(stream);
    res.metadata_mut().insert(
        LIVE_HEADER,
        tonic::metadata::MetadataValue::from_static("live"),
    );
    res
}

/// Forwards bus messages, mapped (`None` skips one), into a gRPC stream's
/// channel until the subscription ends or the caller goes away. A stream that
/// ends on our side (shutdown, the bus gone) ends with `UNAVAILABLE`, never
/// with OK: the caller must tell that end from its own and resume elsewhere.
fn forward<T: Send + 'static>(
    mut sub: roomcast_bus::Subscription,
    tx: tokio::sync::mpsc::Sender<Result<T, Status>>,
    stop: tokio_util::sync::CancellationToken,
    mut map: impl FnMut(roomcast_bus::Message) -> Option<T> + Send + 'static,
) {
    tokio::spawn(async move {
        let ended = loop {
            let msg = tokio::select! {
                _ = tx.closed() => return,
                _ = stop.cancelled() => break Status::unavailable(
                    "roomcast is shutting down: call another control plane and resume \
                     (events in between are not kept)",
                ),
                msg = sub.next() => msg,
            };
            let Some(msg) = msg else {
                break Status::unavailable("the bus connection ended: call again and resume");
            };
            let Some(out) = map(msg) else { continue };
            if tx.send(Ok(out)).await.is_err() {
                return;
            }
        };
        let _ = tokio::time::timeout(LAST_WORD_TIMEOUT, tx.send(Err(ended))).await;
    });
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ClientEvent, Status>> + Send>>;

/// The trailer of a failed `EmitStream`: how many of its events were emitted.
pub const EMITTED_TRAILER: &str = "roomcast-emitted";

#[tonic::async_trait]
impl Roomcast for Control {
    async fn emit(&self, req: Request<EmitRequest>) -> Result<Response<EmitResponse>, Status> {
        metrics::observe("Emit", async move {
            let message_id = self.emit_any(req.into_inner()).await?;
            Ok(Response::new(EmitResponse { message_id }))
        })
        .await
    }

    async fn emit_stream(
        &self,
        req: Request<tonic::Streaming<EmitRequest>>,
    ) -> Result<Response<EmitStreamResponse>, Status> {
        metrics::observe("EmitStream", async move {
            let mut stream = req.into_inner();
            let mut emitted = 0u64;
            let failed = |status: Status, emitted: u64| {
                let mut trailers = tonic::metadata::MetadataMap::new();
                trailers.insert(EMITTED_TRAILER, emitted.into());
                Status::with_metadata(
                    status.code(),
                    format!("message {emitted}: {}", status.message()),
                    trailers,
                )
            };
            while let Some(req) = stream.message().await.map_err(|s| failed(s, emitted))? {
                let result = if req.at_least_once {
                    Err(ControlError::AckedInStream)
                } else {
                    self.emit_any(req).await
                };
                result.map_err(|e| failed(e.into(), emitted))?;
                emitted += 1;
            }
            Ok(Response::new(EmitStreamResponse { emitted }))
        })
        .await
    }

    async fn join_rooms(
        &self,
        req: Request<RoomsRequest>,
    ) -> Result<Response<RoomsResponse>, Status> {
        metrics::observe("JoinRooms", async move {
            self.rooms_command(req.into_inner(), true).await?;
            Ok(Response::new(RoomsResponse {}))
        })
        .await
    }

    async fn leave_rooms(
        &self,
        req: Request<RoomsRequest>,
    ) -> Result<Response<RoomsResponse>, Status> {
        metrics::observe("LeaveRooms", async move {
            self.rooms_command(req.into_inner(), false).await?;
            Ok(Response::new(RoomsResponse {}))
        })
        .await
    }

    type ConsumeEventsStream = EventStream;

    async fn consume_events(
        &self,
        req: Request<ConsumeEventsRequest>,
    ) -> Result<Response<Self::ConsumeEventsStream>, Status> {
        metrics::observe("ConsumeEvents", async move {
            let rx = self.consume(req.into_inner()).await?;
            let stream: Self::ConsumeEventsStream =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(live(stream))
        })
        .await
    }

    async fn reply(&self, req: Request<ReplyRequest>) -> Result<Response<ReplyResponse>, Status> {
        metrics::observe("Reply", async move {
            Control::reply(self, req.into_inner()).await?;
            Ok(Response::new(ReplyResponse {}))
        })
        .await
    }

    async fn emit_with_ack(
        &self,
        req: Request<EmitWithAckRequest>,
    ) -> Result<Response<EmitWithAckResponse>, Status> {
        metrics::observe("EmitWithAck", async move {
            Ok(Response::new(
                Control::emit_with_ack(self, req.into_inner()).await?,
            ))
        })
        .await
    }

    async fn disconnect_sockets(
        &self,
        req: Request<DisconnectSocketsRequest>,
    ) -> Result<Response<DisconnectSocketsResponse>, Status> {
        metrics::observe("DisconnectSockets", async move {
            let n = self.disconnect(req.into_inner()).await?;
            Ok(Response::new(DisconnectSocketsResponse {
                disconnected: u32::try_from(n).unwrap_or(u32::MAX),
            }))
        })
        .await
    }

    async fn fetch_sockets(
        &self,
        req: Request<FetchSocketsRequest>,
    ) -> Result<Response<FetchSocketsResponse>, Status> {
        metrics::observe("FetchSockets", async move {
            let sockets = self.fetch(req.into_inner()).await?;
            Ok(Response::new(FetchSocketsResponse { sockets }))
        })
        .await
    }

    async fn get_presence(
        &self,
        req: Request<GetPresenceRequest>,
    ) -> Result<Response<GetPresenceResponse>, Status> {
        metrics::observe("GetPresence", async move {
            Ok(Response::new(
                Control::get_presence(self, req.into_inner()).await?,
            ))
        })
        .await
    }

    type WatchPresenceStream = Pin<Box<dyn Stream<Item = Result<PresenceEvent, Status>> + Send>>;

    type WatchConnectionsStream =
        Pin<Box<dyn Stream<Item = Result<ConnectionEvent, Status>> + Send>>;

    async fn watch_connections(
        &self,
        req: Request<WatchConnectionsRequest>,
    ) -> Result<Response<Self::WatchConnectionsStream>, Status> {
        metrics::observe("WatchConnections", async move {
            let rx = Control::watch_connections(self, req.into_inner()).await?;
            let stream: Self::WatchConnectionsStream =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(live(stream))
        })
        .await
    }

    async fn watch_presence(
        &self,
        req: Request<WatchPresenceRequest>,
    ) -> Result<Response<Self::WatchPresenceStream>, Status> {
        metrics::observe("WatchPresence", async move {
            let rx = Control::watch_presence(self, req.into_inner()).await?;
            let stream: Self::WatchPresenceStream =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(live(stream))
        })
        .await
    }

    async fn get_delivery(
        &self,
        req: Request<GetDeliveryRequest>,
    ) -> Result<Response<GetDeliveryResponse>, Status> {
        metrics::observe("GetDelivery", async move {
            let id = req.into_inner().message_id;
            Ok(Response::new(self.delivery()?.status(&id).await?))
        })
        .await
    }

    async fn get_inbox(
        &self,
        req: Request<GetInboxRequest>,
    ) -> Result<Response<GetInboxResponse>, Status> {
        metrics::observe("GetInbox", async move {
            let r = req.into_inner();
            let entries = self
                .delivery()?
                .inbox(&r.namespace, &r.user_id, &r.socket_id)
                .await?;
            Ok(Response::new(GetInboxResponse { entries }))
        })
        .await
    }

    async fn purge_inbox(
        &self,
        req: Request<PurgeInboxRequest>,
    ) -> Result<Response<PurgeInboxResponse>, Status> {
        metrics::observe("PurgeInbox", async move {
            let r = req.into_inner();
            let purged = self
                .delivery()?
                .purge(&r.namespace, &r.user_id, &r.socket_id)
                .await?;
            Ok(Response::new(PurgeInboxResponse { purged }))
        })
        .await
    }

    async fn list_rooms(
        &self,
        req: Request<ListRoomsRequest>,
    ) -> Result<Response<ListRoomsResponse>, Status> {
        metrics::observe("ListRooms", async move {
            let rooms = Control::list_rooms(self, req.into_inner()).await?;
            Ok(Response::new(ListRoomsResponse { rooms }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_bus::MemoryBus;

    fn control(bus: &MemoryBus) -> Control {
        Control::new(
            ControlConfig::default(),
            Arc::new(bus.clone()),
            Arc::new(StaticEdges(vec!["edge-1".into()])),
        )
    }

    #[tokio::test]
    async fn emit_is_routed_by_interest_and_encoded_once() {
        let bus = MemoryBus::default();
        let s = Subjects::new("roomcast");
        let mut room_a = bus.subscribe(&s.room("/", "a"), None).await.expect("sub");
        let mut room_b = bus.subscribe(&s.room("/", "b"), None).await.expect("sub");
        let mut edges = bus.subscribe(&s.edges(), None).await.expect("sub");
        let mut ns = bus.subscribe(&s.namespace("/"), None).await.expect("sub");
        let sid = roomcast_bus::names::new_id();
        control(&bus)
            .emit(EmitRequest {
                to: Some(Selector {
                    rooms: vec!["a".into(), "b".into(), "a".into(), sid.clone()],
                    ..Selector::default()
                }),
                event: "chat".into(),
                args_json: "[{\"x\":1}]".into(),
                ..EmitRequest::default()
            })
            .await
            .expect("emit");
        let a = room_a.try_next().expect("room a");
        assert!(
            room_a.try_next().is_none(),
            "a duplicate room is published once"
        );
        let b = room_b.try_next().expect("room b");
        let e = edges
            .try_next()
            .expect("a socket-id room goes through the edges subject");
        assert!(ns.try_next().is_none());
        assert_eq!(&a.payload[..], b"42[\"chat\",{\"x\":1}]");
        assert_eq!(a.payload, b.payload);
        let Ok(Command::Emit { target, .. }) = Command::decode(&e.headers, e.payload) else {
            panic!("an emit command");
        };
        assert_eq!(target.sockets, vec![sid]);

        control(&bus)
            .emit(EmitRequest {
                event: "all".into(),
                ..EmitRequest::default()
            })
            .await
            .expect("emit to namespace");
        assert_eq!(
            &ns.try_next().expect("namespace").payload[..],
            b"42[\"all\"]"
        );
    }

    #[tokio::test]
    async fn join_waits_for_edges_and_reports_missing_ones() {
        let bus = MemoryBus::default();
        let c = Control::new(
            ControlConfig {
                request_timeout: Duration::from_millis(50),
                ..ControlConfig::default()
            },
            Arc::new(bus.clone()),
            Arc::new(StaticEdges(vec!["edge-1".into()])),
        );
        let err = c
            .rooms_command(
                RoomsRequest {
                    target: None,
                    rooms: vec!["r".into()],
                },
                true,
            )
            .await
            .expect_err("no edge answers");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::DeadlineExceeded
        );
    }
}
