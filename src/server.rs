//! Assembling and running the pingora server: the proxy service on `server.listen`, the admin service
//! on `server.admin_listen`, the decision API on `server.decisions_listen` (when set), and the signal handling around them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::config::Config;
use crate::connections::{ConnectionGate, ConnectionMetrics};
use crate::decisions::Decisions;
use crate::proxy::Proxy;
use crate::state::{BuildError, Shared};

/// The read buffer pingora puts in front of each client socket, in bytes: none.
///
/// pingora's default is 64 KiB per connection, allocated when the connection is accepted and kept
/// until it closes (pingora-core 0.9, `protocols/l4/stream.rs`, `DEFAULT_L4_READ_BUFFER_SIZE`): most
/// of what an idle keep-alive connection cost (benches/memory/idle.py). It saves read calls under
/// TLS, which this listener does not do; request heads are read into the session's own 4 KiB buffer
/// and bodies into pingora's body buffers either way. The price is one extra 1-byte read per request
/// (`crate::connections` peeks for the next request).
const DOWNSTREAM_READ_BUFFER: usize = 0;

/// A built, not yet running, sessiongate.
pub struct Sessiongate {
    pub server: Server,
    pub shared: Arc<Shared>,
}

/// Builds the pingora server for a validated configuration.
pub fn build(config: Config) -> Result<Sessiongate, BuildError> {
    let conf = ServerConf {
        threads: config.server.threads,
        // pingora counts whole seconds: round up so a grace period is never cut short.
        grace_period_seconds: Some(config.server.grace_period.as_millis().div_ceil(1000) as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: 256,
        ..Default::default()
    };
    let listen = config.server.listen;
    let admin_listen = config.server.admin_listen;
    let decisions_listen = config.server.decisions_listen;
    let threads = config.server.threads;
    let max_connections = config.server.limits.max_connections;

    let shared = Shared::new(config)?;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let app = pingora::proxy::http_proxy(&server.configuration, Proxy::new(Arc::clone(&shared)));
    let metrics = ConnectionMetrics::register(&shared.metrics)?;
    let gate = ConnectionGate::new(app, Arc::clone(&shared), max_connections, metrics);
    let mut proxy = Service::new("sessiongate proxy".to_string(), gate);
    proxy.add_listener(
        ListenerConfig::tcp(listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(DOWNSTREAM_READ_BUFFER)),
    );
    proxy.threads = Some(threads);

    let mut admin = Service::new(
        "sessiongate admin".to_string(),
        Admin::new(Arc::clone(&shared), listen),
    );
    admin.add_tcp(&admin_listen.to_string());
    admin.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    if let Some(addr) = decisions_listen {
        let mut decisions = Service::new(
            "sessiongate decisions".to_string(),
            Decisions::new(Arc::clone(&shared)),
        );
        decisions.add_tcp(&addr.to_string());
        decisions.threads = Some(threads);
        server.add_service(decisions);
    }
    Ok(Sessiongate { server, shared })
}

impl Sessiongate {
    /// Runs until `signal` asks to stop; returns after the services have shut down.
    pub fn run(self, signal: Box<dyn ShutdownSignalWatch>) {
        self.server.run(RunArgs {
            shutdown_signal: signal,
        });
    }
}

/// Production signal handling: SIGTERM and SIGQUIT drain (readiness fails first, then the listeners
/// close and in-flight requests get at most `server.grace_period`; the process exits as soon as
/// none is left), SIGINT stops at once.
pub struct UnixSignals {
    pub shared: Arc<Shared>,
    /// How long `/health/ready` fails before the listeners close, so load balancers stop sending.
    pub readiness_lead: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for UnixSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                return ShutdownSignal::FastShutdown;
            }
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = quit.recv() => tracing::info!("SIGQUIT: draining"),
        }
        self.shared.start_draining();
        tokio::time::sleep(self.readiness_lead).await;
        exit_when_idle(Arc::clone(&self.shared));
        ShutdownSignal::GracefulTerminate
    }
}

/// pingora's graceful shutdown closes the listeners, lets in-flight requests finish and then
/// waits out the whole grace period whatever is left (pingora-core 0.9, `Server::run_server`).
/// This watcher ends the process as soon as no request is in flight, and leaves the rest to
/// pingora when the grace period runs out first.
fn exit_when_idle(shared: Arc<Shared>) {
    let grace = shared.runtime().config.server.grace_period;
    let spawned = std::thread::Builder::new()
        .name("sessiongate-drain".into())
        .spawn(move || {
            // let pingora close the listeners before counting
            std::thread::sleep(Duration::from_millis(100));
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if shared.in_flight() == 0 {
                    // purges still queued for the other replicas go out first (bounded)
                    if let Some(fleet) = shared.fleet() {
                        fleet.flush();
                    }
                    // every request's span has ended: send what the exporter still queues
                    shared.runtime().tracing.force_flush();
                    tracing::info!("drained: no request in flight; exiting");
                    std::process::exit(0);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the drain; waiting out the grace period");
    }
}
