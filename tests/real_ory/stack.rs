//! The real Ory stack behind sessiongate, per test: Kratos, Hydra and the login/consent acceptor
//! started by `scripts/ory.sh start` on free loopback ports (one run directory each, stopped by pid
//! when the [`OryStack`] drops), and sessiongate in front as the application's public origin.
//!
//! Routes of the sessiongate under test (see [`sessiongate_config`]):
//! - `/.ory`: the Kratos edge (Kratos's `serve.public.base_url` is `<public>/.ory/`);
//! - `/oauth2`, `/.well-known`, `/userinfo`: Hydra's public endpoints (Hydra's issuer is `<public>/`);
//! - `/api`: a `session` route in front of the echo upstream, with identity headers;
//! - whatever [`StackOpts::extra_routes`] adds (the browser test's login page and app).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ory_kratos_client_v1::apis::configuration::Configuration;
use serde_json::{json, Value};

use crate::common::{client, free_port, EchoUpstream, TestProxy};

/// The repository root (where `scripts/ory.sh` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the Ory binaries once per test process (`scripts/ory.sh build`: seconds when up to date).
/// A build failure fails the test with the script's output: the real-stack tests never skip.
fn ensure_built() {
    static BUILT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.is_none() {
        let out = Command::new("bash")
            .arg(root().join("scripts/ory.sh"))
            .arg("build")
            .output()
            .expect("run scripts/ory.sh build");
        *built = Some(if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/ory.sh build failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        });
    }
    if let Some(Err(e)) = built.as_ref() {
        panic!("{e}");
    }
}

/// What differs between the stacks of the tests.
#[derive(Default)]
pub struct StackOpts {
    /// Extra environment for Kratos and Hydra (their config overrides, e.g.
    /// `SELFSERVICE_METHODS_OIDC_CONFIG_BASE_REDIRECT_URI`).
    pub ory_env: Vec<(String, String)>,
    /// `[cache]` keys of sessiongate (default `max_ttl = "5m"`, `negative_ttl = "0s"`).
    pub cache: Option<String>,
    /// More `[[routes]]` appended to sessiongate's config (`{PROXY}` is the public origin).
    pub extra_routes: String,
    /// Misconfigure Kratos's OIDC `base_redirect_uri` to its own internal public URL (what happens
    /// when it is left to an internal `serve.public.base_url`): the `redirect_uri` Kratos sends
    /// Hydra is then off the custom domain.
    pub internal_base_redirect_uri: bool,
}

/// A running Kratos + Hydra + acceptor + echo upstream + sessiongate.
pub struct OryStack {
    /// The public origin: sessiongate (`http://127.0.0.1:PORT`).
    pub public: String,
    /// `public + "/.ory"`: where Kratos's public API is on the custom domain.
    pub kratos_base: String,
    pub kratos_public: String,
    pub kratos_admin: String,
    pub upstream: EchoUpstream,
    pub proxy: TestProxy,
    acceptor_port: u16,
    run_dir: PathBuf,
}

/// sessiongate's config for a stack (see the module docs).
pub fn sessiongate_config(
    kratos_public: &str,
    hydra_public: &str,
    upstream: &str,
    opts: &StackOpts,
) -> String {
    let cache = opts
        .cache
        .clone()
        .unwrap_or_else(|| "max_ttl = \"5m\"\nnegative_ttl = \"0s\"".into());
    format!(
        r#"
[server]
public_url = "{{PROXY}}"

[kratos]
public_url = "{kratos_public}"
timeout = "5s"
login_url = "{{PROXY}}/.ory/self-service/login/browser"

[cache]
{cache}

[[routes]]
name = "kratos"
path_prefix = "/.ory"
kratos_edge = true
allowed_return_urls = ["{{PROXY}}/", "myapp://callback"]

[[routes]]
name = "hydra"
path_prefix = "/oauth2"
upstream = "{hydra_public}"
auth = "anonymous"

[[routes]]
name = "hydra-discovery"
path_prefix = "/.well-known"
upstream = "{hydra_public}"
auth = "anonymous"

[[routes]]
name = "hydra-userinfo"
path = "/userinfo"
upstream = "{hydra_public}"
auth = "anonymous"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{upstream}"
auth = "session"
[routes.identity_headers]
"X-User-Id" = "identity.id"
"X-User-Email" = "identity.traits.email"
"X-Session-Id" = "id"
"X-Aal" = "authenticator_assurance_level"
{extra}
"#,
        extra = opts.extra_routes
    )
}

static STACKS: AtomicUsize = AtomicUsize::new(0);

