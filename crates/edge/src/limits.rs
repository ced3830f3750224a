//! Limits on what one client may cost the edge: connections and handshakes per
//! peer address, request heads, packet and ping rates; the client port's
//! deadlines and pending-handshake cap are enforced in [`crate::port`].
//!
//! Each limit is checked before the work it protects is done (a refused
//! handshake opens no session, a flood is cut before its packets are decoded),
//! counted in the `limit_hits` metric ([`Limit::hit`]) and logged once per connection.
//!
//! The per-address state is a map bounded in entries: handshake buckets that
//! are full again carry no information and are pruned when the map is full;
//! connection counts exist only while connections are open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Most peer addresses whose handshake rate is remembered at once.
const MAX_TRACKED_PEERS: usize = 100_000;

/// A limit that was hit; its label is the `limit` of the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// An Engine.IO message or polling body over `max_payload`.
    Payload,
    /// A Socket.IO packet with more binary attachments than allowed.
    Attachments,
    /// More request headers than allowed.
    HeaderCount,
    /// A request head (target and headers) over its byte limit.
    HeaderBytes,
    /// Too many open connections from one address.
    ConnectionsPerIp,
    /// Too many new connections per second from one address.
    HandshakeRate,
    /// A socket would be in more rooms than allowed.
    RoomsPerSocket,
    /// WebSocket pings faster than allowed.
    PingRate,
    /// Engine.IO packets faster than allowed.
    PacketRate,
    /// The outbound queue exceeded its bound (slow consumer).
    OutboundQueue,
    /// A client event name over [`roomcast_bus::names::MAX_NAME_LEN`] bytes.
    EventName,
    /// A request head that did not arrive within its deadline.
    RequestHeadTimeout,
    /// A request body (polling POST) that did not arrive within its deadline.
    RequestBodyTimeout,
    /// A connection that had no request routed (its TLS handshake included)
    /// within the handshake deadline of its accept.
    HandshakeTimeout,
    /// A new connection while too many others had not sent their first
    /// request head yet: closed at once.
    PendingHandshakes,
}

impl Limit {
    /// Counts a hit. Callers log it once per connection (most hits close it).
    pub fn hit(self) {
        metrics::counter!(crate::metrics::LIMIT_HITS, "limit" => self.label()).increment(1);
    }

    pub const ALL: [Limit; 15] = [
        Limit::Payload,
        Limit::Attachments,
        Limit::HeaderCount,
        Limit::HeaderBytes,
        Limit::ConnectionsPerIp,
        Limit::HandshakeRate,
        Limit::RoomsPerSocket,
        Limit::PingRate,
        Limit::PacketRate,
        Limit::OutboundQueue,
        Limit::EventName,
        Limit::RequestHeadTimeout,
        Limit::RequestBodyTimeout,
        Limit::HandshakeTimeout,
        Limit::PendingHandshakes,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Limit::Payload => "max_payload",
            Limit::Attachments => "max_attachments",
            Limit::HeaderCount => "max_request_headers",
            Limit::HeaderBytes => "max_request_head_bytes",
            Limit::ConnectionsPerIp => "max_connections_per_ip",
            Limit::HandshakeRate => "handshakes_per_ip_per_sec",
            Limit::RoomsPerSocket => "max_rooms_per_socket",
            Limit::PingRate => "ws_pings_per_sec",
            Limit::PacketRate => "packets_per_sec",
            Limit::OutboundQueue => "outbound_queue_bytes",
            Limit::EventName => "max_event_name_bytes",
            Limit::RequestHeadTimeout => "request_head_timeout",
            Limit::RequestBodyTimeout => "request_body_timeout",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::PendingHandshakes => "max_pending_handshakes",
        }
    }
}

/// A token bucket: `rate` tokens per second, at most `2 × rate` saved up.
/// A rate of 0 means no limit.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate);
        Self {
            rate,
            tokens: 2.0 * rate,
            at: Instant::now(),
        }
    }

    fn capacity(&self) -> f64 {
        2.0 * self.rate
    }

    /// Takes a token; `false` when there is none left.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity());
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full again at `now` (it then says nothing).
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.capacity()
    }
}

/// A token bucket shared by the reader and the writer of a connection.
#[derive(Debug)]
pub struct SharedBucket(Mutex<Bucket>);

impl SharedBucket {
    pub fn new(rate: u32) -> Self {
        Self(Mutex::new(Bucket::new(rate)))
    }

    pub fn take(&self) -> bool {
        // A bucket is a pair of numbers; consistent across a panic.
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now())
    }
}

/// Why a new connection from an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRefusal {
    TooManyConnections,
    TooFast,
}

