//! Rebuilding the original request from a decision request: which ingress convention asked, and
//! the method, host and target it says the client sent. Plain functions, no sockets.
//!
//! Conventions, in the order they are recognised:
//! - **nginx** (`auth_request`, ingress-nginx `auth-url`): `X-Original-Method` plus
//!   `X-Original-URI` (the target; the host is the decision request's `Host`, which the
//!   documented config sets to `$host`) and/or `X-Original-URL` (absolute URL, as ingress-nginx
//!   sends it; its authority is the host). When both are present (one may be a client's copy the
//!   ingress passed through) they must name the same target, and the URL the `Host`.
//! - **forward auth** (Traefik `forwardAuth`, Caddy `forward_auth`): `X-Forwarded-Method`,
//!   `X-Forwarded-Host` and `X-Forwarded-Uri`, all required.
//! - **Envoy** ext_authz (HTTP service): the request's own method and `Host`, its target after
//!   `server.decisions_path_prefix` (only when that prefix is set).
//! - **Oathkeeper** (`/decisions/<path>`): the target after `/decisions`, the method from
//!   `X-Forwarded-Method` or the request's own, the host from `X-Forwarded-Host` or `Host`.
//!
//! Only peers in `server.trusted_proxies` are answered at all (403); a request that carries the
//! headers of two conventions, repeats one of them or misses a required one is a 400. A header
//! convention on an Envoy path is a 400 (Envoy never sends those headers: a client did); on a
//! `/decisions` path it counts when the path is `/decisions` alone (an ingress still pointed at
//! an Oathkeeper address) or names the same target.

use std::net::IpAddr;

use http::header::HOST;
use http::{HeaderMap, Method, Uri};
use ipnet::IpNet;

/// Headers that carry the original request's coordinates: they never reach admission (the
/// rebuilt request has the original method, `Host` and target instead).
pub const CONVENTION_HEADERS: [&str; 7] = [
    "x-original-method",
    "x-original-uri",
    "x-original-url",
    "x-forwarded-method",
    "x-forwarded-host",
    "x-forwarded-uri",
    "x-forwarded-proto",
];

/// The Oathkeeper decision path prefix.
pub const OATHKEEPER_PREFIX: &str = "/decisions";

/// Which ingress convention a decision request follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// nginx `auth_request` / ingress-nginx `auth-url`.
    Nginx,
    /// Traefik `forwardAuth`, Caddy `forward_auth`.
    ForwardAuth,
    /// Envoy ext_authz, HTTP service, with `server.decisions_path_prefix`.
    Envoy,
    /// Oathkeeper's `/decisions/<path>`.
    Oathkeeper,
}

/// A decision request as received.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The address of the peer (the ingress), when known.
    pub peer: Option<IpAddr>,
    /// The decision request's own method.
    pub method: &'a Method,
    /// The decision request's own target (path and query), as sent.
    pub target: &'a [u8],
    /// The decision request's headers (the original request's, plus the convention's).
    pub headers: &'a HeaderMap,
}

/// The original request, as the ingress describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub convention: Convention,
    pub method: Method,
    /// The original `Host` value (authority as sent; admission validates it).
    pub host: Option<String>,
    /// The original target: path and query, starting with `/`.
    pub target: Vec<u8>,
}

/// Why a decision request is not answered with a decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The peer is not in `server.trusted_proxies`.
    #[error("the decision API only answers trusted proxies")]
    UntrustedPeer,
    /// A header the convention needs is missing.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// A convention header is repeated, or two conventions are mixed.
    #[error("ambiguous: {0}")]
    Ambiguous(&'static str),
    /// A convention header is not usable (not UTF-8, not a method, not an origin-form target).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// No convention applies to this request.
    #[error(
        "not a decision request: send X-Original-URI, X-Forwarded-Uri or use /decisions/<path>"
    )]
    NoConvention,
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::UntrustedPeer => 403,
            _ => 400,
        }
    }
}

/// Reads the original request out of a decision request; see the module docs.
///
/// # Errors
/// A [`Refusal`]: untrusted peer (403), or missing, repeated, mixed or invalid headers (400).
pub fn original(
    trusted: &[IpNet],
    envoy_prefix: &str,
    req: &Inbound<'_>,
) -> Result<Original, Refusal> {
    if !req
        .peer
        .is_some_and(|ip| trusted.iter().any(|n| n.contains(&ip)))
    {
        return Err(Refusal::UntrustedPeer);
    }
    let h = req.headers;
    let nginx = h.contains_key("x-original-uri") || h.contains_key("x-original-url");
    let forward = h.contains_key("x-forwarded-uri");
    if nginx && forward {
        return Err(Refusal::Ambiguous(
            "X-Original-* and X-Forwarded-Uri together",
        ));
    }
    // An Envoy path with a header convention's headers: Envoy never sends them itself, so they
    // are a client's, passed through (broad `allowed_headers`), and must not pick the target.
    let envoy = if envoy_prefix.is_empty() {
        None
    } else {
        strip_prefix(req.target, envoy_prefix)
    };
    if envoy.is_some() && (nginx || forward) {
        return Err(Refusal::Ambiguous(
            "a decisions_path_prefix path with X-Original-* or X-Forwarded-Uri",
        ));
    }
    let oathkeeper = strip_prefix(req.target, OATHKEEPER_PREFIX);
    if nginx || forward {
        let original = if nginx {
            from_nginx(h)?
        } else {
            from_forward_auth(h)?
        };
        // An ingress once pointed at Oathkeeper asks on `/decisions` (Traefik's `address`), or on
        // `/decisions<target>` with the same target in its headers; another target means one of
        // them is a client's header, passed through.
        if let Some(rest) = oathkeeper {
            if !(rest.is_empty() || rest == b"/")
                && origin_form(rest, "target after /decisions")? != original.target
            {
                return Err(Refusal::Ambiguous(
                    "a /decisions path naming another target than the headers",
                ));
            }
        }
        return Ok(original);
    }
    if let Some(rest) = envoy {
        return Ok(Original {
            convention: Convention::Envoy,
            method: req.method.clone(),
            host: single(h, HOST.as_str(), "Host")?.map(str::to_owned),
            target: origin_form(rest, "target after decisions_path_prefix")?,
        });
    }
    if let Some(rest) = oathkeeper {
        let method = match single(h, "x-forwarded-method", "X-Forwarded-Method")? {
            Some(m) => self::method(m)?,
            None => req.method.clone(),
        };
        let host = match single(h, "x-forwarded-host", "X-Forwarded-Host")? {
            Some(v) => Some(v),
            None => single(h, HOST.as_str(), "Host")?,
        };
        return Ok(Original {
            convention: Convention::Oathkeeper,
            method,
            host: host.map(str::to_owned),
            target: origin_form(rest, "target after /decisions")?,
        });
    }
    Err(Refusal::NoConvention)
}

