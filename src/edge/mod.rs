//! The Kratos edge: Kratos's public API served on the application's own domain.
//!
//! A route with `kratos_edge = true` mounts Kratos's public API under a path prefix of the public
//! origin (`https://app.example.com/.ory/...`, or at the root with an empty prefix). Browsers,
//! native apps and OIDC providers must only ever see that public origin, so everything Kratos
//! says about its own location is translated on the way back. This module is the pure logic of
//! that translation; the pingora hooks (`src/proxy/edge.rs`) only call into it.
//!
//! | file | concern | hook that calls it |
//! |---|---|---|
//! | [`rewrite`] | request path under the prefix -> Kratos path; `Location`, `Set-Cookie` and body rewriting | `upstream_request_filter`, `response_filter`, `response_body_filter` |
//! | [`set_cookie`] | the `Set-Cookie` rules [`rewrite::Rewriter`] applies (`Domain`, `Secure`, `Path`, `SameSite`) | `response_filter` |
//! | [`media`] | which bodies are JSON, forms or text (`Content-Type`, read with the `mime` crate) | `request_filter` (which bodies to check), `response_filter` (which to rewrite) |
//! | [`returnto`] | the `return_to` allow-list, checked before Kratos sees the request | `request_filter` (query, and form / JSON bodies read before forwarding) |
//! | [`oidc`] | detecting a provider `redirect_uri` that does not point at the public origin | `response_filter` (303) / body of a 422 |
//! | [`request`] | the plan of an edge request: `return_to` in the query, Kratos's path, what to read of the body | `request_filter` (through [`crate::admission`]) |
//! | [`purge`] | which requests/responses end or change a session, so the cache is purged | `request_filter` + after the response |
//! | [`ory`] | Ory Network custom-domain headers | `upstream_request_filter` |
//!
//! ## The translation, in one table
//!
//! With `kratos.public_url = http://127.0.0.1:4433/` and a route mounted at `/.ory` on
//! `https://app.example.com` ([`EdgeSettings::public_base`] = `https://app.example.com/.ory`):
//!
//! | Kratos says | the client sees |
//! |---|---|
//! | `http://127.0.0.1:4433/self-service/login?flow=1` | `https://app.example.com/.ory/self-service/login?flow=1` |
//! | `http:\/\/127.0.0.1:4433\/x` (JSON with escaped slashes) | `https:\/\/app.example.com\/.ory\/x` |
//! | `http%3A%2F%2F127.0.0.1%3A4433%2Fx` (inside a Kratos URL's query) | `https%3A%2F%2Fapp.example.com%2F.ory%2Fx` |
//! | `http://127.0.0.1:44330/x`, `http://127.0.0.1:4455/ui` | unchanged (another origin) |
//! | `https://accounts.google.com/o/oauth2/auth?redirect_uri=http%3A%2F%2F127.0.0.1%3A4433%2F...` | unchanged: a URL on another origin is never touched, including its query (see [`oidc`]) |
//! | `myapp://callback?code=...` | unchanged, byte for byte |
//! | `Set-Cookie: ory_kratos_session=..; Path=/; Domain=127.0.0.1; Secure` | `Path=/` kept, `Domain` = `cookie_domain` or removed, `Secure` only if the public side is HTTPS |
//!
//! ## Where the rest of the edge lives (for the proxy)
//!
//! * request: [`rewrite::Rewriter::strip_prefix`] / [`rewrite::Rewriter::upstream_path`] give the
//!   path to forward; `Host` = [`EdgeSettings::kratos_authority`]; `X-Forwarded-Host` /
//!   `X-Forwarded-Proto` = the public values; delete the client's [`ory::ORY_HEADERS`] and, in Ory
//!   Network mode, add [`ory::ory_network_headers`].
//! * response bodies are rewritten whole: the proxy buffers an edge response body (Kratos's are
//!   small JSON/HTML documents; cap the buffer) and calls [`rewrite::Rewriter::rewrite_body`] at
//!   end of stream, then fixes `Content-Length`. The simplest way to avoid compressed bodies is to
//!   remove `Accept-Encoding` from edge requests (Kratos on the loopback gains nothing from gzip).

pub mod media;
pub mod oidc;
pub mod ory;
pub mod purge;
pub mod request;
pub mod returnto;
pub mod rewrite;
pub mod set_cookie;

