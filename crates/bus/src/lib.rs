//! The message bus that edges and control planes meet on, and the rest of
//! the backend under them: key-value stores, and the history and sessions of
//! connection state recovery.
//!
//! Edge and control never call each other: the control plane publishes commands
//! (emit, join, leave, ack replies) on subjects, edges subscribe to the subjects
//! of the rooms their sockets are in, and client events flow back the same way.
//! [`Bus`] is that contract: publish, subscribe (optionally in a queue group),
//! and request/reply.
//!
//! Layout:
//! - [`backend`]: the seam. The four traits ([`Bus`], [`KvStore`], [`History`],
//!   [`SessionStore`]) with their types, and [`Backend`], which opens all four
//!   of one implementation.
//! - [`memory`]: the in-process implementations, for `roomcast standalone`:
//!   a bus with NATS subject semantics (`*` and `>` wildcards, queue groups,
//!   slow subscribers dropped, not waited on), a key-value map with
//!   revisions, a bounded history log and a session map.
//! - [`nats`]: the implementations on NATS, for a cluster: the `async-nats`
//!   bus (subscriptions read the client's own bounded per-subscription
//!   channel, reconnects never give up, connection state and reconnect
//!   counters serve readiness), JetStream KV buckets, and the history stream.
//!   Every NATS specific (header names, stream and bucket configurations)
//!   stays in this module tree. Its tests run against real `nats-server`
//!   processes.
//! - [`subject`]: the subject scheme and the injective escaping of room and
//!   namespace names into subject tokens.
//! - [`envelope`]: the commands carried on those subjects, as headers plus an
//!   untouched payload (the Socket.IO packet, encoded once by the producer).
//! - [`recovery`]: how connection state recovery is configured, and what it
//!   runs on.

#![forbid(unsafe_code)]

pub mod backend;
pub mod envelope;
pub mod memory;
pub mod names;
pub mod nats;
pub mod recovery;
pub mod subject;
pub mod trace;

pub use backend::{
    Asked, Backend, Bus, BusError, Change, Headers, History, KvBucket, KvError, KvStore, Message,
    SessionStore, Subscription, Watch,
};
pub use memory::MemoryBus;
pub use nats::{NatsBus, NatsOptions};
