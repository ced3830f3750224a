//! The control plane: the gRPC API backends use, served over the bus.
//!
//! The control plane holds no state of its own. `Emit` validates the request,
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
pub mod error;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roomcast_api::v1::roomcast_server::Roomcast;
use roomcast_api::v1::{
    ClientEvent, ConsumeEventsRequest, EmitRequest, EmitResponse, ReplyRequest, ReplyResponse,
    RoomsRequest, RoomsResponse, Selector,
};
use roomcast_bus::envelope::{self, reply_error, Command, Target};
use roomcast_bus::names::{looks_like_socket_id, valid_namespace, valid_room};
use roomcast_bus::subject::Subjects;
use roomcast_bus::Bus;
use roomcast_wire::socketio;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub use error::ControlError;

/// Tells the control plane how many edges must confirm a command.
pub trait EdgeDirectory: Send + Sync + 'static {
    fn edge_count(&self) -> usize;
}

/// A fixed number of edges (one, in `roomcast standalone`).
pub struct StaticEdges(pub usize);

impl EdgeDirectory for StaticEdges {
    fn edge_count(&self) -> usize {
        self.0
    }
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub cluster: String,
    /// Largest encoded packet (text and attachments) an emit may produce.
    pub max_payload: usize,
    pub max_attachments: usize,
    /// How long edges have to confirm joins and leaves.
    pub request_timeout: Duration,
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
            consumer_buffer: 1024,
        }
    }
}

/// The `roomcast.v1.Roomcast` service.
#[derive(Clone)]
pub struct Control {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    config: Arc<ControlConfig>,
    edges: Arc<dyn EdgeDirectory>,
}

impl Control {
    pub fn new(config: ControlConfig, bus: Arc<dyn Bus>, edges: Arc<dyn EdgeDirectory>) -> Self {
        Self {
            subjects: Subjects::new(&config.cluster),
            bus,
            config: Arc::new(config),
            edges,
        }
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

    /// Validates a selector. Rooms that have the form of a socket id are also
    /// addressed as sockets: every socket is in the room of its own id, and that
    /// room is never a subject of its own.
    fn target(sel: Option<Selector>) -> Result<Target, ControlError> {
        let sel = sel.unwrap_or_default();
        let rooms = Self::rooms(&sel.rooms)?;
        let mut sockets = Self::socket_ids(&sel.socket_ids)?;
        sockets.extend(rooms.iter().filter(|r| looks_like_socket_id(r)).cloned());
        let mut seen = HashSet::new();
        sockets.retain(|s| seen.insert(s.clone()));
        Ok(Target {
            ns: Self::namespace(&sel.namespace)?,
            rooms,
            sockets,
            except_rooms: Self::rooms(&sel.except_rooms)?,
            except_sockets: Self::socket_ids(&sel.except_socket_ids)?,
        })
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
        let target = Self::target(req.to)?;
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
        let Command::Emit { target, .. } = cmd else {
            return Ok(());
        };
        let (headers, payload) = cmd.encode();
        let mut subjects = Vec::new();
        if target.is_namespace() {
            subjects.push(self.subjects.namespace(&target.ns));
        } else {
            subjects.extend(
                target
                    .rooms
                    .iter()
                    .map(|r| self.subjects.room(&target.ns, r)),
            );
            if !target.sockets.is_empty() {
                subjects.push(self.subjects.edges());
            }
        }
        for subject in subjects {
            self.bus
                .publish(&subject, headers.clone(), payload.clone(), None)
                .await?;
        }
        Ok(())
    }

    /// Asks every edge to apply a join or leave and waits for each to confirm.
    async fn rooms_command(&self, req: RoomsRequest, join: bool) -> Result<(), ControlError> {
        let target = Self::target(req.target)?;
        let rooms = Self::rooms(&req.rooms)?;
        if rooms.is_empty() {
            return Err(ControlError::NoRooms);
        }
        let cmd = if join {
            Command::Join { target, rooms }
        } else {
            Command::Leave { target, rooms }
        };
        let (headers, payload) = cmd.encode();
        let expected = self.edges.edge_count();
        let timeout = self.config.request_timeout;
        let replies = self
            .bus
            .request_many(&self.subjects.edges(), headers, payload, expected, timeout)
            .await?;
        for r in &replies {
            if let Some(e) = reply_error(&r.headers) {
                tracing::warn!(error = %e, "edge refused a rooms command");
            }
        }
        if replies.len() < expected {
            return Err(ControlError::NotConfirmed {
                got: replies.len(),
                expected,
                timeout_ms: timeout.as_millis(),
            });
        }
        Ok(())
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
        for event in events {
            let subject = self.subjects.client_events(ns.as_deref(), event);
            let mut sub = self.bus.subscribe(&subject, group).await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let msg = tokio::select! {
                        _ = tx.closed() => return,
                        msg = sub.next() => msg,
                    };
                    let Some(msg) = msg else { return };
                    let ev = match envelope::ClientEvent::decode(&msg.headers, msg.payload) {
                        Ok(ev) => ev,
                        Err(e) => {
                            tracing::warn!(error = %e, "invalid client event on the bus");
                            continue;
                        }
                    };
                    let out = ClientEvent {
                        socket_id: ev.socket,
                        user_id: ev.user,
                        namespace: ev.ns,
                        event: ev.event,
                        args_json: ev.args_json,
                        attachments: ev.attachments.into_iter().map(|b| b.to_vec()).collect(),
                        ack_id: ev.ack_id,
                        reply_to: ev.reply_to,
                        received_at_ms: ev.received_at_ms,
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(rx)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ClientEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Roomcast for Control {
    async fn emit(&self, req: Request<EmitRequest>) -> Result<Response<EmitResponse>, Status> {
        Control::emit(self, req.into_inner()).await?;
        Ok(Response::new(EmitResponse {}))
    }

    async fn join_rooms(
        &self,
        req: Request<RoomsRequest>,
    ) -> Result<Response<RoomsResponse>, Status> {
        self.rooms_command(req.into_inner(), true).await?;
        Ok(Response::new(RoomsResponse {}))
    }

    async fn leave_rooms(
        &self,
        req: Request<RoomsRequest>,
    ) -> Result<Response<RoomsResponse>, Status> {
        self.rooms_command(req.into_inner(), false).await?;
        Ok(Response::new(RoomsResponse {}))
    }

    type ConsumeEventsStream = EventStream;

    async fn consume_events(
        &self,
        req: Request<ConsumeEventsRequest>,
    ) -> Result<Response<Self::ConsumeEventsStream>, Status> {
        let rx = self.consume(req.into_inner()).await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn reply(&self, req: Request<ReplyRequest>) -> Result<Response<ReplyResponse>, Status> {
        Control::reply(self, req.into_inner()).await?;
        Ok(Response::new(ReplyResponse {}))
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
            Arc::new(StaticEdges(1)),
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
            Arc::new(StaticEdges(1)),
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
