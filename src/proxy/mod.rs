//! The pingora [`ProxyHttp`] implementation. Thin on purpose: each hook delegates to the module that
//! owns the concept (routing, credential, session, policy, identity, error, metrics).

mod edge;
mod jwks;
pub(crate) mod request_id;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use opentelemetry::context::FutureExt as _;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::H1UpgradePolicy;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::admission::{self, RequestView};
use crate::error::GateError;
use crate::forwarding;
use crate::identity;
use crate::path::CanonicalTarget;
use crate::resolver;
use crate::session::store::LookupKind;
use crate::state::{InFlight, Runtime, Shared};
use crate::telemetry::trace_context::{TRACEPARENT, TRACESTATE};
use crate::telemetry::{RequestOutcome, RequestTrace};

use request_id::{request_id, X_REQUEST_ID};

/// Per-request state shared between the hooks.
pub struct RequestCtx {
    started: Instant,
    runtime: Option<Arc<Runtime>>,
    /// `X-Request-Id` of this request (`request_id::as_str` for its text).
    request_id: HeaderValue,
    route: Option<usize>,
    target: Option<CanonicalTarget>,
    identity: Vec<(HeaderName, HeaderValue)>,
    set_cookie: Vec<Bytes>,
    outcome: &'static str,
    lookup: Option<LookupKind>,
    /// Status of an answer sessiongate gave itself (not forwarded).
    answered: Option<u16>,
    /// An answer decided after forwarding started (edge body checks), written by `fail_to_proxy`.
    pending: Option<GateError>,
    /// State of a Kratos edge request.
    edge: Option<edge::EdgeCtx>,
    /// Counts this request as in flight until the context is dropped (shutdown waits for it).
    _in_flight: InFlight,
    /// Which of the upstream's addresses this attempt uses, and how many there are.
    upstream_attempt: usize,
    upstream_addrs: usize,
    /// The proxy's span of this request (`crate::telemetry`), from `request_filter` on.
    trace: Option<RequestTrace>,
}

/// The proxy: holds the shared, reloadable state.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>) -> Proxy {
        Proxy { shared }
    }

    /// Runs admission on the request head and records what it learnt in `ctx`: `Ok` means
    /// forward.
    async fn admit(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
    ) -> std::result::Result<(), GateError> {
        let req = session.req_header();
        let view = RequestView {
            method: &req.method,
            version: req.version,
            uri: &req.uri,
            raw_path: req.raw_path(),
            headers: &req.headers,
            content_length_with_transfer_encoding: had_content_length_and_transfer_encoding(
                session, req,
            ),
        };
        let gate = rt.gate();
        let admit = admission::admit(&gate, &view);
        // The whoami call admission may make is a child of the request's span.
        let decision = match &ctx.trace {
            Some(trace) => admit.with_context(trace.context().clone()).await,
            None => admit.await,
        };
        ctx.route = decision.route;
        ctx.target = decision.target;
        ctx.lookup = decision.lookup;
        let admitted = decision.verdict?;
        ctx.outcome = admitted.outcome;
        if admitted.stale {
            if let Some(route) = ctx.route.and_then(|i| rt.config.routes.get(i)) {
                self.shared.metrics.stale_served(&route.name);
            }
        }
        ctx.identity = admitted.identity;
        ctx.set_cookie = admitted.set_cookie;
        ctx.edge = admitted.edge.map(edge::EdgeCtx::new);
        Ok(())
    }

    /// Writes sessiongate's own answer for `err`.
    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        err: &GateError,
    ) -> Result<()> {
        ctx.outcome = err.outcome();
        ctx.answered = Some(err.status());
        let (mut header, body) = err.to_response(request_id::as_str(&ctx.request_id))?;
        header.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        for c in ctx.set_cookie.drain(..) {
            header.append_header(
                "set-cookie",
                HeaderValue::from_maybe_shared(c).map_err(|_| {
                    Error::explain(ErrorType::InternalError, "invalid set-cookie from kratos")
                })?,
            )?;
        }
        write_answer(session, header, body).await
    }
}