pub use oidc::{provider_redirect_mismatch, OidcMismatch, WarnOnce};
pub use ory::{ory_network_headers, ORY_HEADERS};
pub use purge::{after_response, on_request, PurgeAction, RequestKind, SelfServiceFlow};
pub use returnto::{check_return_to, AllowedUrl, ReturnToError};
pub use rewrite::Rewriter;

use url::Url;

/// Everything the edge needs to know about one `kratos_edge` route, validated.
///
/// Build it with [`EdgeSettings::new`] (which normalises and validates) rather than by hand; the
/// fields are public so tests and the config compiler can read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    /// Kratos's public base URL (`[kratos].public_url`): `http` or `https`, no userinfo, query or
    /// fragment; the path always ends in `/` (`http://127.0.0.1:4433/`, `http://kratos/base/`).
    pub kratos_origin: Url,
    /// Public origin + mount prefix, no trailing slash: `https://app.example.com/.ory`, or
    /// `https://app.example.com` when mounted at the root. Every Kratos URL is rewritten to it.
    pub public_base: String,
    /// The mount prefix: `""` (root) or `/seg[/seg...]` without a trailing slash (`/.ory`).
    pub prefix: String,
    /// `Domain` for cookies Kratos sets (lowercase, no leading dot); `None` = host-only cookies.
    pub cookie_domain: Option<String>,
    /// Whether the public side is HTTPS (decides whether `Secure` survives on cookies).
    pub public_is_https: bool,
    /// `allowed_return_urls`; empty = the proxy does not judge `return_to` (Kratos still does).
    pub allowed_return_urls: Vec<AllowedUrl>,
}

impl EdgeSettings {
    /// Validates and normalises one edge route.
    ///
    /// * `kratos_public_url`: `[kratos].public_url` (a missing trailing slash is added).
    /// * `public_origin`: the public scheme + host (+ port) the clients use,
    ///   e.g. `https://app.example.com` (a trailing `/` is accepted; any other path is refused).
    /// * `prefix`: the route's `path_prefix`; `""` or `"/"` mount at the root; a trailing `/` is
    ///   dropped; it must start with `/` and contain no `?`, `#`, `\`, `%`, whitespace or dot
    ///   segments.
    /// * `cookie_domain`: lowercased; a leading `.` is dropped (RFC 6265 ignores it).
    /// * `allowed_return_urls`: parsed with [`AllowedUrl::parse`].
    ///
    /// Refuses a public base that itself starts with Kratos's base URL (the rewrite would not be
    /// idempotent and would loop the client back into Kratos's own origin).
    pub fn new(
        kratos_public_url: &str,
        public_origin: &str,
        prefix: &str,
        cookie_domain: Option<&str>,
        allowed_return_urls: &[String],
    ) -> Result<EdgeSettings, String> {
        let mut kratos = Url::parse(kratos_public_url)
            .map_err(|e| format!("kratos public_url {kratos_public_url:?}: {e}"))?;
        if !matches!(kratos.scheme(), "http" | "https") {
            return Err("kratos public_url must be http or https".into());
        }
        if kratos.host_str().is_none() {
            return Err("kratos public_url has no host".into());
        }
        if !kratos.username().is_empty() || kratos.password().is_some() {
            return Err("kratos public_url must not contain userinfo".into());
        }
        if kratos.query().is_some() || kratos.fragment().is_some() {
            return Err("kratos public_url must not have a query or fragment".into());
        }
        if !kratos.path().ends_with('/') {
            let p = format!("{}/", kratos.path());
            kratos.set_path(&p);
        }

        let public = Url::parse(public_origin)
            .map_err(|e| format!("public origin {public_origin:?}: {e}"))?;
        let public_is_https = match public.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err("public origin must be http or https".into()),
        };
        if public.host_str().is_none() {
            return Err("public origin has no host".into());
        }
        if !public.username().is_empty() || public.password().is_some() {
            return Err("public origin must not contain userinfo".into());
        }
        if public.path() != "/" || public.query().is_some() || public.fragment().is_some() {
            return Err("public origin must be scheme://host[:port] without a path".into());
        }
        let origin = public.as_str().trim_end_matches('/').to_owned();

        let prefix = normalise_prefix(prefix)?;
        let cookie_domain = match cookie_domain {
            None => None,
            Some(d) => Some(normalise_cookie_domain(d)?),
        };
        let allowed = allowed_return_urls
            .iter()
            .map(|s| AllowedUrl::parse(s))
            .collect::<Result<Vec<_>, _>>()?;

