//! The WebSocket transport: `fastwebsockets` reads and unmasks client frames;
//! writing is ours.
//!
//! Server frames are unmasked, so a packet's bytes are the same for every
//! recipient: the writer puts a small header in front of the shared payload and
//! hands both to one vectored write, for as many queued packets as there are.
//! `fastwebsockets`' own writer would copy small frames into a per-connection
//! buffer and write each frame separately. Control replies the reader owes (pong,
//! close echo, the upgrade probe's `3probe`) reach the writer on a small channel.

use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::{OpCode, Role};
use hyper_util::rt::TokioIo;
use roomcast_wire::engineio::{self, Frame, PacketType};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::outbox::Mode;
use crate::session::{CloseReason, Handshake, Session};
use crate::wsread::{MessageReader, ReadError, SendFuture};
use crate::Edge;

/// Most bytes the writer takes from the queue for one vectored write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Most frames in one vectored write (two buffers each, well under IOV_MAX).
const WRITE_BATCH_FRAMES: usize = 256;
/// How long a closed connection's reader waits for the client's close.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a closed connection may take to flush what was queued before it.
const CLOSE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type Io = TokioIo<hyper::upgrade::Upgraded>;
type Reader = MessageReader<tokio::io::ReadHalf<Io>>;

/// Serves one WebSocket connection: a new session, or the upgrade of an
/// existing polling session.
pub(crate) async fn serve(
    edge: Edge,
    fut: UpgradeFut,
    existing: Option<Arc<Session>>,
    hs: Handshake,
) {
    let ws = match fut.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    let (r, w) = tokio::io::split(ws.into_inner());
    let (read, _) = fastwebsockets::after_handshake_split(r, tokio::io::sink(), Role::Server);
    let cfg = edge.config();
    let mut reader = MessageReader::new(read, cfg.max_payload, cfg.ws_pings_per_sec);
    let (direct_tx, direct_rx) = mpsc::channel::<Bytes>(16);
    let (switch_tx, switch_rx) = oneshot::channel::<()>();

    let session = match existing {
        None => {
            let session = edge.open_session(Mode::WebSocket, hs);
            let _ = switch_tx.send(());
            spawn_writer(&edge, w, session.clone(), direct_rx, switch_rx);
            session
        }
        Some(session) => {
            spawn_writer(&edge, w, session.clone(), direct_rx, switch_rx);
            let timeout = edge.config().upgrade_timeout;
            let probed =
                tokio::time::timeout(timeout, probe(&mut reader, &direct_tx, &session)).await;
            session.upgrading.store(false, Ordering::Release);
            match probed {
                Ok(Ok(())) => {
                    session.outbox.switch_to_websocket();
                    let _ = switch_tx.send(());
                    tracing::debug!(sid = %session.sid, "upgraded to websocket");
                    session
                }
                _ => {
                    tracing::debug!(sid = %session.sid, "websocket upgrade abandoned");
                    return;
                }
            }
        }
    };
    let span = session.span.clone();
    tracing::Instrument::instrument(read_loop(&edge, &session, &mut reader, &direct_tx), span)
        .await;
    // Closing with unread input would reset the connection, and the client
    // could lose the close frame (and its code) on its way: read on until the
    // client closes too, for a short while.
    let mut discard = |_: fastwebsockets::Frame<'_>| -> SendFuture { Box::pin(async { Ok(()) }) };
    reader.without_ping_limit();
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while reader.next(&mut discard).await.is_ok() {}
    })
    .await;
}

/// `2probe` → `3probe`, then `5`: the client moves its session to this socket.
async fn probe(
    reader: &mut Reader,
    direct: &mpsc::Sender<Bytes>,
    session: &Session,
) -> Result<(), CloseReason> {
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
    let _ = session.outbox.push([Frame::control(PacketType::Noop)]);
    expect_text(reader, direct, b"5").await
}

