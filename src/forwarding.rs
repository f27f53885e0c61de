//! Request headers only a trusted proxy may send: the forwarding headers (`X-Forwarded-*`,
//! `Forwarded`, `X-Real-IP`), and the headers with which some backends take the request's path, host
//! or method from somewhere else than the request line. sessiongate authorizes by method, host and
//! canonical path; a backend that reads `X-Original-URL: /admin` on a request judged as `/public`
//! would serve what was never judged. From any other peer they are removed on every route.
//!
//! Names are compared with `_` read as `-` (CGI/WSGI/PHP backends do; see [`identity::dashed`]).

use std::net::IpAddr;

use http::header::HOST;
use http::HeaderName;
use pingora::http::RequestHeader;

use crate::identity;

/// Headers that re-route a request inside some backend, with where each is read (all lower case):
pub const REROUTING: &[&str] = &[
    // the path
    "x-original-url",        // IIS URL Rewrite, Symfony, Laminas/Zend
    "x-rewrite-url",         // IIS (ISAPI_Rewrite), Symfony, Laminas/Zend
    "x-original-uri",        // nginx auth_request convention, some Java filters
    "x-original-path",       // misc. gateways
    "x-envoy-original-path", // Envoy (trusted only from Envoy itself)
    "x-override-url",        // misc. frameworks
    "x-http-destinationurl", // WebDAV-style rewrites
    "x-proxy-url",           // misc. proxies
    // the host
    "x-host",          // Symfony (trusted headers), some PHP apps
    "x-original-host", // Azure Front Door / App Gateway conventions
    // the method
    "x-http-method-override", // Google APIs, Express method-override, Rails, Laravel
    "x-http-method",          // OData, Symfony
    "x-method-override",      // IBM, misc.
];

/// Whether `name` is a forwarding header (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`).
pub fn is_forwarding_header(name: &HeaderName) -> bool {
    let dashed = identity::dashed(name.as_str());
    let n = dashed.as_deref().unwrap_or(name.as_str());
    n.starts_with("x-forwarded-") || n == "forwarded" || n == "x-real-ip"
}

/// Whether `name` is one of [`REROUTING`].
pub fn is_rerouting_header(name: &HeaderName) -> bool {
    let dashed = identity::dashed(name.as_str());
    let n = dashed.as_deref().unwrap_or(name.as_str());
    REROUTING.contains(&n)
}

/// Whether a client request's header must be removed before it goes upstream because the peer
/// is not a trusted proxy.
pub fn untrusted_only(name: &HeaderName) -> bool {
    is_forwarding_header(name) || is_rerouting_header(name)
}

/// `X-Forwarded-*`, `Forwarded`, `X-Real-IP`, also spelled with `_` (CGI, PHP and WSGI read
/// `X_Forwarded_For` as `X-Forwarded-For`).
pub fn set_forwarding_headers(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    trusted: bool,
) -> pingora::Result<()> {
    let ip = client.map(|ip| ip.to_string());
    match (&ip, trusted, req.headers.get("x-forwarded-for").cloned()) {
        (Some(ip), true, Some(prev)) => {
            let prev = String::from_utf8_lossy(prev.as_bytes()).into_owned();
            req.insert_header("x-forwarded-for", format!("{prev}, {ip}"))?;
        }
        (Some(ip), _, _) => {
            req.insert_header("x-forwarded-for", ip.as_str())?;
        }
        (None, _, _) => {}
    }
    if !req.headers.contains_key("x-forwarded-proto") {
        req.insert_header("x-forwarded-proto", "http")?;
    }
    if !req.headers.contains_key("x-forwarded-host") {
        if let Some(host) = req.headers.get(HOST).cloned() {
            req.insert_header("x-forwarded-host", host)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str) -> HeaderName {
        HeaderName::from_bytes(n.as_bytes()).expect("name")
    }

    #[test]
    fn forwarding_and_rerouting_families() {
        for n in [
            "x-forwarded-for",
            "x-forwarded-uri",
            "x-forwarded-prefix",
            "X_Forwarded_Host",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(is_forwarding_header(&h(n)), "{n}");
            assert!(untrusted_only(&h(n)), "{n}");
        }
        for n in [
            "X-Original-URL",
            "x_original_url",
            "X-Rewrite-Url",
            "x-http-method-override",
            "X-Host",
        ] {
            assert!(is_rerouting_header(&h(n)), "{n}");
            assert!(untrusted_only(&h(n)), "{n}");
        }
        for n in ["x-user-id", "host", "x-original", "x-hosts", "accept"] {
            assert!(!untrusted_only(&h(n)), "{n}");
        }
    }
}
