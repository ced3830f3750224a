//! A connection's outbound queue, bounded in bytes.
//!
//! Producers (fan-out, acks, heartbeats) push whole packets; one consumer drains
//! them: the WebSocket writer, or the pending long-polling GET. Which of the two
//! may drain is part of the queue's state, so switching a session from polling to
//! WebSocket happens under the same lock that draining takes: a GET that races
//! the switch finds the queue no longer its own and takes nothing.
//!
//! A transport that can be written to directly (a WebSocket over plain TCP)
//! gives the queue its [`DirectSink`]. A push that finds the queue empty and
//! the writer idle then writes the packet itself, with one non-blocking write
//! under the queue's lock: the connection's task
//! is not woken for it, which is most of what a delivery costs in user space
//! when events are far enough apart that nothing would be coalesced. What the
//! socket does not take at once (a full send buffer) is queued, with how much
//! of it was written, and the writer goes on from there. The writer marks
//! itself busy while it holds frames it has taken but not wholly written, or
//! writes a control reply: pushes queue behind it meanwhile, so the stream's
//! bytes stay in order.
//!
//! The lock is per connection; no lock here is shared between connections.
//! The queue knows no transport's encoding or stream: only which kind drains
//! it ([`TransportKind`]) and, through [`DirectSink`], how to write at once.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use roomcast_wire::engineio::Frame;
use tokio::sync::Notify;

use crate::sink::{DirectWrite, Progress, TransportKind};
use crate::transport::DirectSink;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is closed; the connection is going away.
    Closed,
    /// The bytes would exceed the bound: the consumer is too slow.
    Full,
}

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    limit: usize,
}

struct State {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// Bytes of the first queued frame already written (by a push that wrote
    /// directly and was cut short).
    written: usize,
    /// The transport that drains the queue.
    owner: TransportKind,
    closed: bool,
    /// The writer holds frames it has not wholly written, or is writing a
    /// control reply.
    busy: bool,
    /// The transport's stream, for pushes to write to directly while the
    /// writer is idle (a WebSocket over plain TCP).
    direct: Option<DirectSink>,
    /// The WebSocket writer waiting in [`Outbox::poll_take`].
    writer: Option<Waker>,
}

/// What a consumer took from the queue.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: Vec<Frame>,
    /// Bytes of the first frame already written.
    pub written: usize,
    /// The queue is closed and these are its last frames.
    pub closed: bool,
}

impl Batch {
    /// Where writing the batch starts.
    pub fn start(&self) -> Progress {
        Progress {
            first: 0,
            done: self.written,
        }
    }
}

/// Whether a push may write to an idle socket itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Write at once when the writer is idle (what waits behind nothing).
    Direct,
    /// Always through the queue and the connection's writer: the fan-out to
    /// a large room, where the writers of many connections write in parallel
    /// and coalesce what queues up while they write.
    Queue,
}