/// Reads the next message and checks it is exactly this text.
async fn expect_text(
    reader: &mut Reader,
    direct: &mpsc::Sender<Bytes>,
    expected: &[u8],
) -> Result<(), CloseReason> {
    let mut send = control_sender(direct);
    let (opcode, payload) = reader
        .next(&mut send)
        .await
        .map_err(|_| CloseReason::TransportError)?;
    if opcode != OpCode::Text || &payload[..] != expected {
        return Err(CloseReason::ProtocolError);
    }
    Ok(())
}

fn control_sender(
    direct: &mpsc::Sender<Bytes>,
) -> impl FnMut(fastwebsockets::Frame<'_>) -> SendFuture {
    let direct = direct.clone();
    move |frame| {
        let bytes = encode_frame(frame.opcode, &frame.payload);
        let direct = direct.clone();
        Box::pin(async move { direct.send(bytes).await.map_err(|e| Box::new(e) as _) })
    }
}

async fn read_loop(
    edge: &Edge,
    session: &Arc<Session>,
    reader: &mut Reader,
    direct: &mpsc::Sender<Bytes>,
) {
    let mut send = control_sender(direct);
    loop {
        // Reads are not cancel-safe, but cancellation only comes with the end of
        // the session, when the rest of the stream no longer matters.
        let message = tokio::select! {
            _ = session.cancel.cancelled() => return,
            message = reader.next(&mut send) => message,
        };
        if let Ok((OpCode::Text | OpCode::Binary, payload)) = &message {
            metrics::counter!(crate::metrics::BYTES_IN).increment(payload.len() as u64);
        }
        let packet = match message {
            Err(ReadError::TooBig) => Err(CloseReason::MessageTooBig),
            Err(ReadError::Closed) => Err(CloseReason::TransportClose),
            Err(ReadError::PingFlood) => {
                crate::limits::Limit::PingRate.hit();
                tracing::info!(sid = %session.sid, limit = edge.config().ws_pings_per_sec, "websocket ping flood, closing");
                Err(CloseReason::Flood)
            }
            Err(ReadError::Failed(e)) => {
                tracing::debug!(sid = %session.sid, error = %e, "websocket read failed");
                Err(CloseReason::TransportError)
            }
            Ok((opcode, payload)) => match opcode {
                OpCode::Text => engineio::decode_text(payload)
                    .map(Some)
                    .map_err(|_| CloseReason::ProtocolError),
                OpCode::Binary => Ok(Some(engineio::Packet::Binary(payload))),
                _ => Ok(None),
            },
        };
        let result = match packet {
            Ok(Some(packet)) => edge.on_engine_packet(session, packet).await,
            Ok(None) => Ok(()),
            Err(reason) => Err(reason),
        };
        if let Err(reason) = result {
            edge.close_session(session, reason);
            return;
        }
    }
}

fn spawn_writer(
    edge: &Edge,
    w: tokio::io::WriteHalf<Io>,
    session: Arc<Session>,
    direct: mpsc::Receiver<Bytes>,
    switched: oneshot::Receiver<()>,
) {
    let e = edge.clone();
    let span = session.span.clone();
    edge.spawn(tracing::Instrument::instrument(
        async move {
            let result = tokio::select! {
                r = writer(w, &session, direct, switched) => r,
                _ = flush_deadline(&session) => {
                    tracing::debug!(sid = %session.sid, "queued frames not flushed in time, dropping the connection");
                    Ok(())
                }
            };
            if let Err(reason) = result {
                e.close_session(&session, reason);
            }
        },
        span,
    ));
}

/// Resolves `CLOSE_FLUSH_TIMEOUT` after the session closed: a client that
/// reads no more (a slow consumer) must not keep its connection, and the
/// writer blocked on it, forever.
async fn flush_deadline(session: &Session) {
    session.cancel.cancelled().await;
    tokio::time::sleep(CLOSE_FLUSH_TIMEOUT).await;
}

