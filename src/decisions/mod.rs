//! The decision API for ingresses (`server.decisions_listen`): every request on it asks "may this
//! request pass, and as whom?". [`request`] rebuilds the original request from the ingress's
//! convention (trusted peers only); it then goes through [`admission::admit`] exactly as a
//! proxied request would (canonical path, route, credential, session, policy).
//!
//! Answers:
//! - allow: `200`, empty body, the route's identity headers and `X-Request-Id`, for the ingress
//!   to copy upstream (and `Set-Cookie` when Kratos re-issued the session cookie, for the client);
//! - deny: the route's own answer ([`GateError::to_response`]: 401 with `WWW-Authenticate`, 303
//!   for redirect routes, 403 step-up, 429 and 503 with `Retry-After`, ...) plus `X-Request-Id`;
//! - not a decision request: 403 JSON from an untrusted peer, 400 JSON for missing, repeated or
//!   mixed convention headers.
//!
//! Metrics: the same `sessiongate_requests_total` / `sessiongate_auth_decisions_total` /
//! `sessiongate_stale_sessions_served_total` series as the proxy, by route (no listener label);
//! refusals before a route is known count under route `none`.

pub mod request;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Response, StatusCode, Uri, Version};
use opentelemetry::context::FutureExt as _;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use self::request::{Inbound, Original, Refusal, CONVENTION_HEADERS};
use crate::admission::{self, RequestView};
use crate::error::GateError;
use crate::metrics::Metrics;
use crate::session::store::LookupKind;
use crate::state::{InFlight, Runtime, Shared};
use crate::telemetry::{RequestOutcome, RequestTrace};

const X_REQUEST_ID: &str = "x-request-id";

/// The decision API app (a pingora `ServeHttp`, like the admin listener).
pub struct Decisions {
    shared: Arc<Shared>,
}

impl Decisions {
    pub fn new(shared: Arc<Shared>) -> Decisions {
        Decisions { shared }
    }
}

/// What one decision request came to, for the answer, metrics and the access log.
struct Answer {
    response: Response<Vec<u8>>,
    route: Option<usize>,
    outcome: &'static str,
    lookup: Option<LookupKind>,
}

/// The original request's headers as admission must see them: the decision request's headers
/// without the convention headers and framing, with the original `Host`.
fn original_headers(
    headers: &http::HeaderMap,
    original: &Original,
) -> Result<http::HeaderMap, Refusal> {
    let mut out = headers.clone();
    for name in CONVENTION_HEADERS {
        out.remove(name);
    }
    out.remove(CONTENT_LENGTH);
    out.remove(TRANSFER_ENCODING);
    out.remove(HOST);
    if let Some(host) = &original.host {
        let v = HeaderValue::from_str(host).map_err(|_| Refusal::Invalid("host"))?;
        out.insert(HOST, v);
    }
    Ok(out)
}

