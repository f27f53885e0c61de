//! Group 3: browser social sign-in through the Kratos edge, in a real headless Chromium (Debian's
//! `chromium` + `chromium-driver`, driven over WebDriver with fantoccini; `scripts/chromium.sh`
//! installs them). The application is a small HTTP server of the test behind sessiongate: its login
//! page at `/ui/login` (anonymous route) renders Kratos's login flow as a form, its `/app` (a
//! `session` route in redirect mode) shows the identity headers sessiongate sent. Chromium starts at
//! `/app/dashboard` and signs in with the `hydra` provider (the acceptor approves alice@example.test).
//! Nothing is skipped: a missing browser or driver fails the test with how to install them.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sessiongate_testkit::LoginUi;
use tokio::net::TcpListener;
use url::Url;

use crate::common::{client, free_port};
use crate::stack::{browser, csrf_of, OryStack, StackOpts};

/// Kratos's OIDC callback path of the `hydra` provider.
const CALLBACK: &str = "/self-service/methods/oidc/callback/hydra";
/// The identity the acceptor signs in (its default subject; Kratos sends no login_hint).
const EMAIL: &str = "alice@example.test";
const MISMATCHES: &str = "sessiongate_oidc_redirect_uri_mismatch_total{provider=\"hydra\"}";

// ---------------------------------------------------------------------------------------------
// chromedriver + Chromium

/// An executable on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A chromedriver started by the test on a free loopback port, in its own process group (with
/// the Chromium it launches); that group is killed by its id when dropped, the profile removed.
struct ChromeDriver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let driver = on_path("chromedriver").unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed: the browser test needs Debian's chromium and \
                 chromium-driver (run `bash scripts/chromium.sh`)"
            )
        });
        let port = free_port();
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("sessiongate-chromium-{pid}-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("profile")).expect("chromium profile directory");
        let mut child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", dir.join("driver.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chromedriver exited before listening ({status})");
            }
            assert!(Instant::now() < deadline, "chromedriver not listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        ChromeDriver { child, port, dir }
    }

    /// A new WebDriver session: headless Chromium with a fresh profile that reaches no public host
    /// (no background networking, component updates, sync or proxy; host names do not resolve),
    /// with Chrome's performance log on, so that every request it made can be listed.
    async fn session(&self) -> Client {
        let binary = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| on_path("chromium"))
            .expect("chromium is not installed (run `bash scripts/chromium.sh`)");
        let mut args: Vec<String> = "--headless=new --no-sandbox --disable-gpu \
            --disable-dev-shm-usage --no-first-run --no-default-browser-check \
            --disable-background-networking --disable-component-update --disable-sync \
            --disable-default-apps --disable-extensions --disable-client-side-phishing-detection \
            --disable-domain-reliability --no-pings --metrics-recording-only --no-proxy-server \
            --disable-crash-reporter --disable-breakpad \
            --window-size=1024,768"
            .split_whitespace()
            .map(String::from)
            .collect();
        args.push("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into());
        args.push(format!(
            "--user-data-dir={}",
            self.dir.join("profile").display()
        ));
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        let options = json!({ "binary": binary, "args": args });
        caps.insert("goog:chromeOptions".into(), options);
        caps.insert("goog:loggingPrefs".into(), json!({ "performance": "ALL" }));
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("no Chromium session ({e}), see {}", self.dir.display()))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The process group (chromedriver and the Chromium it started), by its id.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("chromedriver log kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// chromedriver's `POST /session/{id}/se/log` for Chrome's performance log (DevTools events).
#[derive(Debug)]
struct PerformanceLog;

impl WebDriverCompatibleCommand for PerformanceLog {
    fn endpoint(&self, base: &Url, session: Option<&str>) -> Result<Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &Url) -> (http::Method, Option<String>) {
        let body = json!({ "type": "performance" }).to_string();
        (http::Method::POST, Some(body))
    }
}

/// One request Chromium sent: the DevTools resource type (`Document` for navigations and each of
/// their redirect hops), method and URL.
#[derive(Debug, Clone)]
struct Sent {
    kind: String,
    method: String,
    url: String,
}

/// Every request Chromium sent since the last call, in order.
async fn requests_sent(c: &Client) -> Vec<Sent> {
    let log = c.issue_cmd(PerformanceLog).await.expect("performance log");
    let events = log.as_array().cloned().unwrap_or_default();
    let sent: Vec<Sent> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
        .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
        .map(|m| {
            let p = &m["message"]["params"];
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            Sent {
                kind: s(&p["type"]),
                method: s(&p["request"]["method"]),
                url: s(&p["request"]["url"]),
            }
        })
        .collect();
    assert!(!sent.is_empty(), "no requests in the performance log");
    sent
}

