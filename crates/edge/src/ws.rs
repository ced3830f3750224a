//! The WebSocket transport: `fastwebsockets` does the upgrade; reading
//! ([`crate::ws_read`]) and writing are ours.
//!
//! Server frames are unmasked, so a packet's bytes are the same for every
//! recipient: the writer puts a small header in front of the shared payload and
//! hands both to one vectored write, for as many queued packets as there are
//! (`wsframe`). On plain TCP a push to an idle writer writes itself (`outbox`).
//! `fastwebsockets`' own writer would copy small frames into a per-connection
//! buffer and write each frame separately. Control replies the reader owes (pong,
//! close echo, the upgrade probe's `3probe`, the close frame that fails the
//! connection on a protocol error) reach the writer through a small queue of
//! the connection's own ([`Control`]). Once the writer has written a close
//! frame it writes nothing more and shuts the stream. Reader and writer are two
//! futures joined in the connection's one task.
//!
//! What an idle connection costs is mostly this task, so both halves wait in
//! small hand-written polls (the reader for the client's next bytes, the writer
//! for its queues) that hold nothing but wakers, and build the reading of a
//! message, or a write, on the heap only once there is one.
//!
//! [`echo`] serves the opt-in echo endpoint for conformance suites with the same
//! reader, limits and writer.

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use fastwebsockets::upgrade::UpgradeFut;
use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use roomcast_wire::engineio::{self, Frame, PacketType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::outbox::{register, Outbox, PushError};
use crate::session::{close_payload, CloseReason, Handshake, Session};
use crate::sink::TransportKind;
use crate::tcp::SharedTcp;
use crate::transport::DirectSink;
use crate::ws_read::{Message, MessageReader, OpCode, ReadError};
use crate::wsframe::{encode_frame, write_frames, TcpDirect};
use crate::Edge;

/// Most bytes the writer takes from the queue for one vectored write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Longest a finished connection keeps reading (and dropping) what the client
/// still sends, waiting for it to close its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a closed connection may take to flush what was queued before it.
const CLOSE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a connection reads from: the shared TCP stream, or the read half of
/// any other (TLS).
trait ReadIo: tokio::io::AsyncRead + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + Unpin + Send + 'static> ReadIo for T {}

/// What a connection writes to.
trait WriteIo: tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncWrite + Unpin + Send + 'static> WriteIo for T {}

/// Serves one WebSocket connection: a new session, or the upgrade of an
/// existing polling session. `tcp` is the connection's stream when it is plain
/// TCP: the session's queue writes to it directly while the writer is idle
/// (as a [`DirectSink`]).
///
/// Once the upgrade is done, the connection gets a task of its own, sized for
/// its stream: plain TCP is read and written through two handles to the
/// shared stream (hyper's upgraded stream is taken apart for it), anything
/// else through the two halves of `tokio::io::split`.
pub(crate) async fn serve(
    edge: Edge,
    fut: UpgradeFut,
    existing: Option<Arc<Session>>,
    hs: Handshake,
    tcp: Option<Arc<tokio::net::TcpStream>>,
) {
    let direct = tcp.map(|tcp| DirectSink::WebSocket(TcpDirect(tcp)));
    let upgraded = match fut.await {
        Ok(ws) => ws.into_inner().into_inner(),
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    let spawner = edge.clone();
    match crate::port::shared_upgraded(upgraded) {
        Ok((w, read_buf)) => {
            let r = SharedTcp(w.0.clone());
            spawner.spawn(connection(edge, r, w, read_buf, existing, hs, direct));
        }
        Err(upgraded) => {
            let (r, w) = tokio::io::split(TokioIo::new(upgraded));
            spawner.spawn(connection(edge, r, w, Bytes::new(), existing, hs, direct));
        }
    }
}

/// Why a WebSocket for an existing session is accepted only to be closed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UpgradeRefusal {
    /// The session is on a WebSocket already.
    AlreadyUpgraded,
    /// Another WebSocket is probing to take the session over.
    UpgradeInProgress,
}

impl UpgradeRefusal {
    /// Why a WebSocket may not take `session` over now, if it may not.
    pub(crate) fn of(session: &Session) -> Option<UpgradeRefusal> {
        // A session relayed from another edge's WebSocket is upgraded too.
        if session.outbox.transport() != TransportKind::Polling || session.is_relayed() {
            Some(UpgradeRefusal::AlreadyUpgraded)
        } else if session.is_upgrading() {
            Some(UpgradeRefusal::UpgradeInProgress)
        } else {
            None
        }
    }

    /// The close frame's reason (and what edges say to each other).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            UpgradeRefusal::AlreadyUpgraded => "already_upgraded",
            UpgradeRefusal::UpgradeInProgress => "upgrade_in_progress",
        }
    }

    /// Reverses [`UpgradeRefusal::reason`]; an unknown reason is an upgrade
    /// in progress (the session is not to be taken over either way).
    pub(crate) fn from_reason(reason: &[u8]) -> UpgradeRefusal {
        if reason == UpgradeRefusal::AlreadyUpgraded.reason().as_bytes() {
            UpgradeRefusal::AlreadyUpgraded
        } else {
            UpgradeRefusal::UpgradeInProgress
        }
    }
}

