//! The transports' direct writers, behind one type the outbound queue holds.
//!
//! A session's queue (`outbox`) writes a packet for an idle connection
//! through a [`DirectSink`] and knows nothing else of the transport: frames,
//! headers and TCP are the WebSocket's (`wsframe::TcpDirect`). Dispatch is a
//! `match` over this enum rather than a `dyn DirectWrite`: the queue keeps it
//! in the place of the stream it held before (an `Option` of one pointer, no
//! allocation of its own, no vtable call per delivery), and a new transport
//! that can write directly is one variant here.
//!
//! Long-polling has no direct writer: a pending GET takes its batch from the
//! queue (`polling`).

use roomcast_wire::engineio::Frame;

use crate::sink::{DirectWrite, Progress};
use crate::wsframe::TcpDirect;

/// A connection a push may write to directly.
#[derive(Debug, Clone)]
pub(crate) enum DirectSink {
    /// A WebSocket over plain TCP (TLS connections have no direct writer).
    WebSocket(TcpDirect),
}

impl DirectWrite for DirectSink {
    #[inline]
    fn try_write(&self, frames: &[Frame]) -> std::io::Result<Progress> {
        match self {
            DirectSink::WebSocket(tcp) => tcp.try_write(frames),
        }
    }
}
