//! The presence store on NATS JetStream KV: one bucket per roomcast cluster,
//! history 1, so every replica of every process sees the same revisions and
//! compare-and-swap arbitrates between them.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::store::{async_stream_like, Change, Store, StoreError, Watch};

/// How long opening retries until the bucket answers reads.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The key read to see whether the bucket answers (it never exists).
const READY_PROBE: &str = "probe";

/// A JetStream KV bucket.
#[derive(Clone)]
pub struct NatsStore {
    kv: kv::Store,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl NatsStore {
    /// Opens the presence bucket (see [`NatsStore::open_bucket`]).
    pub async fn open(
        client: async_nats::Client,
        bucket: &str,
        replicas: usize,
    ) -> Result<NatsStore, StoreError> {
        Self::open_bucket(
            client,
            bucket,
            replicas,
            "roomcast presence: sockets, users, edge leases",
            std::time::Duration::ZERO,
        )
        .await
    }

    /// Opens a bucket, creating it when missing with this description and
    /// maximum age of a key's last write (zero: no limit), and waits until it
    /// answers reads. Retried for a while: a JetStream cluster that has just
    /// started may not place a replicated bucket yet ("no suitable peers for
    /// placement"), and a bucket just created (by this process or another one
    /// starting at the same time) answers reads only once its replicas are up
    /// ("no stream found for given subject").
    pub async fn open_bucket(
        client: async_nats::Client,
        bucket: &str,
        replicas: usize,
        description: &str,
        max_age: std::time::Duration,
    ) -> Result<NatsStore, StoreError> {
        let js = async_nats::jetstream::new(client);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut pause = Duration::from_millis(50);
        loop {
            match Self::try_open(&js, bucket, replicas, description, max_age).await {
                Ok(kv) => return Ok(NatsStore { kv }),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::info!(bucket, error = %e, "bucket not ready yet, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    async fn try_open(
        js: &async_nats::jetstream::Context,
        bucket: &str,
        replicas: usize,
        description: &str,
        max_age: std::time::Duration,
    ) -> Result<kv::Store, StoreError> {
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: description.to_owned(),
                    history: 1,
                    num_replicas: replicas,
                    max_age,
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
impl Store for NatsStore {
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, StoreError> {
        match self.kv.entry(key).await.map_err(unavailable)? {
            Some(e) if e.operation == kv::Operation::Put => Ok(Some((e.value, e.revision))),
            _ => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.kv.put(key, value).await.map_err(unavailable)
    }

    async fn swap(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        match expected {
            None => self.kv.create(key, value).await.map_err(|e| {
                if e.kind() == kv::CreateErrorKind::AlreadyExists {
                    StoreError::Conflict
                } else {
                    unavailable(e)
                }
            }),
            Some(rev) => self.kv.update(key, value, rev).await.map_err(|e| {
                if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                    StoreError::Conflict
                } else {
                    unavailable(e)
                }
            }),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.kv.delete(key).await.map_err(unavailable)
    }

    async fn delete_if(&self, key: &str, revision: u64) -> Result<(), StoreError> {
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
            Ok(_) => Err(StoreError::Conflict),
            Err(_) => Err(unavailable(e)),
        }
    }

    async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
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

    async fn watch(&self, prefix: &str) -> Result<Watch, StoreError> {
        let mut watch = self
            .kv
            .watch_with_history(format!("{prefix}>"))
            .await
            .map_err(unavailable)?;
        Ok(async_stream_like(move |tx| async move {
            while let Some(entry) = watch.next().await {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "presence watch error");
                        continue;
                    }
                };
                let value = (entry.operation == kv::Operation::Put).then_some(entry.value);
                let change = Change {
                    key: entry.key,
                    value,
                    revision: entry.revision,
                };
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        }))
    }
}
