//! At-least-once emits and the per-user offline inbox.
//!
//! An `Emit` with `at_least_once` becomes a message with an id, kept in a
//! store (a JetStream KV bucket in a cluster, memory standalone) with one
//! queue per recipient (see [`model`] for the records).
//!
//! One control plane at a time owns a queue (a lease in the queue record,
//! taken and renewed by compare-and-swap). The owner delivers the head of the
//! queue with an emit with an ack, to every socket of the recipient on
//! whatever edge; the first ack of any of them marks the message acked and
//! pops it; no ack within the resend interval sends it again, the interval
//! doubling up to a maximum. A recipient with no socket makes the owner let
//! go of the queue; the next `connect` presence event for the recipient
//! (seen by every control plane) makes one of them take it again. A control
//! plane that dies leaves its leases to expire: a periodic sweep lets another
//! one take them over and resend what was not acked.
//!
//! Layout, each depending only on those after it: this file, [`Delivery`],
//! accepts emits and answers `GetDelivery`, `GetInbox` and `PurgeInbox`;
//! `worker` is the retry loop and owns its tasks; `store` reads and swaps
//! the records; [`model`] is the records and the rules of their states. None
//! of them knows [`crate::Control`]: attempts go out through the same
//! `fanout` as the API's emits.

pub mod model;
mod store;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use roomcast_api::v1::{EmitRequest, GetDeliveryResponse, InboxEntry, RecipientDelivery};
use roomcast_bus::envelope::now_ms;
use roomcast_bus::KvStore;

use crate::fanout::Fanout;
use crate::plan::EmitPlan;
use crate::selector::{self, Limits};
use crate::{metrics, ControlError};

pub use model::{
    DeliveryConfig, Item, Message, Queue, Recipient, RecipientState, State, MESSAGE_ID_FIELD,
};

use model::{message_id_arg, ms, queue_key};
use store::Records;
use worker::Worker;

/// At-least-once delivery of one control plane.
#[derive(Clone)]
pub struct Delivery {
    records: Records,
    worker: Arc<Worker>,
    limits: Limits,
    cfg: Arc<DeliveryConfig>,
}

impl Delivery {
    pub(crate) fn new(
        fanout: Fanout,
        limits: Limits,
        store: Arc<dyn KvStore>,
        cfg: DeliveryConfig,
        me: String,
    ) -> Delivery {
        let records = Records::new(store);
        Delivery {
            worker: Arc::new(Worker::new(
                records.clone(),
                fanout,
                limits,
                cfg.clone(),
                me,
            )),
            records,
            limits,
            cfg: Arc::new(cfg),
        }
    }

    /// Starts following connects and taking over queues whose owner died.
    pub fn start(&self) {
        self.worker.start();
    }

    /// Stops every delivery task and waits, for at most `bound`, until they
    /// ended (leases then expire or are let go, see [`Delivery::release`]);
    /// returns whether they all did.
    pub async fn shutdown(&self, bound: Duration) -> bool {
        self.worker.shutdown(bound).await
    }

    /// After [`Delivery::shutdown`]: lets go of the queues this control plane
    /// works on, so that another one takes them at the recipient's next
    /// connect or at once by the sweep, rather than after the lease TTL.
    pub async fn release(&self) {
        self.worker.release().await;
    }