/// Finishes the upgrade of a WebSocket that cannot take its session, then
/// closes it at once (1008, with the reason); the session is left as it is.
pub(crate) async fn refuse(fut: UpgradeFut, refusal: UpgradeRefusal) {
    let mut io = match fut.await {
        Ok(ws) => ws.into_inner(),
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    tracing::debug!(
        reason = refusal.reason(),
        "websocket for an existing session refused"
    );
    let close = encode_frame(OpCode::Close, &close_payload(1008, refusal.reason()));
    let written = async {
        io.write_all(&close).await?;
        io.flush().await?;
        io.shutdown().await
    };
    if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, written)
        .await
        .is_ok()
    {
        linger(io).await;
    }
}

/// Reading and writing: two futures joined in the connection's one task, so
/// the writer keeps flushing after the reader is done. `read` is what was
/// read from the stream before the upgrade was done (a client may send its
/// first frames at once).
fn connection<R: ReadIo, W: WriteIo>(
    edge: Edge,
    r: R,
    w: W,
    read: Bytes,
    existing: Option<Arc<Session>>,
    hs: Handshake,
    direct: Option<DirectSink>,
) -> impl Future<Output = ()> + Send {
    // Only an upgrade probes, and switches the session's queue to this socket
    // once the probe succeeds.
    let (session, upgrade) = match existing {
        None => {
            let session = edge.open_session(TransportKind::WebSocket, hs);
            session.outbox.switch_to_websocket(direct);
            (session, None)
        }
        Some(session) => (session, Some(direct)),
    };
    let cfg = edge.config();
    let mut reader = MessageReader::new(r, cfg.max_payload, cfg.ws_pings_per_sec).with_read(&read);
    async move {
        let control = Control::default();
        let linger_after = {
            let reading = read_half(&edge, &session, &mut reader, &control, upgrade);
            let writing = write_session(&edge, &session, w, &control);
            let halves = futures_util::future::join(reading, writing);
            tokio::pin!(halves);
            in_span(&session.span, halves).await.0
        };
        // Lingering comes after the writer is done, close frame and all: the
        // client's answer to our close is what it waits for. Boxed: its timer
        // would take room in every connection's future.
        if linger_after {
            Box::pin(linger(reader.into_inner())).await;
        }
    }
}

/// Polls `fut` inside `span`, which it borrows (`Instrument` would keep a
/// copy of the span, 40 bytes, in every connection's future).
fn in_span<'a, F: Future>(
    span: &'a tracing::Span,
    mut fut: std::pin::Pin<&'a mut F>,
) -> impl Future<Output = F::Output> + 'a {
    std::future::poll_fn(move |cx| {
        let _entered = span.enter();
        fut.as_mut().poll(cx)
    })
}

/// A session's reading half: the upgrade probe if there is one (`upgrade`:
/// the direct sink to give the session's queue), then the read loop. Returns
/// whether to linger on the stream (`false` for an abandoned upgrade).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would copy its arguments into locals: a larger future in every connection"
)]
fn read_half<'a, R: ReadIo>(
    edge: &'a Edge,
    session: &'a Arc<Session>,
    reader: &'a mut MessageReader<R>,
    control: &'a Control,
    upgrade: Option<Option<DirectSink>>,
) -> impl Future<Output = bool> + Send + 'a {
    async move {
        let cfg = edge.config();
        if let Some(direct) = upgrade {
            // Boxed: only upgrades probe, and its timer would take room in every
            // connection's future.
            let probed = Box::pin(tokio::time::timeout(
                cfg.upgrade_timeout,
                probe(reader, control, session),
            ))
            .await;
            session.end_upgrade();
            if !matches!(probed, Ok(Ok(()))) {
                // The writer ends with the control queue; the polling session goes on.
                tracing::debug!(sid = %session.sid, "websocket upgrade abandoned");
                control.finish_reading();
                return false;
            }
            session.outbox.switch_to_websocket(direct);
            tracing::debug!(sid = %session.sid, "upgraded to websocket");
        }
        read_loop(edge, session, reader, control).await;
        control.finish_reading();
        true
    }
}

