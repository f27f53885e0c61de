//! The purge API of the admin listener, as plain functions: `POST /cache/purge`.
//!
//! - `Authorization: Bearer <token>` must equal `admin.purge_token_file`'s token (compared in
//!   constant time, on SHA-256 digests so the length is not told either); otherwise 401.
//! - The body is one JSON object naming exactly one thing: `{"session_id": "..."}`,
//!   `{"identity_id": "..."}` or `{"credential": {"kind": "token"|"cookie", "value": "..."}}`;
//!   anything else is 400.
//! - 202 `{"purged": <local entries removed>}`: the purge is applied here at once and, with
//!   `[cache.shared]`, broadcast to every replica (which apply it within milliseconds).
//!
//! The credential's value is hashed into its cache key at once and never logged or sent on: the
//! broadcast carries the key.

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::credential::{Credential, CredentialKind};
use crate::session::shared::Purge;
use crate::session::store::SessionStore;

/// The largest request body read.
pub const MAX_BODY: usize = 16 * 1024;

/// The API's path.
pub const PATH: &str = "/cache/purge";

/// What to purge.
#[derive(Clone, PartialEq, Eq)]
pub enum PurgeRequest {
    /// Every credential of one Kratos session.
    SessionId(String),
    /// Every session of one Kratos identity.
    IdentityId(String),
    /// One credential (a session token also as `Authorization: Bearer`) and its session.
    Credential {
        /// How the credential is presented (`token` or `cookie`).
        kind: CredentialKind,
        /// The credential itself: never logged (`Debug` redacts it).
        value: String,
    },
}

impl std::fmt::Debug for PurgeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PurgeRequest::SessionId(s) => f.debug_tuple("SessionId").field(s).finish(),
            PurgeRequest::IdentityId(i) => f.debug_tuple("IdentityId").field(i).finish(),
            PurgeRequest::Credential { kind, .. } => f
                .debug_struct("Credential")
                .field("kind", kind)
                .field("value", &"<redacted>")
                .finish(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    session_id: Option<String>,
    identity_id: Option<String>,
    credential: Option<CredentialBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialBody {
    kind: String,
    value: String,
}

/// Whether the `Authorization` header value carries `Bearer <expected>` (scheme
/// case-insensitive). Constant time in the token's content and length.
pub fn authorized(expected: &Secret, authorization: Option<&[u8]>) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let Some((scheme, token)) = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().split_once(' '))
    else {
        return false;
    };
    let a = Sha256::digest(token.trim().as_bytes());
    let b = Sha256::digest(expected.0.as_bytes());
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // `&` rather than `&&`: both are computed every time
    scheme.eq_ignore_ascii_case("bearer") & (diff == 0)
}

/// Parses the request body. The error is the message of the 400 answer (it never echoes the
/// body: it may hold a credential).
pub fn parse(body: &[u8]) -> Result<PurgeRequest, &'static str> {
    let b: Body = serde_json::from_slice(body).map_err(|_| {
        "body must be a JSON object with one of session_id, identity_id, credential"
    })?;
    let req = match (b.session_id, b.identity_id, b.credential) {
        (Some(s), None, None) => PurgeRequest::SessionId(s),
        (None, Some(i), None) => PurgeRequest::IdentityId(i),
        (None, None, Some(c)) => {
            let kind = match c.kind.as_str() {
                "token" => CredentialKind::Token,
                "cookie" => CredentialKind::Cookie,
                _ => return Err("credential.kind must be \"token\" or \"cookie\""),
            };
            PurgeRequest::Credential {
                kind,
                value: c.value,
            }
        }
        _ => return Err("name exactly one of session_id, identity_id, credential"),
    };
    let empty = match &req {
        PurgeRequest::SessionId(s) | PurgeRequest::IdentityId(s) => s.is_empty(),
        PurgeRequest::Credential { value, .. } => value.is_empty(),
    };
    if empty {
        return Err("the value to purge must not be empty");
    }
    Ok(req)
}

