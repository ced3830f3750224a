//! The in-process implementations of the backend seam, for `roomcast
//! standalone` and tests: what a cluster keeps on NATS, kept in this
//! process's memory and gone with it.
//!
//! - [`MemoryBus`]: subjects with NATS semantics (wildcards, queue groups,
//!   slow subscribers lose messages instead of stalling publishers).
//! - [`MemoryKv`]: a key-value map with revisions, compare-and-swap and watches.
//! - [`MemoryHistory`] and [`MemorySessions`]: a bounded log of recoverable
//!   emits, numbered and published on the bus, and a map of saved sessions;
//!   both forget what is too old.

mod bus;
mod kv;
mod recovery;

pub use bus::{MemoryBus, DEFAULT_SUBSCRIBER_CAPACITY};
pub use kv::MemoryKv;
pub use recovery::{MemoryHistory, MemorySessions};
