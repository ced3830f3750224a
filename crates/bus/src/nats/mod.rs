//! The implementations of the backend seam on NATS, for a cluster: every
//! NATS specific lives in this module tree.
//!
//! - [`NatsBus`]: the bus on one `async-nats` client (see [`bus`]).
//! - [`NatsKv`]: a JetStream KV bucket, history 1, so every process sees the
//!   same revisions and compare-and-swap arbitrates between them.
//! - [`NatsHistory`]: a JetStream stream over the history subjects that
//!   republishes each stored emit on its room subject; the server numbers it
//!   in the `Nats-Sequence` header, which the bus hands out as
//!   [`SEQUENCE_HEADER`](crate::recovery::SEQUENCE_HEADER).
//! - [`NatsSessions`]: a JetStream KV bucket of saved sessions whose entries
//!   expire with the recovery window.

pub mod bus;
mod kv;
mod recovery;

pub use bus::{ConnectionState, NatsBus, NatsError, NatsOptions};
pub use kv::NatsKv;
pub use recovery::{NatsHistory, NatsSessions};