    /// Checks and accepts an at-least-once emit; returns its message id.
    pub async fn emit(&self, req: EmitRequest) -> Result<String, ControlError> {
        let cfg = &self.cfg;
        if req.ttl_ms == 0 || u128::from(req.ttl_ms) > cfg.max_ttl.as_millis() {
            return Err(ControlError::InvalidTtl(cfg.max_ttl.as_millis()));
        }
        if req.volatile {
            return Err(ControlError::AckedTarget(
                "at_least_once cannot be volatile",
            ));
        }
        let sel = req.to.clone().unwrap_or_default();
        if !sel.rooms.is_empty()
            || !sel.except_rooms.is_empty()
            || !sel.except_socket_ids.is_empty()
        {
            return Err(ControlError::AckedTarget(
                "at_least_once targets user_ids and socket_ids only: rooms and except lists have no \
                 membership that outlives a connection",
            ));
        }
        let target = self.limits.target(req.to)?;
        if target.users.is_empty() && target.sockets.is_empty() {
            return Err(ControlError::AckedTarget(
                "at_least_once needs user_ids or socket_ids: a whole namespace has no recipients to \
                 wait for",
            ));
        }
        let id = format!("m{:032x}", rand::random::<u128>());
        let id_arg = message_id_arg(&id)?;
        let plan = EmitPlan::new(
            &self.limits,
            target,
            &req.event,
            &req.args_json,
            req.attachments,
        )?;
        let attachments: Vec<String> = plan
            .attachments()
            .iter()
            .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
            .collect();
        // Checked as the first send will be (ack ids are short).
        let target = plan.with_last_arg(&id_arg).encode(Some(1))?.target;
        let recipients: Vec<Recipient> = target
            .users
            .iter()
            .cloned()
            .map(Recipient::User)
            .chain(target.sockets.iter().cloned().map(Recipient::Socket))
            .collect();
        for to in &recipients {
            let (queue, _) = self.records.read_queue(&queue_key(&target.ns, to)).await?;
            if queue.items.len() >= cfg.inbox_max {
                return Err(ControlError::InboxFull(cfg.inbox_max));
            }
        }
        let now = now_ms();
        let msg = Message {
            id: id.clone(),
            ns: target.ns.clone(),
            event: req.event,
            args_json: req.args_json,
            attachments,
            created_ms: now,
            expires_ms: now + i64::from(req.ttl_ms),
            recipients: recipients
                .iter()
                .map(|to| RecipientState {
                    to: to.clone(),
                    state: State::Pending,
                    done_ms: 0,
                })
                .collect(),
        };
        self.records.put_message(&msg).await?;
        ::metrics::counter!(metrics::DELIVERY_ACCEPTED).increment(recipients.len() as u64);
        let me = self.worker.me();
        let lease = ms(cfg.lease_ttl);
        for to in &recipients {
            let key = queue_key(&msg.ns, to);
            let item = Item {
                msg: id.clone(),
                expires_ms: msg.expires_ms,
            };
            let (_, after) = self
                .records
                .update_queue(&key, |q| {
                    q.items.push(item.clone());
                    let now = now_ms();
                    if q.claimable(me, now) {
                        q.owner = me.to_owned();
                        q.lease_until_ms = now + lease;
                    }
                })
                .await?;
            if after.owner == me {
                self.worker.work_on(key);
            }
        }
        Ok(id)
    }

    /// The status of a message.
    pub async fn status(&self, id: &str) -> Result<GetDeliveryResponse, ControlError> {
        if id.is_empty() || id.len() > roomcast_bus::names::MAX_NAME_LEN {
            return Err(ControlError::UnknownMessage(id.to_owned()));
        }
        let Some((msg, _)) = self.records.read_message(id).await? else {
            return Err(ControlError::UnknownMessage(id.to_owned()));
        };
        let now = now_ms();
        Ok(GetDeliveryResponse {
            message_id: msg.id.clone(),
            namespace: msg.ns.clone(),
            event: msg.event.clone(),
            status: msg.status_at(now).api() as i32,
            recipients: msg
                .recipients
                .iter()
                .map(|r| {
                    let (state, done) = msg.state_at(r, now);
                    let (user_id, socket_id) = match &r.to {
                        Recipient::User(u) => (u.clone(), String::new()),
                        Recipient::Socket(s) => (String::new(), s.clone()),
                    };
                    RecipientDelivery {
                        user_id,
                        socket_id,
                        status: state.api() as i32,
                        done_at_ms: done,
                    }
                })
                .collect(),
            created_at_ms: msg.created_ms,
            expires_at_ms: msg.expires_ms,
        })
    }

    fn recipient(ns: &str, user: &str, socket: &str) -> Result<(String, Recipient), ControlError> {
        let ns = selector::namespace(ns)?;
        let to = match (user.is_empty(), socket.is_empty()) {
            (false, true) => Recipient::User(selector::user_ids(&[user.to_owned()])?.remove(0)),
            (true, false) => {
                Recipient::Socket(selector::socket_ids(&[socket.to_owned()])?.remove(0))
            }
            _ => {
                return Err(ControlError::AckedTarget(
                    "give either user_id or socket_id",
                ))
            }
        };
        Ok((ns, to))
    }

