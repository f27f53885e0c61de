//! The wire format of the double's self-service answers (Go's JSON, herodot errors, Go's
//! redirects, Kratos's cookies) and the sessions the flows create.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderMap, StatusCode};
use hyper::Response;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::SelfServiceState;
use crate::kratos::{response, session_json_at, SessionSpec, State, Stored, ERROR_JSON, JSON};
use crate::server::{lock, Body};

/// How long the double's sessions (and their cookies) live: Kratos's `session.lifespan`.
const SESSION_LIFESPAN: Duration = Duration::from_secs(3600);

/// Serialises like Go's `encoding/json` with HTML escaping (herodot's default).
fn go_json(v: &Value) -> Bytes {
    let s = serde_json::to_string(v).expect("serialize JSON");
    Bytes::from(
        s.replace('&', "\\u0026")
            .replace('<', "\\u003c")
            .replace('>', "\\u003e"),
    )
}

/// A document (flow, session, ...): `application/json; charset=utf-8`.
pub(super) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    response(status, Some(JSON), go_json(v))
}

/// A herodot error as Kratos writes it: `application/json` (no charset), `{"error": {...}}` with
/// `id` and `reason` only when there are some.
pub(super) fn error_response(
    code: u16,
    id: Option<&str>,
    reason: Option<&str>,
    message: &str,
) -> Response<Body> {
    error_with(code, id, reason, message, |_| {})
}

/// [`error_response`] with a chance to add to the body (`error.details`, top-level fields).
pub(super) fn error_with(
    code: u16,
    id: Option<&str>,
    reason: Option<&str>,
    message: &str,
    more: impl FnOnce(&mut Value),
) -> Response<Body> {
    let status = StatusCode::from_u16(code).expect("status code");
    let mut e = json!({ "code": code, "status": status.canonical_reason().unwrap_or_default() });
    if let Some(id) = id {
        e["id"] = json!(id);
    }
    if let Some(reason) = reason {
        e["reason"] = json!(reason);
    }
    e["message"] = json!(message);
    let mut body = json!({ "error": e });
    more(&mut body);
    response(status, Some(ERROR_JSON), go_json(&body))
}

/// A `303` to `location` (its body is added for `GET`s when the answer leaves, see
/// [`see_other_body`]).
pub(super) fn redirect(location: &str) -> Response<Body> {
    let mut resp = response(StatusCode::SEE_OTHER, None, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// What Go's `http.Redirect` writes for a `GET`: `text/html` and a link to the target.
pub(super) fn see_other_body(resp: &mut Response<Body>) {
    let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let escaped = loc
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;");
    let html = format!("<a href=\"{escaped}\">See Other</a>.\n\n");
    *resp.body_mut() = Body::new(Bytes::from(html));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
}

pub(super) fn add_cookie(resp: &mut Response<Body>, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
}

pub(super) fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

pub(super) fn query_map(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

pub(super) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A form or JSON body as flat `name -> value` (JSON objects flattened with dots).
pub(super) fn body_fields(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct.contains("application/json") {
        let mut out = HashMap::new();
        fn flatten(prefix: &str, v: &Value, out: &mut HashMap<String, String>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        flatten(&key, v, out);
                    }
                }
                Value::String(s) => {
                    out.insert(prefix.to_owned(), s.clone());
                }
                other => {
                    out.insert(prefix.to_owned(), other.to_string());
                }
            }
        }
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            flatten("", &v, &mut out);
        }
        out
    } else {
        url::form_urlencoded::parse(body).into_owned().collect()
    }
}

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for value in headers.get_all(http::header::COOKIE) {
        let value = String::from_utf8_lossy(value.as_bytes());
        for part in value.split(';') {
            if let Some((n, v)) = part.trim().split_once('=') {
                if n == name {
                    return Some(v.to_owned());
                }
            }
        }
    }
    None
}

/// `Wed, 21 Oct 2015 07:28:00 GMT`
fn http_date(t: OffsetDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[t.weekday().number_days_from_monday() as usize],
        t.day(),
        MONTHS[u8::from(t.month()) as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn cookie_attrs(ss: &SelfServiceState) -> String {
    let mut s = String::new();
    if let Some(d) = &ss.cookie_domain {
        s.push_str("; Domain=");
        s.push_str(d);
    }
    if ss.cookie_secure {
        s.push_str("; Secure");
    }
    s
}

/// A cookie that lives for a while (`Path=/; Max-Age=..; HttpOnly; SameSite=Lax`).
pub(super) fn lasting_cookie(
    ss: &SelfServiceState,
    name: &str,
    value: &str,
    max_age: u64,
) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        cookie_attrs(ss)
    )
}

