//! The state shared by the proxy and admin services: the current [`Runtime`] (configuration, route
//! table, session store), swappable as a whole on reload, plus metrics and the drain flag.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use url::Url;

use crate::admission::Gate;
use crate::config::{CacheConfig, Config, KratosConfig};
use crate::edge::WarnOnce;
use crate::fleet::{Fleet, FleetError};
use crate::identity::token::TokenIssuer;
use crate::identity::Template;
use crate::metrics::Metrics;
use crate::resolver::Resolver;
use crate::routing::RouteTable;
use crate::session::store::SessionStore;
use crate::session::whoami::WhoamiClient;
use crate::telemetry::{otlp, Tracing};

/// Everything one request needs, consistent for the whole request.
pub struct Runtime {
    /// The validated configuration this runtime was built from.
    pub config: Config,
    /// The routes of `config`, indexed for matching.
    pub table: RouteTable,
    /// The session cache; shared with the previous runtime when their [`StoreSettings`] are equal.
    pub store: Arc<SessionStore>,
    /// The whoami client the store calls (shared along with the store).
    pub whoami: WhoamiClient,
    /// Upstream name lookups (run time, cached).
    pub resolver: Arc<Resolver>,
    /// OIDC providers already warned about (one `redirect_uri` warning per provider and
    /// configuration; `crate::edge::oidc`).
    pub oidc_warned: WarnOnce,
    /// The identity token signer and its token cache (`[identity_token]`); kept across a reload
    /// that does not change `[identity_token]`.
    pub tokens: Option<Arc<TokenIssuer>>,
    /// Trace propagation and span export (`[tracing]`); shared with the previous runtime when
    /// `[tracing]` is unchanged, so a reload keeps the exporter and its queue.
    pub tracing: Arc<Tracing>,
}

