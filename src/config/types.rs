//! The validated configuration the proxy runs on, as built by `compile` from the raw schema.
//!
//! These types are data: addresses, URLs, durations, names, templates. Nothing here looks a name
//! up, opens a connection or holds a cache; the runtime built from a [`Config`]
//! ([`crate::state::Runtime`]) owns those. The one exception is [`Route::edge`], see there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use url::Url;

use super::schema::{AuthMode, OnUnauthenticated, RawLog, Secret, SharedCacheMode};
use crate::edge::EdgeRoute;
use crate::identity::keys::SigningKey;
use crate::identity::token::RouteToken;
use crate::identity::{IdentityHeader, Template};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`: listeners, threads, public origin, trusted proxies, limits, reloading.
    pub server: ServerConfig,
    /// `[kratos]`: where Kratos is and how whoami is called.
    pub kratos: KratosConfig,
    /// `[cache]`: the session cache.
    pub cache: CacheConfig,
    /// `[log]`, as written (its `level` was checked to be a valid filter).
    pub log: RawLog,
    /// `[cache.shared]`: the fleet's Redis; `None` = local-only caching.
    pub shared_cache: Option<SharedCacheConfig>,
    /// `[admin]`: the purge API's token.
    pub admin: AdminConfig,
    /// `[tracing]`: span export (trace context propagation is always on).
    pub tracing: TracingConfig,
    /// `[[routes]]`, in file order; `Route::index` is the position in the file.
    pub routes: Vec<Route>,
    /// Every identity header name configured on any route (lowercase): stripped from every request.
    pub identity_header_names: Vec<HeaderName>,
    /// Every session path an identity header reads (deduplicated); `IdentityHeader::slot` indexes it.
    pub session_paths: Vec<Template>,
    /// The first Kratos edge route: where browsers reach Kratos. Step-up and login redirects and a
    /// session cookie re-issued by whoami go through its rewriting (public origin + prefix).
    pub browser_edge: Option<Arc<EdgeRoute>>,
    /// `[identity_token]`: issuer, ttl, the keys (parsed from their files at load time) and the
    /// optional public JWKS path. The runtime builds the signer and its token cache from it.
    pub identity_token: Option<IdentityTokenConfig>,
}

/// `[identity_token]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityTokenConfig {
    /// The `iss` claim.
    pub issuer: String,
    /// Token lifetime (whole seconds, 1 s to 1 h), also the JWKS `Cache-Control` max-age.
    pub ttl: Duration,
    /// The first signs; all are published.
    pub keys: Vec<SigningKey>,
    /// `identity_token.jwks_path`: the JWKS also on the public listener.
    pub jwks_path: Option<String>,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The public (proxy) listener address.
    pub listen: SocketAddr,
    /// The admin listener address (health, metrics); never the same as `listen`.
    pub admin_listen: SocketAddr,
    /// Worker threads of the proxy service (at least 1).
    pub threads: usize,
    /// The public origin (`https://app.example.com`), no trailing slash.
    pub public_origin: Option<String>,
    /// Networks whose forwarding headers are honoured (never `0.0.0.0/0` or `::/0`).
    pub trusted_proxies: Vec<IpNet>,
    /// How long requests in flight may take to finish after SIGTERM.
    pub grace_period: Duration,
    /// Request and upstream limits.
    pub limits: LimitsConfig,
    /// The decision API listener (`crate::decisions`); never the same as `listen`/`admin_listen`.
    pub decisions_listen: Option<SocketAddr>,
    /// The prefix Envoy ext_authz puts before the original path ("" or `/...`, no trailing `/`).
    pub decisions_path_prefix: String,
    /// Reload when the file changes (polled every `watch_interval`), besides on SIGHUP.
    pub watch_config: bool,
    /// How often the file is polled when `watch_config` is on (greater than zero).
    pub watch_interval: Duration,
}

/// Size and time limits on requests and upstream connections.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Largest request header block, in bytes (1024 to pingora's parser limit).
    pub max_request_header_bytes: usize,
    /// Most request headers (1 to pingora's parser limit).
    pub max_request_headers: usize,
    /// Time allowed to connect to an upstream (greater than zero).
    pub upstream_connect_timeout: Duration,
    /// Time allowed between two reads from an upstream (greater than zero).
    pub upstream_read_timeout: Duration,
    /// Time allowed between two reads from a client once a request started (greater than zero).
    pub downstream_read_timeout: Duration,
    /// Most downstream connections open at once (1 to [`MAX_CONNECTIONS_LIMIT`]); restart only.
    ///
    /// [`MAX_CONNECTIONS_LIMIT`]: crate::config::MAX_CONNECTIONS_LIMIT
    pub max_connections: usize,
    /// How long an idle keep-alive client connection is kept (greater than zero).
    pub downstream_keepalive_timeout: Duration,
}

