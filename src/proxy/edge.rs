//! The Kratos edge inside the proxy hooks: the glue between pingora's request/response types and the
//! pure logic of [`crate::edge`].

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, SET_COOKIE,
};
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;
use serde_json::Value;

use crate::credential::{Credential, CredentialKind};
use crate::edge::media::Media;
use crate::edge::purge::session_cookie_set;
use crate::edge::request::EdgeRequest;
use crate::edge::returnto::{return_to_in_form, return_to_in_json};
use crate::edge::{
    after_response, provider_redirect_mismatch, EdgeRoute, PurgeAction, WarnOnce, ORY_HEADERS,
};
use crate::error::GateError;
use crate::metrics::Metrics;
use crate::session::Purger;

/// Largest request body the edge inspects (self-service submissions are small forms or JSON).
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Largest response body the edge rewrites; larger ones pass through unchanged.
const MAX_RESPONSE_BODY: usize = 2 * 1024 * 1024;

/// Per-request state of an edge request: admission's plan and what the hooks learn on the way
/// back.
#[derive(Debug, Default)]
pub struct EdgeCtx {
    /// What admission decided about the request ([`crate::edge::request`]).
    pub plan: EdgeRequest,
    /// `100 Continue` was sent to the client before its body was read here.
    continue_sent: bool,
    /// The response body is buffered for rewriting and/or purge decisions.
    buffer_response: bool,
    rewrite_response: bool,
    response_json_for_purge: bool,
    status: u16,
    sets_session_cookie: bool,
    response_body: BytesMut,
    response_too_big: bool,
}

impl EdgeCtx {
    /// The state of a request admission planned as `plan`.
    pub fn new(plan: EdgeRequest) -> EdgeCtx {
        EdgeCtx {
            plan,
            ..EdgeCtx::default()
        }
    }
}

/// What the response side of the edge acts on: cache purges (through the store's narrow handle),
/// the OIDC misconfiguration warning (once per provider) and its metric.
#[derive(Clone, Copy)]
pub struct Effects<'a> {
    pub purger: Purger<'a>,
    pub metrics: &'a Metrics,
    pub oidc_warned: &'a WarnOnce,
}

/// `upstream_request_filter`: the Kratos path and Host, the public `X-Forwarded-*`, the Ory Network
/// headers (client copies always deleted), and no compression from Kratos (bodies are rewritten).
pub fn upstream_request(edge: &EdgeRoute, ctx: &EdgeCtx, req: &mut RequestHeader) -> Result<()> {
    req.set_raw_path(ctx.plan.upstream_target.as_bytes())?;
    req.insert_header(HOST, edge.settings.kratos_authority())?;
    req.insert_header("x-forwarded-host", edge.settings.public_authority())?;
    req.insert_header("x-forwarded-proto", edge.settings.public_scheme())?;
    req.remove_header(&ACCEPT_ENCODING);
    if ctx.continue_sent {
        // the body is already read: Kratos's own 100 Continue would be a second one
        req.remove_header(&http::header::EXPECT);
    }
    for name in ORY_HEADERS {
        req.remove_header(name);
    }
    if let Some(headers) = &edge.ory_headers {
        for (name, value) in headers {
            req.insert_header(name.clone(), value.clone())?;
        }
    }
    Ok(())
}

/// `request_filter`: reads the whole (small) request body before anything is sent to Kratos, checks
/// it, and leaves it in pingora's retry buffer, from which pingora sends it upstream. Bodies over
/// 64 KiB (pingora's retry buffer) are refused with 413.
pub async fn read_and_check_request_body(
    edge: &EdgeRoute,
    ctx: &mut EdgeCtx,
    session: &mut pingora::proxy::Session,
) -> std::result::Result<(), GateError> {
    session.enable_retry_buffering();
    if expects_continue(&session.req_header().headers) {
        // The client waits for this before sending the body (RFC 9110 §10.1.1); Kratos, which
        // would send it, is asked only after the body was checked.
        let interim = pingora::http::ResponseHeader::build(100, Some(0))
            .map_err(|_| GateError::BadRequestBody)?;
        session
            .write_response_header(Box::new(interim), false)
            .await
            .map_err(|_| GateError::BadRequestBody)?;
        ctx.continue_sent = true;
    }
    let mut whole = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if whole.len() + chunk.len() > MAX_REQUEST_BODY {
                    return Err(GateError::BodyTooLarge);
                }
                whole.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => return Err(GateError::BadRequestBody),
        }
    }
    check_body(edge, ctx, &whole)
}

/// Whether the request carries `Expect: 100-continue` (case-insensitive, RFC 9110 §10.1.1).
fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

fn check_body(
    edge: &EdgeRoute,
    ctx: &mut EdgeCtx,
    whole: &[u8],
) -> std::result::Result<(), GateError> {
    if ctx.plan.check_body_return_to {
        let values = if ctx.plan.json_body {
            return_to_in_json(whole)
        } else {
            return_to_in_form(whole)
        }
        .map_err(|_| GateError::ReturnToNotAllowed)?;
        for v in values {
            edge.settings
                .check_return_to(&v)
                .map_err(|_| GateError::ReturnToNotAllowed)?;
        }
    }
    ctx.plan.kind.observe_request_body(whole);
    Ok(())
}

