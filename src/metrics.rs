//! Prometheus metrics. Every name starts with `sessiongate_`; labels are bounded: route names from the
//! config (or `none`), status codes, outcomes and results from fixed lists. Never a path, a host or a
//! credential.
//!
//! Each server owns its own [`Registry`], so several servers in one process (tests) do not mix counts.
//!
//! The session layer reports through [`SessionEvents`], which [`Metrics`] implements: this module
//! depends on `session`, never the other way round.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::session::store::LookupKind;
use crate::session::SessionEvents;

/// The route label of requests that matched no route.
pub const NO_ROUTE: &str = "none";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// All of sessiongate's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    auth_decisions: IntCounterVec,
    whoami_calls: IntCounterVec,
    whoami_duration: Histogram,
    cache_lookups: IntCounterVec,
    cache_entries: IntGauge,
    upstream_errors: IntCounterVec,
    config_reloads: IntCounterVec,
    stale_served: IntCounterVec,
    oidc_redirect_mismatch: IntCounterVec,
}

impl Metrics {
    /// Creates every metric and registers it in a registry of its own.
    ///
    /// # Errors
    /// When prometheus refuses a metric (a bad name, a duplicate registration): a programming
    /// error, never input.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "sessiongate_requests_total",
                "Requests answered, by route and status code.",
            ),
            &["route", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "sessiongate_request_duration_seconds",
                "Time from request start to the end of the response, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let auth_decisions = IntCounterVec::new(
            Opts::new(
                "sessiongate_auth_decisions_total",
                "Authentication decisions, by route and outcome.",
            ),
            &["route", "outcome"],
        )?;
        let whoami_calls = IntCounterVec::new(
            Opts::new(
                "sessiongate_whoami_calls_total",
                "Calls to Kratos whoami, by result.",
            ),
            &["result"],
        )?;
        let whoami_duration = Histogram::with_opts(
            HistogramOpts::new(
                "sessiongate_whoami_duration_seconds",
                "Duration of whoami calls.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "sessiongate_cache_lookups_total",
                "Session cache lookups, by result (hit, negative_hit, miss, coalesced).",
            ),
            &["result"],
        )?;
        let cache_entries = IntGauge::new(
            "sessiongate_cache_entries",
            "Entries in the session cache (sampled at scrape time).",
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "sessiongate_upstream_errors_total",
                "Requests that failed to reach or read from the upstream, by route.",
            ),
            &["route"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "sessiongate_config_reloads_total",
                "Configuration reloads, by result (ok, rejected).",
            ),
            &["result"],
        )?;
        let stale_served = IntCounterVec::new(
            Opts::new(
                "sessiongate_stale_sessions_served_total",
                "Sessions served from the stale window while Kratos was failing, by route.",
            ),
            &["route"],
        )?;
        let oidc_redirect_mismatch = IntCounterVec::new(
            Opts::new(
                "sessiongate_oidc_redirect_uri_mismatch_total",
                "OIDC provider redirects whose redirect_uri is not on the public origin, by provider.",
            ),
            &["provider"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(auth_decisions.clone()))?;
        registry.register(Box::new(whoami_calls.clone()))?;
        registry.register(Box::new(whoami_duration.clone()))?;
        registry.register(Box::new(cache_lookups.clone()))?;
        registry.register(Box::new(cache_entries.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(stale_served.clone()))?;
        registry.register(Box::new(oidc_redirect_mismatch.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            auth_decisions,
            whoami_calls,
            whoami_duration,
            cache_lookups,
            cache_entries,
            upstream_errors,
            config_reloads,
            stale_served,
            oidc_redirect_mismatch,
        })
    }

    /// One finished request.
    pub fn observe_request(&self, route: &str, status: u16, duration: Duration) {
        let mut buf = [0u8; 3];
        self.requests
            .with_label_values(&[route, status_str(status, &mut buf)])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(duration.as_secs_f64());
    }

    /// One authentication decision on `route` (`sessiongate_auth_decisions_total`).
    pub fn auth_decision(&self, route: &str, outcome: &str) {
        self.auth_decisions
            .with_label_values(&[route, outcome])
            .inc();
    }

    /// One whoami call with `result` that took `duration` (`sessiongate_whoami_calls_total`;
    /// `sessiongate_whoami_duration_seconds` when something was sent).
    pub fn observe_whoami(&self, result: &str, duration: Option<Duration>) {
        self.whoami_calls.with_label_values(&[result]).inc();
        if let Some(d) = duration {
            self.whoami_duration.observe(d.as_secs_f64());
        }
    }

    /// One request on `route` that failed to reach or read from its upstream
    /// (`sessiongate_upstream_errors_total`).
    pub fn upstream_error(&self, route: &str) {
        self.upstream_errors.with_label_values(&[route]).inc();
    }

    /// One configuration reload, accepted (`ok`) or `rejected` (`sessiongate_config_reloads_total`).
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "rejected" }])
            .inc();
    }

    /// One session on `route` served from the stale window (`sessiongate_stale_sessions_served_total`).
    pub fn stale_served(&self, route: &str) {
        self.stale_served.with_label_values(&[route]).inc();
    }

    /// One OIDC provider redirect of `provider` off the public origin
    /// (`sessiongate_oidc_redirect_uri_mismatch_total`).
    pub fn oidc_redirect_mismatch(&self, provider: &str) {
        self.oidc_redirect_mismatch
            .with_label_values(&[provider])
            .inc();
    }

    /// Registers metrics defined elsewhere (`crate::fleet`, `crate::connections`) in this registry, so
    /// `/metrics` shows them.
    ///
    /// # Errors
    /// When prometheus refuses the collector (a duplicate name): a programming error.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// The Prometheus text exposition, with the cache gauge set to `cache_entries`.
    pub fn render(&self, cache_entries: u64) -> String {
        self.cache_entries
            .set(i64::try_from(cache_entries).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl SessionEvents for Metrics {
    fn cache_lookup(&self, kind: LookupKind) {
        self.cache_lookups.with_label_values(&[kind.as_str()]).inc();
    }

    fn whoami_call(&self, result: &'static str, duration: Option<Duration>) {
        self.observe_whoami(result, duration);
    }
}

/// Formats a status code without allocating.
fn status_str(status: u16, buf: &mut [u8; 3]) -> &str {
    let s = status.min(999);
    buf[0] = b'0' + (s / 100) as u8;
    buf[1] = b'0' + (s / 10 % 10) as u8;
    buf[2] = b'0' + (s % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_the_contract_names() {
        let m = Metrics::new().expect("metrics");
        m.observe_request("api", 200, Duration::from_millis(3));
        m.auth_decision("api", "authenticated");
        m.observe_whoami("valid", Some(Duration::from_millis(1)));
        m.cache_lookup(LookupKind::Hit);
        m.upstream_error("api");
        let text = m.render(5);
        for name in [
            "sessiongate_requests_total{route=\"api\",status=\"200\"} 1",
            "sessiongate_request_duration_seconds_bucket{route=\"api\"",
            "sessiongate_auth_decisions_total{outcome=\"authenticated\",route=\"api\"} 1",
            "sessiongate_whoami_calls_total{result=\"valid\"} 1",
            "sessiongate_whoami_duration_seconds_count 1",
            "sessiongate_cache_lookups_total{result=\"hit\"} 1",
            "sessiongate_cache_entries 5",
            "sessiongate_upstream_errors_total{route=\"api\"} 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn status_formatting() {
        let mut b = [0; 3];
        assert_eq!(status_str(503, &mut b), "503");
        assert_eq!(status_str(200, &mut b), "200");
    }
}
