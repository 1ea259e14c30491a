//! The gRPC front's connections, served one by one under the relay's connection limits.
//!
//! The accept loop asks the relay to admit each connection ([`Relay::admit_connection`]: total
//! and per-address caps, shared by every front). A connection must then finish the HTTP/2
//! handshake (client preface and first SETTINGS frame) within `handshake_timeout_ms`; only
//! then is it handed to hyper, with the bytes read so far put back in front. While served it
//! is pinged (`keepalive_*`), holds at most `max_streams_per_connection` streams, and is closed
//! once it has had no stream open for `idle_timeout_ms`. On shutdown each connection gets a
//! GOAWAY and `shutdown_grace_ms` to finish; whatever is still open then is closed, so a
//! stop never waits on a peer.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cohort_core::Limits;
use cohort_relay::{ConnectionEnd, ConnectionPermit, Relay};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::server::TcpConnectInfo;
use tower_service::Service;

/// The name this front gives itself in connection metrics and logs.
const FRONT: &str = "grpc";

/// The connection limits of [`Limits`], as durations.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub max_streams: u32,
    pub shutdown_grace: Duration,
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

impl ConnectionLimits {
    pub fn from_limits(l: &Limits) -> Self {
        ConnectionLimits {
            handshake_timeout: ms(l.handshake_timeout_ms),
            idle_timeout: ms(l.idle_timeout_ms),
            keepalive_interval: (l.keepalive_interval_ms > 0).then(|| ms(l.keepalive_interval_ms)),
            keepalive_timeout: ms(l.keepalive_timeout_ms),
            max_streams: l.max_streams_per_connection.max(1),
            shutdown_grace: ms(l.shutdown_grace_ms),
        }
    }
}

/// Accepts connections on `listener` and serves each with `service` until the relay begins
/// shutdown; then drains them within the grace period and returns.
pub(crate) async fn serve_connections<S, B>(
    relay: Arc<Relay>,
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
) where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut stop = relay.shutdown_signal();
    let (closing_tx, closing) = watch::channel(false);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let mut connections = JoinSet::new();
    let mut accept_errors = 0u64;
    loop {
        tokio::select! {
            _ = async { stop.wait_for(|v| *v).await.is_ok() } => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(permit) = relay.admit_connection(FRONT, peer) else {
                        // Counted and logged by the relay; dropping the socket closes it.
                        continue;
                    };
                    // Without TCP_NODELAY, Nagle and delayed ACKs hold small responses and
                    // stream frames for tens of ms.
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(serve_one(Connection {
                        relay: relay.clone(),
                        tcp,
                        peer,
                        permit,
                        service: service.clone(),
                        h2: h2.clone(),
                        limits: limits.clone(),
                        closing: closing.clone(),
                    }));
                }
                Err(e) => {
                    // Out of descriptors (EMFILE, ENFILE) or memory: accepting again at once
                    // fails the same way and spins; wait for connections to close.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(error = %e, failures = accept_errors, "cannot accept a gRPC connection; is the file descriptor limit (ulimit -n) above max_connections?");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    // Stop listening at once, so new clients are refused rather than left waiting.
    drop(listener);
    closing_tx.send_replace(true);
    let open = connections.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "closing gRPC connections"
        );
    }
    // Each connection keeps its own deadline; this is the backstop.
    let drained = tokio::time::timeout(limits.shutdown_grace + Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.shutdown().await;
    }
}

struct Connection<S> {
    relay: Arc<Relay>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: ConnectionPermit,
    service: S,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    closing: watch::Receiver<bool>,
}

