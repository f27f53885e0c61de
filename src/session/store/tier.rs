//! The session store's side of the [`SharedTier`] (the fleet): attaching it, telling it purges,
//! reading it on a miss and sharing what was cached. Every value read or written carries the
//! store's own [`Scope`](super::Scope) (its Kratos and session paths), never the fleet's idea of
//! the running configuration: a store built for other paths, still serving requests after a
//! reload, neither reads nor writes values of the new paths.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::{Cached, Call, Entry, SessionStore};
use crate::session::shared::{Purge, Share, SharedTier};
use crate::session::whoami::WhoamiAnswer;
use crate::session::Resolution;

impl SessionStore {
    /// Attaches the shared tier (once; a second call is ignored and returns `false`).
    pub fn attach_shared(&self, tier: Arc<dyn SharedTier>) -> bool {
        self.shared.set(tier).is_ok()
    }

    /// Tells the shared tier a purge performed here (never one received from it).
    pub(super) fn tell_shared(&self, purge: Purge<'_>) {
        if let Some(tier) = self.shared.get() {
            tier.purged(purge);
        }
    }

    /// The shared tier's copy of a call's session, as a whoami answer whose `cache_for` is what is
    /// left of the shared deadline (so the local entry never outlives it). `None` without a tier,
    /// for answers that may not be cached, and on a shared miss.
    pub(super) async fn shared_lookup(&self, call: &Call) -> Option<WhoamiAnswer> {
        let tier = self.shared.get()?;
        if !call.cacheable {
            return None;
        }
        let found = tier.lookup(&call.key, &self.scope).await?;
        let left = found.until.duration_since(SystemTime::now()).ok()?;
        Some(WhoamiAnswer {
            resolution: Resolution::Valid {
                session: Arc::new(found.session),
                set_cookie: Vec::new(),
                stale: false,
            },
            cache_for: Some(left),
        })
    }

    /// Gives a valid session just cached to the shared tier, with the same deadline and the
    /// moment its whoami call started (a purge since then, anywhere, keeps it out).
    pub(super) fn share(&self, call: &Call, entry: &Entry) {
        let (Some(tier), Cached::Valid(session)) = (self.shared.get(), &entry.value) else {
            return;
        };
        let left = entry.expires_at.saturating_duration_since(Instant::now());
        tier.remember(Share {
            key: &call.key,
            session,
            until: SystemTime::now() + left,
            started: call.started_at,
            scope: &self.scope,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use http::HeaderMap;
    use sessiongate_testkit::{KratosDouble, SessionSpec};

    use super::*;
    use crate::config::from_str_with_env;
    use crate::credential::{self, CacheKey};
    use crate::metrics::Metrics;
    use crate::session::shared::{Scope, SharedSession};
    use crate::session::whoami::WhoamiClient;

    /// Records what the store tells it; never has anything to give.
    #[derive(Default)]
    struct Recorder {
        purged: Mutex<Vec<String>>,
        remembered: Mutex<Vec<(CacheKey, String, SystemTime)>>,
        looked_up: Mutex<Vec<Scope>>,
    }

    #[async_trait]
    impl SharedTier for Recorder {
        fn purged(&self, purge: Purge<'_>) {
            self.purged.lock().expect("lock").push(format!("{purge:?}"));
        }
        async fn lookup(&self, _key: &CacheKey, scope: &Scope) -> Option<SharedSession> {
            self.looked_up.lock().expect("lock").push(scope.clone());
            None
        }
        fn remember(&self, share: Share<'_>) {
            self.remembered.lock().expect("lock").push((
                *share.key,
                share.scope.fingerprint.clone(),
                share.started,
            ));
        }
    }

    fn store(kratos: &str) -> (Arc<SessionStore>, Arc<Recorder>) {
        let text = format!(
            "[kratos]\npublic_url = \"{kratos}\"\nlogin_url = \"https://app.example.com/login\"\n\
             [[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:3000\"\n\
             auth = \"session\"\n[routes.identity_headers]\n\"X-User-Id\" = \"identity.id\"\n"
        );
        let cfg = from_str_with_env(&text, "test", Vec::new()).expect("config");
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let client = WhoamiClient::new(&cfg.kratos, Arc::clone(&metrics))
            .expect("client")
            .keeping(cfg.session_paths.clone());
        let store = SessionStore::new(cfg.cache.clone(), client, metrics);
        let tier = Arc::new(Recorder::default());
        assert!(store.attach_shared(tier.clone()));
        (store, tier)
    }

    async fn resolve(store: &Arc<SessionStore>, token: &str) -> Resolution {
        let mut headers = HeaderMap::new();
        headers.insert("x-session-token", token.parse().expect("header"));
        let cred = credential::extract(&headers, "ory_kratos_session")
            .expect("well-formed")
            .expect("credential");
        store.resolve(&cred).await.0
    }

    #[tokio::test]
    async fn remote_purges_are_never_told_back_and_local_ones_are() {
        let (store, tier) = store("http://127.0.0.1:9");
        let key = CacheKey([7; 32]);
        store.apply_remote(Purge::Credential {
            key,
            session_id: Some("s1"),
        });
        store.apply_remote(Purge::SessionId("s1"));
        store.apply_remote(Purge::Identity("i1"));
        assert!(tier.purged.lock().expect("lock").is_empty());
        store.purge(Purge::SessionId("s1"));
        store.purge(Purge::Identity("i1"));
        assert_eq!(tier.purged.lock().expect("lock").len(), 2);
    }

    #[tokio::test]
    async fn a_session_purged_while_its_call_was_in_flight_is_not_shared() {
        let kratos = KratosDouble::start().await;
        let (store, tier) = store(&kratos.url());
        let racing = kratos.add_session("tok-racing", SessionSpec::default());
        kratos.add_session("tok-calm", SessionSpec::default());

        let before = SystemTime::now();
        assert!(matches!(
            resolve(&store, "tok-calm").await,
            Resolution::Valid { .. }
        ));
        {
            let remembered = tier.remembered.lock().expect("lock");
            assert_eq!(remembered.len(), 1, "a fresh session is shared");
            let (_, fingerprint, started) = &remembered[0];
            assert!(*started >= before && *started <= SystemTime::now());
            let looked_up = tier.looked_up.lock().expect("lock");
            assert_eq!(looked_up.len(), 1, "the tier was asked first");
            assert_eq!(
                &looked_up[0].fingerprint, fingerprint,
                "in the store's scope"
            );
            assert_eq!(looked_up[0].slots, 1);
        }

        // Kratos decides "valid" at once and answers 300 ms later; meanwhile another replica
        // purges the session (received here: applied, not told back)
        kratos.set_answer_delay(Duration::from_millis(300));
        let sid = racing["id"].as_str().expect("session id").to_string();
        let call = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { resolve(&store, "tok-racing").await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.apply_remote(Purge::SessionId(&sid));
        assert!(matches!(
            call.await.expect("task"),
            Resolution::Valid { .. }
        ));
        assert_eq!(
            tier.remembered.lock().expect("lock").len(),
            1,
            "the purged session was not shared"
        );
        assert!(tier.purged.lock().expect("lock").is_empty());
    }
}
