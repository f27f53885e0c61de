//! The request side of a `kratos_edge` route, decided from the request head before anything is sent
//! to Kratos: the `return_to` of the query, the path Kratos sees, whether the body must be read
//! (form/JSON `return_to`, the API logout's token), and what the request means for the session
//! cache. Plain data in, plain data out: [`crate::admission`] calls it, the proxy carries the
//! result through the hooks.

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method};

use super::media::Media;
use super::returnto::return_to_in_query;
use super::{on_request, EdgeRoute, RequestKind};
use crate::credential::{CacheKey, Credential};
use crate::error::GateError;
use crate::path::CanonicalTarget;

/// What the edge decided about a request before forwarding it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeRequest {
    /// The path Kratos sees (prefix stripped, Kratos's base path added) plus the untouched query.
    pub upstream_target: String,
    /// What the request means for the session cache.
    pub kind: RequestKind,
    /// The cache key of the request's credential, for purges.
    pub credential: Option<CacheKey>,
    /// The identity of the request's session, when a purge needs it (filled by admission).
    pub identity_id: Option<String>,
    /// Whether the request body must be read and checked before Kratos sees it.
    pub buffer_request: bool,
    /// The body's `return_to` must be checked against the allow-list.
    pub check_body_return_to: bool,
    /// The body is JSON (else a form), for the `return_to` check.
    pub json_body: bool,
}

/// Plans an edge request.
///
/// # Errors
/// [`GateError::ReturnToNotAllowed`] when a `return_to` in the query is outside
/// `allowed_return_urls` (or its percent-encoding is broken).
pub fn plan(
    edge: &EdgeRoute,
    method: &Method,
    headers: &HeaderMap,
    target: &CanonicalTarget,
    credential: Option<&Credential<'_>>,
) -> Result<EdgeRequest, GateError> {
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
    let kind = on_request(method, &kratos_path, target.query.as_deref());
    let mut upstream_target = edge.rewriter.upstream_path(&kratos_path);
    if let Some(q) = &target.query {
        upstream_target.push('?');
        upstream_target.push_str(q);
    }
    let media = Media::of(headers.get(CONTENT_TYPE));
    let has_body = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let (form, json) = (media.form, media.json);
    let check_body_return_to =
        has_body && !settings.allowed_return_urls.is_empty() && (form || json);
    Ok(EdgeRequest {
        upstream_target,
        buffer_request: check_body_return_to || kind.needs_request_body(),
        check_body_return_to,
        json_body: json,
        kind,
        // The single carrier's key: a cookie sent with a Bearer fallback is never cached itself.
        credential: credential.map(|c| Credential::new(c.kind, c.value).cache_key()),
        identity_id: None,
    })
}
