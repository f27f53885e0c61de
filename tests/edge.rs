//! The Kratos edge end to end: Kratos's public API served under a prefix of the application's own
//! origin, in front of the Kratos double (self-service flows, OIDC, token exchange, logout) and
//! the OIDC provider double, over real HTTP.
//!
//! Most tests use `public_url = "{PROXY}"`, so the public origin is the proxy itself and every
//! rewritten URL can be followed like a browser or a native app would.

mod common;

use std::collections::HashMap;

use common::*;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sessiongate_testkit::selfservice::CONTINUITY_COOKIE;
use sessiongate_testkit::{OidcProvider, RecordedRequest};

// ---------------------------------------------------------------------------------------------
// harness

/// The edge route's keys (routes[0]); the other routes are fixed: `/api` (session, identity
/// headers) and `/public` (anonymous), both on the echo upstream.
struct Opts<'a> {
    /// `server.public_url`; `"{PROXY}"` = the proxy's own origin.
    public: &'a str,
    prefix: &'a str,
    cookie_domain: Option<&'a str>,
    allowed: &'a [&'a str],
    ory_key: Option<&'a str>,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            public: "{PROXY}",
            prefix: "/.ory",
            cookie_domain: None,
            allowed: &[],
            ory_key: None,
        }
    }
}

fn edge_config(kratos: &str, upstream: &str, o: &Opts<'_>) -> String {
    let mut edge = format!(
        "[[routes]]\nname = \"kratos\"\npath_prefix = \"{}\"\nkratos_edge = true\n",
        o.prefix
    );
    if let Some(d) = o.cookie_domain {
        edge.push_str(&format!("cookie_domain = \"{d}\"\n"));
    }
    if !o.allowed.is_empty() {
        let list: Vec<String> = o.allowed.iter().map(|a| format!("\"{a}\"")).collect();
        edge.push_str(&format!("allowed_return_urls = [{}]\n", list.join(", ")));
    }
    if let Some(k) = o.ory_key {
        edge.push_str(&format!("ory_network_api_key = \"{k}\"\n"));
    }
    format!(
        r#"
[server]
public_url = "{public}"

[kratos]
public_url = "{kratos}"
timeout = "2s"

[cache]
max_ttl = "5m"
negative_ttl = "0s"

{edge}
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{upstream}"
auth = "session"
[routes.identity_headers]
"X-User-Id" = "identity.id"
"X-User-Email" = "identity.traits.email"
"X-Session-Id" = "id"

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "{upstream}"
auth = "anonymous"
"#,
        public = o.public
    )
}

/// Kratos double + echo upstream + a proxy with an edge route.
struct Edge {
    kratos: KratosDouble,
    upstream: EchoUpstream,
    proxy: TestProxy,
    /// The public origin (`http://127.0.0.1:PORT` or `https://app.example.com`).
    origin: String,
    /// The normalised mount prefix (`""` for the root).
    prefix: String,
    /// `origin + prefix`: what every Kratos URL becomes.
    base: String,
}

impl Edge {
    async fn start(o: Opts<'_>) -> Edge {
        Self::start_with_env(o, &[]).await
    }

    async fn start_with_env(o: Opts<'_>, env: &[(&str, &str)]) -> Edge {
        let kratos = KratosDouble::start().await;
        let upstream = EchoUpstream::start().await;
        let proxy =
            TestProxy::start_with_env(&edge_config(&kratos.url(), &upstream.url(), &o), env);
        let origin = if o.public == "{PROXY}" {
            proxy.url("")
        } else {
            o.public.trim_end_matches('/').to_owned()
        };
        let prefix = o.prefix.trim_end_matches('/').to_owned();
        let base = format!("{origin}{prefix}");
        Edge {
            kratos,
            upstream,
            proxy,
            origin,
            prefix,
            base,
        }
    }

    /// The proxy URL of Kratos path `p` under the mount prefix.
    fn at(&self, p: &str) -> String {
        self.proxy.url(&format!("{}{p}", self.prefix))
    }

    /// Self-service requests the Kratos double received whose path starts with `path`.
    fn seen(&self, path: &str) -> Vec<RecordedRequest> {
        self.kratos
            .selfservice_requests()
            .into_iter()
            .filter(|r| r.path_and_query.starts_with(path))
            .collect()
    }

    /// `GET /api/me` (the `session` route) with `headers`: the status.
    async fn api(&self, headers: &[(&str, &str)]) -> StatusCode {
        let mut rb = client().get(self.proxy.url("/api/me"));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.expect("api request").status()
    }
}

/// A client that keeps cookies (like a browser) and follows nothing.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client")
}

/// `application/x-www-form-urlencoded` encoding of one component (what a browser puts in a query).
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn query_of(u: &str) -> HashMap<String, String> {
    url::Url::parse(u)
        .unwrap_or_else(|e| panic!("{u}: {e}"))
        .query_pairs()
        .into_owned()
        .collect()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location in {r:?}"))
        .to_str()
        .expect("ascii Location")
        .to_owned()
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii Set-Cookie").to_owned())
        .collect()
}

/// The value of cookie `name` in the response's `Set-Cookie`s.
fn cookie_value(r: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(r).iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (n, v) = first.split_once('=')?;
        (n.trim() == name).then(|| v.to_owned())
    })
}

/// Attribute names/values of a `Set-Cookie` (after the name=value pair), as written.
fn cookie_attrs(c: &str) -> Vec<String> {
    c.split(';').skip(1).map(|a| a.trim().to_owned()).collect()
}

fn csrf_of(flow: &Value) -> String {
    flow["ui"]["nodes"]
        .as_array()
        .expect("ui.nodes")
        .iter()
        .find(|n| n["attributes"]["name"] == "csrf_token")
        .expect("csrf node")["attributes"]["value"]
        .as_str()
        .expect("csrf value")
        .to_owned()
}

/// Reads the body and checks the framing: a `Content-Length`, when present, is the body length.
async fn body_checked(r: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let status = r.status();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.expect("body");
    match headers.get(CONTENT_LENGTH) {
        Some(cl) => {
            let cl: usize = cl.to_str().unwrap().parse().unwrap();
            assert_eq!(cl, bytes.len(), "Content-Length does not match the body");
        }
        None if !bytes.is_empty() => assert_eq!(
            headers
                .get("transfer-encoding")
                .map(|v| v.to_str().unwrap().to_ascii_lowercase()),
            Some("chunked".to_owned()),
            "a body without Content-Length must be chunked: {headers:?}"
        ),
        None => {}
    }
    (
        status,
        headers,
        String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
    )
}

/// Values of header `name` as Kratos received them.
fn all<'a>(r: &'a RecordedRequest, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Asserts that `body` holds no spelling of Kratos's origin (plain, JSON-escaped, percent-encoded).
fn assert_no_kratos_origin(body: &str, kratos_url: &str) {
    let authority = kratos_url.trim_start_matches("http://");
    for needle in [
        kratos_url.to_owned(),
        kratos_url.replace('/', "\\/"),
        format!("http%3A%2F%2F{}", authority.replace(':', "%3A")),
    ] {
        assert!(
            !body.contains(&needle),
            "Kratos's origin ({needle}) is left in the body:\n{body}"
        );
    }
}

