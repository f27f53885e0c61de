//! Kratos's `Set-Cookie` values, rewritten for the public origin (the cookie half of
//! [`super::rewrite::Rewriter`]).
//!
//! ## The rules
//!
//! [`CookieRules::rewrite`] (called as [`super::rewrite::Rewriter::rewrite_set_cookie`]):
//! * `Domain` becomes `cookie_domain` (replacing Kratos's, or added) or is removed (host-only);
//! * `Secure` is kept when the public side is HTTPS and dropped when it is plain HTTP (it is not
//!   added: Kratos decides that, e.g. `--dev` mode omits it);
//! * `Path`: **`Path=/` is kept** — Kratos's session cookie (`ory_kratos_session`,
//!   `ory_session_<slug>`) must reach the application's routes, not only the mount prefix, and
//!   `csrf_token_<hash>` / `ory_kratos_continuity` at `/` are harmless (their names are Kratos's
//!   own). A `Path` that addresses Kratos endpoints is moved under the prefix: with a root
//!   Kratos base, a path starting with `/self-service`, `/sessions`, `/schemas` or
//!   `/.well-known/ory`; with a base path `/base`, `/base` and anything below it. Any other
//!   `Path` (e.g. an application path chosen in `session.cookie.path`) is kept.
//! * `SameSite=None` becomes `SameSite=Lax` on a plain-HTTP public origin (browsers drop `None`
//!   without `Secure`);
//! * everything else (`SameSite`, `HttpOnly`, `Max-Age`, `Expires`, `Partitioned`, `Priority`,
//!   attributes no RFC knows yet, the name and the value) is kept as it is, byte for byte, in
//!   its place and spelling.
//!
//! ## Why the attributes are edited in place, not through the `cookie` crate
//!
//! The `cookie` crate is what reads cookies elsewhere (the session cookie in a request's
//! `Cookie` header, `crate::credential::find_cookie`; whether a response sets it,
//! [`super::purge::session_cookie_set`]), and the tests here check every rewrite against it.
//! It cannot *write* a Kratos cookie back as it came: its `Cookie` keeps only the attributes it
//! knows (an unknown one such as `Priority=High` is gone), forgets their order and spelling, and
//! its `Display` adds `Secure` to a `SameSite=None` or `Partitioned` cookie — exactly what must
//! not happen on a plain-HTTP origin. So the editor below stays by hand and small: it only cuts
//! at `;` and at the first `=`, touches `Domain`, `Secure`, `Path` and `SameSite=None`, and
//! copies every other byte.

use super::EdgeSettings;

/// The cookie rules of one edge route (see the module docs), from [`EdgeSettings`].
#[derive(Debug, Clone)]
pub struct CookieRules {
    prefix: String,
    kratos_base_path: String,
    cookie_domain: Option<String>,
    public_is_https: bool,
}

impl CookieRules {
    /// The rules for one edge route.
    pub fn new(settings: &EdgeSettings) -> CookieRules {
        CookieRules {
            prefix: settings.prefix.clone(),
            kratos_base_path: settings.kratos_base_path().to_owned(),
            cookie_domain: settings.cookie_domain.clone(),
            public_is_https: settings.public_is_https,
        }
    }

    /// Rewrites one `Set-Cookie` value (see the module docs). Returns the value unchanged
    /// (apart from `; ` spacing between attributes) when nothing applies.
    pub fn rewrite(&self, v: &str) -> String {
        let mut parts = v.split(';');
        let name_value = parts.next().unwrap_or_default().trim();
        let mut attrs: Vec<String> = Vec::new();
        let mut domain_at: Option<usize> = None;
        for attr in parts {
            let attr = attr.trim();
            if attr.is_empty() {
                continue;
            }
            let (name, value) = match attr.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (attr, None),
            };
            if name.eq_ignore_ascii_case("domain") {
                domain_at.get_or_insert(attrs.len());
                continue;
            }
            if name.eq_ignore_ascii_case("secure") && !self.public_is_https {
                continue;
            }
            if name.eq_ignore_ascii_case("samesite")
                && value.is_some_and(|v| v.eq_ignore_ascii_case("none"))
                && !self.public_is_https
            {
                // Browsers drop `SameSite=None` without `Secure` (RFC 6265bis, the SameSite attribute),
                // and a plain-HTTP origin cannot have `Secure`: `Lax` keeps the cookie.
                attrs.push(format!("{name}=Lax"));
                continue;
            }
            if name.eq_ignore_ascii_case("path") {
                if let Some(p) = value.and_then(|p| self.map_path(p)) {
                    attrs.push(format!("{name}={p}"));
                    continue;
                }
            }
            attrs.push(attr.to_owned());
        }
        if let Some(d) = &self.cookie_domain {
            let at = domain_at.unwrap_or(attrs.len());
            attrs.insert(at, format!("Domain={d}"));
        }
        let mut out = name_value.to_owned();
        for a in attrs {
            out.push_str("; ");
            out.push_str(&a);
        }
        out
    }

    /// `Some(new path)` for a cookie `Path` that addresses Kratos endpoints; `None` = keep.
    fn map_path(&self, path: &str) -> Option<String> {
        if path == "/" || !path.starts_with('/') {
            return None;
        }
        let rest = if self.kratos_base_path.is_empty() {
            const KRATOS_ROUTES: [&str; 4] =
                ["/self-service", "/sessions", "/schemas", "/.well-known/ory"];
            let is_kratos = KRATOS_ROUTES.iter().any(|r| {
                path.strip_prefix(r)
                    .is_some_and(|t| t.is_empty() || t.starts_with('/'))
            });
            if !is_kratos {
                return None;
            }
            path
        } else {
            let r = path.strip_prefix(self.kratos_base_path.as_str())?;
            if !(r.is_empty() || r.starts_with('/')) {
                return None;
            }
            r
        };
        let mapped = match (self.prefix.is_empty(), rest.is_empty()) {
            (true, true) => "/".to_owned(),
            _ => format!("{}{}", self.prefix, rest),
        };
        (mapped != path).then_some(mapped)
    }
}

#[cfg(test)]
mod tests;
