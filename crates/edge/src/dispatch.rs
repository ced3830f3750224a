//! Command dispatch: what an edge does with each message of the subjects it
//! subscribes to, and the answers to the commands that expect one.
//!
//! Each subject has one reader task ([`read_subject`]). What it must keep in
//! order it does itself, before it reads the next message:
//! - emits and replies are delivered on the reader: emits to a room from one
//!   producer reach the sockets in the order they were published;
//! - an emit with ack registers its acks and writes its packet on the reader
//!   too (in order with the emits around it), only its answer is sent off it.
//!
//! What may wait on I/O runs on tasks the edge tracks (stopped at shutdown),
//! so that one slow command does not hold up the next message of the subject:
//! - joins, leaves and disconnects ("membership commands") subscribe and
//!   unsubscribe, wait for the bus to confirm, record presence and announce
//!   disconnects. They run one after another per subject, in arrival order
//!   (each waits for the previous one), and a command's change is applied
//!   before its answer is sent;
//! - fetches, room lists and pings only read the index, and answer at once.
//!
//! A control plane sends the commands that expect an answer with a reply
//! subject, on the subject of each route tag their sockets carry (a command
//! through a tag's subject is for the sockets carrying that tag only), or on
//! the edges subject (every edge gets them), and counts on one answer from
//! each edge it sent to; an edge with no matching socket still answers, with
//! nothing.
//!
//! An emit with ack carries one ack id chosen by the control plane, so its
//! packet is encoded once for every socket. The edge remembers, for each socket
//! it wrote to, where that socket's ack goes ([`crate::acks`]), until the
//! emit's timeout.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use roomcast_bus::envelope::{Closing, Command, EdgeReply, Packet, SocketInfo, Target};
use roomcast_bus::{Message, Subscription};
use roomcast_wire::engineio::Frame;
use roomcast_wire::socketio;
use tokio::task::JoinHandle;

use crate::lifecycle::PRIVATE_HEADERS;
use crate::room_index::SubjectKind;
use crate::session::CloseReason;
use crate::sio::Socket;
use crate::sio::SERVER_DISCONNECT;
use crate::Edge;

/// Longest time an edge keeps waiting for the acks of one emit, whatever the
/// command asks: a bound on the pending-ack table.
const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(300);

/// The membership commands of one subject, run one after another: the task
/// of the last one queued, which the next one waits for.
#[derive(Default)]
pub(crate) struct InOrder {
    last: Option<JoinHandle<()>>,
}

impl InOrder {
    /// Runs `work` on a command task once the command queued before it is done.
    fn then(&mut self, edge: &Edge, work: impl Future<Output = ()> + Send + 'static) {
        let previous = self.last.take();
        self.last = Some(edge.spawn_command(async move {
            if let Some(previous) = previous {
                // It ran to its end or stopped at shutdown: go on either way.
                let _ = previous.await;
            }
            work.await;
        }));
    }
}

/// Spawns the task that reads one subject's messages. Aborting it drops the
/// subscription, which unsubscribes.
pub(crate) fn read_subject(edge: Edge, mut sub: Subscription, kind: SubjectKind) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut in_order = InOrder::default();
        while let Some(msg) = sub.next().await {
            // Boxed, once per message: what handling one takes stays out of
            // the state every subscription's task keeps while idle, and the
            // named `dyn … + Send` type keeps out of the compiler's inference
            // of `Send` the cycle of a join that subscribes, which spawns
            // this reader again.
            let handling: Pin<Box<dyn Future<Output = ()> + Send + '_>> =
                Box::pin(edge.handle_message(msg, &kind, &mut in_order));
            handling.await;
        }
    })
}

