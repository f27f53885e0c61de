//! The session store: a bounded cache of whoami answers in front of the whoami client, with request
//! coalescing.
//!
//! - Keys are [`CacheKey`]s (SHA-256 of credential kind and value); the raw credential is never stored.
//! - A valid session is kept until min(`cache.max_ttl`, its `expires_at`, `Ory-Session-Cache-For`);
//!   the deadline is fixed at insertion and a hit never moves it.
//! - A rejected credential (401) is kept for `cache.negative_ttl` (0 disables).
//! - 5xx, timeouts, 429s, step-up answers and answers carrying `Set-Cookie` are never kept, nor
//!   any answer for a cookie sent with its Bearer fallback ([`Credential::cacheable`]).
//! - With `cache.stale_if_error`, a session validated within that window is also kept in a second,
//!   equally bounded cache, and served (marked stale) when Kratos fails; a 401 or a purge removes it.
//! - Concurrent misses for one key make exactly one whoami call: the first starts it in a task of its
//!   own (so a client that goes away does not cancel it) and everybody waits for that task's answer.
//!   The task keeps the first caller's trace context: its whoami span is a child of that request's.
//! - A purge wins over everything in flight: it detaches the calls in flight for the keys it
//!   purges (later requests start a new call instead of joining them, and their answers are not
//!   cached), and a call that started before its session or identity was purged does not cache
//!   its answer either. Purges remove exactly the entries of the [`Index`] (the credentials that
//!   resolved to the session or identity), O(entries purged).
//! - With a [`SharedTier`] attached (the fleet): every purge made through [`Purger`] is told to it
//!   (a purge received from it, [`SessionStore::apply_remote`], is not told back), a miss reads it
//!   before calling Kratos, and every session cached after a whoami call is shared with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use moka::sync::Cache;
use moka::Expiry;
use tokio::sync::watch;

use super::index::Index;
use super::purger::Purger;
use super::shared::{Purge, Scope, SharedTier};
use super::whoami::{WhoamiAnswer, WhoamiClient};
use super::{Resolution, Session, SessionEvents, UnavailableReason};
use crate::config::CacheConfig;
use crate::credential::{CacheKey, Credential};

mod tier;

/// How a lookup was answered; the `result` label of `sessiongate_cache_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    Hit,
    NegativeHit,
    Miss,
    Coalesced,
}

impl LookupKind {
    /// The metric label and access-log value: `hit`, `negative_hit`, `miss` or `coalesced`.
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

/// A session that may be served while Kratos fails, until `until`.
#[derive(Clone)]
struct StaleEntry {
    session: Arc<Session>,
    until: Instant,
}

trait HasDeadline {
    fn deadline(&self) -> Instant;
}
impl HasDeadline for Entry {
    fn deadline(&self) -> Instant {
        self.expires_at
    }
}
impl HasDeadline for StaleEntry {
    fn deadline(&self) -> Instant {
        self.until
    }
}

struct Deadline;

impl<V: HasDeadline> Expiry<CacheKey, V> for Deadline {
    fn expire_after_create(&self, _k: &CacheKey, v: &V, created_at: Instant) -> Option<Duration> {
        // moka adds this to its own `created_at`, which comes from a coarse clock that can lag the
        // real time under load; measuring from the later of the two means the entry can expire a
        // little early but never outlives its deadline.
        let from = created_at.max(Instant::now());
        Some(v.deadline().saturating_duration_since(from))
    }

