//! Sending to edges: an encoded emit onto the subjects of its target (or into
//! the recovery history of a recoverable room), a command to the edges that
//! hold its sockets ([`crate::routing`]; every edge when it names rooms) with
//! one answer gathered from each, and an emit with an ack id whose acks are
//! gathered until all came or the timeout passed.
//!
//! [`Fanout`] is what both the API ([`crate::Control`]) and at-least-once
//! delivery ([`crate::delivery`]) send through; it knows nothing of either.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roomcast_api::v1::{AckResult, EmitWithAckResponse};
use roomcast_bus::envelope::{self, Command, EdgeReply, Packet, Target};
use roomcast_bus::recovery::Recovery;
use roomcast_bus::subject::Subjects;
use roomcast_bus::Bus;

use crate::edges::{EdgeDirectory, EdgeRequest};
use crate::routing::{retarget, target_of, CommandRouting, Route, Router};
use crate::ControlError;

/// Ack ids stay below this (any client parses them).
const MAX_ACK_ID: u64 = 1 << 31;

/// One copy of an emit: where it goes and what it names.
struct EmitCopy {
    subject: String,
    target: Target,
    /// The room whose subject it goes on.
    room: Option<String>,
}

/// The way out of the control plane to the edges.
#[derive(Clone)]
pub(crate) struct Fanout {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    edges: Arc<dyn EdgeDirectory>,
    router: Router,
    /// How long edges have to confirm a command.
    request_timeout: Duration,
    /// Ack ids of this control plane's emits with an ack: from a random
    /// start, so that two replicas are unlikely to use one id for one socket
    /// at once.
    next_ack_id: Arc<AtomicU64>,
    /// Connection state recovery: emits to recoverable rooms go through its
    /// history.
    recovery: Option<Recovery>,
}

/// An emit whose copies are known, not yet published
/// ([`Fanout::route_emit`]).
pub struct RoutedEmit {
    target: Target,
    packet: Packet,
    volatile: bool,
    copies: Vec<EmitCopy>,
}

impl Fanout {
    pub fn new(
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        edges: Arc<dyn EdgeDirectory>,
        routing: CommandRouting,
        request_timeout: Duration,
    ) -> Fanout {
        Fanout {
            router: Router::new(routing, subjects.clone(), edges.clone()),
            bus,
            subjects,
            edges,
            request_timeout,
            next_ack_id: Arc::new(AtomicU64::new(rand::random_range(1..MAX_ACK_ID))),
            recovery: None,
        }
    }

    /// Users' sockets are found in this presence from now on.
    pub fn set_presence(&mut self, presence: roomcast_presence::Presence) {
        self.router.set_presence(presence);
    }

