//! A stand-in for Ory Kratos's public API: `GET /sessions/whoami` in Kratos's real wire format,
//! plus `/health/ready` and `/health/alive`. The self-service endpoints (login, registration,
//! OIDC, logout, token exchange, session revocation) live in [`crate::selfservice`] and share
//! this double's session table.
//!
//! What it mirrors from Kratos (`session/handler.go`, `session/manager_http.go` upstream):
//!
//! * credential lookup: a non-empty `X-Session-Token` wins and nothing else is looked at; else
//!   the session cookie (name from [`KratosDouble::set_cookie_name`], default
//!   `ory_kratos_session`); else `Authorization: Bearer <token>` (scheme case-insensitive,
//!   exactly two space-separated parts). Tokens and cookie values share one table.
//! * 200: the session JSON (`application/json; charset=utf-8`), `Cache-Control: private, no-cache,
//!   no-store, must-revalidate` and `Vary: Cookie` (on every answer, whatever the method, as
//!   Kratos v1.3.1 does), `X-Kratos-Authenticated-Identity-Id`, optionally `Ory-Session-Cache-For`
//!   and `Set-Cookie`.
//! * 401 with Kratos's exact body; 403 `session_aal2_required` with `redirect_browser_to` at the
//!   top level and in `error.details`; 429 with `Retry-After`; 500. Kratos's own errors are
//!   herodot's: `Content-Type: application/json` without a charset.
//! * the whoami route matches any method (as Kratos registers it) and one trailing slash.
//!
//! Like Kratos, the double does not care which method is used; it records it so tests can check
//! that the proxy only ever sends `GET`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, SET_COOKIE, VARY};
use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::sync::Mutex as AsyncMutex;

use crate::server::{self, lock, Body, ConnCtx, CutAt, Running};

mod session;

pub use session::{rfc3339, session_json, session_json_at, SessionSpec};

/// Kratos's default session cookie name (self-hosted).
pub const DEFAULT_COOKIE_NAME: &str = "ory_kratos_session";
/// `Cache-Control` that Kratos sets on every answer of its public API (not on `/health/*`).
pub const KRATOS_CACHE_CONTROL: &str = "private, no-cache, no-store, must-revalidate";
/// The exact body Kratos sends with a whoami 401.
pub const UNAUTHORIZED_BODY: &str = r#"{"error":{"code":401,"status":"Unauthorized","reason":"No valid session credentials found in the request.","message":"The request could not be authorized"}}"#;
/// The base URL [`session_json`] uses for `identity.schema_url` (Kratos's default public port).
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:4433";

/// `Content-Type` of Kratos's documents (sessions, flows).
pub(crate) const JSON: &str = "application/json; charset=utf-8";
/// `Content-Type` of Kratos's (herodot's) error bodies.
pub(crate) const ERROR_JSON: &str = "application/json";
const AAL2_REASON: &str = "An active session was found but it does not fulfill the requested Authenticator Assurance Level. Please verify yourself with a second factor to resolve this issue.";
const AAL2_MESSAGE: &str = "Session does not fulfill the requested Authenticator Assurance Level";

/// How the double answers whoami calls (set with [`KratosDouble::set_behavior`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Behavior {
    /// Look the credential up: 200 with the session, or 401.
    #[default]
    Normal,
    /// 401 with Kratos's body, whatever the credential.
    Status401,
    /// 403 `session_aal2_required` for a known credential (an unknown one is still 401, as in
    /// Kratos, which checks the AAL only after finding the session).
    Aal2Required,
    /// 429 with `Retry-After: retry_after` and a JSON error body (Ory Network's rate limiter).
    RateLimited { retry_after: u64 },
    /// 500 with a herodot-style JSON error body.
    ServerError,
    /// 200 claiming `application/json` with a body that is not JSON.
    Garbage,
    /// 200 with JSON that is not a session (`{"foo":1}`).
    InvalidSession,
    /// Never answers (the request is held until [`KratosDouble::stop`]).
    Hang,
    /// Sends the status line, all headers (with the full `Content-Length`) and the first half of
    /// the body of the answer `Normal` would give, then closes the TCP connection.
    CloseMidResponse,
    /// Sends the status line and part of the headers, then closes the TCP connection.
    CloseMidHeaders,
}

/// One whoami request as the double received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path_and_query: String,
    /// Lowercased names, in the order hyper reports them (repeated names are grouped).
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) body: Bytes,
    pub(crate) identity_id: String,
    /// The session's `id` (so self-service revocations can find it).
    pub(crate) session_id: String,
    pub(crate) cache_for: Option<u64>,
    pub(crate) set_cookie: Option<String>,
}