/// Writes an answer sessiongate gives itself: the head, and the body unless the request is a HEAD.
async fn write_answer(session: &mut Session, header: ResponseHeader, body: Bytes) -> Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    /// A fresh context per request: start time, no route, no session yet.
    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            runtime: None,
            request_id: HeaderValue::from_static("-"),
            route: None,
            target: None,
            identity: Vec::new(),
            set_cookie: Vec::new(),
            outcome: "none",
            lookup: None,
            answered: None,
            pending: None,
            edge: None,
            _in_flight: InFlight::new(&self.shared),
            upstream_attempt: 0,
            upstream_addrs: 0,
            trace: None,
        }
    }

    /// Takes a snapshot of the configuration, keeps answering a client that half-closes after its
    /// request, assigns the request id, canonicalises the path (400 on
    /// ambiguous encodings), matches the route (404 JSON when none), extracts the credential, resolves
    /// the session and decides. Answers itself (returns `true`) unless the decision is "forward".
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = self.shared.runtime();
        session.set_read_timeout(Some(rt.config.server.limits.downstream_read_timeout));
        // RFC 9112 §9.6: a client that half-closes after its request (`printf | nc`, conformance
        // probes) still gets the answer; pingora would abort it (pingora #305). A client that
        // is really gone is noticed when the response write fails.
        session.set_abort_on_close(false);
        ctx.request_id = request_id(session.req_header());
        let req = session.req_header();
        ctx.trace = Some(rt.tracing.start_request(&req.headers, &req.method));
        if let Some((status, body, cache)) = jwks::answer(&rt, req) {
            ctx.outcome = "anonymous";
            ctx.answered = Some(status);
            ctx.runtime = Some(rt);
            jwks::write(session, body, &cache, ctx.request_id.clone()).await?;
            return Ok(true);
        }
        let mut verdict = self.admit(session, ctx, &rt).await;
        if verdict.is_ok() {
            if let (Some(er), Some(ectx)) = (edge_route(&rt, ctx.route), ctx.edge.as_mut()) {
                if ectx.plan.buffer_request {
                    verdict = edge::read_and_check_request_body(er, ectx, session).await;
                }
            }
        }
        ctx.runtime = Some(rt);
        match verdict {
            Ok(()) => Ok(false),
            Err(e) => {
                self.respond(session, ctx, &e).await?;
                Ok(true)
            }
        }
    }

    /// The matched route's upstream, its name resolved now (cached; `crate::resolver`), the address of
    /// this attempt (HTTP or HTTPS with SNI), with the route's
    /// timeouts and upgrade policy.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (rt, idx) = match (&ctx.runtime, ctx.route) {
            (Some(rt), Some(idx)) => (rt, idx),
            _ => {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "no route in context",
                ))
            }
        };
        let route = &rt.config.routes[idx];
        let Some(up) = &route.upstream else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "route has no upstream",
            ));
        };
        let addrs = rt.resolver.addrs(&up.sni, up.port).await.map_err(|e| {
            let mut err = Error::explain(ErrorType::ConnectNoRoute, e.to_string());
            err.esource = ErrorSource::Upstream;
            err
        })?;
        ctx.upstream_addrs = addrs.len();
        let Some(addr) = addrs.get(ctx.upstream_attempt).or_else(|| addrs.first()) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "upstream has no address",
            ));
        };
        let limits = &rt.config.server.limits;
        let mut peer = HttpPeer::new(*addr, up.tls, up.sni.clone());
        peer.options.connection_timeout = Some(limits.upstream_connect_timeout);
        peer.options.read_timeout = Some(limits.upstream_read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        peer.options.http_upstream_request_policy.h1_upgrade = if route.websocket {
            H1UpgradePolicy::WebSocketOnly
        } else {
            H1UpgradePolicy::Deny
        };
        Ok(Box::new(peer))
    }

    /// After pingora's hop-by-hop stripping: deletes every configured identity header and the reserved
    /// `X-Sessiongate-` prefix from the client's request, drops `X-Forwarded-*`/`Forwarded` unless the
    /// client is a trusted proxy, forwards the canonical path (query untouched), then sets the identity
    /// headers, the request id, the forwarding headers and the trace context (`traceparent` with the
    /// proxy's span as parent; the client's `tracestate`).
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(rt) = ctx.runtime.clone() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no runtime in context",
            ));
        };
        let cfg = &rt.config;
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted =
            client_ip.is_some_and(|ip| cfg.server.trusted_proxies.iter().any(|n| n.contains(&ip)));

        let doomed = |n: &HeaderName| {
            let n = identity::dashed(n);
            identity::is_stripped_dashed(&n, &cfg.identity_header_names)
                || (!trusted && forwarding::untrusted_only_dashed(&n))
        };
        // most requests carry none: no list is built for them
        if upstream_request.headers.keys().any(doomed) {
            let names: Vec<HeaderName> = upstream_request
                .headers
                .keys()
                .filter(|n| doomed(n))
                .cloned()
                .collect();
            for name in names {
                upstream_request.remove_header(&name);
            }
        }

        if let Some(target) = &ctx.target {
            if !target.is_target(upstream_request.raw_path()) {
                upstream_request.set_raw_path(target.to_target().as_bytes())?;
            }
        }
        for (name, value) in ctx.identity.drain(..) {
            upstream_request.insert_header(name, value)?;
        }
        upstream_request.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        if let Some((parent, state)) = ctx.trace.as_ref().and_then(RequestTrace::upstream_headers) {
            upstream_request.insert_header(TRACEPARENT, parent)?;
            match state {
                Some(state) => upstream_request.insert_header(TRACESTATE, state)?,
                None => {
                    upstream_request.remove_header(TRACESTATE);
                }
            }
        }
        forwarding::set_forwarding_headers(upstream_request, client_ip, trusted)?;
        if let (Some(er), Some(ectx)) = (edge_route(&rt, ctx.route), &ctx.edge) {
            edge::upstream_request(er, ectx, upstream_request)?;
        }
        Ok(())
    }

    /// Edge routes: `Location` and `Set-Cookie` rewritten to the public origin, OIDC `redirect_uri`
    /// checks, cache purges after logout and session changes, body rewriting prepared.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(rt) = ctx.runtime.clone() else {
            return Ok(());
        };
        if let (Some(er), Some(ectx)) = (edge_route(&rt, ctx.route), ctx.edge.as_mut()) {
            edge::upstream_response(
                er,
                ectx,
                upstream_response,
                &rt.config.kratos.session_cookie,
                edge_effects(&rt, &self.shared),
            )?;
        }
        Ok(())
    }

    /// Edge routes: rewrites Kratos's absolute URLs in JSON and HTML bodies (the body is buffered; the
    /// length is fixed by sending it chunked) and purges the cache when the body shows a new session.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let Some(rt) = ctx.runtime.clone() else {
            return Ok(None);
        };
        if let (Some(er), Some(ectx)) = (edge_route(&rt, ctx.route), ctx.edge.as_mut()) {
            edge::response_body(
                er,
                ectx,
                body,
                end_of_stream,
                edge_effects(&rt, &self.shared),
            );
        }
        Ok(None)
    }

    /// Adds the request id and any session cookie Kratos re-issued during whoami. An HTTP/1.0
    /// client never gets `Transfer-Encoding: chunked` (RFC 9112 §6.1): a response without a length
    /// is sent close-delimited, and the connection closes after it.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if session.req_header().version == http::Version::HTTP_10
            && upstream_response
                .headers
                .contains_key(http::header::TRANSFER_ENCODING)
        {
            upstream_response.remove_header(&http::header::TRANSFER_ENCODING);
            upstream_response.insert_header(http::header::CONNECTION, "close")?;
            session.set_keepalive(None);
        }
        upstream_response.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        for c in ctx.set_cookie.drain(..) {
            if let Ok(v) = HeaderValue::from_maybe_shared(c) {
                upstream_response.append_header("set-cookie", v)?;
            }
        }
        Ok(())
    }

    /// A client that goes away mid-request is not an error of the proxy: pingora would log one at
    /// ERROR level for every disconnect.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    /// Upstream failures become JSON 502/504 answers; other failures keep pingora's status.
    /// A connection to one of the upstream's addresses failed: the next address is tried (pingora
    /// calls `upstream_peer` again), in the order the resolver gave them.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        match resolver::next_attempt(ctx.upstream_attempt, ctx.upstream_addrs) {
            Some(next) => {
                ctx.upstream_attempt = next;
                e.set_retry(true);
            }
            None => e.set_retry(false),
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let gate_error = match ctx.pending.take() {
            Some(pending) => Some(pending),
            None => upstream_failure(e.esource(), e.etype()),
        };
        let is_upstream = matches!(
            gate_error,
            Some(GateError::UpstreamTimeout | GateError::UpstreamUnreachable)
        );
        let code = match (&gate_error, e.etype()) {
            (Some(g), _) => g.status(),
            (None, ErrorType::HTTPStatus(c)) => *c,
            (None, ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed) => 0,
            (None, _) if e.esource() == &ErrorSource::Downstream => 400,
            (None, _) => 500,
        };
        if is_upstream {
            if let Some(route) = route_name(ctx) {
                self.shared.metrics.upstream_error(&route);
            }
        }
        if code > 0 && session.response_written().is_none() {
            // every answer sessiongate gives comes from the one GateError mapping
            let answer = gate_error.unwrap_or(GateError::Proxy {
                status: if (400..600).contains(&code) {
                    code
                } else {
                    500
                },
            });
            let _ = self.respond(session, ctx, &answer).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Records the request metrics, writes the access log line (never a credential or a query) and
    /// ends the request's span.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.answered)
            .unwrap_or(0);
        let route = match (&ctx.runtime, ctx.route) {
            (Some(rt), Some(i)) => rt.config.routes[i].name.as_str(),
            _ => crate::metrics::NO_ROUTE,
        };
        let elapsed = ctx.started.elapsed();
        let metrics = &self.shared.metrics;
        metrics.observe_request(route, status, elapsed);
        if ctx.outcome != "none" {
            metrics.auth_decision(route, ctx.outcome);
        }
        if let Some(trace) = &ctx.trace {
            trace.finish(&RequestOutcome {
                route,
                status,
                outcome: ctx.outcome,
                cache: ctx.lookup.map(LookupKind::as_str),
            });
        }
        if self.shared.access_log() {
            let req = session.req_header();
            let path = ctx.target.as_ref().map_or("-", |t| t.path.as_str());
            tracing::info!(
                target: "sessiongate::access",
                request_id = request_id::as_str(&ctx.request_id),
                method = %req.method,
                path,
                route,
                status,
                outcome = ctx.outcome,
                cache = ctx.lookup.map_or("-", LookupKind::as_str),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
                "request"
            );
        }
    }
}

