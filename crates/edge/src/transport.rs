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
    /// A fake transport's stream, for the layers' tests.
    #[cfg(test)]
    Recorder(std::sync::Arc<Recorder>),
}

// What the queue holds in the place of the stream it held before: one
// pointer, the `Option` in the pointer's niche. (Tests add a variant.)
#[cfg(not(test))]
const _: () = assert!(std::mem::size_of::<Option<DirectSink>>() == std::mem::size_of::<usize>());

impl DirectWrite for DirectSink {
    #[inline]
    fn try_write(&self, frames: &[Frame]) -> std::io::Result<Progress> {
        match self {
            DirectSink::WebSocket(tcp) => tcp.try_write(frames),
            #[cfg(test)]
            DirectSink::Recorder(r) => r.try_write(frames),
        }
    }
}

/// A fake transport's stream: keeps what is written to it directly, or takes
/// nothing while it is `blocked` (a full send buffer).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub written: std::sync::Mutex<Vec<Frame>>,
    pub blocked: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl DirectWrite for Recorder {
    fn try_write(&self, frames: &[Frame]) -> std::io::Result<Progress> {
        if self.blocked.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(Progress::default());
        }
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(frames.iter().cloned());
        Ok(Progress {
            first: frames.len(),
            done: 0,
        })
    }
}