/// Reads and drops what the client still sends until it closes, for at most
/// [`LINGER`]. Closing a socket with unread input resets the connection, and a
/// reset can destroy what the client has not read yet: the last messages and
/// the close frame.
async fn linger(mut r: impl ReadIo) {
    // On the heap: an array here would be part of every connection's task.
    let mut buf = vec![0u8; 4096];
    let drain = async { while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// `2probe` → `3probe`, then `5`: the client moves its session to this socket.
async fn probe<R: ReadIo>(
    reader: &mut MessageReader<R>,
    control: &Control,
    session: &Session,
) -> Result<(), CloseReason> {
    expect_text(reader, control, b"2probe").await?;
    if !session.begin_upgrade() {
        return Err(CloseReason::ProtocolError);
    }
    control
        .push(encode_frame(OpCode::Text, b"3probe"))
        .await
        .map_err(|_| CloseReason::TransportError)?;
    // Release a GET the client is waiting on, so it can finish the upgrade.
    let _ = session.outbox.push(&[Frame::control(PacketType::Noop)]);
    expect_text(reader, control, b"5").await
}

/// Reads the next message and checks it is exactly this text.
async fn expect_text<R: ReadIo>(
    reader: &mut MessageReader<R>,
    control: &Control,
    expected: &[u8],
) -> Result<(), CloseReason> {
    match reader.next(&mut control_sender(control)).await {
        Ok(Message::Text(text)) if text == expected => Ok(()),
        Ok(_) => Err(CloseReason::ProtocolError),
        Err(e) => Err(fail(control, e).await),
    }
}

/// Fails the connection after a read error: queues the close frame with the
/// code the error calls for, and tells why the session ends.
async fn fail(control: &Control, e: ReadError) -> CloseReason {
    let reason = close_reason(e);
    if let Some(code) = e.close_code() {
        let payload = close_payload(code, reason.ws_reason());
        let _ = control.push(encode_frame(OpCode::Close, &payload)).await;
    }
    reason
}

/// Why a session ends after a read error (a ping flood is counted here).
pub(crate) fn close_reason(e: ReadError) -> CloseReason {
    match e {
        ReadError::Eof => CloseReason::TransportClose,
        ReadError::Io => CloseReason::TransportError,
        ReadError::Protocol | ReadError::InvalidUtf8 => CloseReason::ProtocolError,
        ReadError::TooBig => CloseReason::MessageTooBig,
        ReadError::PingFlood => {
            crate::limits::Limit::PingRate.hit();
            tracing::info!("websocket ping flood, closing");
            CloseReason::Flood
        }
    }
}

/// Most control replies queued for the writer; the reader waits for room
/// beyond that (a client that pings and does not read is held back).
const CONTROL_REPLIES: usize = 16;

/// Where the reader and the upgrade probe queue the frames they owe the
/// client (pongs, the close echo or failing close, `3probe`) for the writer.
/// It lives in the connection's future, beside the two halves that use it:
/// no allocation while the queue is empty.
#[derive(Default)]
struct Control(std::sync::Mutex<ControlState>);

#[derive(Default)]
struct ControlState {
    /// A `Vec` (smaller than a `VecDeque`): at most [`CONTROL_REPLIES`]
    /// frames, taken from the front.
    frames: Vec<Bytes>,
    /// The reader queues nothing more.
    reading_done: bool,
    /// The writer writes nothing more: pushes fail, and the reader stops.
    writing_done: bool,
    /// The writer, waiting for a frame.
    writer: Option<Waker>,
    /// The reader, waiting for room or for the writer to finish.
    reader: Option<Waker>,
}

/// The writer is gone.
#[derive(Debug)]
struct Closed;

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        // Plain queue operations: consistent across a panic.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame for the writer, waiting while the queue is full.
    fn push(&self, frame: Bytes) -> impl Future<Output = Result<(), Closed>> + Send + '_ {
        let mut frame = Some(frame);
        std::future::poll_fn(move |cx| {
            let mut s = self.lock();
            if s.writing_done {
                return Poll::Ready(Err(Closed));
            }
            if s.frames.len() >= CONTROL_REPLIES {
                register(&mut s.reader, cx);
                return Poll::Pending;
            }
            s.frames.extend(frame.take());
            let writer = s.writer.take();
            drop(s);
            if let Some(w) = writer {
                w.wake();
            }
            Poll::Ready(Ok(()))
        })
    }

    /// The writer's wait for the next frame; `None` once the reader is done
    /// and everything it queued is taken.
    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut s = self.lock();
        let first = (!s.frames.is_empty()).then(|| s.frames.remove(0));
        match first {
            Some(frame) => {
                let reader = s.reader.take();
                drop(s);
                if let Some(r) = reader {
                    r.wake();
                }
                Poll::Ready(Some(frame))
            }
            None if s.reading_done => Poll::Ready(None),
            None => {
                register(&mut s.writer, cx);
                Poll::Pending
            }
        }
    }

    /// The reader's wait for the writer to be done (the connection is over).
    fn poll_writing_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.writing_done {
            return Poll::Ready(());
        }
        register(&mut s.reader, cx);
        Poll::Pending
    }

    /// The reader queues nothing more.
    fn finish_reading(&self) {
        let writer = {
            let mut s = self.lock();
            s.reading_done = true;
            s.writer.take()
        };
        if let Some(w) = writer {
            w.wake();
        }
    }

    /// The writer writes nothing more: what is queued is dropped, pushes
    /// fail, and a reader waiting for the client's next bytes stops.
    fn finish_writing(&self) {
        let reader = {
            let mut s = self.lock();
            s.writing_done = true;
            s.frames.clear();
            s.reader.take()
        };
        if let Some(r) = reader {
            r.wake();
        }
    }
}

