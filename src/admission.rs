//! Admission: everything sessiongate decides about a request from its head, as plain code (no
//! pingora types, no sockets): framing and `Host` checks, the canonical path, the route, the
//! credential, the session (through a [`SessionSource`]: the cache, or a test's table) and the
//! route's policy. The result is a [`Decision`]: forward (with the identity headers and the edge
//! plan) or answer with a [`GateError`]. The pingora hooks (`crate::proxy`) only translate a
//! request into a [`RequestView`] and the decision back into pingora calls.
//!
//! The order of the checks is the order of the README's "How a request is handled":
//! 1. header count and size (`server.limits`) -> 431;
//! 2. `Content-Length` together with `Transfer-Encoding` (RFC 9112 §6.3: request smuggling) -> 400;
//! 3. canonical path (`crate::path`) -> 400;
//! 4. `Host`: missing on HTTP/1.1, repeated or not an authority (RFC 9112 §3.2) -> 400;
//! 5. route (`crate::routing`) -> 404; an upgrade on a route without `websocket` -> 400;
//! 6. edge routes: the request plan (`crate::edge::request`), `return_to` in the query -> 400;
//! 7. credential (`crate::credential`) and session, unless the route is anonymous;
//! 8. the route's policy (`crate::policy`).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HOST, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

use crate::config::{AuthMode, Config};
use crate::credential::{self, Credential, CredentialError};
use crate::edge::request::{plan, EdgeRequest};
use crate::error::GateError;
use crate::host::is_host_name;
use crate::identity;
use crate::identity::token::TokenIssuer;
use crate::path::{canonicalize, CanonicalTarget};
use crate::policy::{self, RequestFacts};
use crate::routing::RouteTable;
use crate::session::store::{LookupKind, SessionStore};
use crate::session::Resolution;

/// The parts of a request admission looks at. Borrowed from whatever parsed the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub version: Version,
    /// The request target as parsed (its host, for absolute-form targets without `Host`).
    pub uri: &'a Uri,
    /// The request target's path and query, byte for byte as the client sent them.
    pub raw_path: &'a [u8],
    pub headers: &'a HeaderMap,
    /// The client sent `Content-Length` and `Transfer-Encoding` together. A parser that keeps only
    /// one of them must tell from the raw header block (pingora drops `Content-Length`).
    pub content_length_with_transfer_encoding: bool,
}

/// Where sessions come from: the cache with coalesced whoami calls in production
/// ([`SessionStore`]), a table in tests.
pub trait SessionSource {
    /// What Kratos says (or said) about `credential`, and how the answer was found.
    fn resolve(
        &self,
        credential: &Credential<'_>,
    ) -> impl Future<Output = (Resolution, LookupKind)> + Send;
}

impl SessionSource for Arc<SessionStore> {
    fn resolve(
        &self,
        credential: &Credential<'_>,
    ) -> impl Future<Output = (Resolution, LookupKind)> + Send {
        SessionStore::resolve(self, credential)
    }
}

/// A request admission lets through.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// Identity headers to set upstream (client-sent copies are stripped separately, always).
    pub identity: Vec<(HeaderName, HeaderValue)>,
    /// A session cookie Kratos re-issued during whoami, as the client must get it.
    pub set_cookie: Vec<Bytes>,
    /// The `outcome` label of `sessiongate_auth_decisions_total`.
    pub outcome: &'static str,
    /// The session came from the `stale_if_error` window.
    pub stale: bool,
    /// The plan of a `kratos_edge` request.
    pub edge: Option<EdgeRequest>,
}

/// What admission decided, with what it learnt on the way (for logs and metrics, also when the
/// request is refused).
#[derive(Debug)]
pub struct Decision {
    /// Index of the matched route in `Config::routes`.
    pub route: Option<usize>,
    /// The canonical target, once the path was canonicalised.
    pub target: Option<CanonicalTarget>,
    /// How the session was found (`None`: no session was looked up).
    pub lookup: Option<LookupKind>,
    /// Forward, or answer with this error.
    pub verdict: Result<Admitted, GateError>,
}

/// Admits or refuses a request; see the module docs for the order of the checks.
pub async fn admit<S: SessionSource>(gate: &Gate<'_, S>, req: &RequestView<'_>) -> Decision {
    let mut decision = Decision {
        route: None,
        target: None,
        lookup: None,
        verdict: Ok(Admitted::default()),
    };
    decision.verdict = admit_into(gate, req, &mut decision).await;
    decision
}

/// What admission decides with: the configuration and its route table, where sessions come from,
/// and the identity token signer (when `[identity_token]` is configured). The runtime lends one
/// ([`crate::state::Runtime::gate`]); tests build their own around a table of sessions.
pub struct Gate<'a, S> {
    pub config: &'a Config,
    pub table: &'a RouteTable,
    pub sessions: &'a S,
    pub tokens: Option<&'a TokenIssuer>,
}

