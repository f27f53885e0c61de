//! Which cached credentials belong to which session and identity, so that a purge removes exactly
//! the entries it concerns (O(entries purged), no predicate evaluated on later lookups), and which
//! sessions and identities were purged recently, so that a whoami call that started before a purge
//! never puts its answer in the cache after it.
//!
//! - `record` is called for every valid session put in a cache; `forget_absent` drops keys no cache
//!   holds any more (a periodic sweep, so eviction needs no bookkeeping of its own).
//! - `take_session` / `take_identity` / `session_of` answer the purges.
//! - Tombstones: a purge of a session or identity is remembered for `tombstone_ttl` (the longest a
//!   whoami call can take, `kratos.timeout`, plus a margin); an answer for a call that started
//!   before a tombstone of its session or identity is not cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::credential::CacheKey;

/// The index. Not synchronised itself: the store keeps it behind a mutex.
#[derive(Debug)]
pub struct Index {
    by_key: HashMap<CacheKey, (Arc<str>, Instant)>,
    by_session: HashMap<Arc<str>, SessionKeys>,
    by_identity: HashMap<Arc<str>, Vec<Arc<str>>>,
    purged_sessions: HashMap<Arc<str>, Instant>,
    purged_identities: HashMap<Arc<str>, Instant>,
    tombstone_ttl: Duration,
    last_sweep: Instant,
    /// When everything was last purged ([`Index::clear`]): a tombstone for every session.
    cleared_at: Option<Instant>,
}

#[derive(Debug)]
struct SessionKeys {
    identity: Arc<str>,
    keys: Vec<CacheKey>,
}

/// How often [`Index::sweep_due`] says a sweep is due.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// A key recorded this recently is never swept (its cache insert may be under way).
const SWEEP_GRACE: Duration = Duration::from_secs(1);

impl Index {
    pub fn new(tombstone_ttl: Duration) -> Index {
        Index {
            by_key: HashMap::new(),
            by_session: HashMap::new(),
            by_identity: HashMap::new(),
            purged_sessions: HashMap::new(),
            purged_identities: HashMap::new(),
            tombstone_ttl,
            last_sweep: Instant::now(),
            cleared_at: None,
        }
    }

    /// `key` resolved to session `session` of identity `identity`.
    pub fn record(&mut self, key: CacheKey, session: &str, identity: &str) {
        let now = Instant::now();
        if let Some((old, at)) = self.by_key.get_mut(&key) {
            if &**old == session {
                *at = now;
                return;
            }
        }
        self.unlink(&key);
        let sid: Arc<str> = Arc::from(session);
        let entry = self
            .by_session
            .entry(Arc::clone(&sid))
            .or_insert_with(|| SessionKeys {
                identity: Arc::from(identity),
                keys: Vec::new(),
            });
        entry.keys.push(key);
        let sessions = self
            .by_identity
            .entry(Arc::clone(&entry.identity))
            .or_default();
        if !sessions.contains(&sid) {
            sessions.push(Arc::clone(&sid));
        }
        self.by_key.insert(key, (sid, now));
    }

    /// The session a key resolved to, if it is indexed.
    pub fn session_of(&self, key: &CacheKey) -> Option<Arc<str>> {
        self.by_key.get(key).map(|(s, _)| Arc::clone(s))
    }

    /// Removes a session from the index, remembers that it was purged, and returns its keys.
    pub fn take_session(&mut self, session: &str) -> Vec<CacheKey> {
        let now = Instant::now();
        self.purged_sessions.insert(Arc::from(session), now);
        let Some(entry) = self.by_session.remove(session) else {
            return Vec::new();
        };
        for k in &entry.keys {
            self.by_key.remove(k);
        }
        if let Some(list) = self.by_identity.get_mut(&entry.identity) {
            list.retain(|s| &**s != session);
            if list.is_empty() {
                self.by_identity.remove(&entry.identity);
            }
        }
        entry.keys
    }

    /// Removes every session of an identity, remembers the purge, and returns their keys.
    pub fn take_identity(&mut self, identity: &str) -> Vec<CacheKey> {
        self.purged_identities
            .insert(Arc::from(identity), Instant::now());
        let sessions = self.by_identity.remove(identity).unwrap_or_default();
        let mut keys = Vec::new();
        for s in sessions {
            keys.extend(self.take_session(&s));
        }
        keys
    }

    /// Whether a call that started at `started` for this session must not be cached: its session
    /// or identity was purged since.
    pub fn purged_since(&self, session: &str, identity: &str, started: Instant) -> bool {
        self.cleared_at.is_some_and(|t| t >= started)
            || self
                .purged_sessions
                .get(session)
                .is_some_and(|t| *t >= started)
            || self
                .purged_identities
                .get(identity)
                .is_some_and(|t| *t >= started)
    }

