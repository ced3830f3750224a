//! The user directory: each user's route tags, as the keeper's watch of
//! `user.` keys reports them, kept in memory so that a control plane routes a
//! user-addressed call without reading the user's state from the store
//! (ADR 0019).
//!
//! The directory answers only once it has applied every `user.` write that
//! completed before the call: the caller writes a *fence*, an empty value of
//! [`FENCE_KEY`] (under `user.`, a key no user has), whose revision is higher
//! than that of every write completed before, and waits until the directory
//! has applied a caught-up change at that revision or later (the watch
//! delivers the fence itself). Fences of concurrent calls are shared: one is
//! in flight at a time, and a call waits for the first one that started after
//! it arrived (an earlier one may precede the write the caller relies on). A
//! burst of calls thus costs one fence per store round trip rather than one
//! store read per user. (Reading the latest revision under `user.` instead
//! would need no write, but JetStream answers it by scanning every key under
//! the prefix: measured, it cost more than the reads it replaced.)
//!
//! Locks: `view` and `gate` are never held together, nor across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use roomcast_bus::{Change, KvStore};
use tokio::sync::watch;

use crate::UserState;

/// The prefix of the keys the directory holds.
pub(crate) const USERS: &str = "user.";

/// The key fences are written to: under [`USERS`], so that the watch of
/// users delivers them, and not one [`crate::user_key`] makes (its escapes
/// are `=` and two upper-case hex digits).
pub const FENCE_KEY: &str = "user.=fence";

/// How long a fence write may take; past it the fence failed.
const FENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the directory can tell about a user-addressed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The route tags of each user's sockets (empty for a user without one),
    /// in the order asked.
    Found(Vec<Vec<String>>),
    /// The directory could not answer (not ready, behind the fence for too
    /// long, or the fence could not be read): read the store instead.
    Unknown(Unknown),
}

/// Why the directory could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Its watch is (re)starting, or no keeper feeds it.
    NotReady,
    /// The fence could not be written.
    NoFence,
    /// It had not applied the fence in time.
    Behind,
}

/// The directory of one process, fed by its keeper.
pub(crate) struct Directory {
    view: Mutex<View>,
    /// `View::settled`, published after each change of it for the lookups
    /// that wait for it (the view under its lock is what they answer from).
    settled: watch::Sender<Option<u64>>,
    gate: Mutex<Gate>,
    /// The latest finished fence.
    fenced: watch::Sender<Fenced>,
    /// Whether a keeper feeds the directory: only one may (two watches
    /// applied in turn would take a key back to an older value).
    fed: AtomicBool,
}

#[derive(Default)]
struct View {
    /// Key (`user.<token>`) → route tags of the user's sockets; users without
    /// a socket are not kept.
    users: HashMap<String, Box<[Box<str>]>>,
    /// The revision of the last caught-up change applied; `None` while the
    /// directory is not ready (cleared, its watch not yet caught up).
    settled: Option<u64>,
}

/// The fence reads started and wanted.
#[derive(Default)]
struct Gate {
    /// The generation of the last read started (reads are numbered from 1).
    started: u64,
    /// The highest generation a caller waits for.
    wanted: u64,
    /// Whether a reader task runs.
    running: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Fenced {
    generation: u64,
    /// The revision read; `None` when the read failed.
    revision: Option<u64>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            view: Mutex::default(),
            settled: watch::Sender::new(None),
            gate: Mutex::default(),
            fenced: watch::Sender::new(Fenced::default()),
            fed: AtomicBool::new(false),
        }
    }
}

impl Directory {
    /// Makes the caller the directory's one feeder; false when another
    /// keeper of this process already is.
    pub(crate) fn claim(&self) -> bool {
        !self.fed.swap(true, Ordering::AcqRel)
    }

    /// The feeder stopped: the directory is cleared and may be claimed again.
    pub(crate) fn release(&self) {
        self.clear();
        self.fed.store(false, Ordering::Release);
    }

