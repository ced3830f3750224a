//! The client port's server: its own accept loop over hyper's HTTP/1.1
//! connections, so that no connection holds a file descriptor for long
//! without doing what a client does.
//!
//! - A connection that is accepted but has not yet had its first request
//!   head routed is *pending*; at most [`PortLimits::max_pending_handshakes`]
//!   are, counted from TCP accept (a TLS handshake included). Over the cap a
//!   new connection is closed at once; open sessions are not affected.
//! - A pending connection must reach its first routed request within
//!   [`PortLimits::handshake_timeout`] of its accept (TLS handshake, request
//!   head), or it is closed.
//! - Every request head must arrive within
//!   [`PortLimits::request_head_timeout`] of hyper starting to read it (hyper's
//!   header read timeout); an idle keep-alive connection is closed after it
//!   too, but only a head cut short counts as a limit hit (`Watched` tells
//!   them apart).
//! - Request bodies are bounded by the transports (`polling`).
//!
//! Each limit hit is counted in [`crate::metrics::LIMIT_HITS`]. On stop, the
//! listener is closed, every connection is told to finish its request in
//! flight and close, and [`serve`] returns once they have (an upgraded
//! WebSocket belongs to the edge, not to this server).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::limits::Limit;
use crate::tcp::{ClientConn, SharedTcp};

/// Deadlines and the cap of the client port.
#[derive(Debug, Clone, Copy)]
pub struct PortLimits {
    /// From TCP accept to the first request routed (TLS handshake included).
    pub handshake_timeout: Duration,
    /// Longest a request head may take to arrive, once hyper reads it.
    pub request_head_timeout: Duration,
    /// Most connections accepted and not yet past their first request head.
    pub max_pending_handshakes: usize,
}

/// What turns an accepted TCP connection into the stream HTTP is read from:
/// nothing (plain TCP) or a TLS handshake.
pub trait Handshake: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The stream, or `None` when the connection was answered and closed
    /// here (e.g. plain HTTP on a TLS port). Bounded by the caller's deadline.
    fn handshake(
        &self,
        tcp: TcpStream,
    ) -> impl Future<Output = io::Result<Option<Self::Io>>> + Send;

    /// The shared TCP stream of a connection, when it has one (plain TCP).
    fn shared(_io: &Self::Io) -> Option<Arc<TcpStream>> {
        None
    }
}

/// Plain TCP: the connection is a [`SharedTcp`], which the WebSocket path
/// takes apart after the upgrade.
pub struct PlainTcp;

impl Handshake for PlainTcp {
    type Io = SharedTcp;

    async fn handshake(&self, tcp: TcpStream) -> io::Result<Option<SharedTcp>> {
        Ok(Some(SharedTcp(Arc::new(tcp))))
    }

    fn shared(io: &SharedTcp) -> Option<Arc<TcpStream>> {
        Some(io.0.clone())
    }
}

/// A connection's stream, watched for what a header timeout means: a
/// request head cut short (bytes read since the last response, or nothing
/// answered yet) or a keep-alive connection that merely stayed idle.
pub(crate) struct Watched<T> {
    pub(crate) inner: T,
    io: Arc<IoSeen>,
}

/// What a [`Watched`] stream has seen, read by the connection's task.
#[derive(Default)]
struct IoSeen {
    /// Some response bytes were written.
    wrote: AtomicBool,
    /// Bytes were read since the last write.
    read_since_write: AtomicBool,
}