    /// A new value (a fresh validation replacing an older one) brings its own deadline: a
    /// `stale_if_error` window counts from the latest validation, not the first.
    fn expire_after_update(
        &self,
        _k: &CacheKey,
        v: &V,
        updated_at: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        let from = updated_at.max(Instant::now());
        Some(v.deadline().saturating_duration_since(from))
    }
    // Reads keep the deadline fixed (the trait's default returns the current remaining
    // duration), so a hit never extends an entry.
}

type Waiter = watch::Receiver<Option<Resolution>>;

/// One whoami call in flight: what `finish` needs to decide whether its answer may be cached.
struct Call {
    key: CacheKey,
    cacheable: bool,
    started: Instant,
    /// The same moment on the wall clock (compared with purges of other replicas).
    started_at: SystemTime,
    /// The receiver registered in the in-flight map, to tell whether the call is still attached.
    channel: Waiter,
}

/// Cache + coalescing in front of [`WhoamiClient`].
pub struct SessionStore {
    cache: Cache<CacheKey, Entry>,
    stale: Cache<CacheKey, StaleEntry>,
    inflight: Mutex<HashMap<CacheKey, Waiter>>,
    index: Mutex<Index>,
    client: WhoamiClient,
    cfg: CacheConfig,
    events: Arc<dyn SessionEvents>,
    /// The fleet's shared tier, attached once by the runtime when `[cache.shared]` is set.
    shared: OnceLock<Arc<dyn SharedTier>>,
    /// What this store's shared values are valid for (its Kratos and session paths).
    scope: Scope,
}

/// Tombstones outlive the longest whoami call by this much.
const TOMBSTONE_MARGIN: Duration = Duration::from_secs(5);

/// Locks a mutex, ignoring poisoning (a panic elsewhere must not stop the cache).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SessionStore {
    /// A store bounded by `cfg` (`cache.max_entries` each for the cache and the stale copies) in
    /// front of `client`, reporting every lookup to `events`.
    pub fn new(
        cfg: CacheConfig,
        client: WhoamiClient,
        events: Arc<impl SessionEvents + 'static>,
    ) -> Arc<SessionStore> {
        let cache = Cache::builder()
            .max_capacity(cfg.max_entries)
            .expire_after(Deadline)
            .build();
        let stale = Cache::builder()
            .max_capacity(cfg.max_entries)
            .expire_after(Deadline)
            .build();
        let index = Index::new(client.timeout() + TOMBSTONE_MARGIN);
        let scope = Scope::of(client.url().as_str(), client.kept());
        Arc::new(SessionStore {
            cache,
            stale,
            inflight: Mutex::new(HashMap::new()),
            index: Mutex::new(index),
            client,
            cfg,
            events,
            shared: OnceLock::new(),
            scope,
        })
    }