    /// Applies a change of a `user.` key (its value parsed, `None` for a
    /// delete or an unreadable state: no socket then).
    pub(crate) fn apply(&self, change: &Change, state: Option<&UserState>) {
        let tags = state.map(UserState::route_tags).unwrap_or_default();
        {
            let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
            if change.key == FENCE_KEY {
                // Only its revision counts.
            } else if tags.is_empty() {
                view.users.remove(&change.key);
            } else {
                let tags = tags.into_iter().map(String::into_boxed_str).collect();
                view.users.insert(change.key.clone(), tags);
            }
            if change.caught_up {
                view.settled = Some(change.revision);
            }
        }
        if change.caught_up {
            self.settled.send_replace(Some(change.revision));
        }
    }

    /// Forgets everything until a watch has caught up again.
    pub(crate) fn clear(&self) {
        {
            let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
            view.settled = None;
            view.users = HashMap::new();
        }
        self.settled.send_replace(None);
    }

    /// The route tags of `keys` (as [`crate::user_key`] makes them), once
    /// the directory has applied every write before `fence`; waits for that
    /// at most `bound`.
    async fn tags_at(&self, keys: &[String], fence: u64, bound: Duration) -> Lookup {
        if fence > 0 {
            let mut settled = self.settled.subscribe();
            if settled.borrow_and_update().is_none() {
                return Lookup::Unknown(Unknown::NotReady);
            }
            let reached =
                tokio::time::timeout(bound, settled.wait_for(|s| s.is_none_or(|at| at >= fence)))
                    .await;
            // Cleared while waiting, or not there in time.
            match reached {
                Ok(Ok(now)) if now.is_some() => {}
                Ok(_) => return Lookup::Unknown(Unknown::NotReady),
                Err(_) => return Lookup::Unknown(Unknown::Behind),
            }
        }
        let view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock, with the view it answers from: it
        // may have been cleared (and be filling from a new watch) since.
        if fence > 0 && view.settled.is_none_or(|at| at < fence) {
            return Lookup::Unknown(Unknown::NotReady);
        }
        Lookup::Found(
            keys.iter()
                .map(|k| {
                    view.users
                        .get(k)
                        .map(|tags| tags.iter().map(|t| t.to_string()).collect())
                        .unwrap_or_default()
                })
                .collect(),
        )
    }

    /// The route tags of `keys`, fenced by a write to `store` that started
    /// after this call, shared with the calls around it.
    pub(crate) async fn lookup(
        self: &Arc<Self>,
        store: &Arc<dyn KvStore>,
        keys: &[String],
        bound: Duration,
    ) -> Lookup {
        if self.settled.borrow().is_none() {
            // Saves the fence.
            return Lookup::Unknown(Unknown::NotReady);
        }
        match self.fence(store).await {
            Some(fence) => self.tags_at(keys, fence, bound).await,
            None => Lookup::Unknown(Unknown::NoFence),
        }
    }

    /// The revision of a fence written after this call began; `None` when
    /// it could not be written.
    async fn fence(self: &Arc<Self>, store: &Arc<dyn KvStore>) -> Option<u64> {
        let mut fenced = self.fenced.subscribe();
        let need = {
            let mut gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
            // The fence in flight (if any) may have started before this call:
            // the next one is the first sure to follow what preceded it.
            let need = gate.started + 1;
            gate.wanted = gate.wanted.max(need);
            if !gate.running {
                gate.running = true;
                gate.started = need;
                // Its own task: a caller that gives up (its RPC cancelled)
                // must not take the fence the others wait for with it. It
                // ends once no caller waits for another fence, each bounded
                // by FENCE_TIMEOUT.
                tokio::spawn(Arc::clone(self).write_fences(Arc::clone(store)));
            }
            need
        };
        let done = fenced.wait_for(|f| f.generation >= need).await.ok()?;
        done.revision
    }

