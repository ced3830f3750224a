//! The NATS implementation of [`crate::Bus`], used by `roomcast edge` and `roomcast control`.
//!
//! A thin layer over one `async-nats` client: subjects, queue groups and
//! request/reply are NATS's own, so the semantics [`MemoryBus`](crate::MemoryBus)
//! imitates are the real thing here. What this layer adds:
//!
//! - Each subscription gets a forwarding task that turns `async-nats` messages into
//!   [`Message`]s and `try_send`s them into the bounded channel of the
//!   [`Subscription`]. A full channel loses the message (counted by
//!   [`NatsBus::dropped`]) rather than stalling the client's reader, which serves
//!   every other subscription too. Dropping the [`Subscription`] aborts the task,
//!   which drops the `async-nats` subscriber, which unsubscribes on the server.
//! - Reconnects retry forever with a capped, jittered backoff (see
//!   [`NatsOptions::reconnect_max_delay`]); `async-nats` resubscribes every live
//!   subscription on the new connection, so subscribers only see a gap.
//! - Connection events are counted ([`NatsBus::reconnects`],
//!   [`NatsBus::connection_state`]) for readiness checks and metrics.
//! - `request_many` stops at the server's "no responders" status instead of
//!   waiting for its deadline, and status messages never reach subscribers.
//!
//! Headers: names and values go over the wire as they are, and every value of a
//! name arrives in order (one exception: the `Nats-Sequence` header that
//! JetStream's republish adds arrives as [`SEQUENCE_HEADER`]); the order
//! *between* different names is not kept (`async_nats::HeaderMap` is a hash
//! map), which [`Headers::get`] and [`Headers::get_all`] never depend on.

use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Event, HeaderMap, HeaderName, HeaderValue, ServerAddr, StatusCode};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::memory::DEFAULT_SUBSCRIBER_CAPACITY;
use crate::recovery::SEQUENCE_HEADER;
use crate::{subject, Asked, Bus, BusError, Headers, Message, Subscription};

/// Delay before the second reconnect attempt; it doubles per attempt up to
/// [`NatsOptions::reconnect_max_delay`].
const RECONNECT_BASE_DELAY: Duration = Duration::from_millis(50);

/// How to reach and authenticate to NATS.
///
/// `Debug` redacts the token, the password, the nkey seed and any credentials
/// embedded in a URL; file paths are shown (they are not secrets).
#[derive(Clone)]
pub struct NatsOptions {
    /// Server URLs (`nats://host:4222`, `tls://…`). List every server you know:
    /// `async-nats` 0.51 also learns the cluster's other servers, but only from
    /// the INFO it gets while connecting, not from later cluster changes.
    pub urls: Vec<String>,
    /// Connection name, shown by the server's monitoring (`/connz`).
    pub name: Option<String>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// An nkey seed (`SU…`) to sign the server's nonce with.
    pub nkey_seed: Option<String>,
    /// A `.creds` file (user JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub require_tls: bool,
    /// PEM roots to verify the server with, in addition to the built-in ones.
    pub tls_root_ca: Option<PathBuf>,
    /// PEM certificate and key for mutual TLS; both or neither.
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    /// Limit for one connection attempt: TCP, TLS, INFO, CONNECT and the first PONG.
    pub connect_timeout: Duration,
    /// Reconnecting never gives up. The first attempt after a disconnect is
    /// immediate; each further one waits 50 ms doubled per attempt, capped at
    /// this, minus up to a quarter at random so a fleet of edges does not
    /// reconnect in lockstep. Each server tried counts as an attempt.
    pub reconnect_max_delay: Duration,
    /// Return from [`NatsBus::connect`] at once and keep trying in the background
    /// when no server answers yet (publishes queue up meanwhile). Off by default,
    /// so that a wrong URL fails at start-up.
    pub retry_on_initial_connect: bool,
    /// How many messages a subscriber may have waiting before it loses new ones.
    pub subscriber_capacity: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            name: None,
            token: None,
            user: None,
            password: None,
            nkey_seed: None,
            creds_file: None,
            require_tls: false,
            tls_root_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            connect_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(2),
            retry_on_initial_connect: false,
            subscriber_capacity: DEFAULT_SUBSCRIBER_CAPACITY,
        }
    }
}