/// The reader's send callback: queues a control reply for the writer.
fn control_sender<'a>(control: &'a Control) -> impl FnMut(OpCode, &[u8]) -> SendFuture<'a> + 'a {
    move |opcode, payload| Box::pin(control.push(encode_frame(opcode, payload)))
}

/// What the reader's send callback returns: queuing a control reply. Boxed:
/// the reader keeps it only while it waits for room.
type SendFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), Closed>> + Send + 'a>>;

/// The reading and handling of one message from the client.
type PacketWork<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), CloseReason>> + Send + 'a>>;

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would copy its arguments into locals: a larger future in every connection"
)]
fn read_loop<'a, R: ReadIo>(
    edge: &'a Edge,
    session: &'a Arc<Session>,
    reader: &'a mut MessageReader<R>,
    control: &'a Control,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        loop {
            // While the client is quiet, this poll is all the reader holds.
            // The session's end reaches it through the writer: a closed
            // session's queue ends the writer, and the writer's end wakes
            // the reader.
            let ended = std::future::poll_fn(|cx| {
                if session.is_closed() || control.poll_writing_done(cx).is_ready() {
                    return Poll::Ready(true);
                }
                reader.poll_ready(cx).map(|()| false)
            })
            .await;
            if ended {
                // Closed already (the writer ends with the session, or closes
                // it on a write error); this makes sure.
                edge.close_session(session, CloseReason::ServerShutdown);
                return;
            }
            // Built on the heap, now that there is something to read: a value
            // held across an await here would be stored in every idle
            // connection's future (the handling of a packet takes kilobytes: a
            // CONNECT verifies tokens and calls hooks).
            let work: PacketWork<'_> = Box::pin(read_message(edge, session, reader, control));
            if let Err(reason) = work.await {
                edge.close_session(session, reason);
                return;
            }
        }
    }
}

