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
//! | `GET /self-service/{login,registration}/browser[?return_to=..]` | `303` to `<ui>/{login,registration}?flow=<id>`; `200` flow JSON with `Accept: application/json`; `Set-Cookie: csrf_token_<hash>=..` when the browser has no csrf cookie yet (its value is the flows' `csrf_token`); `303` to the return URL (`400 session_already_available` as JSON) when a session cookie is already valid |
//! | `GET /self-service/{login,registration}/api[?return_session_token_exchange_code=true&return_to=..]` | `200` flow JSON (type `api`; `session_token_exchange_code` when asked, in this answer only) |
//! | `GET /self-service/{login,registration}/flows?id=` | `200` flow JSON; `404` |
//! | `POST /self-service/{login,registration}?flow=` | form or JSON body. Browser flows need `csrf_token` = the csrf cookie (else `403 security_csrf_violation`). `method=password` (`identifier`/`traits.email` + `password`): API login `200 {session_token, session, continue_with: null}`, API registration `200 {session_token, session, identity, continue_with: [set_ory_session_token]}`; browser `303` to `return_to` + session cookie + a new csrf cookie, or `200 {session, [identity,] continue_with: [redirect_browser_to]}` with JSON; failures `400` + the flow with `ui.messages` (browser forms: `303` to the UI). `method=oidc&provider=X`: API flows and JSON browser requests `422 browser_location_change_required` (`redirect_browser_to` = the provider's authorize URL); browser forms `303` to it + `ory_kratos_continuity` cookie |
//! | `GET\|POST /self-service/methods/oidc/callback/<provider>?code=&state=` | exchanges the code at the provider (`POST /token` with the same `redirect_uri`, `GET /userinfo`), creates the session; browser: `303` to `return_to` + `Set-Cookie: <session cookie>=..; Path=/; HttpOnly; SameSite=Lax` (`Domain`, `Secure` when configured); native: `303` to `return_to` with `code=<return_to_code>` appended; errors: `303` to `<ui>/error?id=..` |
//! | `GET /sessions/token-exchange?init_code=&return_to_code=` | `200 {session_token, session}` once; a code missing: `400`; unknown codes or no session yet: `404` |
//! | `GET /self-service/logout/browser[?return_to=]` | session cookie required: `200 {logout_url, logout_token}` (one token per session, whatever `Accept` says); without: `401 session_inactive` (JSON) or `303` to the error UI |
//! | `GET /self-service/logout?token=[&return_to=]` | the session cookie and its logout token: revokes the session, `303` to `return_to` or the after-logout URL (`204` with JSON), deleting the session cookie and renewing the csrf cookie; no live session: `401 session_inactive` (JSON); another session's token: `403` (JSON); no token: `400` (JSON); browsers get `303` to the error UI instead |
//! | `DELETE /self-service/logout/api` `{"session_token":..}` | `204` and revoked (also when it was revoked already); unknown token `403`; no body `400` |
//! | `DELETE /sessions` | revokes every *other* session of the caller's identity: `200 {"count": n}`; `401` |
//! | `DELETE /sessions/<id>` | revokes that session if it is the caller identity's: `204` (also for unknown ids or another identity's, which stay); the caller's own: `400`; not a UUID: `400`; `401` |
//!
//! Every answer carries `Cache-Control: private, no-cache, no-store, must-revalidate` and
//! `Vary: Cookie`; redirects answering `GET` carry Go's `text/html` "See Other" link body; error
//! bodies are `application/json` (herodot's errors, no charset), documents
//! `application/json; charset=utf-8`. The browser endpoints (flow lookups, logout) hand out a csrf
//! cookie to a browser that has none, like Kratos's CSRF middleware. `tests/real_ory/doubles.rs`
//! holds all this against real Kratos v1.3.1.
use std::collections::HashMap;
use std::sync::Arc;

use http::header::{HeaderValue, CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;
use time::OffsetDateTime;

use crate::kratos::{
    extract_credential, KratosDouble, RecordedRequest, State, Stored, KRATOS_CACHE_CONTROL,
};
use crate::oidc::OidcProvider;
use crate::server::{lock, Body};

mod flows;
mod logout;
mod social;
mod wire;

use wire::{cookie, create_session, error_response, query_map, stored_session};

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
    /// A message (id, text) to show in `ui.messages` (after a failed submission).
    error: Option<(u32, String)>,
    /// The identifier a failed login submitted (shown again in the form).
    identifier: Option<String>,
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
    /// Whether its address is verified (accounts the double is given are; registered ones are
    /// not, as after a real registration without a verification flow).
    verified: bool,
}

/// The self-service part of the double's state (kept inside the Kratos double).
pub(crate) struct SelfServiceState {
    flows: HashMap<String, Flow>,
    providers: HashMap<String, Provider>,
    base_redirect_uri: Option<String>,
    ui_base: String,
    default_return_url: String,
    logout_return_url: Option<String>,
    /// `Ory-Session-Cache-For` of the sessions the flows create.
    session_cache_for: Option<u64>,
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
            logout_return_url: None,
            session_cache_for: None,
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

    /// `selfservice.flows.logout.after.default_browser_return_url` (`None`: the default return
    /// URL).
    pub fn set_logout_return_url(&self, url: Option<&str>) {
        self.ss().logout_return_url = url.map(str::to_owned);
    }