pub(crate) struct State {
    addr: SocketAddr,
    pub(crate) url: String,
    /// credential (token or cookie value) -> session; shared with [`crate::selfservice`].
    pub(crate) sessions: Mutex<HashMap<String, Stored>>,
    /// Credentials of revoked sessions (Kratos keeps them, inactive: an API logout of one is
    /// still `204`).
    pub(crate) revoked: Mutex<HashSet<String>>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    behavior: Mutex<Behavior>,
    delay: Mutex<Duration>,
    answer_delay: Mutex<Duration>,
    pub(crate) cookie_name: Mutex<String>,
    negative_cache_for: Mutex<Option<u64>>,
    running: AsyncMutex<Option<Running>>,
    /// Self-service flows, logout tokens, OIDC providers ([`crate::selfservice`]).
    pub(crate) selfservice: Mutex<crate::selfservice::SelfServiceState>,
}

/// The Kratos double. Cheap to clone; all clones share one server and one state.
#[derive(Clone)]
pub struct KratosDouble {
    state: Arc<State>,
}

impl std::fmt::Debug for KratosDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KratosDouble")
            .field("url", &self.state.url)
            .finish_non_exhaustive()
    }
}

impl KratosDouble {
    /// Starts on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> KratosDouble {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the Kratos double on 127.0.0.1:0")
    }

    /// Starts a fresh double (no sessions) on `addr`, e.g. the address of one that was stopped.
    pub async fn start_on(addr: SocketAddr) -> io::Result<KratosDouble> {
        let listener = server::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            addr,
            url: format!("http://{addr}"),
            sessions: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashSet::new()),
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            behavior: Mutex::new(Behavior::Normal),
            delay: Mutex::new(Duration::ZERO),
            answer_delay: Mutex::new(Duration::ZERO),
            cookie_name: Mutex::new(DEFAULT_COOKIE_NAME.to_owned()),
            negative_cache_for: Mutex::new(None),
            running: AsyncMutex::new(None),
            selfservice: Mutex::new(crate::selfservice::SelfServiceState::default()),
        });
        let double = KratosDouble { state };
        *double.state.running.lock().await = Some(double.serve(listener));
        Ok(double)
    }

    fn serve(&self, listener: tokio::net::TcpListener) -> Running {
        let state = self.state.clone();
        server::serve(listener, move |req, ctx| handle(state.clone(), req, ctx))
    }

    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    pub(crate) fn shared(&self) -> &Arc<State> {
        &self.state
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        self.state.url.clone()
    }

    /// Registers `credential` (a session token or a cookie value: one table) and returns the
    /// session JSON the double will serve for it, byte for byte.
    pub fn add_session(&self, credential: &str, spec: SessionSpec) -> Value {
        let id = uuid::Uuid::new_v4().to_string();
        let body = session_json_at(&self.state.url, &id, &spec);
        let stored = Stored {
            body: Bytes::from(serde_json::to_vec(&body).expect("serialize session JSON")),
            identity_id: spec.identity_id,
            session_id: id,
            cache_for: spec.cache_for,
            set_cookie: spec.set_cookie,
        };
        lock(&self.state.sessions).insert(credential.to_owned(), stored);
        body
    }

    /// Makes `alias` a second credential of the session `existing` belongs to (Kratos re-issuing
    /// the session cookie on refresh or step-up: a new value, the same session). `false` when
    /// `existing` is unknown.
    pub fn add_credential_alias(&self, existing: &str, alias: &str) -> bool {
        let mut sessions = lock(&self.state.sessions);
        let Some(stored) = sessions.get(existing).cloned() else {
            return false;
        };
        sessions.insert(alias.to_owned(), stored);
        true
    }

    /// Revokes `credential`: later whoami calls with it get 401.
    pub fn remove_session(&self, credential: &str) {
        if lock(&self.state.sessions).remove(credential).is_some() {
            lock(&self.state.revoked).insert(credential.to_owned());
        }
    }

    /// Number of whoami requests received (any outcome, including ones still delayed or hanging).
    /// The most whoami requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn whoami_calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Resets the call counter and the recorded requests.
    pub fn reset_calls(&self) {
        self.state.calls.store(0, Ordering::SeqCst);
        lock(&self.state.requests).clear();
    }

    /// Every whoami request received since start or the last [`reset_calls`](Self::reset_calls).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Applies to every whoami request that arrives after this call.
    pub fn set_behavior(&self, b: Behavior) {
        *lock(&self.state.behavior) = b;
    }

    /// Delay added before answering a whoami request (`Duration::ZERO` = none).
    pub fn set_delay(&self, d: Duration) {
        *lock(&self.state.delay) = d;
    }

    /// Delay added *after* the whoami answer was decided, before it is sent (`Duration::ZERO` =
    /// none): an answer that was true when Kratos looked and arrives after a logout, as over a
    /// slow network.
    pub fn set_answer_delay(&self, d: Duration) {
        *lock(&self.state.answer_delay) = d;
    }

    /// Name of the session cookie looked up in `Cookie` (default `ory_kratos_session`; Ory
    /// Network uses `ory_session_<slug>`).
    pub fn set_cookie_name(&self, name: &str) {
        *lock(&self.state.cookie_name) = name.to_owned();
    }

    /// Kratos with `feature_flags.cacheable_sessions` adds `Ory-Session-Cache-For: 60` to a 401
    /// when the request carried no credential at all. `Some(n)` turns that on with `n` seconds.
    pub fn set_negative_cache_for(&self, seconds: Option<u64>) {
        *lock(&self.state.negative_cache_for) = seconds;
    }

    /// Stops accepting, closes the listener (new connections are refused) and closes every
    /// open connection, including keep-alive ones and requests held by [`Behavior::Hang`].
    /// Idempotent.
    pub async fn stop(&self) {
        let running = self.state.running.lock().await.take();
        if let Some(running) = running {
            running.stop().await;
        }
    }

    /// Listens again on the same address after [`stop`](Self::stop), keeping sessions,
    /// counters, behavior and delay. No-op if already running.
    pub async fn restart(&self) -> io::Result<()> {
        let mut running = self.state.running.lock().await;
        if running.is_none() {
            let listener = server::bind(self.state.addr)?;
            *running = Some(self.serve(listener));
        }
        Ok(())
    }
}