/// The session cookie, with `Expires` and `Max-Age` of the session's lifespan.
pub(super) fn session_cookie(ss: &SelfServiceState, name: &str, value: &str) -> String {
    let expires = OffsetDateTime::now_utc() + SESSION_LIFESPAN;
    format!(
        "{name}={value}; Path=/; Expires={}; Max-Age={}; HttpOnly; SameSite=Lax{}",
        http_date(expires),
        SESSION_LIFESPAN.as_secs(),
        cookie_attrs(ss)
    )
}

/// Deletes cookie `name` the way Kratos does: a (meaningless, non-empty) value with
/// `Expires` in 1970 and `Max-Age=0`.
pub(super) fn clear_cookie(ss: &SelfServiceState, name: &str) -> String {
    format!(
        "{name}={}; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly; SameSite=Lax{}",
        new_cookie_value(),
        cookie_attrs(ss)
    )
}

/// The csrf cookie (one year, like Kratos's nosurf cookie).
pub(super) fn csrf_cookie(ss: &SelfServiceState, value: &str) -> String {
    lasting_cookie(ss, &ss.csrf_cookie_name, value, 31_536_000)
}

pub(super) fn new_csrf_value() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Who a new session is for.
pub(super) struct Who<'a> {
    pub(super) identity_id: &'a str,
    pub(super) email: &'a str,
    pub(super) verified: bool,
}

/// Creates a session of `who` under `credential` (with the `Ory-Session-Cache-For` of
/// [`crate::KratosDouble::set_session_cache_for`]); its JSON. Its device has the `User-Agent`
/// of the request that created it (`null` without one, as in Kratos).
pub(super) fn create_session(
    state: &State,
    credential: &str,
    who: &Who<'_>,
    user_agent: Option<&str>,
) -> Value {
    let Who {
        identity_id,
        email,
        verified,
    } = *who;
    let id = uuid::Uuid::new_v4().to_string();
    let spec = SessionSpec {
        identity_id: identity_id.to_owned(),
        email: email.to_owned(),
        verified,
        expires_in: SESSION_LIFESPAN,
        ..SessionSpec::default()
    };
    let mut body = session_json_at(&state.url, &id, &spec);
    body["devices"][0]["user_agent"] = json!(user_agent);
    let cache_for = lock(&state.selfservice).session_cache_for;
    lock(&state.sessions).insert(
        credential.to_owned(),
        Stored {
            body: Bytes::from(serde_json::to_vec(&body).expect("serialize session JSON")),
            identity_id: identity_id.to_owned(),
            session_id: id,
            cache_for,
            set_cookie: None,
        },
    );
    body
}

pub(super) fn stored_session(state: &State, credential: &str) -> Option<Stored> {
    lock(&state.sessions).get(credential).cloned()
}

/// The request's `User-Agent`.
pub(super) fn user_agent(h: &HeaderMap) -> Option<&str> {
    h.get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

/// Ends the session of `credential`; Kratos keeps it (inactive), so the double remembers it.
/// Revokes the session `credential` belongs to: every credential of that session (a re-issued
/// cookie is the same session in Kratos) gets 401 from then on.
pub(super) fn revoke(state: &State, credential: &str) -> bool {
    let mut sessions = lock(&state.sessions);
    let Some(session_id) = sessions.get(credential).map(|s| s.session_id.clone()) else {
        return false;
    };
    let dead: Vec<String> = sessions
        .iter()
        .filter(|(_, s)| s.session_id == session_id)
        .map(|(c, _)| c.clone())
        .collect();
    let mut revoked = lock(&state.revoked);
    for c in dead {
        sessions.remove(&c);
        revoked.insert(c);
    }
    true
}

pub(super) fn session_value(stored: &Stored) -> Value {
    serde_json::from_slice(&stored.body).unwrap_or(Value::Null)
}

pub(super) fn new_token() -> String {
    format!("ory_st_{}", uuid::Uuid::new_v4().simple())
}

pub(super) fn new_cookie_value() -> String {
    format!("MTc{}", uuid::Uuid::new_v4().simple())
}

pub(super) fn error_redirect(state: &State, why: String) -> Response<Body> {
    let mut ss = lock(&state.selfservice);
    ss.errors.push(why);
    let loc = format!("{}/error?id={}", ss.ui_base, uuid::Uuid::new_v4());
    redirect(&loc)
}

// ---------------------------------------------------------------------------------------------
// a tiny HTTP/1.1 client for the OIDC back channel (loopback, plain HTTP)

pub(super) async fn http_call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_owned());
    let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if u.scheme() != "http" {
        return Err(bad("only http:// back channels are supported"));
    }
    let host = u.host_str().ok_or_else(|| bad("no host"))?;
    let port = u.port_or_known_default().unwrap_or(80);
    let target = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\ncontent-length: {}\r\naccept: application/json\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.write_all(req.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "back channel timed out")
        })??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    Ok((status, raw[split + 4..].to_vec()))
}
