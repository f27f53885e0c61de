//! Ory Network custom-domain mode: the headers Ory's own CLI proxy sends so that Ory Network
//! writes the custom domain into its URLs (and does not redirect to its own domain).
//!
//! In `upstream_request_filter` of an edge route: first remove every [`ORY_HEADERS`] name the
//! client sent (on **every** edge request, API key configured or not), then, when the route has
//! `ory_network_api_key`, insert [`ory_network_headers`]. The key is marked sensitive (HTTP/2
//! never indexes it; `Debug` prints `Sensitive`); it must never reach the application or the
//! client, and never a log line.

use http::header::{HeaderName, HeaderValue, InvalidHeaderValue};

/// Lowercase names of the Ory Network rewrite headers.
pub const ORY_HEADERS: [&str; 3] = [
    "ory-base-url-rewrite",
    "ory-base-url-rewrite-token",
    "ory-no-custom-domain-redirect",
];

/// `Ory-Base-URL-Rewrite: <public_base>`, `Ory-Base-URL-Rewrite-Token: <key>` (sensitive),
/// `Ory-No-Custom-Domain-Redirect: true`. Fails only when `public_base` or `key` contains
/// bytes a header value cannot hold (check once at config time).
pub fn ory_network_headers(
    public_base: &str,
    key: &str,
) -> Result<[(HeaderName, HeaderValue); 3], InvalidHeaderValue> {
    let base = HeaderValue::from_str(public_base)?;
    let mut token = HeaderValue::from_str(key)?;
    token.set_sensitive(true);
    Ok([
        (HeaderName::from_static(ORY_HEADERS[0]), base),
        (HeaderName::from_static(ORY_HEADERS[1]), token),
        (
            HeaderName::from_static(ORY_HEADERS[2]),
            HeaderValue::from_static("true"),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let h = ory_network_headers("https://app.example.com/.ory", "ory_apikey_secret").unwrap();
        assert_eq!(h[0].0.as_str(), "ory-base-url-rewrite");
        assert_eq!(h[0].1, "https://app.example.com/.ory");
        assert!(!h[0].1.is_sensitive());
        assert_eq!(h[1].0.as_str(), "ory-base-url-rewrite-token");
        assert_eq!(h[1].1, "ory_apikey_secret");
        assert!(h[1].1.is_sensitive());
        assert!(!format!("{:?}", h[1].1).contains("secret"));
        assert_eq!(h[2].0.as_str(), "ory-no-custom-domain-redirect");
        assert_eq!(h[2].1, "true");
        for (i, (n, _)) in h.iter().enumerate() {
            assert_eq!(n.as_str(), ORY_HEADERS[i]);
        }
        assert!(ory_network_headers("https://a", "bad\nkey").is_err());
    }
}
