//! Validation of a `kratos_edge = true` route's keys (prefix mount, `cookie_domain`,
//! `allowed_return_urls`, `ory_network_api_key`) into its [`EdgeRoute`].

use std::sync::Arc;

use url::Url;

use super::route::RouteContext;
use super::validate::Issues;
use crate::config::schema::{AuthMode, RawRoute};
use crate::edge::{EdgeRoute, EdgeSettings};

/// Validates the edge keys of route `i` and builds its [`EdgeRoute`].
pub(super) fn compile_edge(
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
