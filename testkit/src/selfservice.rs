//! Kratos's self-service API in the Kratos double: login and registration flows (browser and
//! API), password and OIDC sign-in, the native-app token exchange, logout and session
//! revocation. Sessions created here go into the double's whoami table, so
//! `GET /sessions/whoami` sees them, and revocations make whoami answer 401.
//!
//! Absolute URLs appear exactly where real Kratos puts them, always on the double's own origin
//! ([`KratosDouble::url`]): flow `request_url` and `ui.action`, `identity.schema_url`,
//! `logout_url`, `redirect_browser_to`, `Location`s of its own redirects, the OIDC
//! `redirect_uri` (`{base_redirect_uri or own url}/self-service/methods/oidc/callback/<id>`).
//! JSON is written like Go's `encoding/json` (so `&`, `<`, `>` appear as `\u0026` etc.).
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /self-service/{login,registration}/browser[?return_to=..]` | `303` to `<ui>/{login,registration}?flow=<id>` with `Set-Cookie: csrf_token_<hash>=..`; `200` flow JSON with `Accept: application/json`; `303` to the return URL (`400 session_already_available` as JSON) when a session cookie is already valid |
//! | `GET /self-service/{login,registration}/api[?return_session_token_exchange_code=true&return_to=..]` | `200` flow JSON (type `api`; `session_token_exchange_code` when asked) |
//! | `GET /self-service/{login,registration}/flows?id=` | `200` flow JSON; `404` |
//! | `POST /self-service/{login,registration}?flow=` | form or JSON body. Browser flows need `csrf_token` = the csrf cookie (else `403 security_csrf_violation`). `method=password` (`identifier`/`traits.email` + `password`): API `200 {session_token, session}`; browser `303` to `return_to` + session cookie, or `200 {session, continue_with}` with JSON. `method=oidc&provider=X`: API flows and JSON browser requests `422 browser_location_change_required` (`redirect_browser_to` = the provider's authorize URL); browser forms `303` to it + `ory_kratos_continuity` cookie |
//! | `GET\|POST /self-service/methods/oidc/callback/<provider>?code=&state=` | exchanges the code at the provider (`POST /token` with the same `redirect_uri`, `GET /userinfo`), creates the session; browser: `303` to `return_to` + `Set-Cookie: <session cookie>=..; Path=/; HttpOnly; SameSite=Lax` (`Domain`, `Secure` when configured); native: `303` to `return_to` with `code=<return_to_code>` appended; errors: `303` to `<ui>/error?id=..` |
//! | `GET /sessions/token-exchange?init_code=&return_to_code=` | `200 {session_token, session}` once; `404` |
//! | `GET /self-service/logout/browser[?return_to=]` | session cookie required: `200 {logout_url, logout_token}`; `401` |
//! | `GET /self-service/logout?token=[&return_to=]` | revokes the session, `303` to `return_to` or the default return URL clearing the cookie (`204` with JSON); bad token: `303` to the error UI (`401` JSON) |
//! | `DELETE /self-service/logout/api` `{"session_token":..}` | `204` and revoked; `403` |
//! | `DELETE /sessions` | revokes every *other* session of the caller's identity: `200 {"count": n}`; `401` |
//! | `DELETE /sessions/<id>` | revokes that session of the caller's identity: `204`; the caller's own: `400`; unknown or another identity's: `404`; `401` |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kratos::{
    extract_credential, response, rfc3339, session_json_at, KratosDouble, RecordedRequest,
    SessionSpec, State, Stored, JSON, UNAUTHORIZED_BODY,
};
use crate::oidc::OidcProvider;
use crate::server::{lock, Body};

/// The continuity cookie Kratos sets around a browser OIDC sign-in.
pub const CONTINUITY_COOKIE: &str = "ory_kratos_continuity";
/// The UI base the double redirects browsers to by default (Kratos's quickstart UI).
pub const DEFAULT_UI_BASE: &str = "http://127.0.0.1:4455";
/// Where browsers go after login/logout without `return_to`.
pub const DEFAULT_RETURN_URL: &str = "http://127.0.0.1:4455/welcome";

const CALLBACK_PATH: &str = "/self-service/methods/oidc/callback/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlowKind {
    Login,
    Registration,
}

impl FlowKind {
    fn name(self) -> &'static str {
        match self {
            FlowKind::Login => "login",
            FlowKind::Registration => "registration",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlowType {
    Browser,
    Api,
}

#[derive(Debug, Clone)]
struct Flow {
    id: String,
    kind: FlowKind,
    ty: FlowType,
    csrf: String,
    return_to: Option<String>,
    request_url: String,
    issued_at: OffsetDateTime,
    /// `session_token_exchange_code` (the init code) when the native app asked for one.
    init_code: Option<String>,
    /// A message to show in `ui.messages` (after a failed submission).
    error: Option<String>,
}

#[derive(Debug, Clone)]
struct Provider {
    authorize_url: String,
    token_url: String,
    userinfo_url: String,
    client_id: String,
}

#[derive(Debug, Clone)]
struct PendingOidc {
    flow_id: String,
    provider: String,
    redirect_uri: String,
    continuity: Option<String>,
}

#[derive(Debug, Clone)]
struct Exchange {
    return_to_code: String,
    token: Option<String>,
}

#[derive(Debug, Clone)]
struct Account {
    password: String,
    identity_id: String,
}

/// The self-service part of the double's state (kept inside the Kratos double).
pub(crate) struct SelfServiceState {
    flows: HashMap<String, Flow>,
    providers: HashMap<String, Provider>,
    base_redirect_uri: Option<String>,
    ui_base: String,
    default_return_url: String,
    cookie_domain: Option<String>,
    cookie_secure: bool,
    csrf_cookie_name: String,
    pending: HashMap<String, PendingOidc>,
    exchanges: HashMap<String, Exchange>,
    logout_tokens: HashMap<String, String>,
    accounts: HashMap<String, Account>,
    social: HashMap<(String, String), (String, String)>,
    requests: Vec<RecordedRequest>,
    errors: Vec<String>,
}

impl Default for SelfServiceState {
    fn default() -> Self {
        SelfServiceState {
            flows: HashMap::new(),
            providers: HashMap::new(),
            base_redirect_uri: None,
            ui_base: DEFAULT_UI_BASE.to_owned(),
            default_return_url: DEFAULT_RETURN_URL.to_owned(),
            cookie_domain: None,
            cookie_secure: false,
            csrf_cookie_name: format!(
                "csrf_token_{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
            pending: HashMap::new(),
            exchanges: HashMap::new(),
            logout_tokens: HashMap::new(),
            accounts: HashMap::new(),
            social: HashMap::new(),
            requests: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// Configuration and inspection of the self-service endpoints.
impl KratosDouble {
    fn ss(&self) -> std::sync::MutexGuard<'_, SelfServiceState> {
        lock(&self.shared().selfservice)
    }

    /// `selfservice.flows.*.ui_url` = `<ui_base>/login`, `/registration`, `/error`
    /// (default [`DEFAULT_UI_BASE`]).
    pub fn set_ui_base(&self, ui_base: &str) {
        self.ss().ui_base = ui_base.trim_end_matches('/').to_owned();
    }

    /// `selfservice.default_browser_return_url` (default [`DEFAULT_RETURN_URL`]).
    pub fn set_default_return_url(&self, url: &str) {
        self.ss().default_return_url = url.to_owned();
    }

    /// `session.cookie.domain` (and the csrf cookie's): `Domain=` on the cookies the double sets.
    pub fn set_session_cookie_domain(&self, domain: Option<&str>) {
        self.ss().cookie_domain = domain.map(str::to_owned);
    }

    /// Whether the cookies the double sets carry `Secure` (default `false`, like `kratos --dev`).
    pub fn set_session_cookie_secure(&self, secure: bool) {
        self.ss().cookie_secure = secure;
    }

    /// Name of the CSRF cookie (`csrf_token_<hash>`, fixed per double).
    pub fn csrf_cookie_name(&self) -> String {
        self.ss().csrf_cookie_name.clone()
    }

    /// Registers an OIDC provider with id `id` (`selfservice.methods.oidc.config.providers`).
    pub fn add_oidc_provider(&self, id: &str, provider: &OidcProvider) {
        self.ss().providers.insert(
            id.to_owned(),
            Provider {
                authorize_url: provider.authorize_url(),
                token_url: provider.token_url(),
                userinfo_url: provider.userinfo_url(),
                client_id: format!("client-{id}"),
            },
        );
    }

    /// `selfservice.methods.oidc.config.base_redirect_uri` (`None`: the double's own URL, as
    /// Kratos defaults to `serve.public.base_url`).
    pub fn set_oidc_base_redirect_uri(&self, base: Option<&str>) {
        self.ss().base_redirect_uri = base.map(|b| b.trim_end_matches('/').to_owned());
    }

    /// The `redirect_uri` the double gives provider `id`.
    pub fn oidc_redirect_uri(&self, id: &str) -> String {
        let base = self
            .ss()
            .base_redirect_uri
            .clone()
            .unwrap_or_else(|| self.url());
        format!("{base}{CALLBACK_PATH}{id}")
    }

    /// Adds a password account; returns its identity id.
    pub fn add_password_identity(&self, identifier: &str, password: &str) -> String {
        let identity_id = uuid::Uuid::new_v4().to_string();
        self.ss().accounts.insert(
            identifier.to_owned(),
            Account {
                password: password.to_owned(),
                identity_id: identity_id.clone(),
            },
        );
        identity_id
    }

    /// Creates a session for `identity_id` directly (as a login would) under `credential`, and
    /// returns the session JSON. Several sessions of one identity = several calls.
    pub fn add_identity_session(&self, credential: &str, identity_id: &str, email: &str) -> Value {
        create_session(self.shared(), credential, identity_id, email)
    }

    /// Whether whoami would accept `credential` right now.
    pub fn has_session(&self, credential: &str) -> bool {
        lock(&self.shared().sessions).contains_key(credential)
    }

    /// Every self-service request received (method, path and query, headers), in order.
    pub fn selfservice_requests(&self) -> Vec<RecordedRequest> {
        self.ss().requests.clone()
    }

    /// Why the double sent a browser to its error UI, in order (for debugging tests).
    pub fn selfservice_errors(&self) -> Vec<String> {
        self.ss().errors.clone()
    }
}

/// Whether the Kratos double routes this request here.
pub(crate) fn handles(method: &Method, path: &str) -> bool {
    path.starts_with("/self-service/")
        || path == "/sessions/token-exchange"
        || (method == Method::DELETE && (path == "/sessions" || path.starts_with("/sessions/")))
}

// ---------------------------------------------------------------------------------------------
// helpers

/// Serialises like Go's `encoding/json` with HTML escaping (herodot's default).
fn go_json(v: &Value) -> Bytes {
    let s = serde_json::to_string(v).expect("serialize JSON");
    Bytes::from(
        s.replace('&', "\\u0026")
            .replace('<', "\\u003c")
            .replace('>', "\\u003e"),
    )
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    response(status, Some(JSON), go_json(v))
}

fn herodot(code: u16, status: &str, id: Option<&str>, reason: &str, message: &str) -> Value {
    let mut e = json!({ "code": code, "status": status, "reason": reason, "message": message });
    if let Some(id) = id {
        e["id"] = json!(id);
    }
    json!({ "error": e })
}

fn redirect(location: &str) -> Response<Body> {
    let mut resp = response(StatusCode::SEE_OTHER, None, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

fn add_cookie(resp: &mut Response<Body>, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A form or JSON body as flat `name -> value` (JSON objects flattened with dots).
fn body_fields(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
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

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
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

fn session_cookie(ss: &SelfServiceState, name: &str, value: &str) -> String {
    let expires = OffsetDateTime::now_utc() + Duration::from_secs(86400);
    format!(
        "{name}={value}; Path=/; Expires={}; Max-Age=86400; HttpOnly; SameSite=Lax{}",
        http_date(expires),
        cookie_attrs(ss)
    )
}

fn clear_cookie(ss: &SelfServiceState, name: &str) -> String {
    format!(
        "{name}=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; SameSite=Lax{}",
        cookie_attrs(ss)
    )
}

fn create_session(state: &State, credential: &str, identity_id: &str, email: &str) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    let spec = SessionSpec {
        identity_id: identity_id.to_owned(),
        email: email.to_owned(),
        ..SessionSpec::default()
    };
    let body = session_json_at(&state.url, &id, &spec);
    lock(&state.sessions).insert(
        credential.to_owned(),
        Stored {
            body: Bytes::from(serde_json::to_vec(&body).expect("serialize session JSON")),
            identity_id: identity_id.to_owned(),
            session_id: id,
            cache_for: None,
            set_cookie: None,
        },
    );
    body
}

fn stored_session(state: &State, credential: &str) -> Option<Stored> {
    lock(&state.sessions).get(credential).cloned()
}

fn session_value(stored: &Stored) -> Value {
    serde_json::from_slice(&stored.body).unwrap_or(Value::Null)
}

fn new_token() -> String {
    format!("ory_st_{}", uuid::Uuid::new_v4().simple())
}

fn new_cookie_value() -> String {
    format!("MTc{}", uuid::Uuid::new_v4().simple())
}

fn error_redirect(state: &State, why: String) -> Response<Body> {
    let mut ss = lock(&state.selfservice);
    ss.errors.push(why);
    let loc = format!("{}/error?id={}", ss.ui_base, uuid::Uuid::new_v4());
    redirect(&loc)
}

fn input(
    group: &str,
    name: &str,
    ty: &str,
    value: Option<&str>,
    label: Option<(u32, &str)>,
) -> Value {
    let mut attrs = json!({
        "name": name,
        "type": ty,
        "disabled": false,
        "node_type": "input",
    });
    if let Some(v) = value {
        attrs["value"] = json!(v);
    }
    if ty != "submit" {
        attrs["required"] = json!(true);
    }
    let meta = match label {
        Some((id, text)) => json!({ "label": { "id": id, "text": text, "type": "info" } }),
        None => json!({}),
    };
    json!({ "type": "input", "group": group, "attributes": attrs, "messages": [], "meta": meta })
}

fn flow_json(state: &State, flow: &Flow) -> Value {
    let ss = lock(&state.selfservice);
    let mut nodes = vec![input(
        "default",
        "csrf_token",
        "hidden",
        Some(if flow.ty == FlowType::Browser {
            &flow.csrf
        } else {
            ""
        }),
        None,
    )];
    let mut providers: Vec<&String> = ss.providers.keys().collect();
    providers.sort();
    for p in providers {
        let mut n = input("oidc", "provider", "submit", Some(p), None);
        n["meta"] = json!({ "label": {
            "id": 1010002, "text": format!("Sign in with {p}"), "type": "info",
            "context": { "provider": p },
        }});
        nodes.push(n);
    }
    match flow.kind {
        FlowKind::Login => nodes.push(input(
            "default",
            "identifier",
            "text",
            Some(""),
            Some((1070004, "ID")),
        )),
        FlowKind::Registration => nodes.push(input(
            "password",
            "traits.email",
            "email",
            None,
            Some((1070002, "E-Mail")),
        )),
    }
    nodes.push(input(
        "password",
        "password",
        "password",
        None,
        Some((1070001, "Password")),
    ));
    nodes.push(input(
        "password",
        "method",
        "submit",
        Some("password"),
        Some(if flow.kind == FlowKind::Login {
            (1010001, "Sign in")
        } else {
            (1040001, "Sign up")
        }),
    ));
    let messages = match &flow.error {
        Some(e) => json!([{ "id": 4000006, "text": e, "type": "error" }]),
        None => json!([]),
    };
    let mut v = json!({
        "id": flow.id,
        "organization_id": null,
        "type": if flow.ty == FlowType::Browser { "browser" } else { "api" },
        "expires_at": rfc3339(flow.issued_at + Duration::from_secs(3600)),
        "issued_at": rfc3339(flow.issued_at),
        "request_url": flow.request_url,
        "ui": {
            "action": format!("{}/self-service/{}?flow={}", state.url, flow.kind.name(), flow.id),
            "method": "POST",
            "nodes": nodes,
            "messages": messages,
        },
        "state": "choose_method",
    });
    if let Some(r) = &flow.return_to {
        v["return_to"] = json!(r);
    }
    if flow.kind == FlowKind::Login {
        v["created_at"] = json!(rfc3339(flow.issued_at));
        v["updated_at"] = json!(rfc3339(flow.issued_at));
        v["refresh"] = json!(false);
        v["requested_aal"] = json!("aal1");
    }
    if let Some(code) = &flow.init_code {
        v["session_token_exchange_code"] = json!(code);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// routing

pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    lock(&state.selfservice).requests.push(RecordedRequest {
        method: parts.method.to_string(),
        path_and_query: path_and_query.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    });
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &herodot(
                    400,
                    "Bad Request",
                    None,
                    "unreadable body",
                    "The request was malformed or contained invalid parameters",
                ),
            )
        }
    };
    let path = parts.uri.path();
    let query = query_map(parts.uri.query());
    let h = &parts.headers;
    let m = &parts.method;

    let flow_kind = |seg: &str| match seg {
        "login" => Some(FlowKind::Login),
        "registration" => Some(FlowKind::Registration),
        _ => None,
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (m.clone(), segs.as_slice()) {
        (Method::GET, ["self-service", kind, "browser"]) if flow_kind(kind).is_some() => init_flow(
            &state,
            flow_kind(kind).unwrap(),
            FlowType::Browser,
            h,
            &query,
            &path_and_query,
        ),
        (Method::GET, ["self-service", kind, "api"]) if flow_kind(kind).is_some() => init_flow(
            &state,
            flow_kind(kind).unwrap(),
            FlowType::Api,
            h,
            &query,
            &path_and_query,
        ),
        (Method::GET, ["self-service", kind, "flows"]) if flow_kind(kind).is_some() => {
            let flow = query
                .get("id")
                .and_then(|id| lock(&state.selfservice).flows.get(id).cloned())
                .filter(|f| Some(f.kind) == flow_kind(kind));
            match flow {
                Some(f) => json_response(StatusCode::OK, &flow_json(&state, &f)),
                None => not_found(),
            }
        }
        (Method::POST, ["self-service", kind]) if flow_kind(kind).is_some() => {
            submit(&state, flow_kind(kind).unwrap(), h, &query, &body)
        }
        (Method::GET | Method::POST, ["self-service", "methods", "oidc", "callback", provider]) => {
            let mut params = query.clone();
            if *m == Method::POST {
                params.extend(body_fields(h, &body));
            }
            oidc_callback(&state, provider, h, &params).await
        }
        (Method::GET, ["sessions", "token-exchange"]) => token_exchange(&state, &query),
        (Method::GET, ["self-service", "logout", "browser"]) => logout_browser(&state, h, &query),
        (Method::GET, ["self-service", "logout"]) => logout(&state, h, &query),
        (Method::DELETE, ["self-service", "logout", "api"]) => logout_api(&state, h, &body),
        (Method::DELETE, ["sessions"]) => revoke_others(&state, h),
        (Method::DELETE, ["sessions", id]) => revoke_one(&state, h, id),
        _ => not_found(),
    }
}

fn not_found() -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &herodot(
            404,
            "Not Found",
            None,
            "Unable to locate the resource",
            "The requested resource could not be found",
        ),
    )
}

fn caller(state: &State, h: &HeaderMap) -> Option<(String, Stored)> {
    let name = lock(&state.cookie_name).clone();
    let cred = extract_credential(h, &name)?;
    let stored = stored_session(state, &cred)?;
    Some((cred, stored))
}

// ---------------------------------------------------------------------------------------------
// flows

fn init_flow(
    state: &State,
    kind: FlowKind,
    ty: FlowType,
    h: &HeaderMap,
    query: &HashMap<String, String>,
    path_and_query: &str,
) -> Response<Body> {
    let json = ty == FlowType::Api || wants_json(h);
    if ty == FlowType::Browser && query.get("refresh").map(String::as_str) != Some("true") {
        let name = lock(&state.cookie_name).clone();
        let has_session = cookie(h, &name).is_some_and(|c| stored_session(state, &c).is_some());
        if has_session {
            if json {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &herodot(400, "Bad Request", Some("session_already_available"), "A valid session was detected and thus login is not possible. Did you forget to set `?refresh=true`?", "The request was malformed or contained invalid parameters"),
                );
            }
            let ret = query
                .get("return_to")
                .cloned()
                .unwrap_or_else(|| lock(&state.selfservice).default_return_url.clone());
            return redirect(&ret);
        }
    }
    let mut ss = lock(&state.selfservice);
    let init_code = (ty == FlowType::Api
        && query
            .get("return_session_token_exchange_code")
            .map(String::as_str)
            == Some("true"))
    .then(|| uuid::Uuid::new_v4().simple().to_string());
    if let Some(code) = &init_code {
        ss.exchanges.insert(
            code.clone(),
            Exchange {
                return_to_code: uuid::Uuid::new_v4().simple().to_string(),
                token: None,
            },
        );
    }
    let flow = Flow {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        ty,
        csrf: format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
        return_to: query.get("return_to").cloned().filter(|r| !r.is_empty()),
        request_url: format!("{}{}", state.url, path_and_query),
        issued_at: OffsetDateTime::now_utc(),
        init_code,
        error: None,
    };
    ss.flows.insert(flow.id.clone(), flow.clone());
    let csrf_cookie = format!(
        "{}={}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax{}",
        ss.csrf_cookie_name,
        flow.csrf,
        cookie_attrs(&ss)
    );
    let ui = format!("{}/{}?flow={}", ss.ui_base, kind.name(), flow.id);
    drop(ss);
    let mut resp = if json {
        json_response(StatusCode::OK, &flow_json(state, &flow))
    } else {
        redirect(&ui)
    };
    if ty == FlowType::Browser {
        add_cookie(&mut resp, &csrf_cookie);
    }
    resp
}

fn submit(
    state: &State,
    kind: FlowKind,
    h: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response<Body> {
    let Some(flow) = query
        .get("flow")
        .and_then(|id| lock(&state.selfservice).flows.get(id).cloned())
        .filter(|f| f.kind == kind)
    else {
        return not_found();
    };
    let fields = body_fields(h, body);
    let json = flow.ty == FlowType::Api || wants_json(h);
    if flow.ty == FlowType::Browser {
        let cookie_name = lock(&state.selfservice).csrf_cookie_name.clone();
        let ok = fields.get("csrf_token") == Some(&flow.csrf)
            && cookie(h, &cookie_name).as_deref() == Some(flow.csrf.as_str());
        if !ok {
            return json_response(
                StatusCode::FORBIDDEN,
                &herodot(403, "Forbidden", Some("security_csrf_violation"), "Please retry the flow and optionally clear your cookies. The request was rejected to protect you from Cross-Site-Request-Forgery (CSRF) which could cause account takeover, leaking personal information, and other serious security issues.", "the request was rejected to protect you from Cross-Site-Request-Forgery"),
            );
        }
    }
    match fields.get("method").map(String::as_str) {
        Some("password") => password(state, flow, &fields, json),
        Some("oidc") => start_oidc(state, flow, &fields, json),
        _ => fail_flow(
            state,
            flow,
            "Could not find a strategy to handle the request.",
            json,
        ),
    }
}

/// Validation failure: 400 + flow (JSON) or 303 back to the UI (browser form).
fn fail_flow(state: &State, mut flow: Flow, msg: &str, json: bool) -> Response<Body> {
    flow.error = Some(msg.to_owned());
    let mut ss = lock(&state.selfservice);
    ss.flows.insert(flow.id.clone(), flow.clone());
    let ui = format!("{}/{}?flow={}", ss.ui_base, flow.kind.name(), flow.id);
    drop(ss);
    if json {
        json_response(StatusCode::BAD_REQUEST, &flow_json(state, &flow))
    } else {
        redirect(&ui)
    }
}

fn password(
    state: &State,
    flow: Flow,
    fields: &HashMap<String, String>,
    json: bool,
) -> Response<Body> {
    let pw = fields.get("password").cloned().unwrap_or_default();
    let (identifier, identity_id) = match flow.kind {
        FlowKind::Login => {
            let id = fields.get("identifier").cloned().unwrap_or_default();
            let acct = lock(&state.selfservice).accounts.get(&id).cloned();
            match acct {
                Some(a) if !pw.is_empty() && a.password == pw => (id, a.identity_id),
                _ => {
                    return fail_flow(state, flow, "The provided credentials are invalid, check for spelling mistakes in your password or username, email address, or phone number.", json)
                }
            }
        }
        FlowKind::Registration => {
            let email = fields.get("traits.email").cloned().unwrap_or_default();
            if email.is_empty() || pw.is_empty() {
                return fail_flow(state, flow, "Property email is missing.", json);
            }
            let mut ss = lock(&state.selfservice);
            if ss.accounts.contains_key(&email) {
                drop(ss);
                return fail_flow(state, flow, "An account with the same identifier (email, phone, username, ...) exists already.", json);
            }
            let identity_id = uuid::Uuid::new_v4().to_string();
            ss.accounts.insert(
                email.clone(),
                Account {
                    password: pw,
                    identity_id: identity_id.clone(),
                },
            );
            (email, identity_id)
        }
    };
    finish_login(state, &flow, &identity_id, &identifier, json)
}

/// The session exists: answer like Kratos does at the end of a successful flow.
fn finish_login(
    state: &State,
    flow: &Flow,
    identity_id: &str,
    email: &str,
    json: bool,
) -> Response<Body> {
    lock(&state.selfservice).flows.remove(&flow.id);
    match flow.ty {
        FlowType::Api => {
            let token = new_token();
            let session = create_session(state, &token, identity_id, email);
            json_response(
                StatusCode::OK,
                &json!({ "session_token": token, "session": session }),
            )
        }
        FlowType::Browser => {
            let value = new_cookie_value();
            let session = create_session(state, &value, identity_id, email);
            let name = lock(&state.cookie_name).clone();
            let ss = lock(&state.selfservice);
            let set = session_cookie(&ss, &name, &value);
            let ret = flow
                .return_to
                .clone()
                .unwrap_or_else(|| ss.default_return_url.clone());
            drop(ss);
            let mut resp = if json {
                json_response(
                    StatusCode::OK,
                    &json!({
                        "session": session,
                        "continue_with": [{ "action": "redirect_browser_to", "redirect_browser_to": ret }],
                    }),
                )
            } else {
                redirect(&ret)
            };
            add_cookie(&mut resp, &set);
            resp
        }
    }
}

fn start_oidc(
    state: &State,
    flow: Flow,
    fields: &HashMap<String, String>,
    json: bool,
) -> Response<Body> {
    let provider_id = fields.get("provider").cloned().unwrap_or_default();
    let mut ss = lock(&state.selfservice);
    let Some(provider) = ss.providers.get(&provider_id).cloned() else {
        drop(ss);
        return fail_flow(
            state,
            flow,
            "Unable to find the OpenID Connect provider.",
            json,
        );
    };
    let base = ss
        .base_redirect_uri
        .clone()
        .unwrap_or_else(|| state.url.clone());
    let redirect_uri = format!("{base}{CALLBACK_PATH}{provider_id}");
    let st = uuid::Uuid::new_v4().simple().to_string();
    let continuity =
        (flow.ty == FlowType::Browser).then(|| uuid::Uuid::new_v4().simple().to_string());
    ss.pending.insert(
        st.clone(),
        PendingOidc {
            flow_id: flow.id.clone(),
            provider: provider_id,
            redirect_uri: redirect_uri.clone(),
            continuity: continuity.clone(),
        },
    );
    let authorize = format!(
        "{}?client_id={}&redirect_uri={}&response_type=code&scope=openid+email+profile&state={}",
        provider.authorize_url,
        enc(&provider.client_id),
        enc(&redirect_uri),
        st
    );
    let continuity_cookie = continuity.map(|c| {
        format!(
            "{CONTINUITY_COOKIE}={c}; Path=/; Max-Age=600; HttpOnly; SameSite=Lax{}",
            cookie_attrs(&ss)
        )
    });
    drop(ss);
    let mut resp = if json {
        let mut body = herodot(
            422,
            "Unprocessable Entity",
            Some("browser_location_change_required"),
            &format!("In order to complete this flow please redirect the browser to: {authorize}"),
            "browser location change required",
        );
        body["redirect_browser_to"] = json!(authorize);
        json_response(StatusCode::UNPROCESSABLE_ENTITY, &body)
    } else {
        redirect(&authorize)
    };
    if let Some(c) = continuity_cookie {
        add_cookie(&mut resp, &c);
    }
    resp
}

async fn oidc_callback(
    state: &State,
    provider_id: &str,
    h: &HeaderMap,
    params: &HashMap<String, String>,
) -> Response<Body> {
    let pending = params
        .get("state")
        .and_then(|s| lock(&state.selfservice).pending.remove(s));
    let Some(pending) = pending else {
        return error_redirect(state, "oidc callback: unknown or reused state".into());
    };
    if pending.provider != provider_id {
        return error_redirect(
            state,
            "oidc callback: state belongs to another provider".into(),
        );
    }
    let (flow, provider) = {
        let ss = lock(&state.selfservice);
        (
            ss.flows.get(&pending.flow_id).cloned(),
            ss.providers.get(provider_id).cloned(),
        )
    };
    let (Some(flow), Some(provider)) = (flow, provider) else {
        return error_redirect(state, "oidc callback: flow or provider gone".into());
    };
    if let Some(expected) = &pending.continuity {
        if cookie(h, CONTINUITY_COOKIE).as_deref() != Some(expected.as_str()) {
            return error_redirect(
                state,
                "oidc callback: continuity cookie missing or wrong".into(),
            );
        }
    }
    let Some(code) = params.get("code") else {
        return error_redirect(state, "oidc callback: no code".into());
    };
    // The token request repeats the redirect_uri given to /authorize, byte for byte.
    let form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&client_secret=secret",
        enc(code),
        enc(&pending.redirect_uri),
        enc(&provider.client_id)
    );
    let token = match http_call(
        "POST",
        &provider.token_url,
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .await
    {
        Ok((200, body)) => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_owned)),
        Ok((status, body)) => {
            return error_redirect(
                state,
                format!(
                    "oidc token request: {status} {}",
                    String::from_utf8_lossy(&body)
                ),
            )
        }
        Err(e) => return error_redirect(state, format!("oidc token request: {e}")),
    };
    let Some(token) = token else {
        return error_redirect(state, "oidc token response without access_token".into());
    };
    let auth = format!("Bearer {token}");
    let info = match http_call(
        "GET",
        &provider.userinfo_url,
        &[("authorization", &auth)],
        b"",
    )
    .await
    {
        Ok((200, body)) => serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        Ok((status, _)) => return error_redirect(state, format!("oidc userinfo: {status}")),
        Err(e) => return error_redirect(state, format!("oidc userinfo: {e}")),
    };
    let (Some(sub), email) = (
        info["sub"].as_str().map(str::to_owned),
        info["email"]
            .as_str()
            .unwrap_or("social@example.com")
            .to_owned(),
    ) else {
        return error_redirect(state, "oidc userinfo without sub".into());
    };
    let (identity_id, email) = lock(&state.selfservice)
        .social
        .entry((provider_id.to_owned(), sub))
        .or_insert_with(|| (uuid::Uuid::new_v4().to_string(), email))
        .clone();

    match flow.ty {
        FlowType::Browser => {
            let mut resp = finish_login(state, &flow, &identity_id, &email, false);
            let ss = lock(&state.selfservice);
            add_cookie(&mut resp, &clear_cookie(&ss, CONTINUITY_COOKIE));
            resp
        }
        FlowType::Api => {
            let session_token = new_token();
            create_session(state, &session_token, &identity_id, &email);
            let mut ss = lock(&state.selfservice);
            ss.flows.remove(&flow.id);
            let ret = flow
                .return_to
                .clone()
                .unwrap_or_else(|| ss.default_return_url.clone());
            let exchange = flow
                .init_code
                .as_ref()
                .and_then(|c| ss.exchanges.get_mut(c));
            match exchange {
                Some(x) => {
                    x.token = Some(session_token);
                    let sep = if ret.contains('?') { '&' } else { '?' };
                    redirect(&format!("{ret}{sep}code={}", x.return_to_code))
                }
                None => redirect(&ret),
            }
        }
    }
}

fn token_exchange(state: &State, query: &HashMap<String, String>) -> Response<Body> {
    let (Some(init), Some(rtc)) = (query.get("init_code"), query.get("return_to_code")) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &herodot(
                400,
                "Bad Request",
                None,
                "init_code and return_to_code query params are required",
                "The request was malformed or contained invalid parameters",
            ),
        );
    };
    let token = {
        let mut ss = lock(&state.selfservice);
        match ss.exchanges.get(init) {
            Some(x) if &x.return_to_code == rtc && x.token.is_some() => {
                ss.exchanges.remove(init).and_then(|x| x.token)
            }
            _ => None,
        }
    };
    let Some(token) = token else {
        return not_found();
    };
    match stored_session(state, &token) {
        Some(s) => json_response(
            StatusCode::OK,
            &json!({ "session_token": token, "session": session_value(&s) }),
        ),
        None => not_found(),
    }
}

// ---------------------------------------------------------------------------------------------
// logout and revocation

fn logout_browser(state: &State, h: &HeaderMap, query: &HashMap<String, String>) -> Response<Body> {
    let name = lock(&state.cookie_name).clone();
    let Some(cred) = cookie(h, &name).filter(|c| stored_session(state, c).is_some()) else {
        return response(StatusCode::UNAUTHORIZED, Some(JSON), UNAUTHORIZED_BODY);
    };
    let token = uuid::Uuid::new_v4().simple().to_string();
    lock(&state.selfservice)
        .logout_tokens
        .insert(token.clone(), cred);
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

fn logout(state: &State, h: &HeaderMap, query: &HashMap<String, String>) -> Response<Body> {
    let json = wants_json(h);
    let cred = query
        .get("token")
        .and_then(|t| lock(&state.selfservice).logout_tokens.remove(t));
    let Some(cred) = cred else {
        if json {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &herodot(
                    401,
                    "Unauthorized",
                    None,
                    "No active session was found in this request.",
                    "The request could not be authorized",
                ),
            );
        }
        return error_redirect(state, "logout: unknown logout token".into());
    };
    lock(&state.sessions).remove(&cred);
    let name = lock(&state.cookie_name).clone();
    let ss = lock(&state.selfservice);
    let clear = clear_cookie(&ss, &name);
    let ret = query
        .get("return_to")
        .cloned()
        .unwrap_or_else(|| ss.default_return_url.clone());
    drop(ss);
    let mut resp = if json {
        response(StatusCode::NO_CONTENT, None, Bytes::new())
    } else {
        redirect(&ret)
    };
    add_cookie(&mut resp, &clear);
    resp
}

fn logout_api(state: &State, h: &HeaderMap, body: &[u8]) -> Response<Body> {
    let token = body_fields(h, body).remove("session_token").or_else(|| {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["session_token"].as_str().map(str::to_owned))
    });
    let removed = token.is_some_and(|t| lock(&state.sessions).remove(&t).is_some());
    if removed {
        response(StatusCode::NO_CONTENT, None, Bytes::new())
    } else {
        json_response(
            StatusCode::FORBIDDEN,
            &herodot(403, "Forbidden", None, "The provided Ory Session Token could not be found, is invalid, or otherwise malformed.", "The requested action was forbidden"),
        )
    }
}

fn revoke_others(state: &State, h: &HeaderMap) -> Response<Body> {
    let Some((cred, me)) = caller(state, h) else {
        return response(StatusCode::UNAUTHORIZED, Some(JSON), UNAUTHORIZED_BODY);
    };
    let mut sessions = lock(&state.sessions);
    let before = sessions.len();
    sessions.retain(|c, s| *c == cred || s.identity_id != me.identity_id);
    let count = before - sessions.len();
    drop(sessions);
    json_response(StatusCode::OK, &json!({ "count": count }))
}

fn revoke_one(state: &State, h: &HeaderMap, id: &str) -> Response<Body> {
    let Some((_, me)) = caller(state, h) else {
        return response(StatusCode::UNAUTHORIZED, Some(JSON), UNAUTHORIZED_BODY);
    };
    if me.session_id == id {
        return json_response(
            StatusCode::BAD_REQUEST,
            &herodot(400, "Bad Request", None, "You are not allowed to revoke the current session using this endpoint, use the logout flow instead.", "The request was malformed or contained invalid parameters"),
        );
    }
    let mut sessions = lock(&state.sessions);
    let before = sessions.len();
    sessions.retain(|_, s| !(s.session_id == id && s.identity_id == me.identity_id));
    let removed = before != sessions.len();
    drop(sessions);
    if removed {
        response(StatusCode::NO_CONTENT, None, Bytes::new())
    } else {
        not_found()
    }
}

// ---------------------------------------------------------------------------------------------
// a tiny HTTP/1.1 client for the OIDC back channel (loopback, plain HTTP)

async fn http_call(
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