    /// The messages waiting for a recipient, in delivery order.
    pub async fn inbox(
        &self,
        ns: &str,
        user: &str,
        socket: &str,
    ) -> Result<Vec<InboxEntry>, ControlError> {
        let (ns, to) = Self::recipient(ns, user, socket)?;
        let (queue, _) = self.records.read_queue(&queue_key(&ns, &to)).await?;
        let now = now_ms();
        let mut out = Vec::new();
        for item in queue.items.iter().filter(|i| i.expires_ms > now) {
            let Some((msg, _)) = self.records.read_message(&item.msg).await? else {
                continue;
            };
            out.push(InboxEntry {
                message_id: msg.id,
                event: msg.event,
                args_json: msg.args_json,
                attachments: u32::try_from(msg.attachments.len()).unwrap_or(u32::MAX),
                created_at_ms: msg.created_ms,
                expires_at_ms: msg.expires_ms,
            });
        }
        Ok(out)
    }

    /// Drops every message waiting for a recipient; returns how many.
    pub async fn purge(&self, ns: &str, user: &str, socket: &str) -> Result<u32, ControlError> {
        let (ns, to) = Self::recipient(ns, user, socket)?;
        let (before, _) = self
            .records
            .update_queue(&queue_key(&ns, &to), |q| q.items.clear())
            .await?;
        let mut n = 0u32;
        for item in &before.items {
            if self.records.mark(&item.msg, &to, State::Purged).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Control;
    use bytes::Bytes;
    use model::tests::{msg, pending};
    use roomcast_api::v1::{DeliveryStatus, Selector};
    use roomcast_bus::envelope::{Command, EdgeReply, Packet};
    use roomcast_bus::memory::MemoryKv;
    use roomcast_bus::subject::Subjects;
    use roomcast_bus::{Bus, MemoryBus};
    use roomcast_presence::{Presence, PresenceConfig, SocketRecord};
    use std::sync::Mutex;

    /// An edge with one socket of user "u" that acks from the `ack_from`-th
    /// send on; returns the packets it was sent.
    async fn fake_edge(bus: &MemoryBus, ack_from: usize) -> Arc<Mutex<Vec<String>>> {
        let subjects = Subjects::new("roomcast");
        let mut sub = bus.subscribe(&subjects.edges(), None).await.expect("sub");
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (bus, log) = (bus.clone(), seen.clone());
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Ok(Command::EmitWithAck { packet, .. }) =
                    Command::decode(&msg.headers, msg.payload)
                else {
                    continue;
                };
                let Some(reply) = msg.reply else { continue };
                let n = {
                    let mut log = log.lock().expect("log");
                    log.push(String::from_utf8_lossy(&packet.text).into_owned());
                    log.len()
                };
                let mut answers = vec![EdgeReply::Targets {
                    node: "e1".into(),
                    sockets: vec!["s1".into()],
                }];
                if n >= ack_from {
                    answers.push(EdgeReply::Ack {
                        node: "e1".into(),
                        socket: "s1".into(),
                        args: Packet {
                            text: Bytes::from_static(b"[]"),
                            attachments: Vec::new(),
                        },
                    });
                }
                for a in answers {
                    let (h, p) = a.encode();
                    bus.publish(&reply, h, p, None).await.expect("reply");
                }
            }
        });
        seen
    }

    async fn delivery(bus: &MemoryBus) -> (Delivery, Presence) {
        let presence = Presence::new(
            Arc::new(MemoryKv::default()),
            Arc::new(bus.clone()),
            PresenceConfig::default(),
        );
        let control = Control::new(
            crate::ControlConfig::default(),
            Arc::new(bus.clone()),
            Arc::new(crate::StaticEdges::new(vec!["e1".into()])),
        )
        .with_presence(presence.clone());
        let cfg = DeliveryConfig {
            resend_interval: Duration::from_millis(30),
            max_resend_interval: Duration::from_millis(60),
            ..DeliveryConfig::default()
        };
        let (_, d) = control
            .with_delivery(Arc::new(MemoryKv::default()), cfg, "c1".into())
            .expect("presence is on");
        (d, presence)
    }

    /// Socket `s1` of user `u` connects on edge `e1` (the fake edge's socket).
    async fn connect_s1_of_u(presence: &Presence) {
        presence
            .connected(&SocketRecord {
                id: "s1".into(),
                user: "u".into(),
                ns: "/".into(),
                node: "e1".into(),
                rooms: Vec::new(),
                connected_at_ms: now_ms(),
            })
            .await
            .expect("connected");
    }

    fn emit_to(user: &str, args: &str) -> EmitRequest {
        EmitRequest {
            to: Some(Selector {
                user_ids: vec![user.into()],
                ..Selector::default()
            }),
            event: "note".into(),
            args_json: args.into(),
            at_least_once: true,
            ttl_ms: 10_000,
            ..EmitRequest::default()
        }
    }

    #[tokio::test]
    async fn a_message_is_resent_with_its_id_until_acked_then_popped() {
        let bus = MemoryBus::default();
        let sent = fake_edge(&bus, 3).await;
        let (d, presence) = delivery(&bus).await;
        connect_s1_of_u(&presence).await;
        let id = d.emit(emit_to("u", "[1]")).await.expect("accepted");
        roomcast_testkit::wait_for(Duration::from_secs(5), || async {
            d.status(&id).await.expect("status").status == DeliveryStatus::Acked as i32
        })
        .await
        .expect("never acked");
        let sent = sent.lock().expect("log").clone();
        assert_eq!(sent.len(), 3, "two unanswered sends, then the acked one");
        for text in &sent {
            assert!(
                text.ends_with(&format!("[\"note\",1,{{\"messageId\":\"{id}\"}}]")),
                "{text}"
            );
        }
        assert!(d.inbox("/", "u", "").await.expect("inbox").is_empty());
    }

    /// Shutdown stops the follow loop and the queue tasks (one was
    /// resending, unanswered), joins them, and nothing is sent afterwards.
    #[tokio::test]
    async fn shutdown_joins_every_task_and_nothing_is_sent_after_it() {
        let bus = MemoryBus::default();
        let sent = fake_edge(&bus, usize::MAX).await;
        let (d, presence) = delivery(&bus).await;
        d.start();
        connect_s1_of_u(&presence).await;
        d.emit(emit_to("u", "[1]")).await.expect("accepted");
        let count = || sent.lock().expect("log").len();
        roomcast_testkit::wait_for(Duration::from_secs(5), || async {
            count() >= 2 && d.worker.running() >= 2
        })
        .await
        .expect("never resent by a running queue task");

        assert!(
            d.shutdown(Duration::from_secs(5)).await,
            "every task joined within the bound"
        );
        assert_eq!(d.worker.running(), 0, "no task left");
        assert!(d.worker.closed());
        let after = count();
        // Absence can only be waited for: several resend intervals (at most
        // 60 ms here) would each have sent again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(count(), after, "a send after shutdown");

        let key = queue_key("/", &Recipient::User("u".into()));
        let (queue, _) = d.records.read_queue(&key).await.expect("read");
        assert_eq!(queue.owner, "c1", "still ours until released");
        assert!(queue.lease_until_ms > now_ms());
        d.release().await;
        let (queue, _) = d.records.read_queue(&key).await.expect("read");
        assert_eq!(queue.lease_until_ms, 0, "released for a sweep to take");
    }

    /// A purge that comes after a message expired but before anything
    /// pruned it from the queue purges only what is still pending.
    #[tokio::test]
    async fn a_purge_does_not_count_what_expired_unswept() {
        let bus = MemoryBus::default();
        let (d, _) = delivery(&bus).await;
        let u = Recipient::User("u".into());
        let now = now_ms();
        let mut items = Vec::new();
        for (id, expires_ms) in [("m-old", now - 1), ("m-live", now + 60_000)] {
            let mut m = msg(vec![pending("u")]);
            m.id = id.into();
            m.expires_ms = expires_ms;
            d.records
                .put_raw(&model::message_key(id), model::to_json(&m))
                .await
                .expect("message stored");
            items.push(Item {
                msg: id.into(),
                expires_ms,
            });
        }
        let queue = Queue {
            items,
            ..Queue::default()
        };
        d.records
            .put_raw(&queue_key("/", &u), model::to_json(&queue))
            .await
            .expect("queue stored");

        assert_eq!(d.purge("/", "u", "").await.expect("purged"), 1);
        let status = |id: &'static str| {
            let d = d.clone();
            async move { d.status(id).await.expect("status").status }
        };
        assert_eq!(status("m-old").await, DeliveryStatus::Expired as i32);
        assert_eq!(status("m-live").await, DeliveryStatus::Purged as i32);
        let (old, _) = d
            .records
            .read_message("m-old")
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(
            old.recipients[0].state,
            State::Expired,
            "recorded, not purged"
        );
    }
}