/// Reads one message (which has begun to arrive) and handles it.
async fn read_message<R: ReadIo>(
    edge: &Edge,
    session: &Arc<Session>,
    reader: &mut MessageReader<R>,
    control: &Control,
) -> Result<(), CloseReason> {
    // Reads are not cancel-safe, but cancellation only comes with the end of
    // the session, when the rest of the stream no longer matters.
    let mut send = control_sender(control);
    let message = tokio::select! {
        _ = session.ended() => return Err(CloseReason::ServerShutdown),
        message = reader.next(&mut send) => message,
    };
    if let Ok(Message::Text(p) | Message::Binary(p)) = &message {
        metrics::counter!(crate::metrics::BYTES_IN).increment(p.len() as u64);
    }
    match message {
        Err(e) => {
            if e == ReadError::Io {
                tracing::debug!(sid = %session.sid, "websocket read failed");
            }
            Err(fail(control, e).await)
        }
        Ok(Message::Text(text)) => match engineio::decode_text(text) {
            Ok(packet) => edge.on_engine_packet(session, packet).await,
            Err(_) => Err(CloseReason::ProtocolError),
        },
        Ok(Message::Binary(data)) => {
            edge.on_engine_packet(session, engineio::Packet::Binary(data))
                .await
        }
        // The close frame is already echoed.
        Ok(Message::Close) => Err(CloseReason::TransportClose),
    }
}

/// Serves one connection of the echo endpoint (conformance testing only): each
/// message goes back as it came, through the same reader, limits, bounded queue
/// and writer as a session's messages.
pub(crate) async fn echo(edge: Edge, fut: UpgradeFut) {
    let ws = match fut.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    let cfg = edge.config();
    let (r, w) = tokio::io::split(ws.into_inner());
    let mut reader = MessageReader::new(r, cfg.max_payload, cfg.ws_pings_per_sec);
    let control = Control::default();
    let outbox = Outbox::new(TransportKind::WebSocket, cfg.outbound_queue_bytes);
    let why = std::sync::Mutex::new(CloseReason::TransportClose);
    let close_reason = || *why.lock().unwrap_or_else(PoisonError::into_inner);
    let done = CancellationToken::new();
    let writing = writer(w, &outbox, &control, close_reason, &done);
    let reading = async {
        let reason = echo_read(&edge, &mut reader, &control, &outbox).await;
        *why.lock().unwrap_or_else(PoisonError::into_inner) = reason;
        outbox.close();
        control.finish_reading();
        done.cancel();
    };
    let ((), _) = tokio::join!(reading, writing);
    linger(reader.into_inner()).await;
}

/// The echo endpoint's reading half: each message into the queue, until the
/// connection ends; returns why it ended.
async fn echo_read<R: ReadIo>(
    edge: &Edge,
    reader: &mut MessageReader<R>,
    control: &Control,
    outbox: &Outbox,
) -> CloseReason {
    let mut send = control_sender(control);
    let reason = loop {
        let message = tokio::select! {
            _ = edge.shutdown_token().cancelled() => break CloseReason::ServerShutdown,
            message = reader.next(&mut send) => message,
        };
        let frame = match message {
            Ok(Message::Text(text)) => Frame::Text(text),
            Ok(Message::Binary(data)) => Frame::Binary(data),
            Ok(Message::Close) => break CloseReason::TransportClose,
            Err(e) => break fail(control, e).await,
        };
        match outbox.push(&[frame]) {
            Ok(()) => {}
            Err(PushError::Full) => break CloseReason::SlowConsumer,
            Err(PushError::Closed) => break CloseReason::TransportError,
        }
    };
    reason
}

/// A session's writing half: a write error closes the session.
fn write_session<'a, W: WriteIo>(
    edge: &'a Edge,
    session: &'a Arc<Session>,
    w: W,
    control: &'a Control,
) -> impl Future<Output = ()> + Send + 'a {
    let close_reason = || session.close_reason();
    writer(w, &session.outbox, control, close_reason, &**session).map(move |r| {
        if let Err(reason) = r {
            edge.close_session(session, reason);
        }
    })
}

/// The end of the connection a writer writes for: a session's, or an echo
/// connection's.
trait ConnectionEnd: Sync {
    fn ended(&self) -> impl Future<Output = ()> + Send + '_;
}

impl ConnectionEnd for Session {
    fn ended(&self) -> impl Future<Output = ()> + Send + '_ {
        Session::ended(self)
    }
}

impl ConnectionEnd for CancellationToken {
    fn ended(&self) -> impl Future<Output = ()> + Send + '_ {
        self.cancelled()
    }
}

/// Resolves [`CLOSE_FLUSH_TIMEOUT`] after the connection's end: a client that
/// reads no more (a slow consumer) must not keep its connection, and the
/// writer blocked on it, forever.
async fn flush_deadline(closed: &impl ConnectionEnd) {
    closed.ended().await;
    tokio::time::sleep(CLOSE_FLUSH_TIMEOUT).await;
}