impl NatsOptions {
    /// Options for these servers, everything else default.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

const REDACTED: &str = "<redacted>";

fn redact(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

/// A URL with any `user:password@` or `token@` part replaced.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("{REDACTED}{}", &rest[at..]),
        Some(at) => format!("{scheme}://{REDACTED}{}", &rest[at..]),
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("NatsOptions")
            .field("urls", &urls)
            .field("name", &self.name)
            .field("token", &redact(&self.token))
            .field("user", &self.user)
            .field("password", &redact(&self.password))
            .field("nkey_seed", &redact(&self.nkey_seed))
            .field("creds_file", &self.creds_file)
            .field("require_tls", &self.require_tls)
            .field("tls_root_ca", &self.tls_root_ca)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("retry_on_initial_connect", &self.retry_on_initial_connect)
            .field("subscriber_capacity", &self.subscriber_capacity)
            .finish()
    }
}

/// What went wrong on the NATS side before the client library was involved;
/// carried as the source of [`BusError::Connection`].
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("invalid nats options: {0}")]
    InvalidOptions(&'static str),
    #[error("invalid nats server url {url:?}")]
    InvalidUrl {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    #[error("invalid value for header {0:?}")]
    InvalidHeaderValue(String, #[source] async_nats::header::ParseHeaderValueError),
    #[error("cannot read nats credentials file {path:?}")]
    CredsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn connection_error(err: impl std::error::Error + Send + Sync + 'static) -> BusError {
    BusError::Connection(Box::new(err))
}

/// The client's view of its link to NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected yet (only with `retry_on_initial_connect`).
    Pending,
    Connected,
    /// Lost; reconnecting in the background.
    Disconnected,
}

/// A [`Bus`] on a NATS client. Cloning shares the connection.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    connects: AtomicU64,
    disconnects: AtomicU64,
    /// Lost because the client's per-subscription buffer was full.
    slow_consumer: AtomicU64,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("state", &self.connection_state())
            .field("reconnects", &self.reconnects())
            .finish_non_exhaustive()
    }
}

fn reconnect_delay(attempt: usize, max: Duration) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(20);
    let delay = RECONNECT_BASE_DELAY.saturating_mul(1 << doublings).min(max);
    let quarter = u64::try_from(delay.as_millis() / 4).unwrap_or(u64::MAX);
    delay.saturating_sub(Duration::from_millis(rand::random_range(0..=quarter)))
}

