//! The session store: a bounded cache of whoami answers in front of the whoami client, with request
//! coalescing.
//!
//! - Keys are [`CacheKey`]s (SHA-256 of credential kind and value); the raw credential is never stored.
//! - A valid session is kept until min(`cache.max_ttl`, its `expires_at`, `Ory-Session-Cache-For`);
//!   the deadline is fixed at insertion and a hit never moves it.
//! - A rejected credential (401) is kept for `cache.negative_ttl` (0 disables).
//! - 5xx, timeouts, 429s, step-up answers and answers carrying `Set-Cookie` are never kept.
//! - Concurrent misses for one key make exactly one whoami call: the first starts it in a task of its
//!   own (so a client that goes away does not cancel it) and everybody waits for that task's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use moka::future::Cache;
use moka::Expiry;
use tokio::sync::watch;

use super::whoami::{WhoamiAnswer, WhoamiClient};
use super::{Resolution, Session, UnavailableReason};
use crate::config::CacheConfig;
use crate::credential::{CacheKey, Credential};
use crate::metrics::Metrics;

/// How a lookup was answered; the `result` label of `sessiongate_cache_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    Hit,
    NegativeHit,
    Miss,
    Coalesced,
}

impl LookupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LookupKind::Hit => "hit",
            LookupKind::NegativeHit => "negative_hit",
            LookupKind::Miss => "miss",
            LookupKind::Coalesced => "coalesced",
        }
    }
}

#[derive(Clone)]
enum Cached {
    Valid(Arc<Session>),
    Invalid,
}

#[derive(Clone)]
struct Entry {
    value: Cached,
    /// Absolute deadline, computed once at insertion.
    expires_at: Instant,
}

struct Deadline;

impl Expiry<CacheKey, Entry> for Deadline {
    fn expire_after_create(
        &self,
        _k: &CacheKey,
        v: &Entry,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(v.expires_at.saturating_duration_since(created_at))
    }
    // Reads and updates keep the deadline fixed at creation (the trait's defaults return the
    // current remaining duration), so a hit never extends an entry.
}

type Waiter = watch::Receiver<Option<Resolution>>;

/// Cache + coalescing in front of [`WhoamiClient`].
pub struct SessionStore {
    cache: Cache<CacheKey, Entry>,
    inflight: Mutex<HashMap<CacheKey, Waiter>>,
    client: WhoamiClient,
    cfg: CacheConfig,
    metrics: Arc<Metrics>,
}

impl SessionStore {
    pub fn new(cfg: CacheConfig, client: WhoamiClient, metrics: Arc<Metrics>) -> Arc<SessionStore> {
        let cache = Cache::builder()
            .max_capacity(cfg.max_entries)
            .expire_after(Deadline)
            .support_invalidation_closures()
            .build();
        Arc::new(SessionStore {
            cache,
            inflight: Mutex::new(HashMap::new()),
            client,
            cfg,
            metrics,
        })
    }

    /// Resolves a credential: from the cache, by joining a whoami call in flight, or by starting one.
    pub async fn resolve(self: &Arc<Self>, cred: &Credential<'_>) -> (Resolution, LookupKind) {
        let key = cred.cache_key();
        // Two rounds at most: the second only when an entry inserted between our cache check and
        // taking the in-flight lock was evicted again before we could read it.
        for _ in 0..2 {
            if let Some(hit) = self.cached(&key).await {
                return hit;
            }
            let (waiter, kind) = {
                let Ok(mut inflight) = self.inflight.lock() else {
                    return (internal_error(), LookupKind::Miss);
                };
                if let Some(w) = inflight.get(&key) {
                    (w.clone(), LookupKind::Coalesced)
                } else if self.cache.contains_key(&key) {
                    // A call finished between the cache check and taking the lock: its answer is in
                    // the cache (inserted before the in-flight entry is removed). Read it.
                    continue;
                } else {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key, rx.clone());
                    let store = Arc::clone(self);
                    let owned = cred.to_owned();
                    tokio::spawn(async move {
                        let answer = store.client.whoami(&owned).await;
                        store.finish(key, answer, tx).await;
                    });
                    (rx, LookupKind::Miss)
                }
            };
            self.metrics.cache_lookup(kind);
            return (wait(waiter).await, kind);
        }
        (internal_error(), LookupKind::Miss)
    }

    /// Forgets a credential (logout, session change): the next request asks Kratos again.
    pub async fn purge(&self, key: &CacheKey) {
        self.cache.invalidate(key).await;
    }

    /// Forgets every cached entry of one session id (logout of a session by id).
    pub fn purge_session_id(&self, session_id: &str) {
        let id = session_id.to_string();
        // Entries are few per session; invalidate_entries_if is cheap to register.
        let _ = self
            .cache
            .invalidate_entries_if(move |_, e| matches!(&e.value, Cached::Valid(s) if s.id == id));
    }

    /// Number of cached entries (approximate, as moka counts).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs pending cache maintenance (evictions, expirations) so counts are current.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    async fn cached(&self, key: &CacheKey) -> Option<(Resolution, LookupKind)> {
        let entry = self.cache.get(key).await?;
        let out = self.answer_of(entry);
        self.metrics.cache_lookup(out.1);
        Some(out)
    }

    fn answer_of(&self, entry: Entry) -> (Resolution, LookupKind) {
        match entry.value {
            Cached::Valid(session) => (
                Resolution::Valid {
                    session,
                    set_cookie: Vec::new(),
                },
                LookupKind::Hit,
            ),
            Cached::Invalid => (Resolution::Invalid, LookupKind::NegativeHit),
        }
    }

    async fn finish(
        &self,
        key: CacheKey,
        answer: WhoamiAnswer,
        tx: watch::Sender<Option<Resolution>>,
    ) {
        if let Some(entry) = self.cacheable(&answer) {
            self.cache.insert(key, entry).await;
        }
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(&key);
        }
        // Nobody waiting (every client went away) is fine: the answer is cached where allowed.
        let _ = tx.send(Some(answer.resolution));
    }

    /// The cache entry for an answer, or `None` when it must not be kept.
    fn cacheable(&self, answer: &WhoamiAnswer) -> Option<Entry> {
        let now = Instant::now();
        match &answer.resolution {
            Resolution::Valid {
                session,
                set_cookie,
            } if set_cookie.is_empty() => {
                let mut ttl = self.cfg.max_ttl;
                if let Some(cache_for) = answer.cache_for {
                    ttl = ttl.min(cache_for);
                }
                if let Some(exp) = session.expires_at {
                    let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
                    ttl = ttl.min(left);
                }
                (!ttl.is_zero()).then(|| Entry {
                    value: Cached::Valid(Arc::clone(session)),
                    expires_at: now + ttl,
                })
            }
            Resolution::Invalid if !self.cfg.negative_ttl.is_zero() => Some(Entry {
                value: Cached::Invalid,
                expires_at: now + self.cfg.negative_ttl,
            }),
            _ => None,
        }
    }
}

async fn wait(mut rx: Waiter) -> Resolution {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or_else(internal_error),
        Err(_) => internal_error(),
    }
}

fn internal_error() -> Resolution {
    Resolution::Unavailable {
        reason: UnavailableReason::Internal,
    }
}