    /// Forgets every key (the caches were emptied) and remembers the moment as a tombstone of every
    /// session: a call that started before it does not cache its answer.
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.by_session.clear();
        self.by_identity.clear();
        self.cleared_at = Some(Instant::now());
    }

    /// Whether the periodic sweep is due (and marks it done).
    pub fn sweep_due(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.last_sweep) < SWEEP_EVERY {
            return false;
        }
        self.last_sweep = now;
        true
    }

    /// Drops keys that no cache holds any more (`held(key)` is false) and were recorded more than
    /// a second ago, and tombstones older than `tombstone_ttl`.
    pub fn forget_absent(&mut self, held: impl Fn(&CacheKey) -> bool) {
        let now = Instant::now();
        let gone: Vec<CacheKey> = self
            .by_key
            .iter()
            .filter(|(k, (_, at))| now.duration_since(*at) > SWEEP_GRACE && !held(k))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.unlink(&k);
        }
        let ttl = self.tombstone_ttl;
        self.purged_sessions
            .retain(|_, t| now.duration_since(*t) <= ttl);
        self.purged_identities
            .retain(|_, t| now.duration_since(*t) <= ttl);
    }

    /// Number of indexed keys.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn unlink(&mut self, key: &CacheKey) {
        let Some((sid, _)) = self.by_key.remove(key) else {
            return;
        };
        let Some(entry) = self.by_session.get_mut(&sid) else {
            return;
        };
        entry.keys.retain(|k| k != key);
        if entry.keys.is_empty() {
            let identity = Arc::clone(&entry.identity);
            self.by_session.remove(&sid);
            if let Some(list) = self.by_identity.get_mut(&identity) {
                list.retain(|s| *s != sid);
                if list.is_empty() {
                    self.by_identity.remove(&identity);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[test]
    fn sessions_and_identities_collect_their_keys() {
        let mut ix = Index::new(Duration::from_secs(1));
        ix.record(key(1), "s1", "i1");
        ix.record(key(2), "s1", "i1"); // a re-issued cookie of the same session
        ix.record(key(3), "s2", "i1");
        ix.record(key(4), "s3", "i2");
        assert_eq!(ix.session_of(&key(2)).as_deref(), Some("s1"));
        let mut s1 = ix.take_session("s1");
        s1.sort_by_key(|k| k.0[0]);
        assert_eq!(s1, vec![key(1), key(2)]);
        assert_eq!(ix.session_of(&key(1)), None);
        assert_eq!(ix.take_identity("i1"), vec![key(3)]);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.take_identity("i2"), vec![key(4)]);
        assert!(ix.is_empty());
    }

    #[test]
    fn a_key_moves_when_it_resolves_to_another_session() {
        let mut ix = Index::new(Duration::from_secs(1));
        ix.record(key(1), "s1", "i1");
        ix.record(key(1), "s2", "i1");
        assert!(ix.take_session("s1").is_empty());
        assert_eq!(ix.take_session("s2"), vec![key(1)]);
    }

    #[test]
    fn purges_leave_tombstones_for_calls_that_started_before() {
        let mut ix = Index::new(Duration::from_secs(60));
        let before = Instant::now();
        ix.take_session("s1");
        ix.take_identity("i9");
        let after = Instant::now() + Duration::from_millis(1);
        assert!(ix.purged_since("s1", "i1", before));
        assert!(!ix.purged_since("s1", "i1", after));
        assert!(ix.purged_since("s5", "i9", before));
        assert!(!ix.purged_since("s5", "i1", before));
        ix.record(key(1), "s7", "i7");
        ix.clear();
        assert!(ix.is_empty());
        assert!(
            ix.purged_since("s7", "i7", before),
            "clear is a tombstone of every session"
        );
        assert!(!ix.purged_since("s7", "i7", Instant::now() + Duration::from_millis(1)));
    }

    #[test]
    fn the_sweep_drops_keys_no_cache_holds_but_not_fresh_ones() {
        let mut ix = Index::new(Duration::ZERO);
        ix.record(key(1), "s1", "i1");
        ix.forget_absent(|_| false);
        assert_eq!(ix.len(), 1, "recorded less than a second ago");
        ix.by_key.get_mut(&key(1)).expect("indexed").1 = Instant::now() - Duration::from_secs(5);
        ix.forget_absent(|_| true);
        assert_eq!(ix.len(), 1, "still held");
        ix.forget_absent(|_| false);
        assert!(ix.is_empty());
        assert!(ix.by_session.is_empty() && ix.by_identity.is_empty());
    }
}
