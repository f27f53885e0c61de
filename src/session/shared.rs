//! [`SharedTier`]: what the session store asks of a tier shared by several replicas (the fleet,
//! `crate::fleet`, on Redis), without naming it: the store tells it every purge it performs and,
//! when the tier caches, reads it before calling Kratos and tells it every session it caches.
//!
//! Every method is bounded in time and infallible from the store's side: a tier that cannot
//! answer answers "nothing" (a miss), so a shared tier is never a reason to fail or to fail open.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use super::Session;
use crate::credential::CacheKey;

/// One purge this replica performed, to be told to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge<'a> {
    /// A credential, by cache key, and the session it resolved to when this replica knew it.
    Credential {
        key: CacheKey,
        session_id: Option<&'a str>,
    },
    /// Every credential of one Kratos session.
    SessionId(&'a str),
    /// Every session of one Kratos identity.
    Identity(&'a str),
}

/// A session read from the shared tier and the deadline it was stored with (the minimum of
/// `cache.max_ttl`, `expires_at` and `Ory-Session-Cache-For` of the replica that validated it).
#[derive(Debug, Clone)]
pub struct SharedSession {
    pub session: Session,
    pub until: SystemTime,
}

/// The shared tier as the store sees it.
#[async_trait]
pub trait SharedTier: Send + Sync {
    /// This replica purged `purge` from its own cache; tell the other replicas. Must not block
    /// (it is called from response filters): queue the work.
    fn purged(&self, purge: Purge<'_>);

    /// The shared copy of `key`'s session, or `None` (absent, expired, unreadable, the tier is
    /// off or slower than its timeout). Never returns a session past `until`.
    async fn lookup(&self, key: &CacheKey) -> Option<SharedSession>;

    /// This replica cached `session` for `key` until `until`; share it. Must not block.
    fn remember(&self, key: &CacheKey, session: &Arc<Session>, until: SystemTime);
}
