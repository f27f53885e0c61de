//! Which edge requests end or change a session, so the session cache must forget it.
//!
//! Two steps, because the decision needs both sides of the exchange:
//!
//! 1. `request_filter`: [`on_request`] classifies the request (method + Kratos path + query)
//!    into a [`RequestKind`], which the proxy keeps in its per-request context. Kinds that need
//!    more say so: [`RequestKind::needs_request_body`] (the API logout names its token in the
//!    body: feed the body to [`RequestKind::observe_request_body`]),
//!    [`RequestKind::needs_identity`] (resolve the request's own session, from the cache or by
//!    whoami, before forwarding, so its identity id is known when the answer comes), and
//!    [`RequestKind::needs_response_json`].
//! 2. once the response is known (for the kinds that need the body: at its end):
//!    [`after_response`] turns the kind + status (+ whether a new session cookie was set, see
//!    [`session_cookie_set`]) + the JSON body into the [`PurgeAction`]s to carry out. An empty
//!    list = nothing to purge.
//!
//! | request (Kratos path) | success | purge |
//! |---|---|---|
//! | `GET /self-service/logout?token=..` | 2xx/3xx | the request's credential (its cookie) |
//! | `DELETE /self-service/logout/api` `{"session_token":..}` | 2xx (204) | that token |
//! | `DELETE /sessions` | 2xx | every cached session of the request's identity (Kratos revokes all *other* sessions of it; purging the current one too costs one whoami) |
//! | `DELETE /sessions/{id}` | 2xx (204) | cached entries of session `{id}` |
//! | `POST /self-service/{login,registration}`, `GET\|POST /self-service/methods/<m>/callback/<provider>` | 200 JSON with `session` or `session_token` (or a `set_ory_session_token` in `continue_with`), or 3xx setting the session cookie | the request's credential (e.g. AAL2 step-up keeps the token, changes the session), plus the identity named in `session.identity.id` (the `revoke_active_sessions` hook may have ended its other sessions) |
//! | `POST /self-service/settings` | 2xx/3xx | the request's credential and every session of its identity (traits changed everywhere; `revoke_active_sessions` after a password change) |
//! | `GET\|POST /self-service/{verification,recovery}` | 2xx/3xx | the request's credential and every session of its identity (verified addresses changed; recovery logs in) |
//!
//! Purging on a failed attempt that still answered 2xx/3xx (Kratos shows form errors with a 303
//! back to the UI) is harmless: it costs one whoami. What "the request's identity" is: the
//! identity of the session the request's credential resolves to; when the proxy cannot know it
//! (no credential, nothing cached and whoami not done), purging the credential is the fallback.
//! Purging by session id or identity id uses the session store's index of which credentials
//! resolved to which session and identity (`session::index`); purging a credential purges every
//! credential of its session.

use http::{HeaderMap, Method};
use serde_json::Value;

/// Self-service flows whose submission can create or change a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfServiceFlow {
    Login,
    Registration,
    Settings,
    Recovery,
    Verification,
    /// `/self-service/methods/<oidc|saml|...>/callback/<provider>`: the end of a social
    /// sign-in (login, registration or settings linking).
    ProviderCallback,
}

/// What an edge request is, as far as the session cache is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RequestKind {
    /// Nothing to purge whatever the answer.
    #[default]
    Other,
    /// `GET /self-service/logout?token=...`.
    BrowserLogout,
    /// `DELETE /self-service/logout/api`; the token comes from the request body.
    ApiLogout { session_token: Option<String> },
    /// `DELETE /sessions`: revoke the other sessions of the caller's identity.
    RevokeOtherSessions,
    /// `DELETE /sessions/{id}`.
    RevokeSession(String),
    /// A self-service submission.
    SelfService(SelfServiceFlow),
}

/// One thing to remove from the session cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeAction {
    /// The credential this request carried (whatever kind: token, cookie, bearer).
    Credential,
    /// This session token (as if sent in `X-Session-Token` / `Authorization: Bearer`).
    SessionToken(String),
    /// Every cached entry whose session id is this.
    SessionId(String),
    /// Every cached entry of the identity the request's credential belongs to.
    AllOfIdentity,
    /// Every cached entry of this identity id (named in the response).
    Identity(String),
}

