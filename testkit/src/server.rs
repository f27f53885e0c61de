//! The accept loop shared by the doubles: plain HTTP/1.1 (hyper) with keep-alive, a stop switch
//! that closes the listener *and* every open connection, and a per-connection "cut" that lets a
//! handler make the connection die after a chosen number of response bytes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

pub(crate) type Body = Full<Bytes>;

/// Locks a mutex, ignoring poisoning (a panicking test must not cascade into the double).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request's headers as recorded by the doubles: (lowercase name, value as text), in order,
/// repeated headers repeated.
pub(crate) fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A request target's path and query as sent (the path alone when there is no query).
pub(crate) fn path_and_query(uri: &http::Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
}

/// Binds with `SO_REUSEADDR` so a double can be restarted on the port it just released.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Where the response currently being written must be cut off.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CutAt {
    /// Let this many bytes of the response through in total (cuts inside the status line or headers).
    TotalBytes(usize),
    /// Let the whole header block through, then this many body bytes.
    BodyBytes(usize),
}

#[derive(Debug, Clone)]
struct CutState {
    at: CutAt,
    total: usize,
    after_headers: usize,
    headers_done: bool,
    window: u32,
    dead: bool,
}

impl CutState {
    fn new(at: CutAt) -> Self {
        CutState {
            at,
            total: 0,
            after_headers: 0,
            headers_done: false,
            window: 0,
            dead: false,
        }
    }

    fn admits_next(&self) -> bool {
        match self.at {
            CutAt::TotalBytes(limit) => self.total < limit,
            CutAt::BodyBytes(limit) => !self.headers_done || self.after_headers < limit,
        }
    }

    fn advance(&mut self, byte: u8) {
        self.total += 1;
        if self.headers_done {
            self.after_headers += 1;
        } else {
            self.window = (self.window << 8) | u32::from(byte);
            if self.window == 0x0d0a_0d0a {
                self.headers_done = true;
            }
        }
    }

    /// How many leading bytes of `buf` may still be written.
    fn allowed(&self, buf: &[u8]) -> usize {
        let mut probe = self.clone();
        let mut n = 0;
        while n < buf.len() && probe.admits_next() {
            probe.advance(buf[n]);
            n += 1;
        }
        n
    }
}

/// Per-connection context handed to handlers.
#[derive(Clone)]
pub(crate) struct ConnCtx {
    cut: Arc<Mutex<Option<CutState>>>,
}

impl ConnCtx {
    /// Makes the connection die once the *next* response has been written up to `at`.
    pub(crate) fn cut_response(&self, at: CutAt) {
        *lock(&self.cut) = Some(CutState::new(at));
    }
}

/// A TCP stream whose writes can be truncated (see [`ConnCtx::cut_response`]).
struct CutIo {
    inner: TcpStream,
    cut: Arc<Mutex<Option<CutState>>>,
}

impl AsyncRead for CutIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let mut guard = lock(&this.cut);
        let Some(state) = guard.as_mut() else {
            drop(guard);
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        if state.dead {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection deliberately cut by the test double",
            )));
        }
        let allowed = state.allowed(buf);
        if allowed == 0 {
            state.dead = true;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection deliberately cut by the test double",
            )));
        }
        match Pin::new(&mut this.inner).poll_write(cx, &buf[..allowed]) {
            Poll::Ready(Ok(n)) => {
                for &b in &buf[..n] {
                    state.advance(b);
                }
                if !state.admits_next() {
                    state.dead = true;
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A running accept loop. `stop` closes the listener and every connection it accepted.
pub(crate) struct Running {
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Running {
    pub(crate) async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Serves `listener` with `handler` until stopped.
pub(crate) fn serve<H, Fut>(listener: TcpListener, handler: H) -> Running
where
    H: Fn(Request<Incoming>, ConnCtx) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let stop = Arc::new(Notify::new());
    let task = tokio::spawn(accept_loop(listener, handler, stop.clone()));
    Running { stop, task }
}

async fn accept_loop<H, Fut>(listener: TcpListener, handler: H, stop: Arc<Notify>)
where
    H: Fn(Request<Incoming>, ConnCtx) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let cut = Arc::new(Mutex::new(None));
                    let ctx = ConnCtx { cut: cut.clone() };
                    let io = TokioIo::new(CutIo { inner: stream, cut });
                    let handler = handler.clone();
                    conns.spawn(async move {
                        let service = service_fn(move |req| {
                            let fut = handler(req, ctx.clone());
                            async move { Ok::<_, Infallible>(fut.await) }
                        });
                        let _ = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .keep_alive(true)
                            .serve_connection(io, service)
                            .await;
                    });
                }
                // e.g. EMFILE: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
    drop(listener);
    conns.shutdown().await;
}