/// The matched route's name, for metrics.
fn route_name(ctx: &RequestCtx) -> Option<String> {
    let rt = ctx.runtime.as_ref()?;
    Some(rt.config.routes.get(ctx.route?)?.name.clone())
}

/// Whether a request came with both `Content-Length` and `Transfer-Encoding`.
///
/// pingora drops the `Content-Length` of such a request while parsing it (Transfer-Encoding wins, as
/// RFC 9112 says), so the parsed header cannot tell; the raw header block as received can.
fn had_content_length_and_transfer_encoding(session: &Session, req: &RequestHeader) -> bool {
    if !req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return false;
    }
    let Some(h1) = session.as_downstream().as_http1() else {
        return false;
    };
    let raw = h1.get_headers_raw_bytes();
    raw.split(|&b| b == b'\n')
        .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

/// The edge of the matched route, if it is a `kratos_edge` route.
fn edge_route(rt: &Runtime, route: Option<usize>) -> Option<&crate::edge::EdgeRoute> {
    route
        .and_then(|i| rt.config.routes.get(i))
        .and_then(|r| r.edge.as_deref())
}

/// What the response side of an edge request acts on.
fn edge_effects<'a>(rt: &'a Runtime, shared: &'a Shared) -> edge::Effects<'a> {
    edge::Effects {
        purger: rt.store.purger(),
        metrics: &shared.metrics,
        oidc_warned: &rt.oidc_warned,
    }
}

/// Upstream failures become gateway errors; everything else keeps pingora's status.
fn upstream_failure(source: &ErrorSource, etype: &ErrorType) -> Option<GateError> {
    match (source, etype) {
        (ErrorSource::Upstream, ErrorType::ConnectTimedout | ErrorType::ReadTimedout) => {
            Some(GateError::UpstreamTimeout)
        }
        (ErrorSource::Upstream, _) => Some(GateError::UpstreamUnreachable),
        _ => None,
    }
}
