//! The Redis side of the fleet, on the `sessiongate-fleet` thread: one command connection (a
//! `redis::aio::ConnectionManager`, which reconnects by itself) for `GET`/`SET`/`DEL`/`PUBLISH`,
//! and one pub/sub connection for the purge channel, managed by [`Link::subscribe_loop`]:
//!
//! 1. connect and `SUBSCRIBE {prefix}purge` (bounded in time); on failure wait (backoff from
//!    100 ms doubling to 2 s) and try again;
//! 2. once subscribed: drop the whole local cache (purges published while this replica was not
//!    subscribed are lost to it), mark the link healthy, apply every message of another replica,
//!    and `PING` the connection every second (a Redis that stopped answering is noticed too);
//! 3. when the stream ends or a `PING` fails: mark the link degraded and go back to 1.
//!
//! Every Redis call is bounded by `cache.shared.timeout`; failures are counted by op and make
//! the link degraded until the health loop's next successful `PING` (every 500 ms). A purge that
//! could not be published (or whose L2 part failed) is kept (up to [`PENDING`]; beyond that the
//! oldest is dropped, counted as `op="pending_dropped"` and warned about once) and performed
//! again once Redis answers. At most [`IN_FLIGHT`] jobs run at once: beyond that a lookup or a
//! write is dropped (counted as `op="queue"`) and a purge is kept for later like a failed one.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, Semaphore};

use super::bus::{self, PurgeMessage};
use super::l2;
use super::metrics::{FleetMetrics, Op};
use super::{scripts, Health, Job};
use crate::config::{SharedCacheConfig, SharedCacheMode};
use crate::state::Shared;

/// Purges kept for publishing again while Redis does not answer.
const PENDING: usize = 10_000;
/// Jobs running at once on the fleet thread.
const IN_FLIGHT: usize = 1_024;
/// The time allowed to (re)connect a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const SUBSCRIBER_PING: Duration = Duration::from_secs(1);
const HEALTH_PING: Duration = Duration::from_millis(500);