impl PeerRefusal {
    pub fn limit(self) -> Limit {
        match self {
            PeerRefusal::TooManyConnections => Limit::ConnectionsPerIp,
            PeerRefusal::TooFast => Limit::HandshakeRate,
        }
    }

    /// What the client reads in the 429 body.
    pub fn message(self) -> &'static str {
        match self {
            PeerRefusal::TooManyConnections => "too many connections from this address",
            PeerRefusal::TooFast => "too many new connections from this address, slow down",
        }
    }
}

#[derive(Default)]
struct Peers {
    open: HashMap<IpAddr, usize>,
    handshakes: HashMap<IpAddr, Bucket>,
}

/// Connection counts and handshake rates per peer address.
pub struct PeerLimits {
    max_connections: usize,
    handshakes_per_sec: u32,
    peers: Mutex<Peers>,
}

impl PeerLimits {
    /// `0` turns either limit off.
    pub fn new(max_connections: usize, handshakes_per_sec: u32) -> Arc<Self> {
        Arc::new(Self {
            max_connections,
            handshakes_per_sec,
            peers: Mutex::new(Peers::default()),
        })
    }

    fn peers(&self) -> MutexGuard<'_, Peers> {
        // Counters and buckets: consistent across a panic.
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_off(&self) -> bool {
        self.max_connections == 0 && self.handshakes_per_sec == 0
    }

    /// Admits a new connection from `ip`: takes a handshake token and a
    /// connection slot, released when the returned [`Slot`] is.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<Arc<Slot>>, PeerRefusal> {
        if self.is_off() {
            return Ok(None);
        }
        let now = Instant::now();
        let mut peers = self.peers();
        if self.handshakes_per_sec > 0 {
            if !peers.handshakes.contains_key(&ip) && peers.handshakes.len() >= MAX_TRACKED_PEERS {
                peers.handshakes.retain(|_, b| !b.is_full(now));
                if peers.handshakes.len() >= MAX_TRACKED_PEERS {
                    // Every tracked address is busy: refuse rather than grow.
                    return Err(PeerRefusal::TooFast);
                }
            }
            let rate = self.handshakes_per_sec;
            let bucket = peers
                .handshakes
                .entry(ip)
                .or_insert_with(|| Bucket::new(rate));
            if !bucket.take(now) {
                return Err(PeerRefusal::TooFast);
            }
        }
        if self.max_connections > 0 {
            let open = peers.open.entry(ip).or_insert(0);
            if *open >= self.max_connections {
                return Err(PeerRefusal::TooManyConnections);
            }
            *open += 1;
            return Ok(Some(Arc::new(Slot {
                limits: self.clone(),
                ip,
                released: AtomicBool::new(false),
            })));
        }
        Ok(None)
    }

    /// Open connections counted for `ip`.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        self.peers().open.get(&ip).copied().unwrap_or(0)
    }
}

/// A connection slot of one address; released once, at close or when dropped.
pub struct Slot {
    limits: Arc<PeerLimits>,
    ip: IpAddr,
    released: AtomicBool,
}

impl Slot {
    pub fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut peers = self.limits.peers();
        if let Some(open) = peers.open.get_mut(&self.ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                peers.open.remove(&self.ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("ip", &self.ip).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(5);
        assert!((0..10).all(|_| b.take(t0)), "a burst of twice the rate");
        assert!(!b.take(t0));
        assert!(
            b.take(t0 + Duration::from_millis(200)),
            "one token per 1/rate"
        );
        assert!(!b.take(t0 + Duration::from_millis(200)));
        let mut off = Bucket::new(0);
        assert!((0..10_000).all(|_| off.take(t0)));
    }

    #[test]
    fn connections_per_address_are_counted_until_released() {
        let limits = PeerLimits::new(2, 0);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let s1 = limits.admit(a).expect("first").expect("slot");
        let s2 = limits.admit(a).expect("second").expect("slot");
        assert_eq!(limits.admit(a).err(), Some(PeerRefusal::TooManyConnections));
        assert!(limits.admit(b).is_ok(), "another address has its own count");
        s1.release();
        s1.release();
        assert_eq!(limits.open(a), 1, "released once");
        drop(s2);
        assert_eq!(limits.open(a), 0);
        assert!(limits.admit(a).is_ok());
    }

    #[test]
    fn handshake_rate_per_address() {
        let limits = PeerLimits::new(0, 1);
        let a: IpAddr = [127, 0, 0, 1].into();
        assert!(limits.admit(a).is_ok());
        assert!(limits.admit(a).is_ok());
        assert_eq!(limits.admit(a).err(), Some(PeerRefusal::TooFast));
        assert!(limits.admit([127, 0, 0, 9].into()).is_ok());
    }
}