impl NatsBus {
    /// Connects to the first server that answers (in random order).
    pub async fn connect(opts: NatsOptions) -> Result<NatsBus, BusError> {
        if opts.urls.is_empty() {
            return Err(connection_error(NatsError::InvalidOptions(
                "no server urls",
            )));
        }
        if opts.user.is_some() != opts.password.is_some() {
            return Err(connection_error(NatsError::InvalidOptions(
                "user and password go together",
            )));
        }
        if opts.tls_client_cert.is_some() != opts.tls_client_key.is_some() {
            return Err(connection_error(NatsError::InvalidOptions(
                "tls client certificate and key go together",
            )));
        }
        if opts.subscriber_capacity == 0 {
            return Err(connection_error(NatsError::InvalidOptions(
                "subscriber capacity must be positive",
            )));
        }
        let addrs = opts
            .urls
            .iter()
            .map(|url| {
                ServerAddr::from_str(url).map_err(|source| {
                    connection_error(NatsError::InvalidUrl {
                        url: redact_url(url),
                        source,
                    })
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let stats = Arc::new(Stats::default());
        let events = stats.clone();
        let max_delay = opts.reconnect_max_delay;
        let mut co = async_nats::ConnectOptions::new()
            .connection_timeout(opts.connect_timeout)
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempt| reconnect_delay(attempt, max_delay))
            .subscription_capacity(opts.subscriber_capacity)
            .require_tls(opts.require_tls)
            .event_callback(move |event| {
                let stats = events.clone();
                async move { stats.on_event(event) }
            });
        if let Some(name) = &opts.name {
            co = co.name(name);
        }
        if let Some(token) = opts.token {
            co = co.token(token);
        }
        if let (Some(user), Some(password)) = (opts.user, opts.password) {
            co = co.user_and_password(user, password);
        }
        if let Some(seed) = opts.nkey_seed {
            co = co.nkey(seed);
        }
        if let Some(path) = opts.creds_file {
            co = co.credentials_file(&path).await.map_err(|source| {
                connection_error(NatsError::CredsFile {
                    path: path.clone(),
                    source,
                })
            })?;
        }
        if let Some(ca) = opts.tls_root_ca {
            co = co.add_root_certificates(ca);
        }
        if let (Some(cert), Some(key)) = (opts.tls_client_cert, opts.tls_client_key) {
            co = co.add_client_certificate(cert, key);
        }
        if opts.retry_on_initial_connect {
            co = co.retry_on_initial_connect();
        }
        let client = co.connect(addrs).await.map_err(connection_error)?;
        Ok(NatsBus { client, stats })
    }

    /// The underlying client, for what the bus does not cover (JetStream).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn connection_state(&self) -> ConnectionState {
        match self.client.connection_state() {
            State::Pending => ConnectionState::Pending,
            State::Connected => ConnectionState::Connected,
            State::Disconnected => ConnectionState::Disconnected,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connection_state() == ConnectionState::Connected
    }

    /// Connections made after the first one. Events arrive asynchronously, so
    /// this may lag [`NatsBus::connection_state`] by a moment.
    pub fn reconnects(&self) -> u64 {
        self.stats
            .connects
            .load(Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// Connections lost so far.
    pub fn disconnects(&self) -> u64 {
        self.stats.disconnects.load(Ordering::Relaxed)
    }

    /// Messages lost because a subscriber was slow: the client's buffer of its
    /// subscription ([`NatsOptions::subscriber_capacity`]) was full. Counted
    /// from the client's slow-consumer events, one per lost message; the client
    /// queues at most 128 events, so a burst beyond that counts fewer.
    pub fn dropped(&self) -> u64 {
        self.stats.slow_consumer.load(Ordering::Relaxed)
    }

    /// Slow-consumer events the NATS client reported, the same count as
    /// [`NatsBus::dropped`].
    pub fn slow_consumer_events(&self) -> u64 {
        self.stats.slow_consumer.load(Ordering::Relaxed)
    }

    /// Returns once the server has processed everything this client sent
    /// before: earlier publishes are routed and earlier subscriptions are live
    /// on that server (other servers of a cluster learn of them a moment later).
    ///
    /// `async_nats::Client::flush` only empties the socket buffer, so this sends
    /// a message to itself through the server instead. While disconnected it
    /// waits for the reconnect; wrap it in a timeout where that matters.
    pub async fn flush(&self) -> Result<(), BusError> {
        let inbox = self.client.new_inbox();
        let mut echo = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(connection_error)?;
        self.client
            .publish(inbox, Bytes::new())
            .await
            .map_err(connection_error)?;
        echo.next().await.map(drop).ok_or(BusError::Closed)
    }
}

impl Stats {
    fn on_event(&self, event: Event) {
        match event {
            Event::Connected => {
                if self.connects.fetch_add(1, Ordering::Relaxed) > 0 {
                    tracing::info!("nats reconnected");
                }
            }
            Event::Disconnected => {
                self.disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("nats connection lost, reconnecting");
            }
            Event::SlowConsumer(sid) => {
                self.slow_consumer.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sid, "nats subscriber is slow, message dropped");
            }
            Event::LameDuckMode => tracing::info!("nats server entered lame duck mode"),
            Event::Draining | Event::Closed => tracing::info!(%event, "nats client"),
            Event::ServerError(err) => tracing::warn!(error = %err, "nats server error"),
            Event::ClientError(err) => tracing::warn!(error = %err, "nats client error"),
        }
    }
}

pub(crate) fn to_header_map(headers: &Headers) -> Result<HeaderMap, NatsError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        if name.is_empty() {
            return Err(NatsError::InvalidHeaderName(String::new()));
        }
        let header = HeaderName::from_str(name)
            .map_err(|_| NatsError::InvalidHeaderName(name.to_owned()))?;
        let value = HeaderValue::from_str(value)
            .map_err(|source| NatsError::InvalidHeaderValue(name.to_owned(), source))?;
        map.append(header, value);
    }
    Ok(map)
}

/// The header JetStream's republish numbers a stored message with.
const JETSTREAM_SEQUENCE: &str = "Nats-Sequence";

pub(crate) fn from_header_map(map: Option<&HeaderMap>) -> Headers {
    let mut headers = Headers::new();
    for (name, values) in map.into_iter().flat_map(HeaderMap::iter) {
        // The stream's number is the history sequence, under the name every
        // bus gives it; one a publisher set itself is not.
        let name = match name.as_ref() {
            JETSTREAM_SEQUENCE => SEQUENCE_HEADER,
            SEQUENCE_HEADER => continue,
            other => other,
        };
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    headers
}

fn from_nats(msg: async_nats::Message) -> Message {
    Message {
        subject: msg.subject.to_string(),
        headers: from_header_map(msg.headers.as_ref()),
        payload: msg.payload,
        reply: msg.reply.map(|r| r.to_string()),
    }
}

/// A subscription read straight from the client's per-subscription channel;
/// dropping it unsubscribes. Status messages (only request inboxes get them,
/// "no responders") are not messages and are skipped.
struct NatsStream(async_nats::Subscriber);

impl Stream for NatsStream {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            let Some(msg) = ready!(self.0.poll_next_unpin(cx)) else {
                return Poll::Ready(None);
            };
            if let Some(status) = msg.status {
                tracing::debug!(subject = %msg.subject, %status, "nats status message skipped");
                continue;
            }
            return Poll::Ready(Some(from_nats(msg)));
        }
    }
}

fn is_valid_queue(queue: &str) -> bool {
    !queue.is_empty() && !queue.bytes().any(|b| b.is_ascii_whitespace())
}

impl NatsBus {
    /// Publishes a request with a fresh inbox as its reply subject, which it
    /// subscribes to first: directly, not through `subscribe`, to see the
    /// server's status messages (no responders).
    async fn send_request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<async_nats::Subscriber, BusError> {
        let inbox = self.client.new_inbox();
        let sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(connection_error)?;
        self.publish(subject, headers, payload, Some(&inbox))
            .await?;
        Ok(sub)
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        reply: Option<&str>,
    ) -> Result<(), BusError> {
        if !subject::is_valid(subject, false) {
            return Err(BusError::InvalidSubject(subject.to_owned()));
        }
        if let Some(reply) = reply.filter(|r| !subject::is_valid(r, false)) {
            return Err(BusError::InvalidSubject(reply.to_owned()));
        }
        let subject = subject.to_owned();
        let result = match (headers.is_empty(), reply) {
            (true, None) => self.client.publish(subject, payload).await,
            (true, Some(reply)) => {
                self.client
                    .publish_with_reply(subject, reply.to_owned(), payload)
                    .await
            }
            (false, None) => {
                let map = to_header_map(&headers).map_err(connection_error)?;
                self.client
                    .publish_with_headers(subject, map, payload)
                    .await
            }
            (false, Some(reply)) => {
                let map = to_header_map(&headers).map_err(connection_error)?;
                self.client
                    .publish_with_reply_and_headers(subject, reply.to_owned(), map, payload)
                    .await
            }
        };
        result.map_err(connection_error)
    }