impl RequestKind {
    /// The request body must be passed to [`RequestKind::observe_request_body`] (buffer it;
    /// Kratos's API logout body is a few dozen bytes).
    pub fn needs_request_body(&self) -> bool {
        matches!(self, RequestKind::ApiLogout { .. })
    }

    /// The proxy should know the identity of the request's session when the response comes
    /// (resolve the credential before forwarding).
    pub fn needs_identity(&self) -> bool {
        matches!(
            self,
            RequestKind::RevokeOtherSessions
                | RequestKind::SelfService(
                    SelfServiceFlow::Settings
                        | SelfServiceFlow::Recovery
                        | SelfServiceFlow::Verification
                )
        )
    }

    /// [`after_response`] wants the parsed JSON body (2xx answers with a JSON content type).
    pub fn needs_response_json(&self) -> bool {
        matches!(
            self,
            RequestKind::SelfService(
                SelfServiceFlow::Login
                    | SelfServiceFlow::Registration
                    | SelfServiceFlow::ProviderCallback
            )
        )
    }

    /// Reads `session_token` from an API logout body (JSON `{"session_token": ".."}`, or a
    /// form-encoded `session_token=..`). No-op for other kinds.
    pub fn observe_request_body(&mut self, body: &[u8]) {
        if let RequestKind::ApiLogout { session_token } = self {
            *session_token = logout_api_token(body);
        }
    }
}

/// `session_token` of a `DELETE /self-service/logout/api` body.
pub fn logout_api_token(body: &[u8]) -> Option<String> {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        return map
            .get("session_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
    }
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "session_token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty())
}

/// Classifies an edge request. `kratos_path` is the path relative to Kratos's base (from
/// [`super::Rewriter::strip_prefix`]); `query` the raw query without `?`.
pub fn on_request(method: &Method, kratos_path: &str, query: Option<&str>) -> RequestKind {
    let path = match kratos_path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => kratos_path,
    };
    let is = |m: &Method| method == m;
    match path {
        "/self-service/logout" if is(&Method::GET) => {
            let has_token = query.is_some_and(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .any(|(k, v)| k == "token" && !v.is_empty())
            });
            if has_token {
                RequestKind::BrowserLogout
            } else {
                RequestKind::Other
            }
        }
        "/self-service/logout/api" if is(&Method::DELETE) => RequestKind::ApiLogout {
            session_token: None,
        },
        "/sessions" if is(&Method::DELETE) => RequestKind::RevokeOtherSessions,
        "/self-service/login" if is(&Method::POST) => {
            RequestKind::SelfService(SelfServiceFlow::Login)
        }
        "/self-service/registration" if is(&Method::POST) => {
            RequestKind::SelfService(SelfServiceFlow::Registration)
        }
        "/self-service/settings" if is(&Method::POST) => {
            RequestKind::SelfService(SelfServiceFlow::Settings)
        }
        "/self-service/recovery" if is(&Method::POST) || is(&Method::GET) => {
            RequestKind::SelfService(SelfServiceFlow::Recovery)
        }
        "/self-service/verification" if is(&Method::POST) || is(&Method::GET) => {
            RequestKind::SelfService(SelfServiceFlow::Verification)
        }
        _ => {
            if is(&Method::DELETE) {
                if let Some(id) = path.strip_prefix("/sessions/") {
                    if !id.is_empty() && !id.contains('/') {
                        return RequestKind::RevokeSession(id.to_owned());
                    }
                }
            }
            if is(&Method::GET) || is(&Method::POST) {
                if let Some(rest) = path.strip_prefix("/self-service/methods/") {
                    let mut segs = rest.split('/');
                    if let (Some(m), Some("callback"), Some(p), None) =
                        (segs.next(), segs.next(), segs.next(), segs.next())
                    {
                        if !m.is_empty() && !p.is_empty() {
                            return RequestKind::SelfService(SelfServiceFlow::ProviderCallback);
                        }
                    }
                }
            }
            RequestKind::Other
        }
    }
}

/// Does the response set a (non-empty) session cookie called `cookie_name`?
pub fn session_cookie_set(headers: &HeaderMap, cookie_name: &str) -> bool {
    headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| cookie::Cookie::parse(v).ok())
        .any(|c| c.name() == cookie_name && !c.value().is_empty())
}

