//! `identity_token.jwks_path`: the JWKS of the identity token keys, answered on the public listener
//! by sessiongate itself (no route, no upstream, no session lookup), for upstreams that cannot
//! reach the admin listener.

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;

use crate::state::Runtime;

/// The JWKS answer for `req`, when it is a GET or HEAD of the configured `jwks_path` (the query is
/// ignored); `None` otherwise, and the request goes on to routing.
pub(super) fn answer(rt: &Runtime, req: &RequestHeader) -> Option<(u16, Bytes, String)> {
    let issuer = rt.tokens.as_deref()?;
    let path = issuer.jwks_path()?;
    if req.uri.path() != path || !matches!(req.method, http::Method::GET | http::Method::HEAD) {
        return None;
    }
    let cache = format!("public, max-age={}", issuer.ttl().as_secs());
    Some((200, Bytes::copy_from_slice(issuer.jwks()), cache))
}

/// Writes the JWKS answer.
pub(super) async fn write(
    session: &mut Session,
    body: Bytes,
    cache_control: &str,
    request_id: http::HeaderValue,
) -> Result<()> {
    let mut header = ResponseHeader::build(200, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/jwk-set+json")?;
    header.insert_header(http::header::CACHE_CONTROL, cache_control)?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    header.insert_header(super::X_REQUEST_ID, request_id)?;
    super::write_answer(session, header, body).await
}