impl OryStack {
    pub async fn start() -> OryStack {
        Self::start_with(StackOpts::default()).await
    }

    pub async fn start_with(opts: StackOpts) -> OryStack {
        ensure_built();
        let proxy_port = free_port();
        let public = format!("http://127.0.0.1:{proxy_port}");
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let run_dir = root().join(format!(
            "target/ory/run/test-{}-{}",
            std::process::id(),
            STACKS.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&run_dir);
        let mut cmd = Command::new("bash");
        cmd.arg(root().join("scripts/ory.sh"))
            .arg("start")
            .env("ORY_RUN_DIR", &run_dir)
            .env("ORY_PUBLIC_URL", &public)
            .env("KRATOS_PUBLIC_PORT", ports[0].to_string())
            .env("KRATOS_ADMIN_PORT", ports[1].to_string())
            .env("HYDRA_PUBLIC_PORT", ports[2].to_string())
            .env("HYDRA_ADMIN_PORT", ports[3].to_string())
            .env("ACCEPTOR_PORT", ports[4].to_string());
        if opts.internal_base_redirect_uri {
            cmd.env(
                "SELFSERVICE_METHODS_OIDC_CONFIG_BASE_REDIRECT_URI",
                format!("http://127.0.0.1:{}/", ports[0]),
            );
        }
        for (k, v) in &opts.ory_env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run scripts/ory.sh start");
        let stack_guard = StopOnDrop(run_dir.clone());
        assert!(
            out.status.success(),
            "scripts/ory.sh start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let kratos_public = format!("http://127.0.0.1:{}", ports[0]);
        let hydra_public = format!("http://127.0.0.1:{}", ports[2]);
        let upstream = EchoUpstream::start().await;
        let config = sessiongate_config(&kratos_public, &hydra_public, &upstream.url(), &opts);
        let proxy = TestProxy::start_at(&config, proxy_port, &[]);
        std::mem::forget(stack_guard);
        OryStack {
            kratos_base: format!("{public}/.ory"),
            public,
            kratos_public,
            kratos_admin: format!("http://127.0.0.1:{}", ports[1]),
            upstream,
            proxy,
            acceptor_port: ports[4],
            run_dir,
        }
    }

    /// The Kratos SDK pointed at the custom domain (through sessiongate's edge), without cookies:
    /// a native app's client.
    pub fn sdk(&self) -> Configuration {
        Configuration {
            base_path: self.kratos_base.clone(),
            client: client(),
            ..Configuration::default()
        }
    }

    /// The port of Hydra's login/consent app (the acceptor).
    pub fn acceptor_port(&self) -> u16 {
        self.acceptor_port
    }

    /// `public + path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.public, path)
    }

    /// The tail of one of the stack's logs (`kratos`, `hydra`, `acceptor`), for failure messages.
    pub fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.run_dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Registers an identity with a password through the edge (native API flow); returns the
    /// session token and the session JSON of the answer.
    pub async fn register(&self, email: &str, password: &str) -> (String, Value) {
        let flow = self.api_flow("registration", "").await;
        let body =
            json!({ "method": "password", "password": password, "traits": { "email": email } });
        self.submit_api_flow(&flow, &body).await
    }

    /// A native password login through the edge; the session token and the session JSON.
    pub async fn native_login(&self, email: &str, password: &str) -> (String, Value) {
        let flow = self.api_flow("login", "").await;
        let body = json!({ "method": "password", "identifier": email, "password": password });
        self.submit_api_flow(&flow, &body).await
    }

    /// Submits an API flow's form as JSON to its `ui.action` (on the custom domain) and expects a
    /// session: the token and the session JSON.
    async fn submit_api_flow(&self, flow: &Value, body: &Value) -> (String, Value) {
        let action = flow["ui"]["action"].as_str().expect("ui.action");
        assert!(
            action.starts_with(&format!("{}/self-service/", self.kratos_base)),
            "ui.action on the custom domain: {action}"
        );
        let r = client()
            .post(action)
            .json(body)
            .send()
            .await
            .expect("submit");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{action}: {text}\n{}", self.log_tail("kratos"));
        let v: Value = serde_json::from_str(&text).expect("json");
        let token = v["session_token"]
            .as_str()
            .expect("session_token (the session hook is on)")
            .to_owned();
        (token, v["session"].clone())
    }
}

impl OryStack {
    /// Creates a native (API) flow of `kind` (`login`, `registration`) through the edge with plain
    /// HTTP (`query` without `?`): the SDK's flow models cannot be used, their UI node attributes
    /// expect the `node_type` tag that serde consumes (ory-kratos-client 1.3.8 and 26.2.0 alike).
    pub async fn api_flow(&self, kind: &str, query: &str) -> Value {
        let r = client()
            .get(format!(
                "{}/self-service/{kind}/api?{query}",
                self.kratos_base
            ))
            .send()
            .await
            .expect("create api flow");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{kind} api flow: {body}");
        serde_json::from_str(&body).expect("flow json")
    }
}

impl Drop for OryStack {
    fn drop(&mut self) {
        stop(&self.run_dir);
    }
}

/// Stops a stack whose start failed half-way (forgotten once the start succeeded).
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        stop(&self.0);
    }
}