/// The purges a finished exchange calls for (see the module docs). Empty = none.
///
/// `sets_session_cookie`: [`session_cookie_set`] on the response headers. `body_json`: the
/// parsed response body when it is JSON (needed only where
/// [`RequestKind::needs_response_json`]; `None` otherwise).
pub fn after_response(
    kind: &RequestKind,
    status: u16,
    sets_session_cookie: bool,
    body_json: Option<&Value>,
) -> Vec<PurgeAction> {
    let success = (200..300).contains(&status);
    let redirect = (300..400).contains(&status);
    match kind {
        RequestKind::Other => vec![],
        RequestKind::BrowserLogout if success || redirect => vec![PurgeAction::Credential],
        RequestKind::ApiLogout { session_token } if success => match session_token {
            Some(t) => vec![PurgeAction::SessionToken(t.clone())],
            None => vec![PurgeAction::Credential],
        },
        RequestKind::RevokeOtherSessions if success => vec![PurgeAction::AllOfIdentity],
        RequestKind::RevokeSession(id) if success => vec![PurgeAction::SessionId(id.clone())],
        RequestKind::SelfService(
            SelfServiceFlow::Login
            | SelfServiceFlow::Registration
            | SelfServiceFlow::ProviderCallback,
        ) => {
            let new_session_json = success && body_json.is_some_and(carries_session);
            if new_session_json
                || (redirect && sets_session_cookie)
                || (success && sets_session_cookie)
            {
                let mut out = vec![PurgeAction::Credential];
                if let Some(id) = body_json
                    .and_then(|b| b.pointer("/session/identity/id"))
                    .and_then(Value::as_str)
                {
                    out.push(PurgeAction::Identity(id.to_owned()));
                }
                out
            } else {
                vec![]
            }
        }
        RequestKind::SelfService(
            SelfServiceFlow::Settings | SelfServiceFlow::Recovery | SelfServiceFlow::Verification,
        ) if success || redirect => vec![PurgeAction::Credential, PurgeAction::AllOfIdentity],
        _ => vec![],
    }
}

