//! The control plane: the gRPC API backends use, served over the bus.
//!
//! The control plane holds no state of its own (at-least-once emits keep
//! theirs in a store shared by every control plane, see [`delivery`]). `Emit`
//! checks the request and encodes the Socket.IO packet once (an emit plan,
//! see `plan`) and publishes it on the subjects of the target rooms (or of
//! the namespace, or the edges subject for sockets named by id); edges
//! deliver it. `JoinRooms`/`LeaveRooms` ask every edge and wait for their
//! confirmations, so an emit that follows the call reaches the new members.
//! `ConsumeEvents` streams the client events edges publish, and `Reply` sends
//! a backend's answer to the edge that holds the socket.
//!
//! Layout, each module depending only on those after it:
//! - [`grpc`]: the tonic service; measures each call and hands it to
//!   [`Control`] (this file), which holds the API's calls.
//! - [`delivery`]: at-least-once emits and inboxes: `model` (records and
//!   states), `store` (`Records`: where they live), `worker` (the retry loop, its
//!   tasks owned and joined at shutdown).
//! - `streams`: the tasks that forward bus subscriptions into gRPC streams.
//! - `fanout`: the way out to the edges (publish an emit, ask every edge,
//!   gather acks).
//! - `plan`: the emit plan, one check and one encoding of an emit for
//!   every path; `selector`: names and selectors, and their bounds.
//! - [`edges`]: which edges are alive, and one answer from each;
//!   [`auth`]: API keys; [`error`]: domain errors and their one mapping to
//!   gRPC codes; [`metrics`]: metric names.

#![forbid(unsafe_code)]

pub mod auth;
pub mod delivery;
pub mod edges;
pub mod error;
mod fanout;
pub mod grpc;
pub mod metrics;
mod plan;
mod routing;
mod selector;
mod streams;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use roomcast_api::v1::{
    ClientEvent, ConnectionEvent, ConsumeEventsRequest, DisconnectSocketsRequest, EmitRequest,
    EmitWithAckRequest, EmitWithAckResponse, FetchSocketsRequest, GetPresenceRequest,
    GetPresenceResponse, ListRoomsRequest, PresenceEvent, ReplyRequest, RoomInfo, RoomsRequest,
    Selector, SocketInfo, UserPresence, WatchConnectionsRequest, WatchPresenceRequest,
};
use roomcast_bus::envelope::{self, Closing, Command, EdgeReply, Packet};
use roomcast_bus::subject::Subjects;
use roomcast_bus::Bus;
use roomcast_presence::{EventKind, Presence};
use roomcast_wire::socketio;
use tonic::Status;

pub use error::ControlError;
pub use grpc::{EMITTED_TRAILER, LIVE_HEADER};

use fanout::Fanout;
pub use fanout::RoutedEmit;
use plan::EmitPlan;
use selector::Limits;
use streams::Streams;

pub use delivery::{Delivery, DeliveryConfig};
pub use edges::{EdgeDirectory, LiveEdges, RouteTable, StaticEdges};
pub use routing::CommandRouting;

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
    /// How commands for sockets and users reach edges.
    pub command_routing: CommandRouting,
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
            command_routing: CommandRouting::Directory,
        }
    }
}

/// The control plane's calls, served by [`grpc`].
#[derive(Clone)]
pub struct Control {
    fanout: Fanout,
    limits: Limits,
    config: Arc<ControlConfig>,
    presence: Option<Presence>,
    /// At-least-once emits and inboxes; needs presence.
    delivery: Option<Delivery>,
    streams: Streams,
}

impl Control {
    pub fn new(config: ControlConfig, bus: Arc<dyn Bus>, edges: Arc<dyn EdgeDirectory>) -> Self {
        Self {
            fanout: Fanout::new(
                bus,
                Subjects::new(&config.cluster),
                edges,
                config.command_routing,
                config.request_timeout,
            ),
            limits: Limits {
                max_payload: config.max_payload,
                max_attachments: config.max_attachments,
                max_selector_size: config.max_selector_size,
            },
            config: Arc::new(config),
            presence: None,
            delivery: None,
            streams: Streams::default(),
        }
    }

