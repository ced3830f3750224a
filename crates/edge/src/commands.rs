//! Commands that edges answer: joins and leaves, fetches, disconnects, emits
//! that wait for acks, and the heartbeat by which control planes know which
//! edges exist.
//!
//! A control plane sends these on the edges subject (every edge gets them) with
//! a reply subject, and counts on one answer from each live edge; an edge with
//! no matching socket still answers, with nothing.
//!
//! An emit with ack carries one ack id chosen by the control plane, so its
//! packet is encoded once for every socket. The edge remembers, for each socket
//! it wrote to, where that socket's ack goes, until the emit's timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roomcast_bus::envelope::{Closing, Command, EdgeReply, Packet, SocketInfo, Target};
use roomcast_wire::engineio::Frame;
use roomcast_wire::socketio;

use crate::session::CloseReason;
use crate::sio::Socket;
use crate::Edge;

/// Longest time an edge keeps waiting for the acks of one emit, whatever the
/// command asks: a bound on the pending-ack table.
const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(300);

/// Handshake headers FetchSockets never shows: they carry credentials.
pub(crate) const PRIVATE_HEADERS: [&str; 2] = ["authorization", "cookie"];

/// How long a stopping edge tries to say "bye".
const BYE_TIMEOUT: Duration = Duration::from_secs(1);

impl Edge {
    /// Answers a command that expects a reply.
    pub(crate) async fn answer(&self, cmd: Command, reply: Option<&str>) {
        let node = self.inner.config.node_id.clone();
        let answer = match cmd {
            Command::Join { target, rooms } => {
                let (count, refused) = self.apply_rooms(&target, &rooms, true).await;
                EdgeReply::Done {
                    count,
                    refused,
                    node,
                }
            }
            Command::Leave { target, rooms } => EdgeReply::Done {
                count: self.apply_rooms(&target, &rooms, false).await.0,
                refused: 0,
                node,
            },
            Command::Disconnect { target, close } => EdgeReply::Done {
                count: self.disconnect(&target, close).await,
                refused: 0,
                node,
            },
            Command::Fetch { target } => EdgeReply::Sockets {
                sockets: self.describe(&target),
                node,
            },
            Command::ListRooms { ns } => EdgeReply::Rooms {
                rooms: self.read_index().room_counts(&ns),
                node,
            },
            Command::EmitWithAck {
                target,
                packet,
                ack_id,
                timeout_ms,
            } => {
                let Some(reply) = reply else { return };
                let timeout = Duration::from_millis(timeout_ms).min(MAX_ACK_TIMEOUT);
                EdgeReply::Targets {
                    sockets: self.emit_with_ack(&target, &packet, ack_id, timeout, reply),
                    node,
                }
            }
            Command::Ping => EdgeReply::Hello { node },
            Command::Emit { .. } | Command::Reply { .. } => return,
        };
        if let Some(reply) = reply {
            self.publish_reply(reply, &answer).await;
        }
    }

    pub(crate) async fn publish_reply(&self, subject: &str, reply: &EdgeReply) {
        let (headers, payload) = reply.encode();
        if let Err(e) = self
            .inner
            .bus
            .publish(subject, headers, payload, None)
            .await
        {
            tracing::warn!(%subject, error = %e, "reply not published");
        }
    }

    /// The local sockets a target selects.
    fn selected(&self, target: &Target) -> Vec<Arc<Socket>> {
        let index = self.read_index();
        index
            .select(target)
            .iter()
            .filter_map(|sid| index.socket(sid))
            .collect()
    }

    fn describe(&self, target: &Target) -> Vec<SocketInfo> {
        let index = self.read_index();
        index
            .select(target)
            .iter()
            .filter_map(|sid| {
                let socket = index.socket(sid)?;
                let mut rooms = vec![socket.id.clone()];
                rooms.extend(index.rooms_of(sid));
                let handshake = &socket.session.handshake;
                Some(SocketInfo {
                    id: socket.id.clone(),
                    user: socket.user.clone(),
                    ns: socket.ns.clone(),
                    node: self.inner.config.node_id.clone(),
                    rooms,
                    connected_at_ms: socket.connected_at_ms,
                    remote_addr: handshake.remote.map(|a| a.to_string()).unwrap_or_default(),
                    transport: socket.session.outbox.transport().name().into(),
                    query: handshake.query.to_vec(&[]),
                    headers: handshake.headers.to_vec(&PRIVATE_HEADERS),
                    data_json: socket.data_json.clone(),
                })
            })
            .collect()
    }

