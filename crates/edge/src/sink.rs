//! What a transport is to a session's outbound queue: which kind drains it,
//! and, for a transport that can, how a packet is written to the client at
//! once by whoever has it (the fan-out) instead of waking the connection's
//! task ([`DirectWrite`]).
//!
//! This module knows no transport: it is the leaf the queue (`outbox`), the
//! transports (`ws`, `polling`) and the dispatch over the direct writers
//! (`transport`) all depend on. A new transport is a [`TransportKind`] and,
//! if it can write directly, an implementation of [`DirectWrite`] added to
//! `transport::DirectSink`.

use roomcast_wire::engineio::Frame;

/// Which transport drains a session's queue: the consumer that may take from
/// it. A polling session becomes a WebSocket one at the end of an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Polling,
    WebSocket,
}

impl TransportKind {
    /// The transport's name, as Engine.IO spells it (the `transport` query
    /// parameter, and what backends are told a socket uses).
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Polling => "polling",
            TransportKind::WebSocket => "websocket",
        }
    }

    /// The transports a session opened on this one may upgrade to (the open
    /// packet's `upgrades`).
    pub fn upgrades(self) -> &'static [&'static str] {
        match self {
            TransportKind::Polling => &["websocket"],
            TransportKind::WebSocket => &[],
        }
    }
}

/// How far the writing of a packet's frames got: the first frame not wholly
/// written, and how many of its bytes (in the transport's encoding, header
/// first) are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub first: usize,
    pub done: usize,
}

impl Progress {
    pub fn finished(&self, frames: &[Frame]) -> bool {
        self.first >= frames.len()
    }
}

/// A transport's stream, written to by the producer of a packet while the
/// connection's writer is idle. It must not block and must not wait: it
/// writes what the stream takes at once and says how far it got; the queue
/// keeps the rest, with that progress, for the connection's writer.
pub(crate) trait DirectWrite {
    /// One non-blocking write of a packet's frames. `Ok` with how far it got
    /// (nothing, when the stream would block); `Err` when the stream failed.
    fn try_write(&self, frames: &[Frame]) -> std::io::Result<Progress>;
}
