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
use roomcast_bus::envelope::{Command, EdgeReply, Packet, Target};
use roomcast_bus::recovery::Recovery;
use roomcast_bus::subject::Subjects;
use roomcast_bus::Bus;

use crate::edges::{EdgeDirectory, EdgeRequest};
use crate::routing::{retarget, target_of, CommandRouting, Route, Router};
use crate::ControlError;

/// Ack ids stay below this (any client parses them).
const MAX_ACK_ID: u64 = 1 << 31;

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

    /// Publishes an encoded emit on every subject its target needs: the
    /// namespace's, or each room's (a recoverable room through the recovery
    /// history instead) and, for named sockets and users, the subjects of
    /// their route tags (or the edges subject: [`crate::routing`]).
    pub async fn publish_emit(
        &self,
        target: Target,
        packet: Packet,
        volatile: bool,
    ) -> Result<(), ControlError> {
        let direct =
            !target.is_namespace() && (!target.sockets.is_empty() || !target.users.is_empty());
        let route = if direct {
            Some(self.router.direct(&target).await)
        } else {
            None
        };
        let mut subjects = if target.is_namespace() {
            vec![self.subjects.namespace(&target.ns)]
        } else {
            target
                .rooms
                .iter()
                .map(|r| self.subjects.room(&target.ns, r))
                .collect()
        };
        if route == Some(Route::Broadcast) {
            subjects.push(self.subjects.edges());
        }
        let cmd = Command::Emit {
            packet,
            volatile,
            target,
        };
        let (mut headers, payload) = cmd.encode();
        roomcast_bus::trace::inject(&mut headers);
        // A volatile emit is not worth recovering.
        let recovery = self.recovery.as_ref().filter(|_| !volatile);
        for subject in subjects {
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
        if let Some(Route::Tags(copies)) = route {
            for copy in copies {
                let (mut headers, payload) = retarget(&cmd, copy.target).encode();
                roomcast_bus::trace::inject(&mut headers);
                self.bus
                    .publish(&copy.subject, headers, payload, None)
                    .await?;
            }
        }
        Ok(())
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
