//! The records of at-least-once delivery, as the store keeps them, and the
//! rules of their states: pure data, no I/O.
//!
//! | key | value |
//! |---|---|
//! | `m.<id>` | [`Message`]: the event, its expiry, each recipient's state |
//! | `q.<ns>.u.<user>` / `q.<ns>.s.<socket>` | [`Queue`]: the recipient's pending message ids in emit order, and which control plane works on it until when |

use std::time::Duration;

use bytes::Bytes;
use roomcast_api::v1::DeliveryStatus;
use roomcast_bus::subject::{token, untoken};
use roomcast_wire::socketio;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ControlError;

/// The name of the argument that carries the message id to the client.
pub const MESSAGE_ID_FIELD: &str = "messageId";

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The first wait for an ack before a resend.
    pub resend_interval: Duration,
    /// The longest wait between resends (the wait doubles up to it).
    pub max_resend_interval: Duration,
    /// How long a control plane owns a queue without renewing its lease.
    pub lease_ttl: Duration,
    /// Most messages waiting per recipient (checked when an emit is accepted).
    pub inbox_max: usize,
    /// Largest `ttl_ms` an emit may ask for.
    pub max_ttl: Duration,
    /// How long the status of a finished message stays readable.
    pub retention: Duration,
    /// Delete finished messages in the sweep (the memory store of
    /// standalone; a KV bucket ages them out by itself).
    pub collect: bool,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            resend_interval: Duration::from_secs(1),
            max_resend_interval: Duration::from_secs(8),
            lease_ttl: Duration::from_secs(15),
            inbox_max: 1000,
            max_ttl: Duration::from_secs(86_400),
            retention: Duration::from_secs(3600),
            collect: true,
        }
    }
}

/// A recipient's state for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Acked,
    Expired,
    Purged,
}

impl State {
    pub fn api(self) -> DeliveryStatus {
        match self {
            State::Pending => DeliveryStatus::Pending,
            State::Acked => DeliveryStatus::Acked,
            State::Expired => DeliveryStatus::Expired,
            State::Purged => DeliveryStatus::Purged,
        }
    }
}

/// Who a message is for: a user (every socket of it) or one socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recipient {
    User(String),
    Socket(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientState {
    pub to: Recipient,
    pub state: State,
    #[serde(default)]
    pub done_ms: i64,
}

/// An at-least-once message, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub ns: String,
    pub event: String,
    pub args_json: String,
    /// Base64 of each attachment.
    #[serde(default)]
    pub attachments: Vec<String>,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub recipients: Vec<RecipientState>,
}

impl Message {
    /// A recipient's state as of `now`: a pending one past the expiry is
    /// expired, whether or not a sweep recorded it yet.
    pub fn state_at(&self, r: &RecipientState, now: i64) -> (State, i64) {
        if r.state == State::Pending && now >= self.expires_ms {
            (State::Expired, self.expires_ms)
        } else {
            (r.state, r.done_ms)
        }
    }

    /// The message's overall status as of `now`.
    pub fn status_at(&self, now: i64) -> State {
        let states: Vec<State> = self
            .recipients
            .iter()
            .map(|r| self.state_at(r, now).0)
            .collect();
        if states.contains(&State::Pending) {
            State::Pending
        } else if states.iter().all(|s| *s == State::Acked) {
            State::Acked
        } else if states.contains(&State::Expired) {
            State::Expired
        } else {
            State::Purged
        }
    }

    /// Marks a pending recipient; returns the state recorded, if any. A purge
    /// of a recipient already past the expiry records it expired, as
    /// `state_at` reports it: a purge that comes before a sweep recorded the
    /// expiry does not change the outcome. An ack is recorded as given (the
    /// attempt that got it waited no longer than the expiry; recording it can
    /// come a little after).
    pub fn mark(&mut self, to: &Recipient, state: State, now: i64) -> Option<State> {
        let mut recorded = None;
        for r in &mut self.recipients {
            if r.to == *to && r.state == State::Pending {
                let (state, done_ms) = if now >= self.expires_ms && state != State::Acked {
                    (State::Expired, self.expires_ms)
                } else {
                    (state, now)
                };
                r.state = state;
                r.done_ms = done_ms;
                recorded = Some(state);
            }
        }
        recorded
    }

    /// When the record may be deleted: `retention` after the last recipient
    /// finished (or after the expiry).
    pub fn collectable_at(&self, retention: Duration) -> i64 {
        let done = self
            .recipients
            .iter()
            .map(|r| {
                if r.state == State::Pending {
                    self.expires_ms
                } else {
                    r.done_ms
                }
            })
            .max()
            .unwrap_or(self.expires_ms);
        done.saturating_add(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
    }
}

/// One waiting message of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub msg: String,
    pub expires_ms: i64,
}

/// A recipient's waiting messages, in emit order, and who works on them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Queue {
    pub items: Vec<Item>,
    /// The control plane that delivers them; empty when none does.
    #[serde(default)]
    pub owner: String,
    /// Unix ms until which the owner's lease holds.
    #[serde(default)]
    pub lease_until_ms: i64,
}

impl Queue {
    /// Whether `me` may take the queue at `now`.
    pub fn claimable(&self, me: &str, now: i64) -> bool {
        !self.items.is_empty()
            && (self.owner.is_empty() || self.owner == me || self.lease_until_ms <= now)
    }

