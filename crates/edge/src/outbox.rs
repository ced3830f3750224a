//! A connection's outbound queue, bounded in bytes.
//!
//! Producers (fan-out, acks, heartbeats) push whole packets; one consumer drains
//! them: the WebSocket writer, or the pending long-polling GET. Which of the two
//! may drain is part of the queue's state, so switching a session from polling to
//! WebSocket happens under the same lock that draining takes: a GET that races
//! the switch finds the queue no longer its own and takes nothing.
//!
//! The lock is per connection; no lock here is shared between connections.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use roomcast_wire::engineio::Frame;
use tokio::sync::Notify;

/// Which transport drains the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Polling,
    WebSocket,
}

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
    mode: Mode,
    closed: bool,
}

/// What a consumer took from the queue.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: Vec<Frame>,
    /// The queue is closed and these are its last frames.
    pub closed: bool,
}

impl Outbox {
    pub fn new(mode: Mode, limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                mode,
                closed: false,
            }),
            notify: Notify::new(),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the frames of one packet, all or none.
    pub fn push(&self, frames: impl IntoIterator<Item = Frame> + Clone) -> Result<(), PushError> {
        let size: usize = frames.clone().into_iter().map(|f| f.len()).sum();
        let was_empty = {
            let mut s = self.lock();
            if s.closed {
                return Err(PushError::Closed);
            }
            if s.bytes + size > self.limit && !s.frames.is_empty() {
                return Err(PushError::Full);
            }
            s.bytes += size;
            let was_empty = s.frames.is_empty();
            s.frames.extend(frames);
            was_empty
        };
        // Only the push that makes the queue non-empty wakes the consumer: a
        // consumer looks at the queue before it waits, and its wait counts any
        // notification since it began (`Notified`), so later pushes would only
        // take the waiters' lock again for nothing.
        if was_empty {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    /// Queues a packet only if the queue is empty enough that it costs nobody
    /// anything (volatile emits).
    pub fn push_volatile(&self, frames: impl IntoIterator<Item = Frame> + Clone) -> bool {
        {
            let s = self.lock();
            if s.bytes > self.limit / 2 {
                return false;
            }
        }
        self.push(frames).is_ok()
    }

    /// Takes every queued frame if `mode` is the queue's consumer, waiting until
    /// there is one. Returns `None` when the queue belongs to the other mode.
    pub async fn take(&self, mode: Mode, max_bytes: usize) -> Option<Batch> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if s.mode != mode {
                    return None;
                }
                if s.bytes <= max_bytes {
                    // Everything: the queue's buffer itself becomes the batch
                    // (no copy), and an idle connection keeps no buffer.
                    if !s.frames.is_empty() || s.closed {
                        s.bytes = 0;
                        return Some(Batch {
                            frames: Vec::from(std::mem::take(&mut s.frames)),
                            closed: s.closed,
                        });
                    }
                } else {
                    let mut batch = Batch::default();
                    let mut taken = 0;
                    while let Some(f) = s.frames.front() {
                        if taken > 0 && taken + f.len() > max_bytes {
                            break;
                        }
                        taken += f.len();
                        if let Some(f) = s.frames.pop_front() {
                            batch.frames.push(f);
                        }
                    }
                    s.bytes -= taken;
                    batch.closed = s.closed && s.frames.is_empty();
                    return Some(batch);
                }
            }
            notified.await;
        }
    }

    /// Gives the queue to the WebSocket writer (the end of an upgrade).
    pub fn switch_to_websocket(&self) {
        self.lock().mode = Mode::WebSocket;
        self.notify.notify_waiters();
    }

    pub fn mode(&self) -> Mode {
        self.lock().mode
    }

    /// Closes the queue: frames already in it are still taken, new ones refused.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(s: &'static str) -> Frame {
        Frame::Text(Bytes::from_static(s.as_bytes()))
    }

    #[tokio::test]
    async fn drains_in_order_for_its_mode_only() {
        let q = Outbox::new(Mode::Polling, 1024);
        q.push([frame("41"), frame("42")]).expect("push");
        assert!(q.take(Mode::WebSocket, 1024).await.is_none());
        let batch = q.take(Mode::Polling, 1024).await.expect("polling owns it");
        assert_eq!(batch.frames, vec![frame("41"), frame("42")]);
        q.push([frame("43")]).expect("push");
        q.switch_to_websocket();
        assert!(
            q.take(Mode::Polling, 1024).await.is_none(),
            "a racing GET takes nothing"
        );
        let batch = q.take(Mode::WebSocket, 1024).await.expect("ws owns it");
        assert_eq!(batch.frames, vec![frame("43")]);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_waiting_consumer_gets_every_push() {
        let q = std::sync::Arc::new(Outbox::new(Mode::WebSocket, 1024));
        let consumer = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 4 {
                    got.extend(q.take(Mode::WebSocket, 1024).await.expect("ws").frames);
                }
                got
            })
        };
        // The consumer waits on the empty queue; pushes come alone and in a row.
        tokio::task::yield_now().await;
        q.push([frame("41")]).expect("push");
        q.push([frame("42")]).expect("push");
        tokio::task::yield_now().await;
        q.push([frame("43")]).expect("push");
        tokio::task::yield_now().await;
        q.push([frame("44")]).expect("push");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), consumer)
            .await
            .expect("the consumer was woken")
            .expect("consumer");
        assert_eq!(
            got,
            vec![frame("41"), frame("42"), frame("43"), frame("44")]
        );
    }

    #[tokio::test]
    async fn bounded_in_bytes() {
        let q = Outbox::new(Mode::WebSocket, 4);
        q.push([frame("42ab")]).expect("fits");
        assert_eq!(q.push([frame("4")]), Err(PushError::Full));
        assert!(!q.push_volatile([frame("4")]));
        q.take(Mode::WebSocket, 1024).await.expect("drain");
        // A single packet larger than the bound is still accepted into an empty queue.
        q.push([frame("42abcdef")])
            .expect("oversized packet into empty queue");
    }

    #[tokio::test]
    async fn close_hands_out_remaining_frames_then_reports_closed() {
        let q = Outbox::new(Mode::WebSocket, 1024);
        q.push([frame("41")]).expect("push");
        q.close();
        assert_eq!(q.push([frame("42")]), Err(PushError::Closed));
        let batch = q.take(Mode::WebSocket, 1024).await.expect("ws");
        assert_eq!((batch.frames.len(), batch.closed), (1, true));
        let batch = q.take(Mode::WebSocket, 1024).await.expect("ws");
        assert!(batch.frames.is_empty() && batch.closed);
    }

    #[tokio::test]
    async fn respects_max_bytes_per_batch() {
        let q = Outbox::new(Mode::Polling, 1024);
        q.push([frame("4aaaa"), frame("4bbbb"), frame("4cccc")])
            .expect("push");
        let batch = q.take(Mode::Polling, 10).await.expect("polling");
        assert_eq!(batch.frames.len(), 2);
        let batch = q.take(Mode::Polling, 1).await.expect("polling");
        assert_eq!(batch.frames.len(), 1, "always at least one frame");
    }
}