async fn serve_one<S, B>(c: Connection<S>)
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Connection {
        relay,
        mut tcp,
        peer,
        permit,
        service,
        h2,
        limits,
        mut closing,
    } = c;
    let _permit = permit;
    let handshake = tokio::select! {
        r = tokio::time::timeout(limits.handshake_timeout, read_handshake(&mut tcp)) => r,
        _ = async { closing.wait_for(|v| *v).await.is_ok() } => return,
    };
    let prefix = match handshake {
        Ok(Ok(prefix)) => prefix,
        Ok(Err(Handshake::NotHttp2)) => {
            relay.connection_closed(FRONT, peer, ConnectionEnd::BadHandshake);
            return;
        }
        Ok(Err(Handshake::Io(e))) => {
            tracing::debug!(%peer, error = %e, "gRPC connection closed during the handshake");
            return;
        }
        Err(_) => {
            relay.connection_closed(FRONT, peer, ConnectionEnd::HandshakeTimeout);
            return;
        }
    };
    let info = TcpConnectInfo {
        local_addr: tcp.local_addr().ok(),
        remote_addr: Some(peer),
    };
    let (active_tx, active_rx) = watch::channel(0usize);
    let active = Arc::new(active_tx);
    let tracked = Tracked {
        inner: service,
        info,
        active,
    };
    let conn = h2.serve_connection(TokioIo::new(Rewind::new(prefix, tcp)), tracked);
    tokio::pin!(conn);
    let idle = idle_for(active_rx, limits.idle_timeout);
    tokio::pin!(idle);
    let mut deadline: Option<(tokio::time::Instant, bool)> = None;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "gRPC connection ended with an error");
                }
                return;
            }
            _ = &mut idle, if deadline.is_none() => {
                relay.connection_closed(FRONT, peer, ConnectionEnd::Idle);
                conn.as_mut().graceful_shutdown();
                deadline = Some((tokio::time::Instant::now() + limits.shutdown_grace, false));
            }
            _ = async { closing.wait_for(|v| *v).await.is_ok() }, if deadline.is_none_or(|(_, shutdown)| !shutdown) => {
                conn.as_mut().graceful_shutdown();
                deadline = Some((tokio::time::Instant::now() + limits.shutdown_grace, true));
            }
            _ = sleep_until(deadline.map(|(at, _)| at)), if deadline.is_some() => {
                if deadline.is_some_and(|(_, shutdown)| shutdown) {
                    relay.connection_closed(FRONT, peer, ConnectionEnd::ShutdownDeadline);
                }
                // Dropping the connection closes the socket and ends its streams.
                return;
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves once no stream has been open for `idle` in a row.
async fn idle_for(mut active: watch::Receiver<usize>, idle: Duration) {
    loop {
        if active.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(idle) => return,
            changed = active.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

enum Handshake {
    NotHttp2,
    Io(io::Error),
}

impl From<io::Error> for Handshake {
    fn from(e: io::Error) -> Self {
        Handshake::Io(e)
    }
}

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// SETTINGS_MAX_FRAME_SIZE's initial value: the largest first frame a client may send.
const MAX_FIRST_FRAME: usize = 16_384;

/// Reads the client preface and the SETTINGS frame that must follow it (RFC 9113 3.4),
/// returning every byte read so hyper can read them again.
async fn read_handshake(tcp: &mut TcpStream) -> Result<Vec<u8>, Handshake> {
    let mut buf = vec![0u8; PREFACE.len() + 9];
    tcp.read_exact(&mut buf[..PREFACE.len()]).await?;
    if &buf[..PREFACE.len()] != PREFACE {
        return Err(Handshake::NotHttp2);
    }
    tcp.read_exact(&mut buf[PREFACE.len()..]).await?;
    let header = &buf[PREFACE.len()..];
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let is_settings = header[3] == 0x4;
    let is_ack = header[4] & 0x1 != 0;
    let stream_zero =
        u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff == 0;
    if !is_settings || is_ack || !stream_zero || len % 6 != 0 || len > MAX_FIRST_FRAME {
        return Err(Handshake::NotHttp2);
    }
    let start = buf.len();
    buf.resize(start + len, 0);
    tcp.read_exact(&mut buf[start..]).await?;
    Ok(buf)
}

/// A stream that first yields `prefix`, then reads from `inner`.
struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    fn new(prefix: Vec<u8>, inner: T) -> Self {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.prefix[from..from + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The service of one connection: tells each request where it came from (tonic's
/// `Request::remote_addr`) and counts the streams open, each from its request until its
/// response body is done or dropped.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    info: TcpConnectInfo,
    active: Arc<watch::Sender<usize>>,
}

/// One open stream; dropping it closes it in the count.
struct Open(Arc<watch::Sender<usize>>);

impl Open {
    fn new(active: &Arc<watch::Sender<usize>>) -> Self {
        active.send_modify(|n| *n += 1);
        Open(active.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<http::Request<Incoming>> for Tracked<S>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        let open = Open::new(&self.active);
        req.extensions_mut().insert(self.info.clone());
        let mut inner = self.inner.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            let resp = inner.call(req).await?;
            Ok(resp.map(|body| TrackedBody {
                inner: body,
                _open: open,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its stream counted as open until it is done or dropped.
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _open: Open,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