/// `upstream_response_filter`: rewrites `Location` and `Set-Cookie`, reports an OIDC `redirect_uri`
/// off the public origin, purges what the status alone decides, and prepares body rewriting.
pub fn upstream_response(
    edge: &EdgeRoute,
    ctx: &mut EdgeCtx,
    resp: &mut ResponseHeader,
    cookie_name: &str,
    fx: Effects<'_>,
) -> Result<()> {
    ctx.status = resp.status.as_u16();
    ctx.sets_session_cookie = session_cookie_set(&resp.headers, cookie_name);

    if let Some(location) = resp
        .headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    {
        report_oidc_mismatch(edge, &location, fx);
        if let Some(rewritten) = edge.rewriter.rewrite_location(&location) {
            resp.insert_header(LOCATION, rewritten)?;
        }
    }
    let cookies: Vec<String> = resp
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    if !cookies.is_empty() {
        resp.remove_header(&SET_COOKIE);
        for c in cookies {
            let rewritten = edge.rewriter.rewrite_set_cookie(&c);
            let value = HeaderValue::from_str(&rewritten).or_else(|_| HeaderValue::from_str(&c));
            if let Ok(v) = value {
                resp.append_header(SET_COOKIE, v)?;
            }
        }
    }

    let media = Media::of(resp.headers.get(CONTENT_TYPE));
    let textual = media.textual;
    let encoded = resp
        .headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded && textual {
        tracing::warn!(
            "Kratos answered an edge request with a compressed body; it passes unrewritten"
        );
    }
    ctx.rewrite_response = textual && !encoded;
    ctx.response_json_for_purge = ctx.plan.kind.needs_response_json()
        && (200..300).contains(&ctx.status)
        && media.json
        && !encoded;
    ctx.buffer_response = ctx.rewrite_response || ctx.response_json_for_purge;
    if ctx.rewrite_response {
        // The length changes: pingora sends the rewritten body chunked.
        resp.remove_header(&CONTENT_LENGTH);
    }
    if !ctx.response_json_for_purge {
        let actions = after_response(&ctx.plan.kind, ctx.status, ctx.sets_session_cookie, None);
        apply_purges(&actions, ctx, fx.purger);
    }
    Ok(())
}

/// `response_body_filter`: buffers the body, and at its end purges what the body decides and
/// rewrites Kratos's URLs to the public base.
pub fn response_body(
    edge: &EdgeRoute,
    ctx: &mut EdgeCtx,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    fx: Effects<'_>,
) {
    if !ctx.buffer_response || ctx.response_too_big {
        return;
    }
    if let Some(chunk) = body.take() {
        ctx.response_body.extend_from_slice(&chunk);
    }
    if ctx.response_body.len() > MAX_RESPONSE_BODY {
        // Too large to be a Kratos document: let it through as it is from here on.
        ctx.response_too_big = true;
        *body = Some(std::mem::take(&mut ctx.response_body).freeze());
        return;
    }
    if !end_of_stream {
        return;
    }
    let whole = std::mem::take(&mut ctx.response_body);
    let json: Option<Value> = serde_json::from_slice(&whole).ok();
    if ctx.response_json_for_purge {
        let actions = after_response(
            &ctx.plan.kind,
            ctx.status,
            ctx.sets_session_cookie,
            json.as_ref(),
        );
        apply_purges(&actions, ctx, fx.purger);
    }
    if let Some(url) = json
        .as_ref()
        .and_then(|j| {
            j.get("redirect_browser_to")
                .or_else(|| j.pointer("/error/details/redirect_browser_to"))
        })
        .and_then(Value::as_str)
    {
        report_oidc_mismatch(edge, url, fx);
    }
    let out = if ctx.rewrite_response {
        edge.rewriter.rewrite_body(&whole).map(Bytes::from)
    } else {
        None
    };
    *body = Some(out.unwrap_or_else(|| whole.freeze()));
}

fn report_oidc_mismatch(edge: &EdgeRoute, location: &str, fx: Effects<'_>) {
    if let Some(m) = provider_redirect_mismatch(location, &edge.settings) {
        if fx.oidc_warned.first_time(&m.provider) {
            tracing::warn!(provider = %m.provider, redirect_uri = %m.redirect_uri, "{}", m.advice());
            fx.metrics.oidc_redirect_mismatch(&m.provider);
        }
    }
}

fn apply_purges(actions: &[PurgeAction], ctx: &EdgeCtx, purger: Purger<'_>) {
    for action in actions {
        match action {
            PurgeAction::Credential => {
                if let Some(key) = ctx.plan.credential {
                    purger.purge_credential(key);
                }
            }
            PurgeAction::SessionToken(token) => {
                for kind in [CredentialKind::Token, CredentialKind::Bearer] {
                    purger.purge_credential(Credential::new(kind, token).cache_key());
                }
            }
            PurgeAction::SessionId(id) => purger.purge_session_id(id),
            PurgeAction::AllOfIdentity => {
                if let Some(id) = &ctx.plan.identity_id {
                    purger.purge_identity(id);
                } else if let Some(key) = ctx.plan.credential {
                    purger.purge_credential(key);
                }
            }
            PurgeAction::Identity(id) => purger.purge_identity(id),
        }
        tracing::debug!(action = ?purge_label(action), "edge: session cache purged");
    }
}

fn purge_label(a: &PurgeAction) -> &'static str {
    match a {
        PurgeAction::Credential => "credential",
        PurgeAction::SessionToken(_) => "session_token",
        PurgeAction::SessionId(_) => "session_id",
        PurgeAction::AllOfIdentity => "all_of_identity",
        PurgeAction::Identity(_) => "identity",
    }
}