    /// Writes fences until no caller wants another one.
    async fn write_fences(self: Arc<Self>, store: Arc<dyn KvStore>) {
        loop {
            let generation = self
                .gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .started;
            let write = store.put(FENCE_KEY, Bytes::new());
            let revision = match tokio::time::timeout(FENCE_TIMEOUT, write).await {
                Ok(Ok(revision)) => Some(revision),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "user directory: fence not written");
                    None
                }
                Err(_) => {
                    tracing::warn!("user directory: fence not written in time");
                    None
                }
            };
            self.fenced.send_replace(Fenced {
                generation,
                revision,
            });
            let mut gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
            if gate.wanted > generation {
                gate.started = generation + 1;
            } else {
                gate.running = false;
                return;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .users
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    use roomcast_bus::{KvError, Watch};
    use tokio::sync::Semaphore;

    use crate::{Status, UserSocket, DIRECTORY_WAIT};

    /// A store that takes fences only: fence n has revision `n`, written once
    /// the test lets it finish (a permit per fence).
    struct Fences {
        started: AtomicU64,
        finish: Semaphore,
        fail: bool,
    }

    impl Fences {
        fn new(fail: bool) -> Arc<Fences> {
            Arc::new(Fences {
                started: AtomicU64::new(0),
                finish: Semaphore::new(0),
                fail,
            })
        }
    }

    fn no(_: &str) -> KvError {
        KvError::Unavailable("fences only".into())
    }

    #[async_trait::async_trait]
    impl KvStore for Fences {
        async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, KvError> {
            Err(no(key))
        }
        async fn put(&self, key: &str, _: Bytes) -> Result<u64, KvError> {
            assert_eq!(key, FENCE_KEY);
            let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            self.finish.acquire().await.expect("open").forget();
            if self.fail {
                return Err(no(key));
            }
            Ok(n)
        }
        async fn swap(&self, key: &str, _: Bytes, _: Option<u64>) -> Result<u64, KvError> {
            Err(no(key))
        }
        async fn delete(&self, key: &str) -> Result<(), KvError> {
            Err(no(key))
        }
        async fn delete_if(&self, key: &str, _: u64) -> Result<(), KvError> {
            Err(no(key))
        }
        async fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
            Err(no(prefix))
        }
        async fn watch(&self, prefix: &str) -> Result<Watch, KvError> {
            Err(no(prefix))
        }
    }

    fn state(sockets: &[&str]) -> UserState {
        UserState {
            sockets: sockets
                .iter()
                .map(|id| UserSocket {
                    id: (*id).into(),
                    node: "e".into(),
                    connected_at_ms: 0,
                })
                .collect(),
            status: Status::Online,
            ..UserState::default()
        }
    }

    /// Socket ids whose route tags are `AAAAA` and `BBBBB`.
    const ON_A: &str = "AAAAAxxxxxxxxxxxxxxx";
    const ON_B: &str = "BBBBBxxxxxxxxxxxxxxx";

    fn put(dir: &Directory, user: &str, sockets: &[&str], revision: u64, caught_up: bool) {
        let st = state(sockets);
        let change = Change {
            key: crate::user_key(user),
            value: Some(Bytes::from(serde_json::to_vec(&st).expect("json"))),
            revision,
            caught_up,
        };
        dir.apply(&change, Some(&st));
    }

    fn found(tags: &[&[&str]]) -> Lookup {
        Lookup::Found(
            tags.iter()
                .map(|t| t.iter().map(|s| s.to_string()).collect())
                .collect(),
        )
    }

    async fn started(store: &Fences, n: u64) {
        roomcast_testkit::wait_for(Duration::from_secs(5), || {
            std::future::ready(store.started.load(Ordering::SeqCst) >= n)
        })
        .await
        .expect("fence read started");
    }

    #[tokio::test]
    async fn applies_puts_and_deletes_and_forgets_on_clear() {
        let dir = Directory::default();
        let keys = [crate::user_key("alice"), crate::user_key("bob")];
        assert_eq!(
            dir.tags_at(&keys, 1, Duration::ZERO).await,
            Lookup::Unknown(Unknown::NotReady),
            "no watch has caught up yet"
        );
        put(&dir, "alice", &[ON_A, ON_B, ON_A], 1, false);
        put(&dir, "bob", &[ON_B], 2, true);
        assert_eq!(
            dir.tags_at(&keys, 2, Duration::ZERO).await,
            found(&[&["AAAAA", "BBBBB"], &["BBBBB"]])
        );
        // A user left (no socket) and one deleted: both gone.
        put(&dir, "alice", &[], 3, false);
        dir.apply(
            &Change {
                key: crate::user_key("bob"),
                value: None,
                revision: 4,
                caught_up: true,
            },
            None,
        );
        assert_eq!(
            dir.tags_at(&keys, 4, Duration::ZERO).await,
            found(&[&[], &[]])
        );
        assert_eq!(dir.len(), 0, "users without sockets are not kept");

        put(&dir, "alice", &[ON_A], 5, true);
        dir.clear();
        assert_eq!(dir.len(), 0);
        assert_eq!(
            dir.tags_at(&keys, 5, Duration::ZERO).await,
            Lookup::Unknown(Unknown::NotReady)
        );
        // A new watch's current values: ready at the caught-up one only.
        put(&dir, "alice", &[ON_A], 5, false);
        assert_eq!(
            dir.tags_at(&keys, 5, Duration::ZERO).await,
            Lookup::Unknown(Unknown::NotReady)
        );
        put(&dir, "bob", &[ON_B], 6, true);
        assert_eq!(
            dir.tags_at(&keys, 6, Duration::ZERO).await,
            found(&[&["AAAAA"], &["BBBBB"]])
        );
    }

