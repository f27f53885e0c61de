//! A minimal self-service UI for a *real* Kratos, behind sessiongate: what a browser sees in the
//! real-stack demo (`scripts/demo.sh --real`). It renders Kratos's flow UI nodes as plain HTML
//! forms, the way Ory's reference UIs do, and shows the identity headers sessiongate forwards.
//!
//! | path | answer |
//! |---|---|
//! | `GET /ui/login?flow=ID`, `/ui/registration?flow=ID` | the flow fetched from Kratos (`GET <kratos>/self-service/{login,registration}/flows?id=ID`, with the browser's `Cookie`, which Kratos's CSRF check needs), rendered: one `<form>` posting to `ui.action` with every node (hidden inputs, text inputs, submit buttons such as the OIDC providers), plus the flow's messages |
//! | `GET /ui/login`, `/ui/registration` without `flow` | 303 to `<public>/.ory/self-service/{login,registration}/browser` |
//! | `GET /ui/error?id=ID` | Kratos's self-service error, as JSON in a `<pre>` |
//! | `GET /app/...` | the protected page: the `X-User-*` / `X-Session-*` headers it received |
//!
//! Flow URLs, form actions and redirects all stay on the public origin: Kratos's `ui.action` is
//! already rewritten by sessiongate's edge when the flow is fetched through it, and is taken as
//! Kratos wrote it (its `serve.public.base_url` is the public origin) when fetched directly.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;

use crate::server::{self, Body, ConnCtx, Running};

struct State {
    /// Kratos's public API as this server reaches it (`http://127.0.0.1:4433`).
    kratos: String,
    /// The public origin + edge prefix, for the "start a flow" redirects (`http://app/.ory`).
    public_kratos: String,
    http: reqwest::Client,
    seen: Mutex<Vec<UiRequest>>,
}

/// One request the UI received: its target and headers (names in lower case).
#[derive(Debug, Clone)]
pub struct UiRequest {
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl UiRequest {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(k, _)| k == name);
        found.map(|(_, v)| v.as_str())
    }
}

/// The running UI server. Stops when dropped (with its runtime).
pub struct LoginUi {
    addr: SocketAddr,
    state: Arc<State>,
    _running: Running,
}

impl LoginUi {
    /// Starts on `addr`. `kratos` is Kratos's public API (fetching flows), `public_kratos` where
    /// browsers reach it (`<public origin>/.ory`).
    pub async fn start_on(
        addr: SocketAddr,
        kratos: &str,
        public_kratos: &str,
    ) -> std::io::Result<LoginUi> {
        Self::serve(server::bind(addr)?, kratos, public_kratos)
    }

    /// Serves on a listener bound beforehand (when the proxy in front must know the UI's address
    /// before Kratos, and so the UI's `kratos`, exists).
    pub fn serve(
        listener: tokio::net::TcpListener,
        kratos: &str,
        public_kratos: &str,
    ) -> std::io::Result<LoginUi> {
        let addr = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let state = Arc::new(State {
            kratos: kratos.trim_end_matches('/').to_owned(),
            public_kratos: public_kratos.trim_end_matches('/').to_owned(),
            http,
            seen: Mutex::new(Vec::new()),
        });
        let handler_state = Arc::clone(&state);
        let running = server::serve(listener, move |req, _ctx: ConnCtx| {
            handle(Arc::clone(&handler_state), req)
        });
        Ok(LoginUi {
            addr,
            state,
            _running: running,
        })
    }