    pub fn set_recovery(&mut self, recovery: Recovery) {
        self.recovery = Some(recovery);
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// A fresh ack id; ids stay below 2^31.
    pub fn ack_id(&self) -> u64 {
        let id = self.next_ack_id.fetch_add(1, Ordering::Relaxed);
        id % MAX_ACK_ID + 1
    }

    /// Routes an encoded emit, published as one copy per subject its target needs
    /// (ADR 17): the namespace's; or one per room (through the recovery
    /// history when one of the rooms is recoverable), and one per route tag
    /// of the named sockets and users (or one on the edges subject:
    /// [`crate::routing`]). Each copy names only what its subject is for, so
    /// an emit costs O(rooms + sockets + users); copies of one emit carry one
    /// message id, by which an edge that gets several delivers once per
    /// socket.
    ///
    /// This is the first half: where the emit goes (its users looked up);
    /// [`Fanout::publish_routed`] publishes it. A stream of emits routes
    /// several ahead and publishes them in order, so that their lookups wait
    /// together.
    pub async fn route_emit(&self, target: Target, packet: Packet, volatile: bool) -> RoutedEmit {
        let copies = self.emit_copies(&target).await;
        RoutedEmit {
            target,
            packet,
            volatile,
            copies,
        }
    }

    /// Publishes an emit routed by [`Fanout::route_emit`].
    pub async fn publish_routed(&self, routed: RoutedEmit) -> Result<(), ControlError> {
        let RoutedEmit {
            target,
            packet,
            volatile,
            copies,
        } = routed;
        let shared = Target {
            ns: target.ns.clone(),
            ..Target::default()
        };
        let (mut base, payload) = Command::Emit {
            target: shared,
            packet,
            volatile,
        }
        .encode();
        roomcast_bus::trace::inject(&mut base);
        let id = (copies.len() > 1).then(envelope::new_message_id);
        // A volatile emit is not worth recovering. When one room is
        // recoverable every room's copy is stored, so that each has a
        // sequence (ADR 17: recovery then replays each emit once).
        let stored = self.recovery.as_ref().filter(|recovery| {
            !volatile
                && copies.iter().any(|c| {
                    c.room
                        .as_deref()
                        .is_some_and(|room| recovery.config.recoverable(room))
                })
        });
        let mut first = None;
        for copy in copies {
            let mut headers = envelope::with_target(&base, &copy.target);
            if let Some(id) = id {
                envelope::set_message_id(&mut headers, id);
            }
            match (stored, &copy.room) {
                (Some(recovery), Some(room)) => {
                    if let Some(first) = first {
                        envelope::set_first_sequence(&mut headers, first);
                    }
                    let seq = recovery
                        .history
                        .append(&target.ns, room, headers, payload.clone())
                        .await?;
                    first.get_or_insert(seq);
                }
                _ => {
                    self.bus
                        .publish(&copy.subject, headers, payload.clone(), None)
                        .await?
                }
            }
        }
        Ok(())
    }

    /// The copies an emit to `target` is published as.
    async fn emit_copies(&self, target: &Target) -> Vec<EmitCopy> {
        if target.is_namespace() {
            return vec![EmitCopy {
                subject: self.subjects.namespace(&target.ns),
                target: target.clone(),
                room: None,
            }];
        }
        let only = |rooms: Vec<String>, sockets: Vec<String>, users: Vec<String>| Target {
            ns: target.ns.clone(),
            rooms,
            sockets,
            users,
            except_rooms: target.except_rooms.clone(),
            except_sockets: target.except_sockets.clone(),
        };
        let mut copies: Vec<EmitCopy> = target
            .rooms
            .iter()
            .map(|room| EmitCopy {
                subject: self.subjects.room(&target.ns, room),
                target: only(vec![room.clone()], Vec::new(), Vec::new()),
                room: Some(room.clone()),
            })
            .collect();
        let direct = only(Vec::new(), target.sockets.clone(), target.users.clone());
        if direct.sockets.is_empty() && direct.users.is_empty() {
            return copies;
        }
        match self.router.direct(&direct).await {
            Route::Broadcast => copies.push(EmitCopy {
                subject: self.subjects.edges(),
                target: direct,
                room: None,
            }),
            Route::Tags(tags) => copies.extend(tags.into_iter().map(|copy| EmitCopy {
                subject: copy.subject,
                target: copy.target,
                room: None,
            })),
        }
        copies
    }

    /// Publishes a command on one subject (a reply to a node).
    pub async fn publish_to(&self, subject: &str, cmd: &Command) -> Result<(), ControlError> {
        let (headers, payload) = cmd.encode();
        self.bus.publish(subject, headers, payload, None).await?;
        Ok(())
    }

    /// Sends a command to the edges it needs (every edge for a target with
    /// rooms, or a command without a target) and waits for each one's
    /// answer.
    pub async fn ask_edges(&self, cmd: &Command) -> Result<Vec<EdgeReply>, ControlError> {
        self.send(cmd, self.request_timeout).await?.gather().await
    }

    async fn send(&self, cmd: &Command, timeout: Duration) -> Result<EdgeRequest, ControlError> {
        let route = match target_of(cmd) {
            Some(target) => self.router.command(target).await,
            None => Route::Broadcast,
        };
        match route {
            Route::Broadcast => {
                EdgeRequest::send(
                    self.bus.as_ref(),
                    &self.subjects,
                    self.edges.as_ref(),
                    cmd,
                    timeout,
                )
                .await
            }
            Route::Tags(copies) => {
                let copies = copies
                    .into_iter()
                    .map(|c| (c.subject, retarget(cmd, c.target), c.nodes))
                    .collect();
                EdgeRequest::send_each(self.bus.as_ref(), copies, timeout).await
            }
        }
    }

    /// Emits a packet encoded with `ack_id` to the selected sockets of the
    /// edges it needs and gathers their acks until all answered or `timeout` passed.
    pub async fn emit_with_ack(
        &self,
        target: Target,
        packet: Packet,
        ack_id: u64,
        timeout: Duration,
    ) -> Result<EmitWithAckResponse, ControlError> {
        let cmd = Command::EmitWithAck {
            target,
            packet,
            ack_id,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let mut req = self.send(&cmd, timeout).await?;
        // Socket id → (node, ack) for every socket written to; acks may come
        // before their edge's list of targets.
        let mut targets: HashMap<String, String> = HashMap::new();
        let mut acks: HashMap<String, AckResult> = HashMap::new();
        loop {
            let done = req.all_answered() && targets.keys().all(|s| acks.contains_key(s));
            if done {
                break;
            }
            let Some(answer) = req.next().await else {
                break;
            };
            match answer.reply {
                EdgeReply::Targets { node, sockets } => {
                    req.answered(answer.copy, &node);
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
        let complete = req.all_answered();
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
}
