//! A key-value map with revisions, compare-and-swap and watches.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::broadcast;

use crate::backend::watch_fed_by;
use crate::{Change, KvError, KvStore, Watch};

/// A key-value store in memory; clones share it.
#[derive(Clone)]
pub struct MemoryKv {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<Change>,
}

#[derive(Default)]
struct Inner {
    map: BTreeMap<String, (Bytes, u64)>,
    revision: u64,
    /// The latest write under each first token of a key, for the delete a
    /// new watch starts with when the latest write was one (deleted keys are
    /// not kept otherwise).
    last: HashMap<String, LastWrite>,
}

struct LastWrite {
    revision: u64,
    key: String,
    deleted: bool,
}

/// The first token of a key or prefix.
fn first_token(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: broadcast::channel(65_536).0,
        }
    }
}

impl MemoryKv {
    fn write(
        &self,
        key: &str,
        value: Option<Bytes>,
        expected: Option<Option<u64>>,
    ) -> Result<u64, KvError> {
        // Each write is one map operation: the map is consistent across a panic.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(expected) = expected {
            if inner.map.get(key).map(|e| e.1) != expected {
                return Err(KvError::Conflict);
            }
        }
        inner.revision += 1;
        let revision = inner.revision;
        match &value {
            Some(v) => {
                inner.map.insert(key.to_owned(), (v.clone(), revision));
            }
            None => {
                inner.map.remove(key);
            }
        }
        let last = LastWrite {
            revision,
            key: key.to_owned(),
            deleted: value.is_none(),
        };
        inner.last.insert(first_token(key).to_owned(), last);
        // Sent under the lock, so watchers see changes in revision order; no
        // change is skipped, so each is caught up.
        let _ = self.changes.send(Change {
            key: key.to_owned(),
            value,
            revision,
            caught_up: true,
        });
        Ok(revision)
    }
}

#[async_trait::async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, KvError> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(inner.map.get(key).cloned())
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.write(key, Some(value), None)
    }

    async fn swap(&self, key: &str, value: Bytes, expected: Option<u64>) -> Result<u64, KvError> {
        self.write(key, Some(value), Some(expected))
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.write(key, None, None).map(drop)
    }

    async fn delete_if(&self, key: &str, revision: u64) -> Result<(), KvError> {
        self.write(key, None, Some(Some(revision))).map(drop)
    }

    async fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(inner
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn watch(&self, prefix: &str) -> Result<Watch, KvError> {
        let (current, mut rx) = {
            let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let mut current: Vec<Change> = inner
                .map
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, (v, r))| Change {
                    key: k.clone(),
                    value: Some(v.clone()),
                    revision: *r,
                    caught_up: false,
                })
                .collect();
            current.sort_by_key(|c| c.revision);
            // The latest write under the prefix may have been a delete: the
            // watch starts with it too, so that its revision is seen (as
            // JetStream keeps and replays delete markers).
            if let Some(last) = inner.last.get(first_token(prefix)) {
                if last.deleted && last.key.starts_with(prefix) {
                    current.push(Change {
                        key: last.key.clone(),
                        value: None,
                        revision: last.revision,
                        caught_up: false,
                    });
                }
            }
            // Taken under the lock with the subscription: the view is whole
            // at the last current value.
            if let Some(last) = current.last_mut() {
                last.caught_up = true;
            }
            (current, self.changes.subscribe())
        };
        let prefix = prefix.to_owned();
        let live = watch_fed_by(move |tx: tokio::sync::mpsc::Sender<Change>| async move {
            loop {
                match rx.recv().await {
                    Ok(c) if c.key.starts_with(&prefix) => {
                        if tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Changes were lost: the watch ends, and its watcher
                    // opens a new one (which starts with the current values)
                    // rather than keep a view that misses them.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "kv watch lagged: ending it");
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Box::pin(futures_util::stream::iter(current).chain(live)))
    }
}
