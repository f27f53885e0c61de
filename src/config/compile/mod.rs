//! Validation of the raw schema into the typed configuration the proxy runs on. Every check that can
//! be made before the first request is made here; each failure names its key path, and every
//! failure is reported, not just the first.
//!
//! - this module: `[server]`, `[kratos]`, `[cache]`, `[log]`, and assembling the [`Config`].
//! - [`traces`]: `[tracing]` (span export).
//! - [`route`]: one `[[routes]]` entry, and conflicts between routes.
//! - [`decisions`]: the decision API's `server.decisions_*` keys.
//! - [`edge`]: the keys of a `kratos_edge` route.
//! - [`fleet`]: `[cache.shared]` (Redis) and `[admin]` (the purge API's token).
//! - [`validate`]: the checks every section shares and the issue collector.

mod decisions;
mod edge;
mod fleet;
mod identity_token;
mod route;
#[cfg(test)]
mod tests;
mod traces;
mod validate;

use http::HeaderName;
use ipnet::IpNet;

use self::route::{check_route_conflicts, compile_route, RouteContext};
use self::validate::{http_url, is_token, origin_only, positive, socket_addr, Issues};
use super::schema::RawConfig;
use super::{CacheConfig, Config, ConfigIssue, KratosConfig, LimitsConfig, Route, ServerConfig};
use crate::identity::Template;

/// The most headers pingora's HTTP/1 parser reads (`MAX_HEADERS`).
pub const PARSER_MAX_HEADERS: usize = 256;
/// The largest request header block pingora's HTTP/1 parser reads (`MAX_HEADER_SIZE`).
pub const PARSER_MAX_HEADER_BYTES: usize = 1_048_575;

/// Validates everything; returns every issue found, not just the first.
pub(super) fn compile(raw: RawConfig) -> Result<Config, Vec<ConfigIssue>> {
    let mut issues = Issues::new();

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
    let decisions_listen = decisions::check(&raw.server, listen, admin_listen, &mut issues);
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
    positive(
        raw.server.downstream_keepalive_timeout,
        "server.downstream_keepalive_timeout",
        &mut issues,
        false,
    );
    if !(1..=super::MAX_CONNECTIONS_LIMIT).contains(&raw.server.max_connections) {
        issues.push(
            "server.max_connections",
            format!("must be between 1 and {}", super::MAX_CONNECTIONS_LIMIT),
        );
    }

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
    let shared_cache = raw
        .cache
        .shared
        .as_ref()
        .and_then(|s| fleet::shared_cache(s, &mut issues));
    let admin = fleet::admin(&raw.admin, &mut issues);

    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
        issues.push("log.level", format!("not a valid filter: {e}"));
    }

    let tracing = self::traces::compile_tracing(&raw.tracing, &mut issues);
    let token_issuer = identity_token::issuer(raw.identity_token.as_ref(), &mut issues);

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
        // an invalid section has its own issues; a route asking for a token is not one more
        have_identity_token: raw.identity_token.is_some(),
    };
    for (i, r) in raw.routes.iter().enumerate() {
        if let Some(mut route) = compile_route(i, r, &ctx, &mut issues) {
            for h in &mut route.identity_headers {
                if !identity_header_names.contains(&h.name) {
                    identity_header_names.push(h.name.clone());
                }
                h.slot = slot_of(&mut session_paths, &h.template);
            }
            if let Some(t) = &mut route.identity_token {
                if !identity_header_names.contains(&t.header) {
                    identity_header_names.push(t.header.clone());
                }
                for c in &mut t.claims {
                    c.slot = slot_of(&mut session_paths, &c.template);
                }
            }
            routes.push(route);
        }
    }
    check_route_conflicts(&routes, &mut issues);

    issues.into_result()?;
    // Every Option below is Some: a None pushed an issue above.
    let (Some(listen), Some(admin_listen), Some(public_url), Some(whoami_url), Some(tracing)) =
        (listen, admin_listen, kratos_url, whoami_url, tracing)
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
                max_connections: raw.server.max_connections,
                downstream_keepalive_timeout: raw.server.downstream_keepalive_timeout,
            },
            decisions_listen,
            decisions_path_prefix: raw.server.decisions_path_prefix.clone(),
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
        shared_cache,
        admin,
        tracing,
        browser_edge: routes.iter().find_map(|r| r.edge.clone()),
        routes,
        identity_header_names,
        session_paths,
        identity_token: token_issuer,
    })
}

/// The index of `template` in `paths`, added at the end when new.
fn slot_of(paths: &mut Vec<Template>, template: &Template) -> usize {
    match paths.iter().position(|t| t == template) {
        Some(slot) => slot,
        None => {
            paths.push(template.clone());
            paths.len() - 1
        }
    }
}