/// Why the proxy could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The metrics registry refused a metric.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The whoami HTTP client could not be built.
    #[error("whoami client: {0}")]
    Client(#[from] reqwest::Error),
    /// The fleet (`[cache.shared]`) could not be started (never because Redis is down).
    #[error("fleet: {0}")]
    Fleet(#[from] FleetError),
    /// The OTLP span exporter could not be built.
    #[error("tracing.otlp_endpoint: {0}")]
    Tracing(#[from] otlp::BuildError),
}

/// What the session store and its whoami client are built from, as one value: two configurations
/// with equal settings can share one store, so a reload that changes none of them keeps the cache
/// (and the whoami client's slots and circuit breaker) as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings<'a> {
    /// `kratos.public_url` (base, ending in `/`).
    pub public_url: &'a Url,
    /// The whoami endpoint derived from it.
    pub whoami_url: &'a Url,
    /// `kratos.timeout`: the limit on one whoami call.
    pub timeout: Duration,
    /// `kratos.session_cookie`: the cookie name forwarded to whoami.
    pub session_cookie: &'a str,
    /// `kratos.max_concurrent_whoami`: whoami calls in flight at once.
    pub max_concurrent_whoami: usize,
    /// `kratos.circuit_breaker_failures` (0 disables the breaker).
    pub circuit_breaker_failures: u32,
    /// `kratos.circuit_breaker_interval`.
    pub circuit_breaker_interval: Duration,
    /// `[cache]`: size and lifetimes of cached sessions.
    pub cache: &'a CacheConfig,
    /// The session paths kept in cached sessions ([`Config::session_paths`]).
    pub session_paths: &'a [Template],
}

impl<'a> StoreSettings<'a> {
    /// The store settings of `config`.
    pub fn of(config: &'a Config) -> StoreSettings<'a> {
        // No `..`: a new `[kratos]` field does not compile until it is sorted into what the store
        // is built from (a change must rebuild it) or not (`_`).
        let KratosConfig {
            public_url,
            whoami_url,
            timeout,
            session_cookie,
            login_url: _,
            max_concurrent_whoami,
            circuit_breaker_failures,
            circuit_breaker_interval,
        } = &config.kratos;
        StoreSettings {
            public_url,
            whoami_url,
            timeout: *timeout,
            session_cookie,
            max_concurrent_whoami: *max_concurrent_whoami,
            circuit_breaker_failures: *circuit_breaker_failures,
            circuit_breaker_interval: *circuit_breaker_interval,
            cache: &config.cache,
            session_paths: &config.session_paths,
        }
    }
}

impl Runtime {
    /// Builds a runtime; reuses `previous`'s session store (and whoami client) when their
    /// [`StoreSettings`] are equal, so a reload keeps the cache warm.
    pub fn build(
        config: Config,
        metrics: &Arc<Metrics>,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, BuildError> {
        let table = RouteTable::new(&config.routes);
        let settings = StoreSettings::of(&config);
        let reusable = previous.filter(|p| StoreSettings::of(&p.config) == settings);
        let (store, whoami) = match reusable {
            Some(p) => (Arc::clone(&p.store), p.whoami.clone()),
            None => {
                let whoami = WhoamiClient::new(&config.kratos, Arc::clone(metrics))?
                    .keeping(config.session_paths.clone());
                let store =
                    SessionStore::new(config.cache.clone(), whoami.clone(), Arc::clone(metrics));
                (store, whoami)
            }
        };
        let tracing = match previous.filter(|p| p.config.tracing == config.tracing) {
            Some(p) => Arc::clone(&p.tracing),
            None => Arc::new(Tracing::new(&config.tracing)?),
        };
        let tokens = match previous.filter(|p| p.config.identity_token == config.identity_token) {
            Some(p) => p.tokens.clone(),
            None => config.identity_token.as_ref().map(|t| {
                Arc::new(
                    TokenIssuer::new(t.issuer.clone(), t.ttl, t.keys.clone())
                        .with_jwks_path(t.jwks_path.clone()),
                )
            }),
        };
        Ok(Runtime {
            config,
            table,
            store,
            whoami,
            resolver: Arc::new(Resolver::new()),
            oidc_warned: WarnOnce::default(),
            tracing,
            tokens,
        })
    }

    /// What admission decides with, from this runtime.
    pub fn gate(&self) -> Gate<'_, Arc<SessionStore>> {
        Gate {
            config: &self.config,
            table: &self.table,
            sessions: &self.store,
            tokens: self.tokens.as_deref(),
        }
    }
}

/// Shared between the proxy and the admin listener.
pub struct Shared {
    runtime: ArcSwap<Runtime>,
    pub metrics: Arc<Metrics>,
    draining: AtomicBool,
    access_log: AtomicBool,
    /// Requests being processed now (see [`InFlight`]).
    in_flight: AtomicUsize,
    /// The fleet (`[cache.shared]`), started once with the first configuration.
    fleet: OnceLock<Arc<Fleet>>,
}

/// Counts one request in [`Shared::in_flight`] for as long as it lives (the proxy keeps one in
/// each request's context, which pingora creates after reading the request header and drops when
/// the request is done). A shutdown waits for the count to reach zero, not for a fixed time.
pub struct InFlight(Arc<Shared>);

impl InFlight {
    /// Counts one more request in flight until the returned value is dropped.
    pub fn new(shared: &Arc<Shared>) -> InFlight {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// Builds the metrics and the first runtime from `config`.
    pub fn new(config: Config) -> Result<Arc<Shared>, BuildError> {
        let metrics = Arc::new(Metrics::new()?);
        let access_log = config.log.access_log;
        let runtime = Runtime::build(config, &metrics, None)?;
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            draining: AtomicBool::new(false),
            access_log: AtomicBool::new(access_log),
            in_flight: AtomicUsize::new(0),
            fleet: OnceLock::new(),
        });
        let rt = shared.runtime();
        if let Some(cfg) = &rt.config.shared_cache {
            let fleet = Fleet::start(
                cfg,
                rt.config.cache.max_ttl,
                &shared.metrics,
                Arc::downgrade(&shared),
            )?;
            rt.store.attach_shared(fleet.clone());
            let _ = shared.fleet.set(fleet);
        }
        Ok(shared)
    }

    /// The fleet, when `[cache.shared]` was configured at start-up.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.get()
    }

    /// The current runtime (a cheap pointer copy).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Replaces the runtime with one built from `config`.
    pub fn reload(&self, config: Config) -> Result<(), BuildError> {
        let current = self.runtime.load_full();
        let access_log = config.log.access_log;
        let next = Runtime::build(config, &self.metrics, Some(&current))?;
        match (self.fleet.get(), &next.config.shared_cache) {
            (None, Some(_)) => tracing::warn!(
                "cache.shared was added: it needs a restart; this replica stays local-only until then"
            ),
            (Some(_), None) => tracing::warn!(
                "cache.shared was removed: it needs a restart; this replica stays in the fleet until then"
            ),
            (Some(_), Some(_)) if next.config.shared_cache != current.config.shared_cache => {
                tracing::warn!(
                    "cache.shared changed: it needs a restart; the settings of the start stay in effect"
                );
            }
            _ => {}
        }
        if let Some(fleet) = self.fleet.get() {
            // a store reused from `current` has it already; a new one brings its own scope
            next.store.attach_shared(fleet.clone());
        }
        self.runtime.store(Arc::new(next));
        self.access_log.store(access_log, Ordering::Relaxed);
        Ok(())
    }

    /// Whether access lines are written (`log.access_log` of the running configuration).
    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    /// Marks the process as draining: `/health/ready` fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`Shared::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Requests being processed now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_str_with_env;

    const BASE: &str = r#"
[kratos]
public_url = "http://127.0.0.1:4433"
login_url = "https://app.example.com/login"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:3000"
auth = "session"
[routes.identity_headers]
"X-User-Id" = "identity.id"
"#;

    /// `BASE` with the given keys overridden (`KRATOS__TIMEOUT`, as environment variables name them).
    fn config(overrides: &[(&str, &str)]) -> Config {
        let env = overrides
            .iter()
            .map(|(k, v)| (format!("SESSIONGATE__{k}"), v.to_string()));
        match from_str_with_env(BASE, "test", env) {
            Ok(c) => c,
            Err(e) => panic!("{overrides:?}: {e}"),
        }
    }

    fn build(
        overrides: &[(&str, &str)],
        metrics: &Arc<Metrics>,
        previous: Option<&Runtime>,
    ) -> Runtime {
        match Runtime::build(config(overrides), metrics, previous) {
            Ok(r) => r,
            Err(e) => panic!("{overrides:?}: {e}"),
        }
    }

    #[test]
    fn changing_any_store_setting_rebuilds_the_store() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let previous = build(&[], &metrics, None);
        for (key, value) in [
            ("KRATOS__PUBLIC_URL", "http://127.0.0.1:5555"),
            ("KRATOS__TIMEOUT", "900ms"),
            ("KRATOS__SESSION_COOKIE", "other_session"),
            ("KRATOS__MAX_CONCURRENT_WHOAMI", "3"),
            ("KRATOS__CIRCUIT_BREAKER_FAILURES", "0"),
            ("KRATOS__CIRCUIT_BREAKER_INTERVAL", "7s"),
            ("CACHE__MAX_ENTRIES", "10"),
            ("CACHE__MAX_TTL", "5s"),
            ("CACHE__NEGATIVE_TTL", "0s"),
            ("CACHE__STALE_IF_ERROR", "30s"),
            // a new session path to keep in cached sessions
            (
                "ROUTES__0__IDENTITY_HEADERS__X-USER-EMAIL",
                "identity.traits.email",
            ),
        ] {
            let next = build(&[(key, value)], &metrics, Some(&previous));
            assert_ne!(
                StoreSettings::of(&previous.config),
                StoreSettings::of(&next.config),
                "{key}"
            );
            assert!(!Arc::ptr_eq(&previous.store, &next.store), "{key}");
        }
    }

    #[test]
    fn changing_anything_else_keeps_the_store() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let previous = build(&[], &metrics, None);
        for (key, value) in [
            ("LOG__ACCESS_LOG", "true"),
            ("LOG__ACCESS_LOG", "false"),
            ("LOG__LEVEL", "debug"),
            ("KRATOS__LOGIN_URL", "https://app.example.com/sign-in"),
            ("ROUTES__0__UPSTREAM", "http://127.0.0.1:4000"),
            ("ROUTES__0__AUTH", "optional"),
            ("SERVER__GRACE_PERIOD", "3s"),
            ("SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
            // another header name reading a session path already kept
            ("ROUTES__0__IDENTITY_HEADERS__X-USER", "identity.id"),
        ] {
            let next = build(&[(key, value)], &metrics, Some(&previous));
            assert_eq!(
                StoreSettings::of(&previous.config),
                StoreSettings::of(&next.config),
                "{key}"
            );
            assert!(Arc::ptr_eq(&previous.store, &next.store), "{key}");
        }
    }
}