/// Writes control replies, and once the session is on this socket, drains its
/// queue; on close, flushes what is queued and sends a close frame.
async fn writer(
    mut w: tokio::io::WriteHalf<Io>,
    session: &Session,
    mut direct: mpsc::Receiver<Bytes>,
    mut switched: oneshot::Receiver<()>,
) -> Result<(), CloseReason> {
    let io_err = |_| CloseReason::TransportError;
    let mut active = false;
    let mut direct_open = true;
    loop {
        tokio::select! {
            biased;
            d = direct.recv(), if direct_open => match d {
                Some(bytes) => {
                    w.write_all(&bytes).await.map_err(io_err)?;
                    w.flush().await.map_err(io_err)?;
                }
                None if active => direct_open = false,
                // The upgrade was abandoned before the switch.
                None => return Ok(()),
            },
            r = &mut switched, if !active => match r {
                Ok(()) => active = true,
                Err(_) => return Ok(()),
            },
            batch = session.outbox.take(Mode::WebSocket, WRITE_BATCH_BYTES), if active => {
                let Some(batch) = batch else { return Ok(()) };
                write_frames(&mut w, &batch.frames).await.map_err(io_err)?;
                let written: usize = batch.frames.iter().map(Frame::len).sum();
                metrics::counter!(crate::metrics::BYTES_OUT).increment(written as u64);
                if batch.closed {
                    let code = session.close_code().to_be_bytes();
                    let _ = w.write_all(&encode_frame(OpCode::Close, &code)).await;
                    let _ = w.shutdown().await;
                    return Ok(());
                }
            }
        }
    }
}

/// A WebSocket frame header for an unmasked, final frame.
fn header(opcode: OpCode, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode as u8;
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

fn encode_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let (h, n) = header(opcode, payload.len());
    let mut buf = Vec::with_capacity(n + payload.len());
    buf.extend_from_slice(&h[..n]);
    buf.extend_from_slice(payload);
    Bytes::from(buf)
}

async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, frames: &[Frame]) -> std::io::Result<()> {
    for chunk in frames.chunks(WRITE_BATCH_FRAMES) {
        let heads: Vec<([u8; 10], usize)> = chunk
            .iter()
            .map(|f| match f {
                Frame::Text(b) => header(OpCode::Text, b.len()),
                Frame::Binary(b) => header(OpCode::Binary, b.len()),
            })
            .collect();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(chunk.len() * 2);
        for (frame, (h, n)) in chunk.iter().zip(&heads) {
            slices.push(IoSlice::new(&h[..*n]));
            let (Frame::Text(p) | Frame::Binary(p)) = frame;
            if !p.is_empty() {
                slices.push(IoSlice::new(p));
            }
        }
        let mut bufs = &mut slices[..];
        while !bufs.is_empty() {
            let n = w.write_vectored(bufs).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut bufs, n);
        }
    }
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_rfc6455_lengths() {
        assert_eq!(
            header(OpCode::Text, 5),
            ([0x81, 5, 0, 0, 0, 0, 0, 0, 0, 0], 2)
        );
        let (h, n) = header(OpCode::Binary, 300);
        assert_eq!((&h[..n], n), (&[0x82, 126, 1, 44][..], 4));
        let (h, n) = header(OpCode::Text, 70_000);
        assert_eq!(&h[..n], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[tokio::test]
    async fn writes_many_frames_as_one_stream() {
        let frames = vec![
            Frame::Text(Bytes::from_static(b"42[\"a\"]")),
            Frame::Binary(Bytes::from(vec![7u8; 300])),
            Frame::Text(Bytes::from_static(b"2")),
        ];
        let mut out = Vec::new();
        write_frames(&mut out, &frames).await.expect("write");
        let mut expected = Vec::new();
        expected.extend_from_slice(&encode_frame(OpCode::Text, b"42[\"a\"]"));
        expected.extend_from_slice(&encode_frame(OpCode::Binary, &[7u8; 300]));
        expected.extend_from_slice(&encode_frame(OpCode::Text, b"2"));
        assert_eq!(out, expected);
    }
}
