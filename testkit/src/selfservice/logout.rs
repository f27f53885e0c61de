//! Logout (browser and API) and session revocation, answering like Kratos v1.3.1.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use hyper::Response;
use serde_json::{json, Value};

use super::caller;
use super::wire::{
    add_cookie, body_fields, clear_cookie, cookie, csrf_cookie, enc, error_redirect,
    error_response, json_response, new_csrf_value, redirect, revoke, stored_session, wants_json,
};
use crate::kratos::{response, State, JSON};
use crate::server::{lock, Body};

/// The live session cookie of the request, if any.
fn session_cookie_of(state: &State, h: &HeaderMap) -> Option<String> {
    let name = lock(&state.cookie_name).clone();
    cookie(h, &name).filter(|c| stored_session(state, c).is_some())
}

/// No live session: `401 session_inactive` (JSON) or `303` to the error UI.
fn no_session(state: &State, json: bool, why: &str) -> Response<Body> {
    if json {
        error_response(
            401,
            Some("session_inactive"),
            Some("No active session was found in this request."),
            "request does not have a valid authentication session",
        )
    } else {
        error_redirect(state, why.to_owned())
    }
}

/// `GET /self-service/logout/browser`: the logout URL of the session cookie's session (one token
/// per session; Kratos answers JSON whatever `Accept` says).
pub(super) fn logout_browser(
    state: &State,
    h: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let Some(cred) = session_cookie_of(state, h) else {
        return no_session(state, wants_json(h), "logout/browser: no session cookie");
    };
    let mut ss = lock(&state.selfservice);
    let existing = ss
        .logout_tokens
        .iter()
        .find(|(_, c)| **c == cred)
        .map(|(t, _)| t.clone());
    let token = existing.unwrap_or_else(|| {
        let t = format!("ory_lo_{}", uuid::Uuid::new_v4().simple());
        ss.logout_tokens.insert(t.clone(), cred);
        t
    });
    drop(ss);
    let mut url = format!("{}/self-service/logout?token={token}", state.url);
    if let Some(r) = query.get("return_to") {
        url.push_str("&return_to=");
        url.push_str(&enc(r));
    }
    json_response(
        StatusCode::OK,
        &json!({ "logout_url": url, "logout_token": token }),
    )
}

/// `GET /self-service/logout?token=`: the token must belong to the session of the request's
/// session cookie.
pub(super) fn logout(
    state: &State,
    h: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let json = wants_json(h);
    let Some(token) = query.get("token").filter(|t| !t.is_empty()) else {
        if json {
            return error_response(
                400,
                None,
                Some("Please include a token in the URL query."),
                "The request was malformed or contained invalid parameters",
            );
        }
        return error_redirect(state, "logout: no token".into());
    };
    let Some(cred) = session_cookie_of(state, h) else {
        return no_session(state, json, "logout: no live session cookie");
    };
    if lock(&state.selfservice).logout_tokens.get(token) != Some(&cred) {
        if json {
            return error_response(
                403,
                None,
                Some("Unable to log out because the logout token in the URL query does not match the session cookie."),
                "The requested action was forbidden",
            );
        }
        return error_redirect(state, "logout: the token is not the session's".into());
    }
    revoke(state, &cred);
    let name = lock(&state.cookie_name).clone();
    let mut ss = lock(&state.selfservice);
    ss.logout_tokens.remove(token);
    let clear = clear_cookie(&ss, &name);
    let csrf = csrf_cookie(&ss, &new_csrf_value());
    let ret = query
        .get("return_to")
        .cloned()
        .or_else(|| ss.logout_return_url.clone())
        .unwrap_or_else(|| ss.default_return_url.clone());
    drop(ss);
    let mut resp = if json {
        response(StatusCode::NO_CONTENT, None, Bytes::new())
    } else {
        redirect(&ret)
    };
    add_cookie(&mut resp, &clear);
    add_cookie(&mut resp, &csrf);
    resp
}

/// `DELETE /self-service/logout/api` `{"session_token": ..}`.
pub(super) fn logout_api(state: &State, h: &HeaderMap, body: &[u8]) -> Response<Body> {
    if body.is_empty() {
        return error_response(
            400,
            None,
            Some(
                r#"Unable to decode HTTP Request Body because its HTTP Header "Content-Length" is zero."#,
            ),
            "The request was malformed or contained invalid parameters",
        );
    }
    let token = body_fields(h, body).remove("session_token").or_else(|| {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["session_token"].as_str().map(str::to_owned))
    });
    // Kratos keeps revoked sessions (inactive): logging one out again is fine.
    let known = token.is_some_and(|t| revoke(state, &t) || lock(&state.revoked).contains(&t));
    if known {
        response(StatusCode::NO_CONTENT, None, Bytes::new())
    } else {
        error_response(
            403,
            None,
            Some("The provided Ory Session Token could not be found, is invalid, or otherwise malformed."),
            "The requested action was forbidden",
        )
    }
}

fn no_caller() -> Response<Body> {
    error_response(
        401,
        None,
        Some("No valid session cookie found."),
        "The request could not be authorized",
    )
}

/// `DELETE /sessions`: every other session of the caller's identity.
pub(super) fn revoke_others(state: &State, h: &HeaderMap) -> Response<Body> {
    let Some((cred, me)) = caller(state, h) else {
        return no_caller();
    };
    let others: Vec<String> = lock(&state.sessions)
        .iter()
        .filter(|(c, s)| **c != cred && s.identity_id == me.identity_id)
        .map(|(c, _)| c.clone())
        .collect();
    for c in &others {
        revoke(state, c);
    }
    json_response(StatusCode::OK, &json!({ "count": others.len() }))
}

/// `DELETE /sessions/<id>`: `204` whether or not the caller's identity had such a session.
pub(super) fn revoke_one(state: &State, h: &HeaderMap, id: &str) -> Response<Body> {
    let Some((_, me)) = caller(state, h) else {
        return no_caller();
    };
    if uuid::Uuid::parse_str(id).is_err() {
        let msg = format!("uuid: incorrect UUID length {} in string {id:?}", id.len());
        return error_response(400, None, None, &msg);
    }
    if me.session_id == id {
        return error_response(400, None, None, "cannot revoke current session");
    }
    let mine: Vec<String> = lock(&state.sessions)
        .iter()
        .filter(|(_, s)| s.session_id == id && s.identity_id == me.identity_id)
        .map(|(c, _)| c.clone())
        .collect();
    for c in &mine {
        revoke(state, c);
    }
    // Kratos v1.3.1 labels its empty 204 as JSON.
    let mut resp = response(StatusCode::NO_CONTENT, None, Bytes::new());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    resp
}