impl IoSeen {
    /// Whether a header timeout now cuts a request short (rather than
    /// closing a keep-alive connection that sent nothing after its last
    /// response).
    fn head_cut_short(&self) -> bool {
        !self.wrote.load(Ordering::Relaxed) || self.read_since_write.load(Ordering::Relaxed)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.io.read_since_write.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    fn wrote(&self, polled: &std::task::Poll<io::Result<usize>>) {
        if let std::task::Poll::Ready(Ok(n)) = polled {
            if *n > 0 {
                self.io.wrote.store(true, Ordering::Relaxed);
                self.io.read_since_write.store(false, Ordering::Relaxed);
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connections not yet past their first request head.
struct Pending {
    count: AtomicUsize,
    max: usize,
}

impl Pending {
    /// A permit, or `None` when `max` connections are pending.
    fn admit(self: &Arc<Self>) -> Option<Arc<Permit>> {
        let taken = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        taken.ok().map(|_| {
            Arc::new(Permit {
                pending: self.clone(),
                released: AtomicBool::new(false),
            })
        })
    }
}

/// A pending connection's place under the cap; released once, when its
/// first request is routed or when it closes.
struct Permit {
    pending: Arc<Pending>,
    released: AtomicBool,
}

impl Permit {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.pending.count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.release();
    }
}

/// Serves `router` on `listener` until `stop`, then waits for the
/// connections' requests in flight (see the module docs).
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    handshake: H,
    router: axum::Router,
    limits: PortLimits,
    stop: CancellationToken,
) {
    let handshake = Arc::new(handshake);
    let pending = Arc::new(Pending {
        count: AtomicUsize::new(0),
        max: limits.max_pending_handshakes,
    });
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            // The client gave up before we took it: nothing to report.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, typically: accepting again at once
                // would spin.
                tracing::warn!(error = %e, "accepting a client connection failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_RETRY) => continue,
                }
            }
        };
        let Some(permit) = pending.admit() else {
            Limit::PendingHandshakes.hit();
            tracing::debug!(%peer, "too many pending handshakes: connection closed");
            drop(tcp);
            continue;
        };
        // A real-time event goes out when it is written.
        let _ = tcp.set_nodelay(true);
        let deadline = Instant::now() + limits.handshake_timeout;
        tracker.spawn(connection(
            handshake.clone(),
            tcp,
            peer,
            permit,
            deadline,
            router.clone(),
            limits,
            stop.clone(),
        ));
    }
    // No new connections: the port closes now.
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// How long to wait before accepting again after an accept error.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[allow(clippy::too_many_arguments)]
async fn connection<H: Handshake>(
    handshake: Arc<H>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Arc<Permit>,
    deadline: Instant,
    router: axum::Router,
    limits: PortLimits,
    stop: CancellationToken,
) {
    let io = tokio::select! {
        _ = stop.cancelled() => return,
        done = tokio::time::timeout_at(deadline, handshake.handshake(tcp)) => match done {
            Ok(Ok(Some(io))) => io,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "client handshake failed");
                return;
            }
            Err(_) => {
                Limit::HandshakeTimeout.hit();
                tracing::debug!(%peer, "client handshake timed out");
                return;
            }
        },
    };
    let info = ClientConn {
        peer,
        tcp: H::shared(&io),
    };
    let routed = permit.clone();
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        // Past its first request head: no longer pending.
        routed.release();
        req.extensions_mut().insert(ConnectInfo(info.clone()));
        let mut router = router.clone();
        async move {
            std::future::poll_fn(|cx| Service::<http::Request<Body>>::poll_ready(&mut router, cx))
                .await?;
            router.call(req.map(Body::new)).await
        }
    });
    let seen = Arc::new(IoSeen::default());
    let io = Watched {
        inner: io,
        io: seen.clone(),
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_head_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let handshake_deadline = tokio::time::sleep_until(deadline);
    tokio::pin!(handshake_deadline);
    let (mut past_deadline, mut stopping) = (false, false);
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    if e.is_timeout() && seen.head_cut_short() {
                        Limit::RequestHeadTimeout.hit();
                        tracing::debug!(%peer, "request head timed out");
                    } else if e.is_timeout() {
                        tracing::debug!(%peer, "idle keep-alive connection closed");
                    } else {
                        tracing::debug!(%peer, error = %e, "client connection failed");
                    }
                }
                return;
            }
            _ = &mut handshake_deadline, if !past_deadline => {
                past_deadline = true;
                if !permit.is_released() {
                    Limit::HandshakeTimeout.hit();
                    tracing::debug!(%peer, "no request before the handshake deadline");
                    return;
                }
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The plain-TCP stream under a connection the client port's server
/// (this module) upgraded, with what hyper had read past the request head;
/// `Err` (the connection, untouched) for any other stream, e.g. TLS.
pub(crate) fn shared_upgraded(
    upgraded: hyper::upgrade::Upgraded,
) -> Result<(SharedTcp, bytes::Bytes), hyper::upgrade::Upgraded> {
    let parts = upgraded.downcast::<TokioIo<Watched<SharedTcp>>>()?;
    Ok((parts.io.into_inner().inner, parts.read_buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    /// A server whose `/up` upgrades and reports whether the upgraded stream
    /// is the shared TCP stream, with the bytes sent right after the head.
    async fn start(
        limits: PortLimits,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<()>,
        mpsc::Receiver<Option<Vec<u8>>>,
    ) {
        let (tx, rx) = mpsc::channel(4);
        let router = axum::Router::new().route(
            "/up",
            axum::routing::get(move |mut req: axum::extract::Request| {
                let tx = tx.clone();
                async move {
                    let has_conn = req
                        .extensions()
                        .get::<ConnectInfo<ClientConn>>()
                        .is_some_and(|c| c.0.tcp.is_some());
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let got = match on.await.map(crate::port::shared_upgraded) {
                            Ok(Ok((mut tcp, read))) if has_conn => {
                                let mut got = read.to_vec();
                                let mut buf = [0u8; 16];
                                while got.len() < 5 {
                                    match tcp.read(&mut buf).await {
                                        Ok(0) | Err(_) => break,
                                        Ok(n) => got.extend_from_slice(&buf[..n]),
                                    }
                                }
                                Some(got)
                            }
                            _ => None,
                        };
                        let _ = tx.send(got).await;
                    });
                    http::Response::builder()
                        .status(http::StatusCode::SWITCHING_PROTOCOLS)
                        .header(http::header::CONNECTION, "upgrade")
                        .header(http::header::UPGRADE, "test")
                        .body(Body::empty())
                        .expect("a valid response")
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, PlainTcp, router, limits, stop.clone()));
        (addr, stop, server, rx)
    }

    /// Reads until the peer closes; what it sent.
    async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got).await;
        got
    }

    #[tokio::test]
    async fn an_upgraded_connection_is_the_shared_stream_with_what_followed_the_head() {
        let limits = PortLimits {
            handshake_timeout: Duration::from_secs(10),
            request_head_timeout: Duration::from_secs(10),
            max_pending_handshakes: 8,
        };
        let (addr, stop, server, mut rx) = start(limits).await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(
            b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\nhello",
        )
        .await
        .expect("write");
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an upgrade within the deadline")
            .expect("a report");
        assert_eq!(
            got.as_deref(),
            Some(&b"hello"[..]),
            "the shared stream, nothing lost"
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops")
            .expect("no panic");
    }

    #[tokio::test]
    async fn silent_connections_hold_the_cap_until_the_handshake_deadline() {
        let limits = PortLimits {
            handshake_timeout: Duration::from_millis(300),
            request_head_timeout: Duration::from_secs(10),
            max_pending_handshakes: 2,
        };
        let (addr, stop, server, _rx) = start(limits).await;
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // Over the cap: closed at once, unanswered.
        let mut over = TcpStream::connect(addr).await.expect("connect");
        assert!(read_to_close(&mut over).await.is_empty());
        // The silent ones are closed at the deadline, unanswered.
        for tcp in &mut silent {
            let got = tokio::time::timeout(Duration::from_secs(10), read_to_close(tcp))
                .await
                .expect("closed at the deadline");
            assert!(got.is_empty());
        }
        // Then there is room again.
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let got = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut tcp))
            .await
            .expect("an answer");
        assert!(
            got.starts_with(b"HTTP/1.1 404"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops")
            .expect("no panic");
    }

    #[test]
    fn pending_permits_are_capped_and_released_once() {
        let pending = Arc::new(Pending {
            count: AtomicUsize::new(0),
            max: 2,
        });
        let a = pending.admit().expect("first");
        let b = pending.admit().expect("second");
        assert!(pending.admit().is_none(), "over the cap");
        a.release();
        a.release();
        assert_eq!(pending.count.load(Ordering::Acquire), 1, "released once");
        drop(a);
        assert_eq!(
            pending.count.load(Ordering::Acquire),
            1,
            "drop after release"
        );
        let c = pending.admit().expect("a place again");
        drop((b, c));
        assert_eq!(pending.count.load(Ordering::Acquire), 0);
    }
}