    async fn subscribe(
        &self,
        pattern: &str,
        queue: Option<&str>,
    ) -> Result<Subscription, BusError> {
        if !subject::is_valid(pattern, true) {
            return Err(BusError::InvalidSubject(pattern.to_owned()));
        }
        let sub = match queue {
            Some(q) if !is_valid_queue(q) => return Err(BusError::InvalidSubject(q.to_owned())),
            Some(q) => {
                self.client
                    .queue_subscribe(pattern.to_owned(), q.to_owned())
                    .await
            }
            None => self.client.subscribe(pattern.to_owned()).await,
        }
        .map_err(connection_error)?;
        Ok(Subscription::new(NatsStream(sub)))
    }

    fn new_inbox(&self) -> String {
        self.client.new_inbox()
    }

    async fn sync(&self) -> Result<(), BusError> {
        self.flush().await
    }

    /// Like the default, but ends early when the server says nobody listens on
    /// `subject` (a "no responders" status), where the default would wait out
    /// the whole timeout.
    async fn request_many(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        expected: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, BusError> {
        let mut sub = self.send_request(subject, headers, payload).await?;
        let mut replies = Vec::with_capacity(expected.min(64));
        let deadline = tokio::time::Instant::now() + timeout;
        while replies.len() < expected {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(msg)) => match msg.status {
                    None => replies.push(from_nats(msg)),
                    Some(StatusCode::NO_RESPONDERS) => break,
                    Some(status) => {
                        tracing::debug!(%status, "nats status reply skipped");
                    }
                },
                Ok(None) => return Err(BusError::Closed),
                Err(_) => break,
            }
        }
        Ok(replies)
    }

