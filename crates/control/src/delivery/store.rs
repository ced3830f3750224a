//! Where delivery records live: reads and compare-and-swap updates of
//! messages and queues in a [`KvStore`] (a JetStream KV bucket in a cluster,
//! memory standalone).

use std::sync::Arc;

use roomcast_bus::envelope::now_ms;
use roomcast_bus::{KvError, KvStore};

use super::model::{message_key, to_json, Message, Queue, Recipient, State};
use crate::metrics;

/// How many times a compare-and-swap is retried under contention.
const MAX_SWAPS: usize = 64;

/// The messages and queues of at-least-once delivery.
#[derive(Clone)]
pub(crate) struct Records {
    store: Arc<dyn KvStore>,
}

impl Records {
    pub fn new(store: Arc<dyn KvStore>) -> Records {
        Records { store }
    }

    /// A queue and its revision (an empty queue, no revision, when absent).
    pub async fn read_queue(&self, key: &str) -> Result<(Queue, Option<u64>), KvError> {
        match self.store.get(key).await? {
            None => Ok((Queue::default(), None)),
            Some((bytes, rev)) => Ok((
                serde_json::from_slice(&bytes).unwrap_or_default(),
                Some(rev),
            )),
        }
    }

    /// A message and its revision, if it is kept (and readable).
    pub async fn read_message(&self, id: &str) -> Result<Option<(Message, u64)>, KvError> {
        Ok(self
            .store
            .get(&message_key(id))
            .await?
            .and_then(|(b, rev)| Some((serde_json::from_slice(&b).ok()?, rev))))
    }

    /// Writes a new message.
    pub async fn put_message(&self, msg: &Message) -> Result<(), KvError> {
        self.store
            .swap(&message_key(&msg.id), to_json(msg), None)
            .await
            .map(drop)
    }

    /// The keys of every queue.
    pub async fn queue_keys(&self) -> Result<Vec<String>, KvError> {
        self.store.keys("q.").await
    }

    /// Reads, changes and swaps a queue until the swap wins (an emptied,
    /// unowned queue is deleted); returns the queue before and after.
    pub async fn update_queue(
        &self,
        key: &str,
        mut change: impl FnMut(&mut Queue),
    ) -> Result<(Queue, Queue), KvError> {
        for _ in 0..MAX_SWAPS {
            let (before, rev) = self.read_queue(key).await?;
            let mut after = before.clone();
            change(&mut after);
            if after == before {
                return Ok((before, after));
            }
            let result = match rev {
                Some(rev) if after.items.is_empty() && after.owner.is_empty() => {
                    self.store.delete_if(key, rev).await
                }
                _ => self.store.swap(key, to_json(&after), rev).await.map(drop),
            };
            match result {
                Ok(()) => return Ok((before, after)),
                Err(KvError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(KvError::Unavailable(format!("queue {key} kept changing")))
    }

    /// Removes a message from a queue.
    pub async fn pop(&self, key: &str, id: &str) -> Result<(), KvError> {
        self.update_queue(key, |q| q.items.retain(|i| i.msg != id))
            .await
            .map(drop)
    }

    /// Sets a pending recipient's state; returns whether this call did it.
    pub async fn mark(&self, id: &str, to: &Recipient, state: State) -> Result<bool, KvError> {
        for _ in 0..MAX_SWAPS {
            let Some((mut msg, rev)) = self.read_message(id).await? else {
                return Ok(false);
            };
            let Some(recorded) = msg.mark(to, state, now_ms()) else {
                return Ok(false);
            };
            match self
                .store
                .swap(&message_key(id), to_json(&msg), Some(rev))
                .await
            {
                Ok(_) => {
                    let label = match recorded {
                        State::Acked => "acked",
                        State::Expired => "expired",
                        State::Purged => "purged",
                        State::Pending => return Ok(recorded == state),
                    };
                    ::metrics::counter!(metrics::DELIVERY_DONE, "outcome" => label).increment(1);
                    return Ok(recorded == state);
                }
                Err(KvError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(KvError::Unavailable(format!("message {id} kept changing")))
    }

    /// Deletes the messages finished longer than `retention` ago (the memory
    /// store of standalone; a KV bucket ages them out by itself).
    pub async fn collect(&self, retention: std::time::Duration) -> Result<(), KvError> {
        let now = now_ms();
        for key in self.store.keys("m.").await? {
            let Some((bytes, rev)) = self.store.get(&key).await? else {
                continue;
            };
            let Ok(msg) = serde_json::from_slice::<Message>(&bytes) else {
                continue;
            };
            if msg.collectable_at(retention) <= now {
                let _ = self.store.delete_if(&key, rev).await;
            }
        }
        Ok(())
    }

    /// Writes raw bytes under a key (tests set up records so).
    #[cfg(test)]
    pub async fn put_raw(&self, key: &str, value: bytes::Bytes) -> Result<(), KvError> {
        self.store.swap(key, value, None).await.map(drop)
    }
}
