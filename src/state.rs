//! The state shared by the proxy and admin services: the current [`Runtime`] (configuration, route
//! table, session store), swappable as a whole on reload, plus metrics and the drain flag.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::resolver::Resolver;
use crate::routing::RouteTable;
use crate::session::store::SessionStore;
use crate::session::whoami::WhoamiClient;

/// Everything one request needs, consistent for the whole request.
pub struct Runtime {
    pub config: Config,
    pub table: RouteTable,
    pub store: Arc<SessionStore>,
    pub whoami: WhoamiClient,
    /// Upstream name lookups (run time, cached).
    pub resolver: Arc<Resolver>,
}

/// Why the proxy could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("whoami client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Runtime {
    /// Builds a runtime; reuses `previous`'s session store when the Kratos and cache settings are the
    /// same, so a reload keeps the cache warm.
    pub fn build(
        config: Config,
        metrics: &Arc<Metrics>,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, BuildError> {
        let table = RouteTable::new(&config.routes);
        let kept = config.session_paths.clone();
        let reusable = previous.filter(|p| {
            p.config.kratos.public_url == config.kratos.public_url
                && p.config.kratos.timeout == config.kratos.timeout
                && p.config.kratos.session_cookie == config.kratos.session_cookie
                && p.config.kratos.max_concurrent_whoami == config.kratos.max_concurrent_whoami
                && p.config.cache.max_entries == config.cache.max_entries
                && p.config.cache.max_ttl == config.cache.max_ttl
                && p.config.cache.negative_ttl == config.cache.negative_ttl
                && p.config.cache.stale_if_error == config.cache.stale_if_error
                && p.whoami.kept() == kept.as_slice()
                && p.config.kratos.circuit_breaker_failures
                    == config.kratos.circuit_breaker_failures
                && p.config.kratos.circuit_breaker_interval
                    == config.kratos.circuit_breaker_interval
        });
        let (store, whoami) = match reusable {
            Some(p) => (Arc::clone(&p.store), p.whoami.clone()),
            None => {
                let whoami = WhoamiClient::new(&config.kratos, Arc::clone(metrics))?.keeping(kept);
                let store =
                    SessionStore::new(config.cache.clone(), whoami.clone(), Arc::clone(metrics));
                (store, whoami)
            }
        };
        Ok(Runtime {
            config,
            table,
            store,
            whoami,
            resolver: Arc::new(Resolver::new()),
        })
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
}

/// Counts one request in [`Shared::in_flight`] for as long as it lives (the proxy keeps one in
/// each request's context, which pingora creates after reading the request header and drops when
/// the request is done). A shutdown waits for the count to reach zero, not for a fixed time.
pub struct InFlight(Arc<Shared>);

impl InFlight {
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
    pub fn new(config: Config) -> Result<Arc<Shared>, BuildError> {
        let metrics = Arc::new(Metrics::new()?);
        let access_log = config.log.access_log;
        let runtime = Runtime::build(config, &metrics, None)?;
        Ok(Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            draining: AtomicBool::new(false),
            access_log: AtomicBool::new(access_log),
            in_flight: AtomicUsize::new(0),
        }))
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
        self.runtime.store(Arc::new(next));
        self.access_log.store(access_log, Ordering::Relaxed);
        Ok(())
    }

    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    /// Marks the process as draining: `/health/ready` fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Requests being processed now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}
