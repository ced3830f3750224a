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
//! connection on a protocol error) reach the writer on a small channel. Once the
//! writer has written a close frame it writes nothing more and shuts the stream.
//! Reader and writer are two futures joined in the connection's one task.
//!
//! [`echo`] serves the opt-in echo endpoint for conformance suites with the same
//! reader, limits and writer.

use std::future::Future;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::upgrade::UpgradeFut;
use futures_util::future::Either;
use futures_util::{FutureExt, StreamExt};
use hyper_util::rt::TokioIo;
use roomcast_wire::engineio::{self, Frame, PacketType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Mode, Outbox, PushError};
use crate::session::{CloseReason, Handshake, Session};
use crate::ws_read::{Message, MessageReader, OpCode, ReadError};
use crate::wsframe::{encode_frame, write_frames};
use crate::Edge;

/// Most bytes the writer takes from the queue for one vectored write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Longest a finished connection keeps reading (and dropping) what the client
/// still sends, waiting for it to close its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a closed connection may take to flush what was queued before it.
const CLOSE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type Io = TokioIo<hyper::upgrade::Upgraded>;
type Reader = MessageReader<tokio::io::ReadHalf<Io>>;

/// Serves one WebSocket connection: a new session, or the upgrade of an
/// existing polling session. `tcp` is the connection's stream when it is plain
/// TCP: the session's queue writes to it directly while the writer is idle.
///
/// Built from combinators rather than as one async fn: the upgrade and the
/// connection are two states of one future that share their memory, and each
/// part is stored once (an async fn keeps its arguments beside the locals they
/// move into, and the futures it awaits beside the locals they were built in).
/// This future is most of what an idle connection costs.
pub(crate) fn serve(
    edge: Edge,
    fut: UpgradeFut,
    existing: Option<Arc<Session>>,
    hs: Handshake,
    tcp: Option<Arc<TcpStream>>,
) -> impl Future<Output = ()> + Send {
    fut.then(move |upgraded| match upgraded {
        Ok(ws) => Either::Left(connection(edge, ws.into_inner(), existing, hs, tcp)),
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            Either::Right(std::future::ready(()))
        }
    })
}

/// Reading and writing: two futures joined in the connection's one task, so
/// the writer keeps flushing after the reader is done.
fn connection(
    edge: Edge,
    io: Io,
    existing: Option<Arc<Session>>,
    hs: Handshake,
    tcp: Option<Arc<TcpStream>>,
) -> impl Future<Output = ()> + Send {
    let (r, w) = tokio::io::split(io);
    let (direct_tx, direct_rx) = direct_channel();
    // Only an upgrade waits for its probe before the writer may drain the queue.
    let (session, switch_tx, switch_rx) = match existing {
        None => {
            let session = edge.open_session(Mode::WebSocket, hs);
            session.outbox.switch_to_websocket(tcp);
            (session, None, None)
        }
        Some(session) => {
            let (tx, rx) = oneshot::channel::<()>();
            (session, Some((tx, tcp)), Some(rx))
        }
    };
    let span = session.span.clone();
    let reading = read_half(edge.clone(), session.clone(), r, direct_tx, switch_tx);
    let writing = write_session(edge, w, session, direct_rx, switch_rx);
    // Lingering comes after the writer is done, close frame and all: the
    // client's answer to our close is what it waits for.
    let served = futures_util::future::join(reading, writing).then(|(r, ())| match r {
        Some(r) => Either::Left(linger(r)),
        None => Either::Right(std::future::ready(())),
    });
    tracing::Instrument::instrument(served, span)
}

