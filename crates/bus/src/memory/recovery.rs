//! Recovery state in memory: a bounded log of recoverable emits and a map of
//! saved sessions, both forgetting what is too old.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backend::{
    Bus, Headers, History, RecoveryError, Replay, Replayed, SavedSession, SessionStore,
};
use crate::recovery::{valid_pid, RecoveryConfig, SEQUENCE_HEADER};
use crate::subject::Subjects;

struct Entry {
    seq: u64,
    at: Instant,
    ns: String,
    room: String,
    headers: Headers,
    payload: Bytes,
}

#[derive(Default)]
struct Log {
    /// The sequence of the last append (0: none yet).
    last: u64,
    entries: VecDeque<Entry>,
    bytes: u64,
}

impl Log {
    /// The lowest sequence still kept; `last + 1` when the log is empty.
    fn first(&self) -> u64 {
        self.entries.front().map_or(self.last + 1, |e| e.seq)
    }

    fn prune(&mut self, max_age: Duration, max_bytes: u64) {
        while let Some(front) = self.entries.front() {
            if front.at.elapsed() <= max_age && self.bytes <= max_bytes {
                break;
            }
            self.bytes -= front.payload.len() as u64;
            self.entries.pop_front();
        }
    }
}

/// The history on the in-memory bus.
pub struct MemoryHistory {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    max_age: Duration,
    max_bytes: u64,
    /// Held across the publish so that sequence order is publish order.
    log: tokio::sync::Mutex<Log>,
}

impl MemoryHistory {
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, config: &RecoveryConfig) -> Self {
        Self {
            bus,
            subjects,
            max_age: config.history_max_age,
            max_bytes: config.history_max_bytes,
            log: tokio::sync::Mutex::new(Log::default()),
        }
    }
}

#[async_trait::async_trait]
impl History for MemoryHistory {
    async fn append(
        &self,
        ns: &str,
        room: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<u64, RecoveryError> {
        let mut log = self.log.lock().await;
        let seq = log.last + 1;
        let mut published = headers.clone();
        published.append(SEQUENCE_HEADER, seq.to_string());
        self.bus
            .publish(
                &self.subjects.room(ns, room),
                published,
                payload.clone(),
                None,
            )
            .await
            .map_err(|e| RecoveryError::Unavailable(e.to_string()))?;
        log.last = seq;
        log.bytes += payload.len() as u64;
        log.entries.push_back(Entry {
            seq,
            at: Instant::now(),
            ns: ns.to_owned(),
            room: room.to_owned(),
            headers,
            payload,
        });
        log.prune(self.max_age, self.max_bytes);
        Ok(seq)
    }

    async fn since(&self, ns: &str, rooms: &[String], after: u64) -> Result<Replay, RecoveryError> {
        let mut log = self.log.lock().await;
        log.prune(self.max_age, self.max_bytes);
        if after > log.last || after + 1 < log.first() {
            return Err(RecoveryError::Lost(after));
        }
        let messages = log
            .entries
            .iter()
            .filter(|e| e.seq > after && e.ns == ns && rooms.contains(&e.room))
            .map(|e| Replayed {
                seq: e.seq,
                ns: e.ns.clone(),
                room: e.room.clone(),
                headers: e.headers.clone(),
                payload: e.payload.clone(),
            })
            .collect();
        Ok(Replay {
            messages,
            upto: log.last,
        })
    }
}

/// Saved sessions in memory.
pub struct MemorySessions {
    window: Duration,
    saved: Mutex<Saved>,
}

#[derive(Default)]
struct Saved {
    /// The last revision given (0: none yet).
    revision: u64,
    /// By pid: when written, at which revision, what.
    by_pid: HashMap<String, (Instant, u64, SavedSession)>,
}

impl Saved {
    /// The live record of `pid` and its revision, forgetting it when expired.
    fn current(&mut self, pid: &str, window: Duration) -> Option<u64> {
        match self.by_pid.get(pid) {
            Some((at, _, _)) if at.elapsed() >= window => {
                self.by_pid.remove(pid);
                None
            }
            Some((_, revision, _)) => Some(*revision),
            None => None,
        }
    }