    /// `Ory-Session-Cache-For: n` on whoami answers for the sessions the self-service flows
    /// create (Kratos with `feature_flags.cacheable_sessions`: its max age). Default `None`.
    pub fn set_session_cache_for(&self, seconds: Option<u64>) {
        self.ss().session_cache_for = seconds;
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
                verified: true,
            },
        );
        identity_id
    }

    /// Creates a session for `identity_id` directly (as a login would) under `credential`, and
    /// returns the session JSON. Several sessions of one identity = several calls.
    pub fn add_identity_session(&self, credential: &str, identity_id: &str, email: &str) -> Value {
        let who = wire::Who {
            identity_id,
            email,
            verified: true,
        };
        create_session(self.shared(), credential, &who, Some("sessiongate-testkit"))
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
// routing

pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path_and_query = crate::server::path_and_query(&parts.uri);
    lock(&state.selfservice).requests.push(RecordedRequest {
        method: parts.method.to_string(),
        path_and_query: path_and_query.clone(),
        headers: crate::server::header_pairs(&parts.headers),
    });
    let mut resp = match body.collect().await {
        Ok(body) => route(&state, &parts, &path_and_query, &body.to_bytes()).await,
        Err(_) => error_response(
            400,
            None,
            Some("unreadable body"),
            "The request was malformed or contained invalid parameters",
        ),
    };
    finish(
        &state,
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        &mut resp,
    );
    resp
}

async fn route(
    state: &State,
    parts: &http::request::Parts,
    path_and_query: &str,
    body: &[u8],
) -> Response<Body> {
    let query = query_map(parts.uri.query());
    let h = &parts.headers;
    let m = &parts.method;
    let flow_kind = |seg: &str| match seg {
        "login" => Some(FlowKind::Login),
        "registration" => Some(FlowKind::Registration),
        _ => None,
    };
    let segs: Vec<&str> = parts
        .uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    match (m.clone(), segs.as_slice()) {
        (Method::GET, ["self-service", kind, ty @ ("browser" | "api")])
            if flow_kind(kind).is_some() =>
        {
            let ty = if *ty == "api" {
                FlowType::Api
            } else {
                FlowType::Browser
            };
            let kind = flow_kind(kind).expect("guarded");
            flows::init_flow(state, kind, ty, h, &query, path_and_query)
        }
        (Method::GET, ["self-service", kind, "flows"]) if flow_kind(kind).is_some() => {
            let flow = query
                .get("id")
                .and_then(|id| lock(&state.selfservice).flows.get(id).cloned())
                .filter(|f| Some(f.kind) == flow_kind(kind));
            match flow {
                Some(f) => wire::json_response(StatusCode::OK, &flows::flow_json(state, &f, false)),
                None => not_found(),
            }
        }
        (Method::POST, ["self-service", kind]) if flow_kind(kind).is_some() => {
            flows::submit(state, flow_kind(kind).unwrap(), h, &query, body)
        }
        (Method::GET | Method::POST, ["self-service", "methods", "oidc", "callback", provider]) => {
            let mut params = query.clone();
            if *m == Method::POST {
                params.extend(wire::body_fields(h, body));
            }
            social::oidc_callback(state, provider, h, &params).await
        }
        (Method::GET, ["sessions", "token-exchange"]) => social::token_exchange(state, &query),
        (Method::GET, ["self-service", "logout", "browser"]) => {
            logout::logout_browser(state, h, &query)
        }
        (Method::GET, ["self-service", "logout"]) => logout::logout(state, h, &query),
        (Method::DELETE, ["self-service", "logout", "api"]) => logout::logout_api(state, h, body),
        (Method::DELETE, ["sessions"]) => logout::revoke_others(state, h),
        (Method::DELETE, ["sessions", id]) => logout::revoke_one(state, h, id),
        _ => not_found(),
    }
}

/// What Kratos's middleware adds to every self-service answer: `Cache-Control`, `Vary: Cookie`,
/// Go's "See Other" body on redirects answering `GET`, and a csrf cookie for a browser that has
/// none on the endpoints Kratos's CSRF middleware does not exempt (flow lookups, logout).
fn finish(state: &State, method: &Method, path: &str, h: &HeaderMap, resp: &mut Response<Body>) {
    let headers = resp.headers_mut();
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(KRATOS_CACHE_CONTROL),
    );
    headers.insert(VARY, HeaderValue::from_static("Cookie"));
    if resp.status() == StatusCode::SEE_OTHER && (method == Method::GET || method == Method::HEAD) {
        wire::see_other_body(resp);
    }
    let csrf_middleware = method == Method::GET
        && (path.ends_with("/flows") || path.starts_with("/self-service/logout"))
        && path != "/self-service/logout/api";
    let ss = lock(&state.selfservice);
    let sets_csrf = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .any(|c| c.as_bytes().starts_with(ss.csrf_cookie_name.as_bytes()));
    if csrf_middleware && !sets_csrf && cookie(h, &ss.csrf_cookie_name).is_none() {
        let c = wire::csrf_cookie(&ss, &wire::new_csrf_value());
        drop(ss);
        wire::add_cookie(resp, &c);
    }
}

/// A flow or route that does not exist (herodot's `ErrNotFound`, no `reason`).
fn not_found() -> Response<Body> {
    error_response(404, None, None, "Unable to locate the resource")
}

fn caller(state: &State, h: &HeaderMap) -> Option<(String, Stored)> {
    let name = lock(&state.cookie_name).clone();
    let cred = extract_credential(h, &name)?;
    let stored = stored_session(state, &cred)?;
    Some((cred, stored))
}
