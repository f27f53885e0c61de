//! Log set-up: `tracing` with text for humans or JSON for machines. Pingora's own `log` records are
//! routed into the same subscriber.

use crate::config::schema::{LogFormat, RawLog};

/// Installs the global subscriber. Returns an error when one is already installed.
pub fn init(cfg: &RawLog) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.level).map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| e.to_string())
}
