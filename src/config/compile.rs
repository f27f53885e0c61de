//! Validation of the raw schema into the typed configuration the proxy runs on. Every check that can
//! be made before the first request is made here; each failure names its key path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use url::Url;

use super::schema::{AuthMode, OnUnauthenticated, RawConfig, RawLog, RawRoute};
use super::ConfigIssue;
use crate::edge::{EdgeRoute, EdgeSettings};
use crate::identity::{IdentityHeader, Template};
use crate::path::canonicalize_path;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub kratos: KratosConfig,
    pub cache: CacheConfig,
    pub log: RawLog,
    pub routes: Vec<Route>,
    /// Every identity header name configured on any route (lowercase): stripped from every request.
    pub identity_header_names: Vec<HeaderName>,
    /// Every session path an identity header reads (deduplicated); `IdentityHeader::slot` indexes it.
    pub session_paths: Vec<Template>,
    /// The first Kratos edge route: where browsers reach Kratos. Step-up and login redirects and a
    /// session cookie re-issued by whoami go through its rewriting (public origin + prefix).
    pub browser_edge: Option<Arc<EdgeRoute>>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub threads: usize,
    /// The public origin (`https://app.example.com`), no trailing slash.
    pub public_origin: Option<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub grace_period: Duration,
    pub limits: LimitsConfig,
    pub watch_config: bool,
    pub watch_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub max_request_header_bytes: usize,
    pub max_request_headers: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_read_timeout: Duration,
    pub downstream_read_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct KratosConfig {
    /// Base URL, always ending in `/`.
    pub public_url: Url,
    /// `{public_url}sessions/whoami`.
    pub whoami_url: Url,
    pub timeout: Duration,
    pub session_cookie: String,
    pub login_url: Option<Url>,
    pub max_concurrent_whoami: usize,
    pub circuit_breaker_failures: u32,
    pub circuit_breaker_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub max_entries: u64,
    pub max_ttl: Duration,
    pub negative_ttl: Duration,
    pub stale_if_error: Duration,
}

/// Authenticator assurance level (`aal1` < `aal2` < `aal3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Aal(pub u8);

impl Aal {
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
    pub methods: Option<Vec<Method>>,
}

/// An upstream origin. Its name is resolved at run time (`crate::resolver`), not here.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub tls: bool,
    /// Host name for SNI and certificate checks.
    pub sni: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub index: usize,
    pub name: String,
    pub matcher: RouteMatch,
    pub upstream: Option<Upstream>,
    pub auth: AuthMode,
    pub require_aal: Option<Aal>,
    pub on_unauthenticated: OnUnauthenticated,
    pub identity_headers: Vec<IdentityHeader>,
    pub websocket: bool,
    /// Set on `kratos_edge` routes.
    pub edge: Option<Arc<EdgeRoute>>,
}

/// The most headers pingora's HTTP/1 parser reads (`MAX_HEADERS`).
pub const PARSER_MAX_HEADERS: usize = 256;
/// The largest request header block pingora's HTTP/1 parser reads (`MAX_HEADER_SIZE`).
pub const PARSER_MAX_HEADER_BYTES: usize = 1_048_575;

struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Validates everything; returns every issue found, not just the first.
pub(super) fn compile(raw: RawConfig) -> Result<Config, Vec<ConfigIssue>> {
    let mut issues = Issues(Vec::new());

    let listen = socket_addr(&raw.server.listen, "server.listen", &mut issues);
    let admin_listen = socket_addr(&raw.server.admin_listen, "server.admin_listen", &mut issues);
    if let (Some(a), Some(b)) = (listen, admin_listen) {
        let overlap = a.port() == b.port()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified());
        if overlap && a.port() != 0 {
            issues.push(
                "server.admin_listen",
                "must differ from server.listen: /metrics never goes on the public listener",
            );
        }
    }
    if raw.server.threads == 0 {
        issues.push("server.threads", "must be at least 1");
    }
    let public_origin = raw
        .server
        .public_url
        .as_deref()
        .and_then(|u| origin_only(u, "server.public_url", &mut issues));
    let mut trusted_proxies = Vec::new();
    for (i, cidr) in raw.server.trusted_proxies.iter().enumerate() {
        let key = format!("server.trusted_proxies[{i}]");
        match cidr.parse::<IpNet>().or_else(|_| {
            cidr.parse::<std::net::IpAddr>()
                .map(IpNet::from)
                .map_err(|_| ())
        }) {
            Ok(net) if net.prefix_len() == 0 => issues.push(
                key,
                format!("`{cidr}` trusts every address; list the proxies in front of sessiongate"),
            ),
            Ok(net) => trusted_proxies.push(net),
            Err(_) => issues.push(key, format!("`{cidr}` is not a CIDR or IP address")),
        }
    }
    positive(
        raw.server.grace_period,
        "server.grace_period",
        &mut issues,
        true,
    );
    // pingora's HTTP/1 parser refuses more than 256 headers or 1 MiB - 1 of header block itself,
    // with a bare 400 before any hook runs (pingora-core 0.9, protocols/http/v1/common.rs): a
    // limit above those could never answer its 431.
    if !(1024..=PARSER_MAX_HEADER_BYTES).contains(&raw.server.max_request_header_bytes) {
        issues.push(
            "server.max_request_header_bytes",
            format!("must be between 1024 and {PARSER_MAX_HEADER_BYTES} (pingora's parser limit)"),
        );
    }
    if !(1..=PARSER_MAX_HEADERS).contains(&raw.server.max_request_headers) {
        issues.push(
            "server.max_request_headers",
            format!("must be between 1 and {PARSER_MAX_HEADERS} (pingora's parser limit)"),
        );
    }
    positive(
        raw.server.upstream_connect_timeout,
        "server.upstream_connect_timeout",
        &mut issues,
        false,
    );
    positive(
        raw.server.upstream_read_timeout,
        "server.upstream_read_timeout",
        &mut issues,
        false,
    );
    positive(
        raw.server.downstream_read_timeout,
        "server.downstream_read_timeout",
        &mut issues,
        false,
    );

    let kratos_url =
        http_url(&raw.kratos.public_url, "kratos.public_url", &mut issues).map(|mut u| {
            if !u.path().ends_with('/') {
                let p = format!("{}/", u.path());
                u.set_path(&p);
            }
            u.set_query(None);
            u.set_fragment(None);
            u
        });
    let whoami_url = kratos_url
        .as_ref()
        .and_then(|u| u.join("sessions/whoami").ok());
    positive(raw.kratos.timeout, "kratos.timeout", &mut issues, false);
    if !is_token(&raw.kratos.session_cookie) {
        issues.push(
            "kratos.session_cookie",
            format!("`{}` is not a valid cookie name", raw.kratos.session_cookie),
        );
    }
    let login_url = raw
        .kratos
        .login_url
        .as_deref()
        .and_then(|u| http_url(u, "kratos.login_url", &mut issues));
    positive(
        raw.kratos.circuit_breaker_interval,
        "kratos.circuit_breaker_interval",
        &mut issues,
        false,
    );
    positive(
        raw.server.watch_interval,
        "server.watch_interval",
        &mut issues,
        false,
    );
    if raw.kratos.max_concurrent_whoami == 0 {
        issues.push("kratos.max_concurrent_whoami", "must be at least 1");
    }

    if raw.cache.max_entries == 0 {
        issues.push("cache.max_entries", "must be at least 1");
    }

    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
        issues.push("log.level", format!("not a valid filter: {e}"));
    }

    let mut routes: Vec<Route> = Vec::new();
    let mut identity_header_names: Vec<HeaderName> = Vec::new();
    let mut session_paths: Vec<Template> = Vec::new();
    if raw.routes.is_empty() {
        issues.push("routes", "at least one route is required");
    }
    let ctx = RouteContext {
        have_login_url: login_url.is_some(),
        public_origin: public_origin.as_deref(),
        kratos_url: kratos_url.as_ref(),
    };
    for (i, r) in raw.routes.iter().enumerate() {
        if let Some(mut route) = compile_route(i, r, &ctx, &mut issues) {
            for h in &mut route.identity_headers {
                if !identity_header_names.contains(&h.name) {
                    identity_header_names.push(h.name.clone());
                }
                h.slot = match session_paths.iter().position(|t| *t == h.template) {
                    Some(slot) => slot,
                    None => {
                        session_paths.push(h.template.clone());
                        session_paths.len() - 1
                    }
                };
            }
            routes.push(route);
        }
    }
    check_route_conflicts(&routes, &mut issues);

    if !issues.0.is_empty() {
        return Err(issues.0);
    }
    // Every Option below is Some: a None pushed an issue above.
    let (Some(listen), Some(admin_listen), Some(public_url), Some(whoami_url)) =
        (listen, admin_listen, kratos_url, whoami_url)
    else {
        return Err(vec![ConfigIssue {
            path: "(internal)".into(),
            message: "validation incomplete".into(),
        }]);
    };
    Ok(Config {
        server: ServerConfig {
            listen,
            admin_listen,
            threads: raw.server.threads,
            public_origin,
            trusted_proxies,
            grace_period: raw.server.grace_period,
            limits: LimitsConfig {
                max_request_header_bytes: raw.server.max_request_header_bytes,
                max_request_headers: raw.server.max_request_headers,
                upstream_connect_timeout: raw.server.upstream_connect_timeout,
                upstream_read_timeout: raw.server.upstream_read_timeout,
                downstream_read_timeout: raw.server.downstream_read_timeout,
            },
            watch_config: raw.server.watch_config,
            watch_interval: raw.server.watch_interval,
        },
        kratos: KratosConfig {
            public_url,
            whoami_url,
            timeout: raw.kratos.timeout,
            session_cookie: raw.kratos.session_cookie,
            login_url,
            max_concurrent_whoami: raw.kratos.max_concurrent_whoami,
            circuit_breaker_failures: raw.kratos.circuit_breaker_failures,
            circuit_breaker_interval: raw.kratos.circuit_breaker_interval,
        },
        cache: CacheConfig {
            max_entries: raw.cache.max_entries,
            max_ttl: raw.cache.max_ttl,
            negative_ttl: raw.cache.negative_ttl,
            stale_if_error: raw.cache.stale_if_error,
        },
        log: raw.log,
        browser_edge: routes.iter().find_map(|r| r.edge.clone()),
        routes,
        identity_header_names,
        session_paths,
    })
}