        let settings = EdgeSettings {
            kratos_origin: kratos,
            public_base: format!("{origin}{prefix}"),
            prefix,
            cookie_domain,
            public_is_https,
            allowed_return_urls: allowed,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Re-checks the invariants [`EdgeSettings::new`] establishes (for hand-built settings).
    pub fn validate(&self) -> Result<(), String> {
        let k = &self.kratos_origin;
        if !matches!(k.scheme(), "http" | "https") || k.host_str().is_none() {
            return Err("kratos_origin must be an http(s) URL with a host".into());
        }
        if !k.path().ends_with('/') || k.query().is_some() || k.fragment().is_some() {
            return Err("kratos_origin must end in '/' and have no query or fragment".into());
        }
        if normalise_prefix(&self.prefix)? != self.prefix {
            return Err(format!("prefix {:?} is not normalised", self.prefix));
        }
        let origin = self
            .public_base
            .strip_suffix(self.prefix.as_str())
            .ok_or("public_base must end with the prefix")?;
        let public = Url::parse(origin).map_err(|e| format!("public_base: {e}"))?;
        if public.as_str().trim_end_matches('/') != origin || public.path() != "/" {
            return Err("public_base must be a normalised origin followed by the prefix".into());
        }
        if (public.scheme() == "https") != self.public_is_https {
            return Err("public_is_https does not match public_base".into());
        }
        let kb = self.kratos_base();
        if let Some(rest) = self.public_base.strip_prefix(kb) {
            if rest.is_empty() || rest.starts_with('/') {
                if rest.is_empty() {
                    // public base == Kratos base: rewriting is the identity; allowed.
                    return Ok(());
                }
                return Err(format!(
                    "the public base {} lies under Kratos's own base URL {kb}: the edge would \
                     redirect clients back into Kratos's origin",
                    self.public_base
                ));
            }
        }
        Ok(())
    }

    /// Kratos's base URL without the trailing slash: `http://127.0.0.1:4433`,
    /// `http://kratos/base`. This is the string every rewrite looks for.
    pub fn kratos_base(&self) -> &str {
        self.kratos_origin.as_str().trim_end_matches('/')
    }

    /// Kratos's base path without the trailing slash (`""` for a root mount, `/base`).
    pub fn kratos_base_path(&self) -> &str {
        self.kratos_origin.path().trim_end_matches('/')
    }

    /// `host[:port]` of Kratos, for the `Host` header of edge requests (port only when it is not
    /// the scheme's default).
    pub fn kratos_authority(&self) -> String {
        let host = self.kratos_origin.host_str().unwrap_or_default();
        match self.kratos_origin.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        }
    }

    /// The public origin (`https://app.example.com`), i.e. `public_base` without the prefix.
    pub fn public_origin(&self) -> &str {
        &self.public_base[..self.public_base.len() - self.prefix.len()]
    }

    /// `host[:port]` of the public origin, for `X-Forwarded-Host`.
    pub fn public_authority(&self) -> &str {
        let o = self.public_origin();
        o.split_once("://").map_or(o, |(_, a)| a)
    }

    /// `"https"` or `"http"`, for `X-Forwarded-Proto`.
    pub fn public_scheme(&self) -> &'static str {
        if self.public_is_https {
            "https"
        } else {
            "http"
        }
    }

    /// Checks a `return_to` value against this route's allow-list (the public origin is always
    /// allowed). See [`returnto::check_return_to`].
    pub fn check_return_to(&self, value: &str) -> Result<(), ReturnToError> {
        check_return_to(value, &self.allowed_return_urls, Some(self.public_origin()))
    }
}

/// `""`/`"/"` -> `""`; `"/.ory/"` -> `"/.ory"`; refuses anything that is not a plain path.
fn normalise_prefix(prefix: &str) -> Result<String, String> {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    if !p.starts_with('/') {
        return Err(format!("path_prefix {prefix:?} must start with '/'"));
    }
    if p.bytes().any(|b| {
        b.is_ascii_control() || b.is_ascii_whitespace() || matches!(b, b'?' | b'#' | b'\\' | b'%')
    }) || !p.is_ascii()
    {
        return Err(format!(
            "path_prefix {prefix:?} may only contain printable ASCII without ? # \\ %"
        ));
    }
    if p[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!(
            "path_prefix {prefix:?} has an empty or dot segment"
        ));
    }
    Ok(p.to_owned())
}

