//! The presence store: a small key-value contract with compare-and-swap and
//! watches, implemented in memory (standalone) and on NATS JetStream KV.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use tokio::sync::broadcast;

/// One change of a key, as a watch reports it; `value` is `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub value: Option<Bytes>,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key changed since it was read (or exists when it should not).
    #[error("the key changed concurrently")]
    Conflict,
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
}

/// Changes under a prefix: the current values first, then every change.
pub type Watch = BoxStream<'static, Change>;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value and revision of a key.
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, StoreError>;
    /// Writes unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Bytes) -> Result<u64, StoreError>;
    /// Writes only if the key is at revision `expected` (`None`: absent or
    /// deleted); [`StoreError::Conflict`] otherwise.
    async fn swap(&self, key: &str, value: Bytes, expected: Option<u64>)
        -> Result<u64, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Deletes only if the key is still at `revision`; [`StoreError::Conflict`]
    /// otherwise (someone else changed or deleted it first).
    async fn delete_if(&self, key: &str, revision: u64) -> Result<(), StoreError>;
    /// The live keys that start with `prefix`.
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Watches the keys under `prefix` (which ends with `.`).
    async fn watch(&self, prefix: &str) -> Result<Watch, StoreError>;
}

/// The in-memory store of `roomcast standalone`.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<Change>,
}

#[derive(Default)]
struct Inner {
    map: BTreeMap<String, (Bytes, u64)>,
    revision: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: broadcast::channel(65_536).0,
        }
    }
}

impl MemoryStore {
    fn write(
        &self,
        key: &str,
        value: Option<Bytes>,
        expected: Option<Option<u64>>,
    ) -> Result<u64, StoreError> {
        // Each write is one map operation: the map is consistent across a panic.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(expected) = expected {
            if inner.map.get(key).map(|e| e.1) != expected {
                return Err(StoreError::Conflict);
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
        // Sent under the lock, so watchers see changes in revision order.
        let _ = self.changes.send(Change {
            key: key.to_owned(),
            value,
            revision,
        });
        Ok(revision)
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(inner.map.get(key).cloned())
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.write(key, Some(value), None)
    }

    async fn swap(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.write(key, Some(value), Some(expected))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.write(key, None, None).map(drop)
    }

    async fn delete_if(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        self.write(key, None, Some(Some(revision))).map(drop)
    }

    async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(inner
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn watch(&self, prefix: &str) -> Result<Watch, StoreError> {
        let (current, mut rx) = {
            let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let current: Vec<Change> = inner
                .map
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, (v, r))| Change {
                    key: k.clone(),
                    value: Some(v.clone()),
                    revision: *r,
                })
                .collect();
            (current, self.changes.subscribe())
        };
        let prefix = prefix.to_owned();
        let live = async_stream_like(move |tx: tokio::sync::mpsc::Sender<Change>| async move {
            loop {
                match rx.recv().await {
                    Ok(c) if c.key.starts_with(&prefix) => {
                        if tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "presence watch lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Box::pin(futures_util::stream::iter(current).chain(live)))
    }
}

use futures_util::StreamExt;

/// A stream fed by a task; the task stops when the stream is dropped.
pub(crate) fn async_stream_like<F, Fut>(f: F) -> BoxStream<'static, Change>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Change>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Change>,
) -> impl futures_util::Stream<Item = Change> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
