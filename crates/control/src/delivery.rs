//! At-least-once emits and the per-user offline inbox.
//!
//! An `Emit` with `at_least_once` becomes a message with an id, kept in a
//! [`Store`] (a JetStream KV bucket in a cluster, memory standalone):
//!
//! | key | value |
//! |---|---|
//! | `m.<id>` | [`Message`]: the event, its expiry, each recipient's state |
//! | `q.<ns>.u.<user>` / `q.<ns>.s.<socket>` | [`Queue`]: the recipient's pending message ids in emit order, and which control plane works on it until when |
//!
//! One control plane at a time owns a queue (a lease in the queue record,
//! taken and renewed by compare-and-swap). The owner delivers the head of the
//! queue with the `EmitWithAck` machinery, to every socket of the recipient
//! on whatever edge; the first ack of any of them marks the message acked and
//! pops it; no ack within the resend interval sends it again, the interval
//! doubling up to a maximum. A recipient with no socket makes the owner let go
//! of the queue; the next `connect` presence event for the recipient (seen by
//! every control plane) makes one of them take it again. A control plane that
//! dies leaves its leases to expire: a periodic sweep lets another one take
//! them over and resend what was not acked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use roomcast_api::v1::{
    DeliveryStatus, EmitRequest, EmitWithAckRequest, GetDeliveryResponse, InboxEntry,
    RecipientDelivery, Selector,
};
use roomcast_bus::envelope::now_ms;
use roomcast_bus::subject::{token, Subjects};
use roomcast_bus::{KvError as StoreError, KvStore as Store};
use roomcast_presence::EventKind;
use roomcast_wire::socketio;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{metrics, Control, ControlError};

/// How many times a compare-and-swap is retried under contention.
const MAX_SWAPS: usize = 64;

/// The name of the argument that carries the message id to the client.
pub const MESSAGE_ID_FIELD: &str = "messageId";

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The first wait for an ack before a resend.
    pub resend_interval: Duration,
    /// The longest wait between resends (the wait doubles up to it).
    pub max_resend_interval: Duration,
    /// How long a control plane owns a queue without renewing its lease.
    pub lease_ttl: Duration,
    /// Most messages waiting per recipient (checked when an emit is accepted).
    pub inbox_max: usize,
    /// Largest `ttl_ms` an emit may ask for.
    pub max_ttl: Duration,
    /// How long the status of a finished message stays readable.
    pub retention: Duration,
    /// Delete finished messages in the sweep (the memory store of
    /// standalone; a KV bucket ages them out by itself).
    pub collect: bool,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            resend_interval: Duration::from_secs(1),
            max_resend_interval: Duration::from_secs(8),
            lease_ttl: Duration::from_secs(15),
            inbox_max: 1000,
            max_ttl: Duration::from_secs(86_400),
            retention: Duration::from_secs(3600),
            collect: true,
        }
    }
}

/// A recipient's state for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Acked,
    Expired,
    Purged,
}

impl State {
    fn api(self) -> DeliveryStatus {
        match self {
            State::Pending => DeliveryStatus::Pending,
            State::Acked => DeliveryStatus::Acked,
            State::Expired => DeliveryStatus::Expired,
            State::Purged => DeliveryStatus::Purged,
        }
    }
}

/// Who a message is for: a user (every socket of it) or one socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recipient {
    User(String),
    Socket(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientState {
    pub to: Recipient,
    pub state: State,
    #[serde(default)]
    pub done_ms: i64,
}

/// An at-least-once message, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub ns: String,
    pub event: String,
    pub args_json: String,
    /// Base64 of each attachment.
    #[serde(default)]
    pub attachments: Vec<String>,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub recipients: Vec<RecipientState>,
}

impl Message {
    /// A recipient's state as of `now`: a pending one past the expiry is
    /// expired, whether or not a sweep recorded it yet.
    fn state_at(&self, r: &RecipientState, now: i64) -> (State, i64) {
        if r.state == State::Pending && now >= self.expires_ms {
            (State::Expired, self.expires_ms)
        } else {
            (r.state, r.done_ms)
        }
    }

