//! The fleet: several sessiongate replicas behaving as one cache, on Redis (`[cache.shared]`).
//!
//! - [`bus`]: the purge broadcast's message format and channel. Every purge a replica performs is
//!   published; every replica applies the others' purges (never re-publishing them).
//! - [`l2`]: the shared L2 cache (`mode = "purge_and_cache"`): keys, value format, deadlines.
//! - [`api`]: the purge API of the admin listener (`POST /cache/purge`).
//! - [`metrics`]: the `sessiongate_shared_cache_...` metrics.
//! - [`link`]: the Redis side: the connections, the subscription loop, the health loop.
//!
//! [`Fleet`] is the handle the runtime keeps: it implements [`SharedTier`], so the session store
//! tells it its purges and asks it on misses without knowing about Redis. All Redis work runs on
//! one thread of its own (`sessiongate-fleet`, a current-thread tokio runtime); the proxy only
//! queues work there and, for an L2 read, waits at most `cache.shared.timeout` for the answer.
//!
//! Redis is never a reason to fail: while Redis is down or slow, every call is skipped or given
//! up after `timeout` (counted in `sessiongate_shared_cache_errors_total{op}`), the replica serves
//! from its own cache and Kratos, and `/health/ready` says `shared_cache: degraded` without
//! failing. When the subscription comes back, the replica drops its whole local cache: it cannot
//! know which purges it missed.

pub mod api;
pub mod bus;
pub mod l2;
mod link;
pub mod metrics;
mod scripts;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use self::bus::PurgeMessage;
use self::l2::SharedValue;
use self::metrics::{FleetMetrics, Op};
use crate::config::{SharedCacheConfig, SharedCacheMode};
use crate::credential::CacheKey;
use crate::metrics::Metrics;
use crate::session::shared::{Purge, Scope, Share, SharedSession, SharedTier};
use crate::state::Shared;

/// Work queued for the fleet thread; beyond this many items, work is dropped (and counted).
const QUEUE: usize = 65_536;

/// Why the fleet could not be started (never because Redis is unreachable: that is degraded).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// `cache.shared.redis_url` was refused by the Redis client (the message never shows it).
    #[error("cache.shared.redis_url: {0}")]
    Url(String),
    /// The metrics registry refused a metric.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The fleet thread could not be started.
    #[error("fleet thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// One piece of work for the fleet thread.
pub(crate) enum Job {
    /// Delete the purged shared sessions (L2 mode), then publish the message.
    Publish(PurgeMessage),
    /// Store a shared session, unless a purge of its credential, session or identity was
    /// recorded at or after `not_before_ms` (Unix ms).
    Remember {
        key: CacheKey,
        value: SharedValue,
        not_before_ms: u64,
    },
    /// Read a shared session's raw value.
    Lookup {
        key: CacheKey,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
    /// Finish the work queued before this and the kept purges, then answer (at shutdown).
    Flush(std::sync::mpsc::Sender<()>),
}

/// What the health of the Redis side is, as the admin listener reports it.
#[derive(Default)]
pub(crate) struct Health {
    /// Subscribed to the purge channel now.
    pub subscribed: AtomicBool,
    /// The last call on the command connection (or its periodic `PING`) succeeded.
    pub commands_ok: AtomicBool,
}

/// The fleet handle: see the module docs.
pub struct Fleet {
    mode: SharedCacheMode,
    timeout: Duration,
    origin: String,
    max_ttl: Duration,
    jobs: mpsc::Sender<Job>,
    health: Arc<Health>,
    metrics: FleetMetrics,
}

impl Fleet {
    /// Starts the fleet thread for `cfg`: it connects (in the background, retrying with backoff),
    /// subscribes to the purge channel and applies received purges to `shared`'s current store.
    /// `max_ttl` bounds the lifetime of L2 index sets and tombstones, and of any value read.
    ///
    /// # Errors
    /// When the Redis client refuses the URL, a metric cannot be registered or the thread cannot
    /// be spawned. Never because Redis is down.
    pub fn start(
        cfg: &SharedCacheConfig,
        max_ttl: Duration,
        metrics: &Metrics,
        shared: Weak<Shared>,
    ) -> Result<Arc<Fleet>, FleetError> {
        let client = redis::Client::open(cfg.redis_url.0.as_str())
            .map_err(|e| FleetError::Url(format!("{:?}", e.kind())))?;
        let metrics = FleetMetrics::new(metrics)?;
        let origin = bus::hex(&rand::random::<[u8; 8]>());
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(QUEUE);
        let link = link::Link::new(
            client,
            cfg.clone(),
            max_ttl,
            origin.clone(),
            Arc::clone(&health),
            metrics.clone(),
            shared,
        );
        std::thread::Builder::new()
            .name("sessiongate-fleet".into())
            .spawn(move || link.run(rx))?;
        Ok(Arc::new(Fleet {
            mode: cfg.mode,
            timeout: cfg.timeout,
            origin,
            max_ttl,
            jobs: tx,
            health,
            metrics,
        }))
    }

