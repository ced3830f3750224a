//! The retry loop of at-least-once delivery: which queues this control plane
//! works on, the task per queue that sends the head message until it is
//! acked, and the loop that follows connects and sweeps for queues whose
//! owner died.
//!
//! Every task is spawned on one [`TaskTracker`] and stops on one
//! [`CancellationToken`]; [`Worker::shutdown`] cancels, then joins them
//! within a bound, so that nothing sends after it returned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use roomcast_bus::envelope::{now_ms, Target};
use roomcast_bus::KvError;
use roomcast_presence::EventKind;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::model::{
    message_id_arg, ms, queue_key, recipient_of, DeliveryConfig, Message, Recipient, State,
};
use super::store::Records;
use crate::fanout::Fanout;
use crate::plan::EmitPlan;
use crate::selector::Limits;
use crate::{metrics, ControlError};

/// The task working on one queue, as others see it.
#[derive(Default)]
struct QueueTask {
    /// Wakes a task that waits for the recipient to connect.
    wake: Notify,
    /// A connect came while the task ran: it must not let go unseen.
    connected: AtomicBool,
}

impl QueueTask {
    fn connected(&self) {
        self.connected.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// How one send of a message ended.
enum Attempt {
    Acked,
    /// Sent to some socket (or an edge did not answer), no ack in time.
    Unanswered,
    /// The recipient has no socket in the namespace on any edge.
    NoSocket,
}

/// The queues this control plane delivers, and the tasks doing it.
pub(crate) struct Worker {
    records: Records,
    fanout: Fanout,
    limits: Limits,
    cfg: DeliveryConfig,
    /// This control plane, as queue owners are named.
    me: String,
    queues: Mutex<HashMap<String, Arc<QueueTask>>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Worker {
    pub fn new(
        records: Records,
        fanout: Fanout,
        limits: Limits,
        cfg: DeliveryConfig,
        me: String,
    ) -> Worker {
        Worker {
            records,
            fanout,
            limits,
            cfg,
            me,
            queues: Mutex::default(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<String, Arc<QueueTask>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many tasks run (the follow loop and one per queue).
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    /// Whether shutdown began.
    #[cfg(test)]
    pub fn closed(&self) -> bool {
        self.tasks.is_closed()
    }

    /// Starts following connects and sweeping, until shutdown.
    pub fn start(self: &Arc<Self>) {
        let this = self.clone();
        self.tasks.spawn(async move { this.follow().await });
    }

    /// Stops every task and waits, for at most `bound`, until they ended;
    /// returns whether they all did.
    pub async fn shutdown(&self, bound: Duration) -> bool {
        self.stop.cancel();
        self.tasks.close();
        let joined = tokio::time::timeout(bound, self.tasks.wait()).await.is_ok();
        if !joined {
            tracing::warn!(
                tasks = self.tasks.len(),
                "delivery tasks still running at shutdown"
            );
        }
        joined
    }

    /// Lets go of the queues this control plane works on, so that another
    /// one takes them at the recipient's next connect or at once by the
    /// sweep, rather than after the lease TTL.
    pub async fn release(&self) {
        let keys: Vec<String> = self.queues().keys().cloned().collect();
        for key in keys {
            let released = self
                .records
                .update_queue(&key, |q| {
                    if q.owner == self.me {
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

    /// Follows connects (every control plane sees them) and sweeps for
    /// queues whose owner died, until shutdown.
    async fn follow(self: Arc<Self>) {
        let subjects = self.fanout.subjects();
        let mut events = match self
            .fanout
            .bus()
            .subscribe(&subjects.presence_events(), None)
            .await
        {
            Ok(sub) => sub,
            Err(e) => {
                tracing::error!(error = %e, "delivery cannot follow connects");
                return;
            }
        };
        let mut sweep = tokio::time::interval(self.cfg.lease_ttl / 3);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
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
                        self.tasks.spawn(async move { this.connected(key).await });
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
    async fn sweep(self: &Arc<Self>) -> Result<(), KvError> {
        let now = now_ms();
        for key in self.records.queue_keys().await? {
            if self.queues().contains_key(&key) {
                continue;
            }
            let (queue, _) = self.records.read_queue(&key).await?;
            let dead_owner = !queue.owner.is_empty() && queue.lease_until_ms <= now;
            if dead_owner {
                tracing::info!(queue = %key, owner = %queue.owner, "taking over a delivery queue");
                if self.claim(&key).await {
                    self.work_on(key);
                }
                continue;
            }
            if queue.owner.is_empty() && queue.items.iter().any(|i| i.expires_ms <= now) {
                let (before, _) = self
                    .records
                    .update_queue(&key, |q| {
                        if q.owner.is_empty() {
                            q.prune(now_ms());
                        }
                    })
                    .await?;
                if let Some(to) = recipient_of(&key) {
                    for item in before.items.iter().filter(|i| i.expires_ms <= now) {
                        self.records.mark(&item.msg, &to, State::Expired).await?;
                    }
                }
            }
        }
        if self.cfg.collect {
            self.records.collect(self.cfg.retention).await?;
        }
        Ok(())
    }

    /// Starts a task for a queue this control plane owns, unless one runs
    /// (then wakes it: the queue has news).
    pub fn work_on(self: &Arc<Self>, key: String) {
        let task = {
            let mut queues = self.queues();
            if let Some(t) = queues.get(&key) {
                t.connected();
                return;
            }
            let t = Arc::new(QueueTask::default());
            queues.insert(key.clone(), t.clone());
            t
        };
        let this = self.clone();
        self.tasks.spawn(async move {
            let mut task = task;
            loop {
                if let Err(e) = this.deliver(&key, &task).await {
                    tracing::warn!(queue = %key, error = %e, "delivery worker stopped");
                }
                if this.stop.is_cancelled() {
                    // The queue stays listed as ours: `release` lets go of it.
                    return;
                }
                // Let go of the slot; a connect seen meanwhile means the
                // recipient may have a socket now: take the queue again.
                let connected = {
                    let mut queues = this.queues();
                    queues.remove(&key);
                    task.connected.load(Ordering::SeqCst)
                };
                if !connected || this.stop.is_cancelled() || !this.claim(&key).await {
                    return;
                }
                let mut queues = this.queues();
                if queues.contains_key(&key) {
                    return;
                }
                task = Arc::new(QueueTask::default());
                queues.insert(key.clone(), task.clone());
            }
        });
    }

    /// Takes a queue when it has items and nobody else holds it.
    pub async fn claim(&self, key: &str) -> bool {
        let lease = ms(self.cfg.lease_ttl);
        let result = self
            .records
            .update_queue(key, |q| {
                let now = now_ms();
                if q.claimable(&self.me, now) {
                    q.owner = self.me.clone();
                    q.lease_until_ms = now + lease;
                }
            })
            .await;
        match result {
            Ok((_, after)) => after.owner == self.me && !after.items.is_empty(),
            Err(e) => {
                tracing::warn!(queue = %key, error = %e, "delivery queue not taken");
                false
            }
        }
    }

    /// A recipient may have a socket now: wake its task here, or take its
    /// queue.
    async fn connected(self: Arc<Self>, key: String) {
        if let Some(t) = self.queues().get(&key) {
            t.connected();
            return;
        }
        if self.claim(&key).await {
            self.work_on(key);
        }
    }

    /// Delivers a queue's messages one by one while this control plane owns
    /// it; returns when the queue is empty, let go, taken by another, or at
    /// shutdown.
    async fn deliver(&self, key: &str, task: &QueueTask) -> Result<(), ControlError> {
        let cfg = &self.cfg;
        let me = &self.me;
        let mut head: Option<String> = None;
        let mut wait = cfg.resend_interval;
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            let (queue, _) = self.records.read_queue(key).await?;
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
                    .records
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
                if let Some(to) = recipient_of(key) {
                    for id in &expired {
                        self.records.mark(id, &to, State::Expired).await?;
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
            let Some((msg, _)) = self.records.read_message(&item.msg).await? else {
                self.records.pop(key, &item.msg).await?;
                continue;
            };
            let Some((to, state)) = msg
                .recipients
                .iter()
                .find(|r| queue_key(&msg.ns, &r.to) == key)
                .map(|r| (r.to.clone(), r.state))
            else {
                self.records.pop(key, &item.msg).await?;
                continue;
            };
            if state != State::Pending {
                self.records.pop(key, &item.msg).await?;
                continue;
            }
            let left = Duration::from_millis(u64::try_from(msg.expires_ms - now).unwrap_or(0));
            let timeout = wait
                .min(left)
                .min(cfg.lease_ttl / 2)
                .max(Duration::from_millis(1));
            let answer = tokio::select! {
                answer = self.attempt(&msg, &to, timeout) => answer,
                _ = self.stop.cancelled() => return Ok(()),
            };
            match answer {
                Ok(Attempt::Acked) => {
                    self.records.mark(&msg.id, &to, State::Acked).await?;
                    self.records.pop(key, &msg.id).await?;
                }
                Ok(Attempt::Unanswered) => {
                    wait = (wait * 2).min(cfg.max_resend_interval);
                }
                Ok(Attempt::NoSocket) => {
                    // Wait a little for a connect, then let go: the next
                    // connect of the recipient makes a control plane take it.
                    let idle = cfg.resend_interval.min(left);
                    tokio::select! {
                        _ = task.wake.notified() => continue,
                        _ = tokio::time::sleep(idle) => {}
                        _ = self.stop.cancelled() => return Ok(()),
                    }
                    let (_, after) = self
                        .records
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
                        _ = self.stop.cancelled() => return Ok(()),
                    }
                }
            }
        }
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

    /// One emit with an ack id, planned from the stored message with its
    /// message id as the last argument.
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
        let (users, sockets) = match to {
            Recipient::User(u) => (vec![u.clone()], Vec::new()),
            Recipient::Socket(s) => (Vec::new(), vec![s.clone()]),
        };
        let target = Target {
            ns: msg.ns.clone(),
            users,
            sockets,
            ..Target::default()
        };
        // Whole milliseconds, as edges are told.
        let timeout = Duration::from_millis(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        ::metrics::counter!(metrics::DELIVERY_ATTEMPTS).increment(1);
        let id = message_id_arg(&msg.id)?;
        let plan = EmitPlan::new(
            &self.limits,
            target,
            &msg.event,
            &msg.args_json,
            attachments,
        )?
        .with_last_arg(&id);
        let ack_id = self.fanout.ack_id();
        let encoded = plan.encode(Some(ack_id))?;
        let res = self
            .fanout
            .emit_with_ack(encoded.target, encoded.packet, ack_id, timeout)
            .await?;
        Ok(if res.results.iter().any(|r| r.acked) {
            Attempt::Acked
        } else if res.results.is_empty() && res.complete {
            Attempt::NoSocket
        } else {
            Attempt::Unanswered
        })
    }
}
