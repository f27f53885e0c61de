//! Downstream connections: how many may be open at once (`server.max_connections`), how long an idle
//! keep-alive connection is kept (`server.downstream_keepalive_timeout`), and what an idle one costs.
//!
//! pingora serves an HTTP/1 connection in one loop (pingora-core 0.9, `apps/mod.rs`, the
//! `ServerApp` impl for every `HttpServerApp`): it builds a session and awaits the proxy's
//! `process_new_http`, whose first step is reading the next request head. An idle keep-alive
//! connection therefore parks inside that future. The future is boxed (`async_trait`) and a box
//! is sized for the future's largest state, the whole proxy pipeline with every hook inlined, so
//! each idle connection kept that allocation, plus the session's 4 KiB header buffer
//! (`protocols/http/v1/server.rs`, `read_request`) and the session itself.
//!
//! [`ConnectionGate`] runs the same HTTP/1 loop with one difference: between requests it waits
//! for the first byte of the next request in a small future of its own (`Peek::try_peek`, which
//! reads one byte and puts it back), bounded by `server.downstream_keepalive_timeout` and the
//! shutdown signal, and only then builds the session and enters `process_new_http`. It also holds
//! one permit of `server.max_connections` for the connection's whole life; a connection that finds
//! none gets a 503 and is closed, counted in `sessiongate_connections_refused_total`.
//!
//! Connections pingora would not serve over HTTP/1 (h2c, or ALPN `h2` / custom on a TLS
//! listener) are handed to pingora's own loop unchanged, still under the permit.
//!
//! From the first connection on, the gate also runs the binary's worker maintenance
//! ([`set_worker_maintenance`]: mimalloc's collection) once a second on the proxy's runtime.

use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::state::Shared;

/// The answer to a connection beyond `server.max_connections` (the JSON error shape of
/// `crate::error`, without a request id: no request was read into a session).
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json; charset=utf-8\r\n\
cache-control: private, no-cache, no-store\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 150\r\n\r\n\
{\"error\":{\"code\":503,\"status\":\"Service Unavailable\",\"reason\":\"too many connections\",\
\"message\":\"The proxy has reached server.max_connections; retry.\"}}";

/// How long a refused connection may take to send its request head before it gets the 503.
const REFUSAL_READ: Duration = Duration::from_secs(1);

/// The largest request head read from a refused connection (the rest is not waited for).
const REFUSAL_HEAD_MAX: usize = 8 * 1024;

/// Connection metrics, registered in the server's registry.
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// `sessiongate_connections_refused_total`: connections answered 503 because
    /// `server.max_connections` were open.
    pub refused: IntCounter,
    /// `sessiongate_connections_open`: downstream connections holding a permit now.
    pub open: IntGauge,
}

impl ConnectionMetrics {
    /// Creates the metrics and registers them with the proxy's metrics.
    ///
    /// # Errors
    /// When prometheus refuses a metric (a duplicate registration): a programming error.
    pub fn register(metrics: &Metrics) -> Result<ConnectionMetrics, prometheus::Error> {
        let refused = IntCounter::new(
            "sessiongate_connections_refused_total",
            "Downstream connections refused with 503 because server.max_connections were open.",
        )?;
        let open = IntGauge::new(
            "sessiongate_connections_open",
            "Downstream connections open now (each holds one of server.max_connections).",
        )?;
        metrics.register(Box::new(refused.clone()))?;
        metrics.register(Box::new(open.clone()))?;
        Ok(ConnectionMetrics { refused, open })
    }
}

/// What the proxy's runtime runs about once a second ([`set_worker_maintenance`]).
static WORKER_MAINTENANCE: OnceLock<fn()> = OnceLock::new();

/// How often the worker maintenance runs.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);

/// Sets what the proxy's runtime runs about once a second, from the first connection on: the
/// binary gives mimalloc's collection (`src/main.rs`), so that memory freed when connections close
/// goes back to the OS even when no request follows. It runs on one worker thread (with
/// `server.threads` > 1, on whichever worker runs the task). Only the first call counts; `false`
/// when one was set before.
pub fn set_worker_maintenance(f: fn()) -> bool {
    WORKER_MAINTENANCE.set(f).is_ok()
}

/// Wraps pingora's HTTP application (the proxy) with the connection limit and the idle wait.
pub struct ConnectionGate<A> {
    app: Arc<A>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    metrics: ConnectionMetrics,
    /// Starts the worker maintenance task once, inside the proxy's runtime.
    maintenance: Once,
}