    #[tokio::test]
    async fn waits_for_the_fence_and_gives_up_after_the_bound() {
        let dir = Arc::new(Directory::default());
        let keys = [crate::user_key("alice")];
        put(&dir, "alice", &[ON_A], 1, true);
        let waiting = tokio::spawn({
            let (dir, keys) = (dir.clone(), keys.clone());
            async move { dir.tags_at(&keys, 3, Duration::from_secs(30)).await }
        });
        // A change that is not caught up does not do.
        put(&dir, "alice", &[ON_A, ON_B], 3, false);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "answered before the fence");
        put(&dir, "carol", &[ON_B], 4, true);
        assert_eq!(waiting.await.expect("task"), found(&[&["AAAAA", "BBBBB"]]));

        tokio::time::pause();
        assert_eq!(
            dir.tags_at(&keys, 5, DIRECTORY_WAIT).await,
            Lookup::Unknown(Unknown::Behind)
        );
        // A clear while waiting ends the wait.
        let waiting = tokio::spawn({
            let dir = dir.clone();
            async move { dir.tags_at(&keys, 5, Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        dir.clear();
        assert_eq!(
            waiting.await.expect("task"),
            Lookup::Unknown(Unknown::NotReady)
        );
    }

    #[tokio::test]
    async fn calls_share_fence_reads_that_started_after_them() {
        let dir = Arc::new(Directory::default());
        let fences = Fences::new(false);
        let store: Arc<dyn KvStore> = fences.clone();
        put(&dir, "alice", &[ON_A], 1, true);
        let lookup = |user: &str| {
            let (dir, store, keys) = (dir.clone(), store.clone(), vec![crate::user_key(user)]);
            tokio::spawn(async move { dir.lookup(&store, &keys, Duration::from_secs(30)).await })
        };
        // The first call starts fence 1...
        let first = lookup("alice");
        started(&fences, 1).await;
        // ... which the calls arriving during it cannot use: it may precede
        // a write they rely on. They all share fence 2.
        let later: Vec<_> = (0..50).map(|_| lookup("bob")).collect();
        tokio::task::yield_now().await;
        fences.finish.add_permits(1);
        assert_eq!(first.await.expect("task"), found(&[&["AAAAA"]]));
        started(&fences, 2).await;
        fences.finish.add_permits(1);
        // Fence 2 is at 2: the directory has applied 1 only.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            later.iter().all(|t| !t.is_finished()),
            "answered before the fence"
        );
        put(&dir, "bob", &[ON_B], 2, true);
        for call in later {
            assert_eq!(call.await.expect("task"), found(&[&["BBBBB"]]));
        }
        assert_eq!(
            fences.started.load(Ordering::SeqCst),
            2,
            "two reads for 51 calls"
        );
    }

    #[tokio::test]
    async fn a_fence_that_cannot_be_written_or_a_directory_not_ready_answers_unknown() {
        let dir = Arc::new(Directory::default());
        let fences = Fences::new(true);
        let store: Arc<dyn KvStore> = fences.clone();
        let keys = [crate::user_key("alice")];
        assert_eq!(
            dir.lookup(&store, &keys, DIRECTORY_WAIT).await,
            Lookup::Unknown(Unknown::NotReady)
        );
        assert_eq!(
            fences.started.load(Ordering::SeqCst),
            0,
            "no fence while not ready"
        );
        put(&dir, "alice", &[ON_A], 1, true);
        fences.finish.add_permits(1);
        assert_eq!(
            dir.lookup(&store, &keys, DIRECTORY_WAIT).await,
            Lookup::Unknown(Unknown::NoFence)
        );
    }
}