/// Decides one request on `rt`; the whoami call it may make is a child of `trace`'s span.
async fn decide(
    rt: &Runtime,
    session: &ServerSession,
    request_id: &str,
    trace: &RequestTrace,
    metrics: &Metrics,
) -> Answer {
    let req = session.req_header();
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let inbound = Inbound {
        peer,
        method: &req.method,
        target: req.raw_path(),
        headers: &req.headers,
    };
    let cfg = &rt.config;
    let original = match request::original(
        &cfg.server.trusted_proxies,
        &cfg.server.decisions_path_prefix,
        &inbound,
    )
    .and_then(|o| original_headers(&req.headers, &o).map(|h| (o, h)))
    {
        Ok(o) => o,
        Err(refusal) => {
            return Answer {
                response: refusal_response(&refusal, request_id),
                route: None,
                outcome: "none",
                lookup: None,
            }
        }
    };
    let (original, headers) = original;
    // `uri` only matters without `Host` (absolute-form targets); the raw target is what counts.
    let uri = Uri::try_from(original.target.as_slice()).unwrap_or_else(|_| Uri::from_static("/"));
    let view = RequestView {
        method: &original.method,
        version: Version::HTTP_11,
        uri: &uri,
        raw_path: &original.target,
        headers: &headers,
        content_length_with_transfer_encoding: false,
    };
    let gate = rt.gate();
    let decision = admission::admit(&gate, &view)
        .with_context(trace.context().clone())
        .await;
    match decision.verdict {
        Ok(admitted) => {
            if admitted.stale {
                if let Some(route) = decision.route.and_then(|i| cfg.routes.get(i)) {
                    metrics.stale_served(&route.name);
                }
            }
            let mut response = Response::new(Vec::new());
            for (name, value) in admitted.identity {
                response.headers_mut().insert(name, value);
            }
            // a session cookie Kratos re-issued during whoami, for ingresses that pass it on
            for cookie in admitted.set_cookie {
                if let Ok(v) = HeaderValue::from_maybe_shared(cookie) {
                    response.headers_mut().append(http::header::SET_COOKIE, v);
                }
            }
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            set_request_id(&mut response, request_id);
            Answer {
                response,
                route: decision.route,
                outcome: admitted.outcome,
                lookup: decision.lookup,
            }
        }
        Err(err) => Answer {
            response: gate_response(&err, request_id),
            route: decision.route,
            outcome: err.outcome(),
            lookup: decision.lookup,
        },
    }
}

/// `err` as the proxy would answer it, as an `http::Response`.
fn gate_response(err: &GateError, request_id: &str) -> Response<Vec<u8>> {
    let mut response = match err.to_response(request_id) {
        Ok((head, body)) => {
            let mut r = Response::new(body.to_vec());
            *r.status_mut() = head.status;
            *r.headers_mut() = head.headers.clone();
            r
        }
        Err(_) => {
            let mut r = Response::new(Vec::new());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    };
    set_request_id(&mut response, request_id);
    response
}

/// A refusal as a Kratos-style JSON error.
fn refusal_response(refusal: &Refusal, request_id: &str) -> Response<Vec<u8>> {
    let status =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "error": {
        "code": status.as_u16(),
        "status": status.canonical_reason().unwrap_or("Error"),
        "reason": refusal.to_string(),
        "request": request_id,
    }});
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-store"),
    );
    let len = r.body().len();
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    set_request_id(&mut r, request_id);
    r
}

fn set_request_id(r: &mut Response<Vec<u8>>, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert(X_REQUEST_ID, v);
    }
}

#[async_trait]
impl ServeHttp for Decisions {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let started = Instant::now();
        // a drain waits for questions in flight as for proxied requests
        let _in_flight = InFlight::new(&self.shared);
        let rt = self.shared.runtime();
        let req = session.req_header();
        let request_id = crate::proxy::request_id::request_id(req);
        let request_id = crate::proxy::request_id::as_str(&request_id);
        // the ingress's trace context is the parent, as a client's is for the proxy
        let trace = rt.tracing.start_request(&req.headers, &req.method);
        let answer = decide(&rt, session, request_id, &trace, &self.shared.metrics).await;
        let route = answer
            .route
            .and_then(|i| rt.config.routes.get(i))
            .map_or(crate::metrics::NO_ROUTE, |r| r.name.as_str());
        let status = answer.response.status().as_u16();
        let elapsed = started.elapsed();
        let metrics = &self.shared.metrics;
        metrics.observe_request(route, status, elapsed);
        if answer.outcome != "none" {
            metrics.auth_decision(route, answer.outcome);
        }
        trace.finish(&RequestOutcome {
            route,
            status,
            outcome: answer.outcome,
            cache: answer.lookup.map(LookupKind::as_str),
        });
        if self.shared.access_log() {
            tracing::info!(
                target: "sessiongate::access",
                listener = "decisions",
                request_id = %request_id,
                route,
                status,
                outcome = answer.outcome,
                cache = answer.lookup.map_or("-", LookupKind::as_str),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                "decision"
            );
        }
        let mut response = answer.response;
        if session.req_header().method == http::Method::HEAD {
            // the head of the answer (Content-Length included), never a body
            response.body_mut().clear();
        }
        response
    }
}