/// What a route's validation needs from the rest of the file.
struct RouteContext<'a> {
    have_login_url: bool,
    public_origin: Option<&'a str>,
    kratos_url: Option<&'a Url>,
}

fn compile_route(
    i: usize,
    r: &RawRoute,
    ctx: &RouteContext<'_>,
    issues: &mut Issues,
) -> Option<Route> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let before = issues.0.len();
    let auth = match (r.auth, r.kratos_edge) {
        (Some(a), _) => a,
        (None, true) => AuthMode::Anonymous,
        (None, false) => {
            issues.push(key("auth"), "required: anonymous, optional or session");
            AuthMode::Session
        }
    };

    if r.name.is_empty()
        || !r
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        issues.push(
            key("name"),
            format!(
                "`{}` must be non-empty and use only letters, digits, '-', '_', '.'",
                r.name
            ),
        );
    }

    let matcher_path = match (&r.path, &r.path_prefix) {
        (Some(_), Some(_)) => {
            issues.push(key("path"), "set either `path` or `path_prefix`, not both");
            None
        }
        (None, None) => {
            issues.push(
                key("path_prefix"),
                "one of `path` or `path_prefix` is required",
            );
            None
        }
        (Some(p), None) => canonical_config_path(p, &key("path"), issues).map(|p| (true, p)),
        (None, Some(p)) => canonical_config_path(p, &key("path_prefix"), issues).map(|mut p| {
            if p.len() > 1 && p.ends_with('/') {
                p.pop();
            }
            (false, p)
        }),
    };

    let host = r.host.as_ref().and_then(|h| {
        let h = h.to_ascii_lowercase();
        let valid = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if valid {
            Some(h)
        } else {
            issues.push(
                key("host"),
                format!("`{h}` is not a host name (no port, no scheme)"),
            );
            None
        }
    });

    let methods = r.methods.as_ref().map(|ms| {
        let mut out = Vec::new();
        if ms.is_empty() {
            issues.push(
                key("methods"),
                "an empty list matches nothing; omit the key to match every method",
            );
        }
        for (j, m) in ms.iter().enumerate() {
            let upper = m.to_ascii_uppercase();
            match Method::from_bytes(upper.as_bytes()) {
                Ok(method) if is_token(&upper) => out.push(method),
                _ => issues.push(
                    format!("routes[{i}].methods[{j}]"),
                    format!("`{m}` is not an HTTP method"),
                ),
            }
        }
        out
    });

    let upstream = match (&r.upstream, r.kratos_edge) {
        (Some(_), true) => {
            issues.push(
                key("upstream"),
                "an edge route's upstream is [kratos].public_url; remove this key",
            );
            None
        }
        (None, true) => ctx.kratos_url.and_then(|u| {
            resolve_upstream(
                u.origin().ascii_serialization().as_str(),
                "kratos.public_url",
                issues,
            )
        }),
        (Some(u), false) => resolve_upstream(u, &key("upstream"), issues),
        (None, false) => {
            issues.push(key("upstream"), "required");
            None
        }
    };
    let edge = if r.kratos_edge {
        compile_edge(i, r, auth, ctx, issues)
    } else {
        for (k, set) in [
            ("cookie_domain", r.cookie_domain.is_some()),
            ("allowed_return_urls", !r.allowed_return_urls.is_empty()),
            ("ory_network_api_key", r.ory_network_api_key.is_some()),
        ] {
            if set {
                issues.push(key(k), "only applies to a route with kratos_edge = true");
            }
        }
        None
    };

    let require_aal = r.require_aal.as_deref().and_then(|a| match Aal::parse(a) {
        Some(aal) => Some(aal),
        None => {
            issues.push(
                key("require_aal"),
                format!("`{a}` is not one of aal1, aal2, aal3"),
            );
            None
        }
    });
    if require_aal.is_some() && auth == AuthMode::Anonymous {
        issues.push(key("require_aal"), "has no effect on an `anonymous` route");
    }
    if r.on_unauthenticated == OnUnauthenticated::Redirect && auth != AuthMode::Session {
        issues.push(
            key("on_unauthenticated"),
            "only a `session` route ever answers an unauthenticated request",
        );
    } else if r.on_unauthenticated == OnUnauthenticated::Redirect && !ctx.have_login_url {
        issues.push(
            key("on_unauthenticated"),
            "`redirect` needs kratos.login_url",
        );
    }

    let mut identity_headers = Vec::new();
    for (name, path) in &r.identity_headers {
        let hkey = format!("routes[{i}].identity_headers.\"{name}\"");
        match crate::identity::parse_header_name(name) {
            Ok(header) => match Template::parse(path) {
                Ok(template) => identity_headers.push(IdentityHeader {
                    name: header,
                    template,
                    slot: 0,
                }),
                Err(e) => issues.push(hkey, e),
            },
            Err(e) => issues.push(hkey, e),
        }
    }
    if !identity_headers.is_empty() && auth == AuthMode::Anonymous {
        issues.push(
            key("identity_headers"),
            "an `anonymous` route never has a session to take them from",
        );
    }

    if issues.0.len() != before {
        return None;
    }
    let (exact, path) = matcher_path?;
    Some(Route {
        index: i,
        name: r.name.clone(),
        matcher: RouteMatch {
            host,
            exact,
            path,
            methods,
        },
        upstream,
        auth,
        require_aal,
        on_unauthenticated: r.on_unauthenticated,
        identity_headers,
        websocket: r.websocket,
        edge,
    })
}