/// A session's reading half: the upgrade probe if there is one, then the read
/// loop. Returns the stream to linger on, `None` for an abandoned upgrade.
async fn read_half(
    edge: Edge,
    session: Arc<Session>,
    r: tokio::io::ReadHalf<Io>,
    direct_tx: Direct,
    switch_tx: Option<(oneshot::Sender<()>, Option<Arc<TcpStream>>)>,
) -> Option<tokio::io::ReadHalf<Io>> {
    let cfg = edge.config();
    let mut reader = MessageReader::new(r, cfg.max_payload, cfg.ws_pings_per_sec);
    if let Some((switch_tx, tcp)) = switch_tx {
        // Boxed: only upgrades probe, and its timer would take room in every
        // connection's future.
        let probed = Box::pin(tokio::time::timeout(
            cfg.upgrade_timeout,
            probe(&mut reader, &direct_tx, &session),
        ))
        .await;
        session.upgrading.store(false, Ordering::Release);
        if !matches!(probed, Ok(Ok(()))) {
            // Dropping `switch_tx` ends the writer; the polling session goes on.
            tracing::debug!(sid = %session.sid, "websocket upgrade abandoned");
            return None;
        }
        session.outbox.switch_to_websocket(tcp);
        let _ = switch_tx.send(());
        tracing::debug!(sid = %session.sid, "upgraded to websocket");
    }
    read_loop(&edge, &session, &mut reader, &direct_tx).await;
    Some(reader.into_inner())
}