/// Writes control replies, and once the session is on this socket (at once,
/// or after an upgrade's switch), drains its queue; on close, flushes what is
/// queued and sends a close frame. A close frame among the control replies
/// (the echo of the client's, or one that fails the connection) is the last
/// thing written: once the session is on this socket, it waits for the queue to
/// close (the reader closes it) and goes after what was queued before it;
/// before that, it goes at once. Writes are cut short [`CLOSE_FLUSH_TIMEOUT`]
/// after `closed` ends.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would copy its arguments into locals: a larger future in every connection"
)]
fn writer<'a, W: WriteIo>(
    mut w: W,
    outbox: &'a Outbox,
    control: &'a Control,
    close_reason: impl Fn() -> CloseReason + Send + 'a,
    closed: &'a impl ConnectionEnd,
) -> impl Future<Output = Result<(), CloseReason>> + Send + 'a {
    async move {
        let mut pending_close: Option<Bytes> = None;
        let result = loop {
            // While there is nothing to write, this poll is all the writer holds.
            let next = std::future::poll_fn(|cx| {
                if pending_close.is_none() {
                    match control.poll_next(cx) {
                        Poll::Ready(Some(bytes)) => {
                            return Poll::Ready(Some(WriterJob::Control(bytes)))
                        }
                        // The upgrade was abandoned before the switch.
                        Poll::Ready(None) if outbox.transport() != TransportKind::WebSocket => {
                            return Poll::Ready(None)
                        }
                        _ => {}
                    }
                }
                outbox
                    .poll_take(cx, WRITE_BATCH_BYTES)
                    .map(|batch| Some(WriterJob::Batch(batch)))
            });
            // The job and its close frame move into the write: bound only in
            // this match, they take no room of their own across its await.
            let write = match next.await {
                None => break Ok(()),
                Some(WriterJob::Control(bytes))
                    if is_close(&bytes) && outbox.transport() == TransportKind::WebSocket =>
                {
                    // After what was queued before it.
                    pending_close = Some(bytes);
                    continue;
                }
                Some(job) => {
                    let close = match &job {
                        WriterJob::Batch(batch) if batch.closed => {
                            Some(pending_close.take().unwrap_or_else(|| {
                                encode_frame(OpCode::Close, &close_reason().ws_close_payload())
                            }))
                        }
                        _ => None,
                    };
                    write_boxed(&mut w, outbox, job, close, closed)
                }
            };
            match write.await {
                Ok(false) => {}
                Ok(true) => break Ok(()),
                Err(reason) => break Err(reason),
            }
        };
        control.finish_writing();
        result
    }
}

/// A write, on the heap with what it writes: the write's futures would
/// otherwise take room in every idle connection's future. It is cut short
/// [`CLOSE_FLUSH_TIMEOUT`] after `closed` ends (then it says the
/// writer is done).
fn write_boxed<'a, W: WriteIo>(
    w: &'a mut W,
    outbox: &'a Outbox,
    job: WriterJob,
    close: Option<Bytes>,
    closed: &'a impl ConnectionEnd,
) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, CloseReason>> + Send + 'a>> {
    Box::pin(async move {
        tokio::select! {
            done = write_job(w, outbox, &job, close.as_ref()) => done,
            _ = flush_deadline(closed) => {
                tracing::debug!("queued frames not flushed in time, dropping the connection");
                Ok(true)
            }
        }
    })
}

/// What the writer does next: a control reply, or a batch from the queue.
enum WriterJob {
    Control(Bytes),
    Batch(crate::outbox::Batch),
}

fn is_close(b: &Bytes) -> bool {
    b.first() == Some(&(0x80 | OpCode::Close as u8))
}

/// Writes a job; returns `true` once the writer is done (a close frame is
/// written and the stream shut).
async fn write_job<W: WriteIo>(
    w: &mut W,
    outbox: &Outbox,
    job: &WriterJob,
    close: Option<&Bytes>,
) -> Result<bool, CloseReason> {
    match job {
        WriterJob::Control(bytes) => write_control(w, outbox, bytes).await,
        WriterJob::Batch(batch) => write_batch(w, batch, close).await,
    }
}