    /// The message's overall status as of `now`.
    pub fn status_at(&self, now: i64) -> State {
        let states: Vec<State> = self
            .recipients
            .iter()
            .map(|r| self.state_at(r, now).0)
            .collect();
        if states.contains(&State::Pending) {
            State::Pending
        } else if states.iter().all(|s| *s == State::Acked) {
            State::Acked
        } else if states.contains(&State::Expired) {
            State::Expired
        } else {
            State::Purged
        }
    }

    /// Marks a pending recipient; returns the state recorded, if any. A purge
    /// of a recipient already past the expiry records it expired, as
    /// `state_at` reports it: a purge that comes before a sweep recorded the
    /// expiry does not change the outcome. An ack is recorded as given (the
    /// attempt that got it waited no longer than the expiry; recording it can
    /// come a little after).
    pub fn mark(&mut self, to: &Recipient, state: State, now: i64) -> Option<State> {
        let mut recorded = None;
        for r in &mut self.recipients {
            if r.to == *to && r.state == State::Pending {
                let (state, done_ms) = if now >= self.expires_ms && state != State::Acked {
                    (State::Expired, self.expires_ms)
                } else {
                    (state, now)
                };
                r.state = state;
                r.done_ms = done_ms;
                recorded = Some(state);
            }
        }
        recorded
    }

    /// When the record may be deleted: `retention` after the last recipient
    /// finished (or after the expiry).
    fn collectable_at(&self, retention: Duration) -> i64 {
        let done = self
            .recipients
            .iter()
            .map(|r| {
                if r.state == State::Pending {
                    self.expires_ms
                } else {
                    r.done_ms
                }
            })
            .max()
            .unwrap_or(self.expires_ms);
        done.saturating_add(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
    }
}

/// One waiting message of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub msg: String,
    pub expires_ms: i64,
}

/// A recipient's waiting messages, in emit order, and who works on them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Queue {
    pub items: Vec<Item>,
    /// The control plane that delivers them; empty when none does.
    #[serde(default)]
    pub owner: String,
    /// Unix ms until which the owner's lease holds.
    #[serde(default)]
    pub lease_until_ms: i64,
}

impl Queue {
    /// Whether `me` may take the queue at `now`.
    pub fn claimable(&self, me: &str, now: i64) -> bool {
        !self.items.is_empty()
            && (self.owner.is_empty() || self.owner == me || self.lease_until_ms <= now)
    }

    /// Removes the items expired at `now`; returns their message ids.
    pub fn prune(&mut self, now: i64) -> Vec<String> {
        let (gone, kept): (Vec<Item>, Vec<Item>) =
            self.items.drain(..).partition(|i| i.expires_ms <= now);
        self.items = kept;
        gone.into_iter().map(|i| i.msg).collect()
    }
}

fn key_token(name: &str) -> String {
    token(name).replace('~', "=")
}

fn message_key(id: &str) -> String {
    format!("m.{}", key_token(id))
}

fn queue_key(ns: &str, to: &Recipient) -> String {
    match to {
        Recipient::User(u) => format!("q.{}.u.{}", key_token(ns), key_token(u)),
        Recipient::Socket(s) => format!("q.{}.s.{}", key_token(ns), key_token(s)),
    }
}

fn to_json<T: Serialize>(v: &T) -> Bytes {
    // Plain structs of strings and numbers always serialise.
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The emit's arguments with the message id appended as a last argument.
pub fn args_with_id(args_json: &str, id: &str) -> Result<String, ControlError> {
    let mut args: Vec<serde_json::Value> = if args_json.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(args_json).map_err(|e| {
            ControlError::InvalidArgs(socketio::ArgsError::NotAnArray(e.to_string()))
        })?
    };
    args.push(serde_json::json!({ MESSAGE_ID_FIELD: id }));
    Ok(serde_json::Value::Array(args).to_string())
}

/// A queue being worked on by this control plane.
#[derive(Default)]
struct Worker {
    notify: Notify,
    /// A connect came while the worker ran: it must not let go unseen.
    dirty: AtomicBool,
}

struct Inner {
    store: Arc<dyn Store>,
    /// Sends the attempts (a control without delivery of its own).
    control: Control,
    cfg: DeliveryConfig,
    /// This control plane, as queue owners are named.
    me: String,
    workers: Mutex<HashMap<String, Arc<Worker>>>,
    stop: CancellationToken,
}