/// Validates the edge keys of route `i` and builds its [`EdgeRoute`].
fn compile_edge(
    i: usize,
    r: &RawRoute,
    auth: AuthMode,
    ctx: &RouteContext<'_>,
    issues: &mut Issues,
) -> Option<Arc<EdgeRoute>> {
    let key = |k: &str| format!("routes[{i}].{k}");
    if auth != AuthMode::Anonymous {
        issues.push(
            key("auth"),
            "an edge route is `anonymous`: Kratos checks its own requests",
        );
    }
    if r.path.is_some() {
        issues.push(
            key("path"),
            "an edge route mounts a prefix: use path_prefix",
        );
    }
    if !r.identity_headers.is_empty() {
        issues.push(
            key("identity_headers"),
            "an edge route forwards to Kratos, not to an application",
        );
    }
    let Some(public) = ctx.public_origin else {
        issues.push(
            key("kratos_edge"),
            "needs server.public_url (the custom domain Kratos is served on)",
        );
        return None;
    };
    let kratos = ctx.kratos_url?;
    let prefix = r.path_prefix.as_deref().unwrap_or("/");
    let settings = match EdgeSettings::new(
        kratos.as_str(),
        public,
        prefix,
        r.cookie_domain.as_deref(),
        &r.allowed_return_urls,
    ) {
        Ok(s) => s,
        Err(e) => {
            issues.push(key("kratos_edge"), e);
            return None;
        }
    };
    if let Some(domain) = &settings.cookie_domain {
        let host = Url::parse(public)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_default();
        if host != *domain && !host.ends_with(&format!(".{domain}")) {
            issues.push(
                key("cookie_domain"),
                format!("`{domain}` does not cover server.public_url's host `{host}`: browsers would drop every cookie"),
            );
            return None;
        }
    }
    match EdgeRoute::new(
        settings,
        r.ory_network_api_key.as_ref().map(|s| s.0.as_str()),
    ) {
        Ok(edge) => Some(Arc::new(edge)),
        Err(e) => {
            issues.push(key("ory_network_api_key"), e);
            None
        }
    }
}

