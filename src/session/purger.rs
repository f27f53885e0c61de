//! [`Purger`]: the session cache's purge operations and nothing else, for the Kratos edge, which
//! must make the cache forget sessions after logouts and session changes but has no business
//! resolving credentials or reading the cache.

use super::store::SessionStore;
use crate::credential::CacheKey;

/// A narrow handle on a [`SessionStore`] that can only purge. Borrowed from the store with
/// [`SessionStore::purger`]; `Copy`, so it is passed by value.
///
/// With the fleet attached (`[cache.shared]`), every purge is also told to the other replicas.
///
/// Every purge is synchronous and wins over the whoami calls in flight for what it purges (see
/// [`crate::session::store`]): once it returns, no request is answered from the purged entries
/// and no answer decided before it is cached.
#[derive(Clone, Copy)]
pub struct Purger<'a> {
    store: &'a SessionStore,
}

impl<'a> Purger<'a> {
    pub(super) fn new(store: &'a SessionStore) -> Purger<'a> {
        Purger { store }
    }

    /// Forgets the credential with cache key `key` and every other credential that resolved to the
    /// same session (logout, session change).
    pub fn purge_credential(self, key: CacheKey) {
        let _removed = self.store.purge_credential(key);
    }

    /// Forgets every cached credential of the Kratos session `session_id` (a session revoked by
    /// id). An id nothing resolved to purges nothing.
    pub fn purge_session_id(self, session_id: &str) {
        let _removed = self.store.purge_session_id(session_id);
    }

    /// Forgets every cached session of the Kratos identity `identity_id` (settings change,
    /// revocation of its sessions). An id nothing resolved to purges nothing.
    pub fn purge_identity(self, identity_id: &str) {
        let _removed = self.store.purge_identity(identity_id);
    }
}