/// A successful login/registration answer: `session`, `session_token`, or a
/// `continue_with` item of type `set_ory_session_token`.
fn carries_session(body: &Value) -> bool {
    let Some(obj) = body.as_object() else {
        return false;
    };
    if obj.get("session").is_some_and(Value::is_object)
        || obj.get("session_token").is_some_and(Value::is_string)
    {
        return true;
    }
    obj.get("continue_with")
        .and_then(Value::as_array)
        .is_some_and(|items| {
            items
                .iter()
                .any(|i| i.get("action").and_then(Value::as_str) == Some("set_ory_session_token"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classify() {
        let g = Method::GET;
        let d = Method::DELETE;
        let p = Method::POST;
        assert_eq!(
            on_request(&g, "/self-service/logout", Some("token=abc")),
            RequestKind::BrowserLogout
        );
        assert_eq!(
            on_request(&g, "/self-service/logout/", Some("return_to=x&token=abc")),
            RequestKind::BrowserLogout
        );
        assert_eq!(
            on_request(&g, "/self-service/logout", Some("token=")),
            RequestKind::Other
        );
        assert_eq!(
            on_request(&g, "/self-service/logout", None),
            RequestKind::Other
        );
        assert_eq!(
            on_request(&p, "/self-service/logout", Some("token=abc")),
            RequestKind::Other
        );
        assert_eq!(
            on_request(&g, "/self-service/logout/browser", None),
            RequestKind::Other
        );
        assert_eq!(
            on_request(&d, "/self-service/logout/api", None),
            RequestKind::ApiLogout {
                session_token: None
            }
        );
        assert_eq!(
            on_request(&d, "/sessions", None),
            RequestKind::RevokeOtherSessions
        );
        assert_eq!(on_request(&g, "/sessions", None), RequestKind::Other);
        assert_eq!(
            on_request(&d, "/sessions/7f2a", None),
            RequestKind::RevokeSession("7f2a".into())
        );
        assert_eq!(on_request(&d, "/sessions/a/b", None), RequestKind::Other);
        assert_eq!(on_request(&g, "/sessions/whoami", None), RequestKind::Other);
        assert_eq!(
            on_request(&p, "/self-service/login", Some("flow=1")),
            RequestKind::SelfService(SelfServiceFlow::Login)
        );
        assert_eq!(
            on_request(&g, "/self-service/login/browser", None),
            RequestKind::Other
        );
        assert_eq!(
            on_request(&g, "/self-service/login", Some("flow=1")),
            RequestKind::Other
        );
        assert_eq!(
            on_request(&p, "/self-service/registration", None),
            RequestKind::SelfService(SelfServiceFlow::Registration)
        );
        assert_eq!(
            on_request(&p, "/self-service/settings", None),
            RequestKind::SelfService(SelfServiceFlow::Settings)
        );
        assert_eq!(
            on_request(&g, "/self-service/verification", Some("flow=1&code=2")),
            RequestKind::SelfService(SelfServiceFlow::Verification)
        );
        assert_eq!(
            on_request(&p, "/self-service/recovery", None),
            RequestKind::SelfService(SelfServiceFlow::Recovery)
        );
        assert_eq!(
            on_request(
                &g,
                "/self-service/methods/oidc/callback/google",
                Some("code=1&state=2")
            ),
            RequestKind::SelfService(SelfServiceFlow::ProviderCallback)
        );
        assert_eq!(
            on_request(&p, "/self-service/methods/oidc/callback/apple", None),
            RequestKind::SelfService(SelfServiceFlow::ProviderCallback)
        );
        assert_eq!(
            on_request(&g, "/self-service/methods/oidc/callback/", None),
            RequestKind::Other
        );
        assert_eq!(on_request(&g, "/", None), RequestKind::Other);
    }

    #[test]
    fn kind_needs() {
        let mut k = on_request(&Method::DELETE, "/self-service/logout/api", None);
        assert!(k.needs_request_body());
        k.observe_request_body(br#"{"session_token":"ory_st_abc"}"#);
        assert_eq!(
            k,
            RequestKind::ApiLogout {
                session_token: Some("ory_st_abc".into())
            }
        );
        k.observe_request_body(b"session_token=ory_st_def");
        assert_eq!(
            k,
            RequestKind::ApiLogout {
                session_token: Some("ory_st_def".into())
            }
        );
        k.observe_request_body(br#"{"session_token":""}"#);
        assert_eq!(
            k,
            RequestKind::ApiLogout {
                session_token: None
            }
        );
        assert!(RequestKind::RevokeOtherSessions.needs_identity());
        assert!(!RequestKind::BrowserLogout.needs_identity());
        assert!(RequestKind::SelfService(SelfServiceFlow::Login).needs_response_json());
        let mut other = RequestKind::Other;
        other.observe_request_body(br#"{"session_token":"x"}"#);
        assert_eq!(other, RequestKind::Other);
    }

    #[test]
    fn logout_purges() {
        assert_eq!(
            after_response(&RequestKind::BrowserLogout, 303, false, None),
            vec![PurgeAction::Credential]
        );
        assert_eq!(
            after_response(&RequestKind::BrowserLogout, 204, false, None),
            vec![PurgeAction::Credential]
        );
        assert_eq!(
            after_response(&RequestKind::BrowserLogout, 401, false, None),
            vec![]
        );
        let k = RequestKind::ApiLogout {
            session_token: Some("t".into()),
        };
        assert_eq!(
            after_response(&k, 204, false, None),
            vec![PurgeAction::SessionToken("t".into())]
        );
        assert_eq!(after_response(&k, 403, false, None), vec![]);
        let k = RequestKind::ApiLogout {
            session_token: None,
        };
        assert_eq!(
            after_response(&k, 204, false, None),
            vec![PurgeAction::Credential]
        );
        assert_eq!(
            after_response(
                &RequestKind::RevokeOtherSessions,
                200,
                false,
                Some(&json!({"count":2}))
            ),
            vec![PurgeAction::AllOfIdentity]
        );
        assert_eq!(
            after_response(&RequestKind::RevokeOtherSessions, 401, false, None),
            vec![]
        );
        assert_eq!(
            after_response(&RequestKind::RevokeSession("s1".into()), 204, false, None),
            vec![PurgeAction::SessionId("s1".into())]
        );
        assert_eq!(
            after_response(&RequestKind::RevokeSession("s1".into()), 400, false, None),
            vec![]
        );
        assert_eq!(after_response(&RequestKind::Other, 200, true, None), vec![]);
    }

    #[test]
    fn self_service_purges() {
        let login = RequestKind::SelfService(SelfServiceFlow::Login);
        let body = json!({"session_token":"ory_st_x","session":{"id":"s","identity":{"id":"i1"}}});
        assert_eq!(
            after_response(&login, 200, false, Some(&body)),
            vec![PurgeAction::Credential, PurgeAction::Identity("i1".into())]
        );
        let browser_json = json!({"session":{"id":"s"}});
        assert_eq!(
            after_response(&login, 200, true, Some(&browser_json)),
            vec![PurgeAction::Credential]
        );
        assert_eq!(
            after_response(&login, 303, true, None),
            vec![PurgeAction::Credential]
        );
        // a 303 back to the UI with form errors sets no session cookie
        assert_eq!(after_response(&login, 303, false, None), vec![]);
        // a flow with validation errors
        assert_eq!(
            after_response(&login, 400, false, Some(&json!({"id":"f","ui":{}}))),
            vec![]
        );
        assert_eq!(
            after_response(&login, 200, false, Some(&json!({"id":"f","ui":{}}))),
            vec![]
        );
        let cont =
            json!({"continue_with":[{"action":"set_ory_session_token","ory_session_token":"t"}]});
        let reg = RequestKind::SelfService(SelfServiceFlow::Registration);
        assert_eq!(
            after_response(&reg, 200, false, Some(&cont)),
            vec![PurgeAction::Credential]
        );
        let cb = RequestKind::SelfService(SelfServiceFlow::ProviderCallback);
        assert_eq!(
            after_response(&cb, 303, true, None),
            vec![PurgeAction::Credential]
        );
        assert_eq!(after_response(&cb, 422, false, None), vec![]);
        let settings = RequestKind::SelfService(SelfServiceFlow::Settings);
        assert_eq!(
            after_response(&settings, 200, false, None),
            vec![PurgeAction::Credential, PurgeAction::AllOfIdentity]
        );
        assert_eq!(after_response(&settings, 303, false, None).len(), 2);
        assert_eq!(after_response(&settings, 403, false, None), vec![]);
    }

    #[test]
    fn session_cookie_detection() {
        let mut h = HeaderMap::new();
        assert!(!session_cookie_set(&h, "ory_kratos_session"));
        h.append("set-cookie", "csrf_token_abc=x; Path=/".parse().unwrap());
        assert!(!session_cookie_set(&h, "ory_kratos_session"));
        h.append(
            "set-cookie",
            "ory_kratos_session=; Path=/; Max-Age=0".parse().unwrap(),
        );
        assert!(!session_cookie_set(&h, "ory_kratos_session"));
        h.append(
            "set-cookie",
            "ory_kratos_session=MTY4; Path=/; HttpOnly".parse().unwrap(),
        );
        assert!(session_cookie_set(&h, "ory_kratos_session"));
        assert!(!session_cookie_set(&h, "ory_session_slug"));
        let mut odd = HeaderMap::new();
        for v in [
            "garbage",
            "=x",
            "ory_session_slug = ; Path=/",
            "ory_session_slug",
        ] {
            odd.append("set-cookie", v.parse().unwrap());
        }
        assert!(!session_cookie_set(&odd, "ory_session_slug"));
        odd.append(
            "set-cookie",
            " ory_session_slug = \"v\" ; Partitioned; Priority=High"
                .parse()
                .unwrap(),
        );
        assert!(session_cookie_set(&odd, "ory_session_slug"));
    }

    #[test]
    fn logout_token_parsing() {
        assert_eq!(
            logout_api_token(br#"{"session_token":"a"}"#).as_deref(),
            Some("a")
        );
        assert_eq!(logout_api_token(br#"{"session_token":1}"#), None);
        assert_eq!(logout_api_token(b"session_token=a%2Bb"), Some("a+b".into()));
        assert_eq!(logout_api_token(b""), None);
    }
}
