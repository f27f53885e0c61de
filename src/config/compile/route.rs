//! Validation of one `[[routes]]` entry into a [`Route`], and of the route list as a whole (no two
//! routes named alike or matching exactly the same requests). Every issue names `routes[i].<key>`.

use http::Method;
use url::Url;

use super::edge::compile_edge;
use super::validate::{is_token, resolve_upstream, Issues};
use crate::config::schema::{AuthMode, OnUnauthenticated, RawRoute};
use crate::config::{Aal, Route, RouteMatch};
use crate::identity::{IdentityHeader, Template};
use crate::path::canonicalize_path;

/// What a route's validation needs from the rest of the file.
pub(super) struct RouteContext<'a> {
    /// `kratos.login_url` is set (a `redirect` route needs it).
    pub(super) have_login_url: bool,
    /// `server.public_url` as an origin, when valid.
    pub(super) public_origin: Option<&'a str>,
    /// `kratos.public_url` (path ending in `/`), when valid.
    pub(super) kratos_url: Option<&'a Url>,
    /// `[identity_token]` is configured and valid (a route's `identity_token = true` needs it).
    pub(super) have_identity_token: bool,
}

/// Validates route `i`; `None` when any of its keys had an issue (all of them are pushed). Identity
/// header slots are left at 0: the caller numbers them across routes.
pub(super) fn compile_route(
    i: usize,
    r: &RawRoute,
    ctx: &RouteContext<'_>,
    issues: &mut Issues,
) -> Option<Route> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let before = issues.count();
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
        let h = h.strip_suffix('.').map(str::to_owned).unwrap_or(h);
        if crate::host::is_host_name(&h) {
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

    let identity_token =
        super::identity_token::route_token(i, r, auth, ctx.have_identity_token, issues);

    if issues.count() != before {
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
        identity_token,
    })
}

/// Two routes that match exactly the same requests make precedence a coin toss: refuse them.
pub(super) fn check_route_conflicts(routes: &[Route], issues: &mut Issues) {
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

/// A route path as written in the file, which must already be canonical (a prefix may end in `/`);
/// empty means `/`.
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
