//! Log set-up: `tracing` with text for humans or JSON for machines. Pingora's own `log` records are
//! routed into the same subscriber.
//!
//! Whatever `log.level` says, the libraries that print raw request headers at debug level (pingora,
//! hyper, reqwest, h2) are capped at `info`: their debug lines would carry session tokens and cookies.

use tracing_subscriber::EnvFilter;

use crate::config::schema::{LogFormat, RawLog};

/// Targets whose debug output contains raw headers or bodies.
const CAPPED: &[&str] = &[
    "pingora_core",
    "pingora_proxy",
    "pingora_http",
    "pingora_pool",
    "pingora",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "rustls",
];

/// The filter for a `log.level` value, with the capped targets pinned at `info` at most.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    let mut f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    let lowered = level.to_ascii_lowercase();
    if !(lowered.contains("debug") || lowered.contains("trace")) {
        // Nothing asks for debug output: adding the caps would raise those targets to `info`.
        return Ok(f);
    }
    for target in CAPPED {
        let directive = format!("{target}=info")
            .parse()
            .map_err(|e| format!("{e}"))?;
        f = f.add_directive(directive);
    }
    Ok(f)
}

/// Installs the global subscriber. Returns an error when one is already installed.
pub fn init(cfg: &RawLog) -> Result<(), String> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&cfg.level)?)
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

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn caps_only_when_debug_is_asked_for() {
        let quiet = filter("warn").expect("filter").to_string();
        assert!(!quiet.contains("pingora"), "{quiet}");
        let verbose = filter("debug").expect("filter").to_string();
        assert!(verbose.contains("pingora_proxy=info"), "{verbose}");
        let targeted = filter("warn,pingora_core=trace")
            .expect("filter")
            .to_string();
        assert!(targeted.contains("pingora_core=info"), "{targeted}");
    }
}
