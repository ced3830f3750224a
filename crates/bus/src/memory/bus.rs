//! The in-process bus used by `roomcast standalone` and unit tests.
//!
//! It keeps NATS semantics so the code above it cannot tell the difference:
//! subjects are dot-separated tokens, subscriptions may use `*` (one token) and
//! `>` (the rest), queue groups share messages, and a subscriber whose bounded
//! channel is full loses the message (NATS would call it a slow consumer) rather
//! than stalling the publisher and everyone else.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::{Stream, StreamExt};

use std::time::Duration;

use crate::{subject, Asked, Bus, BusError, Headers, Message, Subscription};

/// How many messages a subscriber may have waiting before it loses new ones.
pub const DEFAULT_SUBSCRIBER_CAPACITY: usize = 65_536;

#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    subs: Mutex<Subs>,
    next_id: AtomicU64,
    capacity: usize,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Subs {
    /// Subscriptions without wildcards, by subject.
    exact: HashMap<String, Vec<Sub>>,
    /// Subscriptions with wildcards.
    wild: Vec<Sub>,
    /// Round-robin position per queue group.
    cursor: HashMap<String, usize>,
}

struct Sub {
    id: u64,
    pattern: String,
    queue: Option<String>,
    /// futures-channel's bounded channel allocates per message, where tokio's
    /// allocates a block of 32 slots (3 KiB) for every subscription up front,
    /// and an edge has one per room. Its `try_send` takes `&mut`; publishers
    /// reach a subscription through shared references while they hold the bus
    /// lock, so this lock is never contended.
    tx: Mutex<mpsc::Sender<Message>>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new(DEFAULT_SUBSCRIBER_CAPACITY)
    }
}

impl MemoryBus {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                subs: Mutex::new(Subs::default()),
                next_id: AtomicU64::new(1),
                capacity,
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Messages lost because a subscriber's channel was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// How many subscriptions are live (all subjects).
    pub fn subscription_count(&self) -> usize {
        let subs = self.inner.lock();
        subs.exact.values().map(Vec::len).sum::<usize>() + subs.wild.len()
    }