    /// Ends the open ConsumeEvents, WatchConnections and WatchPresence
    /// streams (each with `UNAVAILABLE`).
    pub fn shutdown(&self) {
        self.streams.shutdown();
    }

    /// After [`Control::shutdown`]: waits, for at most `bound`, until the
    /// tasks of the streams ended; returns whether they all did.
    pub async fn join(&self, bound: Duration) -> bool {
        self.streams.join(bound).await
    }

    /// Serves GetPresence and WatchPresence from this presence.
    pub fn with_presence(mut self, presence: Presence) -> Self {
        self.fanout.set_presence(presence.clone());
        self.presence = Some(presence);
        self
    }

    /// Keeps emits to recoverable rooms in the recovery history.
    pub fn with_recovery(mut self, recovery: roomcast_bus::recovery::Recovery) -> Self {
        self.fanout.set_recovery(recovery);
        self
    }

    /// Serves at-least-once emits, GetDelivery and the inbox calls, keeping
    /// their state in `store`; `me` names this control plane as queue owner.
    /// Needs presence (call [`Control::with_presence`] first). Start the
    /// returned [`Delivery`] ([`Delivery::start`]) to follow connects and
    /// take over queues, and shut it down ([`Delivery::shutdown`]) at exit.
    pub fn with_delivery(
        mut self,
        store: Arc<dyn roomcast_bus::KvStore>,
        cfg: DeliveryConfig,
        me: String,
    ) -> Result<(Self, Delivery), ControlError> {
        // Deliveries follow the connects presence announces.
        self.presence()?;
        let delivery = Delivery::new(self.fanout.clone(), self.limits, store, cfg, me);
        self.delivery = Some(delivery.clone());
        Ok((self, delivery))
    }

    fn delivery(&self) -> Result<&Delivery, ControlError> {
        self.delivery.as_ref().ok_or(ControlError::DeliveryOff)
    }

    fn presence(&self) -> Result<&Presence, ControlError> {
        self.presence.as_ref().ok_or(ControlError::PresenceOff)
    }

    fn bus(&self) -> &dyn Bus {
        self.fanout.bus().as_ref()
    }