/// Applies a purge here and broadcasts it (through the store's shared tier). Returns how many
/// local cache entries went.
pub fn apply(store: &SessionStore, req: &PurgeRequest) -> usize {
    match req {
        PurgeRequest::SessionId(s) => store.purge(Purge::SessionId(s)),
        PurgeRequest::IdentityId(i) => store.purge(Purge::Identity(i)),
        PurgeRequest::Credential { kind, value } => {
            // A session token is also accepted as `Authorization: Bearer`: two cache keys.
            let kinds: &[CredentialKind] = match kind {
                CredentialKind::Token | CredentialKind::Bearer => {
                    &[CredentialKind::Token, CredentialKind::Bearer]
                }
                CredentialKind::Cookie => &[CredentialKind::Cookie],
            };
            kinds
                .iter()
                .map(|k| {
                    store.purge(Purge::Credential {
                        key: Credential::new(*k, value).cache_key(),
                        session_id: None,
                    })
                })
                .sum()
        }
    }
}

/// The whole API: status and JSON body for a request with this method, `Authorization` value
/// and body (`None` when it was larger than [`MAX_BODY`]). `token` is the configured token
/// (`None` = the API is off: 404).
pub fn handle(
    token: Option<&Secret>,
    store: &SessionStore,
    method: &str,
    authorization: Option<&[u8]>,
    body: Option<&[u8]>,
) -> (u16, Value) {
    let Some(token) = token else {
        return error(
            404,
            "Not Found",
            "the purge API is off (admin.purge_token_file)",
        );
    };
    if method != "POST" {
        return error(405, "Method Not Allowed", "use POST");
    }
    if !authorized(token, authorization) {
        return error(401, "Unauthorized", "a valid bearer token is required");
    }
    let Some(body) = body else {
        return error(413, "Payload Too Large", "body too large");
    };
    match parse(body) {
        Ok(req) => (202, json!({ "purged": apply(store, &req) })),
        Err(message) => error(400, "Bad Request", message),
    }
}

fn error(code: u16, status: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({ "error": { "code": code, "status": status, "message": message } }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_checked() {
        let t = Secret("tok-123".into());
        assert!(authorized(&t, Some(b"Bearer tok-123")));
        assert!(authorized(&t, Some(b"bearer tok-123")));
        for bad in [
            &b"Bearer tok-12"[..],
            b"Bearer tok-1234",
            b"Basic tok-123",
            b"tok-123",
            b"Bearer",
            b"",
            b"Bearer \xff",
        ] {
            assert!(!authorized(&t, Some(bad)), "{bad:?}");
        }
        assert!(!authorized(&t, None));
    }

    #[test]
    fn bodies_name_exactly_one_thing() {
        assert_eq!(
            parse(br#"{"session_id":"s1"}"#),
            Ok(PurgeRequest::SessionId("s1".into()))
        );
        assert_eq!(
            parse(br#"{"identity_id":"i1"}"#),
            Ok(PurgeRequest::IdentityId("i1".into()))
        );
        assert_eq!(
            parse(br#"{"credential":{"kind":"cookie","value":"c"}}"#),
            Ok(PurgeRequest::Credential {
                kind: CredentialKind::Cookie,
                value: "c".into()
            })
        );
        for bad in [
            &br#"{}"#[..],
            br#"{"session_id":"s","identity_id":"i"}"#,
            br#"{"session_id":""}"#,
            br#"{"session_id":7}"#,
            br#"{"credential":{"kind":"bearer","value":"x"}}"#,
            br#"{"credential":{"kind":"token"}}"#,
            br#"{"sessionid":"s"}"#,
            b"not json",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // the 400 message never echoes the body
        let err = parse(br#"{"credential":{"kind":"x","value":"secret-token"}}"#);
        assert!(!format!("{err:?}").contains("secret-token"));
        // nor does a parsed request's Debug
        let ok = parse(br#"{"credential":{"kind":"token","value":"secret-token"}}"#);
        let shown = format!("{ok:?}");
        assert!(
            !shown.contains("secret-token") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
