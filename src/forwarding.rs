//! Request headers only a trusted proxy may send: the forwarding headers (`X-Forwarded-*`,
//! `Forwarded`, `X-Real-IP`), and the headers with which some backends take the request's path, host
//! or method from somewhere else than the request line. sessiongate authorizes by method, host and
//! canonical path; a backend that reads `X-Original-URL: /admin` on a request judged as `/public`
//! would serve what was never judged. From any other peer they are removed on every route.
//!
//! Names are compared with `_` read as `-` (CGI/WSGI/PHP backends do; see [`identity::dashed`]).

use std::net::{IpAddr, Ipv4Addr};

use http::header::HOST;
use http::{HeaderName, HeaderValue};
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
    forwarding_dashed(&identity::dashed(name))
}

/// Whether `name` is one of [`REROUTING`].
pub fn is_rerouting_header(name: &HeaderName) -> bool {
    REROUTING.contains(&&*identity::dashed(name))
}

/// Whether a client request's header must be removed before it goes upstream because the peer
/// is not a trusted proxy.
pub fn untrusted_only(name: &HeaderName) -> bool {
    untrusted_only_dashed(&identity::dashed(name))
}

/// [`untrusted_only`] for a name already read through [`identity::dashed`].
pub fn untrusted_only_dashed(name: &str) -> bool {
    forwarding_dashed(name) || REROUTING.contains(&name)
}

fn forwarding_dashed(n: &str) -> bool {
    n.starts_with("x-forwarded-") || n == "forwarded" || n == "x-real-ip"
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets `X-Forwarded-For` (the client's address, appended to a trusted proxy's list, else alone),
/// and `X-Forwarded-Proto: http` and `X-Forwarded-Host` (the `Host`) unless a trusted proxy set
/// them. An untrusted client's forwarding headers were removed before (see [`untrusted_only`]).
///
/// Per request: names are parsed once (constants), the address is written without `fmt`.
pub fn set_forwarding_headers(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    trusted: bool,
) -> pingora::Result<()> {
    if let Some(ip) = client {
        let mut buf = [0u8; 64];
        let ip = ip_text(ip, &mut buf);
        let value = match req.headers.get(&X_FORWARDED_FOR).filter(|_| trusted) {
            Some(prev) => {
                let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
                v.extend_from_slice(prev.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip);
                HeaderValue::from_maybe_shared(bytes::Bytes::from(v))
            }
            None => HeaderValue::from_bytes(ip),
        };
        let value = value.map_err(|_| {
            pingora::Error::explain(pingora::ErrorType::InvalidHTTPHeader, "x-forwarded-for")
        })?;
        req.insert_header("x-forwarded-for", value)?;
    }
    if !req.headers.contains_key(&X_FORWARDED_PROTO) {
        req.insert_header("x-forwarded-proto", HeaderValue::from_static("http"))?;
    }
    if !req.headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = req.headers.get(HOST).cloned() {
            req.insert_header("x-forwarded-host", host)?;
        }
    }
    Ok(())
}

/// The textual form of `ip` in `buf`: dotted decimal for IPv4 (written by hand: `fmt` was a
/// quarter of this module's cost per request), RFC 5952 for IPv6 (`Display`).
fn ip_text(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => ipv4_text(v4, buf),
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // an IPv6 address has at most 45 characters: the buffer holds it
            let _ = write!(cursor, "{v6}");
            let n = usize::try_from(cursor.position()).unwrap_or(0);
            &buf[..n]
        }
    }
}

fn ipv4_text(ip: Ipv4Addr, buf: &mut [u8; 64]) -> &[u8] {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str) -> HeaderName {
        HeaderName::from_bytes(n.as_bytes()).expect("name")
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut buf = [0u8; 64];
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.10.100.200",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes(), "{ip}");
        }
        for n in (0..=u32::MAX).step_by(9_973_451) {
            let ip = IpAddr::V4(Ipv4Addr::from(n));
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes(), "{ip}");
        }
    }

    #[test]
    fn forwarded_for_is_appended_only_for_a_trusted_proxy() {
        let client = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        for (trusted, want) in [(true, "10.0.0.1, 192.0.2.7"), (false, "192.0.2.7")] {
            let mut req = RequestHeader::build("GET", b"/", None).expect("request");
            req.insert_header("host", "app.example").expect("header");
            req.insert_header("x-forwarded-for", "10.0.0.1")
                .expect("header");
            set_forwarding_headers(&mut req, client, trusted).expect("set");
            assert_eq!(req.headers["x-forwarded-for"], want);
            assert_eq!(req.headers["x-forwarded-proto"], "http");
            assert_eq!(req.headers["x-forwarded-host"], "app.example");
        }
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        req.insert_header("x-forwarded-proto", "https")
            .expect("header");
        set_forwarding_headers(&mut req, None, true).expect("set");
        assert!(!req.headers.contains_key("x-forwarded-for"));
        assert_eq!(req.headers["x-forwarded-proto"], "https");
        assert!(!req.headers.contains_key("x-forwarded-host"));
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