    fn subjects(&self) -> &Subjects {
        self.fanout.subjects()
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

    /// Checks and publishes an emit; the packet is encoded here, once.
    pub async fn emit(&self, req: EmitRequest) -> Result<(), ControlError> {
        let routed = self.route_emit(req).await?;
        self.fanout.publish_routed(routed).await
    }

    /// Checks, encodes and routes an emit of a stream (not at-least-once),
    /// to be published with [`Control::publish_routed`].
    pub async fn route_emit(&self, req: EmitRequest) -> Result<RoutedEmit, ControlError> {
        if req.at_least_once {
            return Err(ControlError::AckedInStream);
        }
        if req.ttl_ms != 0 {
            return Err(ControlError::TtlWithoutAck);
        }
        let target = self.limits.target(req.to)?;
        let plan = EmitPlan::new(
            &self.limits,
            target,
            &req.event,
            &req.args_json,
            req.attachments,
        )?;
        let encoded = plan.encode(None)?;
        Ok(self
            .fanout
            .route_emit(encoded.target, encoded.packet, req.volatile)
            .await)
    }

    /// Publishes an emit routed by [`Control::route_emit`].
    pub async fn publish_routed(&self, routed: RoutedEmit) -> Result<(), ControlError> {
        self.fanout.publish_routed(routed).await
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
        let target = self.limits.target(req.to)?;
        let plan = EmitPlan::new(
            &self.limits,
            target,
            &req.event,
            &req.args_json,
            req.attachments,
        )?;
        let ack_id = self.fanout.ack_id();
        let encoded = plan.encode(Some(ack_id))?;
        self.fanout
            .emit_with_ack(encoded.target, encoded.packet, ack_id, timeout)
            .await
    }

    /// User statuses and room members.
    pub async fn get_presence(
        &self,
        req: GetPresenceRequest,
    ) -> Result<GetPresenceResponse, ControlError> {
        let presence = self.presence()?;
        let users = selector::user_ids(&req.user_ids)?;
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
            Some(selector::namespace(&req.namespace)?)
        };
        let room = (!req.room.is_empty())
            .then(|| selector::rooms(std::slice::from_ref(&req.room)))
            .transpose()?
            .map(|mut r| r.remove(0));
        let users: HashSet<String> = selector::user_ids(&req.user_ids)?.into_iter().collect();
        let sub = self
            .bus()
            .subscribe(&self.subjects().presence_events(), None)
            .await?;
        // Live before the response headers go out: they are the caller's
        // signal that nothing after them is missed.
        self.bus().sync().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(self.config.consumer_buffer);
        self.streams.forward(sub, tx, move |msg| {
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
        let target = self.limits.target(req.target)?;
        self.limits
            .check_list("rooms to join or leave", req.rooms.len())?;
        let rooms = selector::rooms(&req.rooms)?;
        if rooms.is_empty() {
            return Err(ControlError::NoRooms);
        }
        let cmd = if join {
            Command::Join { target, rooms }
        } else {
            Command::Leave { target, rooms }
        };
        let replies = self.fanout.ask_edges(&cmd).await?;
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
            target: self.limits.target(req.target)?,
            close: if req.close {
                Closing::Close
            } else {
                Closing::Keep
            },
        };
        Ok(Self::count(&self.fanout.ask_edges(&cmd).await?))
    }

    /// Describes the selected sockets of every edge.
    pub async fn fetch(&self, req: FetchSocketsRequest) -> Result<Vec<SocketInfo>, ControlError> {
        let cmd = Command::Fetch {
            target: self.limits.target(req.target)?,
        };
        let mut out = Vec::new();
        for reply in self.fanout.ask_edges(&cmd).await? {
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
        let ns = selector::namespace(&req.namespace)?;
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for reply in self.fanout.ask_edges(&Command::ListRooms { ns }).await? {
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

    /// Sends a backend's answer to a client's ack.
    pub async fn reply(&self, req: ReplyRequest) -> Result<(), ControlError> {
        // Only node subjects of this cluster: a backend cannot publish elsewhere.
        if !self.subjects().is_node(&req.reply_to) {
            return Err(ControlError::InvalidReplyTo);
        }
        let ns = selector::namespace(&req.namespace)?;
        let socket = selector::socket_ids(std::slice::from_ref(&req.socket_id))?.remove(0);
        let args = socketio::parse_args(&req.args_json)?;
        let attachments: Vec<bytes::Bytes> = req
            .attachments
            .into_iter()
            .map(bytes::Bytes::from)
            .collect();
        if attachments.len() > self.limits.max_attachments {
            return Err(ControlError::TooManyAttachments(
                attachments.len(),
                self.limits.max_attachments,
            ));
        }
        socketio::check_args_attachments(&req.args_json, attachments.len())?;
        let text = socketio::encode_ack(&ns, req.ack_id, &args, attachments.len());
        plan::check_size(self.limits.max_payload, &text, &attachments)?;
        let cmd = Command::Reply {
            ns,
            socket,
            packet: Packet { text, attachments },
        };
        self.fanout.publish_to(&req.reply_to, &cmd).await
    }

    /// Streams sockets' connects and disconnects, live once it returns.
    pub async fn watch_connections(
        &self,
        req: WatchConnectionsRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ConnectionEvent, Status>>, ControlError> {
        let ns = if req.namespace.is_empty() {
            None
        } else {
            Some(selector::namespace(&req.namespace)?)
        };
        let group = (!req.group.is_empty()).then_some(req.group.as_str());
        let sub = self
            .bus()
            .subscribe(&self.subjects().connections(ns.as_deref()), group)
            .await?;
        self.bus().sync().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(self.config.consumer_buffer);
        self.streams.forward(sub, tx, |msg| {
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
            Some(selector::namespace(&req.namespace)?)
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
            let subject = self.subjects().client_events(ns.as_deref(), event);
            subs.push(self.bus().subscribe(&subject, group).await?);
        }
        // Live before the response headers go out: they are the caller's
        // signal that events sent after them reach the stream.
        self.bus().sync().await?;
        for sub in subs {
            self.streams.forward(sub, tx.clone(), |msg| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_bus::MemoryBus;

    fn control(bus: &MemoryBus) -> Control {
        Control::new(
            ControlConfig::default(),
            Arc::new(bus.clone()),
            Arc::new(StaticEdges::new(vec!["edge-1".into()])),
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
        let tag = roomcast_bus::names::tag_of(&sid).expect("a socket id carries a tag");
        let mut tagged = bus.subscribe(&s.tag(tag), None).await.expect("sub");
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
        let e = tagged
            .try_next()
            .expect("a socket-id room goes through the subject of its route tag");
        assert!(edges.try_next().is_none(), "not to every edge");
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
    async fn shutdown_ends_streams_with_unavailable_and_joins_their_tasks() {
        let bus = MemoryBus::default();
        let c = control(&bus);
        let mut events = c
            .consume(ConsumeEventsRequest::default())
            .await
            .expect("consume");
        let mut connections = c
            .watch_connections(WatchConnectionsRequest::default())
            .await
            .expect("watch");
        assert_eq!(c.streams.running(), 2);
        c.shutdown();
        assert!(c.join(Duration::from_secs(5)).await, "tasks joined");
        assert_eq!(c.streams.running(), 0);
        for status in [
            events
                .recv()
                .await
                .expect("a last word")
                .expect_err("an error"),
            connections
                .recv()
                .await
                .expect("a last word")
                .expect_err("an error"),
        ] {
            assert_eq!(status.code(), tonic::Code::Unavailable);
        }
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
            Arc::new(StaticEdges::new(vec!["edge-1".into()])),
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

    /// An edge listening on its own route tag and on one it recovered
    /// sockets of: a join for a user with a socket under each tag waits for
    /// its answer to both copies, and only for it (edge-2 never answers).
    #[tokio::test]
    async fn a_join_waits_for_each_copy_an_edge_gets_and_for_no_other_edge() {
        use roomcast_bus::envelope::Routing;
        use roomcast_bus::names::{new_socket_id, route_tag};
        use roomcast_presence::{PresenceConfig, SocketRecord};

        struct TwoEdges;
        impl EdgeDirectory for TwoEdges {
            fn live(&self) -> Vec<String> {
                vec!["edge-1".into(), "edge-2".into()]
            }
            fn routes(&self) -> Option<RouteTable> {
                let e1 = Routing {
                    listed: true,
                    tags: vec![route_tag("gone")],
                };
                let e2 = Routing {
                    listed: true,
                    tags: Vec::new(),
                };
                Some(RouteTable::new([("edge-1", &e1), ("edge-2", &e2)]))
            }
        }
        let bus = MemoryBus::default();
        let presence = Presence::new(
            Arc::new(roomcast_bus::memory::MemoryKv::default()),
            Arc::new(bus.clone()),
            PresenceConfig::default(),
        );
        let (own, moved) = (
            new_socket_id(&route_tag("edge-1")),
            new_socket_id(&route_tag("gone")),
        );
        for id in [&own, &moved] {
            let rec = SocketRecord {
                id: id.clone(),
                user: "u".into(),
                ns: "/".into(),
                node: "edge-1".into(),
                rooms: Vec::new(),
                connected_at_ms: 0,
            };
            presence.connected(&rec).await.expect("recorded");
        }
        // edge-1 answers the copy of each tag, the second one late.
        let s = Subjects::new("roomcast");
        for (tag, delay) in [(route_tag("edge-1"), 0), (route_tag("gone"), 200)] {
            let mut sub = bus.subscribe(&s.tag(&tag), None).await.expect("sub");
            let answering = bus.clone();
            tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let done = EdgeReply::Done {
                        node: "edge-1".into(),
                        count: 1,
                        refused: 0,
                    };
                    let (h, p) = done.encode();
                    let reply = msg.reply.expect("a request");
                    answering.publish(&reply, h, p, None).await.expect("answer");
                }
            });
        }
        let c = Control::new(
            ControlConfig {
                request_timeout: Duration::from_secs(2),
                ..ControlConfig::default()
            },
            Arc::new(bus.clone()),
            Arc::new(TwoEdges),
        )
        .with_presence(presence);
        let joined = c
            .rooms_command(
                RoomsRequest {
                    target: Some(Selector {
                        user_ids: vec!["u".into()],
                        ..Selector::default()
                    }),
                    rooms: vec!["r".into()],
                },
                true,
            )
            .await
            .expect("edge-1 answered both copies; edge-2 was not asked");
        assert_eq!(joined, 2, "both answers counted");
    }
}