/// A password login through the edge's API flow; returns (session token, session JSON).
async fn api_password_login(e: &Edge, identifier: &str, password: &str) -> (String, Value) {
    let c = client();
    let flow: Value = c
        .get(e.at("/self-service/login/api"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let action = flow["ui"]["action"].as_str().expect("ui.action").to_owned();
    assert!(action.starts_with(&e.base), "{action}");
    let r = c
        .post(&action)
        .json(&json!({ "method": "password", "identifier": identifier, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    (
        v["session_token"]
            .as_str()
            .expect("session_token")
            .to_owned(),
        v["session"].clone(),
    )
}

/// A browser password login through the edge; returns the session cookie value.
async fn browser_password_login(e: &Edge, identifier: &str, password: &str) -> String {
    let c = client();
    let r = c
        .get(e.at("/self-service/login/browser"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let csrf_name = e.kratos.csrf_cookie_name();
    let csrf_cookie = cookie_value(&r, &csrf_name).expect("csrf cookie");
    let flow_id = query_of(&location(&r))["flow"].clone();
    let flow: Value = c
        .get(e.at(&format!("/self-service/login/flows?id={flow_id}")))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let action = flow["ui"]["action"].as_str().unwrap().to_owned();
    assert!(action.starts_with(&e.base), "{action}");
    let form = format!(
        "csrf_token={}&method=password&identifier={}&password={}",
        enc(&csrf_of(&flow)),
        enc(identifier),
        enc(password)
    );
    let r = c
        .post(&action)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(COOKIE, format!("{csrf_name}={csrf_cookie}"))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        e.kratos.selfservice_errors()
    );
    cookie_value(&r, "ory_kratos_session").expect("session cookie")
}

// ---------------------------------------------------------------------------------------------
// 1. requests under the mount prefix

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_is_stripped_and_kratos_gets_its_host_and_the_public_forwarded_headers() {
    let e = Edge::start(Opts {
        public: "https://app.example.com",
        ..Opts::default()
    })
    .await;
    let r = client()
        .get(e.at("/self-service/login/api?return_to=%2Fdashboard&x=1"))
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "http")
        .header("Ory-Base-URL-Rewrite", "https://evil.example")
        .header("Ory-Base-URL-Rewrite-Token", "stolen")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = e.seen("/");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let req = &seen[0];
    assert_eq!(req.method, "GET");
    assert_eq!(
        req.path_and_query, "/self-service/login/api?return_to=%2Fdashboard&x=1",
        "prefix stripped, query byte for byte"
    );
    let kratos_authority = e.kratos.url().trim_start_matches("http://").to_owned();
    assert_eq!(all(req, "host"), vec![kratos_authority.as_str()]);
    assert_eq!(all(req, "x-forwarded-host"), vec!["app.example.com"]);
    assert_eq!(all(req, "x-forwarded-proto"), vec!["https"]);
    // Without Ory Network mode, client copies of the rewrite headers are still deleted.
    assert!(all(req, "ory-base-url-rewrite").is_empty(), "{req:?}");
    assert!(all(req, "ory-base-url-rewrite-token").is_empty(), "{req:?}");

    // Kratos's own API under the prefix: whoami through the edge reaches Kratos's whoami.
    e.kratos.add_session("tok-edge", SessionSpec::default());
    let r = client()
        .get(e.at("/sessions/whoami"))
        .header("X-Session-Token", "tok-edge")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let whoami = e.kratos.requests();
    assert_eq!(whoami.len(), 1);
    assert_eq!(whoami[0].path_and_query, "/sessions/whoami");
    assert_eq!(whoami[0].header("x-session-token"), Some("tok-edge"));

    // `/.oryx` is not under the mount; nothing reaches Kratos.
    let before = e.kratos.selfservice_requests().len();
    let r = client()
        .get(e.proxy.url("/.oryx/self-service/login/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(e.kratos.selfservice_requests().len(), before);

    // A non-edge route keeps its own path and gets no Kratos Host.
    let r = client().get(e.proxy.url("/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let up = e.upstream.requests();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].path, "/public/x");
    assert_ne!(up[0].header("host"), Some(kratos_authority.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_mount_serves_kratos_beside_an_application_route() {
    let e = Edge::start(Opts {
        prefix: "/",
        ..Opts::default()
    })
    .await;
    assert_eq!(e.base, e.origin);
    let r = client()
        .get(e.proxy.url("/self-service/login/api?refresh=true"))
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(r).await;
    assert_eq!(status, 200, "{body}");
    let flow: Value = serde_json::from_str(&body).unwrap();
    let id = flow["id"].as_str().unwrap();
    assert_eq!(
        flow["ui"]["action"],
        format!("{}/self-service/login?flow={id}", e.origin),
        "root mount: public origin, no prefix"
    );
    assert_eq!(
        flow["request_url"],
        format!("{}/self-service/login/api?refresh=true", e.origin)
    );
    assert_no_kratos_origin(&body, &e.kratos.url());
    let seen = e.seen("/");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path_and_query,
        "/self-service/login/api?refresh=true"
    );
    let public_authority = e.origin.trim_start_matches("http://");
    assert_eq!(all(&seen[0], "x-forwarded-host"), vec![public_authority]);
    assert_eq!(all(&seen[0], "x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        all(&seen[0], "host"),
        vec![e.kratos.url().trim_start_matches("http://")]
    );

    // `/api` beside the root mount goes to the application, with the session resolved.
    let id = {
        let spec = SessionSpec::default();
        let id = spec.identity_id.clone();
        e.kratos.add_session("tok-root", spec);
        id
    };
    assert_eq!(e.api(&[("X-Session-Token", "tok-root")]).await, 200);
    assert_eq!(e.kratos.whoami_calls(), 1);
    let up = e.upstream.requests();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].path, "/api/me");
    assert_eq!(up[0].header("x-user-id"), Some(id.as_str()));
    assert_eq!(
        e.seen("/").len(),
        1,
        "the /api request did not go to Kratos's self-service API"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. responses: URLs, framing, compression, cookies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_carry_only_public_urls_and_kratos_gets_no_accept_encoding() {
    let e = Edge::start(Opts::default()).await;
    let kratos = e.kratos.url();

    // return_to on Kratos's own origin, percent-encoded in the query.
    let kratos_welcome = format!("{kratos}/welcome");
    let r = client()
        .get(e.at(&format!(
            "/self-service/login/api?return_to={}",
            enc(&kratos_welcome)
        )))
        .header("Accept-Encoding", "gzip, deflate, br")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    let (status, _, body) = body_checked(r).await;
    assert_eq!(status, 200, "{body}");
    let flow: Value = serde_json::from_str(&body).unwrap();
    let id = flow["id"].as_str().unwrap();
    assert_eq!(
        flow["ui"]["action"],
        format!("{}/self-service/login?flow={id}", e.base)
    );
    let public_welcome = format!("{}/welcome", e.base);
    assert_eq!(flow["return_to"], public_welcome.as_str());
    assert_eq!(
        flow["request_url"],
        format!(
            "{}/self-service/login/api?return_to={}",
            e.base,
            enc(&public_welcome)
        ),
        "the percent-encoded Kratos URL inside request_url's query is rewritten too"
    );
    assert_no_kratos_origin(&body, &kratos);
    let seen = e.seen("/self-service/login/api");
    assert_eq!(seen.len(), 1);
    assert!(
        all(&seen[0], "accept-encoding").is_empty(),
        "Kratos must not be asked to compress: {:?}",
        seen[0].headers
    );

    // URLs on other origins are untouched, including their query.
    let other = "https://other.example/cb?next=http%3A%2F%2Fx";
    let r = client()
        .get(e.at(&format!("/self-service/login/api?return_to={}", enc(other))))
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(r).await;
    assert_eq!(status, 200);
    let flow: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(flow["return_to"], other);
    assert!(
        flow["request_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("?return_to={}", enc(other))),
        "{}",
        flow["request_url"]
    );

    // The flow fetched again (browser-style, JSON): same rewriting.
    let r = client()
        .get(e.at(&format!(
            "/self-service/login/flows?id={}",
            flow["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(r).await;
    assert_eq!(status, 200);
    assert_no_kratos_origin(&body, &kratos);

    // Session JSON through the edge: identity.schema_url on the public base.
    e.kratos.add_session("tok-json", SessionSpec::default());
    let r = client()
        .get(e.at("/sessions/whoami"))
        .header("X-Session-Token", "tok-json")
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(r).await;
    assert_eq!(status, 200);
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        s["identity"]["schema_url"],
        format!("{}/schemas/ZGVmYXVsdA", e.base)
    );
    assert_no_kratos_origin(&body, &kratos);
    assert!(e.kratos.requests()[0].header("accept-encoding").is_none());

    // 403 step-up: redirect_browser_to at the top level and in error.details.
    e.kratos.set_behavior(Behavior::Aal2Required);
    let r = client()
        .get(e.at("/sessions/whoami"))
        .header("X-Session-Token", "tok-json")
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(r).await;
    assert_eq!(status, 403);
    let v: Value = serde_json::from_str(&body).unwrap();
    let expected = format!("{}/self-service/login/browser?aal=aal2", e.base);
    assert_eq!(v["redirect_browser_to"], expected.as_str());
    assert_eq!(
        v["error"]["details"]["redirect_browser_to"],
        expected.as_str()
    );
    assert_no_kratos_origin(&body, &kratos);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_on_kratos_origin_are_rewritten_and_others_are_not() {
    let e = Edge::start(Opts::default()).await;
    let kratos = e.kratos.url();
    // The UI served from Kratos's own origin: the browser-flow 303 points there.
    e.kratos.set_ui_base(&kratos);
    let r = client()
        .get(e.at("/self-service/login/browser"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let loc = location(&r);
    let flow_id = query_of(&loc)["flow"].clone();
    assert_eq!(loc, format!("{}/login?flow={flow_id}", e.base));
    // Kratos (Go's http.Redirect) links the target in a text/html body: rewritten as well.
    let (_, _, body) = body_checked(r).await;
    assert_eq!(body, format!("<a href=\"{loc}\">See Other</a>.\n\n"));
    assert_no_kratos_origin(&body, &kratos);

    // A Location on Kratos's origin with a Kratos URL percent-encoded in its query.
    e.kratos.add_session("cookie-loc", SessionSpec::default());
    let inner = format!("{kratos}/x");
    let ret = format!("{kratos}/cb?next={}", enc(&inner));
    let r = client()
        .get(e.at(&format!(
            "/self-service/login/browser?return_to={}",
            enc(&ret)
        )))
        .header(COOKIE, "ory_kratos_session=cookie-loc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&r),
        format!("{}/cb?next={}", e.base, enc(&format!("{}/x", e.base)))
    );

    // A Location on another origin is untouched, even with a Kratos URL in its query.
    let other = format!("http://127.0.0.1:4455/welcome?from={}", enc(&inner));
    let r = client()
        .get(e.at(&format!(
            "/self-service/login/browser?return_to={}",
            enc(&other)
        )))
        .header(COOKIE, "ory_kratos_session=cookie-loc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_browser_login_rewrites_continue_with_and_the_session() {
    let e = Edge::start(Opts::default()).await;
    let kratos = e.kratos.url();
    e.kratos
        .set_default_return_url(&format!("{kratos}/welcome"));
    e.kratos.add_password_identity("u@example.com", "pw");
    let (id, csrf, cookie) = browser_flow(&e).await;
    let body = json!({ "csrf_token": csrf, "method": "password", "identifier": "u@example.com",
        "password": "pw" })
    .to_string();
    let (status, headers, body) = submit_login(&e, &id, &cookie, body, "application/json").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["continue_with"][0]["redirect_browser_to"],
        format!("{}/welcome", e.base)
    );
    assert_eq!(
        v["session"]["identity"]["schema_url"],
        format!("{}/schemas/ZGVmYXVsdA", e.base)
    );
    assert_no_kratos_origin(&body, &kratos);
    let session = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap())
        .find(|c| c.starts_with("ory_kratos_session="))
        .expect("session cookie");
    assert!(session.contains("; Path=/"), "{session}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_gets_the_configured_domain_and_keeps_secure_and_path_on_https() {
    let e = Edge::start(Opts {
        public: "https://app.example.com",
        cookie_domain: Some("example.com"),
        ..Opts::default()
    })
    .await;
    e.kratos.set_session_cookie_domain(Some("kratos.internal"));
    e.kratos.set_session_cookie_secure(true);
    let r = client()
        .get(e.at("/self-service/login/browser"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookies = set_cookies(&r);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let c = &cookies[0];
    assert!(
        c.starts_with(&format!("{}=", e.kratos.csrf_cookie_name())),
        "{c}"
    );
    let attrs = cookie_attrs(c);
    let domains: Vec<&String> = attrs
        .iter()
        .filter(|a| a.to_ascii_lowercase().starts_with("domain="))
        .collect();
    assert_eq!(domains, vec!["Domain=example.com"], "{c}");
    assert!(
        attrs.iter().any(|a| a == "Secure"),
        "https public side keeps Secure: {c}"
    );
    assert!(attrs.iter().any(|a| a == "Path=/"), "{c}");
    assert!(attrs.iter().any(|a| a == "HttpOnly"), "{c}");
    assert!(attrs.iter().any(|a| a == "SameSite=Lax"), "{c}");

    // Kratos without Secure (`--dev`): the edge does not add it.
    e.kratos.set_session_cookie_secure(false);
    e.kratos.set_session_cookie_domain(None);
    let r = client()
        .get(e.at("/self-service/login/browser"))
        .send()
        .await
        .unwrap();
    let c = set_cookies(&r).remove(0);
    let attrs = cookie_attrs(&c);
    assert!(
        !attrs.iter().any(|a| a.eq_ignore_ascii_case("secure")),
        "{c}"
    );
    assert!(
        attrs.iter().any(|a| a == "Domain=example.com"),
        "added: {c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_domain_is_removed_and_secure_dropped_on_plain_http_and_cookies_pass_untouched()
{
    let e = Edge::start(Opts::default()).await;
    e.kratos.set_session_cookie_domain(Some("127.0.0.1"));
    e.kratos.set_session_cookie_secure(true);
    let sent_cookie =
        "a=b; ory_kratos_session=\"q=1\"; csrf_token_x=%2F%3D; ory_kratos_continuity=c";
    let r = client()
        .get(e.at("/self-service/login/browser"))
        .header(COOKIE, sent_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let c = set_cookies(&r).remove(0);
    let attrs = cookie_attrs(&c);
    assert!(
        !attrs
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain")),
        "host-only cookie expected: {c}"
    );
    assert!(
        !attrs.iter().any(|a| a.eq_ignore_ascii_case("secure")),
        "Secure dropped on a plain-HTTP public origin: {c}"
    );
    assert!(attrs.iter().any(|a| a == "Path=/"), "{c}");
    assert!(attrs.iter().any(|a| a.starts_with("Max-Age=")), "{c}");
    let seen = e.seen("/self-service/login/browser");
    assert_eq!(
        all(&seen[0], "cookie"),
        vec![sent_cookie],
        "Cookie passes byte for byte"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. OIDC

/// Everything the proxies of this test binary log at `warn` and above (one global subscriber).
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn warn_log() -> LogBuffer {
    static LOG: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = LogBuffer::default();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("warn")
            .with_writer(buffer.clone())
            .try_init()
            .expect("the only subscriber of this test binary");
        buffer
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_callback_reaches_kratos_with_query_and_cookies_intact() {
    let e = Edge::start(Opts {
        allowed: &["https://app.example.com/"],
        ..Opts::default()
    })
    .await;
    let cookie = format!("{CONTINUITY_COOKIE}=cont-1; csrf_token_abc=x%3Dy");
    let r = client()
        .get(e.at("/self-service/methods/oidc/callback/google?code=c%2Fode&state=st-1&x=%E2%9C%93"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    // The double does not know that state: it sends the browser to its error UI (other origin).
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("http://127.0.0.1:4455/error?id="));
    let seen = e.seen("/self-service/methods/oidc/callback/");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].path_and_query,
        "/self-service/methods/oidc/callback/google?code=c%2Fode&state=st-1&x=%E2%9C%93"
    );
    assert_eq!(all(&seen[0], "cookie"), vec![cookie.as_str()]);

    // form_post (Apple): a POST with a form body.
    let r = client()
        .post(e.at("/self-service/methods/oidc/callback/apple?x=1"))
        .header(COOKIE, &cookie)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("code=abc&state=st-2&user=%7B%22name%22%3A1%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let seen = e.seen("/self-service/methods/oidc/callback/apple");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].path_and_query,
        "/self-service/methods/oidc/callback/apple?x=1"
    );
    assert_eq!(all(&seen[0], "cookie"), vec![cookie.as_str()]);
    assert_eq!(all(&seen[0], "content-length"), vec!["45"]);
}

/// Browser sign-in with a provider through the proxy, with a cookie-keeping client;
/// `post_callback` turns the provider's redirect into a `form_post` callback.
async fn browser_social_sign_in(post_callback: bool) {
    let e = Edge::start(Opts {
        allowed: &["https://app.example.com/", "myapp://callback"],
        ..Opts::default()
    })
    .await;
    let provider = OidcProvider::start().await;
    e.kratos.add_oidc_provider("google", &provider);
    e.kratos.set_oidc_base_redirect_uri(Some(&e.base));
    let callback = format!("{}/self-service/methods/oidc/callback/google", e.base);
    assert_eq!(e.kratos.oidc_redirect_uri("google"), callback);

    let c = browser();
    let app = e.proxy.url("/api/me");
    // 1. start the browser flow, coming back to the application afterwards
    let r = c
        .get(format!(
            "{}/self-service/login/browser?return_to={}",
            e.base,
            enc(&app)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let flow_id = query_of(&location(&r))["flow"].clone();
    // 2. the flow, as the UI fetches it
    let flow: Value = c
        .get(format!("{}/self-service/login/flows?id={flow_id}", e.base))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let action = flow["ui"]["action"].as_str().unwrap().to_owned();
    assert_eq!(
        action,
        format!("{}/self-service/login?flow={flow_id}", e.base)
    );
    // 3. submit the oidc method as a form: 303 to the provider
    let r = c
        .post(&action)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!(
            "csrf_token={}&method=oidc&provider=google",
            enc(&csrf_of(&flow))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        e.kratos.selfservice_errors()
    );
    assert!(cookie_value(&r, CONTINUITY_COOKIE).is_some());
    let to_provider = location(&r);
    let expected_start = format!(
        "{}?client_id=client-google&redirect_uri={}&response_type=code&scope=openid+email+profile&state=",
        provider.authorize_url(),
        enc(&callback)
    );
    assert!(
        to_provider.starts_with(&expected_start),
        "the provider URL is Kratos's, byte for byte:\n{to_provider}\n{expected_start}"
    );
    // 4. the provider signs the user in and sends the browser to the public callback
    let r = c.get(&to_provider).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert!(back.starts_with(&format!("{callback}?code=")), "{back}");
    // 5. the callback, through the proxy
    let r = if post_callback {
        let (path, query) = back.split_once('?').unwrap();
        c.post(path)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(query.to_owned())
            .send()
            .await
            .unwrap()
    } else {
        c.get(&back).send().await.unwrap()
    };
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        e.kratos.selfservice_errors()
    );
    assert!(
        e.kratos.selfservice_errors().is_empty(),
        "{:?}",
        e.kratos.selfservice_errors()
    );
    assert_eq!(location(&r), app);
    let session_cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("ory_kratos_session="))
        .expect("session cookie");
    assert!(session_cookie.contains("Path=/"), "{session_cookie}");
    assert!(
        !session_cookie.to_ascii_lowercase().contains("domain="),
        "{session_cookie}"
    );
    let tokens = provider.token_requests();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].granted);
    assert_eq!(tokens[0].redirect_uri.as_deref(), Some(callback.as_str()));
    assert_eq!(provider.redirect_uris(), vec![callback.clone()]);
    // 6. the application, with the cookie the browser kept
    let r = c.get(&app).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let up = e.upstream.requests();
    assert_eq!(up.len(), 1);
    assert_eq!(
        up[0].header("x-user-email"),
        Some(provider.user().email.as_str())
    );
    assert!(up[0].header("x-user-id").is_some());
    assert_eq!(e.kratos.whoami_calls(), 1);
    assert_eq!(
        e.proxy
            .metric("sessiongate_oidc_redirect_uri_mismatch_total{provider=\"google\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_social_sign_in_through_the_edge_ends_with_a_working_session_cookie() {
    browser_social_sign_in(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_social_sign_in_with_a_form_post_callback() {
    browser_social_sign_in(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_redirect_uri_off_the_public_origin_is_reported_once_per_provider_and_not_rewritten() {
    let log = warn_log();
    let e = Edge::start(Opts::default()).await;
    let google = OidcProvider::start().await;
    let github = OidcProvider::start().await;
    e.kratos.add_oidc_provider("google", &google);
    e.kratos.add_oidc_provider("github", &github);
    // base_redirect_uri not set: Kratos gives providers its own origin.
    let internal = format!(
        "{}/self-service/methods/oidc/callback/google",
        e.kratos.url()
    );
    assert_eq!(e.kratos.oidc_redirect_uri("google"), internal);
    let series =
        |p: &str| format!("sessiongate_oidc_redirect_uri_mismatch_total{{provider=\"{p}\"}}");

    // API flow + JSON submission: 422 with redirect_browser_to (and the URL in error.reason).
    let c = client();
    let flow: Value = c
        .get(e.at("/self-service/login/api"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .json(&json!({ "method": "oidc", "provider": "google" }))
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(r).await;
    assert_eq!(status, 422, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["id"], "browser_location_change_required");
    let to = v["redirect_browser_to"].as_str().unwrap().to_owned();
    assert!(
        to.contains(&format!("redirect_uri={}&", enc(&internal))),
        "the provider URL keeps Kratos's redirect_uri: {to}"
    );
    assert_eq!(
        v["error"]["reason"],
        format!("In order to complete this flow please redirect the browser to: {to}"),
        "the provider URL inside error.reason is untouched too"
    );
    assert_eq!(e.proxy.metric(&series("google")).await, 1.0);

    // Second attempt, browser form: the 303 Location is untouched; still one report.
    let r = client()
        .get(e.at("/self-service/login/browser"))
        .send()
        .await
        .unwrap();
    let csrf_name = e.kratos.csrf_cookie_name();
    let csrf_cookie = cookie_value(&r, &csrf_name).unwrap();
    let flow_id = query_of(&location(&r))["flow"].clone();
    let flow: Value = client()
        .get(e.at(&format!("/self-service/login/flows?id={flow_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = client()
        .post(flow["ui"]["action"].as_str().unwrap())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(COOKIE, format!("{csrf_name}={csrf_cookie}"))
        .body(format!(
            "csrf_token={}&method=oidc&provider=google",
            enc(&csrf_of(&flow))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let loc = location(&r);
    assert!(loc.starts_with(&google.authorize_url()), "{loc}");
    assert!(
        loc.contains(&format!("redirect_uri={}&", enc(&internal))),
        "{loc}"
    );
    assert_eq!(
        e.proxy.metric(&series("google")).await,
        1.0,
        "one report per provider"
    );

    // Another provider is reported on its own.
    let r = c.get(e.at("/self-service/login/api")).send().await.unwrap();
    let flow: Value = r.json().await.unwrap();
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .json(&json!({ "method": "oidc", "provider": "github" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(e.proxy.metric(&series("github")).await, 1.0);
    assert_eq!(e.proxy.metric(&series("google")).await, 1.0);

    // One warning per provider, naming the fix.
    let text = log.text();
    let about = |p: &str| -> Vec<String> {
        let uri = format!("{}/self-service/methods/oidc/callback/{p}", e.kratos.url());
        text.lines()
            .filter(|l| l.contains(&uri))
            .map(str::to_owned)
            .collect()
    };
    let google_lines = about("google");
    assert_eq!(google_lines.len(), 1, "{text}");
    assert!(google_lines[0].contains("WARN"), "{}", google_lines[0]);
    assert!(
        google_lines[0].contains("base_redirect_uri"),
        "{}",
        google_lines[0]
    );
    assert!(
        google_lines[0].contains(&format!(
            "{}/self-service/methods/oidc/callback/google",
            e.base
        )),
        "the advice names the public callback: {}",
        google_lines[0]
    );
    assert_eq!(about("github").len(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_redirect_uri_on_the_public_origin_but_outside_the_mount_is_reported() {
    let e = Edge::start(Opts::default()).await;
    let provider = OidcProvider::start().await;
    e.kratos.add_oidc_provider("google", &provider);
    // base_redirect_uri without the mount prefix: the callback would miss the edge route.
    e.kratos.set_oidc_base_redirect_uri(Some(&e.origin));
    let c = client();
    let flow: Value = c
        .get(e.at("/self-service/login/api"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .json(&json!({ "method": "oidc", "provider": "google" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    let wrong = format!("{}/self-service/methods/oidc/callback/google", e.origin);
    assert!(
        v["redirect_browser_to"]
            .as_str()
            .unwrap()
            .contains(&format!("redirect_uri={}&", enc(&wrong))),
        "{v}"
    );
    assert_eq!(
        e.proxy
            .metric("sessiongate_oidc_redirect_uri_mismatch_total{provider=\"google\"}")
            .await,
        1.0
    );
}

// ---------------------------------------------------------------------------------------------
// 4. native apps: the token-exchange flow

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_app_social_sign_in_with_token_exchange_through_the_edge() {
    let e = Edge::start(Opts {
        allowed: &["https://app.example.com/", "myapp://callback"],
        ..Opts::default()
    })
    .await;
    let provider = OidcProvider::start().await;
    e.kratos.add_oidc_provider("google", &provider);
    e.kratos.set_oidc_base_redirect_uri(Some(&e.base));
    let c = client();

    // 1. the API flow, asking for an exchange code, coming back to the app's custom scheme
    let r = c
        .get(format!(
            "{}/self-service/login/api?return_session_token_exchange_code=true&return_to=myapp://callback",
            e.base
        ))
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(r).await;
    assert_eq!(status, 200, "{body}");
    let flow: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(flow["type"], "api");
    assert_eq!(flow["return_to"], "myapp://callback");
    let init_code = flow["session_token_exchange_code"]
        .as_str()
        .expect("session_token_exchange_code")
        .to_owned();
    let action = flow["ui"]["action"].as_str().unwrap().to_owned();
    assert!(action.starts_with(&format!("{}/self-service/login?flow=", e.base)));

    // 2. submit the oidc method: 422, the app opens a browser at redirect_browser_to
    let r = c
        .post(&action)
        .json(&json!({ "method": "oidc", "provider": "google" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["id"], "browser_location_change_required");
    let to_provider = v["redirect_browser_to"].as_str().unwrap().to_owned();
    let callback = format!("{}/self-service/methods/oidc/callback/google", e.base);
    assert!(
        to_provider.starts_with(&provider.authorize_url()),
        "{to_provider}"
    );
    assert!(to_provider.contains(&format!("redirect_uri={}&", enc(&callback))));

    // 3. the provider answers with the public callback
    let r = c.get(&to_provider).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = location(&r);
    assert!(back.starts_with(&format!("{callback}?code=")), "{back}");

    // 4. the callback through the proxy: Kratos sends the browser to the app with the code
    let r = c.get(&back).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        e.kratos.selfservice_errors()
    );
    let to_app = location(&r);
    let code = to_app
        .strip_prefix("myapp://callback?code=")
        .unwrap_or_else(|| panic!("custom scheme and code untouched: {to_app}"))
        .to_owned();
    assert_eq!(code.len(), 32, "{to_app}");
    assert!(code.bytes().all(|b| b.is_ascii_hexdigit()), "{to_app}");

    // 5. the exchange
    let r = c
        .get(format!(
            "{}/sessions/token-exchange?init_code={init_code}&return_to_code={code}",
            e.base
        ))
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(r).await;
    assert_eq!(status, 200, "{body}");
    let x: Value = serde_json::from_str(&body).unwrap();
    let token = x["session_token"]
        .as_str()
        .expect("session_token")
        .to_owned();
    let identity_id = x["session"]["identity"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        x["session"]["identity"]["schema_url"],
        format!("{}/schemas/ZGVmYXVsdA", e.base)
    );
    assert_no_kratos_origin(&body, &e.kratos.url());
    let seen = e.seen("/sessions/token-exchange");
    assert_eq!(
        seen[0].path_and_query,
        format!("/sessions/token-exchange?init_code={init_code}&return_to_code={code}")
    );

    // 6. the app calls the API with the token
    assert_eq!(e.api(&[("X-Session-Token", &token)]).await, 200);
    let up = e.upstream.requests();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].header("x-user-id"), Some(identity_id.as_str()));
    assert_eq!(
        up[0].header("x-user-email"),
        Some(provider.user().email.as_str())
    );
    assert_eq!(
        e.proxy
            .metric("sessiongate_oidc_redirect_uri_mismatch_total{provider=\"google\"}")
            .await,
        0.0
    );
}

// ---------------------------------------------------------------------------------------------
// 5. return_to allow-list

const ALLOWED: &[&str] = &["https://app.example.com/", "myapp://callback"];
const REFUSED: &[&str] = &[
    "https://evil.com/",
    "//evil.com",
    "https:evil.com",
    "https://app.example.com@evil.com",
    "https://app.example.com.evil.com/",
    "http://app.example.com/",
    "myapp://callbackevil",
    "javascript:alert(1)",
    "/\\evil.com",
];

fn assert_return_to_refused(status: StatusCode, body: &str, what: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: JSON: {body}"));
    assert_eq!(v["error"]["code"], 400, "{what}: {body}");
    assert_eq!(
        v["error"]["id"], "self_service_flow_return_to_forbidden",
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_to_in_the_query_outside_the_allow_list_is_refused_before_kratos() {
    let e = Edge::start(Opts {
        allowed: ALLOWED,
        ..Opts::default()
    })
    .await;
    for v in REFUSED {
        let r = client()
            .get(e.at(&format!("/self-service/login/browser?return_to={}", enc(v))))
            .send()
            .await
            .unwrap();
        let (status, headers, body) = body_checked(r).await;
        assert_return_to_refused(status, &body, v);
        assert!(headers.get(LOCATION).is_none());
        assert!(
            e.kratos.selfservice_requests().is_empty(),
            "{v} reached Kratos"
        );
    }
    // A second return_to hidden behind an allowed one.
    let r = client()
        .get(e.at(&format!(
            "/self-service/login/api?return_to=myapp%3A%2F%2Fcallback&return%5Fto={}",
            enc("https://evil.com/")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(e.kratos.selfservice_requests().is_empty());

    let public_path = format!("{}/dashboard", e.origin);
    for v in [
        "https://app.example.com/dashboard",
        "myapp://callback",
        "myapp://callback?x=1",
        "/relative/path",
        public_path.as_str(),
    ] {
        let before = e.kratos.selfservice_requests().len();
        let r = client()
            .get(e.at(&format!("/self-service/login/browser?return_to={}", enc(v))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{v}");
        let seen = e.kratos.selfservice_requests();
        assert_eq!(seen.len(), before + 1, "{v} passes to Kratos");
        assert_eq!(
            seen[before].path_and_query,
            format!("/self-service/login/browser?return_to={}", enc(v))
        );
    }
}

/// A browser login flow through the edge: (flow id, csrf token, csrf cookie header).
async fn browser_flow(e: &Edge) -> (String, String, String) {
    let r = client()
        .get(e.at("/self-service/login/browser"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let name = e.kratos.csrf_cookie_name();
    let cookie = format!("{name}={}", cookie_value(&r, &name).unwrap());
    let id = query_of(&location(&r))["flow"].clone();
    let flow: Value = client()
        .get(e.at(&format!("/self-service/login/flows?id={id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (id, csrf_of(&flow), cookie)
}

/// `POST /self-service/login?flow=` through the edge with `body` of type `ct`.
async fn submit_login(
    e: &Edge,
    flow_id: &str,
    csrf_cookie: &str,
    body: String,
    ct: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(e.at(&format!("/self-service/login?flow={flow_id}")))
        .header(CONTENT_TYPE, ct)
        .header(COOKIE, csrf_cookie)
        .header(ACCEPT, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    body_checked(r).await
}

fn login_form(csrf: &str, return_to: &str) -> String {
    format!(
        "csrf_token={}&method=password&identifier=u%40example.com&password=pw&return_to={}",
        enc(csrf),
        enc(return_to)
    )
}

fn login_json(csrf: &str, return_to: &str) -> String {
    json!({ "csrf_token": csrf, "method": "password", "identifier": "u@example.com",
        "password": "pw", "return_to": return_to })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_to_in_form_and_json_bodies_outside_the_allow_list_is_answered_400() {
    let e = Edge::start(Opts {
        allowed: ALLOWED,
        ..Opts::default()
    })
    .await;
    e.kratos.add_password_identity("u@example.com", "pw");
    let (id, csrf, cookie) = browser_flow(&e).await;
    for v in REFUSED {
        let form = "application/x-www-form-urlencoded";
        let (status, _, body) = submit_login(&e, &id, &cookie, login_form(&csrf, v), form).await;
        assert_return_to_refused(status, &body, &format!("form {v}"));
        let json = "application/json";
        let (status, _, body) = submit_login(&e, &id, &cookie, login_json(&csrf, v), json).await;
        assert_return_to_refused(status, &body, &format!("json {v}"));
    }
    // The name is matched the way Kratos's decoders match it.
    let (status, _, body) = submit_login(
        &e,
        &id,
        &cookie,
        format!("method=password&return%5Fto={}", enc("https://evil.com/")),
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_return_to_refused(status, &body, "return%5Fto");
    let (status, _, body) = submit_login(
        &e,
        &id,
        &cookie,
        r#"{"method":"password","Return_To":"https://evil.com/"}"#.to_owned(),
        "application/json",
    )
    .await;
    assert_return_to_refused(status, &body, "Return_To");
    // Allowed values pass, and the login succeeds.
    let (status, _, body) = submit_login(
        &e,
        &id,
        &cookie,
        login_form(&csrf, "https://app.example.com/home"),
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["session"]["id"].is_string(), "{body}");
    let (id, csrf, cookie) = browser_flow(&e).await;
    let (status, _, body) = submit_login(
        &e,
        &id,
        &cookie,
        login_json(&csrf, "myapp://callback"),
        "application/json",
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_to_in_form_and_json_bodies_outside_the_allow_list_never_reaches_kratos() {
    let e = Edge::start(Opts {
        allowed: ALLOWED,
        ..Opts::default()
    })
    .await;
    e.kratos.add_password_identity("u@example.com", "pw");
    let (id, csrf, cookie) = browser_flow(&e).await;
    let before = e.kratos.selfservice_requests().len();
    for v in [
        "https://evil.com/",
        "//evil.com",
        "https://app.example.com@evil.com",
    ] {
        let form = "application/x-www-form-urlencoded";
        let (status, _, _) = submit_login(&e, &id, &cookie, login_form(&csrf, v), form).await;
        assert_eq!(status, 400);
        let json = "application/json";
        let (status, _, _) = submit_login(&e, &id, &cookie, login_json(&csrf, v), json).await;
        assert_eq!(status, 400);
    }
    let after = e.kratos.selfservice_requests();
    assert_eq!(
        after.len(),
        before,
        "refused submissions reached Kratos: {:?}",
        &after[before..]
    );
}

// ---------------------------------------------------------------------------------------------
// 6. logout reaches the cache at once

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_logout_through_the_edge_purges_the_cached_session_at_once() {
    let e = Edge::start(Opts::default()).await;
    e.kratos.add_password_identity("api@example.com", "pw");
    let (token, _) = api_password_login(&e, "api@example.com", "pw").await;
    let t = [("X-Session-Token", token.as_str())];
    assert_eq!(e.api(&t).await, 200);
    assert_eq!(e.kratos.whoami_calls(), 1);
    assert_eq!(e.api(&t).await, 200);
    assert_eq!(e.kratos.whoami_calls(), 1, "cached for up to 5m");

    let r = client()
        .delete(e.at("/self-service/logout/api"))
        .json(&json!({ "session_token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!e.kratos.has_session(&token));
    assert_eq!(
        e.api(&t).await,
        401,
        "the very next request sees the logout"
    );
    assert_eq!(e.kratos.whoami_calls(), 2);
    // Bearer spelling of the same token is gone as well.
    assert_eq!(
        e.api(&[("Authorization", &format!("Bearer {token}"))])
            .await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_logout_through_the_edge_purges_the_cached_cookie_at_once() {
    let e = Edge::start(Opts::default()).await;
    e.kratos.add_password_identity("web@example.com", "pw");
    let session = browser_password_login(&e, "web@example.com", "pw").await;
    let cookie = format!("ory_kratos_session={session}");
    let h = [("Cookie", cookie.as_str())];
    assert_eq!(e.api(&h).await, 200);
    assert_eq!(e.api(&h).await, 200);
    assert_eq!(e.kratos.whoami_calls(), 1);

    let r = client()
        .get(e.at("/self-service/logout/browser"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(r).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let logout_url = v["logout_url"].as_str().unwrap().to_owned();
    let token = v["logout_token"].as_str().unwrap();
    assert_eq!(
        logout_url,
        format!("{}/self-service/logout?token={token}", e.base),
        "logout_url on the public origin"
    );
    // The browser sends its other cookies along; the session cookie is what counts.
    let csrf = e.kratos.csrf_cookie_name();
    let r = client()
        .get(&logout_url)
        .header(COOKIE, format!("{csrf}=x; {cookie}; theme=dark"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("ory_kratos_session="))
        .expect("cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(!e.kratos.has_session(&session));
    assert_eq!(
        e.api(&h).await,
        401,
        "the very next request sees the logout"
    );
    assert_eq!(e.kratos.whoami_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_through_the_edge_purges_the_callers_credential_and_the_identitys_sessions() {
    let e = Edge::start(Opts::default()).await;
    let identity = e.kratos.add_password_identity("step@example.com", "pw");
    e.kratos
        .add_identity_session("tok-old", &identity, "step@example.com");
    e.kratos.add_session("tok-caller", SessionSpec::default());
    for t in ["tok-old", "tok-caller"] {
        assert_eq!(e.api(&[("X-Session-Token", t)]).await, 200);
        assert_eq!(e.api(&[("X-Session-Token", t)]).await, 200);
    }
    assert_eq!(e.kratos.whoami_calls(), 2);

    // A successful login (e.g. a step-up that keeps the token) sent with the caller's token.
    let c = client();
    let flow: Value = c
        .get(e.at("/self-service/login/api?refresh=true"))
        .header("X-Session-Token", "tok-caller")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .header("X-Session-Token", "tok-caller")
        .json(&json!({ "method": "password", "identifier": "step@example.com", "password": "pw" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["session"]["identity"]["id"], identity.as_str());

    // Both are asked again: the caller's credential, and every cached session of the identity.
    assert_eq!(e.api(&[("X-Session-Token", "tok-caller")]).await, 200);
    assert_eq!(e.kratos.whoami_calls(), 3);
    assert_eq!(e.api(&[("X-Session-Token", "tok-old")]).await, 200);
    assert_eq!(e.kratos.whoami_calls(), 4);
    // A failed submission purges nothing.
    let flow: Value = c
        .get(e.at("/self-service/login/api"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .header("X-Session-Token", "tok-caller")
        .json(&json!({ "method": "password", "identifier": "step@example.com", "password": "no" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(e.api(&[("X-Session-Token", "tok-caller")]).await, 200);
    assert_eq!(e.kratos.whoami_calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_sessions_through_the_edge_purges_them_at_once() {
    let e = Edge::start(Opts::default()).await;
    let identity = uuid_like();
    let mine = e
        .kratos
        .add_identity_session("tok-mine", &identity, "me@example.com");
    let other = e
        .kratos
        .add_identity_session("tok-other", &identity, "me@example.com");
    let third = e
        .kratos
        .add_identity_session("tok-third", &identity, "me@example.com");
    let _ = (mine, third);
    for t in ["tok-other", "tok-third", "tok-mine"] {
        assert_eq!(e.api(&[("X-Session-Token", t)]).await, 200);
        assert_eq!(e.api(&[("X-Session-Token", t)]).await, 200);
    }
    assert_eq!(e.kratos.whoami_calls(), 3);

    // DELETE /sessions/{id}: another session of the caller's identity.
    let other_id = other["id"].as_str().unwrap();
    let r = client()
        .delete(e.at(&format!("/sessions/{other_id}")))
        .header("X-Session-Token", "tok-mine")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let seen = e.seen("/sessions/");
    assert_eq!(seen[0].path_and_query, format!("/sessions/{other_id}"));
    assert_eq!(e.api(&[("X-Session-Token", "tok-other")]).await, 401);
    assert_eq!(
        e.api(&[("X-Session-Token", "tok-third")]).await,
        200,
        "still cached, still valid"
    );

    // DELETE /sessions: every other session of the identity.
    let r = client()
        .delete(e.at("/sessions"))
        .header("X-Session-Token", "tok-mine")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["count"], 1);
    assert_eq!(e.api(&[("X-Session-Token", "tok-third")]).await, 401);
    assert_eq!(e.api(&[("X-Session-Token", "tok-mine")]).await, 200);
}

fn uuid_like() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..]
    )
}

// ---------------------------------------------------------------------------------------------
// 7. Ory Network custom-domain mode

async fn assert_ory_network_mode(e: &Edge, key: &str) {
    let r = client()
        .get(e.at("/self-service/login/api"))
        .header("Ory-Base-URL-Rewrite", "https://evil")
        .header("Ory-Base-URL-Rewrite-Token", "stolen")
        .header("Ory-No-Custom-Domain-Redirect", "false")
        .send()
        .await
        .unwrap();
    let (status, headers, body) = body_checked(r).await;
    assert_eq!(status, 200);
    let seen = e.seen("/self-service/login/api");
    assert_eq!(seen.len(), 1);
    assert_eq!(all(&seen[0], "ory-base-url-rewrite"), vec![e.base.as_str()]);
    assert_eq!(all(&seen[0], "ory-base-url-rewrite-token"), vec![key]);
    assert_eq!(all(&seen[0], "ory-no-custom-domain-redirect"), vec!["true"]);
    assert!(!body.contains(key));
    for (n, v) in &headers {
        assert!(
            !v.as_bytes().windows(key.len()).any(|w| w == key.as_bytes()),
            "{n}"
        );
    }

    // Never to the application, whatever the client sends.
    e.kratos.add_session("tok-ory", SessionSpec::default());
    for path in ["/public/x", "/api/me"] {
        let r = client()
            .get(e.proxy.url(path))
            .header("X-Session-Token", "tok-ory")
            .header("Ory-Base-URL-Rewrite-Token", "stolen")
            .send()
            .await
            .unwrap();
        let (status, headers, body) = body_checked(r).await;
        assert_eq!(status, 200, "{path}");
        assert!(!body.contains(key), "{path}: {body}");
        assert!(headers
            .iter()
            .all(|(_, v)| !v.to_str().unwrap_or("").contains(key)));
    }
    for req in e.upstream.requests() {
        for (n, v) in &req.headers {
            assert!(!v.contains(key), "{n} on {}", req.path);
        }
        assert!(!String::from_utf8_lossy(&req.body).contains(key));
    }
    // Not even to Kratos's whoami, which is not an edge request.
    for req in e.kratos.requests() {
        assert!(req.headers.iter().all(|(_, v)| !v.contains(key)), "{req:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ory_network_mode_sends_the_rewrite_headers_and_never_leaks_the_key() {
    let e = Edge::start(Opts {
        ory_key: Some("ory_apikey_SECRET"),
        ..Opts::default()
    })
    .await;
    assert_ory_network_mode(&e, "ory_apikey_SECRET").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ory_network_api_key_from_the_environment() {
    let e = Edge::start_with_env(
        Opts::default(),
        &[(
            "SESSIONGATE__ROUTES__0__ORY_NETWORK_API_KEY",
            "ory_apikey_FROMENV",
        )],
    )
    .await;
    assert_ory_network_mode(&e, "ory_apikey_FROMENV").await;
}

// ---------------------------------------------------------------------------------------------
// 8. `sessiongate check`

async fn check(config: &str) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!("sessiongate-edge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = dir.join(format!("check-{n}.toml"));
    std::fs::write(&path, config).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .expect("run sessiongate");
    let _ = std::fs::remove_file(&path);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_config(kratos: &str, edge_extra: &str) -> String {
    format!(
        r#"
[server]
public_url = "https://app.example.com"

[kratos]
public_url = "{kratos}"

[[routes]]
name = "app"
path_prefix = "/api"
upstream = "http://127.0.0.1:3000"
auth = "session"

[[routes]]
name = "kratos"
path_prefix = "/.ory"
kratos_edge = true
{edge_extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_a_valid_edge_route() {
    let k = KratosDouble::start().await;
    let (code, out, err) = check(&check_config(
        &k.url(),
        "cookie_domain = \"example.com\"\nallowed_return_urls = [\"https://app.example.com/\", \"myapp://callback\"]",
    ))
    .await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(": ok ("), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_cookie_domain_that_does_not_cover_the_public_host() {
    let k = KratosDouble::start().await;
    let (code, _, err) = check(&check_config(&k.url(), "cookie_domain = \"example.org\"")).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("routes[1].cookie_domain"), "{err}");
    // A look-alike suffix is not a parent domain either.
    let (code, _, err) = check(&check_config(&k.url(), "cookie_domain = \"ple.com\"")).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("routes[1].cookie_domain"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_an_edge_route_with_an_upstream() {
    let k = KratosDouble::start().await;
    let (code, _, err) = check(&check_config(
        &k.url(),
        "upstream = \"http://127.0.0.1:4433\"",
    ))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("routes[1].upstream"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_never_echoes_the_ory_network_api_key() {
    let k = KratosDouble::start().await;
    // The key on a route that is not an edge route.
    let config = check_config(&k.url(), "").replace(
        "auth = \"session\"\n",
        "auth = \"session\"\nory_network_api_key = \"ory_apikey_ECHO1\"\n",
    );
    let (code, out, err) = check(&config).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("routes[0].ory_network_api_key"), "{err}");
    assert!(!err.contains("ECHO1") && !out.contains("ECHO1"), "{err}");
    // A key that cannot be a header value.
    let (code, out, err) = check(&check_config(
        &k.url(),
        "ory_network_api_key = \"ory_apikey_ECHO2\\nX-Evil: 1\"",
    ))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("routes[1].ory_network_api_key"), "{err}");
    assert!(!err.contains("ECHO2") && !out.contains("ECHO2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_an_unreachable_kratos_for_an_edge_route() {
    // Port 1 (tcpmux): nothing listens there, and no test of this binary can bind it.
    let closed = "http://127.0.0.1:1".to_owned();
    let (code, out, err) = check(&check_config(&closed, "")).await;
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("routes[1]"), "{err}");
    assert!(err.contains("unreachable"), "{err}");
}