    /// Removes the items expired at `now`; returns their message ids.
    pub fn prune(&mut self, now: i64) -> Vec<String> {
        let (gone, kept): (Vec<Item>, Vec<Item>) =
            self.items.drain(..).partition(|i| i.expires_ms <= now);
        self.items = kept;
        gone.into_iter().map(|i| i.msg).collect()
    }
}

fn key_token(name: &str) -> String {
    token(name).replace('~', "=")
}

pub(crate) fn message_key(id: &str) -> String {
    format!("m.{}", key_token(id))
}

pub(crate) fn queue_key(ns: &str, to: &Recipient) -> String {
    match to {
        Recipient::User(u) => format!("q.{}.u.{}", key_token(ns), key_token(u)),
        Recipient::Socket(s) => format!("q.{}.s.{}", key_token(ns), key_token(s)),
    }
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Bytes {
    // Plain structs of strings and numbers always serialise.
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The argument that carries a message id, as the client receives it last.
pub(crate) fn message_id_arg(id: &str) -> Result<Box<RawValue>, ControlError> {
    serde_json::value::to_raw_value(&serde_json::json!({ MESSAGE_ID_FIELD: id }))
        .map_err(|e| ControlError::InvalidArgs(socketio::ArgsError::NotAnArray(e.to_string())))
}

/// The recipient a queue key names.
pub(crate) fn recipient_of(key: &str) -> Option<Recipient> {
    let mut parts = key.splitn(4, '.');
    let (_, _, kind, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let name = untoken(&name.replace('=', "~"))?;
    match kind {
        "u" => Some(Recipient::User(name)),
        "s" => Some(Recipient::Socket(name)),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn msg(recipients: Vec<RecipientState>) -> Message {
        Message {
            id: "m1".into(),
            ns: "/".into(),
            event: "e".into(),
            args_json: String::new(),
            attachments: Vec::new(),
            created_ms: 0,
            expires_ms: 100,
            recipients,
        }
    }

    pub(crate) fn pending(u: &str) -> RecipientState {
        RecipientState {
            to: Recipient::User(u.into()),
            state: State::Pending,
            done_ms: 0,
        }
    }

    #[test]
    fn status_follows_recipients_and_expiry() {
        let mut m = msg(vec![pending("a"), pending("b")]);
        assert_eq!(m.status_at(50), State::Pending);
        assert_eq!(m.status_at(100), State::Expired, "pending past the ttl");
        let a = Recipient::User("a".into());
        let b = Recipient::User("b".into());
        assert_eq!(m.mark(&a, State::Acked, 10), Some(State::Acked));
        assert_eq!(
            m.mark(&a, State::Expired, 11),
            None,
            "a final state is never changed"
        );
        assert_eq!(m.status_at(50), State::Pending);
        assert_eq!(m.status_at(150), State::Expired);
        assert_eq!(m.mark(&b, State::Acked, 20), Some(State::Acked));
        assert_eq!(
            m.status_at(150),
            State::Acked,
            "acked stays acked after the ttl"
        );
        assert_eq!(m.collectable_at(Duration::from_millis(5)), 25);

        let mut p = msg(vec![pending("a")]);
        assert_eq!(p.mark(&a, State::Purged, 5), Some(State::Purged));
        assert_eq!(p.status_at(500), State::Purged);
    }

    #[test]
    fn a_purge_past_the_expiry_is_recorded_expired_and_an_ack_as_given() {
        let a = Recipient::User("a".into());
        for asked in [State::Purged, State::Expired] {
            let mut m = msg(vec![pending("a")]);
            assert_eq!(m.mark(&a, asked, 130), Some(State::Expired), "{asked:?}");
            assert_eq!(m.recipients[0].done_ms, 100, "done at the expiry");
            assert_eq!(m.status_at(130), State::Expired);
        }
        let mut m = msg(vec![pending("a")]);
        assert_eq!(m.mark(&a, State::Acked, 101), Some(State::Acked));
        assert_eq!(m.status_at(130), State::Acked);
    }

    #[test]
    fn queues_are_claimed_only_when_free_or_abandoned() {
        let mut q = Queue::default();
        assert!(!q.claimable("me", 0), "nothing to deliver");
        q.items.push(Item {
            msg: "a".into(),
            expires_ms: 10,
        });
        q.items.push(Item {
            msg: "b".into(),
            expires_ms: 30,
        });
        assert!(q.claimable("me", 0));
        q.owner = "other".into();
        q.lease_until_ms = 20;
        assert!(!q.claimable("me", 19), "another owner's lease holds");
        assert!(q.claimable("me", 20), "an expired lease can be taken");
        assert!(q.claimable("other", 5));
        assert_eq!(q.prune(10), vec!["a".to_owned()]);
        assert_eq!(q.items.len(), 1, "order and the rest kept");
    }

    #[test]
    fn the_message_id_argument_is_an_object_of_one_field() {
        assert_eq!(
            message_id_arg("m1").expect("json").get(),
            r#"{"messageId":"m1"}"#
        );
        assert_eq!(
            message_id_arg("a\"b").expect("json").get(),
            r#"{"messageId":"a\"b"}"#
        );
    }

    #[test]
    fn queue_keys_name_their_recipient() {
        let k = queue_key("/chat", &Recipient::User("a.b c".into()));
        assert_eq!(recipient_of(&k), Some(Recipient::User("a.b c".into())));
        let k = queue_key("/", &Recipient::Socket("s-1_x".into()));
        assert_eq!(recipient_of(&k), Some(Recipient::Socket("s-1_x".into())));
    }
}