// ---------------------------------------------------------------------------------------------
// The application: login page and a signed-in page

/// sessiongate routes for the application at `app`.
fn app_routes(app: &str) -> String {
    format!(
        r#"
[[routes]]
name = "ui"
path_prefix = "/ui"
upstream = "{app}"
auth = "anonymous"

[[routes]]
name = "app"
path_prefix = "/app"
upstream = "{app}"
auth = "session"
on_unauthenticated = "redirect"
[routes.identity_headers]
"X-User-Id" = "identity.id"
"X-User-Email" = "identity.traits.email"
"X-Session-Id" = "id"
"#
    )
}

/// The query parameter `name` of a URL or request target.
fn query_param(target: &str, name: &str) -> Option<String> {
    let url = Url::parse("http://x").ok()?.join(target).ok()?;
    let found = url.query_pairs().find(|(k, _)| k == name);
    found.map(|(_, v)| v.into_owned())
}

// ---------------------------------------------------------------------------------------------
// Helpers of the tests

/// sessiongate's log lines at `warn` and above (the sessiongates run in this test process; this is
/// the binary's only tracing subscriber).
#[derive(Clone, Default)]
struct WarnLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for WarnLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl WarnLog {
    fn get() -> WarnLog {
        static LOG: OnceLock<WarnLog> = OnceLock::new();
        let log = LOG.get_or_init(|| {
            let log = WarnLog::default();
            let writer = log.clone();
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_env_filter("warn")
                .with_writer(move || writer.clone())
                .try_init()
                .expect("the only tracing subscriber of this test binary");
            log
        });
        log.clone()
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        let lines = text.lines().filter(|l| l.contains(needle));
        lines.map(str::to_owned).collect()
    }
}

/// A stack with the application's routes, the application serving, and a Chromium session.
/// The application: testkit's [`LoginUi`] (renders Kratos's login flow as a form, shows the
/// identity headers on `/app/...`, records every request it gets).
async fn start(opts: StackOpts) -> (OryStack, LoginUi, ChromeDriver, Client) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    let app_url = format!("http://{}", listener.local_addr().expect("app addr"));
    let extra_routes = app_routes(&app_url);
    let stack = OryStack::start_with(StackOpts {
        extra_routes,
        ..opts
    })
    .await;
    let app = LoginUi::serve(listener, &stack.kratos_public, &stack.kratos_base).expect("login UI");
    let driver = ChromeDriver::start();
    let browser = driver.session().await;
    (stack, app, driver, browser)
}

/// Chromium's current URL.
async fn at(c: &Client) -> String {
    c.current_url().await.expect("current url").to_string()
}

/// Chromium opens `/app/dashboard` signed out (sessiongate's redirect mode sends it through
/// Kratos's browser login on the custom domain to the login page) and clicks the `hydra` button.
async fn sign_in_with_hydra(stack: &OryStack, app: &LoginUi, c: &Client) {
    c.goto(&stack.at("/app/dashboard")).await.expect("goto");
    let here = at(c).await;
    let page = c.source().await.unwrap_or_default();
    let login_page = stack.at("/ui/login?flow=");
    assert!(here.starts_with(&login_page), "{here}: {page}");
    assert!(app.requests("/app").is_empty(), "app reached signed out");
    let form = c.find(Locator::Id("flow")).await.expect("login form");
    let action = form.attr("action").await.unwrap().unwrap_or_default();
    let expected = format!("{}/self-service/login?flow=", stack.kratos_base);
    assert!(action.starts_with(&expected), "{action}");
    let csrf = c.find(Locator::Css("input[name=csrf_token]")).await;
    assert!(csrf.is_ok(), "the form carries Kratos's csrf_token: {page}");
    let button = c.find(Locator::Id("provider-hydra")).await.expect("hydra");
    button.click().await.expect("click hydra");
}