    /// Tells "nobody listens" (the server's status) from "no reply in time".
    async fn ask(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Asked, BusError> {
        let mut sub = self.send_request(subject, headers, payload).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(msg)) => match msg.status {
                    None => return Ok(Asked::Reply(from_nats(msg))),
                    Some(StatusCode::NO_RESPONDERS) => return Ok(Asked::NoResponders),
                    Some(status) => tracing::debug!(%status, "nats status reply skipped"),
                },
                Ok(None) => return Err(BusError::Closed),
                Err(_) => return Ok(Asked::Silent),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let opts = NatsOptions {
            urls: vec![
                "nats://alice:s3cret@127.0.0.1:4222".into(),
                "tok3n@10.0.0.1:4222".into(),
                "tls://nats.example:4443/path@x".into(),
            ],
            token: Some("tok3n".into()),
            user: Some("alice".into()),
            password: Some("s3cret".into()),
            nkey_seed: Some("SUAKEYSEED".into()),
            ..NatsOptions::default()
        };
        let shown = format!("{opts:?}");
        for secret in ["s3cret", "tok3n", "SUAKEYSEED"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("alice"), "{shown}");
        assert!(
            shown.contains("nats://<redacted>@127.0.0.1:4222"),
            "{shown}"
        );
        assert!(shown.contains("tls://nats.example:4443/path@x"), "{shown}");
    }

    #[test]
    fn backoff_is_immediate_then_capped() {
        let max = Duration::from_secs(2);
        assert_eq!(reconnect_delay(0, max), Duration::ZERO);
        assert_eq!(reconnect_delay(1, max), Duration::ZERO);
        let second = reconnect_delay(2, max);
        assert!(second <= RECONNECT_BASE_DELAY && second >= RECONNECT_BASE_DELAY * 3 / 4);
        for attempt in [10, 64, usize::MAX] {
            let d = reconnect_delay(attempt, max);
            assert!(d <= max && d >= max * 3 / 4, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let mut h = Headers::new();
        h.append("ok", "a\r\nb");
        assert!(matches!(
            to_header_map(&h),
            Err(NatsError::InvalidHeaderValue(..))
        ));
        for name in ["", "a b", "a:b", "é"] {
            let mut h = Headers::new();
            h.append(name, "v");
            assert!(
                matches!(to_header_map(&h), Err(NatsError::InvalidHeaderName(_))),
                "{name:?}"
            );
        }
        let mut h = Headers::new();
        h.append("rc-room", "a");
        h.append("rc-room", "b");
        let map = to_header_map(&h).expect("valid");
        let values: Vec<&str> = map.get_all("rc-room").map(HeaderValue::as_str).collect();
        assert_eq!(values, ["a", "b"]);
    }

    #[tokio::test]
    async fn rejects_bad_options_before_connecting() {
        let cases = [
            NatsOptions {
                urls: vec![],
                ..NatsOptions::default()
            },
            NatsOptions {
                user: Some("u".into()),
                ..NatsOptions::default()
            },
            NatsOptions {
                tls_client_cert: Some("c.pem".into()),
                ..NatsOptions::default()
            },
        ];
        for opts in cases {
            let err = NatsBus::connect(opts).await.expect_err("invalid");
            assert!(matches!(err, BusError::Connection(_)), "{err:?}");
        }
    }
}
