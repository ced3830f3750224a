//! What Socket.IO connection state recovery needs to work across a cluster: the
//! history of recoverable rooms, and the sessions saved for clients that may
//! come back to any edge.
//!
//! An emit to a recoverable room is *appended* to the history instead of being
//! published on the room's subject: the history gives it the next sequence
//! number and publishes it on the room's subject with that number in the
//! [`SEQUENCE_HEADER`]. Edges deliver it like any emit, with the number as the
//! event's offset. A client that comes back with `{pid, offset}` gets its saved
//! session (socket id, rooms) and what its rooms received after `offset`.
//!
//! On NATS the history is a JetStream stream over the history subjects that
//! republishes every message on the room subject (the server adds the
//! sequence header), and sessions live in a KV bucket whose entries expire
//! with the recovery window. In `standalone` both are in memory.

mod memory;
mod nats;

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Headers;

pub use memory::{MemoryHistory, MemorySessions};
pub use nats::{NatsHistory, NatsSessions};

/// The header carrying a recoverable emit's sequence number, as NATS
/// JetStream's republish names it.
pub const SEQUENCE_HEADER: &str = "Nats-Sequence";

/// The longest pid a client may send back; ours are 20 characters.
const MAX_PID_LEN: usize = 64;

/// How connection state recovery is configured.
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// Room name patterns (`*` matches any run of characters) whose emits are
    /// kept for recovery, in every namespace.
    pub rooms: Vec<String>,
    /// How long a disconnected client's session is kept.
    pub window: Duration,
    /// How long the history keeps an emit (at least the window).
    pub history_max_age: Duration,
    /// Bytes the history keeps at most (oldest emits go first).
    pub history_max_bytes: u64,
    /// JetStream replicas of the history stream and the sessions bucket.
    pub replicas: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            rooms: Vec::new(),
            window: Duration::from_secs(120),
            history_max_age: Duration::from_secs(120),
            history_max_bytes: 256 << 20,
            replicas: 1,
        }
    }
}

impl RecoveryConfig {
    /// Whether emits to `room` are kept for recovery.
    pub fn recoverable(&self, room: &str) -> bool {
        self.rooms.iter().any(|p| glob(p, room))
    }
}

/// `*` matches any run of characters (none included); everything else itself.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: the whole name must match
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What connection state recovery runs on: its settings, the history and the
/// saved sessions.
#[derive(Clone)]
pub struct Recovery {
    pub config: RecoveryConfig,
    pub history: std::sync::Arc<dyn History>,
    pub sessions: std::sync::Arc<dyn Sessions>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One emit of the history, as it was appended.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub seq: u64,
    pub ns: String,
    pub room: String,
    pub headers: Headers,
    pub payload: Bytes,
}

/// What the history holds after an offset, up to a point.
#[derive(Debug, Default)]
pub struct Replay {
    /// The emits to the asked rooms after the offset, in sequence order.
    pub messages: Vec<Replayed>,
    /// Every emit up to this sequence is accounted for: those of the asked
    /// rooms are in `messages`. Later ones are live traffic.
    pub upto: u64,
}

/// A Socket.IO socket whose connection closed in a way that allows recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// The Socket.IO socket id, kept across the recovery.
    pub sid: String,
    pub pid: String,
    pub ns: String,
    pub user: String,
    pub rooms: Vec<String>,
    #[serde(default)]
    pub data_json: String,
    pub saved_at_ms: i64,
}

/// Recovery state failures.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("the history after offset {0} is no longer complete")]
    Lost(u64),
    #[error("the recovery store is unavailable: {0}")]
    Unavailable(String),
}

/// The history of recoverable rooms.
#[async_trait::async_trait]
pub trait History: Send + Sync + 'static {
    /// Stores an emit to a room and publishes it on the room's subject with
    /// its sequence number. Returns the number.
    async fn append(
        &self,
        ns: &str,
        room: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<u64, RecoveryError>;

    /// The emits to `rooms` of `ns` after sequence `after`, up to now.
    /// [`RecoveryError::Lost`] when emits after `after` were dropped (too old,
    /// over the size bound) or `after` is not a sequence this history gave.
    async fn since(&self, ns: &str, rooms: &[String], after: u64) -> Result<Replay, RecoveryError>;
}

/// Sessions kept for the recovery window.
#[async_trait::async_trait]
pub trait Sessions: Send + Sync + 'static {
    async fn save(&self, session: &SavedSession) -> Result<(), RecoveryError>;

    /// Takes a session out: a pid recovers at most once. `None` when unknown or
    /// expired.
    async fn take(&self, pid: &str) -> Result<Option<SavedSession>, RecoveryError>;
}

/// Whether a client-sent pid can be one of ours (and a KV key).
fn valid_pid(pid: &str) -> bool {
    !pid.is_empty()
        && pid.len() <= MAX_PID_LEN
        && pid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_room_names() {
        let cfg = RecoveryConfig {
            rooms: vec!["chat-*".into(), "orders".into(), "a*b*c".into()],
            ..RecoveryConfig::default()
        };
        for yes in ["chat-", "chat-1", "orders", "abc", "a-b-c", "abbc"] {
            assert!(cfg.recoverable(yes), "{yes}");
        }
        for no in ["chat", "orders2", "xorders", "ab", "acb", "abcd"] {
            assert!(!cfg.recoverable(no), "{no}");
        }
        assert!(glob("*", "anything"));
        assert!(glob("*", ""));
        assert!(!RecoveryConfig::default().recoverable("x"));
    }

    #[test]
    fn only_well_formed_pids_are_looked_up() {
        assert!(valid_pid(&crate::names::new_id()));
        for bad in ["", "a.b", "a b", "*", ">", &"x".repeat(65)] {
            assert!(!valid_pid(bad), "{bad:?}");
        }
    }
}