impl<A> ConnectionGate<A> {
    /// A gate allowing `max_connections` connections at once (at least 1).
    pub fn new(
        app: A,
        shared: Arc<Shared>,
        max_connections: usize,
        metrics: ConnectionMetrics,
    ) -> ConnectionGate<A> {
        ConnectionGate {
            app: Arc::new(app),
            shared,
            permits: Arc::new(Semaphore::new(
                max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            metrics,
            maintenance: Once::new(),
        }
    }

    /// Spawns the [`set_worker_maintenance`] task on the current runtime, the first time only.
    fn start_maintenance(&self) {
        self.maintenance.call_once(|| {
            if let Some(&f) = WORKER_MAINTENANCE.get() {
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(MAINTENANCE_EVERY);
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        every.tick().await;
                        f();
                    }
                });
            }
        });
    }
}

/// Decrements the open-connections gauge when the connection ends, however it ends.
struct OpenGuard(IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl<A> ServerApp for ConnectionGate<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.start_maintenance();
        let Ok(_permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.metrics.refused.inc();
            refuse(stream).await;
            return None;
        };
        self.metrics.open.inc();
        let _open = OpenGuard(self.metrics.open.clone());
        let h2c = self.app.server_options().is_some_and(|o| o.h2c);
        if h2c
            || matches!(
                stream.selected_alpn_proto(),
                Some(ALPN::H2 | ALPN::Custom(_))
            )
        {
            let mut next = ServerApp::process_new(&self.app, stream, shutdown).await;
            while let Some(stream) = next {
                next = ServerApp::process_new(&self.app, stream, shutdown).await;
            }
        } else {
            self.serve_http1(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.app.as_ref()).await;
    }
}

impl<A> ConnectionGate<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// pingora's HTTP/1 keep-alive loop, waiting for each request outside `process_new_http`.
    async fn serve_http1(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let mut carried: Option<HttpPersistentSettings> = None;
        loop {
            let idle = self
                .shared
                .runtime()
                .config
                .server
                .limits
                .downstream_keepalive_timeout;
            if !wait_for_request(&mut stream, idle, shutdown).await {
                return;
            }
            let mut session = ServerSession::new_http1(stream);
            match carried.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive_reuses_remaining(
                    self.app
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                ),
            }
            // pingora counts whole seconds, and 0 would mean "no limit": round up. The first byte
            // is already here, so this only bounds the rest of a request head that stalls.
            let secs = idle.as_millis().div_ceil(1000).max(1) as u64;
            session.set_keepalive(if *shutdown.borrow() { None } else { Some(secs) });
            let Some(reused) = self.app.process_new_http(session, shutdown).await else {
                return;
            };
            (stream, carried) = reused.consume();
        }
    }
}

/// Waits until the client sends the first byte of its next request (`true`), or closes, or stays
/// idle for `idle`, or the server shuts down (`false`: close the connection).
///
/// A stream that cannot peek (`try_peek` answers `false`) is treated as ready: pingora's own
/// keep-alive timeout then bounds its wait.
async fn wait_for_request(stream: &mut Stream, idle: Duration, shutdown: &ShutdownWatch) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let mut watch = shutdown.clone();
    let stopping = async move {
        loop {
            if watch.changed().await.is_err() {
                // the server is gone without a shutdown signal: never wake up for it
                std::future::pending::<()>().await;
            }
            if *watch.borrow() {
                return;
            }
        }
    };
    let mut first = [0u8; 1];
    // pingora's timer, not tokio's: arming a tokio timer that is due before the runtime's next
    // wake-up wakes the I/O driver (an eventfd write and one more epoll round per request);
    // pingora's timers are 10 ms ticks kept by a thread of their own, armed only when the wait
    // is pending, as pingora's own keep-alive reads do.
    tokio::select! {
        biased;
        peeked = pingora::time::fast_timeout::fast_timeout(idle, stream.try_peek(&mut first)) => {
            matches!(peeked, Ok(Ok(_)))
        }
        () = stopping => false,
    }
}

/// Answers a connection beyond the limit: reads its request head (bounded in size and time, so that
/// closing does not reset the connection before the client reads the answer), writes the 503 and
/// closes.
async fn refuse(mut stream: Stream) {
    let mut head = Vec::with_capacity(1024);
    let _ = tokio::time::timeout(REFUSAL_READ, async {
        let mut chunk = [0u8; 1024];
        while head.len() < REFUSAL_HEAD_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(REFUSAL_READ, async {
        stream.write_all(REFUSAL).await?;
        stream.flush().await?;
        AsyncWriteExt::shutdown(&mut stream).await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_content_length_matches_its_body() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert_eq!(declared, body.len());
        let json: serde_json::Value = serde_json::from_str(body).expect("json body");
        assert_eq!(json["error"]["code"], 503);
    }
}