/// Stops the stack of `run_dir`; its logs stay there when the test failed.
fn stop(run_dir: &PathBuf) {
    let _ = Command::new("bash")
        .arg(root().join("scripts/ory.sh"))
        .arg("stop")
        .env("ORY_RUN_DIR", run_dir)
        .output();
    if std::thread::panicking() {
        eprintln!("real Ory stack logs kept in {}", run_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(run_dir);
    }
}

/// A browser: keeps cookies, follows no redirects.
pub fn browser() -> (reqwest::Client, std::sync::Arc<reqwest::cookie::Jar>) {
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .cookie_provider(std::sync::Arc::clone(&jar))
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("browser client");
    (c, jar)
}

/// The `csrf_token` node's value of a flow's UI.
pub fn csrf_of(flow: &Value) -> String {
    flow["ui"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["attributes"]["name"] == "csrf_token")
        .and_then(|n| n["attributes"]["value"].as_str())
        .unwrap_or_else(|| panic!("no csrf_token node in {flow}"))
        .to_owned()
}

/// The value of cookie `name` in a `Set-Cookie` of `r`.
pub fn set_cookie_value(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            let first = c.split(';').next()?;
            let (n, v) = first.split_once('=')?;
            (n.trim() == name).then(|| v.trim().to_owned())
        })
}

impl OryStack {
    /// A browser (SPA-style, `Accept: application/json`) password login through the edge; returns
    /// the browser (its jar holds the session cookie) and the `ory_kratos_session` value.
    pub async fn browser_login(&self, email: &str, password: &str) -> (reqwest::Client, String) {
        let (b, _jar) = browser();
        let r = b
            .get(format!("{}/self-service/login/browser", self.kratos_base))
            .header("Accept", "application/json")
            .send()
            .await
            .expect("login flow");
        assert_eq!(r.status(), 200, "browser login flow");
        let flow: Value = r.json().await.expect("flow json");
        let action = flow["ui"]["action"].as_str().expect("ui.action").to_owned();
        assert!(
            action.starts_with(&format!("{}/self-service/login?flow=", self.kratos_base)),
            "ui.action on the custom domain: {action}"
        );
        let r = b
            .post(&action)
            .header("Accept", "application/json")
            .json(&json!({
                "method": "password",
                "identifier": email,
                "password": password,
                "csrf_token": csrf_of(&flow),
            }))
            .send()
            .await
            .expect("login submit");
        let cookie = set_cookie_value(&r, "ory_kratos_session");
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "browser login: {body}");
        (b, cookie.expect("ory_kratos_session set on login"))
    }
}

/// One redirect chain followed by hand, like a browser: every URL requested, and the first
/// `Location` that is not `http(s)://` (a custom scheme such as `myapp://callback?code=...`).
pub struct Chain {
    pub visited: Vec<String>,
    pub app_redirect: String,
}

/// Follows redirects from `start` with `browser` (which keeps cookies) until one points to a
/// non-HTTP scheme; panics on a non-redirect answer or after 20 hops.
pub async fn follow_to_app(browser: &reqwest::Client, start: &str) -> Chain {
    let mut url = start.to_owned();
    let mut visited = Vec::new();
    for _ in 0..20 {
        visited.push(url.clone());
        let r = browser.get(&url).send().await.expect("hop");
        let status = r.status();
        let next = r
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(next) = next.filter(|_| status.is_redirection()) else {
            let body = r.text().await.unwrap_or_default();
            panic!("{url} answered {status} without a redirect: {body}\nvisited: {visited:#?}");
        };
        let http = next.starts_with("http://") || next.starts_with("https://");
        if !http && next.contains("://") {
            // the app's own scheme: handed to the app byte for byte
            return Chain {
                visited,
                app_redirect: next,
            };
        }
        // relative Locations resolve against the current URL
        url = url::Url::parse(&url)
            .and_then(|base| base.join(&next))
            .map(|u| u.to_string())
            .unwrap_or(next);
    }
    panic!("more than 20 redirects: {visited:#?}");
}
