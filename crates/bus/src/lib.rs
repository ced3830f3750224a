//! The message bus that edges and control planes meet on.
//!
//! Edge and control never call each other: the control plane publishes commands
//! (emit, join, leave, ack replies) on subjects, edges subscribe to the subjects
//! of the rooms their sockets are in, and client events flow back the same way.
//! [`Bus`] is that contract: publish, subscribe (optionally in a queue group),
//! and request/reply. `roomcast standalone` uses [`MemoryBus`]; cluster mode
//! uses [`NatsBus`] with the same subjects and envelopes.
//!
//! Layout:
//! - [`subject`]: the subject scheme and the injective escaping of room and
//!   namespace names into subject tokens.
//! - [`envelope`]: the commands carried on those subjects, as headers plus an
//!   untouched payload (the Socket.IO packet, encoded once by the producer).
//! - [`memory`]: the in-process implementation with NATS subject semantics
//!   (`*` and `>` wildcards, queue groups, slow subscribers dropped, not waited on).
//! - [`nats`]: the `async-nats` implementation: subscriptions read the
//!   client's own bounded per-subscription channel, reconnects never give up
//!   (the client resubscribes), and connection state and reconnect counters serve
//!   readiness. Its tests run against real `nats-server` processes.

#![forbid(unsafe_code)]

pub mod envelope;
pub mod memory;
pub mod names;
pub mod nats;
pub mod recovery;
pub mod subject;
pub mod trace;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};

pub use memory::MemoryBus;
pub use nats::{NatsBus, NatsOptions};

/// Message headers: an ordered multi-map of ASCII names to values without line
/// breaks (values are escaped by [`envelope`] where they could hold anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value; a name may carry several.
    pub fn append(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_owned(), value.into()));
    }

    /// The first value of a name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a name, in the order they were added.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A message as a subscriber receives it.
#[derive(Debug, Clone)]
pub struct Message {
    pub subject: String,
    pub headers: Headers,
    pub payload: Bytes,
    /// Where a request wants its reply.
    pub reply: Option<String>,
}

/// Bus failures. Callers map them to their own errors (gRPC UNAVAILABLE, etc.).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    #[error("bus is closed")]
    Closed,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("bus connection failed: {0}")]
    Connection(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A live subscription. Dropping it unsubscribes.
///
/// It is the implementation's own stream, read directly by the subscriber: no
/// task or channel of ours sits between the bus and the reader, so a
/// subscription costs one allocation here and what the implementation keeps
/// (for NATS, the client's channel), and a message one wake-up.
pub struct Subscription {
    stream: Pin<Box<dyn Stream<Item = Message> + Send + Sync>>,
}

impl Subscription {
    /// Wraps a stream whose drop ends the subscription.
    pub fn new(stream: impl Stream<Item = Message> + Send + Sync + 'static) -> Self {
        Self {
            stream: Box::pin(stream),
        }
    }

    /// The next message; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Message> {
        self.stream.next().await
    }

    /// A message if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Message> {
        self.stream.next().now_or_never().flatten()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// The bus contract shared by the in-memory and the NATS implementations.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes a message; at most once, in order per subject for one publisher.
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        reply: Option<&str>,
    ) -> Result<(), BusError>;

    /// Subscribes to a subject (NATS wildcards allowed). Subscribers that give the
    /// same queue group share the messages: each goes to one of them.
    async fn subscribe(&self, subject: &str, queue: Option<&str>)
        -> Result<Subscription, BusError>;

    /// A subject nobody else uses, for replies.
    fn new_inbox(&self) -> String;

    /// Returns once every subscription made before the call is live where
    /// publishers reach it. In memory a subscription is live when `subscribe`
    /// returns. NATS takes a round trip: the subscriptions are then live at the
    /// server this client is connected to, so a message published through that
    /// server after this returns reaches them; other servers of a NATS cluster
    /// learn of them a moment later.
    async fn sync(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// Publishes a request with a fresh reply subject; its replies, however
    /// many, arrive on the returned subscription, taken before the request
    /// goes out.
    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<Subscription, BusError> {
        let inbox = self.new_inbox();
        let sub = self.subscribe(&inbox, None).await?;
        self.publish(subject, headers, payload, Some(&inbox))
            .await?;
        Ok(sub)
    }

    /// Publishes a request and gathers up to `expected` replies until `timeout`.
    /// Returns what arrived; fewer than `expected` replies is not an error.
    async fn request_many(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        expected: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, BusError> {
        let mut sub = self.request(subject, headers, payload).await?;
        let mut replies = Vec::with_capacity(expected);
        let deadline = tokio::time::Instant::now() + timeout;
        while replies.len() < expected {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(msg)) => replies.push(msg),
                Ok(None) => return Err(BusError::Closed),
                Err(_) => break,
            }
        }
        Ok(replies)
    }
}
