//! The TOML schema: what an operator writes. Every struct rejects unknown keys, every optional key has
//! its default here, and nothing in this file is trusted until [`super::compile`] has validated it.
//!
//! The types also derive `JsonSchema`: their doc comments are the descriptions of
//! `sessiongate config-schema` (see [`super::json_schema`]), so every key has one.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole configuration file, as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The listeners, limits and timeouts of the proxy itself.
    #[serde(default)]
    pub server: RawServer,
    /// The Ory Kratos instance sessions are checked against (`public_url` is required).
    pub kratos: RawKratos,
    /// The session cache in front of Kratos's whoami endpoint.
    #[serde(default)]
    pub cache: RawCache,
    /// Logging: format, filter and the access log.
    #[serde(default)]
    pub log: RawLog,
    /// The admin listener's own settings (the purge API of the fleet).
    #[serde(default)]
    pub admin: RawAdmin,
    /// Traces: W3C trace context is always propagated; spans are exported over OTLP only when
    /// `otlp_endpoint` is set.
    #[serde(default)]
    pub tracing: RawTracing,
    /// Signed identity tokens: the keys, issuer and lifetime of the JWTs routes with
    /// `identity_token = true` send upstream. Absent: no route may ask for a token.
    #[serde(default)]
    pub identity_token: Option<RawIdentityToken>,
    /// The routes, matched by host, then exact path, then longest path prefix (not by their order).
    /// At least one is required.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Public proxy listener, ip:port; use "0.0.0.0:8080" in a container.
    pub listen: String,
    /// Admin listener (/health/alive, /health/ready, /metrics), ip:port; must differ from `listen`.
    pub admin_listen: String,
    /// Worker threads of the proxy service (at least 1).
    pub threads: usize,
    /// The public origin clients use (scheme://host[:port], no path): the base of the `return_to`
    /// sent to the login page and of step-up URLs. Unset: no `return_to` is added.
    pub public_url: Option<String>,
    /// CIDRs or single IPs of the proxies in front of sessiongate whose `X-Forwarded-*` /
    /// `Forwarded` headers are honoured; from anyone else those headers are replaced. "0.0.0.0/0"
    /// and "::/0" are refused.
    pub trusted_proxies: Vec<String>,
    /// How long in-flight requests may run to completion after SIGTERM/SIGQUIT ("0s" allowed).
    /// Readiness turns 503 first, min(grace_period, 5s)/2 before the listeners close.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub grace_period: Duration,
    /// Largest total size of the request headers a client may send, in bytes (at least 1024).
    pub max_request_header_bytes: usize,
    /// Largest number of request headers a client may send (at least 1).
    pub max_request_headers: usize,
    /// Time allowed to connect to an upstream (> 0).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub upstream_connect_timeout: Duration,
    /// Time allowed between two reads from an upstream, time to first byte included (> 0).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub upstream_read_timeout: Duration,
    /// Time allowed between two reads from a client once a request has started (> 0).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub downstream_read_timeout: Duration,
    /// Most client connections open at once (1 to 1,000,000); beyond it a new connection gets a
    /// 503 and is closed (restart to change).
    pub max_connections: usize,
    /// How long an idle keep-alive client connection (or one that never sends a request) is kept
    /// before it is closed (> 0).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub downstream_keepalive_timeout: Duration,
    /// Decision API listener for ingresses (nginx `auth_request`, Traefik/Caddy forward auth,
    /// Envoy ext_authz, Oathkeeper-style `/decisions/<path>`), ip:port; unset: off. Must differ from
    /// `listen` and `admin_listen`; only peers in `trusted_proxies` get answers (restart to change).
    pub decisions_listen: Option<String>,
    /// Envoy ext_authz (HTTP service): the `path_prefix` Envoy puts before the original path on
    /// the decision listener ("" or "/..." without a trailing slash).
    pub decisions_path_prefix: String,
    /// Reload the configuration when the file changes (polled), besides on SIGHUP.
    pub watch_config: bool,
    /// How often the file is polled when `watch_config` is on (> 0).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
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
            decisions_listen: None,
            decisions_path_prefix: String::new(),
            watch_config: false,
            watch_interval: Duration::from_secs(2),
        }
    }
}