    /// Disconnects the selected sockets from their namespace (the client sees
    /// "io server disconnect"), and closes their connections as `close` says:
    /// a backend's close at once, an eviction once the connection holds no
    /// other socket (another namespace of the same client may be the newer
    /// connection the limit made room for).
    async fn disconnect(&self, target: &Target, close: Closing) -> u64 {
        let sockets = self.selected(target);
        for socket in &sockets {
            let session = &socket.session;
            let others = {
                let mut sio = session.sio();
                sio.sockets.remove(&socket.ns);
                !sio.sockets.is_empty()
            };
            let _ = session
                .outbox
                .push(&[Frame::Text(socketio::encode_disconnect(&socket.ns))]);
            self.remove_socket(socket).await;
            self.announce_disconnect(socket, crate::lifecycle::SERVER_DISCONNECT)
                .await;
            match close {
                Closing::Keep => {}
                Closing::Close => self.close_session(session, CloseReason::ForcedClose),
                Closing::Evict if !others => self.close_session(session, CloseReason::Evicted),
                Closing::Evict => {}
            }
        }
        sockets.len() as u64
    }

    /// Writes an ack-asking packet to the selected sockets and registers where
    /// their acks go. Returns the ids of the sockets written to.
    fn emit_with_ack(
        &self,
        target: &Target,
        packet: &Packet,
        ack_id: u64,
        timeout: Duration,
        reply: &str,
    ) -> Vec<String> {
        let mut sent = Vec::new();
        {
            let mut acks = self.acks();
            for socket in self.selected(target) {
                // Two control planes may pick the same id for one socket; the
                // second emit then leaves that socket out rather than steal the
                // first one's ack.
                let key = (socket.id.clone(), ack_id);
                if acks.contains_key(&key) {
                    continue;
                }
                acks.insert(key, reply.to_owned());
                sent.push(socket);
            }
        }
        // Registered before written: an ack cannot arrive before its entry.
        self.deliver(&sent, packet, false, 0);
        let ids: Vec<String> = sent.iter().map(|s| s.id.clone()).collect();
        let keys: Vec<(String, u64)> = ids.iter().map(|id| (id.clone(), ack_id)).collect();
        let edge = self.clone();
        let stop = self.inner.shutdown.clone();
        self.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = stop.cancelled() => {}
            }
            let mut acks = edge.acks();
            for key in keys {
                acks.remove(&key);
            }
        });
        ids
    }

    /// A client answered a server emit: forward the ack to whoever waits for it.
    /// Unknown and late acks are ignored, as Socket.IO servers do.
    pub(crate) async fn on_client_ack(
        &self,
        socket: &Socket,
        ack_id: Option<u64>,
        args_json: String,
        attachments: Vec<Bytes>,
    ) {
        let Some(id) = ack_id else { return };
        let Some(reply) = self.acks().remove(&(socket.id.clone(), id)) else {
            return;
        };
        let ack = EdgeReply::Ack {
            node: self.inner.config.node_id.clone(),
            socket: socket.id.clone(),
            args: Packet {
                text: Bytes::from(args_json),
                attachments,
            },
        };
        self.publish_reply(&reply, &ack).await;
    }

    /// Says "alive" on the heartbeats subject every heartbeat interval until
    /// shutdown, then "bye".
    pub(crate) async fn heartbeat_loop(&self) {
        let subject = self.inner.subjects.heartbeats();
        let hello = EdgeReply::Hello {
            node: self.inner.config.node_id.clone(),
        };
        let interval = self.inner.config.heartbeat_interval;
        loop {
            // While NATS is away publishes queue up and, once the queue is
            // full, wait: a heartbeat never waits longer than its interval.
            let _ = tokio::time::timeout(interval, self.publish_reply(&subject, &hello)).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.inner.shutdown.cancelled() => break,
            }
        }
        let bye = EdgeReply::Bye {
            node: self.inner.config.node_id.clone(),
        };
        // A bus that is down must not hold up the shutdown.
        let _ = tokio::time::timeout(BYE_TIMEOUT, self.publish_reply(&subject, &bye)).await;
    }
}