/// Writes a control reply while pushes queue; after a close frame, shuts the
/// stream and returns `true` (the writer is done).
async fn write_control<W: WriteIo>(
    w: &mut W,
    outbox: &Outbox,
    bytes: &Bytes,
) -> Result<bool, CloseReason> {
    let io_err = |_| CloseReason::TransportError;
    // Pushes queue while this is written, and after a close frame for good.
    outbox.set_busy(true);
    w.write_all(bytes).await.map_err(io_err)?;
    w.flush().await.map_err(io_err)?;
    if is_close(bytes) {
        let _ = w.shutdown().await;
        return Ok(true);
    }
    outbox.set_busy(false);
    Ok(false)
}

/// Writes a batch from the queue; when it is the queue's last (`close`),
/// then the close frame, shuts the stream and returns `true`.
async fn write_batch<W: WriteIo>(
    w: &mut W,
    batch: &crate::outbox::Batch,
    close: Option<&Bytes>,
) -> Result<bool, CloseReason> {
    write_frames(w, &batch.frames, batch.start())
        .await
        .map_err(|_| CloseReason::TransportError)?;
    let written: usize = batch.frames.iter().map(Frame::len).sum();
    metrics::counter!(crate::metrics::BYTES_OUT).increment(written as u64);
    let Some(close) = close else { return Ok(false) };
    let _ = w.write_all(close).await;
    let _ = w.shutdown().await;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_next(control: &Control) -> Poll<Option<Bytes>> {
        let waker = futures_util::task::noop_waker();
        control.poll_next(&mut Context::from_waker(&waker))
    }

    #[tokio::test]
    async fn control_replies_reach_the_writer_in_order_and_the_reader_waits_for_room() {
        let control = Control::default();
        assert!(poll_next(&control).is_pending());
        for i in 0..CONTROL_REPLIES {
            control
                .push(Bytes::from(vec![i as u8]))
                .await
                .expect("room");
        }
        // Full: the next push waits until the writer takes one.
        let mut push = Box::pin(control.push(Bytes::from_static(b"last")));
        assert!(futures_util::poll!(push.as_mut()).is_pending());
        assert_eq!(
            poll_next(&control),
            Poll::Ready(Some(Bytes::from(vec![0u8])))
        );
        assert!(matches!(
            futures_util::poll!(push.as_mut()),
            Poll::Ready(Ok(()))
        ));
        for i in 1..CONTROL_REPLIES {
            assert_eq!(
                poll_next(&control),
                Poll::Ready(Some(Bytes::from(vec![i as u8])))
            );
        }
        assert_eq!(
            poll_next(&control),
            Poll::Ready(Some(Bytes::from_static(b"last")))
        );
        // The reader is done: the writer gets what is queued, then the end.
        control
            .push(Bytes::from_static(b"pong"))
            .await
            .expect("room");
        control.finish_reading();
        assert_eq!(
            poll_next(&control),
            Poll::Ready(Some(Bytes::from_static(b"pong")))
        );
        assert_eq!(poll_next(&control), Poll::Ready(None));
    }

    /// Runs `wait` on its own task, ends the writer, and says what `wait`
    /// returned once it was woken.
    async fn woken_by_the_writers_end<T: Send + 'static>(
        wait: impl FnOnce(Arc<Control>) -> std::pin::Pin<Box<dyn Future<Output = T> + Send>>,
        full: bool,
    ) -> T {
        let control = Arc::new(Control::default());
        for _ in 0..if full { CONTROL_REPLIES } else { 0 } {
            control
                .push(Bytes::from_static(b"pong"))
                .await
                .expect("room");
        }
        let waiting = tokio::spawn(wait(control.clone()));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        control.finish_writing();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task")
    }

    #[tokio::test]
    async fn the_writers_end_fails_pushes_and_wakes_a_waiting_reader() {
        // The reader waits for room (one frame of its own at a time), or
        // for the client's next bytes and the writer's end.
        let failed = woken_by_the_writers_end(
            |c| Box::pin(async move { c.push(Bytes::from_static(b"x")).await.is_err() }),
            true,
        )
        .await;
        assert!(failed, "a push waiting for room fails");
        woken_by_the_writers_end(
            |c| Box::pin(async move { std::future::poll_fn(|cx| c.poll_writing_done(cx)).await }),
            false,
        )
        .await;
        let control = Control::default();
        control.finish_writing();
        assert!(control.push(Bytes::from_static(b"y")).await.is_err());
    }
}