/// `[kratos]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawKratos {
    /// Kratos's public API base URL (http or https; a path prefix is kept). Required. sessiongate
    /// calls GET {public_url}/sessions/whoami, and {public_url}/health/alive for /health/ready.
    pub public_url: String,
    /// Time allowed for one whoami call (> 0); a slower answer is a 503 with Retry-After.
    #[serde(default = "default_kratos_timeout", with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub timeout: Duration,
    /// Name of the session cookie: "ory_kratos_session" for a self-hosted Kratos,
    /// "ory_session_<project slug>" on Ory Network.
    #[serde(default = "default_session_cookie")]
    pub session_cookie: String,
    /// Where browsers without a session are sent (303, with `return_to` when `server.public_url` is
    /// set) on routes with `on_unauthenticated = "redirect"`; required by such routes.
    #[serde(default)]
    pub login_url: Option<String>,
    /// Most whoami calls in flight at once (at least 1); further cache misses wait for a slot.
    #[serde(default = "default_max_concurrent_whoami")]
    pub max_concurrent_whoami: usize,
    /// Consecutive whoami failures (timeout, refused, 5xx, garbage) that open the circuit breaker;
    /// while open, requests get 503 without calling Kratos. 0 disables the breaker.
    #[serde(default = "default_breaker_failures")]
    #[schemars(range(max = u32::MAX))]
    pub circuit_breaker_failures: u32,
    /// How long an open breaker refuses calls before one probe call decides whether it closes (> 0).
    #[serde(default = "default_breaker_interval", with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
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
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    /// Session cache capacity in entries (at least 1).
    pub max_entries: u64,
    /// Longest time a valid session is cached. The real lifetime is min(max_ttl, the session's
    /// expires_at, Kratos's Ory-Session-Cache-For); a hit never extends it. "0s" disables caching.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub max_ttl: Duration,
    /// How long a credential Kratos rejected (401) is remembered. "0s" disables.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub negative_ttl: Duration,
    /// When whoami fails (5xx, timeout, refused, breaker open), keep serving a session Kratos
    /// validated within this window (never past its expires_at, never one Kratos rejected). "0s"
    /// disables it; "5m" rides out short Kratos outages.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub stale_if_error: Duration,
    /// The fleet's Redis (purge broadcast, shared L2 cache); absent = this replica's cache only.
    pub shared: Option<RawSharedCache>,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            stale_if_error: Duration::ZERO,
            shared: None,
        }
    }
}

/// `[cache.shared]`: several replicas behaving as one cache, on Redis.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSharedCache {
    /// "redis://host:port/db", or "rediss://" for TLS. May carry a password: never logged.
    pub redis_url: Secret,
    /// Prefix of every key and channel name, so several fleets can share one Redis.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// "purge" (broadcast purges only) or "purge_and_cache" (also the shared L2 cache).
    #[serde(default)]
    pub mode: SharedCacheMode,
    /// The longest one Redis call may take; a slower one is skipped, never waited on.
    #[serde(default = "default_shared_timeout", with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub timeout: Duration,
}

fn default_key_prefix() -> String {
    "sessiongate:".into()
}
fn default_shared_timeout() -> Duration {
    Duration::from_millis(50)
}

/// What the replicas share through Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharedCacheMode {
    /// Purges only: every purge reaches every replica; each keeps its own cache.
    #[default]
    Purge,
    /// Purges, plus a shared L2 cache of validated sessions read before calling Kratos.
    PurgeAndCache,
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// File holding the bearer token of "POST /cache/purge" on the admin listener; absent = the
    /// purge API is off.
    pub purge_token_file: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// "text" (for humans) or "json" (one object per line, for machines).
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. "info", "warn,sessiongate=debug".
    pub level: String,
    /// Whether to write one access line per request (route, status, outcome, duration, request id;
    /// never a token or cookie).
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

/// `[tracing]`: W3C trace context is always propagated; spans are exported only with an
/// `otlp_endpoint`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawTracing {
    /// OTLP/HTTP (protobuf) collector URL, e.g. "http://127.0.0.1:4318"; absent = no span export.
    /// A URL without a path gets the OTLP default "/v1/traces".
    pub otlp_endpoint: Option<String>,
    /// The "service.name" resource attribute of exported spans (1 to 255 characters).
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0; a sampled flag from the client's traceparent wins.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_ratio: f64,
}

