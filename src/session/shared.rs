//! [`SharedTier`]: what the session store asks of a tier shared by several replicas (the fleet,
//! `crate::fleet`, on Redis), without naming it: the store tells it every purge it performs and,
//! when the tier caches, reads it before calling Kratos and tells it every session it caches.
//!
//! Every method is bounded in time and infallible from the store's side: a tier that cannot
//! answer answers "nothing" (a miss), so a shared tier is never a reason to fail or to fail open.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::Session;
use crate::credential::CacheKey;
use crate::identity::Template;

/// One purge this replica performed, to be told to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge<'a> {
    /// A credential, by cache key, and the session it resolved to when this replica knew it.
    Credential {
        /// The credential's cache key (SHA-256 of kind and value; never the credential).
        key: CacheKey,
        /// The Kratos session id the credential resolved to here, when this replica knew it.
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
    /// The session, as the validating replica projected it (header values rendered).
    pub session: Session,
    /// The shared copy's deadline: the reader never keeps it longer.
    pub until: SystemTime,
}

/// Bumped whenever what a shared value means changes (how header values are rendered, the
/// projection): replicas of different versions then do not read each other's values.
const SCOPE_VERSION: u32 = 1;

/// What a store's shared values are valid for: one Kratos and one list of session paths (the
/// identity header templates the values were rendered for). Fixed per store (a store is rebuilt
/// when either changes), so a store built for other paths never reads or writes values of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// SHA-256 (first 8 bytes, hex) of [`SCOPE_VERSION`], the Kratos whoami URL and the paths.
    pub fingerprint: String,
    /// How many session paths (header value slots) a value holds.
    pub slots: usize,
}

impl Scope {
    /// The scope of sessions validated by the Kratos at `whoami_url` for session `paths`.
    pub fn of(whoami_url: &str, paths: &[Template]) -> Scope {
        let digest = Sha256::digest(format!("{SCOPE_VERSION}\n{whoami_url}\n{paths:?}").as_bytes());
        let fingerprint = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Scope {
            fingerprint,
            slots: paths.len(),
        }
    }
}

/// A session this replica just cached, to be shared.
#[derive(Debug, Clone, Copy)]
pub struct Share<'a> {
    /// The credential's cache key.
    pub key: &'a CacheKey,
    /// The session cached.
    pub session: &'a Arc<Session>,
    /// The local entry's deadline; the shared copy gets the same.
    pub until: SystemTime,
    /// When the whoami call that validated it started (wall clock): a purge of its credential,
    /// session or identity recorded at or after this (by any replica) keeps it out of the tier.
    pub started: SystemTime,
    /// The store's scope.
    pub scope: &'a Scope,
}

/// The shared tier as the store sees it.
#[async_trait]
pub trait SharedTier: Send + Sync {
    /// This replica purged `purge` from its own cache; tell the other replicas. Must not block
    /// (it is called from response filters): queue the work.
    fn purged(&self, purge: Purge<'_>);

    /// The shared copy of `key`'s session written for `scope`, or `None` (absent, expired,
    /// unreadable, of another scope, the tier is off or slower than its timeout). Never returns
    /// a session past `until`.
    async fn lookup(&self, key: &CacheKey, scope: &Scope) -> Option<SharedSession>;

    /// This replica cached a session; share it (unless purged since the call started). Must not
    /// block.
    fn remember(&self, share: Share<'_>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_depends_on_kratos_and_paths() {
        let a = Template::parse("identity.id").expect("template");
        let b = Template::parse("identity.traits.email").expect("template");
        let one = Scope::of(
            "http://kratos:4433/sessions/whoami",
            std::slice::from_ref(&a),
        );
        assert_eq!(
            one,
            Scope::of(
                "http://kratos:4433/sessions/whoami",
                std::slice::from_ref(&a)
            )
        );
        assert_eq!(one.slots, 1);
        assert_eq!(one.fingerprint.len(), 16);
        for other in [
            Scope::of(
                "http://other:4433/sessions/whoami",
                std::slice::from_ref(&a),
            ),
            Scope::of(
                "http://kratos:4433/sessions/whoami",
                std::slice::from_ref(&b),
            ),
            Scope::of("http://kratos:4433/sessions/whoami", &[a, b]),
        ] {
            assert_ne!(one.fingerprint, other.fingerprint);
        }
    }
}