impl Edge {
    /// Handles one message of a subject of kind `kind`.
    pub(crate) async fn handle_message(
        &self,
        msg: Message,
        kind: &SubjectKind,
        in_order: &mut InOrder,
    ) {
        if *kind == SubjectKind::AckReplies {
            self.on_ack_reply(msg).await;
            return;
        }
        let headers = msg.headers;
        let cmd = match Command::decode(&headers, msg.payload) {
            Ok(cmd) => cmd,
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "invalid command on the bus");
                return;
            }
        };
        metrics::counter!(crate::metrics::BUS_MESSAGES, "op" => cmd.op()).increment(1);
        let reply = msg.reply;
        let node = self.config().node_id.clone();
        // Through a route tag's subject: for the sockets carrying that tag.
        let scope = kind.tag().map(str::to_owned);
        match cmd {
            Command::Emit {
                target,
                packet,
                volatile,
            } => self.fan_out(&target, packet, volatile, &headers, kind),
            Command::Reply { ns, socket, packet } => {
                let target = self.read_index().socket(&socket).filter(|s| s.ns == ns);
                if let Some(s) = target {
                    self.deliver(&[s], &packet, false, 0);
                }
            }
            Command::EmitWithAck {
                target,
                packet,
                ack_id,
                timeout_ms,
            } => {
                let Some(reply) = reply else { return };
                let timeout = Duration::from_millis(timeout_ms).min(MAX_ACK_TIMEOUT);
                let sockets =
                    self.emit_with_ack(&target, scope.as_deref(), &packet, ack_id, timeout, &reply);
                self.reply_off_reader(reply, EdgeReply::Targets { sockets, node });
            }
            Command::Join { target, rooms } => {
                let edge = self.clone();
                in_order.then(self, async move {
                    let (count, refused) = edge
                        .apply_rooms(&target, scope.as_deref(), &rooms, true)
                        .await;
                    let answer = EdgeReply::Done {
                        count,
                        refused,
                        node,
                    };
                    edge.reply_if_asked(reply.as_deref(), &answer).await;
                });
            }
            Command::Leave { target, rooms } => {
                let edge = self.clone();
                in_order.then(self, async move {
                    let (count, _) = edge
                        .apply_rooms(&target, scope.as_deref(), &rooms, false)
                        .await;
                    let answer = EdgeReply::Done {
                        count,
                        refused: 0,
                        node,
                    };
                    edge.reply_if_asked(reply.as_deref(), &answer).await;
                });
            }
            Command::Disconnect { target, close } => {
                let edge = self.clone();
                in_order.then(self, async move {
                    let count = edge.disconnect(&target, scope.as_deref(), close).await;
                    let answer = EdgeReply::Done {
                        count,
                        refused: 0,
                        node,
                    };
                    edge.reply_if_asked(reply.as_deref(), &answer).await;
                });
            }
            Command::Fetch { target } => {
                let Some(reply) = reply else { return };
                let edge = self.clone();
                self.spawn_command(async move {
                    let sockets = edge.describe(&target, scope.as_deref());
                    edge.reply_if_asked(Some(&reply), &EdgeReply::Sockets { sockets, node })
                        .await;
                });
            }
            Command::ListRooms { ns } => {
                let Some(reply) = reply else { return };
                let rooms = self.read_index().room_counts(&ns);
                self.reply_off_reader(reply, EdgeReply::Rooms { rooms, node });
            }
            Command::Ping => {
                let Some(reply) = reply else { return };
                let hello = self.hello();
                self.reply_off_reader(reply, hello);
            }
        }
    }

    /// Publishes the answer to a command, if it asked for one.
    async fn reply_if_asked(&self, reply: Option<&str>, answer: &EdgeReply) {
        if let Some(reply) = reply {
            self.publish_reply(reply, answer).await;
        }
    }

    /// Publishes an answer on a tracked task: a bus that is slow to take it
    /// does not hold up the subject's next message.
    fn reply_off_reader(&self, reply: String, answer: EdgeReply) {
        let edge = self.clone();
        self.spawn_command(async move { edge.publish_reply(&reply, &answer).await });
    }

    /// Spawns a command's work on a task the edge tracks. It stops at
    /// shutdown wherever it is: a bus or store that is away must not hold up
    /// the edge's exit (nobody waits for its answer any more).
    fn spawn_command(&self, work: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        let stop = self.shutdown_token().clone();
        self.spawn_tracked(async move {
            tokio::select! {
                _ = work => {}
                _ = stop.cancelled() => {}
            }
        })
    }

    fn describe(&self, target: &Target, scope: Option<&str>) -> Vec<SocketInfo> {
        let index = self.read_index();
        let node = &self.config().node_id;
        index
            .selected_in(target, scope)
            .into_iter()
            .map(|socket| {
                let mut rooms = vec![socket.id.clone()];
                rooms.extend(index.rooms_of(&socket.id));
                let handshake = &socket.session.handshake;
                SocketInfo {
                    id: socket.id.clone(),
                    user: socket.user.clone(),
                    ns: socket.ns.clone(),
                    node: node.clone(),
                    rooms,
                    connected_at_ms: socket.connected_at_ms,
                    remote_addr: handshake.remote.map(|a| a.to_string()).unwrap_or_default(),
                    transport: socket.session.transport_name().into(),
                    query: handshake.query.to_vec(&[]),
                    headers: handshake.headers.to_vec(&PRIVATE_HEADERS),
                    data_json: socket.data_json.clone(),
                }
            })
            .collect()
    }

    /// Disconnects the selected sockets from their namespace (the client sees
    /// "io server disconnect"), and closes their connections as `close` says:
    /// a backend's close at once, an eviction once the connection holds no
    /// other socket (another namespace of the same client may be the newer
    /// connection the limit made room for).
    async fn disconnect(&self, target: &Target, scope: Option<&str>, close: Closing) -> u64 {
        let sockets = self.read_index().selected_in(target, scope);
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
            self.announce_disconnect(socket, SERVER_DISCONNECT).await;
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
        scope: Option<&str>,
        packet: &Packet,
        ack_id: u64,
        timeout: Duration,
        reply: &str,
    ) -> Vec<String> {
        let selected = self.read_index().selected_in(target, scope);
        let sent = self.acks().register(
            selected,
            |s: &std::sync::Arc<Socket>| s.id.as_str(),
            ack_id,
            reply,
        );
        // Registered before written: an ack cannot arrive before its entry.
        self.deliver(&sent, packet, false, 0);
        let ids: Vec<String> = sent.iter().map(|s| s.id.clone()).collect();
        let edge = self.clone();
        let stop = self.shutdown_token().clone();
        let registered = ids.clone();
        self.spawn_tracked(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = stop.cancelled() => {}
            }
            edge.acks().forget(&registered, ack_id);
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
        let Some(reply) = self.acks().take(&socket.id, id) else {
            return;
        };
        let ack = EdgeReply::Ack {
            node: self.config().node_id.clone(),
            socket: socket.id.clone(),
            args: Packet {
                text: Bytes::from(args_json),
                attachments,
            },
        };
        self.publish_reply(&reply, &ack).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use roomcast_bus::envelope::{Command, EdgeReply, Target};
    use roomcast_bus::subject::Subjects;
    use roomcast_bus::{Bus, BusError, Headers, MemoryBus, Subscription};
    use tokio::sync::Semaphore;

    use crate::sink::TransportKind;
    use crate::sio::Socket;
    use crate::{Authenticator, Edge, EdgeConfig};

    /// The memory bus, except that subscribing to `held` waits for a permit:
    /// a bus that is slow to make one subscription.
    struct SlowToSubscribe {
        bus: Arc<MemoryBus>,
        held: String,
        permits: Semaphore,
        waiting: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Bus for SlowToSubscribe {
        async fn publish(
            &self,
            subject: &str,
            headers: Headers,
            payload: bytes::Bytes,
            reply: Option<&str>,
        ) -> Result<(), BusError> {
            self.bus.publish(subject, headers, payload, reply).await
        }

        async fn subscribe(
            &self,
            subject: &str,
            queue: Option<&str>,
        ) -> Result<Subscription, BusError> {
            if subject == self.held {
                self.waiting.fetch_add(1, Ordering::AcqRel);
                let permit = self.permits.acquire().await.map_err(|_| BusError::Closed)?;
                permit.forget();
            }
            self.bus.subscribe(subject, queue).await
        }

        fn new_inbox(&self) -> String {
            self.bus.new_inbox()
        }
    }

    async fn request(bus: &MemoryBus, subject: &str, cmd: &Command) -> Subscription {
        let (headers, payload) = cmd.encode();
        bus.request(subject, headers, payload)
            .await
            .expect("request")
    }

    async fn answer(sub: &mut Subscription) -> EdgeReply {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
            .await
            .expect("an answer in time")
            .expect("the bus is open");
        EdgeReply::decode(&msg.headers, msg.payload).expect("an edge's answer")
    }

    /// Polls `cond` until it holds, for at most ten seconds.
    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_join_waiting_for_its_subscription_holds_up_neither_fetches_nor_the_order_of_joins_and_leaves(
    ) {
        let memory = Arc::new(MemoryBus::default());
        let config = EdgeConfig::default();
        let subjects = Subjects::new(&config.cluster);
        let bus = Arc::new(SlowToSubscribe {
            bus: memory.clone(),
            held: subjects.room("/", "slow"),
            permits: Semaphore::new(0),
            waiting: AtomicUsize::new(0),
        });
        let auth = Authenticator::new(None, true).expect("auth");
        let edge = Edge::start(config, auth, bus.clone(), None, None)
            .await
            .expect("edge");
        let socket = Arc::new(Socket {
            id: "s1".into(),
            ns: "/".into(),
            user: String::new(),
            connected_at_ms: 0,
            data_json: String::new(),
            session: edge.open_session(TransportKind::WebSocket, Default::default()),
            pid: None,
            gate: Default::default(),
            record_revision: Default::default(),
        });
        edge.add_socket(&socket, &[]).await;
        let target = Target {
            ns: "/".into(),
            sockets: vec!["s1".into()],
            ..Target::default()
        };
        let rooms = vec!["slow".to_owned()];

        let mut joined = request(
            &memory,
            &subjects.edges(),
            &Command::Join {
                target: target.clone(),
                rooms: rooms.clone(),
            },
        )
        .await;
        wait_for("the join waits for its subscription", || {
            bus.waiting.load(Ordering::Acquire) == 1
        })
        .await;

        // The edges subject's next command is answered meanwhile.
        let mut fetched = request(
            &memory,
            &subjects.edges(),
            &Command::Fetch {
                target: target.clone(),
            },
        )
        .await;
        match answer(&mut fetched).await {
            EdgeReply::Sockets { sockets, .. } => {
                assert_eq!(sockets.len(), 1);
                assert_eq!(sockets[0].id, "s1");
            }
            other => panic!("not a fetch's answer: {other:?}"),
        }
        // A leave sent after the join is applied after it, and answered after it.
        let mut left = request(
            &memory,
            &subjects.edges(),
            &Command::Leave {
                target: target.clone(),
                rooms: rooms.clone(),
            },
        )
        .await;
        assert!(joined.try_next().is_none(), "the join is not done yet");
        assert!(left.try_next().is_none(), "the leave waits for the join");

        bus.permits.add_permits(1);
        match answer(&mut joined).await {
            EdgeReply::Done { count, refused, .. } => assert_eq!((count, refused), (1, 0)),
            other => panic!("not a join's answer: {other:?}"),
        }
        match answer(&mut left).await {
            EdgeReply::Done { count, .. } => assert_eq!(count, 1),
            other => panic!("not a leave's answer: {other:?}"),
        }
        assert!(
            edge.read_index().rooms_of("s1").is_empty(),
            "the leave came last"
        );
        assert_eq!(edge.room_subscription_count(), 0);
        edge.shutdown().await;
    }
}