    /// The requests received whose target starts with `prefix`.
    pub fn requests(&self, prefix: &str) -> Vec<UiRequest> {
        let all = self.state.seen.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|r| r.target.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let seen = UiRequest {
        target: crate::server::path_and_query(req.uri()),
        headers: crate::server::header_pairs(req.headers()),
    };
    state
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(seen);
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let cookie = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match path.as_str() {
        "/ui/login" | "/ui/registration" => {
            let kind = path.trim_start_matches("/ui/");
            match param("flow") {
                None => redirect(&format!(
                    "{}/self-service/{kind}/browser",
                    state.public_kratos
                )),
                Some(id) => {
                    let url = format!("{}/self-service/{kind}/flows?id={}", state.kratos, enc(&id));
                    match fetch(&state, &url, cookie.as_deref()).await {
                        Ok((200, flow)) => page(StatusCode::OK, kind, &render_flow(kind, &flow)),
                        // an expired or foreign flow: start a new one, as Ory's UIs do
                        Ok((403 | 404 | 410, _)) => redirect(&format!(
                            "{}/self-service/{kind}/browser",
                            state.public_kratos
                        )),
                        Ok((status, v)) => page(
                            StatusCode::BAD_GATEWAY,
                            "error",
                            &format!(
                                "<p>Kratos answered {status}</p><pre>{}</pre>",
                                esc(&v.to_string())
                            ),
                        ),
                        Err(e) => page(StatusCode::BAD_GATEWAY, "error", &esc(&e)),
                    }
                }
            }
        }
        "/ui/error" => {
            let id = param("id").unwrap_or_default();
            let url = format!("{}/self-service/errors?id={}", state.kratos, enc(&id));
            match fetch(&state, &url, None).await {
                Ok((_, v)) => page(
                    StatusCode::OK,
                    "error",
                    &format!(
                        "<pre>{}</pre>",
                        esc(&serde_json::to_string_pretty(&v).unwrap_or_default())
                    ),
                ),
                Err(e) => page(StatusCode::BAD_GATEWAY, "error", &esc(&e)),
            }
        }
        p if p == "/app" || p.starts_with("/app/") => {
            let mut rows = String::new();
            let mut names: Vec<&str> = req
                .headers()
                .keys()
                .map(|n| n.as_str())
                .filter(|n| {
                    n.starts_with("x-user-") || n.starts_with("x-session-id") || *n == "x-aal"
                })
                .collect();
            names.sort_unstable();
            for name in names {
                let value = req
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                rows.push_str(&format!(
                    "<tr><th>{}</th><td id=\"{}\">{}</td></tr>\n",
                    esc(name),
                    esc(name),
                    esc(value)
                ));
            }
            page(
                StatusCode::OK,
                "app",
                &format!(
                    "<h1 id=\"greeting\">Signed in as {}</h1>\n<p>Identity headers sessiongate forwarded to this page:</p>\n<table>\n{rows}</table>\n<p><a href=\"{}/self-service/logout/browser\">Log out (JSON with the logout URL)</a></p>",
                    esc(req.headers().get("x-user-email").and_then(|v| v.to_str().ok()).unwrap_or("(no e-mail)")),
                    state.public_kratos
                ),
            )
        }
        _ => page(StatusCode::NOT_FOUND, "not found", "<p>not found</p>"),
    }
}

/// `GET url` with the browser's cookies; the status and JSON body.
async fn fetch(state: &State, url: &str, cookie: Option<&str>) -> Result<(u16, Value), String> {
    let mut rq = state
        .http
        .get(url)
        .header(header::ACCEPT, "application/json");
    if let Some(c) = cookie {
        rq = rq.header(header::COOKIE, c);
    }
    let r = rq
        .send()
        .await
        .map_err(|e| format!("Kratos unreachable: {e}"))?;
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(Value::Null);
    Ok((status, v))
}

/// One HTML form for a flow's UI: every node, grouped as Kratos lists them.
pub fn render_flow(kind: &str, flow: &Value) -> String {
    let ui = &flow["ui"];
    let mut html = format!(
        "<h1>{}</h1>\n",
        if kind == "login" {
            "Sign in"
        } else {
            "Sign up"
        }
    );
    // `novalidate`: a provider button submits without the password fields (Kratos validates)
    for m in ui["messages"].as_array().into_iter().flatten() {
        html.push_str(&format!(
            "<p class=\"message\">{}</p>\n",
            esc(m["text"].as_str().unwrap_or(""))
        ));
    }
    html.push_str(&format!(
        "<form id=\"flow\" method=\"{}\" action=\"{}\" novalidate>\n",
        esc(ui["method"].as_str().unwrap_or("POST")),
        esc(ui["action"].as_str().unwrap_or(""))
    ));
    for node in ui["nodes"].as_array().into_iter().flatten() {
        let a = &node["attributes"];
        if a["node_type"] != "input" {
            continue;
        }
        let name = a["name"].as_str().unwrap_or("");
        let typ = a["type"].as_str().unwrap_or("text");
        let value = a["value"].as_str().map(str::to_owned).unwrap_or_default();
        let label = node["meta"]["label"]["text"].as_str().unwrap_or(name);
        match typ {
            "hidden" => html.push_str(&format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                esc(name),
                esc(&value)
            )),
            "submit" | "button" => html.push_str(&format!(
                "<button type=\"submit\" name=\"{}\" value=\"{}\" id=\"{}-{}\">{}</button>\n",
                esc(name),
                esc(&value),
                esc(name),
                esc(&value),
                esc(label)
            )),
            _ => html.push_str(&format!(
                "<label>{} <input type=\"{}\" name=\"{}\" value=\"{}\"{}></label><br>\n",
                esc(label),
                esc(typ),
                esc(name),
                esc(&value),
                if a["required"] == true {
                    " required"
                } else {
                    ""
                }
            )),
        }
        for m in node["messages"].as_array().into_iter().flatten() {
            html.push_str(&format!(
                "<p class=\"message\">{}</p>\n",
                esc(m["text"].as_str().unwrap_or(""))
            ));
        }
    }
    html.push_str("</form>\n");
    html
}

fn page(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head><body>\n{body}\n</body></html>\n",
        esc(title)
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(html)))
        .unwrap_or_default()
}

fn redirect(to: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

/// HTML-escapes text and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_every_input_node_and_escapes() {
        let flow = json!({"ui": {"action": "http://app/.ory/self-service/login?flow=1&x=\"", "method": "POST",
        "messages": [{"text": "<b>hi</b>"}],
        "nodes": [
            {"attributes": {"node_type": "input", "name": "csrf_token", "type": "hidden", "value": "c1"}, "meta": {}, "messages": []},
            {"attributes": {"node_type": "input", "name": "provider", "type": "submit", "value": "hydra"}, "meta": {"label": {"text": "Sign in with Hydra"}}, "messages": []},
            {"attributes": {"node_type": "input", "name": "identifier", "type": "text", "value": "", "required": true}, "meta": {"label": {"text": "ID"}}, "messages": []},
            {"attributes": {"node_type": "script", "src": "x.js"}, "meta": {}, "messages": []}
        ]}});
        let html = render_flow("login", &flow);
        assert!(html.contains("action=\"http://app/.ory/self-service/login?flow=1&amp;x=&quot;\""));
        assert!(html.contains("<input type=\"hidden\" name=\"csrf_token\" value=\"c1\">"));
        assert!(html.contains("id=\"provider-hydra\">Sign in with Hydra</button>"));
        assert!(html.contains("name=\"identifier\" value=\"\" required>"));
        assert!(html.contains("&lt;b&gt;hi&lt;/b&gt;"));
        assert!(!html.contains("x.js"));
    }
}
