//! The admin listener: `/health/alive`, `/health/ready`, `/metrics`. Never on the public listener.
//!
//! - `/health/alive`: 200 while the process runs.
//! - `/health/ready`: 200 when the configuration is loaded, the public listener accepts connections and
//!   the process is not draining; 503 otherwise. The body reports Kratos's reachability, which does
//!   not decide readiness (a Kratos outage is answered with 503s per request, and taking every proxy
//!   out of the load balancer would not help).
//! - `/metrics`: Prometheus text format.
//! - `GET /.well-known/jwks.json`: the public keys of signed identity tokens (`[identity_token]`),
//!   cacheable for `identity_token.ttl`; 404 without that section.
//! - `POST /cache/purge`: the purge API (`admin.purge_token_file`; see `crate::fleet::api`).
//!   With `[cache.shared]`, `/health/ready`'s body also says `shared_cache: ok | degraded`
//!   (never failing readiness: a replica without Redis is local-only, not broken).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::state::Shared;

/// The admin app.
pub struct Admin {
    shared: Arc<Shared>,
    public_listen: SocketAddr,
}

impl Admin {
    pub fn new(shared: Arc<Shared>, public_listen: SocketAddr) -> Admin {
        Admin {
            shared,
            public_listen,
        }
    }

    async fn ready(&self) -> (u16, serde_json::Value) {
        let listening = listener_accepts(self.public_listen).await;
        let draining = self.shared.is_draining();
        let rt = self.shared.runtime();
        let kratos = match rt.whoami.probe().await {
            Ok(status) => json!({ "reachable": true, "status": status }),
            Err(reason) => json!({ "reachable": false, "error": reason }),
        };
        let ready = listening && !draining;
        let body = json!({
            "status": if ready { "ok" } else { "unavailable" },
            "config_loaded": true,
            "listener": if listening { "accepting" } else { "not accepting" },
            "draining": draining,
            "routes": rt.config.routes.len(),
            "kratos": kratos,
            "shared_cache": self.shared.fleet().map_or("off", |f| f.status()),
        });
        (if ready { 200 } else { 503 }, body)
    }
}

impl Admin {
    /// `POST /cache/purge`: reads at most `fleet::api::MAX_BODY` of body, then answers.
    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let rt = self.shared.runtime();
        let method = session.req_header().method.as_str().to_string();
        let authorization = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let token = rt.config.admin.purge_token.as_ref();
        let mut body = Vec::new();
        let mut too_large = false;
        // the body is read only for an authorized POST: a 401 costs no body read
        let authorized =
            token.is_some_and(|t| crate::fleet::api::authorized(t, authorization.as_deref()));
        if authorized && method == "POST" {
            loop {
                match session.read_request_body().await {
                    Ok(Some(chunk)) => {
                        if body.len() + chunk.len() > crate::fleet::api::MAX_BODY {
                            too_large = true;
                            break;
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        return json_response(
                            400,
                            &json!({ "error": { "code": 400, "status": "Bad Request" } }),
                        )
                    }
                }
            }
        }
        let (status, answer) = crate::fleet::api::handle(
            token,
            &rt.store,
            &method,
            authorization.as_deref(),
            (!too_large).then_some(body.as_slice()),
        );
        if status == 202 {
            tracing::info!(purged = %answer["purged"], "purge API: purge applied");
        }
        json_response(status, &answer)
    }
}

/// Where the admin listener publishes the identity token keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

impl Admin {
    /// The JWKS of `[identity_token]`, with `Cache-Control: public, max-age=<ttl>`: a key added to the
    /// file is seen by every verifier within `ttl`, which the rotation procedure waits for.
    fn jwks(&self) -> Response<Vec<u8>> {
        let rt = self.shared.runtime();
        let Some(issuer) = rt.tokens.as_deref() else {
            return json_response(
                404,
                &json!({ "error": { "code": 404, "status": "Not Found" } }),
            );
        };
        let mut r = response(200, "application/jwk-set+json", issuer.jwks().to_vec());
        let cache = format!("public, max-age={}", issuer.ttl().as_secs());
        if let Ok(v) = http::HeaderValue::from_str(&cache) {
            r.headers_mut().insert(http::header::CACHE_CONTROL, v);
        }
        r
    }
}

async fn listener_accepts(addr: SocketAddr) -> bool {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(target)
        )
        .await,
        Ok(Ok(_))
    )
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

fn json_response(status: u16, body: &serde_json::Value) -> Response<Vec<u8>> {
    response(
        status,
        "application/json",
        serde_json::to_vec(body).unwrap_or_default(),
    )
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/health/alive" => json_response(200, &json!({ "status": "ok" })),
            "/health/ready" => {
                let (status, body) = self.ready().await;
                json_response(status, &body)
            }
            crate::fleet::api::PATH => self.purge(session).await,
            JWKS_PATH => self.jwks(),
            "/metrics" => {
                let rt = self.shared.runtime();
                rt.store.run_pending_tasks();
                let text = self.shared.metrics.render(rt.store.entry_count());
                response(200, "text/plain; version=0.0.4", text.into_bytes())
            }
            _ => json_response(
                404,
                &json!({ "error": { "code": 404, "status": "Not Found" } }),
            ),
        }
    }
}
