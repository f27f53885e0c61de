//! The TOML schema: what an operator writes. Every struct rejects unknown keys, every optional key has
//! its default here, and nothing in this file is trusted until [`super::compile`] has validated it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub kratos: RawKratos,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Public proxy listener.
    pub listen: String,
    /// Admin listener: health and metrics.
    pub admin_listen: String,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Public origin used to build absolute `return_to` URLs.
    pub public_url: Option<String>,
    /// CIDRs whose `X-Forwarded-*` / `Forwarded` headers are honoured.
    pub trusted_proxies: Vec<String>,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Largest total size of the request headers a client may send.
    pub max_request_header_bytes: usize,
    /// Largest number of request headers a client may send.
    pub max_request_headers: usize,
    /// Time allowed to connect to an upstream.
    #[serde(with = "humantime_serde")]
    pub upstream_connect_timeout: Duration,
    /// Time allowed between two reads from an upstream (time to first byte included).
    #[serde(with = "humantime_serde")]
    pub upstream_read_timeout: Duration,
    /// Time allowed between two reads from a client once a request has started.
    #[serde(with = "humantime_serde")]
    pub downstream_read_timeout: Duration,
    /// Most downstream connections open at once; beyond it a new connection gets 503 and is closed.
    pub max_connections: usize,
    /// How long an idle keep-alive client connection is kept before it is closed.
    #[serde(with = "humantime_serde")]
    pub downstream_keepalive_timeout: Duration,
    /// Reload the configuration when the file changes (polled), besides on SIGHUP.
    pub watch_config: bool,
    /// How often the file is polled when `watch_config` is on.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9091".into(),
            threads: 2,
            public_url: None,
            trusted_proxies: Vec::new(),
            grace_period: Duration::from_secs(10),
            max_request_header_bytes: 32 * 1024,
            max_request_headers: 100,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_read_timeout: Duration::from_secs(60),
            downstream_read_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            downstream_keepalive_timeout: Duration::from_secs(60),
            watch_config: false,
            watch_interval: Duration::from_secs(2),
        }
    }
}

/// `[kratos]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKratos {
    /// Kratos public API base URL.
    pub public_url: String,
    #[serde(default = "default_kratos_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_session_cookie")]
    pub session_cookie: String,
    /// Where browsers go when they have no session (`on_unauthenticated = "redirect"`).
    #[serde(default)]
    pub login_url: Option<String>,
    /// Most whoami calls in flight at once; further misses wait for a slot.
    #[serde(default = "default_max_concurrent_whoami")]
    pub max_concurrent_whoami: usize,
    /// Consecutive whoami failures that open the circuit breaker; 0 disables it.
    #[serde(default = "default_breaker_failures")]
    pub circuit_breaker_failures: u32,
    /// How long an open breaker refuses calls before letting one probe through.
    #[serde(default = "default_breaker_interval", with = "humantime_serde")]
    pub circuit_breaker_interval: Duration,
}

fn default_kratos_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_session_cookie() -> String {
    "ory_kratos_session".into()
}
fn default_max_concurrent_whoami() -> usize {
    64
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_interval() -> Duration {
    Duration::from_secs(2)
}

/// `[cache]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub max_entries: u64,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// When whoami fails (5xx, timeout, refused), keep serving a session validated within this window;
    /// never one Kratos rejected. 0 disables.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            stale_if_error: Duration::ZERO,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `sessiongate=debug`.
    pub level: String,
    /// Whether to write one access line per request.
    pub access_log: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            access_log: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub upstream: Option<String>,
    /// Required on ordinary routes (no default on purpose: a route states whether it is public);
    /// an edge route defaults to `anonymous`.
    #[serde(default)]
    pub auth: Option<AuthMode>,
    #[serde(default)]
    pub require_aal: Option<String>,
    #[serde(default)]
    pub on_unauthenticated: OnUnauthenticated,
    #[serde(default)]
    pub identity_headers: BTreeMap<String, String>,
    /// Whether `Upgrade` (websocket) requests are forwarded on this route.
    #[serde(default)]
    pub websocket: bool,
    /// Serve Kratos's public API under `path_prefix` (the upstream is `[kratos].public_url`).
    #[serde(default)]
    pub kratos_edge: bool,
    /// Edge: `Domain` for cookies Kratos sets; absent = host-only cookies.
    #[serde(default)]
    pub cookie_domain: Option<String>,
    /// Edge: allowed `return_to` targets; empty = not checked by the proxy (Kratos still checks).
    #[serde(default)]
    pub allowed_return_urls: Vec<String>,
    /// Edge: Ory Network custom-domain mode.
    #[serde(default)]
    pub ory_network_api_key: Option<Secret>,
}

/// A secret from the configuration: its `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How a route treats the session credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No whoami call; identity headers are stripped and never set.
    Anonymous,
    /// Identity forwarded when a valid credential is present.
    Optional,
    /// A valid session is required.
    Session,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Anonymous => "anonymous",
            AuthMode::Optional => "optional",
            AuthMode::Session => "session",
        }
    }
}

/// What an unauthenticated request on a `session` route gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnauthenticated {
    /// 401 with a Kratos-style JSON error.
    #[default]
    Json,
    /// 303 to `kratos.login_url` for GET/HEAD, 401 JSON otherwise.
    Redirect,
}