    fn write(&mut self, session: &SavedSession, window: Duration) -> u64 {
        // Forget expired sessions now and then: the map stays bounded by what
        // one window of writes keeps.
        if self.by_pid.len().is_power_of_two() {
            self.by_pid.retain(|_, (at, _, _)| at.elapsed() < window);
        }
        self.revision += 1;
        let revision = self.revision;
        self.by_pid.insert(
            session.pid.clone(),
            (Instant::now(), revision, session.clone()),
        );
        revision
    }
}

impl MemorySessions {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            saved: Mutex::new(Saved::default()),
        }
    }

    fn saved(&self) -> std::sync::MutexGuard<'_, Saved> {
        // Held for map updates only; consistent across a panic.
        self.saved.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl SessionStore for MemorySessions {
    async fn save(&self, session: &SavedSession) -> Result<u64, RecoveryError> {
        if !valid_pid(&session.pid) {
            return Err(RecoveryError::Unavailable("invalid pid".into()));
        }
        Ok(self.saved().write(session, self.window))
    }

    async fn save_if(
        &self,
        session: &SavedSession,
        revision: Option<u64>,
    ) -> Result<Option<u64>, RecoveryError> {
        if !valid_pid(&session.pid) {
            return Err(RecoveryError::Unavailable("invalid pid".into()));
        }
        let mut saved = self.saved();
        if saved.current(&session.pid, self.window) != revision {
            return Ok(None);
        }
        Ok(Some(saved.write(session, self.window)))
    }

    async fn get(&self, pid: &str) -> Result<Option<(SavedSession, u64)>, RecoveryError> {
        let mut saved = self.saved();
        saved.current(pid, self.window);
        Ok(saved.by_pid.get(pid).map(|(_, r, s)| (s.clone(), *r)))
    }

    async fn remove_if(&self, pid: &str, revision: u64) -> Result<bool, RecoveryError> {
        let mut saved = self.saved();
        if saved.current(pid, self.window) != Some(revision) {
            return Ok(false);
        }
        saved.by_pid.remove(pid);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBus;

    fn config(max_bytes: u64) -> RecoveryConfig {
        RecoveryConfig {
            rooms: vec!["*".into()],
            history_max_bytes: max_bytes,
            ..RecoveryConfig::default()
        }
    }

    #[tokio::test]
    async fn history_numbers_publishes_and_replays_per_room() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
        let subjects = Subjects::new("c");
        let mut live = bus
            .subscribe(&subjects.room("/", "a"), None)
            .await
            .expect("sub");
        let h = MemoryHistory::new(bus.clone(), subjects, &config(1 << 20));
        for (i, room) in ["a", "b", "a"].into_iter().enumerate() {
            let seq = h
                .append("/", room, Headers::new(), Bytes::from(format!("m{i}")))
                .await
                .expect("append");
            assert_eq!(seq, i as u64 + 1);
        }
        let first = live.next().await.expect("live");
        assert_eq!(first.headers.get(super::SEQUENCE_HEADER), Some("1"));
        let replay = h.since("/", &["a".into()], 0).await.expect("since");
        let seqs: Vec<u64> = replay.messages.iter().map(|m| m.seq).collect();
        assert_eq!((seqs, replay.upto), (vec![1, 3], 3));
        let replay = h.since("/", &["a".into()], 1).await.expect("since");
        assert_eq!(replay.messages.len(), 1);
        assert!(h
            .since("/x", &["a".into()], 0)
            .await
            .expect("since")
            .messages
            .is_empty());
        assert!(matches!(
            h.since("/", &[], 4).await,
            Err(RecoveryError::Lost(4))
        ));
    }

    #[tokio::test]
    async fn history_past_its_bound_is_lost() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
        let h = MemoryHistory::new(bus, Subjects::new("c"), &config(10));
        for _ in 0..3 {
            h.append("/", "a", Headers::new(), Bytes::from_static(b"123456"))
                .await
                .expect("append");
        }
        assert!(matches!(
            h.since("/", &["a".into()], 0).await,
            Err(RecoveryError::Lost(0))
        ));
        assert_eq!(
            h.since("/", &["a".into()], 2)
                .await
                .expect("kept")
                .messages
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn a_session_recovers_once_and_not_after_the_window() {
        let s = MemorySessions::new(Duration::from_secs(60));
        let saved = SavedSession {
            sid: "s".into(),
            pid: "p".into(),
            ns: "/".into(),
            user: String::new(),
            rooms: vec!["r".into()],
            data_json: String::new(),
            saved_at_ms: 0,
            owner: None,
        };
        s.save(&saved).await.expect("save");
        assert_eq!(s.take("p").await.expect("take"), Some(saved.clone()));
        assert_eq!(s.take("p").await.expect("take"), None);
        let expired = MemorySessions::new(Duration::ZERO);
        expired.save(&saved).await.expect("save");
        assert_eq!(expired.take("p").await.expect("take"), None);
    }
}
