//! Reloading the configuration without dropping a request: on SIGHUP, and (with
//! `server.watch_config`) when the file changes.
//!
//! A new configuration is loaded and validated completely first; an invalid one is refused with a log
//! line (and `sessiongate_config_reloads_total{result="rejected"}`) while the old one keeps serving. A
//! valid one replaces the runtime atomically: requests in flight finish on the configuration they
//! started with, the next ones use the new one. The session cache is kept when the settings it is
//! built from ([`crate::state::StoreSettings`]: whoami's Kratos settings, `[cache]`, the session paths
//! identity headers read) are unchanged. Listener addresses, thread counts and log settings need a
//! restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config;
use crate::state::Shared;

/// Loads `path` and, when valid, makes it the running configuration.
pub fn reload_from(shared: &Shared, path: &Path) -> bool {
    let next = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let issues: Vec<String> = e.issues().iter().map(ToString::to_string).collect();
            tracing::error!(
                file = %path.display(),
                problems = %issues.join("; "),
                "configuration reload rejected; the running configuration stays"
            );
            shared.metrics.config_reload(false);
            return false;
        }
    };
    let current = shared.runtime();
    let (old, new) = (&current.config.server, &next.server);
    if old.listen != new.listen
        || old.admin_listen != new.admin_listen
        || old.decisions_listen != new.decisions_listen
        || old.threads != new.threads
        || old.limits.max_connections != new.limits.max_connections
    {
        tracing::warn!(
            "server.listen, server.admin_listen, server.decisions_listen, server.threads and server.max_connections change only on restart"
        );
    }
    match shared.reload(next) {
        Ok(()) => {
            tracing::info!(file = %path.display(), "configuration reloaded");
            shared.metrics.config_reload(true);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload failed; the running configuration stays");
            shared.metrics.config_reload(false);
            false
        }
    }
}

/// Starts a background thread that reloads on SIGHUP and, when the running configuration says so,
/// when the file's modification time or size changes.
pub fn spawn(shared: Arc<Shared>, path: PathBuf) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Register the handler before returning, so a SIGHUP right after start-up is not fatal.
    let mut hup = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    })?;
    std::thread::Builder::new()
        .name("sessiongate-reload".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut seen = fingerprint(&path);
                loop {
                    let cfg = shared.runtime();
                    let (watch, every) = (
                        cfg.config.server.watch_config,
                        cfg.config.server.watch_interval,
                    );
                    drop(cfg);
                    let poll = if watch {
                        every
                    } else {
                        Duration::from_secs(3600)
                    };
                    tokio::select! {
                        got = hup.recv() => {
                            if got.is_none() {
                                return;
                            }
                            tracing::info!("SIGHUP: reloading the configuration");
                            reload_from(&shared, &path);
                            seen = fingerprint(&path);
                        }
                        _ = tokio::time::sleep(poll) => {
                            if !watch {
                                continue;
                            }
                            let now = fingerprint(&path);
                            if now != seen {
                                seen = now;
                                tracing::info!("configuration file changed: reloading");
                                reload_from(&shared, &path);
                            }
                        }
                    }
                }
            });
        })
}

fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
