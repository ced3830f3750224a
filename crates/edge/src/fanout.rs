//! Fan-out: an emit from the bus queued on each local socket it is for, the
//! same encoded buffer for every one.

use std::sync::Arc;

use roomcast_bus::envelope::{Packet, Target};
use roomcast_bus::Headers;

use crate::outbox::{Path, PushError};
use crate::room_index::SubjectKind;
use crate::session::CloseReason;
use crate::sio::Socket;
use crate::Edge;

/// A delivery to at most this many local sockets writes to the idle ones
/// itself (`outbox::Path::Direct`): no connection's task is woken for it. A
/// larger one goes through each connection's writer, so that many writers
/// write in parallel and coalesce what queues while they write; written from
/// the fan-out task alone, one room of 10,000 sockets saturated at a seventh
/// of the rate (BENCHMARKS.md).
const DIRECT_FANOUT: usize = 32;

impl Edge {
    /// Delivers an emit that arrived on a subject of kind `kind` to the local
    /// sockets it reaches through that subject.
    pub(crate) fn fan_out(
        &self,
        target: &Target,
        packet: Packet,
        volatile: bool,
        headers: &Headers,
        kind: &SubjectKind,
    ) {
        // A span only when traces are exported: nothing per message otherwise.
        let span = if roomcast_bus::trace::enabled() {
            tracing::info_span!(
                "deliver",
                otel.name = "deliver",
                otel.kind = "consumer",
                messaging.system = "nats",
                recipients = tracing::field::Empty
            )
        } else {
            tracing::Span::none()
        };
        roomcast_bus::trace::adopt(&span, headers);
        let _entered = span.enter();
        // An emit the history numbered carries its number as the event's
        // offset, for connection state recovery.
        let seq = crate::recovery::sequence(headers);
        let packet = if seq != 0 && !volatile {
            crate::recovery::with_offset(packet, seq)
        } else {
            packet
        };
        let mut targets = self.read_index().targets(target, kind);
        // One copy of several: to the sockets no other copy reached.
        if let Some(id) = roomcast_bus::envelope::message_id(headers) {
            if !targets.is_empty() {
                self.inner.delivered.first_time(id, &mut targets);
            }
        }
        span.record("recipients", targets.len());
        self.deliver(&targets, &packet, volatile, seq);
        if let Some(sent) = roomcast_bus::envelope::sent_at_us(headers) {
            let delay = (roomcast_bus::envelope::now_us() - sent).max(0) as f64 / 1e6;
            metrics::histogram!(crate::metrics::FANOUT_LATENCY).record(delay);
        }
    }

    /// Queues one packet on every target; slow consumers are disconnected.
    /// `seq` is the packet's history sequence (0: none).
    pub(crate) fn deliver(
        &self,
        targets: &[Arc<Socket>],
        packet: &Packet,
        volatile: bool,
        seq: u64,
    ) {
        metrics::counter!(crate::metrics::DELIVERIES).increment(targets.len() as u64);
        let path = if targets.len() <= DIRECT_FANOUT {
            Path::Direct
        } else {
            Path::Queue
        };
        for socket in targets {
            if let Err(PushError::Full) = socket.send(packet, volatile, seq, path) {
                tracing::info!(socket = %socket.id, "slow consumer disconnected");
                self.close_session(&socket.session, CloseReason::SlowConsumer);
            }
        }
    }
}