    /// `ok` (subscribed to the purge channel and the command connection answers) or `degraded`.
    pub fn status(&self) -> &'static str {
        let h = &self.health;
        if h.subscribed.load(Ordering::Relaxed) && h.commands_ok.load(Ordering::Relaxed) {
            "ok"
        } else {
            "degraded"
        }
    }

    /// Performs the work queued so far (purges to publish above all) and the purges kept while
    /// Redis did not answer, waiting at most twice `cache.shared.timeout` plus 100 ms; for the
    /// process's exit. Blocks the calling thread (never call it from an async task). `true` when
    /// everything was done in time.
    pub fn flush(&self) -> bool {
        let (done, finished) = std::sync::mpsc::channel();
        if self.jobs.try_send(Job::Flush(done)).is_err() {
            return false;
        }
        finished
            .recv_timeout(self.timeout * 2 + Duration::from_millis(100))
            .is_ok()
    }

    /// This replica's id in purge messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn queue(&self, job: Job) -> bool {
        let queued = self.jobs.try_send(job).is_ok();
        if !queued {
            self.metrics.error(Op::Queue);
        }
        queued
    }
}

#[async_trait]
impl SharedTier for Fleet {
    fn purged(&self, purge: Purge<'_>) {
        self.queue(Job::Publish(PurgeMessage::of(&self.origin, purge)));
    }

    async fn lookup(&self, key: &CacheKey, scope: &Scope) -> Option<SharedSession> {
        if self.mode != SharedCacheMode::PurgeAndCache {
            return None;
        }
        if !self.health.commands_ok.load(Ordering::Relaxed) {
            self.metrics.lookup("skipped");
            return None;
        }
        let (reply, answer) = oneshot::channel();
        if !self.queue(Job::Lookup { key: *key, reply }) {
            self.metrics.lookup("skipped");
            return None;
        }
        let bytes = match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => {
                self.metrics.lookup("miss");
                return None;
            }
            // the fleet thread dropped the job (too much in flight; counted there): not asked
            Ok(Err(_)) => {
                self.metrics.lookup("skipped");
                return None;
            }
            // slower than `timeout`: given up, counted here; lookups are skipped until the
            // next successful `PING` (the fleet thread's health loop, every 500 ms)
            Err(_) => {
                self.metrics.error(Op::Get);
                self.metrics.lookup("miss");
                self.health.commands_ok.store(false, Ordering::Relaxed);
                return None;
            }
        };
        match SharedValue::decode(&bytes, scope, self.max_ttl, SystemTime::now()) {
            Ok(Some(found)) => {
                self.metrics.lookup("hit");
                Some(found)
            }
            Ok(None) => {
                self.metrics.lookup("miss");
                None
            }
            Err(()) => {
                self.metrics.error(Op::Decode);
                self.metrics.lookup("miss");
                None
            }
        }
    }

    fn remember(&self, share: Share<'_>) {
        if self.mode != SharedCacheMode::PurgeAndCache
            || !self.health.commands_ok.load(Ordering::Relaxed)
        {
            return;
        }
        let Some(value) = SharedValue::of(share.session, share.until, &share.scope.fingerprint)
        else {
            return;
        };
        // conservative: a purge recorded up to CLOCK_SKEW before the call started (by a replica
        // whose clock is ahead) still keeps the value out
        let not_before = share
            .started
            .checked_sub(l2::CLOCK_SKEW)
            .unwrap_or(UNIX_EPOCH);
        self.queue(Job::Remember {
            key: *share.key,
            value,
            not_before_ms: l2::unix_ms(not_before),
        });
    }
}