/// Everything the fleet thread works with.
pub(super) struct Link {
    client: redis::Client,
    cfg: SharedCacheConfig,
    max_ttl: Duration,
    origin: String,
    channel: String,
    health: Arc<Health>,
    metrics: FleetMetrics,
    shared: Weak<Shared>,
    pending: Mutex<VecDeque<PurgeMessage>>,
    /// Whether a dropped pending purge was warned about (once per process).
    dropped_warned: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Link {
    pub(super) fn new(
        client: redis::Client,
        cfg: SharedCacheConfig,
        max_ttl: Duration,
        origin: String,
        health: Arc<Health>,
        metrics: FleetMetrics,
        shared: Weak<Shared>,
    ) -> Link {
        Link {
            channel: bus::channel(&cfg.key_prefix),
            client,
            cfg,
            max_ttl,
            origin,
            health,
            metrics,
            shared,
            pending: Mutex::new(VecDeque::new()),
            dropped_warned: AtomicBool::new(false),
        }
    }

    /// The thread's body: runs until every [`super::Fleet`] handle (the job queue's sender) is gone.
    pub(super) fn run(self, jobs: mpsc::Receiver<Job>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "fleet: cannot start its runtime; running local-only");
                return;
            }
        };
        runtime.block_on(self.serve(jobs));
    }

    async fn serve(self, mut jobs: mpsc::Receiver<Job>) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.cfg.timeout))
            .set_min_delay(BACKOFF_MIN)
            .set_max_delay(BACKOFF_MAX)
            .set_number_of_retries(3);
        let conn = match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = ?e.kind(), "fleet: cannot create the Redis connection; running local-only");
                return;
            }
        };
        let link = Arc::new(self);
        tokio::spawn(Arc::clone(&link).subscribe_loop());
        tokio::spawn(Arc::clone(&link).health_loop(conn.clone()));
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        while let Some(job) = jobs.recv().await {
            if let Job::Flush(done) = job {
                let (link, conn, permits) = (Arc::clone(&link), conn.clone(), Arc::clone(&permits));
                tokio::spawn(async move { link.flush(conn, &permits, done).await });
                continue;
            }
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                busy(&link, job);
                continue;
            };
            let link = Arc::clone(&link);
            let conn = conn.clone();
            tokio::spawn(async move {
                link.work(conn, job).await;
                drop(permit);
            });
        }
    }

    /// Waits for every job running now, then performs the kept purges once; tells `done`.
    async fn flush(
        &self,
        mut conn: ConnectionManager,
        permits: &Semaphore,
        done: std::sync::mpsc::Sender<()>,
    ) {
        let all = u32::try_from(IN_FLIGHT).unwrap_or(u32::MAX);
        if let Ok(running) = permits.acquire_many(all).await {
            drop(running);
        }
        self.retry_pending(&mut conn).await;
        let _ = done.send(());
    }

    /// Runs one Redis call bounded by `timeout`, measuring it; `None` (counted, and the link
    /// marked degraded) when it failed or took too long.
    async fn call<T>(
        &self,
        op: Op,
        limit: Duration,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let started = Instant::now();
        let out = tokio::time::timeout(limit, f).await;
        self.metrics.observe(op, started.elapsed());
        match out {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(op);
                tracing::debug!(op = op.as_str(), error = ?e.kind(), "fleet: Redis call failed");
                None
            }
            Err(_) => {
                self.failed(op);
                None
            }
        }
    }

    fn failed(&self, op: Op) {
        self.metrics.error(op);
        self.health.commands_ok.store(false, Ordering::Relaxed);
    }

    /// Keeps a purge for publishing again, dropping (and counting) the oldest when full.
    fn keep(&self, message: PurgeMessage) {
        let mut pending = lock(&self.pending);
        if pending.len() >= PENDING {
            pending.pop_front();
            self.metrics.error(Op::PendingDropped);
            if !self.dropped_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    kept = PENDING,
                    "fleet: too many purges waiting for Redis; the oldest are dropped (the other replicas keep those sessions at most cache.max_ttl)"
                );
            }
        }
        pending.push_back(message);
    }

    async fn work(&self, mut conn: ConnectionManager, job: Job) {
        let t = self.cfg.timeout;
        match job {
            Job::Lookup { key, reply } => {
                let k = l2::session_key(&self.cfg.key_prefix, &key);
                // The proxy gives up after `timeout` and counts that; here only errors count.
                let started = Instant::now();
                let got = tokio::time::timeout(
                    t * 2,
                    redis::cmd("GET")
                        .arg(&k)
                        .query_async::<Option<Vec<u8>>>(&mut conn),
                )
                .await;
                self.metrics.observe(Op::Get, started.elapsed());
                let value = match got {
                    Ok(Ok(v)) => v,
                    Ok(Err(_)) => {
                        self.failed(Op::Get);
                        None
                    }
                    Err(_) => None,
                };
                let _ = reply.send(value);
            }
            Job::Remember {
                key,
                value,
                not_before_ms,
            } => {
                let script = scripts::remember(
                    &self.cfg.key_prefix,
                    &key,
                    &value,
                    not_before_ms,
                    value.ttl(SystemTime::now()),
                    self.max_ttl,
                );
                self.call(Op::Put, t, script.query_async::<i64>(&mut conn))
                    .await;
            }
            Job::Publish(message) => {
                if !self.publish(&mut conn, &message).await {
                    self.keep(message);
                }
            }
            // handled by the serve loop
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }

    /// Performs the purge on the L2 cache (first, so that no replica reads it back after
    /// applying the purge: tombstones, then deletes, in one script), then publishes it. `false`
    /// when either failed (the caller keeps the purge to perform it again).
    async fn publish(&self, conn: &mut ConnectionManager, message: &PurgeMessage) -> bool {
        let t = self.cfg.timeout;
        if self.cfg.mode == SharedCacheMode::PurgeAndCache {
            let script = scripts::purge(
                &self.cfg.key_prefix,
                message,
                l2::unix_ms(SystemTime::now()),
                l2::tombstone_ttl(self.max_ttl),
            );
            if self
                .call(Op::Purge, t, script.query_async::<i64>(conn))
                .await
                .is_none()
            {
                return false;
            }
        }
        let text = message.encode();
        let sent = self
            .call(
                Op::Publish,
                t,
                redis::cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(&text)
                    .query_async::<i64>(conn),
            )
            .await;
        if sent.is_some() {
            self.metrics.purge("sent");
        }
        sent.is_some()
    }

    /// Performs the kept purges in order, stopping at the first failure (the rest stay kept).
    async fn retry_pending(&self, conn: &mut ConnectionManager) {
        loop {
            let Some(message) = lock(&self.pending).pop_front() else {
                return;
            };
            if !self.publish(conn, &message).await {
                lock(&self.pending).push_front(message);
                return;
            }
        }
    }

    /// `PING`s the command connection every [`HEALTH_PING`]; a success marks it healthy again
    /// and publishes the purges that could not be published before.
    async fn health_loop(self: Arc<Self>, mut conn: ConnectionManager) {
        let mut tick = tokio::time::interval(HEALTH_PING);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.shared.strong_count() == 0 {
                return;
            }
            let limit = self.cfg.timeout.max(Duration::from_millis(200));
            let pong = self
                .call(
                    Op::Ping,
                    limit,
                    redis::cmd("PING").query_async::<String>(&mut conn),
                )
                .await;
            if pong.is_none() {
                continue;
            }
            let was_ok = self.health.commands_ok.swap(true, Ordering::Relaxed);
            if !was_ok {
                tracing::info!("fleet: Redis answers again");
            }
            self.retry_pending(&mut conn).await;
        }
    }

    /// The subscription loop (see the module docs).
    async fn subscribe_loop(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.shared.strong_count() == 0 {
                return;
            }
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            let pubsub = match connected {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    self.lost(&format!("cannot subscribe: {:?}", e.kind()));
                    backoff = self.wait(backoff).await;
                    continue;
                }
                Err(_) => {
                    self.lost("cannot subscribe: timed out");
                    backoff = self.wait(backoff).await;
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            let dropped = self.shared.upgrade().map(|s| s.runtime().store.purge_all());
            self.metrics.full_drop();
            self.health.subscribed.store(true, Ordering::Relaxed);
            tracing::info!(
                dropped = dropped.unwrap_or(0),
                "fleet: subscribed to the purge channel; local cache dropped (purges may have been missed)"
            );
            let (mut sink, mut stream) = pubsub.split();
            let mut ping = tokio::time::interval(SUBSCRIBER_PING);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let reason = loop {
                tokio::select! {
                    msg = stream.next() => match msg {
                        Some(msg) => self.received(msg.get_payload_bytes()),
                        None => break "connection closed",
                    },
                    _ = ping.tick() => {
                        let limit = self.cfg.timeout.max(Duration::from_millis(500));
                        match tokio::time::timeout(limit, sink.ping::<redis::Value>()).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(_)) => break "ping failed",
                            Err(_) => break "ping timed out",
                        }
                    }
                }
            };
            self.lost(reason);
        }
    }

    fn lost(&self, reason: &str) {
        self.metrics.error(Op::Subscribe);
        let was = self.health.subscribed.swap(false, Ordering::Relaxed);
        if was {
            tracing::warn!(
                reason,
                "fleet: purge channel lost; local-only until Redis is back"
            );
        } else {
            tracing::debug!(reason, "fleet: purge channel still unavailable");
        }
    }

    /// Sleeps `backoff` (with up to 25 % jitter) and returns the next one.
    async fn wait(&self, backoff: Duration) -> Duration {
        let jitter = backoff.mul_f64(rand::random::<f64>() * 0.25);
        tokio::time::sleep(backoff + jitter).await;
        (backoff * 2).min(BACKOFF_MAX)
    }

    /// Applies one message of the purge channel (ignoring this replica's own and garbage).
    fn received(&self, payload: &[u8]) {
        let Some(message) = PurgeMessage::decode(payload) else {
            self.metrics.error(Op::Decode);
            return;
        };
        if message.origin == self.origin {
            return;
        }
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let store = Arc::clone(&shared.runtime().store);
        let mut removed = 0;
        for purge in message.purges() {
            removed += store.apply_remote(purge);
        }
        self.metrics.purge("received");
        tracing::debug!(removed, "fleet: purge from another replica applied");
    }
}

/// No job slot free: a purge is kept for later, anything else dropped (a lookup's waiter then
/// counts it as skipped); counted as `op="queue"`.
fn busy(link: &Link, job: Job) {
    link.metrics.error(Op::Queue);
    if let Job::Publish(message) = job {
        link.keep(message);
    }
}