/// Two routes that match exactly the same requests make precedence a coin toss: refuse them.
fn check_route_conflicts(routes: &[Route], issues: &mut Issues) {
    for (a_i, a) in routes.iter().enumerate() {
        if let Some(b) = routes[..a_i].iter().find(|b| b.name == a.name) {
            issues.push(
                format!("routes[{}].name", a.index),
                format!("`{}` is already the name of routes[{}]", a.name, b.index),
            );
        }
        for b in &routes[..a_i] {
            let same = a.matcher.host == b.matcher.host
                && a.matcher.exact == b.matcher.exact
                && a.matcher.path == b.matcher.path;
            // A route with a method filter beats one without on the same host and path
            // (routing precedence 4), so only two filters that share a method, or two routes
            // without any, leave the choice open.
            let methods_overlap = match (&a.matcher.methods, &b.matcher.methods) {
                (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
                (None, None) => true,
                _ => false,
            };
            if same && methods_overlap {
                issues.push(
                    format!("routes[{}]", a.index),
                    format!(
                        "matches the same requests as routes[{}] (`{}`); give them different paths, hosts or methods",
                        b.index, b.name
                    ),
                );
            }
        }
    }
}

fn canonical_config_path(p: &str, key: &str, issues: &mut Issues) -> Option<String> {
    if p.is_empty() {
        return Some("/".into());
    }
    match canonicalize_path(p) {
        Ok(c) if c == p || (c.len() + 1 == p.len() && p.ends_with('/') && !c.ends_with('/')) => {
            Some(c)
        }
        Ok(c) => {
            issues.push(key, format!("`{p}` is not canonical; write `{c}`"));
            None
        }
        Err(e) => {
            issues.push(key, format!("`{p}`: {e}"));
            None
        }
    }
}

fn resolve_upstream(u: &str, key: &str, issues: &mut Issues) -> Option<Upstream> {
    let url = http_url(u, key, issues)?;
    if url.path() != "/" || url.query().is_some() {
        issues.push(
            key,
            format!("`{u}` must be an origin (scheme://host:port) without a path"),
        );
        return None;
    }
    let tls = url.scheme() == "https";
    let host = url
        .host_str()?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = url.port_or_known_default()?;
    Some(Upstream {
        tls,
        sni: host,
        port,
    })
}

fn http_url(u: &str, key: &str, issues: &mut Issues) -> Option<Url> {
    match Url::parse(u) {
        Ok(url) if (url.scheme() == "http" || url.scheme() == "https") && url.host().is_some() => {
            if !url.username().is_empty() || url.password().is_some() {
                issues.push(key, "must not carry credentials");
                return None;
            }
            Some(url)
        }
        Ok(_) => {
            issues.push(
                key,
                format!("`{u}` must be an http:// or https:// URL with a host"),
            );
            None
        }
        Err(e) => {
            issues.push(key, format!("`{u}` is not a URL: {e}"));
            None
        }
    }
}

fn origin_only(u: &str, key: &str, issues: &mut Issues) -> Option<String> {
    let url = http_url(u, key, issues)?;
    if url.path() != "/" || url.query().is_some() {
        issues.push(key, format!("`{u}` must be an origin without a path"));
        return None;
    }
    Some(url.origin().ascii_serialization())
}

fn socket_addr(s: &str, key: &str, issues: &mut Issues) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            issues.push(key, format!("`{s}` is not an ip:port address"));
            None
        }
    }
}

fn positive(d: Duration, key: &str, issues: &mut Issues, zero_ok: bool) {
    if !zero_ok && d.is_zero() {
        issues.push(key, "must be greater than zero");
    }
}

