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
//! The history and the sessions are two traits of the backend seam
//! ([`History`], [`SessionStore`]), implemented in memory for `standalone` and
//! on NATS JetStream for a cluster.

use std::sync::Arc;
use std::time::Duration;

use crate::Headers;

pub use crate::backend::{History, RecoveryError, Replay, Replayed, SavedSession, SessionStore};

/// The header carrying a recoverable emit's sequence number on a room
/// subject, as every [`crate::Bus`] hands it out (each implementation maps
/// its own way of numbering to it).
pub const SEQUENCE_HEADER: &str = "rc-seq";

/// The history sequence a message carries, 0 when none.
pub fn sequence(headers: &Headers) -> u64 {
    headers
        .get(SEQUENCE_HEADER)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

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
    /// Copies kept of the history and the sessions (JetStream replicas).
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
    pub history: Arc<dyn History>,
    pub sessions: Arc<dyn SessionStore>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether a client-sent pid can be one of ours (and a KV key).
pub(crate) fn valid_pid(pid: &str) -> bool {
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
