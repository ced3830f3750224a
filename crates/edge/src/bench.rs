//! Entry points for the benchmarks in `benches/`: the fan-out path from a bus
//! message to the recipients' queues, without transports. Not an API.

use std::sync::Arc;

use roomcast_bus::envelope::{Command, Packet, Target};
use roomcast_bus::subject::Subjects;
use roomcast_bus::{MemoryBus, Message};

use crate::dispatch::InOrder;
use crate::room_index::SubjectKind;
use crate::sink::TransportKind;
use crate::sio::Socket;
use crate::{Authenticator, Edge, EdgeConfig};

/// An edge whose `members` sockets (WebSocket sessions with no connection)
/// are all in one room of `/`.
pub struct Room {
    edge: Edge,
    sockets: Vec<Arc<Socket>>,
    subject: String,
    name: String,
}

impl Room {
    pub async fn new(members: usize) -> Result<Room, String> {
        let auth = Authenticator::new(None, true).map_err(|e| e.to_string())?;
        let edge = Edge::start(
            EdgeConfig {
                outbound_queue_bytes: usize::MAX / 2,
                ..EdgeConfig::default()
            },
            auth,
            Arc::new(MemoryBus::default()),
            None,
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
        let name = "bench-room".to_owned();
        let mut sockets = Vec::with_capacity(members);
        for i in 0..members {
            let session = edge.open_session(TransportKind::WebSocket, Default::default());
            let socket = Arc::new(Socket {
                id: format!("bench-socket-{i:08}"),
                ns: "/".into(),
                user: String::new(),
                connected_at_ms: 0,
                data_json: String::new(),
                session,
                pid: None,
                gate: Default::default(),
                record_revision: Default::default(),
            });
            edge.add_socket(&socket, std::slice::from_ref(&name)).await;
            sockets.push(socket);
        }
        let subject = Subjects::new(&edge.config().cluster).room("/", &name);
        let room = Room {
            edge,
            sockets,
            subject,
            name,
        };
        // The Engine.IO open packets each session queued.
        room.drain().await;
        Ok(room)
    }

    /// The bus message of an emit of `text` to the room, encoded once.
    pub fn message(&self, text: bytes::Bytes) -> Message {
        let cmd = Command::Emit {
            target: Target {
                ns: "/".into(),
                rooms: vec![self.name.clone()],
                ..Target::default()
            },
            packet: Packet {
                text,
                attachments: Vec::new(),
            },
            volatile: false,
        };
        let (headers, payload) = cmd.encode();
        Message {
            subject: self.subject.clone(),
            headers,
            payload,
            reply: None,
        }
    }

    /// Handles one bus message as the room's subscription would: decode,
    /// find the local members, queue the same buffer on each.
    pub async fn deliver(&self, msg: Message) {
        let kind = SubjectKind::Room("/".into(), self.name.clone());
        self.edge
            .handle_message(msg, &kind, &mut InOrder::default())
            .await;
    }

    /// Empties every queue, as the writers would; returns the frames taken.
    pub async fn drain(&self) -> usize {
        let mut n = 0;
        for s in &self.sockets {
            while s.session.outbox.queued_bytes() > 0 {
                match s
                    .session
                    .outbox
                    .take(TransportKind::WebSocket, usize::MAX)
                    .await
                {
                    Some(batch) => n += batch.frames.len(),
                    None => break,
                }
            }
        }
        n
    }

    pub async fn close(self) {
        self.edge.shutdown().await;
    }
}
