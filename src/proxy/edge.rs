//! The Kratos edge inside the proxy hooks: the glue between pingora's request/response types and the
//! pure logic of [`crate::edge`].

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, SET_COOKIE,
};
use http::{HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;
use serde_json::Value;

use crate::credential::{CacheKey, Credential, CredentialKind};
use crate::edge::media::Media;
use crate::edge::purge::session_cookie_set;
use crate::edge::returnto::{return_to_in_form, return_to_in_json, return_to_in_query};
use crate::edge::{
    after_response, on_request, provider_redirect_mismatch, EdgeRoute, PurgeAction, RequestKind,
    ORY_HEADERS,
};
use crate::error::GateError;
use crate::metrics::Metrics;
use crate::path::CanonicalTarget;
use crate::session::store::SessionStore;

/// Largest request body the edge inspects (self-service submissions are small forms or JSON).
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Largest response body the edge rewrites; larger ones pass through unchanged.
const MAX_RESPONSE_BODY: usize = 2 * 1024 * 1024;

/// Per-request state of an edge request.
#[derive(Debug, Default)]
pub struct EdgeCtx {
    /// The path Kratos sees (prefix stripped, Kratos's base path added) plus the untouched query.
    pub upstream_target: String,
    /// What the request means for the session cache.
    pub kind: RequestKind,
    /// The cache key of the request's credential, for purges.
    pub credential: Option<CacheKey>,
    /// The identity of the request's session, when a purge needs it.
    pub identity_id: Option<String>,
    /// Whether the request body must be inspected (return_to checks, API logout token).
    pub buffer_request: bool,
    /// The body was read and checked in `request_filter`; pingora replays it upstream.
    /// `100 Continue` was sent to the client before its body was read here.
    continue_sent: bool,
    body_checked: bool,
    check_body_return_to: bool,
    json_body: bool,
    request_body: BytesMut,
    /// The response body is buffered for rewriting and/or purge decisions.
    buffer_response: bool,
    rewrite_response: bool,
    response_json_for_purge: bool,
    status: u16,
    sets_session_cookie: bool,
    response_body: BytesMut,
    response_too_big: bool,
}

/// The request side, in `request_filter`: refuses a `return_to` outside the allow-list (query), and
/// decides what to watch for the cache.
pub fn on_edge_request(
    edge: &EdgeRoute,
    req: &RequestHeader,
    target: &CanonicalTarget,
    credential: Option<&Credential<'_>>,
) -> std::result::Result<EdgeCtx, GateError> {
    let settings = &edge.settings;
    if let Some(q) = &target.query {
        let values = return_to_in_query(q).map_err(|_| GateError::ReturnToNotAllowed)?;
        for v in values {
            settings
                .check_return_to(&v)
                .map_err(|_| GateError::ReturnToNotAllowed)?;
        }
    }
    let kratos_path = edge
        .rewriter
        .strip_prefix(&target.path)
        .unwrap_or_else(|| target.path.clone());
    let kind = on_request(&req.method, &kratos_path, target.query.as_deref());
    let mut upstream_target = edge.rewriter.upstream_path(&kratos_path);
    if let Some(q) = &target.query {
        upstream_target.push('?');
        upstream_target.push_str(q);
    }
    let media = Media::of(req.headers.get(CONTENT_TYPE));
    let has_body = !matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let (form, json) = (media.form, media.json);
    let check_body_return_to =
        has_body && !settings.allowed_return_urls.is_empty() && (form || json);
    Ok(EdgeCtx {
        upstream_target,
        buffer_request: check_body_return_to || kind.needs_request_body(),
        check_body_return_to,
        json_body: json,
        kind,
        // The single carrier's key: a cookie sent with a Bearer fallback is never cached itself.
        credential: credential.map(|c| Credential::new(c.kind, c.value).cache_key()),
        ..EdgeCtx::default()
    })
}

/// `upstream_request_filter`: the Kratos path and Host, the public `X-Forwarded-*`, the Ory Network
/// headers (client copies always deleted), and no compression from Kratos (bodies are rewritten).
pub fn upstream_request(edge: &EdgeRoute, ctx: &EdgeCtx, req: &mut RequestHeader) -> Result<()> {
    req.set_raw_path(ctx.upstream_target.as_bytes())?;
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
    check_body(edge, ctx, &whole)?;
    ctx.body_checked = true;
    Ok(())
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
    if ctx.check_body_return_to {
        let values = if ctx.json_body {
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
    ctx.kind.observe_request_body(whole);
    Ok(())
}

/// `request_body_filter`: for a body not already checked in `request_filter`, buffers what must be
/// inspected and checks it at the end (a fallback; the normal path reads the body up front).
pub fn request_body(
    edge: &EdgeRoute,
    ctx: &mut EdgeCtx,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
) -> std::result::Result<(), GateError> {
    if !ctx.buffer_request || ctx.body_checked {
        return Ok(());
    }
    if let Some(chunk) = body.take() {
        if ctx.request_body.len() + chunk.len() > MAX_REQUEST_BODY {
            return Err(GateError::BodyTooLarge);
        }
        ctx.request_body.extend_from_slice(&chunk);
    }
    if !end_of_stream {
        return Ok(());
    }
    let whole = std::mem::take(&mut ctx.request_body).freeze();
    check_body(edge, ctx, &whole)?;
    *body = Some(whole);
    Ok(())
}

/// `upstream_response_filter`: rewrites `Location` and `Set-Cookie`, reports an OIDC `redirect_uri`
/// off the public origin, purges what the status alone decides, and prepares body rewriting.
pub fn upstream_response(
    edge: &EdgeRoute,
    ctx: &mut EdgeCtx,
    resp: &mut ResponseHeader,
    cookie_name: &str,
    store: &SessionStore,
    metrics: &Metrics,
) -> Result<()> {
    ctx.status = resp.status.as_u16();
    ctx.sets_session_cookie = session_cookie_set(&resp.headers, cookie_name);

    if let Some(location) = resp
        .headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    {
        report_oidc_mismatch(edge, &location, metrics);
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
    ctx.response_json_for_purge = ctx.kind.needs_response_json()
        && (200..300).contains(&ctx.status)
        && media.json
        && !encoded;
    ctx.buffer_response = ctx.rewrite_response || ctx.response_json_for_purge;
    if ctx.rewrite_response {
        // The length changes: pingora sends the rewritten body chunked.
        resp.remove_header(&CONTENT_LENGTH);
    }
    if !ctx.response_json_for_purge {
        let actions = after_response(&ctx.kind, ctx.status, ctx.sets_session_cookie, None);
        apply_purges(&actions, ctx, store);
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
    store: &SessionStore,
    metrics: &Metrics,
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
            &ctx.kind,
            ctx.status,
            ctx.sets_session_cookie,
            json.as_ref(),
        );
        apply_purges(&actions, ctx, store);
    }
    if let Some(url) = json
        .as_ref()
        .and_then(|j| {
            j.get("redirect_browser_to")
                .or_else(|| j.pointer("/error/details/redirect_browser_to"))
        })
        .and_then(Value::as_str)
    {
        report_oidc_mismatch(edge, url, metrics);
    }
    let out = if ctx.rewrite_response {
        edge.rewriter.rewrite_body(&whole).map(Bytes::from)
    } else {
        None
    };
    *body = Some(out.unwrap_or_else(|| whole.freeze()));
}

fn report_oidc_mismatch(edge: &EdgeRoute, location: &str, metrics: &Metrics) {
    if let Some(m) = provider_redirect_mismatch(location, &edge.settings) {
        if edge.oidc_warned.first_time(&m.provider) {
            tracing::warn!(provider = %m.provider, redirect_uri = %m.redirect_uri, "{}", m.advice());
            metrics.oidc_redirect_mismatch(&m.provider);
        }
    }
}

fn apply_purges(actions: &[PurgeAction], ctx: &EdgeCtx, store: &SessionStore) {
    for action in actions {
        match action {
            PurgeAction::Credential => {
                if let Some(key) = ctx.credential {
                    store.purge_credential(key);
                }
            }
            PurgeAction::SessionToken(token) => {
                for kind in [CredentialKind::Token, CredentialKind::Bearer] {
                    store.purge_credential(Credential::new(kind, token).cache_key());
                }
            }
            PurgeAction::SessionId(id) => store.purge_session_id(id),
            PurgeAction::AllOfIdentity => {
                if let Some(id) = &ctx.identity_id {
                    store.purge_identity(id);
                } else if let Some(key) = ctx.credential {
                    store.purge_credential(key);
                }
            }
            PurgeAction::Identity(id) => store.purge_identity(id),
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