/// Reads and drops what the client still sends until it closes, for at most
/// [`LINGER`]. Closing a socket with unread input resets the connection, and a
/// reset can destroy what the client has not read yet: the last messages and
/// the close frame.
async fn linger(mut r: tokio::io::ReadHalf<Io>) {
    // On the heap: an array here would be part of every connection's task.
    let mut buf = vec![0u8; 4096];
    let drain = async { while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// `2probe` → `3probe`, then `5`: the client moves its session to this socket.
async fn probe(reader: &mut Reader, direct: &Direct, session: &Session) -> Result<(), CloseReason> {
    expect_text(reader, direct, b"2probe").await?;
    if session
        .upgrading
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(CloseReason::ProtocolError);
    }
    direct
        .send(encode_frame(OpCode::Text, b"3probe"))
        .await
        .map_err(|_| CloseReason::TransportError)?;
    // Release a GET the client is waiting on, so it can finish the upgrade.
    let _ = session.outbox.push(&[Frame::control(PacketType::Noop)]);
    expect_text(reader, direct, b"5").await
}

/// Reads the next message and checks it is exactly this text.
async fn expect_text(
    reader: &mut Reader,
    direct: &Direct,
    expected: &[u8],
) -> Result<(), CloseReason> {
    let mut send = control_sender(direct);
    match reader.next(&mut send).await {
        Ok(Message::Text(text)) if text == expected => Ok(()),
        Ok(_) => Err(CloseReason::ProtocolError),
        Err(e) => Err(fail(direct, e).await),
    }
}

/// Fails the connection after a read error: queues the close frame with the
/// code the error calls for, and tells why the session ends.
async fn fail(direct: &Direct, e: ReadError) -> CloseReason {
    if let Some(code) = e.close_code() {
        let _ = direct
            .send(encode_frame(OpCode::Close, &code.to_be_bytes()))
            .await;
    }
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

/// Where the reader and the upgrade probe queue the frames they owe the
/// client (pongs, the close echo or failing close, `3probe`) for the writer.
/// futures-channel's channel allocates per message; tokio's allocates a block
/// of 32 slots per channel up front, a kilobyte for every connection.
#[derive(Clone)]
struct Direct(futures_channel::mpsc::Sender<Bytes>);

/// The writer is gone.
#[derive(Debug)]
struct Closed;

fn direct_channel() -> (Direct, futures_channel::mpsc::Receiver<Bytes>) {
    let (tx, rx) = futures_channel::mpsc::channel(16);
    (Direct(tx), rx)
}

impl Direct {
    async fn send(&self, frame: Bytes) -> Result<(), Closed> {
        let mut tx = self.0.clone();
        std::future::poll_fn(|cx| tx.poll_ready(cx))
            .await
            .map_err(|_| Closed)?;
        tx.start_send(frame).map_err(|_| Closed)
    }
}

/// What the reader's send callback returns: queuing a control reply.
type SendFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Closed>> + Send>>;

/// The reader's send callback: queues a control reply for the writer.
fn control_sender(direct: &Direct) -> impl FnMut(OpCode, &[u8]) -> SendFuture {
    let direct = direct.clone();
    move |opcode, payload| {
        let bytes = encode_frame(opcode, payload);
        let direct = direct.clone();
        Box::pin(async move { direct.send(bytes).await })
    }
}

/// The handling of one message from the client.
type PacketWork<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CloseReason>> + Send + 'a>>;

async fn read_loop(edge: &Edge, session: &Arc<Session>, reader: &mut Reader, direct: &Direct) {
    let mut send = control_sender(direct);
    loop {
        // Reads are not cancel-safe, but cancellation only comes with the end of
        // the session, when the rest of the stream no longer matters.
        let message = tokio::select! {
            _ = session.cancel.cancelled() => return,
            message = reader.next(&mut send) => message,
        };
        if let Ok(Message::Text(p) | Message::Binary(p)) = &message {
            metrics::counter!(crate::metrics::BYTES_IN).increment(p.len() as u64);
        }
        // What to do is decided before anything is awaited, and boxed: a
        // value held across an await here would be stored in every idle
        // connection's future (the handling of a packet takes kilobytes: a
        // CONNECT verifies tokens and calls hooks).
        let work: Result<PacketWork<'_>, CloseReason> = match message {
            Err(e) => {
                if e == ReadError::Io {
                    tracing::debug!(sid = %session.sid, "websocket read failed");
                }
                Ok(Box::pin(async move { Err(fail(direct, e).await) }))
            }
            Ok(Message::Text(text)) => match engineio::decode_text(text) {
                Ok(packet) => Ok(Box::pin(edge.on_engine_packet(session, packet))),
                Err(_) => Err(CloseReason::ProtocolError),
            },
            Ok(Message::Binary(data)) => Ok(Box::pin(
                edge.on_engine_packet(session, engineio::Packet::Binary(data)),
            )),
            // The close frame is already echoed.
            Ok(Message::Close) => Err(CloseReason::TransportClose),
        };
        let result = match work {
            Ok(work) => work.await,
            Err(reason) => Err(reason),
        };
        if let Err(reason) = result {
            edge.close_session(session, reason);
            return;
        }
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
    let (direct_tx, direct_rx) = direct_channel();
    let outbox = Outbox::new(Mode::WebSocket, cfg.outbound_queue_bytes);
    let code = AtomicU16::new(1000);
    let close_code = || code.load(Ordering::Acquire);
    let done = CancellationToken::new();
    let writing = async {
        tokio::select! {
            _ = writer(w, &outbox, close_code, direct_rx, None) => {}
            _ = flush_deadline(&done) => {}
        }
    };
    let reading = async {
        echo_read(&edge, &mut reader, direct_tx, &outbox, &code).await;
        done.cancel();
    };
    tokio::join!(reading, writing);
    linger(reader.into_inner()).await;
}

/// The echo endpoint's reading half: each message into the queue, until the
/// connection ends; then the close code for the writer, and the queue closed.
async fn echo_read(
    edge: &Edge,
    reader: &mut Reader,
    direct_tx: Direct,
    outbox: &Outbox,
    code: &AtomicU16,
) {
    let mut send = control_sender(&direct_tx);
    let reason = loop {
        let message = tokio::select! {
            _ = edge.inner.shutdown.cancelled() => break CloseReason::ServerShutdown,
            message = reader.next(&mut send) => message,
        };
        let frame = match message {
            Ok(Message::Text(text)) => Frame::Text(text),
            Ok(Message::Binary(data)) => Frame::Binary(data),
            Ok(Message::Close) => break CloseReason::TransportClose,
            Err(e) => break fail(&direct_tx, e).await,
        };
        match outbox.push(&[frame]) {
            Ok(()) => {}
            Err(PushError::Full) => break CloseReason::SlowConsumer,
            Err(PushError::Closed) => break CloseReason::TransportError,
        }
    };
    code.store(reason.ws_code(), Ordering::Release);
    outbox.close();
}

/// A session's writing half: the writer, cut short by [`flush_deadline`];
/// a write error closes the session.
async fn write_session(
    edge: Edge,
    w: tokio::io::WriteHalf<Io>,
    session: Arc<Session>,
    direct: futures_channel::mpsc::Receiver<Bytes>,
    switched: Option<oneshot::Receiver<()>>,
) {
    let close_code = || session.close_code();
    let result = tokio::select! {
        r = writer(w, &session.outbox, close_code, direct, switched) => r,
        _ = flush_deadline(&session.cancel) => {
            tracing::debug!(sid = %session.sid, "queued frames not flushed in time, dropping the connection");
            Ok(())
        }
    };
    if let Err(reason) = result {
        edge.close_session(&session, reason);
    }
}

/// Resolves [`CLOSE_FLUSH_TIMEOUT`] after the connection's end (`closed`, the
/// session's cancel token): a client that reads no more (a slow consumer) must
/// not keep its connection, and the writer blocked on it, forever.
async fn flush_deadline(closed: &CancellationToken) {
    closed.cancelled().await;
    // Boxed: the timer would take room in every connection's future.
    Box::pin(tokio::time::sleep(CLOSE_FLUSH_TIMEOUT)).await;
}

/// Writes control replies, and once the session is on this socket (at once,
/// or when `switched` resolves), drains its queue; on close, flushes what is
/// queued and sends a close frame. A close frame among the control replies
/// (the echo of the client's, or one that fails the connection) is the last
/// thing written: once the session is on this socket, it waits for the queue to
/// close (the reader closes it) and goes after what was queued before it;
/// before that, it goes at once.
async fn writer(
    mut w: tokio::io::WriteHalf<Io>,
    outbox: &Outbox,
    close_code: impl Fn() -> u16,
    mut direct: futures_channel::mpsc::Receiver<Bytes>,
    mut switched: Option<oneshot::Receiver<()>>,
) -> Result<(), CloseReason> {
    let mut active = switched.is_none();
    let mut direct_open = true;
    let mut pending_close: Option<Bytes> = None;
    loop {
        // What to write is decided here and written by the helpers below: a
        // value held across the writes' awaits would be stored in this
        // future beside the wait's futures, in every idle connection.
        let step = tokio::select! {
            biased;
            // First: a close frame that is already queued must go after the
            // messages queued before it, which needs knowing the switch happened.
            r = async { match switched.as_mut() { Some(s) => s.await, None => Ok(()) } }, if !active => match r {
                Ok(()) => {
                    active = true;
                    continue;
                }
                Err(_) => return Ok(()),
            },
            d = direct.next(), if direct_open && pending_close.is_none() => match d {
                Some(bytes) if active && is_close(&bytes) => {
                    pending_close = Some(bytes);
                    continue;
                }
                Some(bytes) => Step::Control(bytes),
                None if active => {
                    direct_open = false;
                    continue;
                }
                // The upgrade was abandoned before the switch.
                None => return Ok(()),
            },
            batch = outbox.take(Mode::WebSocket, WRITE_BATCH_BYTES), if active => match batch {
                Some(batch) => {
                    let close = batch.closed.then(|| {
                        pending_close
                            .take()
                            .unwrap_or_else(|| encode_frame(OpCode::Close, &close_code().to_be_bytes()))
                    });
                    Step::Batch(batch, close)
                }
                None => return Ok(()),
            },
        };
        // The helpers borrow the step: it is stored once, here.
        let done = match &step {
            Step::Control(bytes) => write_control(&mut w, outbox, bytes).await?,
            Step::Batch(batch, close) => write_batch(&mut w, batch, close.as_ref()).await?,
        };
        if done {
            return Ok(());
        }
    }
}

/// What the writer does next: a control reply, or a batch from the queue
/// with, when it is the queue's last, the close frame to follow it.
enum Step {
    Control(Bytes),
    Batch(crate::outbox::Batch, Option<Bytes>),
}

fn is_close(b: &Bytes) -> bool {
    b.first() == Some(&(0x80 | OpCode::Close as u8))
}

/// Writes a control reply while pushes queue; after a close frame, shuts the
/// stream and returns `true` (the writer is done).
async fn write_control(
    w: &mut tokio::io::WriteHalf<Io>,
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
async fn write_batch(
    w: &mut tokio::io::WriteHalf<Io>,
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