impl Default for RawTracing {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "sessiongate".into(),
            sample_ratio: 1.0,
        }
    }
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique; letters, digits, '-', '_', '.'. The `route` label of metrics. Required.
    pub name: String,
    /// Exact canonical path ("/api/me"). Set exactly one of `path` / `path_prefix`.
    #[serde(default)]
    pub path: Option<String>,
    /// Canonical path prefix, matched on segment boundaries ("/api" matches "/api" and "/api/x",
    /// not "/apix"). A trailing slash is ignored; "/" matches everything.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Host name (no port, no scheme), compared case-insensitively. Unset: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// HTTP methods this route matches. Unset: every method. An empty list is refused.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Origin requests are forwarded to: http(s)://host:port, no path. Required, except on a
    /// `kratos_edge` route (whose upstream is `kratos.public_url`).
    #[serde(default)]
    pub upstream: Option<String>,
    /// How the route treats the session credential: "anonymous" (no session lookup, identity
    /// headers stripped), "optional" (identity forwarded when the credential is valid, request
    /// forwarded without identity otherwise) or "session" (a valid session is required). Required
    /// on ordinary routes (no default on purpose: a route states whether it is public); an edge
    /// route defaults to "anonymous".
    #[serde(default)]
    pub auth: Option<AuthMode>,
    /// "aal1", "aal2" or "aal3": the least authenticator assurance level. A lower session gets a
    /// step-up (403 with redirect_browser_to, or 303 in redirect mode); on an "optional" route it is
    /// forwarded without identity. Not on "anonymous" routes. Unset: any level Kratos accepts.
    #[serde(default)]
    pub require_aal: Option<String>,
    /// What an unauthenticated request on a "session" route gets: "json" (401 with a Kratos-style
    /// JSON error) or "redirect" (303 to `kratos.login_url` for GET/HEAD, 401 JSON otherwise).
    #[serde(default)]
    pub on_unauthenticated: OnUnauthenticated,
    /// Header name = dotted path into the Kratos session JSON ("identity.traits.email",
    /// "identity.verifiable_addresses.0.value"); strings are sent as they are, other values as
    /// compact JSON, missing values are not sent. Every name configured on any route, and every
    /// X-Sessiongate-* header, is deleted from every client request before sessiongate sets its
    /// own. Not on "anonymous" routes.
    #[serde(default)]
    pub identity_headers: BTreeMap<String, String>,
    /// Whether `Upgrade: websocket` requests are forwarded on this route; elsewhere they are refused.
    #[serde(default)]
    pub websocket: bool,
    /// Serve Kratos's public API under `path_prefix` (the upstream is `[kratos].public_url`),
    /// rewriting its URLs, Location headers and cookies to the app's own domain.
    #[serde(default)]
    pub kratos_edge: bool,
    /// Edge: `Domain` attribute given to the cookies Kratos sets (session, CSRF, continuity); it
    /// must cover `server.public_url`'s host. Unset: host-only cookies.
    #[serde(default)]
    pub cookie_domain: Option<String>,
    /// Edge: allowed `return_to` targets (query, form or JSON); others get 400 before Kratos sees
    /// them. Empty: not checked by the proxy (Kratos still checks).
    #[serde(default)]
    pub allowed_return_urls: Vec<String>,
    /// Edge: Ory Network custom-domain mode, sent as Ory-Base-URL-Rewrite-Token, never to the app
    /// or the client. Prefer the environment: SESSIONGATE__ROUTES__<n>__ORY_NETWORK_API_KEY.
    #[serde(default)]
    pub ory_network_api_key: Option<Secret>,
    /// Send a signed identity token (a JWT, see `[identity_token]`) upstream on this route. Not on
    /// "anonymous" routes.
    #[serde(default)]
    pub identity_token: bool,
    /// The header carrying the token. Unset: "X-Identity-Token". Like every identity header, it is
    /// deleted from every client request on every route.
    #[serde(default)]
    pub identity_token_header: Option<String>,
    /// The token's `aud` claim. Unset: no `aud`.
    #[serde(default)]
    pub identity_token_audience: Option<String>,
    /// Extra token claims: claim name = dotted path into the Kratos session JSON, as for
    /// `identity_headers` (values are strings; missing values are left out). The registered claims
    /// (iss, sub, aud, iat, nbf, exp, jti, sid, aal) cannot be replaced.
    #[serde(default)]
    pub identity_token_claims: BTreeMap<String, String>,
}

/// `[identity_token]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityToken {
    /// PKCS#8 PEM files of P-256 (ES256) or Ed25519 (EdDSA) private keys, read at start-up and on
    /// reload. The first signs; all are published in the JWKS (rotation: add the new key second,
    /// wait `ttl`, swap the order, wait `ttl` again, remove the old one).
    pub signing_keys: Vec<String>,
    /// The `iss` claim: who issued the token, as upstreams check it (e.g. "https://app.example.com").
    pub issuer: String,
    /// Lifetime of a token (whole seconds, 1s to 1h; never past the session's own expiry), and the
    /// `max-age` of the JWKS answer. A token is reused for the same session and route for 80% of it.
    #[serde(default = "default_token_ttl", with = "humantime_serde")]
    #[schemars(with = "super::json_schema::HumanDuration")]
    pub ttl: Duration,
    /// Also answer the JWKS on the public listener at this canonical path (e.g.
    /// "/.well-known/jwks.json"), for GET and HEAD, before any route. Unset: admin listener only.
    #[serde(default)]
    pub jwks_path: Option<String>,
}

fn default_token_ttl() -> Duration {
    Duration::from_secs(60)
}

/// A secret from the configuration: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How a route treats the session credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnUnauthenticated {
    /// 401 with a Kratos-style JSON error.
    #[default]
    Json,
    /// 303 to `kratos.login_url` for GET/HEAD, 401 JSON otherwise.
    Redirect,
}