    /// Resolves a credential: from the cache, by joining a whoami call in flight, or by starting one.
    pub async fn resolve(self: &Arc<Self>, cred: &Credential<'_>) -> (Resolution, LookupKind) {
        let key = cred.cache_key();
        // Two rounds at most: the second only when an entry inserted between our cache check and
        // taking the in-flight lock was evicted again before we could read it.
        for _ in 0..2 {
            if let Some(hit) = self.cached(&key) {
                return hit;
            }
            let (waiter, kind) = {
                let mut inflight = lock(&self.inflight);
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
                    let call = Call {
                        key,
                        cacheable: cred.cacheable(),
                        started: Instant::now(),
                        started_at: SystemTime::now(),
                        channel: rx.clone(),
                    };
                    // The call's span is a child of this (the first) caller's request span.
                    tokio::spawn(crate::telemetry::carry(async move {
                        let (answer, shared) = match store.shared_lookup(&call).await {
                            Some(answer) => (answer, true),
                            None => (store.client.whoami(&owned).await, false),
                        };
                        store.finish(call, answer, tx, shared);
                    }));
                    (rx, LookupKind::Miss)
                }
            };
            self.events.cache_lookup(kind);
            return (wait(waiter).await, kind);
        }
        (internal_error(), LookupKind::Miss)
    }

    /// The purge operations alone, for callers that must not resolve or read (the Kratos edge).
    pub fn purger(&self) -> Purger<'_> {
        Purger::new(self)
    }

    /// Forgets a credential and every other credential that resolved to the same session (logout,
    /// session change): the next request with any of them asks Kratos again. Synchronous, so a
    /// response filter can call it before the response reaches the client. Returns how many cache
    /// entries went; tells the shared tier.
    pub(super) fn purge_credential(&self, key: CacheKey) -> usize {
        let (n, session) = self.purge_credential_here(key);
        self.tell_shared(Purge::Credential {
            key,
            session_id: session.as_deref(),
        });
        n
    }

    /// Forgets every cached session of one identity (settings change, revocation of all sessions).
    /// Returns how many cache entries went; tells the shared tier.
    pub(super) fn purge_identity(&self, identity_id: &str) -> usize {
        let n = self.purge_identity_here(identity_id);
        self.tell_shared(Purge::Identity(identity_id));
        n
    }

    /// Forgets every cached credential of one session id (logout of a session by id). Returns how
    /// many cache entries went; tells the shared tier.
    pub(super) fn purge_session_id(&self, session_id: &str) -> usize {
        let n = self.purge_session_id_here(session_id);
        self.tell_shared(Purge::SessionId(session_id));
        n
    }

    /// Performs `purge` here and tells the shared tier, like the [`Purger`] methods (the purge
    /// API). Returns how many cache entries went here.
    pub fn purge(&self, purge: Purge<'_>) -> usize {
        match purge {
            Purge::Credential { key, .. } => self.purge_credential(key),
            Purge::SessionId(sid) => self.purge_session_id(sid),
            Purge::Identity(iid) => self.purge_identity(iid),
        }
    }

    /// Applies a purge another replica performed (received from the shared tier): the same as the
    /// purges above, but never told back to the tier. Returns how many cache entries went.
    pub fn apply_remote(&self, purge: Purge<'_>) -> usize {
        match purge {
            Purge::Credential { key, session_id } => {
                let (mut n, _) = self.purge_credential_here(key);
                if let Some(sid) = session_id {
                    n += self.purge_session_id_here(sid);
                }
                n
            }
            Purge::SessionId(sid) => self.purge_session_id_here(sid),
            Purge::Identity(iid) => self.purge_identity_here(iid),
        }
    }

    /// Forgets everything: every entry, every stale copy, every call in flight (whose answers are
    /// not cached). For a replica that may have missed purges (its link to the other replicas was
    /// down). Returns how many cache entries went (as counted before the purge).
    pub fn purge_all(&self) -> usize {
        let mut inflight = lock(&self.inflight);
        self.cache.run_pending_tasks();
        let n = usize::try_from(self.cache.entry_count()).unwrap_or(usize::MAX);
        lock(&self.index).clear();
        inflight.clear();
        self.cache.invalidate_all();
        self.stale.invalidate_all();
        n
    }

    fn purge_credential_here(&self, key: CacheKey) -> (usize, Option<Arc<str>>) {
        let mut inflight = lock(&self.inflight);
        let (mut keys, session) = {
            let mut ix = lock(&self.index);
            match ix.session_of(&key) {
                Some(session) => (ix.take_session(&session), Some(session)),
                None => (Vec::new(), None),
            }
        };
        keys.push(key);
        (self.detach_and_invalidate(&mut inflight, keys), session)
    }

    fn purge_identity_here(&self, identity_id: &str) -> usize {
        let mut inflight = lock(&self.inflight);
        let keys = lock(&self.index).take_identity(identity_id);
        self.detach_and_invalidate(&mut inflight, keys)
    }

    fn purge_session_id_here(&self, session_id: &str) -> usize {
        let mut inflight = lock(&self.inflight);
        let keys = lock(&self.index).take_session(session_id);
        self.detach_and_invalidate(&mut inflight, keys)
    }

    /// Detaches the calls in flight for `keys` (their answers are not cached; later requests do not
    /// join them) and removes their entries. Runs under the in-flight lock, which `finish` holds
    /// while it decides and inserts, so no answer of a detached call is inserted after this.
    /// Returns how many cache entries were removed.
    fn detach_and_invalidate(
        &self,
        inflight: &mut HashMap<CacheKey, Waiter>,
        keys: Vec<CacheKey>,
    ) -> usize {
        let mut removed = 0;
        for k in &keys {
            inflight.remove(k);
            removed += usize::from(self.cache.remove(k).is_some());
            self.stale.invalidate(k);
        }
        removed
    }

    /// Number of cached entries (approximate, as moka counts).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs pending cache maintenance (evictions, expirations) so counts are current.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
        self.stale.run_pending_tasks();
    }

    /// Number of credentials in the purge index (for tests and metrics).
    pub fn indexed_credentials(&self) -> usize {
        lock(&self.index).len()
    }

    fn cached(&self, key: &CacheKey) -> Option<(Resolution, LookupKind)> {
        let entry = self.cache.get(key)?;
        let out = self.answer_of(entry);
        self.events.cache_lookup(out.1);
        Some(out)
    }

    fn answer_of(&self, entry: Entry) -> (Resolution, LookupKind) {
        match entry.value {
            Cached::Valid(session) => (
                Resolution::Valid {
                    session,
                    set_cookie: Vec::new(),
                    stale: false,
                },
                LookupKind::Hit,
            ),
            Cached::Invalid => (Resolution::Invalid, LookupKind::NegativeHit),
        }
    }

    /// Delivers a call's answer to its waiters and caches it where allowed: only while the call is
    /// still attached (no purge of its key since it started) and its session or identity was not
    /// purged since it started.
    /// `from_shared`: the answer came from the shared tier (it is not shared back).
    fn finish(
        &self,
        call: Call,
        mut answer: WhoamiAnswer,
        tx: watch::Sender<Option<Resolution>>,
        from_shared: bool,
    ) {
        {
            let mut inflight = lock(&self.inflight);
            let attached = inflight
                .get(&call.key)
                .is_some_and(|w| w.same_channel(&call.channel));
            if attached && call.cacheable && !self.purged_since(&answer, call.started) {
                if let Some(entry) = self.cacheable(&answer) {
                    self.index_session(call.key, &answer);
                    if !from_shared {
                        self.share(&call, &entry);
                    }
                    self.cache.insert(call.key, entry);
                }
                self.update_stale(call.key, &mut answer);
            }
            if attached {
                inflight.remove(&call.key);
            }
        }
        let sweep = lock(&self.index).sweep_due();
        if sweep {
            let mut ix = lock(&self.index);
            ix.forget_absent(|k| self.cache.contains_key(k) || self.stale.contains_key(k));
        }
        // Nobody waiting (every client went away) is fine: the answer is cached where allowed.
        let _ = tx.send(Some(answer.resolution));
    }

    fn purged_since(&self, answer: &WhoamiAnswer, started: Instant) -> bool {
        match &answer.resolution {
            Resolution::Valid { session, .. } => {
                lock(&self.index).purged_since(&session.id, &session.identity_id, started)
            }
            _ => false,
        }
    }

    fn index_session(&self, key: CacheKey, answer: &WhoamiAnswer) {
        if let Resolution::Valid { session, .. } = &answer.resolution {
            lock(&self.index).record(key, &session.id, &session.identity_id);
        }
    }

    /// Keeps the stale copy of a valid session, drops it for a rejected credential, and serves it in
    /// place of a Kratos failure.
    fn update_stale(&self, key: CacheKey, answer: &mut WhoamiAnswer) {
        let window = self.cfg.stale_if_error;
        if window.is_zero() {
            return;
        }
        match &answer.resolution {
            Resolution::Valid { session, .. } => {
                let mut until = Instant::now() + window;
                if let Some(exp) = session.expires_at {
                    let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
                    until = until.min(Instant::now() + left);
                }
                let entry = StaleEntry {
                    session: Arc::clone(session),
                    until,
                };
                self.index_session(key, answer);
                self.stale.insert(key, entry);
            }
            Resolution::Invalid | Resolution::Aal2Required { .. } => {
                self.stale.invalidate(&key);
            }
            Resolution::Unavailable { reason } if reason.is_kratos_failure() => {
                if let Some(entry) = self.stale.get(&key) {
                    let live = entry
                        .session
                        .expires_at
                        .is_none_or(|e| e > SystemTime::now());
                    if live {
                        tracing::warn!(
                            target: "sessiongate::stale",
                            reason = reason.as_str(),
                            "Kratos failed; serving a session validated within cache.stale_if_error"
                        );
                        answer.resolution = Resolution::Valid {
                            session: entry.session,
                            set_cookie: Vec::new(),
                            stale: true,
                        };
                    }
                }
            }
            Resolution::Unavailable { .. } | Resolution::RateLimited { .. } => {}
        }
    }

    /// The cache entry for an answer, or `None` when it must not be kept.
    fn cacheable(&self, answer: &WhoamiAnswer) -> Option<Entry> {
        let now = Instant::now();
        match &answer.resolution {
            Resolution::Valid {
                session,
                set_cookie,
                stale: false,
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
