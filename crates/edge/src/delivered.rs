//! Which local sockets got each emit that came as several copies (ADR 17).
//!
//! A control plane publishes an emit for several rooms, users or route tags
//! as one copy per subject, each naming only what its subject is for, and
//! every copy carries the emit's message id. An edge that holds sockets in
//! several of those rooms (or a socket named in a room and as a user) gets
//! several copies, on several subjects, in any order; it writes the emit to
//! each socket once by remembering, per message id, the sockets it wrote it
//! to.
//!
//! Bounded: a message id is kept for [`KEEP_FOR`] after its first copy came,
//! and at most [`MAX_MESSAGES`] ids and [`MAX_DELIVERIES`] sockets are kept in
//! all. Copies of one emit are published one after another, so they arrive
//! within milliseconds; an id dropped for the bounds before its last copy
//! came could let that copy reach a socket twice, and each such drop is
//! counted (`roomcast_edge_multiroom_evictions_total`).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::sio::Socket;

/// How long the sockets an emit reached are remembered.
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(30);
/// Most emits remembered at once.
pub(crate) const MAX_MESSAGES: usize = 16_384;
/// Most (emit, socket) pairs remembered at once.
pub(crate) const MAX_DELIVERIES: usize = 2_000_000;

/// What an edge remembers of its multi-copy emits.
pub(crate) struct Delivered {
    table: Mutex<Table<u64>>,
    /// Hashes socket ids: pairs keep 8 bytes per socket, not the id.
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Delivered {
    fn default() -> Self {
        Delivered {
            table: Mutex::new(Table::new(KEEP_FOR, MAX_MESSAGES, MAX_DELIVERIES)),
            hasher: Default::default(),
        }
    }
}

impl Delivered {
    /// Keeps the sockets of `targets` that message `id` has not reached yet,
    /// and remembers that it reached them.
    pub fn first_time(&self, id: u128, targets: &mut Vec<Arc<Socket>>) {
        let keys: Vec<u64> = targets.iter().map(|s| self.key(&s.id)).collect();
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = table.record(id, Instant::now(), &keys);
        let evicted = table.take_evicted();
        drop(table);
        let mut fresh = fresh.into_iter();
        targets.retain(|_| fresh.next().unwrap_or(false));
        if evicted > 0 {
            metrics::counter!(crate::metrics::MULTIROOM_EVICTIONS).increment(evicted);
        }
    }

    fn key(&self, sid: &str) -> u64 {
        self.hasher.hash_one(sid)
    }
}

/// Plain data: the sockets (keys `K`) each message id reached, oldest first.
struct Table<K> {
    keep_for: Duration,
    max_messages: usize,
    max_deliveries: usize,
    reached: HashMap<u128, HashSet<K>>,
    /// Message ids by when their first copy came.
    order: VecDeque<(u128, Instant)>,
    deliveries: usize,
    /// Ids dropped for the bounds, not yet counted.
    evicted: u64,
}

impl<K: Eq + Hash + Copy> Table<K> {
    fn new(keep_for: Duration, max_messages: usize, max_deliveries: usize) -> Self {
        Table {
            keep_for,
            max_messages,
            max_deliveries,
            reached: HashMap::new(),
            order: VecDeque::new(),
            deliveries: 0,
            evicted: 0,
        }
    }

    /// Records that message `id` reaches `keys` now; returns, for each key,
    /// whether it is the first time.
    fn record(&mut self, id: u128, now: Instant, keys: &[K]) -> Vec<bool> {
        self.expire(now);
        let seen = match self.reached.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.order.push_back((id, now));
                e.insert(HashSet::new())
            }
        };
        let fresh: Vec<bool> = keys.iter().map(|k| seen.insert(*k)).collect();
        self.deliveries += fresh.iter().filter(|f| **f).count();
        // Over a bound: the oldest go first; the id just recorded is kept
        // (its later copies are the ones that may still come).
        while (self.reached.len() > self.max_messages || self.deliveries > self.max_deliveries)
            && self.order.front().is_some_and(|(oldest, _)| *oldest != id)
        {
            self.drop_oldest();
            self.evicted += 1;
        }
        fresh
    }

    /// Forgets the ids whose first copy came longer ago than `keep_for`.
    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) >= self.keep_for)
        {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((id, _)) = self.order.pop_front() {
            if let Some(set) = self.reached.remove(&id) {
                self.deliveries -= set.len();
            }
        }
    }

    fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_reached_once_per_message() {
        let mut t = Table::new(Duration::from_secs(30), 10, 100);
        let now = Instant::now();
        assert_eq!(t.record(1, now, &[1, 2]), vec![true, true]);
        assert_eq!(t.record(1, now, &[2, 3, 3]), vec![false, true, false]);
        assert_eq!(t.record(2, now, &[2]), vec![true]);
        assert_eq!(t.deliveries, 4);
        assert_eq!(t.take_evicted(), 0);
    }

    #[test]
    fn ids_expire_after_the_keep_time_without_counting_as_evictions() {
        let mut t = Table::new(Duration::from_secs(30), 10, 100);
        let now = Instant::now();
        t.record(1, now, &[1]);
        t.record(2, now + Duration::from_secs(10), &[1]);
        assert_eq!(
            t.record(1, now + Duration::from_secs(29), &[1]),
            vec![false]
        );
        // Id 1 is gone (a copy this late is a new message); id 2 stays.
        assert_eq!(t.record(1, now + Duration::from_secs(31), &[1]), vec![true]);
        assert_eq!(
            t.record(2, now + Duration::from_secs(31), &[1]),
            vec![false]
        );
        assert_eq!(t.take_evicted(), 0);
        assert_eq!(t.reached.len(), 2);
    }

    #[test]
    fn bounds_drop_the_oldest_and_count_them() {
        let mut t = Table::new(Duration::from_secs(30), 2, 100);
        let now = Instant::now();
        t.record(1, now, &[1]);
        t.record(2, now, &[1]);
        t.record(3, now, &[1]);
        assert_eq!(t.take_evicted(), 1);
        assert!(!t.reached.contains_key(&1));
        assert_eq!(t.record(2, now, &[1]), vec![false]);

        let mut t = Table::new(Duration::from_secs(30), 10, 3);
        t.record(1, now, &[1, 2]);
        t.record(2, now, &[1, 2]);
        assert_eq!(t.take_evicted(), 1);
        assert_eq!(t.deliveries, 2);
        // One message over the bound by itself is kept whole.
        t.record(3, now, &[1, 2, 3, 4, 5]);
        assert_eq!(t.reached.len(), 1);
        assert_eq!(t.record(3, now, &[5, 6]), vec![false, true]);
    }
}
