//! Recovery state on NATS JetStream: a stream over the history subjects that
//! republishes each stored emit on its room subject (the server adds the
//! sequence header), and a KV bucket of saved sessions that expire with the
//! recovery window.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use super::bus::{from_header_map, to_header_map};
use super::NatsBus;
use crate::backend::{
    Headers, History, RecoveryError, Replay, Replayed, SavedSession, SessionStore,
};
use crate::recovery::{valid_pid, RecoveryConfig};
use crate::subject::Subjects;

/// Longest time a replay may take before the recovery is given up.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);

fn unavailable(e: impl std::fmt::Display) -> RecoveryError {
    RecoveryError::Unavailable(e.to_string())
}

/// The history as a JetStream stream.
pub struct NatsHistory {
    js: jetstream::Context,
    stream: String,
    subjects: Subjects,
}

impl NatsHistory {
    /// Opens the stream `name`, creating it when missing.
    pub async fn open(
        bus: &NatsBus,
        name: &str,
        subjects: Subjects,
        config: &RecoveryConfig,
    ) -> Result<Self, RecoveryError> {
        let js = jetstream::new(bus.client().clone());
        if js.get_stream(name).await.is_err() {
            let (source, destination) = subjects.history_republish();
            let created = js
                .create_stream(stream::Config {
                    name: name.to_owned(),
                    description: Some("roomcast: emits to recoverable rooms".to_owned()),
                    subjects: vec![source.clone()],
                    max_age: config.history_max_age,
                    max_bytes: i64::try_from(config.history_max_bytes).unwrap_or(i64::MAX),
                    num_replicas: config.replicas,
                    republish: Some(stream::Republish {
                        source,
                        destination,
                        headers_only: false,
                    }),
                    ..Default::default()
                })
                .await;
            // Another process may have created it in the meantime.
            if let Err(e) = created {
                js.get_stream(name).await.map_err(|_| unavailable(e))?;
            }
        }
        Ok(Self {
            js,
            stream: name.to_owned(),
            subjects,
        })
    }
}

#[async_trait::async_trait]
impl History for NatsHistory {
    async fn append(
        &self,
        ns: &str,
        room: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<u64, RecoveryError> {
        let ack = self
            .js
            .publish_with_headers(
                self.subjects.history(ns, room),
                to_header_map(&headers).map_err(unavailable)?,
                payload,
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(ack.sequence)
    }

    async fn since(&self, ns: &str, rooms: &[String], after: u64) -> Result<Replay, RecoveryError> {
        let mut stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(unavailable)?;
        let state = stream.info().await.map_err(unavailable)?.state.clone();
        let upto = state.last_sequence;
        if after > upto || after + 1 < state.first_sequence {
            return Err(RecoveryError::Lost(after));
        }
        let mut replay = Replay {
            messages: Vec::new(),
            upto,
        };
        if after == upto || rooms.is_empty() {
            return Ok(replay);
        }
        let filters: Vec<String> = rooms.iter().map(|r| self.subjects.history(ns, r)).collect();
        let mut consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subjects: filters,
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        if consumer.info().await.map_err(unavailable)?.num_pending == 0 {
            return Ok(replay);
        }
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        let read = async {
            while let Some(msg) = messages.next().await {
                let msg = msg.map_err(unavailable)?;
                let info = msg.info().map_err(unavailable)?;
                let (seq, pending) = (info.stream_sequence, info.pending);
                if seq > upto {
                    break;
                }
                if let Some((ns, room)) = self.subjects.parse_history(msg.subject.as_str()) {
                    replay.messages.push(Replayed {
                        seq,
                        ns,
                        room,
                        headers: from_header_map(msg.headers.as_ref()),
                        payload: msg.payload.clone(),
                    });
                }
                if pending == 0 || seq == upto {
                    break;
                }
            }
            Ok::<(), RecoveryError>(())
        };
        tokio::time::timeout(REPLAY_TIMEOUT, read)
            .await
            .map_err(|_| RecoveryError::Unavailable("the history replay timed out".into()))??;
        Ok(replay)
    }
}

/// Saved sessions in a JetStream KV bucket whose entries live one window.
pub struct NatsSessions {
    kv: kv::Store,
}

impl NatsSessions {
    /// Opens the bucket `name`, creating it when missing.
    pub async fn open(
        bus: &NatsBus,
        name: &str,
        config: &RecoveryConfig,
    ) -> Result<Self, RecoveryError> {
        let js = jetstream::new(bus.client().clone());
        let kv = match js.get_key_value(name).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: name.to_owned(),
                    description: "roomcast: sessions kept for connection state recovery".into(),
                    history: 1,
                    max_age: config.window,
                    num_replicas: config.replicas,
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?,
        };
        Ok(Self { kv })
    }
}

#[async_trait::async_trait]
impl SessionStore for NatsSessions {
    async fn save(&self, session: &SavedSession) -> Result<u64, RecoveryError> {
        let value = encode(session)?;
        self.kv
            .put(&session.pid, value.into())
            .await
            .map_err(unavailable)
    }

    async fn save_if(
        &self,
        session: &SavedSession,
        revision: Option<u64>,
    ) -> Result<Option<u64>, RecoveryError> {
        let value = encode(session)?;
        let written = match revision {
            Some(revision) => self
                .kv
                .update(&session.pid, value.into(), revision)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => None,
                    _ => Some(unavailable(e)),
                }),
            None => self
                .kv
                .create(&session.pid, value.into())
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => None,
                    _ => Some(unavailable(e)),
                }),
        };
        match written {
            Ok(revision) => Ok(Some(revision)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }

    async fn get(&self, pid: &str) -> Result<Option<(SavedSession, u64)>, RecoveryError> {
        if !valid_pid(pid) {
            return Ok(None);
        }
        let Some(entry) = self.kv.entry(pid).await.map_err(unavailable)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        Ok(serde_json::from_slice(&entry.value)
            .ok()
            .map(|s| (s, entry.revision)))
    }

    async fn remove_if(&self, pid: &str, revision: u64) -> Result<bool, RecoveryError> {
        if !valid_pid(pid) {
            return Ok(false);
        }
        // Whoever deletes the revision it read owns the session: two edges
        // racing for one pid cannot both recover it.
        let Err(e) = self.kv.delete_expect_revision(pid, Some(revision)).await else {
            return Ok(true);
        };
        // The client reports a wrong revision as a generic publish error:
        // look at the key to tell a lost race from an outage.
        match self.kv.entry(pid).await {
            Ok(Some(entry))
                if entry.operation == kv::Operation::Put && entry.revision == revision =>
            {
                Err(unavailable(e))
            }
            Ok(_) => Ok(false),
            Err(_) => Err(unavailable(e)),
        }
    }
}

/// A session as the bucket keeps it; its pid must be a key.
fn encode(session: &SavedSession) -> Result<Vec<u8>, RecoveryError> {
    if !valid_pid(&session.pid) {
        return Err(RecoveryError::Unavailable("invalid pid".into()));
    }
    serde_json::to_vec(session).map_err(unavailable)
}