pub(crate) fn response(
    status: StatusCode,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Body::new(body.into()));
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_str(ct).expect("content type"),
        );
    }
    resp
}

/// A herodot-style `{"error": {code, status, message}}` body.
pub(crate) fn json_error(code: u16, status: &str, message: &str) -> Bytes {
    Bytes::from(
        serde_json::to_vec(
            &json!({ "error": { "code": code, "status": status, "message": message } }),
        )
        .expect("serialize error JSON"),
    )
}

async fn handle(state: Arc<State>, req: Request<Incoming>, ctx: ConnCtx) -> Response<Body> {
    let path = req.uri().path();
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    match path {
        "/sessions/whoami" => whoami(state, req, ctx).await,
        "/health/ready" | "/health/alive" => {
            response(StatusCode::OK, Some(JSON), r#"{"status":"ok"}"#)
        }
        // Self-service flows, logout, token exchange, session revocation.
        _ if crate::selfservice::handles(req.method(), path) => {
            crate::selfservice::handle(state, req).await
        }
        _ => response(
            StatusCode::NOT_FOUND,
            Some(ERROR_JSON),
            json_error(
                404,
                "Not Found",
                "The requested resource could not be found",
            ),
        ),
    }
}

/// The credential Kratos would use (`None`: the request carried none it would look at).
pub(crate) fn extract_credential(headers: &HeaderMap, cookie_name: &str) -> Option<String> {
    // Go's Header.Get: the first value.
    if let Some(token) = headers.get("x-session-token").map(|v| v.as_bytes()) {
        if !token.is_empty() {
            return Some(String::from_utf8_lossy(token).into_owned());
        }
    }
    // Go's Request.Cookie: the first cookie with that name across all Cookie headers.
    for value in headers.get_all(http::header::COOKIE) {
        let value = String::from_utf8_lossy(value.as_bytes());
        for part in value.split(';') {
            let Some((name, val)) = part.trim().split_once('=') else {
                continue;
            };
            if name == cookie_name {
                let val = val
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(val);
                if val.is_empty() {
                    // Kratos cannot decode an empty cookie and falls back to the bearer token.
                    break;
                }
                return Some(val.to_owned());
            }
        }
    }
    let auth = headers.get(http::header::AUTHORIZATION)?;
    let auth = String::from_utf8_lossy(auth.as_bytes());
    let parts: Vec<&str> = auth.split(' ').collect();
    if parts.len() == 2 && parts[0].eq_ignore_ascii_case("bearer") {
        return Some(parts[1].to_owned());
    }
    None
}

/// Counts a whoami request as in flight until dropped (also when the client goes away).
struct InFlight(Arc<State>);

impl InFlight {
    fn enter(state: &Arc<State>) -> InFlight {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn whoami(state: Arc<State>, req: Request<Incoming>, ctx: ConnCtx) -> Response<Body> {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(&state);
    lock(&state.requests).push(RecordedRequest {
        method: req.method().to_string(),
        path_and_query: crate::server::path_and_query(req.uri()),
        headers: crate::server::header_pairs(req.headers()),
    });
    let behavior = lock(&state.behavior).clone();
    let delay = *lock(&state.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let mut resp = match behavior {
        Behavior::Hang => std::future::pending().await,
        Behavior::Status401 => unauthorized(),
        Behavior::RateLimited { retry_after } => {
            let mut resp = response(
                StatusCode::TOO_MANY_REQUESTS,
                Some(JSON),
                json_error(
                    429,
                    "Too Many Requests",
                    "Too many requests, please try again later.",
                ),
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after));
            return resp;
        }
        Behavior::ServerError => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(ERROR_JSON),
            json_error(
                500,
                "Internal Server Error",
                "An internal server error occurred, please contact the system administrator",
            ),
        ),
        Behavior::Garbage => response(
            StatusCode::OK,
            Some(JSON),
            "<html><body>502 Bad Gateway</body></html>\n",
        ),
        Behavior::InvalidSession => response(StatusCode::OK, Some(JSON), r#"{"foo":1}"#),
        Behavior::Normal
        | Behavior::Aal2Required
        | Behavior::CloseMidResponse
        | Behavior::CloseMidHeaders => {
            let cookie_name = lock(&state.cookie_name).clone();
            let credential = extract_credential(req.headers(), &cookie_name);
            let stored = credential
                .as_deref()
                .and_then(|c| lock(&state.sessions).get(c).cloned());
            let resp = match stored {
                None => {
                    let mut resp = unauthorized();
                    let negative = *lock(&state.negative_cache_for);
                    if let (None, Some(n)) = (&credential, negative) {
                        resp.headers_mut()
                            .insert("ory-session-cache-for", HeaderValue::from(n));
                    }
                    resp
                }
                Some(_) if behavior == Behavior::Aal2Required => aal2_required(&state.url),
                Some(stored) => session_response(stored),
            };
            match behavior {
                // Status line and all headers (with the full Content-Length), half the body.
                Behavior::CloseMidResponse => {
                    ctx.cut_response(CutAt::BodyBytes(body_len_of(&resp) / 2));
                }
                // "HTTP/1.1 200 OK\r\n" plus a few bytes of the first header.
                Behavior::CloseMidHeaders => ctx.cut_response(CutAt::TotalBytes(30)),
                _ => {}
            }
            resp
        }
    };
    let headers = resp.headers_mut();
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(KRATOS_CACHE_CONTROL),
    );
    headers.insert(VARY, HeaderValue::from_static("Cookie"));
    let after = *lock(&state.answer_delay);
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }
    resp
}

fn body_len_of(resp: &Response<Body>) -> usize {
    use hyper::body::Body as _;
    resp.body().size_hint().exact().unwrap_or(0) as usize
}

fn unauthorized() -> Response<Body> {
    response(
        StatusCode::UNAUTHORIZED,
        Some(ERROR_JSON),
        UNAUTHORIZED_BODY,
    )
}

fn aal2_required(base_url: &str) -> Response<Body> {
    let redirect = format!("{base_url}/self-service/login/browser?aal=aal2");
    let body = json!({
        "error": {
            "id": "session_aal2_required",
            "code": 403,
            "status": "Forbidden",
            "reason": AAL2_REASON,
            "details": { "redirect_browser_to": redirect },
            "message": AAL2_MESSAGE,
        },
        "redirect_browser_to": redirect,
    });
    response(
        StatusCode::FORBIDDEN,
        Some(ERROR_JSON),
        serde_json::to_vec(&body).expect("serialize 403 body"),
    )
}

fn session_response(stored: Stored) -> Response<Body> {
    let mut resp = response(StatusCode::OK, Some(JSON), stored.body);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&stored.identity_id) {
        headers.insert("x-kratos-authenticated-identity-id", v);
    }
    if let Some(n) = stored.cache_for {
        headers.insert("ory-session-cache-for", HeaderValue::from(n));
    }
    if let Some(cookie) = stored
        .set_cookie
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        headers.append(SET_COOKIE, cookie);
    }
    resp
}