/// Waits until Chromium's URL satisfies `done`; its URL then.
async fn wait_until(c: &Client, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let here = at(c).await;
        if done(&here) || Instant::now() > deadline {
            return here;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The port of an `http://host:port` origin.
fn port_of(origin: &str) -> &str {
    origin.rsplit(':').next().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Tests

/// The whole browser sign-in, in Chromium: `/app/dashboard` → Kratos's login flow → the login page
/// → the `hydra` provider → Hydra and its acceptor → the callback on the custom domain → back on
/// `/app/dashboard`, signed in, with the identity headers; every Kratos URL Chromium requested was
/// on the public origin, and Kratos gave Hydra the callback on the custom domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_with_hydra_through_the_edge() {
    let started = Instant::now();
    let (stack, app, _driver, c) = start(StackOpts::default()).await;
    let ready = started.elapsed();
    sign_in_with_hydra(&stack, &app, &c).await;
    let dashboard = stack.at("/app/dashboard");
    let here = wait_until(&c, |u| u == dashboard).await;
    let page = c.source().await.unwrap_or_default();
    let kratos_log = stack.log_tail("kratos");
    assert_eq!(here, dashboard, "{page}\nkratos:\n{kratos_log}");
    let signed_in = started.elapsed();

    // The page the application served through the session route.
    let text = |id: &'static str| {
        let c = c.clone();
        async move { c.find(Locator::Id(id)).await.unwrap().text().await.unwrap() }
    };
    assert_eq!(text("greeting").await, format!("Signed in as {EMAIL}"));
    assert_eq!(text("x-user-email").await, EMAIL);
    let (identity_id, session_id) = (text("x-user-id").await, text("x-session-id").await);
    let app_hits = app.requests("/app");
    assert_eq!(app_hits.len(), 1, "{app_hits:?}");
    assert_eq!(app_hits[0].target, "/app/dashboard");
    assert_eq!(app_hits[0].header("x-user-email"), Some(EMAIL));
    let ui_hits = app.requests("/ui/");
    assert_eq!(ui_hits.len(), 1, "no error page: {ui_hits:?}");
    let ui_cookies = ui_hits[0].header("cookie").unwrap_or_default();
    assert!(ui_cookies.contains("csrf_token_"), "{ui_cookies}");

    // Chromium's cookie jar: the session cookie of the public host (host-only, Path=/) ...
    let cookie = c.get_named_cookie("ory_kratos_session").await;
    let cookie = cookie.expect("ory_kratos_session in Chromium's jar for the public host");
    assert!(!cookie.value().is_empty());
    assert_eq!(cookie.path(), Some("/"));
    let domain = cookie.domain();
    assert!(matches!(domain, Some("127.0.0.1") | None), "{cookie:?}");
    // ... which real Kratos knows as alice's session, the one the application was told about.
    let r = client()
        .get(format!("{}/sessions/whoami", stack.kratos_public))
        .header("Cookie", format!("ory_kratos_session={}", cookie.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let whoami: Value = r.json().await.unwrap();
    assert_eq!(whoami["identity"]["traits"]["email"], EMAIL);
    assert_eq!(whoami["identity"]["id"], identity_id.as_str());
    assert_eq!(whoami["id"], session_id.as_str());

    // Every request Chromium sent, redirect hops included: loopback only, Kratos only on the edge.
    let sent = requests_sent(&c).await;
    let public_base = format!("{}/", stack.kratos_base);
    for s in &sent {
        // (chrome:// and data: URLs are the browser's own: its first tab's new-tab page)
        let url = Url::parse(&s.url).expect("a URL");
        if matches!(url.scheme(), "chrome" | "data") {
            continue;
        }
        assert_eq!(url.host_str(), Some("127.0.0.1"), "{s:?}");
        for port in [port_of(&stack.kratos_public), port_of(&stack.kratos_admin)] {
            let (plain, encoded) = (format!(":{port}"), format!("%3A{port}"));
            let reached = s.url.contains(&plain) || s.url.contains(&encoded);
            assert!(!reached, "Chromium went to Kratos past the edge: {s:?}");
        }
        if s.url.contains("/self-service/") || s.url.contains("/sessions") {
            assert!(s.url.starts_with(&public_base), "{s:?}");
        }
    }
    // The navigations in order (each step a prefix of one of them; Hydra's hops in between).
    let docs: Vec<&Sent> = sent.iter().filter(|s| s.kind == "Document").collect();
    let chain: Vec<String> = docs
        .iter()
        .map(|s| format!("{} {}", s.method, s.url))
        .collect();
    let return_to: String = url::form_urlencoded::byte_serialize(dashboard.as_bytes()).collect();
    let edge = &stack.kratos_base;
    let expected = [
        format!("GET {dashboard}"),
        format!("GET {edge}/self-service/login/browser?return_to={return_to}"),
        format!("GET {}", stack.at("/ui/login?flow=")),
        format!("POST {edge}/self-service/login?flow="),
        format!("GET {}", stack.at("/oauth2/auth?")),
        format!("GET {edge}{CALLBACK}?code="),
        format!("GET {dashboard}"),
    ];
    let mut from = 0;
    for step in &expected {
        let Some(i) = chain[from..]
            .iter()
            .position(|c| c.starts_with(step.as_str()))
        else {
            panic!("no `{step}` after navigation {from}:\n{chain:#?}");
        };
        from += i + 1;
    }
    assert_eq!(from, chain.len(), "ends on the dashboard: {chain:#?}");
    // The redirect_uri Kratos gave Hydra, as Chromium carried it: the callback on the custom domain.
    let to_hydra = docs
        .iter()
        .find(|s| s.url.starts_with(&stack.at("/oauth2/auth?")));
    let to_hydra = &to_hydra.unwrap().url;
    let redirect_uri = query_param(to_hydra, "redirect_uri");
    let callback = format!("{edge}{CALLBACK}");
    assert_eq!(redirect_uri, Some(callback), "{to_hydra}");
    assert_eq!(stack.proxy.metric(MISMATCHES).await, 0.0);

    c.close().await.expect("close the browser");
    let (n, navigations, total) = (sent.len(), docs.len(), started.elapsed());
    eprintln!(
        "browser sign-in: stack and Chromium ready after {ready:?}, signed in after {signed_in:?} \
         ({n} requests, {navigations} navigations), done after {total:?}"
    );
}

/// Kratos misconfigured with its internal `base_redirect_uri`: Hydra is handed a callback past the
/// edge. Hydra refuses the unregistered `redirect_uri`, so the user (Chromium) ends on Hydra's error
/// page instead of signed in; sessiongate counts the mismatch and warns, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_base_redirect_uri_is_reported_and_refused_by_hydra() {
    let log = WarnLog::get();
    let started = Instant::now();
    let opts = StackOpts {
        internal_base_redirect_uri: true,
        ..StackOpts::default()
    };
    let (stack, app, _driver, c) = start(opts).await;
    let internal_callback = format!("{}{CALLBACK}", stack.kratos_public);
    let expected_callback = format!("{}{CALLBACK}", stack.kratos_base);

    // What the user sees: Chromium ends on Hydra's error page (the acceptor's /error).
    sign_in_with_hydra(&stack, &app, &c).await;
    let here = wait_until(&c, |u| u.contains("/error?")).await;
    assert!(here.contains("/error?"), "Hydra's error page, not {here}");
    let error = query_param(&here, "error");
    assert_eq!(error.as_deref(), Some("invalid_request"), "{here}");
    let page = c.source().await.unwrap();
    assert!(page.contains("redirect_uri"), "{page}");
    assert!(c.get_named_cookie("ory_kratos_session").await.is_err());
    assert!(app.requests("/app").is_empty(), "never signed in");
    let sent = requests_sent(&c).await;
    let to_hydra = sent
        .iter()
        .find(|s| s.url.starts_with(&stack.at("/oauth2/auth?")));
    let to_hydra = &to_hydra.expect("Chromium went to Hydra").url;
    let redirect_uri = query_param(to_hydra, "redirect_uri");
    assert_eq!(redirect_uri.as_deref(), Some(internal_callback.as_str()));
    let after_browser = stack.proxy.metric(MISMATCHES).await;
    c.close().await.expect("close the browser");

    // The same submission with a plain browser client: the Location Kratos sent, which sessiongate
    // leaves alone (the provider URL and its redirect_uri are never rewritten).
    let (b, _jar) = browser();
    let r = b
        .get(format!("{}/self-service/login/browser", stack.kratos_base))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let flow: Value = r.json().await.unwrap();
    let action = flow["ui"]["action"].as_str().unwrap();
    let form = [("csrf_token", csrf_of(&flow)), ("provider", "hydra".into())];
    let r = b.post(action).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let authorize = stack.at("/oauth2/auth?");
    assert!(location.starts_with(&authorize), "{location}");
    let redirect_uri = query_param(&location, "redirect_uri");
    assert_eq!(redirect_uri.as_deref(), Some(internal_callback.as_str()));

    // sessiongate's report: counted at the browser's submission, once however many follow, and one
    // warning naming the redirect_uri it saw and the callback it expected.
    assert_eq!(after_browser, 1.0, "counted at the browser's submission");
    assert_eq!(stack.proxy.metric(MISMATCHES).await, 1.0, "counted once");
    let warnings = log.lines_with(&internal_callback);
    assert_eq!(warnings.len(), 1, "one warning: {warnings:#?}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains(&expected_callback), "{}", warnings[0]);
    assert!(warnings[0].contains("base_redirect_uri"), "{}", warnings[0]);
    eprintln!(
        "misconfigured redirect_uri: done after {:?}",
        started.elapsed()
    );
}