/// RFC 7230 token characters.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use crate::config::from_str;

    fn base(routes: &str) -> String {
        format!(
            r#"
[kratos]
public_url = "http://127.0.0.1:4433"
login_url = "https://app.example.com/login"
{routes}
"#
        )
    }

    fn issues(text: &str) -> Vec<String> {
        match from_str(text) {
            Ok(_) => vec![],
            Err(e) => e.issues().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_error_is_located_and_all_are_reported() {
        let text = base(
            r#"
[[routes]]
name = "a"
path_prefix = "/api/../x"
upstream = "ftp://x"
auth = "session"
require_aal = "aal9"
[routes.identity_headers]
"Bad Header" = "identity.id"
"#,
        );
        let got = issues(&text);
        assert!(
            got.iter().any(|s| s.starts_with("routes[0].path_prefix: ")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|s| s.starts_with("routes[0].upstream: ")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|s| s.starts_with("routes[0].require_aal: ")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|s| s.starts_with("routes[0].identity_headers.\"Bad Header\": ")),
            "{got:?}"
        );
    }

    #[test]
    fn duplicate_matchers_are_a_conflict() {
        let text = base(
            r#"
[[routes]]
name = "a"
path_prefix = "/api"
upstream = "http://127.0.0.1:1"
auth = "session"
[[routes]]
name = "b"
path_prefix = "/api/"
upstream = "http://127.0.0.1:1"
auth = "anonymous"
"#,
        );
        let got = issues(&text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("routes[1]: matches the same requests as routes[0]"),
            "{got:?}"
        );
    }

    #[test]
    fn disjoint_methods_do_not_conflict() {
        let text = base(
            r#"
[[routes]]
name = "a"
path = "/x"
methods = ["GET"]
upstream = "http://127.0.0.1:1"
auth = "anonymous"
[[routes]]
name = "b"
path = "/x"
methods = ["post"]
upstream = "http://127.0.0.1:1"
auth = "session"
"#,
        );
        assert!(issues(&text).is_empty());
    }

    #[test]
    fn a_method_filtered_route_beside_an_unfiltered_one_is_no_conflict() {
        // an anonymous OPTIONS route for CORS preflights on the prefix of a session route
        let text = base(
            r#"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:1"
auth = "session"
[[routes]]
name = "preflight"
path_prefix = "/api"
methods = ["OPTIONS"]
upstream = "http://127.0.0.1:1"
auth = "anonymous"
"#,
        );
        assert!(issues(&text).is_empty(), "{:?}", issues(&text));
    }

    #[test]
    fn header_limits_beyond_the_parser_are_refused() {
        let text = base(
            r#"
[server]
max_request_headers = 300
max_request_header_bytes = 2000000
[[routes]]
name = "a"
path = "/x"
upstream = "http://127.0.0.1:1"
auth = "anonymous"
"#,
        );
        let got = issues(&text);
        assert!(
            got.iter()
                .any(|s| s.starts_with("server.max_request_headers: must be between 1 and 256")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|s| s
                .starts_with("server.max_request_header_bytes: must be between 1024 and 1048575")),
            "{got:?}"
        );
    }

    #[test]
    fn trusting_everyone_is_refused() {
        let text = base(
            r#"
[server]
trusted_proxies = ["10.0.0.0/8", "0.0.0.0/0", "nonsense"]
[[routes]]
name = "a"
path = "/x"
upstream = "http://127.0.0.1:1"
auth = "anonymous"
"#,
        );
        let got = issues(&text);
        assert!(
            got.iter()
                .any(|s| s.starts_with("server.trusted_proxies[1]: ")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|s| s.starts_with("server.trusted_proxies[2]: ")),
            "{got:?}"
        );
    }

    #[test]
    fn auth_is_mandatory_and_redirect_needs_login_url() {
        let text = r#"
[kratos]
public_url = "http://127.0.0.1:4433"
[[routes]]
name = "a"
path = "/x"
upstream = "http://127.0.0.1:1"
auth = "session"
on_unauthenticated = "redirect"
"#;
        let got = issues(text);
        assert!(
            got.iter()
                .any(|s| s.starts_with("routes[0].on_unauthenticated: ")),
            "{got:?}"
        );
        let missing_auth =
            base("[[routes]]\nname = \"a\"\npath = \"/x\"\nupstream = \"http://127.0.0.1:1\"\n");
        let got = issues(&missing_auth);
        assert!(got[0].starts_with("routes[0]"), "{got:?}");
        assert!(got[0].contains("auth"), "{got:?}");
    }
}