async fn admit_into<S: SessionSource>(
    gate: &Gate<'_, S>,
    req: &RequestView<'_>,
    d: &mut Decision,
) -> Result<Admitted, GateError> {
    let (cfg, table, sessions) = (gate.config, gate.table, gate.sessions);
    let limits = &cfg.server.limits;
    if req.headers.len() > limits.max_request_headers
        || header_bytes(req) > limits.max_request_header_bytes
    {
        return Err(GateError::HeadersTooLarge);
    }
    if req.content_length_with_transfer_encoding {
        return Err(GateError::AmbiguousFraming);
    }
    let target = d.target.insert(canonicalize(req.raw_path)?);
    let host = request_host(req)?;
    let idx = table
        .find(host.as_deref(), &target.path, req.method)
        .ok_or(GateError::NoRoute)?;
    d.route = Some(idx);
    let route = &cfg.routes[idx];
    if req.headers.contains_key(UPGRADE) && !route.websocket {
        return Err(GateError::UpgradeNotAllowed);
    }

    let mut edge = None;
    if let Some(er) = &route.edge {
        // Kratos checks its own requests; the edge only needs the credential for cache purges.
        let cred = credential::extract(req.headers, &cfg.kratos.session_cookie)
            .ok()
            .flatten();
        let mut p = plan(er, req.method, req.headers, target, cred.as_ref())?;
        if p.kind.needs_identity() {
            if let Some(c) = &cred {
                if let (Resolution::Valid { session, .. }, _) = sessions.resolve(c).await {
                    p.identity_id = Some(session.identity_id.clone());
                }
            }
        }
        edge = Some(p);
    }

    let resolution = if route.auth == AuthMode::Anonymous {
        None
    } else {
        match credential::extract(req.headers, &cfg.kratos.session_cookie) {
            // Kratos would reject it; so do we, without asking.
            Err(CredentialError::Malformed) => Some(Resolution::Invalid),
            Err(e) => return Err(GateError::BadCredentialHeaders(e)),
            Ok(None) => None,
            Ok(Some(cred)) => {
                let (resolution, kind) = sessions.resolve(&cred).await;
                d.lookup = Some(kind);
                Some(resolution)
            }
        }
    };
    let facts = RequestFacts {
        method: req.method,
        public_origin: cfg.server.public_origin.as_deref(),
        target,
        login_url: cfg.kratos.login_url.as_ref(),
        kratos_url: &cfg.kratos.public_url,
        edge: cfg.browser_edge.as_deref().map(|e| &e.rewriter),
    };
    let forward = policy::decide(route, resolution, &facts)?;
    let identity = match &forward.session {
        Some(s) => {
            let mut headers = identity::render_all(&route.identity_headers, &s.values);
            // the signed identity token, reused from its cache while young enough
            if let (Some(spec), Some(issuer)) = (&route.identity_token, gate.tokens) {
                let now = std::time::SystemTime::now();
                if let Some(token) = issuer.token(route.index, spec, s, now) {
                    headers.push((spec.header.clone(), token));
                }
            }
            headers
        }
        None => Vec::new(),
    };
    let set_cookie = match cfg.browser_edge.as_deref() {
        // a session cookie Kratos re-issued during whoami, as the edge would pass it on
        Some(e) => forward
            .set_cookie
            .iter()
            .map(|c| Bytes::from(e.rewriter.rewrite_set_cookie(&String::from_utf8_lossy(c))))
            .collect(),
        None => forward.set_cookie,
    };
    Ok(Admitted {
        identity,
        set_cookie,
        outcome: forward.outcome,
        stale: forward.stale,
        edge,
    })
}

/// The `Host` value when it is a valid authority (host and optional numeric port), lowercase and
/// without the port; a trailing dot of the host is dropped (`example.com.` names the same host,
/// and backends treat it so); the name must pass [`crate::host`]'s rule. RFC 9112 §3.2: an HTTP/1.1 request without `Host` is a 400 (HTTP/1.0
/// may omit it; an absolute-form target's host then counts).
///
/// # Errors
/// [`GateError::BadHost`]: missing on HTTP/1.1, repeated, or not an authority (userinfo, a path,
/// characters a host name cannot have).
pub fn request_host(req: &RequestView<'_>) -> Result<Option<String>, GateError> {
    let mut hosts = req.headers.get_all(HOST).iter();
    let raw = match (hosts.next(), hosts.next()) {
        (None, _) if req.version == Version::HTTP_11 && req.uri.host().is_none() => {
            return Err(GateError::BadHost)
        }
        (None, _) => return Ok(req.uri.host().map(str::to_ascii_lowercase)),
        (Some(_), Some(_)) => return Err(GateError::BadHost),
        (Some(v), None) => v.as_bytes(),
    };
    let authority = http::uri::Authority::try_from(raw).map_err(|_| GateError::BadHost)?;
    if authority.as_str().contains('@') || authority.as_str().len() != raw.len() {
        return Err(GateError::BadHost);
    }
    let host = authority.host();
    let host = host.strip_suffix('.').unwrap_or(host);
    // an IPv6 literal was checked by the authority parser
    if !(host.starts_with('[') || is_host_name(host)) {
        return Err(GateError::BadHost);
    }
    Ok(Some(host.to_ascii_lowercase()))
}

/// Size of the request header block as the client sent it, approximately (bytes: names, values,
/// separators and the request target).
fn header_bytes(req: &RequestView<'_>) -> usize {
    req.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.raw_path.len()
}

#[cfg(test)]
mod tests;
