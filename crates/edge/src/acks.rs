//! Where the acks of server emits go: for each (socket id, ack id) written
//! by an emit with ack, the reply subject of the control plane that waits.
//! Plain data behind one lock, taken alone.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub(crate) struct PendingAcks {
    by_socket: Mutex<HashMap<(String, u64), String>>,
}

impl PendingAcks {
    fn map(&self) -> MutexGuard<'_, HashMap<(String, u64), String>> {
        // Single inserts and removes: consistent across a panic.
        self.by_socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `reply` as where the ack `ack_id` of each socket goes; returns
    /// the sockets registered. Two control planes may pick the same id for one
    /// socket; the second emit then leaves that socket out rather than steal
    /// the first one's ack.
    pub fn register<S>(
        &self,
        sockets: Vec<S>,
        id_of: impl Fn(&S) -> &str,
        ack_id: u64,
        reply: &str,
    ) -> Vec<S> {
        let mut map = self.map();
        sockets
            .into_iter()
            .filter(|s| {
                let key = (id_of(s).to_owned(), ack_id);
                if map.contains_key(&key) {
                    return false;
                }
                map.insert(key, reply.to_owned());
                true
            })
            .collect()
    }

    /// Where the ack `ack_id` of a socket goes, if anyone still waits; once.
    pub fn take(&self, socket: &str, ack_id: u64) -> Option<String> {
        self.map().remove(&(socket.to_owned(), ack_id))
    }

    /// Forgets the acks of an emit once its timeout passed.
    pub fn forget(&self, sockets: &[String], ack_id: u64) {
        let mut map = self.map();
        for sid in sockets {
            map.remove(&(sid.clone(), ack_id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_goes_to_the_first_emit_that_asked_for_it_once() {
        let acks = PendingAcks::default();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let first = acks.register(names(&["a", "b"]), String::as_str, 7, "cp1");
        assert_eq!(first, names(&["a", "b"]));
        let second = acks.register(names(&["b", "c"]), String::as_str, 7, "cp2");
        assert_eq!(second, names(&["c"]));
        assert_eq!(acks.take("b", 7).as_deref(), Some("cp1"));
        assert_eq!(acks.take("b", 7), None, "taken once");
        acks.forget(&["a".into(), "c".into()], 7);
        assert_eq!(acks.take("a", 7), None);
        assert_eq!(acks.take("c", 7), None);
    }
}