    /// Whether a message on `subject` would reach anyone.
    fn has_subscribers(&self, subject: &str) -> bool {
        let subs = self.inner.lock();
        subs.exact.get(subject).is_some_and(|l| !l.is_empty())
            || subs
                .wild
                .iter()
                .any(|s| subject::matches(&s.pattern, subject))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Subs> {
        // The map stays consistent even if a holder panicked: every mutation is a
        // single push or retain.
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Unsubscribe {
    inner: Arc<Inner>,
    id: u64,
    pattern: String,
}

/// The subscriber's end: the channel, and the registration it removes when
/// dropped.
struct Receiver {
    rx: mpsc::Receiver<Message>,
    _unsubscribe: Unsubscribe,
}

impl Stream for Receiver {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_next_unpin(cx)
    }
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut subs = self.inner.lock();
        if subject::has_wildcard(&self.pattern) {
            subs.wild.retain(|s| s.id != self.id);
        } else if let Some(list) = subs.exact.get_mut(&self.pattern) {
            list.retain(|s| s.id != self.id);
            if list.is_empty() {
                subs.exact.remove(&self.pattern);
            }
        }
    }
}

#[async_trait::async_trait]
impl Bus for MemoryBus {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        reply: Option<&str>,
    ) -> Result<(), BusError> {
        if !subject::is_valid(subject, false) {
            return Err(BusError::InvalidSubject(subject.to_owned()));
        }
        let msg = Message {
            subject: subject.to_owned(),
            headers,
            payload,
            reply: reply.map(str::to_owned),
        };
        let mut guard = self.inner.lock();
        let subs = &mut *guard;
        let mut plain: Vec<&Sub> = Vec::new();
        let mut groups: HashMap<&str, Vec<&Sub>> = HashMap::new();
        let matching = subs.exact.get(subject).into_iter().flatten().chain(
            subs.wild
                .iter()
                .filter(|s| subject::matches(&s.pattern, subject)),
        );
        for sub in matching {
            match &sub.queue {
                Some(q) => groups.entry(q.as_str()).or_default().push(sub),
                None => plain.push(sub),
            }
        }
        let mut targets = plain;
        for (group, members) in groups {
            let cursor = subs.cursor.entry(group.to_owned()).or_insert(0);
            *cursor = cursor.wrapping_add(1);
            targets.push(members[*cursor % members.len()]);
        }
        for sub in targets {
            let sent = sub
                .tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_send(msg.clone());
            // A closed channel is a subscription being dropped: not a loss.
            if sent.is_err_and(|e| e.is_full()) {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject, "in-memory subscriber is slow, message dropped");
            }
        }
        Ok(())
    }

    /// Like every bus, but knows at once when nobody listens, as NATS does.
    async fn ask(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Asked, BusError> {
        if !self.has_subscribers(subject) {
            return Ok(Asked::NoResponders);
        }
        crate::backend::first_reply(self, subject, headers, payload, timeout).await
    }

    async fn subscribe(
        &self,
        pattern: &str,
        queue: Option<&str>,
    ) -> Result<Subscription, BusError> {
        if !subject::is_valid(pattern, true) {
            return Err(BusError::InvalidSubject(pattern.to_owned()));
        }
        // The channel holds its buffer plus one message per sender (one here).
        let (tx, rx) = mpsc::channel(self.inner.capacity.saturating_sub(1));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = Sub {
            id,
            pattern: pattern.to_owned(),
            queue: queue.map(str::to_owned),
            tx: Mutex::new(tx),
        };
        {
            let mut subs = self.inner.lock();
            if subject::has_wildcard(pattern) {
                subs.wild.push(sub);
            } else {
                // Most subjects have one subscriber (an edge's room): room
                // for one, where a first push would make room for four.
                subs.exact
                    .entry(pattern.to_owned())
                    .or_insert_with(|| Vec::with_capacity(1))
                    .push(sub);
            }
        }
        Ok(Subscription::new(Receiver {
            rx,
            _unsubscribe: Unsubscribe {
                inner: self.inner.clone(),
                id,
                pattern: pattern.to_owned(),
            },
        }))
    }

    fn new_inbox(&self) -> String {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        format!("_INBOX.{:016x}{n:x}", rand::random::<u64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn publish(bus: &MemoryBus, subject: &str, body: &'static str) {
        bus.publish(
            subject,
            Headers::new(),
            Bytes::from_static(body.as_bytes()),
            None,
        )
        .await
        .expect("publish");
    }

    #[tokio::test]
    async fn delivers_to_exact_and_wildcard_subscribers() {
        let bus = MemoryBus::default();
        let mut exact = bus.subscribe("a.b.c", None).await.expect("sub");
        let mut star = bus.subscribe("a.*.c", None).await.expect("sub");
        let mut tail = bus.subscribe("a.>", None).await.expect("sub");
        let mut other = bus.subscribe("x.>", None).await.expect("sub");
        publish(&bus, "a.b.c", "1").await;
        for sub in [&mut exact, &mut star, &mut tail] {
            assert_eq!(&sub.next().await.expect("msg").payload[..], b"1");
        }
        assert!(other.try_next().is_none());
        publish(&bus, "a.b", "2").await;
        assert_eq!(&tail.next().await.expect("msg").payload[..], b"2");
        assert!(exact.try_next().is_none());
        assert!(star.try_next().is_none());
    }

    #[tokio::test]
    async fn queue_group_shares_messages() {
        let bus = MemoryBus::default();
        let mut q1 = bus.subscribe("ev.>", Some("g")).await.expect("sub");
        let mut q2 = bus.subscribe("ev.>", Some("g")).await.expect("sub");
        let mut all = bus.subscribe("ev.*", None).await.expect("sub");
        for _ in 0..10 {
            publish(&bus, "ev.x", "m").await;
        }
        let mut n1 = 0;
        while q1.try_next().is_some() {
            n1 += 1;
        }
        let mut n2 = 0;
        while q2.try_next().is_some() {
            n2 += 1;
        }
        let mut na = 0;
        while all.try_next().is_some() {
            na += 1;
        }
        assert_eq!((n1 + n2, na), (10, 10));
        assert!(n1 > 0 && n2 > 0, "both members got a share: {n1} {n2}");
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let bus = MemoryBus::default();
        let sub = bus.subscribe("a.b", None).await.expect("sub");
        let wild = bus.subscribe("a.*", None).await.expect("sub");
        assert_eq!(bus.subscription_count(), 2);
        drop(sub);
        drop(wild);
        assert_eq!(bus.subscription_count(), 0);
    }

    #[tokio::test]
    async fn slow_subscriber_loses_messages_instead_of_blocking() {
        let bus = MemoryBus::new(2);
        let mut slow = bus.subscribe("s", None).await.expect("sub");
        for _ in 0..5 {
            publish(&bus, "s", "x").await;
        }
        assert_eq!(bus.dropped(), 3);
        assert!(slow.next().await.is_some());
    }

    #[tokio::test]
    async fn a_drained_subscriber_has_its_whole_capacity_again() {
        let bus = MemoryBus::new(2);
        let mut sub = bus.subscribe("s", None).await.expect("sub");
        for round in 0..3 {
            publish(&bus, "s", "x").await;
            publish(&bus, "s", "y").await;
            assert_eq!(bus.dropped(), 0, "round {round}");
            assert_eq!(&sub.next().await.expect("x").payload[..], b"x");
            assert_eq!(&sub.next().await.expect("y").payload[..], b"y");
            assert!(sub.try_next().is_none());
        }
        drop(sub);
        publish(&bus, "s", "nobody").await;
        assert_eq!(bus.dropped(), 0, "a message to no subscriber is not a loss");
    }

    #[tokio::test]
    async fn request_many_gathers_replies_until_deadline() {
        let bus = MemoryBus::default();
        for _ in 0..2 {
            let mut sub = bus.subscribe("svc", None).await.expect("sub");
            let b = bus.clone();
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if let Some(reply) = m.reply {
                        let _ = b.publish(&reply, Headers::new(), m.payload, None).await;
                    }
                }
            });
        }
        let replies = bus
            .request_many(
                "svc",
                Headers::new(),
                Bytes::from_static(b"q"),
                2,
                Duration::from_secs(5),
            )
            .await
            .expect("request");
        assert_eq!(replies.len(), 2);
        let partial = bus
            .request_many(
                "svc",
                Headers::new(),
                Bytes::from_static(b"q"),
                3,
                Duration::from_millis(50),
            )
            .await
            .expect("request");
        assert_eq!(
            partial.len(),
            2,
            "two of three expected replies arrive before the deadline"
        );
    }

    #[tokio::test]
    async fn rejects_invalid_subjects() {
        let bus = MemoryBus::default();
        assert!(bus.subscribe("a..b", None).await.is_err());
        assert!(bus
            .publish("a.*", Headers::new(), Bytes::new(), None)
            .await
            .is_err());
        assert!(bus.subscribe("a.>.b", None).await.is_err());
    }
}