fn normalise_cookie_domain(d: &str) -> Result<String, String> {
    let d = d.trim_start_matches('.').to_ascii_lowercase();
    if !crate::host::is_host_name(&d) {
        return Err(format!("cookie_domain {d:?} is not a domain name"));
    }
    Ok(d)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::EdgeSettings;

    /// Kratos on `http://127.0.0.1:4433/`, public `https://app.example.com/.ory`.
    pub fn settings() -> EdgeSettings {
        EdgeSettings::new(
            "http://127.0.0.1:4433/",
            "https://app.example.com",
            "/.ory",
            Some("example.com"),
            &[
                "https://app.example.com/".to_owned(),
                "myapp://callback".to_owned(),
            ],
        )
        .unwrap()
    }

    pub fn settings_with(kratos: &str, public: &str, prefix: &str) -> EdgeSettings {
        EdgeSettings::new(kratos, public, prefix, None, &[]).unwrap()
    }

    pub const LOGIN_FLOW: &str = include_str!("fixtures/login_flow.json");
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn new_normalises() {
        let s = settings();
        assert_eq!(s.kratos_origin.as_str(), "http://127.0.0.1:4433/");
        assert_eq!(s.kratos_base(), "http://127.0.0.1:4433");
        assert_eq!(s.kratos_base_path(), "");
        assert_eq!(s.kratos_authority(), "127.0.0.1:4433");
        assert_eq!(s.public_base, "https://app.example.com/.ory");
        assert_eq!(s.public_origin(), "https://app.example.com");
        assert_eq!(s.public_authority(), "app.example.com");
        assert_eq!(s.public_scheme(), "https");
        assert_eq!(s.prefix, "/.ory");
        assert!(s.public_is_https);
        assert_eq!(s.cookie_domain.as_deref(), Some("example.com"));
        assert_eq!(s.allowed_return_urls.len(), 2);

        let s = EdgeSettings::new(
            "http://kratos:4433/base",
            "http://localhost:8080/",
            "/",
            Some(".Example.COM"),
            &[],
        )
        .unwrap();
        assert_eq!(s.kratos_origin.as_str(), "http://kratos:4433/base/");
        assert_eq!(s.kratos_base(), "http://kratos:4433/base");
        assert_eq!(s.kratos_base_path(), "/base");
        assert_eq!(s.public_base, "http://localhost:8080");
        assert_eq!(s.prefix, "");
        assert!(!s.public_is_https);
        assert_eq!(s.public_scheme(), "http");
        assert_eq!(s.public_authority(), "localhost:8080");
        assert_eq!(s.cookie_domain.as_deref(), Some("example.com"));

        let s = settings_with(
            "https://kratos.internal",
            "https://app.example.com",
            "/a/b/",
        );
        assert_eq!(s.prefix, "/a/b");
        assert_eq!(s.kratos_authority(), "kratos.internal");
    }

    #[test]
    fn new_refuses_bad_input() {
        let ok = |k: &str, p: &str, pre: &str| EdgeSettings::new(k, p, pre, None, &[]);
        assert!(ok("ftp://kratos/", "https://a.com", "").is_err());
        assert!(ok("http://u:p@kratos/", "https://a.com", "").is_err());
        assert!(ok("http://kratos/?x=1", "https://a.com", "").is_err());
        assert!(ok("http://kratos/", "https://a.com/path", "").is_err());
        assert!(ok("http://kratos/", "https://a.com?x", "").is_err());
        assert!(ok("http://kratos/", "ws://a.com", "").is_err());
        assert!(ok("http://kratos/", "https://a.com", "ory").is_err());
        assert!(ok("http://kratos/", "https://a.com", "/a//b").is_err());
        assert!(ok("http://kratos/", "https://a.com", "/a/../b").is_err());
        assert!(ok("http://kratos/", "https://a.com", "/a?b").is_err());
        assert!(ok("http://kratos/", "https://a.com", "/a%2fb").is_err());
        assert!(ok("http://kratos/", "https://a.com", "/a b").is_err());
        // the public base under Kratos's own base URL
        assert!(ok("http://kratos:4433/", "http://kratos:4433", "/.ory").is_err());
        // same origin, same base: identity rewrite, allowed
        assert!(ok("http://kratos:4433/", "http://kratos:4433", "").is_ok());
        assert!(EdgeSettings::new("http://k/", "https://a.com", "", Some("a b"), &[]).is_err());
        assert!(EdgeSettings::new("http://k/", "https://a.com", "", Some(""), &[]).is_err());
        assert!(EdgeSettings::new(
            "http://k/",
            "https://a.com",
            "",
            None,
            &["javascript:x".into()]
        )
        .is_err());
    }

    #[test]
    fn check_return_to_uses_public_origin() {
        let s = settings_with("http://127.0.0.1:4433/", "https://app.example.com", "/.ory");
        // no allow-list: the proxy does not judge
        assert!(s.check_return_to("https://evil.example/").is_ok());
        let s = settings();
        assert!(s.check_return_to("https://app.example.com/x").is_ok());
        assert!(s.check_return_to("https://evil.example/").is_err());
    }

    /// The official client's `UiNodeAttributes` is an internally tagged enum on `node_type`
    /// whose variants also require `node_type`, so no real flow with nodes deserialises whole:
    /// parse the flow with its nodes set aside, and each node's attributes on their own.
    fn parse_login_flow(json: &[u8]) -> ory_kratos_client::models::LoginFlow {
        use ory_kratos_client::models;
        let v: serde_json::Value = serde_json::from_slice(json).unwrap();
        let mut without_nodes = v.clone();
        without_nodes["ui"]["nodes"] = serde_json::json!([]);
        let flow: models::LoginFlow = serde_json::from_value(without_nodes).expect("LoginFlow");
        for node in v["ui"]["nodes"].as_array().unwrap() {
            let a = node["attributes"].clone();
            match a["node_type"].as_str().unwrap() {
                "input" => {
                    let _: models::UiNodeInputAttributes = serde_json::from_value(a).unwrap();
                }
                "script" => {
                    let _: models::UiNodeScriptAttributes = serde_json::from_value(a).unwrap();
                }
                other => panic!("node_type {other}"),
            }
            let _: models::UiNodeMeta = serde_json::from_value(node["meta"].clone()).unwrap();
            let _: models::ui_node::GroupEnum =
                serde_json::from_value(node["group"].clone()).unwrap();
        }
        flow
    }

    #[test]
    fn fixture_parses_with_the_official_client_before_and_after_rewriting() {
        let flow = parse_login_flow(LOGIN_FLOW.as_bytes());
        assert_eq!(flow.r#type, "browser");
        let out = Rewriter::new(&settings())
            .rewrite_body(LOGIN_FLOW.as_bytes())
            .unwrap();
        let flow = parse_login_flow(&out);
        assert!(flow.ui.action.starts_with("https://app.example.com/.ory/"));
        assert!(flow
            .request_url
            .starts_with("https://app.example.com/.ory/"));
    }

    #[test]
    fn fixture_is_a_kratos_login_flow() {
        let v: serde_json::Value = serde_json::from_str(LOGIN_FLOW).unwrap();
        assert_eq!(v["type"], "browser");
        assert_eq!(v["state"], "choose_method");
        assert!(v["organization_id"].is_null());
        assert!(v["ui"]["action"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:4433/self-service/login?flow="));
        let nodes = v["ui"]["nodes"].as_array().unwrap();
        for name in ["csrf_token", "identifier", "password", "method", "provider"] {
            assert!(
                nodes.iter().any(|n| n["attributes"]["name"] == name),
                "node {name}"
            );
        }
    }
}

/// One compiled `kratos_edge` route: its settings and everything derived from them once, at
/// start-up (the rewriter's needles, the Ory Network headers). Plain data: what the edge remembers
/// while running (the OIDC warnings already given) lives in [`crate::state::Runtime`].
#[derive(Debug)]
pub struct EdgeRoute {
    pub settings: EdgeSettings,
    pub rewriter: Rewriter,
    /// `Ory-Base-URL-Rewrite`, `-Token` (sensitive), `Ory-No-Custom-Domain-Redirect`, in Ory Network
    /// mode.
    pub ory_headers: Option<[(http::HeaderName, http::HeaderValue); 3]>,
}

impl EdgeRoute {
    pub fn new(settings: EdgeSettings, ory_api_key: Option<&str>) -> Result<EdgeRoute, String> {
        let ory_headers = match ory_api_key {
            Some(key) => Some(
                ory_network_headers(&settings.public_base, key)
                    .map_err(|_| "ory_network_api_key is not a valid header value".to_string())?,
            ),
            None => None,
        };
        Ok(EdgeRoute {
            rewriter: Rewriter::new(&settings),
            settings,
            ory_headers,
        })
    }
}