/// Traefik, Caddy: `X-Forwarded-Method`, `X-Forwarded-Host` and `X-Forwarded-Uri`, all required.
fn from_forward_auth(h: &HeaderMap) -> Result<Original, Refusal> {
    Ok(Original {
        convention: Convention::ForwardAuth,
        method: method(required(h, "x-forwarded-method", "X-Forwarded-Method")?)?,
        host: Some(required(h, "x-forwarded-host", "X-Forwarded-Host")?.to_owned()),
        target: origin_form(
            required(h, "x-forwarded-uri", "X-Forwarded-Uri")?.as_bytes(),
            "X-Forwarded-Uri",
        )?,
    })
}

/// nginx: `X-Original-Method` with `X-Original-URI` and/or `X-Original-URL`.
fn from_nginx(h: &HeaderMap) -> Result<Original, Refusal> {
    let method = method(required(h, "x-original-method", "X-Original-Method")?)?;
    let uri = single(h, "x-original-uri", "X-Original-URI")?
        .map(|u| origin_form(u.as_bytes(), "X-Original-URI"))
        .transpose()?;
    let (host, target) = match single(h, "x-original-url", "X-Original-URL")? {
        Some(url) => {
            let parsed = Uri::try_from(url).map_err(|_| Refusal::Invalid("X-Original-URL"))?;
            let (Some(scheme), Some(authority)) = (parsed.scheme_str(), parsed.authority()) else {
                return Err(Refusal::Invalid("X-Original-URL"));
            };
            if !matches!(scheme, "http" | "https") {
                return Err(Refusal::Invalid("X-Original-URL"));
            }
            let from_url = origin_form(
                parsed
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .as_bytes(),
                "X-Original-URL",
            )?;
            // Both: one may be a client's copy passed through; believe them only when the URL
            // names the same target and the same host as the ingress's `Host`.
            if let Some(u) = &uri {
                let host = single(h, HOST.as_str(), "Host")?;
                if *u != from_url
                    || !host.is_some_and(|v| v.eq_ignore_ascii_case(authority.as_str()))
                {
                    return Err(Refusal::Ambiguous(
                        "X-Original-URI and X-Original-URL disagree",
                    ));
                }
            }
            (Some(authority.as_str().to_owned()), from_url)
        }
        None => (
            single(h, HOST.as_str(), "Host")?.map(str::to_owned),
            uri.ok_or(Refusal::Missing("X-Original-URI"))?,
        ),
    };
    Ok(Original {
        convention: Convention::Nginx,
        method,
        host,
        target,
    })
}

/// The one value of `name`, if present; repeated -> ambiguous, not UTF-8 -> invalid.
fn single<'h>(
    h: &'h HeaderMap,
    name: &str,
    label: &'static str,
) -> Result<Option<&'h str>, Refusal> {
    let mut values = h.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(Refusal::Ambiguous(label)),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| Refusal::Invalid(label)),
    }
}

/// The one value of `name`; missing -> 400.
fn required<'h>(h: &'h HeaderMap, name: &str, label: &'static str) -> Result<&'h str, Refusal> {
    single(h, name, label)?.ok_or(Refusal::Missing(label))
}

/// A method token.
fn method(v: &str) -> Result<Method, Refusal> {
    Method::from_bytes(v.trim().as_bytes()).map_err(|_| Refusal::Invalid("method"))
}

/// A target must be origin-form (`/...`), without whitespace or control bytes; "" means `/`.
fn origin_form(t: &[u8], label: &'static str) -> Result<Vec<u8>, Refusal> {
    if t.is_empty() {
        return Ok(b"/".to_vec());
    }
    if t.first() == Some(&b'?') {
        let mut v = b"/".to_vec();
        v.extend_from_slice(t);
        return Ok(v);
    }
    if t.first() != Some(&b'/') || t.iter().any(|b| b.is_ascii_control() || *b == b' ') {
        return Err(Refusal::Invalid(label));
    }
    Ok(t.to_vec())
}

/// `target` without `prefix` when the prefix ends at a segment boundary (`/`, `?` or the end).
fn strip_prefix<'t>(target: &'t [u8], prefix: &str) -> Option<&'t [u8]> {
    let rest = target.strip_prefix(prefix.as_bytes())?;
    match rest.first() {
        None | Some(b'/') | Some(b'?') => Some(rest),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests;
