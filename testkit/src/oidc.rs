//! A minimal OpenID Connect provider double (authorization-code flow), for social sign-in
//! through the Kratos double and the edge.
//!
//! * `GET /authorize?client_id&redirect_uri&state&response_type=code&scope=...` records the
//!   `redirect_uri` it was given and answers `303` to `redirect_uri?code=<code>&state=<state>`
//!   (appended with `&` when `redirect_uri` already has a query). Without `redirect_uri`: 400.
//! * `POST /token` (form: `grant_type=authorization_code&code&redirect_uri&client_id[&client_secret]`)
//!   answers `{access_token, token_type, expires_in, scope}` when the code is known, unused and
//!   `redirect_uri` is **byte for byte** the one given to `/authorize` (as real providers
//!   demand); otherwise 400 `{"error":"invalid_grant"}`.
//! * `GET /userinfo` with `Authorization: Bearer <access_token>` answers
//!   `{sub, email, email_verified, name}` of the configured user; 401 otherwise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use crate::server::{self, lock, Body, ConnCtx, Running};

/// The user the provider signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcUser {
    pub sub: String,
    pub email: String,
    pub name: String,
}

impl Default for OidcUser {
    fn default() -> Self {
        OidcUser {
            sub: uuid::Uuid::new_v4().simple().to_string(),
            email: "social@example.com".to_owned(),
            name: "Social User".to_owned(),
        }
    }
}

/// One `/authorize` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub client_id: Option<String>,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scope: Option<String>,
}

/// One `/token` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub client_id: Option<String>,
    /// Whether the provider accepted it.
    pub granted: bool,
}

struct Grant {
    redirect_uri: String,
    user: OidcUser,
}

struct State {
    addr: SocketAddr,
    user: Mutex<OidcUser>,
    codes: Mutex<HashMap<String, Grant>>,
    tokens: Mutex<HashMap<String, OidcUser>>,
    authorizations: Mutex<Vec<AuthorizeRequest>>,
    token_requests: Mutex<Vec<TokenRequest>>,
    running: tokio::sync::Mutex<Option<Running>>,
}

/// The provider double. Cheap to clone; clones share one server.
#[derive(Clone)]
pub struct OidcProvider {
    state: Arc<State>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("addr", &self.state.addr)
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// Starts on `127.0.0.1:0` with a fresh [`OidcUser`].
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> OidcProvider {
        let listener = server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind the OIDC provider double on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            addr,
            user: Mutex::new(OidcUser::default()),
            codes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            authorizations: Mutex::new(Vec::new()),
            token_requests: Mutex::new(Vec::new()),
            running: tokio::sync::Mutex::new(None),
        });
        let s = state.clone();
        let running = server::serve(listener, move |req, ctx| handle(s.clone(), req, ctx));
        *state.running.lock().await = Some(running);
        OidcProvider { state }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.url())
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.url())
    }

    pub fn userinfo_url(&self) -> String {
        format!("{}/userinfo", self.url())
    }

    /// The user signed in by later `/authorize` calls.
    pub fn set_user(&self, user: OidcUser) {
        *lock(&self.state.user) = user;
    }

    pub fn user(&self) -> OidcUser {
        lock(&self.state.user).clone()
    }

    /// Every `redirect_uri` given to `/authorize`, in order.
    pub fn redirect_uris(&self) -> Vec<String> {
        lock(&self.state.authorizations)
            .iter()
            .map(|a| a.redirect_uri.clone())
            .collect()
    }

    pub fn authorizations(&self) -> Vec<AuthorizeRequest> {
        lock(&self.state.authorizations).clone()
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.state.token_requests).clone()
    }

    /// Closes the listener and every connection. Idempotent.
    pub async fn stop(&self) {
        if let Some(r) = self.state.running.lock().await.take() {
            r.stop().await;
        }
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn pairs(s: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(s).into_owned().collect()
}

async fn handle(state: Arc<State>, req: Request<Incoming>, _ctx: ConnCtx) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = pairs(req.uri().query().unwrap_or_default().as_bytes());
    match (method, path.as_str()) {
        (Method::GET, "/authorize") => {
            let Some(redirect_uri) = query.get("redirect_uri").cloned() else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"invalid_request","error_description":"redirect_uri is required"}"#,
                );
            };
            lock(&state.authorizations).push(AuthorizeRequest {
                client_id: query.get("client_id").cloned(),
                redirect_uri: redirect_uri.clone(),
                state: query.get("state").cloned(),
                scope: query.get("scope").cloned(),
            });
            let code = uuid::Uuid::new_v4().simple().to_string();
            let user = lock(&state.user).clone();
            lock(&state.codes).insert(
                code.clone(),
                Grant {
                    redirect_uri: redirect_uri.clone(),
                    user,
                },
            );
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("code", &code);
            if let Some(st) = query.get("state") {
                q.append_pair("state", st);
            }
            let sep = if redirect_uri.contains('?') { '&' } else { '?' };
            let location = format!("{redirect_uri}{sep}{}", q.finish());
            let mut resp = reply(StatusCode::SEE_OTHER, Bytes::new());
            resp.headers_mut().remove(CONTENT_TYPE);
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    resp.headers_mut().insert(LOCATION, v);
                    resp
                }
                Err(_) => reply(StatusCode::BAD_REQUEST, r#"{"error":"invalid_request"}"#),
            }
        }
        (Method::POST, "/token") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return reply(StatusCode::BAD_REQUEST, r#"{"error":"invalid_request"}"#),
            };
            let form = pairs(&body);
            let grant = form.get("code").and_then(|c| lock(&state.codes).remove(c));
            let granted = match &grant {
                Some(g) => {
                    form.get("grant_type").map(String::as_str) == Some("authorization_code")
                        && form.get("redirect_uri") == Some(&g.redirect_uri)
                }
                None => false,
            };
            lock(&state.token_requests).push(TokenRequest {
                grant_type: form.get("grant_type").cloned(),
                code: form.get("code").cloned(),
                redirect_uri: form.get("redirect_uri").cloned(),
                client_id: form.get("client_id").cloned(),
                granted,
            });
            match grant {
                Some(g) if granted => {
                    let token = format!("at_{}", uuid::Uuid::new_v4().simple());
                    lock(&state.tokens).insert(token.clone(), g.user);
                    reply(
                        StatusCode::OK,
                        json!({
                            "access_token": token,
                            "token_type": "Bearer",
                            "expires_in": 3600,
                            "scope": "openid email profile",
                        })
                        .to_string(),
                    )
                }
                _ => reply(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"invalid_grant","error_description":"The authorization code is invalid or the redirect_uri does not match"}"#,
                ),
            }
        }
        (Method::GET, "/userinfo") => {
            let token = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.to_owned());
            match token.and_then(|t| lock(&state.tokens).get(&t).cloned()) {
                Some(u) => reply(
                    StatusCode::OK,
                    json!({
                        "sub": u.sub,
                        "email": u.email,
                        "email_verified": true,
                        "name": u.name,
                    })
                    .to_string(),
                ),
                None => reply(StatusCode::UNAUTHORIZED, r#"{"error":"invalid_token"}"#),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
    }
}