/// At-least-once delivery of one control plane.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

impl Delivery {
    pub(crate) fn new(
        control: Control,
        store: Arc<dyn Store>,
        cfg: DeliveryConfig,
        me: String,
    ) -> Delivery {
        Delivery {
            inner: Arc::new(Inner {
                store,
                control,
                cfg,
                me,
                workers: Mutex::default(),
                stop: CancellationToken::new(),
            }),
        }
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Worker>>> {
        self.inner
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the workers and the sweep (leases then expire or are let go).
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }

    /// After [`Delivery::shutdown`]: lets go of the queues this control plane
    /// works on, so that another one takes them at the recipient's next
    /// connect or at once by the sweep, rather than after the lease TTL.
    pub async fn release(&self) {
        let keys: Vec<String> = self.workers().keys().cloned().collect();
        let me = self.inner.me.clone();
        for key in keys {
            let released = self
                .update_queue(&key, |q| {
                    if q.owner == me {
                        // An expired lease, so that a sweep takes it at once.
                        q.lease_until_ms = 0;
                    }
                })
                .await;
            if let Err(e) = released {
                tracing::warn!(queue = %key, error = %e, "delivery queue not released");
            }
        }
    }

    /// Validates and accepts an at-least-once emit; returns its message id.
    pub async fn emit(&self, req: EmitRequest) -> Result<String, ControlError> {
        let cfg = &self.inner.cfg;
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
        let target = self.inner.control.target(req.to)?;
        if target.users.is_empty() && target.sockets.is_empty() {
            return Err(ControlError::AckedTarget(
                "at_least_once needs user_ids or socket_ids: a whole namespace has no recipients to \
                 wait for",
            ));
        }
        socketio::check_event_name(&req.event)?;
        let id = format!("m{:032x}", rand::random::<u128>());
        let with_id = args_with_id(&req.args_json, &id)?;
        socketio::parse_args(&with_id)?;
        let attachments: Vec<Bytes> = req.attachments.into_iter().map(Bytes::from).collect();
        self.inner.control.check_attachments(&attachments)?;
        socketio::check_args_attachments(&req.args_json, attachments.len())?;
        let args = socketio::parse_args(&with_id)?;
        let text =
            socketio::encode_event(&target.ns, &req.event, &args, Some(1), attachments.len());
        self.inner.control.check_size(&text, &attachments)?;
        let recipients: Vec<Recipient> = target
            .users
            .iter()
            .cloned()
            .map(Recipient::User)
            .chain(target.sockets.iter().cloned().map(Recipient::Socket))
            .collect();
        for to in &recipients {
            let (queue, _) = self.read_queue(&queue_key(&target.ns, to)).await?;
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
            attachments: attachments
                .iter()
                .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
                .collect(),
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
        self.inner
            .store
            .swap(&message_key(&id), to_json(&msg), None)
            .await?;
        ::metrics::counter!(metrics::DELIVERY_ACCEPTED).increment(recipients.len() as u64);
        for to in &recipients {
            let key = queue_key(&msg.ns, to);
            let item = Item {
                msg: id.clone(),
                expires_ms: msg.expires_ms,
            };
            let me = self.inner.me.clone();
            let lease = ms(cfg.lease_ttl);
            let (_, after) = self
                .update_queue(&key, |q| {
                    q.items.push(item.clone());
                    let now = now_ms();
                    if q.claimable(&me, now) {
                        q.owner = me.clone();
                        q.lease_until_ms = now + lease;
                    }
                })
                .await?;
            if after.owner == self.inner.me {
                self.run_worker(key);
            }
        }
        Ok(id)
    }

    async fn read_queue(&self, key: &str) -> Result<(Queue, Option<u64>), StoreError> {
        match self.inner.store.get(key).await? {
            None => Ok((Queue::default(), None)),
            Some((bytes, rev)) => Ok((
                serde_json::from_slice(&bytes).unwrap_or_default(),
                Some(rev),
            )),
        }
    }

    async fn read_message(&self, id: &str) -> Result<Option<(Message, u64)>, StoreError> {
        Ok(self
            .inner
            .store
            .get(&message_key(id))
            .await?
            .and_then(|(b, rev)| Some((serde_json::from_slice(&b).ok()?, rev))))
    }

    /// Reads, changes and swaps a queue until the swap wins (an emptied,
    /// unowned queue is deleted); returns the queue before and after.
    async fn update_queue(
        &self,
        key: &str,
        mut change: impl FnMut(&mut Queue),
    ) -> Result<(Queue, Queue), StoreError> {
        for _ in 0..MAX_SWAPS {
            let (before, rev) = self.read_queue(key).await?;
            let mut after = before.clone();
            change(&mut after);
            if after == before {
                return Ok((before, after));
            }
            let result = match rev {
                Some(rev) if after.items.is_empty() && after.owner.is_empty() => {
                    self.inner.store.delete_if(key, rev).await
                }
                _ => self
                    .inner
                    .store
                    .swap(key, to_json(&after), rev)
                    .await
                    .map(drop),
            };
            match result {
                Ok(()) => return Ok((before, after)),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "queue {key} kept changing"
        )))
    }

    /// Sets a pending recipient's state; returns whether this call did it.
    async fn mark(&self, id: &str, to: &Recipient, state: State) -> Result<bool, StoreError> {
        for _ in 0..MAX_SWAPS {
            let Some((mut msg, rev)) = self.read_message(id).await? else {
                return Ok(false);
            };
            let Some(recorded) = msg.mark(to, state, now_ms()) else {
                return Ok(false);
            };
            match self
                .inner
                .store
                .swap(&message_key(id), to_json(&msg), Some(rev))
                .await
            {
                Ok(_) => {
                    let label = match recorded {
                        State::Acked => "acked",
                        State::Expired => "expired",
                        State::Purged => "purged",
                        State::Pending => return Ok(recorded == state),
                    };
                    ::metrics::counter!(metrics::DELIVERY_DONE, "outcome" => label).increment(1);
                    return Ok(recorded == state);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "message {id} kept changing"
        )))
    }

    /// The status of a message.
    pub async fn status(&self, id: &str) -> Result<GetDeliveryResponse, ControlError> {
        if id.is_empty() || id.len() > roomcast_bus::names::MAX_NAME_LEN {
            return Err(ControlError::UnknownMessage(id.to_owned()));
        }
        let Some((msg, _)) = self.read_message(id).await? else {
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
        let ns = Control::namespace(ns)?;
        let to = match (user.is_empty(), socket.is_empty()) {
            (false, true) => Recipient::User(Control::user_ids(&[user.to_owned()])?.remove(0)),
            (true, false) => {
                Recipient::Socket(Control::socket_ids(&[socket.to_owned()])?.remove(0))
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
        let (queue, _) = self.read_queue(&queue_key(&ns, &to)).await?;
        let now = now_ms();
        let mut out = Vec::new();
        for item in queue.items.iter().filter(|i| i.expires_ms > now) {
            let Some((msg, _)) = self.read_message(&item.msg).await? else {
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
            .update_queue(&queue_key(&ns, &to), |q| q.items.clear())
            .await?;
        let mut n = 0u32;
        for item in &before.items {
            if self.mark(&item.msg, &to, State::Purged).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Starts a worker for a queue this control plane owns, unless one runs.
    fn run_worker(&self, key: String) {
        let worker = {
            let mut workers = self.workers();
            if let Some(w) = workers.get(&key) {
                w.dirty.store(true, Ordering::SeqCst);
                w.notify.notify_one();
                return;
            }
            let w = Arc::new(Worker::default());
            workers.insert(key.clone(), w.clone());
            w
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut worker = worker;
            loop {
                if let Err(e) = this.work(&key, &worker).await {
                    tracing::warn!(queue = %key, error = %e, "delivery worker stopped");
                }
                // Let go of the slot; a connect seen meanwhile (dirty) means
                // the recipient may have a socket now: take the queue again.
                let dirty = {
                    let mut workers = this.workers();
                    workers.remove(&key);
                    worker.dirty.load(Ordering::SeqCst)
                };
                if !dirty || this.inner.stop.is_cancelled() || !this.claim(&key).await {
                    return;
                }
                let mut workers = this.workers();
                if workers.contains_key(&key) {
                    return;
                }
                worker = Arc::new(Worker::default());
                workers.insert(key.clone(), worker.clone());
            }
        });
    }

    /// Takes a queue when it has items and nobody else holds it.
    async fn claim(&self, key: &str) -> bool {
        let me = self.inner.me.clone();
        let lease = ms(self.inner.cfg.lease_ttl);
        let result = self
            .update_queue(key, |q| {
                let now = now_ms();
                if q.claimable(&me, now) {
                    q.owner = me.clone();
                    q.lease_until_ms = now + lease;
                }
            })
            .await;
        match result {
            Ok((_, after)) => after.owner == me && !after.items.is_empty(),
            Err(e) => {
                tracing::warn!(queue = %key, error = %e, "delivery queue not taken");
                false
            }
        }
    }

    /// A recipient may have a socket now: wake its worker here, or take its
    /// queue.
    async fn kick(&self, key: String) {
        {
            let workers = self.workers();
            if let Some(w) = workers.get(&key) {
                w.dirty.store(true, Ordering::SeqCst);
                w.notify.notify_one();
                return;
            }
        }
        if self.claim(&key).await {
            self.run_worker(key);
        }
    }

    /// Delivers a queue's messages one by one while this control plane owns
    /// it; returns when the queue is empty, let go, or taken by another.
    async fn work(&self, key: &str, worker: &Worker) -> Result<(), ControlError> {
        let cfg = &self.inner.cfg;
        let me = &self.inner.me;
        let mut head: Option<String> = None;
        let mut wait = cfg.resend_interval;
        loop {
            if self.inner.stop.is_cancelled() {
                return Ok(());
            }
            let (queue, _) = self.read_queue(key).await?;
            if queue.owner != *me {
                return Ok(());
            }
            let now = now_ms();
            // Expired items go first (marking them expired), then the lease
            // is renewed once a third of it is used.
            let expired: Vec<String> = queue
                .items
                .iter()
                .filter(|i| i.expires_ms <= now)
                .map(|i| i.msg.clone())
                .collect();
            let renew = queue.lease_until_ms - now < ms(cfg.lease_ttl) * 2 / 3;
            if !expired.is_empty() || renew || queue.items.is_empty() {
                let lease = ms(cfg.lease_ttl);
                let (_, after) = self
                    .update_queue(key, |q| {
                        if q.owner != *me {
                            return;
                        }
                        let now = now_ms();
                        q.prune(now);
                        if q.items.is_empty() {
                            q.owner.clear();
                        } else {
                            q.lease_until_ms = now + lease;
                        }
                    })
                    .await?;
                if let Some(to) = Self::recipient_of(key) {
                    for id in &expired {
                        self.mark(id, &to, State::Expired).await?;
                    }
                }
                if after.owner != *me {
                    return Ok(());
                }
                continue;
            }
            let Some(item) = queue.items.first().cloned() else {
                continue;
            };
            if head.as_deref() != Some(&item.msg) {
                head = Some(item.msg.clone());
                wait = cfg.resend_interval;
            }
            let Some((msg, _)) = self.read_message(&item.msg).await? else {
                self.pop(key, &item.msg).await?;
                continue;
            };
            let Some(to) = msg
                .recipients
                .iter()
                .find(|r| queue_key(&msg.ns, &r.to) == key)
                .map(|r| (r.to.clone(), r.state))
            else {
                self.pop(key, &item.msg).await?;
                continue;
            };
            if to.1 != State::Pending {
                self.pop(key, &item.msg).await?;
                continue;
            }
            let left = Duration::from_millis(u64::try_from(msg.expires_ms - now).unwrap_or(0));
            let timeout = wait
                .min(left)
                .min(cfg.lease_ttl / 2)
                .max(Duration::from_millis(1));
            let answer = self.attempt(&msg, &to.0, timeout).await;
            match answer {
                Ok(Attempt::Acked) => {
                    self.mark(&msg.id, &to.0, State::Acked).await?;
                    self.pop(key, &msg.id).await?;
                }
                Ok(Attempt::Unanswered) => {
                    wait = (wait * 2).min(cfg.max_resend_interval);
                }
                Ok(Attempt::NoSocket) => {
                    // Wait a little for a connect, then let go: the next
                    // connect of the recipient makes a control plane take it.
                    let idle = cfg.resend_interval.min(left);
                    tokio::select! {
                        _ = worker.notify.notified() => continue,
                        _ = tokio::time::sleep(idle) => {}
                        _ = self.inner.stop.cancelled() => return Ok(()),
                    }
                    let (_, after) = self
                        .update_queue(key, |q| {
                            if q.owner == *me {
                                q.owner.clear();
                                q.lease_until_ms = 0;
                            }
                        })
                        .await?;
                    if after.owner.is_empty() {
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %key, error = %e, "delivery attempt failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.inner.stop.cancelled() => return Ok(()),
                    }
                }
            }
        }
    }

    fn recipient_of(key: &str) -> Option<Recipient> {
        let mut parts = key.splitn(4, '.');
        let (_, _, kind, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let name = roomcast_bus::subject::untoken(&name.replace('=', "~"))?;
        match kind {
            "u" => Some(Recipient::User(name)),
            "s" => Some(Recipient::Socket(name)),
            _ => None,
        }
    }

    async fn pop(&self, key: &str, id: &str) -> Result<(), StoreError> {
        self.update_queue(key, |q| q.items.retain(|i| i.msg != id))
            .await
            .map(drop)
    }

    /// Sends one message once to a recipient's sockets and waits for an ack,
    /// in a `delivery` span when traces are exported.
    async fn attempt(
        &self,
        msg: &Message,
        to: &Recipient,
        timeout: Duration,
    ) -> Result<Attempt, ControlError> {
        use tracing::field::Empty;
        use tracing::Instrument;
        let span = if roomcast_bus::trace::enabled() {
            tracing::info_span!(
                "delivery",
                otel.name = "delivery",
                message_id = %msg.id,
                acked = Empty,
                otel.status_code = Empty
            )
        } else {
            tracing::Span::none()
        };
        let result = self
            .send_once(msg, to, timeout)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(attempt) => span.record("acked", matches!(attempt, Attempt::Acked)),
            Err(_) => span.record("otel.status_code", "ERROR"),
        };
        result
    }

    async fn send_once(
        &self,
        msg: &Message,
        to: &Recipient,
        timeout: Duration,
    ) -> Result<Attempt, ControlError> {
        let attachments = msg
            .attachments
            .iter()
            .filter_map(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
            .collect();
        let (user_ids, socket_ids) = match to {
            Recipient::User(u) => (vec![u.clone()], Vec::new()),
            Recipient::Socket(s) => (Vec::new(), vec![s.clone()]),
        };
        ::metrics::counter!(metrics::DELIVERY_ATTEMPTS).increment(1);
        let res = self
            .inner
            .control
            .emit_with_ack(EmitWithAckRequest {
                to: Some(Selector {
                    namespace: msg.ns.clone(),
                    user_ids,
                    socket_ids,
                    ..Selector::default()
                }),
                event: msg.event.clone(),
                args_json: args_with_id(&msg.args_json, &msg.id)?,
                attachments,
                timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            })
            .await?;
        Ok(if res.results.iter().any(|r| r.acked) {
            Attempt::Acked
        } else if res.results.is_empty() && res.complete {
            Attempt::NoSocket
        } else {
            Attempt::Unanswered
        })
    }

    /// Follows connects (every control plane sees them) and sweeps for
    /// queues whose owner died, until shutdown.
    pub async fn run(self) {
        let subjects = Subjects::new(&self.inner.control.config.cluster);
        let mut events = match self
            .inner
            .control
            .bus
            .subscribe(&subjects.presence_events(), None)
            .await
        {
            Ok(sub) => sub,
            Err(e) => {
                tracing::error!(error = %e, "delivery cannot follow connects");
                return;
            }
        };
        let mut sweep = tokio::time::interval(self.inner.cfg.lease_ttl / 3);
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                msg = events.next() => {
                    let Some(msg) = msg else { return };
                    let Ok(ev) = serde_json::from_slice::<roomcast_presence::PresenceEvent>(&msg.payload) else {
                        continue;
                    };
                    if ev.kind != EventKind::Connect {
                        continue;
                    }
                    let mut keys = vec![queue_key(&ev.ns, &Recipient::Socket(ev.socket.clone()))];
                    if !ev.user.is_empty() {
                        keys.push(queue_key(&ev.ns, &Recipient::User(ev.user.clone())));
                    }
                    for key in keys {
                        let this = self.clone();
                        tokio::spawn(async move { this.kick(key).await });
                    }
                }
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::warn!(error = %e, "delivery sweep failed");
                    }
                }
            }
        }
    }

    /// Takes over queues whose owner's lease ran out, drops expired items of
    /// queues nobody works on, and (memory store) deletes old messages.
    async fn sweep(&self) -> Result<(), StoreError> {
        let now = now_ms();
        for key in self.inner.store.keys("q.").await? {
            if self.workers().contains_key(&key) {
                continue;
            }
            let (queue, _) = self.read_queue(&key).await?;
            let dead_owner = !queue.owner.is_empty() && queue.lease_until_ms <= now;
            if dead_owner {
                tracing::info!(queue = %key, owner = %queue.owner, "taking over a delivery queue");
                if self.claim(&key).await {
                    self.run_worker(key);
                }
                continue;
            }
            if queue.owner.is_empty() && queue.items.iter().any(|i| i.expires_ms <= now) {
                let (before, _) = self
                    .update_queue(&key, |q| {
                        if q.owner.is_empty() {
                            q.prune(now_ms());
                        }
                    })
                    .await?;
                if let Some(to) = Self::recipient_of(&key) {
                    for item in before.items.iter().filter(|i| i.expires_ms <= now) {
                        self.mark(&item.msg, &to, State::Expired).await?;
                    }
                }
            }
        }
        if self.inner.cfg.collect {
            for key in self.inner.store.keys("m.").await? {
                let Some((bytes, rev)) = self.inner.store.get(&key).await? else {
                    continue;
                };
                let Ok(msg) = serde_json::from_slice::<Message>(&bytes) else {
                    continue;
                };
                if msg.collectable_at(self.inner.cfg.retention) <= now {
                    let _ = self.inner.store.delete_if(&key, rev).await;
                }
            }
        }
        Ok(())
    }
}

enum Attempt {
    Acked,
    /// Sent to some socket (or an edge did not answer), no ack in time.
    Unanswered,
    /// The recipient has no socket in the namespace on any edge.
    NoSocket,
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_bus::envelope::{Command, EdgeReply, Packet};
    use roomcast_bus::memory::MemoryKv as MemoryStore;
    use roomcast_bus::{Bus, MemoryBus};
    use roomcast_presence::{Presence, PresenceConfig, SocketRecord};

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
            Arc::new(MemoryStore::default()),
            Arc::new(bus.clone()),
            PresenceConfig::default(),
        );
        let control = Control::new(
            crate::ControlConfig::default(),
            Arc::new(bus.clone()),
            Arc::new(crate::StaticEdges(vec!["e1".into()])),
        )
        .with_presence(presence.clone());
        let cfg = DeliveryConfig {
            resend_interval: Duration::from_millis(30),
            max_resend_interval: Duration::from_millis(60),
            ..DeliveryConfig::default()
        };
        let (_, d) = control
            .with_delivery(Arc::new(MemoryStore::default()), cfg, "c1".into())
            .expect("presence is on");
        (d, presence)
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
            d.inner
                .store
                .swap(&message_key(id), to_json(&m), None)
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
        d.inner
            .store
            .swap(&queue_key("/", &u), to_json(&queue), None)
            .await
            .expect("queue stored");

        assert_eq!(d.purge("/", "u", "").await.expect("purged"), 1);
        let status = |id: &'static str| {
            let d = d.clone();
            async move { d.status(id).await.expect("status").status }
        };
        assert_eq!(status("m-old").await, DeliveryStatus::Expired as i32);
        assert_eq!(status("m-live").await, DeliveryStatus::Purged as i32);
        let (old, _) = d.read_message("m-old").await.expect("read").expect("kept");
        assert_eq!(
            old.recipients[0].state,
            State::Expired,
            "recorded, not purged"
        );
    }

    fn msg(recipients: Vec<RecipientState>) -> Message {
        Message {
            id: "m1".into(),
            ns: "/".into(),
            event: "e".into(),
            args_json: String::new(),
            attachments: Vec::new(),
            created_ms: 0,
            expires_ms: 100,
            recipients,
        }
    }

    fn pending(u: &str) -> RecipientState {
        RecipientState {
            to: Recipient::User(u.into()),
            state: State::Pending,
            done_ms: 0,
        }
    }

    #[test]
    fn status_follows_recipients_and_expiry() {
        let mut m = msg(vec![pending("a"), pending("b")]);
        assert_eq!(m.status_at(50), State::Pending);
        assert_eq!(m.status_at(100), State::Expired, "pending past the ttl");
        let a = Recipient::User("a".into());
        let b = Recipient::User("b".into());
        assert_eq!(m.mark(&a, State::Acked, 10), Some(State::Acked));
        assert_eq!(
            m.mark(&a, State::Expired, 11),
            None,
            "a final state is never changed"
        );
        assert_eq!(m.status_at(50), State::Pending);
        assert_eq!(m.status_at(150), State::Expired);
        assert_eq!(m.mark(&b, State::Acked, 20), Some(State::Acked));
        assert_eq!(
            m.status_at(150),
            State::Acked,
            "acked stays acked after the ttl"
        );
        assert_eq!(m.collectable_at(Duration::from_millis(5)), 25);

        let mut p = msg(vec![pending("a")]);
        assert_eq!(p.mark(&a, State::Purged, 5), Some(State::Purged));
        assert_eq!(p.status_at(500), State::Purged);
    }

    #[test]
    fn a_purge_past_the_expiry_is_recorded_expired_and_an_ack_as_given() {
        let a = Recipient::User("a".into());
        for asked in [State::Purged, State::Expired] {
            let mut m = msg(vec![pending("a")]);
            assert_eq!(m.mark(&a, asked, 130), Some(State::Expired), "{asked:?}");
            assert_eq!(m.recipients[0].done_ms, 100, "done at the expiry");
            assert_eq!(m.status_at(130), State::Expired);
        }
        let mut m = msg(vec![pending("a")]);
        assert_eq!(m.mark(&a, State::Acked, 101), Some(State::Acked));
        assert_eq!(m.status_at(130), State::Acked);
    }

    #[test]
    fn queues_are_claimed_only_when_free_or_abandoned() {
        let mut q = Queue::default();
        assert!(!q.claimable("me", 0), "nothing to deliver");
        q.items.push(Item {
            msg: "a".into(),
            expires_ms: 10,
        });
        q.items.push(Item {
            msg: "b".into(),
            expires_ms: 30,
        });
        assert!(q.claimable("me", 0));
        q.owner = "other".into();
        q.lease_until_ms = 20;
        assert!(!q.claimable("me", 19), "another owner's lease holds");
        assert!(q.claimable("me", 20), "an expired lease can be taken");
        assert!(q.claimable("other", 5));
        assert_eq!(q.prune(10), vec!["a".to_owned()]);
        assert_eq!(q.items.len(), 1, "order and the rest kept");
    }

    #[test]
    fn the_message_id_is_the_last_argument() {
        assert_eq!(
            args_with_id("", "m1").expect("ok"),
            r#"[{"messageId":"m1"}]"#
        );
        assert_eq!(
            args_with_id(r#"[1,{"_placeholder":true,"num":0}]"#, "m2").expect("ok"),
            r#"[1,{"_placeholder":true,"num":0},{"messageId":"m2"}]"#
        );
        assert!(args_with_id("{}", "m3").is_err());
    }

    #[test]
    fn queue_keys_name_their_recipient() {
        let k = queue_key("/chat", &Recipient::User("a.b c".into()));
        assert_eq!(
            Delivery::recipient_of(&k),
            Some(Recipient::User("a.b c".into()))
        );
        let k = queue_key("/", &Recipient::Socket("s-1_x".into()));
        assert_eq!(
            Delivery::recipient_of(&k),
            Some(Recipient::Socket("s-1_x".into()))
        );
    }
}
