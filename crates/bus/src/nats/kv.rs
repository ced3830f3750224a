//! Key-value stores as JetStream KV buckets: history 1, so every replica of
//! every process sees the same revisions and compare-and-swap arbitrates
//! between them.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;

use super::NatsBus;
use crate::backend::watch_fed_by;
use crate::{Change, KvBucket, KvError, KvStore, Watch};

/// How long opening retries until the bucket answers reads.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The key read to see whether the bucket answers (it never exists).
const READY_PROBE: &str = "probe";

/// A JetStream KV bucket.
#[derive(Clone)]
pub struct NatsKv {
    kv: kv::Store,
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

impl NatsKv {
    /// Opens a bucket, creating it when missing (its description is the
    /// bucket's purpose), and waits until it answers reads. Retried for a
    /// while: a JetStream cluster that has just started may not place a
    /// replicated bucket yet ("no suitable peers for placement"), and a bucket
    /// just created (by this process or another one starting at the same
    /// time) answers reads only once its replicas are up ("no stream found for
    /// given subject").
    pub async fn open(bus: &NatsBus, bucket: &KvBucket) -> Result<NatsKv, KvError> {
        let js = async_nats::jetstream::new(bus.client().clone());
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut pause = Duration::from_millis(50);
        loop {
            match Self::try_open(&js, bucket).await {
                Ok(kv) => return Ok(NatsKv { kv }),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::info!(bucket = %bucket.name, error = %e, "bucket not ready yet, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    async fn try_open(
        js: &async_nats::jetstream::Context,
        bucket: &KvBucket,
    ) -> Result<kv::Store, KvError> {
        let kv = match js.get_key_value(&bucket.name).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.name.clone(),
                    description: bucket.purpose.clone(),
                    history: 1,
                    num_replicas: bucket.replicas,
                    max_age: bucket.max_age,
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?,
        };
        kv.get(READY_PROBE).await.map_err(unavailable)?;
        Ok(kv)
    }
}
#[async_trait::async_trait]
impl KvStore for NatsKv {
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, KvError> {
        match self.kv.entry(key).await.map_err(unavailable)? {
            Some(e) if e.operation == kv::Operation::Put => Ok(Some((e.value, e.revision))),
            _ => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.kv.put(key, value).await.map_err(unavailable)
    }

    async fn swap(&self, key: &str, value: Bytes, expected: Option<u64>) -> Result<u64, KvError> {
        match expected {
            None => self.kv.create(key, value).await.map_err(|e| {
                if e.kind() == kv::CreateErrorKind::AlreadyExists {
                    KvError::Conflict
                } else {
                    unavailable(e)
                }
            }),
            Some(rev) => self.kv.update(key, value, rev).await.map_err(|e| {
                if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                    KvError::Conflict
                } else {
                    unavailable(e)
                }
            }),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.kv.delete(key).await.map_err(unavailable)
    }

    async fn delete_if(&self, key: &str, revision: u64) -> Result<(), KvError> {
        let Err(e) = self.kv.delete_expect_revision(key, Some(revision)).await else {
            return Ok(());
        };
        // The client reports a wrong revision as a generic publish error:
        // look at the key to tell a lost race from an outage.
        match self.kv.entry(key).await {
            Ok(Some(entry))
                if entry.operation == kv::Operation::Put && entry.revision == revision =>
            {
                Err(unavailable(e))
            }
            Ok(_) => Err(KvError::Conflict),
            Err(_) => Err(unavailable(e)),
        }
    }

    async fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let mut keys = self.kv.keys().await.map_err(unavailable)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(unavailable)?;
            if k.starts_with(prefix) {
                out.push(k);
            }
        }
        Ok(out)
    }

    async fn watch(&self, prefix: &str) -> Result<Watch, KvError> {
        let mut watch = self
            .kv
            .watch_with_history(format!("{prefix}>"))
            .await
            .map_err(unavailable)?;
        Ok(watch_fed_by(move |tx| async move {
            while let Some(entry) = watch.next().await {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "kv watch error");
                        continue;
                    }
                };
                let value = (entry.operation == kv::Operation::Put).then_some(entry.value);
                // Nothing pending behind it: the consumer skips messages
                // superseded before it reached them (history 1), so only
                // here is the watcher's view whole.
                let change = Change {
                    key: entry.key,
                    value,
                    revision: entry.revision,
                    caught_up: entry.delta == 0,
                };
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        }))
    }
}