/// `[kratos]`, validated.
#[derive(Debug, Clone)]
pub struct KratosConfig {
    /// Base URL, always ending in `/`.
    pub public_url: Url,
    /// `{public_url}sessions/whoami`.
    pub whoami_url: Url,
    /// The limit on one whoami call (greater than zero).
    pub timeout: Duration,
    /// The name of Kratos's session cookie (an RFC 7230 token).
    pub session_cookie: String,
    /// Where `on_unauthenticated = "redirect"` sends browsers.
    pub login_url: Option<Url>,
    /// Most whoami calls in flight at once (at least 1).
    pub max_concurrent_whoami: usize,
    /// Consecutive whoami failures that open the circuit breaker; 0 disables it.
    pub circuit_breaker_failures: u32,
    /// How long an open breaker refuses calls before one probe (greater than zero).
    pub circuit_breaker_interval: Duration,
}

/// `[cache]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most sessions cached (at least 1).
    pub max_entries: u64,
    /// Longest a valid session is cached.
    pub max_ttl: Duration,
    /// How long a rejected credential is cached; zero disables.
    pub negative_ttl: Duration,
    /// How long after its last validation a session is still served while Kratos fails; zero
    /// disables.
    pub stale_if_error: Duration,
}

/// `[tracing]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans go over OTLP/HTTP (protobuf): the full traces URL (`.../v1/traces`); `None`:
    /// spans are not recorded at all.
    pub otlp_endpoint: Option<Url>,
    /// The `service.name` of exported spans (not empty).
    pub service_name: String,
    /// Share of new traces sampled, 0.0 to 1.0; a client's sampled flag is followed instead.
    pub sample_ratio: f64,
}

/// Authenticator assurance level (`aal1` < `aal2` < `aal3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Aal(pub u8);

impl Aal {
    /// `aal1`, `aal2` or `aal3` (as Kratos writes them); `None` for anything else.
    pub fn parse(s: &str) -> Option<Aal> {
        let n = s.strip_prefix("aal")?;
        match n {
            "1" | "2" | "3" => n.parse().ok().map(Aal),
            _ => None,
        }
    }
}

/// How a route is selected: host (optional), exact path or path prefix, methods (optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Lowercase host without port.
    pub host: Option<String>,
    /// `true` for `path`, `false` for `path_prefix`.
    pub exact: bool,
    /// Canonical; a prefix has no trailing slash except the root `/`.
    pub path: String,
    /// The methods matched; `None` matches every method (never `Some` of an empty list).
    pub methods: Option<Vec<Method>>,
}

/// An upstream origin. Its name is resolved at run time (`crate::resolver`), not here.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `https` upstream.
    pub tls: bool,
    /// Host name for SNI and certificate checks.
    pub sni: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
}

/// One `[[routes]]` entry, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the file (`routes[index]`).
    pub index: usize,
    /// Unique among routes; used as a metrics label.
    pub name: String,
    /// Which requests the route takes.
    pub matcher: RouteMatch,
    /// Where requests go: `Some` on every route of a compiled configuration (an edge route's is
    /// Kratos's origin).
    pub upstream: Option<Upstream>,
    /// Whether a session is required, optional or not looked at.
    pub auth: AuthMode,
    /// The lowest assurance level a session needs here.
    pub require_aal: Option<Aal>,
    /// What an unauthenticated request gets on a `session` route.
    pub on_unauthenticated: OnUnauthenticated,
    /// Headers set from the session; each `slot` indexes [`Config::session_paths`].
    pub identity_headers: Vec<IdentityHeader>,
    /// Whether an `Upgrade` (WebSocket) request is forwarded.
    pub websocket: bool,
    /// Set on `kratos_edge` routes: the edge's settings and what is precomputed from them (plain
    /// data; the OIDC warnings already given live in the runtime).
    pub edge: Option<Arc<EdgeRoute>>,
    /// `identity_token = true`: the token's header, audience and extra claims (slots index
    /// [`Config::session_paths`]).
    pub identity_token: Option<RouteToken>,
}

/// `[cache.shared]`, validated. Plain data: the runtime (`crate::fleet`) opens the connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCacheConfig {
    /// A `redis://` or `rediss://` URL with a host (may carry a password: [`Secret`] never shows it).
    pub redis_url: Secret,
    /// Prefix of every Redis key and of the purge channel.
    pub key_prefix: String,
    /// Whether the shared L2 cache is used besides the purge broadcast.
    pub mode: SharedCacheMode,
    /// The limit on one Redis call (greater than zero).
    pub timeout: Duration,
}

/// `[admin]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// The bearer token of `POST /cache/purge`, read from `admin.purge_token_file` at load time
    /// (surrounding whitespace trimmed, never empty); `None` = the purge API is off.
    pub purge_token: Option<Secret>,
}
