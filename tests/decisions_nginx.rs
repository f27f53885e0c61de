//! The README's nginx config (section "Behind your ingress", the block after
//! `<!-- tested: tests/decisions_nginx.rs -->`) run as written by a real nginx in front of the
//! echo upstream, asking sessiongate's decision API: identity headers reach the app, client-sent
//! copies never do, 401, 403 step-up, 303 redirect, 429 and 503 with `Retry-After`, one whoami per
//! credential.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::ingress::{readme_block, substitute, workdir, Ingress};
use common::*;

const NGINX: &str = "/usr/sbin/nginx";

/// A real nginx, single process (`master_process off`, so killing its pid stops everything),
/// running the README's tested block in its own directory.
fn nginx(decisions: std::net::SocketAddr, app: &str) -> Ingress {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} is missing: install nginx (with the auth_request module), e.g. `apt-get install nginx`"
    );
    let port = free_port();
    let dir = workdir("nginx", port);
    let block = readme_block("tests/decisions_nginx.rs");
    let block = substitute(&block, "127.0.0.1:4456", &decisions.to_string());
    let block = substitute(&block, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    let block = substitute(&block, "http://127.0.0.1:3000", app);
    let d = dir.display();
    let conf = format!(
        "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {block}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let mut cmd = Command::new(NGINX);
    cmd.arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path);
    Ingress::spawn(cmd, dir, port, "error.log", Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_as_the_readme_configures_it() {
    let kratos = KratosDouble::start().await;
    let upstream = EchoUpstream::start().await;
    let cfg = standard_config(&kratos.url(), &upstream.url()).replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        1,
    );
    let proxy = TestProxy::start_with_decisions(
        &cfg,
        &[("SESSIONGATE__KRATOS__CIRCUIT_BREAKER_FAILURES", "0")],
    );
    let nginx = nginx(proxy.decisions.expect("decisions"), &upstream.url());
    let c = client();
    let get = |path: &str| c.get(nginx.url(path)).header("host", "app.example.com");

    // allowed: the app gets the session's identity, never the client's copies
    let spec = SessionSpec {
        identity_id: "user-1".into(),
        email: "one@example.com".into(),
        ..SessionSpec::default()
    };
    kratos.add_session("tok", spec);
    let before = kratos.whoami_calls();
    for _ in 0..3 {
        let r = get("/api/orders?x=1")
            .header("X-Session-Token", "tok")
            .header("X-User-Id", "spoofed")
            .header("X-User-Email", "spoofed@evil")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "{}", nginx.log());
        let seen = upstream.requests().pop().expect("reached the app");
        assert_eq!(seen.path, "/api/orders");
        assert_eq!(seen.query.as_deref(), Some("x=1"));
        assert_eq!(seen.header_all("x-user-id"), ["user-1"]);
        assert_eq!(seen.header_all("x-user-email"), ["one@example.com"]);
    }
    assert_eq!(
        kratos.whoami_calls() - before,
        1,
        "one whoami for three requests"
    );

    // optional route without a session: the client's X-User-Id is removed, not passed
    let r = get("/maybe/x")
        .header("X-User-Id", "spoofed")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let seen = upstream.requests().pop().expect("reached the app");
    assert_eq!(seen.path, "/maybe/x");
    assert!(seen.header("x-user-id").is_none(), "{seen:?}");

    // the original method is what sessiongate judges (POST with a body, asked without it)
    let r = c
        .post(nginx.url("/api/write"))
        .header("X-Session-Token", "tok")
        .body("payload")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let seen = upstream.requests().pop().expect("reached the app");
    assert_eq!(
        (seen.method.as_str(), seen.body.as_slice()),
        ("POST", &b"payload"[..])
    );

    let reached = upstream.count();
    // no credential: 401 with sessiongate's WWW-Authenticate, the app is not reached
    let r = get("/api/x").send().await.expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Bearer realm=\"sessiongate\"")
    );

    // a client's own convention headers never pick the target: nginx sets X-Original-URI and
    // -Method itself; a passed-through X-Original-URL naming the public route makes the question
    // ambiguous (400), which nginx answers with 500 through the error location
    let r = get("/api/x")
        .header("X-Original-Method", "GET")
        .header("X-Original-URI", "/public/x")
        .header("X-Original-URL", "http://app.example.com/public/x")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 500);
    let r = get("/api/x")
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Host", "app.example.com")
        .header("X-Forwarded-Uri", "/public/x")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 500);

    // aal1 session on an aal2 route: 403
    let r = get("/admin/x")
        .header("X-Session-Token", "tok")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);

    // redirect route: sessiongate's 303 and Location, through the error location
    let r = get("/web/page").send().await.expect("send");
    assert_eq!(r.status(), 303, "{}", nginx.log());
    assert!(header(&r, "location")
        .is_some_and(|l| l.starts_with("https://app.example.com/login?return_to=")));

    // Kratos rate-limits: 429 with sessiongate's Retry-After
    kratos.set_behavior(Behavior::RateLimited { retry_after: 7 });
    kratos.add_session("fresh-1", SessionSpec::default());
    let r = get("/api/x")
        .header("X-Session-Token", "fresh-1")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 429, "{}", nginx.log());
    assert_eq!(header(&r, "retry-after"), Some("7"));

    // Kratos fails: 503 with Retry-After
    kratos.set_behavior(Behavior::ServerError);
    kratos.add_session("fresh-2", SessionSpec::default());
    let r = get("/api/x")
        .header("X-Session-Token", "fresh-2")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 503, "{}", nginx.log());
    assert_eq!(header(&r, "retry-after"), Some("1"));

    assert_eq!(
        upstream.count(),
        reached,
        "no denied request reached the app"
    );
    drop(nginx);
    drop(proxy);
}