impl Outbox {
    pub fn new(owner: TransportKind, limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                written: 0,
                owner,
                closed: false,
                busy: false,
                direct: None,
                writer: None,
            }),
            notify: Notify::new(),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the frames of one packet, all or none; writes them at once
    /// instead when the writer is idle on a shared stream.
    pub fn push(&self, frames: &[Frame]) -> Result<(), PushError> {
        self.push_by(frames, Path::Direct)
    }

    /// [`Outbox::push`], or only queueing with [`Path::Queue`].
    pub fn push_by(&self, frames: &[Frame], path: Path) -> Result<(), PushError> {
        let woken = {
            let mut s = self.lock();
            if s.closed {
                return Err(PushError::Closed);
            }
            let mut at = Progress::default();
            let idle = s.frames.is_empty() && !s.busy && s.owner == TransportKind::WebSocket;
            if idle && path == Path::Direct {
                if let Some(direct) = &s.direct {
                    match direct.try_write(frames) {
                        Ok(done) => at = done,
                        Err(e) => {
                            // The writer meets the same error and closes the
                            // session; until then everything is queued for it.
                            tracing::debug!(error = %e, "direct write failed");
                            s.direct = None;
                        }
                    }
                    if at.finished(frames) {
                        return Ok(());
                    }
                }
            }
            let rest = &frames[at.first..];
            let size: usize = rest.iter().map(Frame::len).sum();
            if s.bytes + size > self.limit && !s.frames.is_empty() {
                return Err(PushError::Full);
            }
            let was_empty = s.frames.is_empty();
            if was_empty {
                s.written = at.done;
            }
            s.bytes += size;
            s.frames.extend(rest.iter().cloned());
            was_empty.then(|| s.writer.take())
        };
        // Only the push that makes the queue non-empty wakes the consumer: a
        // consumer looks at the queue before it waits, and its wait counts any
        // notification since it began (`Notified`, or the writer's waker
        // taken under the lock), so later pushes would only take the waiters'
        // lock again for nothing.
        if let Some(writer) = woken {
            self.wake(writer);
        }
        Ok(())
    }

    /// Queues a packet only if the queue is empty enough that it costs nobody
    /// anything (volatile emits).
    pub fn push_volatile(&self, frames: &[Frame], path: Path) -> bool {
        {
            let s = self.lock();
            if s.bytes > self.limit / 2 {
                return false;
            }
        }
        self.push_by(frames, path).is_ok()
    }

    /// Takes every queued frame if `transport` is the queue's consumer, waiting
    /// until there is one. Returns `None` when the queue belongs to another.
    /// (The long-polling GET's wait; the WebSocket writer's is
    /// [`Outbox::poll_take`].)
    pub async fn take(&self, transport: TransportKind, max_bytes: usize) -> Option<Batch> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if s.owner != transport {
                    return None;
                }
                if let Some(batch) = s.take(max_bytes) {
                    return Some(batch);
                }
            }
            notified.await;
        }
    }

    /// The WebSocket writer's wait: every queued frame once the queue is the
    /// WebSocket's (after an upgrade's switch) and there is one, or the last
    /// ones of a closed queue. The writer calls it only once it has written
    /// all it took before: it is busy from the batch this returns until its
    /// next call. Waiting keeps only the writer's waker, in the queue.
    pub fn poll_take(&self, cx: &mut Context<'_>, max_bytes: usize) -> Poll<Batch> {
        let mut s = self.lock();
        if s.owner == TransportKind::WebSocket {
            if let Some(batch) = s.take(max_bytes) {
                return Poll::Ready(batch);
            }
        }
        register(&mut s.writer, cx);
        Poll::Pending
    }

    /// The writer is about to write (`true`) or is done writing (`false`)
    /// something of its own, a control reply: pushes queue meanwhile.
    pub fn set_busy(&self, busy: bool) {
        self.lock().busy = busy;
    }

    /// Gives the queue to the WebSocket writer (the end of an upgrade), with
    /// the sink pushes may write to directly, if it has one.
    pub fn switch_to_websocket(&self, direct: Option<DirectSink>) {
        let writer = {
            let mut s = self.lock();
            s.owner = TransportKind::WebSocket;
            if !s.closed {
                s.direct = direct;
            }
            s.writer.take()
        };
        self.wake(writer);
    }

    /// The transport that drains the queue now.
    pub fn transport(&self) -> TransportKind {
        self.lock().owner
    }

    /// Closes the queue: frames already in it are still taken, new ones refused.
    pub fn close(&self) {
        let writer = {
            let mut s = self.lock();
            s.closed = true;
            s.direct = None;
            s.writer.take()
        };
        self.wake(writer);
    }

    /// Wakes the consumer: a waiting GET, or the WebSocket writer (its waker,
    /// taken from the state under the lock that changed it).
    fn wake(&self, writer: Option<Waker>) {
        if let Some(w) = writer {
            w.wake();
        }
        self.notify.notify_waiters();
    }

    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl State {
    /// Every queued frame (at most about `max_bytes` of them), or the last
    /// ones of a closed queue; `None` if there is nothing to take. Clears the
    /// busy flag, and sets it again when frames are taken.
    fn take(&mut self, max_bytes: usize) -> Option<Batch> {
        self.busy = false;
        if self.frames.is_empty() && !self.closed {
            return None;
        }
        let written = std::mem::take(&mut self.written);
        if self.bytes <= max_bytes {
            // Everything: the queue's buffer itself becomes the batch (no
            // copy), and an idle connection keeps no buffer.
            self.bytes = 0;
            self.busy = !self.frames.is_empty();
            return Some(Batch {
                frames: Vec::from(std::mem::take(&mut self.frames)),
                written,
                closed: self.closed,
            });
        }
        let mut batch = Batch {
            written,
            ..Batch::default()
        };
        let mut taken = 0;
        while let Some(f) = self.frames.front() {
            if taken > 0 && taken + f.len() > max_bytes {
                break;
            }
            taken += f.len();
            if let Some(f) = self.frames.pop_front() {
                batch.frames.push(f);
            }
        }
        self.bytes -= taken;
        self.busy = true;
        batch.closed = self.closed && self.frames.is_empty();
        Some(batch)
    }
}

/// Keeps `cx`'s waker in `slot`, reusing what is there when it is the same
/// task's.
pub(crate) fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) => w.clone_from(cx.waker()),
        none => *none = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Progress;
    use bytes::Bytes;
    use std::sync::Arc;
    use tokio::net::TcpStream;

    fn direct(server: &Arc<TcpStream>) -> DirectSink {
        DirectSink::WebSocket(crate::wsframe::TcpDirect(server.clone()))
    }

    fn frame(s: &'static str) -> Frame {
        Frame::Text(Bytes::from_static(s.as_bytes()))
    }

    #[tokio::test]
    async fn drains_in_order_for_its_transport_only() {
        let q = Outbox::new(TransportKind::Polling, 1024);
        q.push(&[frame("41"), frame("42")]).expect("push");
        assert!(q.take(TransportKind::WebSocket, 1024).await.is_none());
        let batch = q
            .take(TransportKind::Polling, 1024)
            .await
            .expect("polling owns it");
        assert_eq!(batch.frames, vec![frame("41"), frame("42")]);
        q.push(&[frame("43")]).expect("push");
        q.switch_to_websocket(None);
        assert!(
            q.take(TransportKind::Polling, 1024).await.is_none(),
            "a racing GET takes nothing"
        );
        let batch = q
            .take(TransportKind::WebSocket, 1024)
            .await
            .expect("ws owns it");
        assert_eq!(batch.frames, vec![frame("43")]);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_waiting_consumer_gets_every_push() {
        let q = std::sync::Arc::new(Outbox::new(TransportKind::WebSocket, 1024));
        let consumer = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 4 {
                    got.extend(
                        q.take(TransportKind::WebSocket, 1024)
                            .await
                            .expect("ws")
                            .frames,
                    );
                }
                got
            })
        };
        // The consumer waits on the empty queue; pushes come alone and in a row.
        tokio::task::yield_now().await;
        q.push(&[frame("41")]).expect("push");
        q.push(&[frame("42")]).expect("push");
        tokio::task::yield_now().await;
        q.push(&[frame("43")]).expect("push");
        tokio::task::yield_now().await;
        q.push(&[frame("44")]).expect("push");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), consumer)
            .await
            .expect("the consumer was woken")
            .expect("consumer");
        assert_eq!(
            got,
            vec![frame("41"), frame("42"), frame("43"), frame("44")]
        );
    }

    /// The WebSocket writer's wait, as `ws::writer` polls it.
    async fn writer_take(q: &Outbox, max: usize) -> Batch {
        std::future::poll_fn(|cx| q.poll_take(cx, max)).await
    }

    #[tokio::test]
    async fn the_writer_waits_for_the_switch_and_is_woken_by_pushes_and_the_close() {
        let q = Arc::new(Outbox::new(TransportKind::Polling, 1024));
        q.push(&[frame("40")]).expect("push");
        let writer = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = writer_take(&q, 1024).await;
                    got.extend(batch.frames);
                    if batch.closed {
                        return got;
                    }
                }
            })
        };
        // Polling owns the queue: the writer takes nothing, a GET does.
        tokio::task::yield_now().await;
        let batch = q
            .take(TransportKind::Polling, 1024)
            .await
            .expect("polling owns it");
        assert_eq!(batch.frames, vec![frame("40")]);
        q.push(&[frame("41")]).expect("push");
        tokio::task::yield_now().await;
        assert_eq!(q.queued_bytes(), 2, "the writer waits for the switch");
        q.switch_to_websocket(None);
        tokio::task::yield_now().await;
        q.push(&[frame("42")]).expect("push");
        tokio::task::yield_now().await;
        q.push(&[frame("43")]).expect("push");
        q.close();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("the writer was woken")
            .expect("writer");
        assert_eq!(got, vec![frame("41"), frame("42"), frame("43")]);
    }

    #[tokio::test]
    async fn bounded_in_bytes() {
        let q = Outbox::new(TransportKind::WebSocket, 4);
        q.push(&[frame("42ab")]).expect("fits");
        assert_eq!(q.push(&[frame("4")]), Err(PushError::Full));
        assert!(!q.push_volatile(&[frame("4")], Path::Direct));
        q.take(TransportKind::WebSocket, 1024).await.expect("drain");
        // A single packet larger than the bound is still accepted into an empty queue.
        q.push(&[frame("42abcdef")])
            .expect("oversized packet into empty queue");
    }

    #[tokio::test]
    async fn close_hands_out_remaining_frames_then_reports_closed() {
        let q = Outbox::new(TransportKind::WebSocket, 1024);
        q.push(&[frame("41")]).expect("push");
        q.close();
        assert_eq!(q.push(&[frame("42")]), Err(PushError::Closed));
        let batch = q.take(TransportKind::WebSocket, 1024).await.expect("ws");
        assert_eq!((batch.frames.len(), batch.closed), (1, true));
        let batch = q.take(TransportKind::WebSocket, 1024).await.expect("ws");
        assert!(batch.frames.is_empty() && batch.closed);
    }

    #[tokio::test]
    async fn respects_max_bytes_per_batch() {
        let q = Outbox::new(TransportKind::Polling, 1024);
        q.push(&[frame("4aaaa"), frame("4bbbb"), frame("4cccc")])
            .expect("push");
        let batch = q.take(TransportKind::Polling, 10).await.expect("polling");
        assert_eq!(batch.frames.len(), 2);
        let batch = q.take(TransportKind::Polling, 1).await.expect("polling");
        assert_eq!(batch.frames.len(), 1, "always at least one frame");
    }

    /// A connected pair on loopback: the server's end shared, the client's.
    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server, _) = accepted.expect("accept");
        (Arc::new(server), client.expect("connect"))
    }

    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; n];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_exact(&mut buf),
        )
        .await
        .expect("the bytes arrive")
        .expect("read");
        buf
    }

    #[tokio::test]
    async fn a_push_to_an_idle_writer_is_written_at_once() {
        let (server, mut client) = pair().await;
        let q = Outbox::new(TransportKind::WebSocket, 1 << 20);
        q.switch_to_websocket(Some(direct(&server)));
        let frames = [
            frame("42[\"a\"]"),
            Frame::Binary(Bytes::from(vec![9u8; 300])),
        ];
        q.push(&frames).expect("push");
        assert_eq!(q.queued_bytes(), 0, "nothing queued: the push wrote it");
        assert_eq!(
            read_exactly(&mut client, crate::wsframe::encode_frames(&frames).len()).await,
            crate::wsframe::encode_frames(&frames)
        );
    }

    #[tokio::test]
    async fn pushes_queue_behind_a_busy_writer_and_in_polling_mode() {
        let (server, _client) = pair().await;
        let q = Outbox::new(TransportKind::Polling, 1 << 20);
        q.push(&[frame("40")]).expect("push");
        q.switch_to_websocket(Some(direct(&server)));
        // Queued frames go first: a push behind them queues too.
        q.push(&[frame("41")]).expect("push");
        assert_eq!(q.queued_bytes(), 4);
        let batch = writer_take(&q, 1024).await;
        assert_eq!(batch.frames, vec![frame("40"), frame("41")]);
        // The writer holds that batch: pushes queue until it comes back.
        q.push(&[frame("42")]).expect("push");
        assert_eq!(q.queued_bytes(), 2);
        let batch = writer_take(&q, 1024).await;
        assert_eq!(batch.frames, vec![frame("42")]);
        // A control reply being written: pushes queue.
        q.set_busy(true);
        q.push(&[frame("43")]).expect("push");
        assert_eq!(q.queued_bytes(), 2);
    }

    #[tokio::test]
    async fn a_write_the_socket_cuts_short_is_finished_by_the_writer_in_order() {
        let (server, mut client) = pair().await;
        // A small send buffer, and a client that reads nothing for now.
        socket2::SockRef::from(&*server)
            .set_send_buffer_size(4096)
            .expect("sndbuf");
        let q = Outbox::new(TransportKind::WebSocket, 64 << 20);
        q.switch_to_websocket(Some(direct(&server)));
        let mut sent = Vec::new();
        let mut i = 0u8;
        while q.queued_bytes() == 0 {
            let frames = [
                frame("42[\"big\"]"),
                Frame::Binary(Bytes::from(vec![i; 20_000])),
            ];
            q.push(&frames).expect("push");
            sent.extend(frames);
            i = i.wrapping_add(1);
            assert!(sent.len() < 20_000, "the socket never filled");
        }
        // More behind the cut: queued after it.
        for f in [frame("42[\"after\"]"), frame("3")] {
            q.push(std::slice::from_ref(&f)).expect("push");
            sent.push(f);
        }
        let expected = crate::wsframe::encode_frames(&sent);
        let reading = tokio::spawn(async move { read_exactly(&mut client, expected.len()).await });
        let mut w = crate::tcp::SharedTcp(server);
        let batch = q
            .take(TransportKind::WebSocket, usize::MAX)
            .await
            .expect("ws");
        crate::wsframe::write_frames(&mut w, &batch.frames, batch.start())
            .await
            .expect("write");
        assert_eq!(
            reading.await.expect("reader"),
            crate::wsframe::encode_frames(&sent)
        );
    }

    /// Reads server frames (unmasked, unfragmented) until `data` text frames
    /// other than `3` have come, pausing now and then so that the server's
    /// writes are often cut short; returns them and how many `3`s came.
    async fn read_frames(client: &mut TcpStream, data: usize) -> (Vec<Vec<u8>>, usize) {
        use tokio::io::AsyncReadExt;
        let (mut frames, mut controls) = (Vec::new(), 0);
        while frames.len() < data {
            if frames.len() % 64 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let mut h = [0u8; 2];
            client.read_exact(&mut h).await.expect("header");
            assert_eq!(h[0], 0x81, "a whole text frame starts here");
            let len = match h[1] {
                126 => usize::from(client.read_u16().await.expect("len16")),
                127 => usize::try_from(client.read_u64().await.expect("len64")).expect("len"),
                n => usize::from(n),
            };
            let mut payload = vec![0u8; len];
            client.read_exact(&mut payload).await.expect("payload");
            if payload == b"3" {
                controls += 1;
            } else {
                frames.push(payload);
            }
        }
        (frames, controls)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pushes_and_the_writer_keep_frames_whole_and_in_order() {
        const PRODUCERS: usize = 4;
        const EACH: usize = 1500;
        let pad_len = |p: usize, i: usize| (i * 37 + p * 11) % 2000;
        let (server, mut client) = pair().await;
        // A small send buffer and a reader that pauses: direct writes and the
        // writer's are often cut short.
        socket2::SockRef::from(&*server)
            .set_send_buffer_size(4096)
            .expect("sndbuf");
        let q = Arc::new(Outbox::new(TransportKind::WebSocket, 256 << 20));
        q.switch_to_websocket(Some(direct(&server)));
        let reader = tokio::spawn(async move { read_frames(&mut client, PRODUCERS * EACH).await });
        // The connection's writer: batches from where they start, and now and
        // then a control reply of its own, as `ws::writer` does.
        let writer = tokio::spawn({
            let q = q.clone();
            async move {
                let mut w = crate::tcp::SharedTcp(server);
                let mut controls = 0;
                loop {
                    let batch = writer_take(&q, 64 * 1024).await;
                    crate::wsframe::write_frames(&mut w, &batch.frames, batch.start())
                        .await
                        .expect("write");
                    if batch.closed {
                        return controls;
                    }
                    if batch.frames.len() % 3 == 0 {
                        q.set_busy(true);
                        let pong = [frame("3")];
                        crate::wsframe::write_frames(&mut w, &pong, Progress::default())
                            .await
                            .expect("control");
                        q.set_busy(false);
                        controls += 1;
                    }
                }
            }
        });
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let q = q.clone();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        // Sizes across both short header forms.
                        let text = format!("{p}:{i}:{}", "x".repeat(pad_len(p, i)));
                        q.push(&[Frame::Text(Bytes::from(text))]).expect("push");
                        if i % 50 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.await.expect("producer");
        }
        q.close();
        let wrote_controls = tokio::time::timeout(std::time::Duration::from_secs(30), writer)
            .await
            .expect("the writer finished")
            .expect("writer");
        let (frames, controls) = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
            .await
            .expect("everything arrived")
            .expect("reader");
        assert_eq!(
            controls, wrote_controls,
            "every control reply arrived whole"
        );
        let mut next = [0usize; PRODUCERS];
        for f in &frames {
            let text = std::str::from_utf8(f).expect("utf-8");
            let mut parts = text.splitn(3, ':');
            let p: usize = parts.next().and_then(|v| v.parse().ok()).expect("producer");
            let i: usize = parts.next().and_then(|v| v.parse().ok()).expect("index");
            let pad = parts.next().expect("pad");
            assert_eq!(i, next[p], "producer {p}'s frames in order");
            assert_eq!(pad.len(), pad_len(p, i), "frame {p}:{i} whole");
            next[p] += 1;
        }
        assert_eq!(next, [EACH; PRODUCERS]);
    }
}
