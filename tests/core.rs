//! The core contract over real HTTP: routing, credentials, auth modes, Kratos answers, identity
//! headers, admin listener, request ids.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

async fn get(w: &World, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = client().get(w.proxy.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.expect("request")
}

async fn json(r: reqwest::Response) -> Value {
    r.json().await.expect("json body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_route_forwards_without_whoami_and_strips_identity_headers() {
    let w = World::start().await;
    w.login("tok-a");
    let r = get(
        &w,
        "/public/x?q=1&return_to=%2F..",
        &[
            ("X-Session-Token", "tok-a"),
            ("X-User-Id", "spoofed"),
            ("x-user-email", "spoofed@evil"),
            ("X-Sessiongate-Anything", "spoofed"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        w.kratos.whoami_calls(),
        0,
        "anonymous routes never call whoami"
    );
    let seen = w.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/public/x");
    assert_eq!(seen[0].query.as_deref(), Some("q=1&return_to=%2F.."));
    assert_eq!(seen[0].header("x-user-id"), None);
    assert_eq!(seen[0].header("x-user-email"), None);
    assert_eq!(seen[0].header("x-sessiongate-anything"), None);
    assert!(seen[0].header("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_route_forwards_identity_and_overrides_spoofed_headers() {
    let w = World::start().await;
    let id = w.login("tok-b");
    let r = get(
        &w,
        "/api/me",
        &[
            ("X-Session-Token", "tok-b"),
            ("X-User-Id", "spoofed"),
            ("X-USER-ID", "spoofed-again"),
            ("X-User-Phone", "spoofed-phone"),
            ("Connection", "X-User-Id"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-request-id").is_some());
    let seen = &w.upstream.requests()[0];
    assert_eq!(seen.header_all("x-user-id"), vec![id.as_str()]);
    assert_eq!(seen.header("x-user-email"), Some("user@example.com"));
    assert!(seen.header("x-session-id").is_some());
    // Non-string values are compact JSON; a missing path leaves the header absent (and the spoofed
    // copy is gone).
    let name: Value =
        serde_json::from_str(seen.header("x-user-name").expect("name")).expect("json");
    assert!(name.is_object(), "{name}");
    assert_eq!(seen.header("x-user-phone"), None);
    // The credential went to whoami exactly as sent, alone, with GET on the fixed path.
    let calls = w.kratos.requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].path_and_query, "/sessions/whoami");
    assert_eq!(calls[0].header("x-session-token"), Some("tok-b"));
    assert_eq!(calls[0].header("cookie"), None);
    assert_eq!(calls[0].header("authorization"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_precedence_matches_kratos() {
    let w = World::start().await;
    w.login("cookie-val");
    w.login("bearer-val");
    // An invalid X-Session-Token plus a valid cookie is a 401, as in Kratos.
    let r = get(
        &w,
        "/api/x",
        &[
            ("X-Session-Token", "bogus"),
            ("Cookie", "ory_kratos_session=cookie-val"),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        w.kratos.requests()[0].header("x-session-token"),
        Some("bogus")
    );
    assert_eq!(w.kratos.requests()[0].header("cookie"), None);
    w.kratos.reset_calls();

    let r = get(
        &w,
        "/api/x",
        &[("Cookie", "a=b; ory_kratos_session=cookie-val; c=d")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let call = &w.kratos.requests()[0];
    assert_eq!(
        call.header("cookie"),
        Some("ory_kratos_session=cookie-val"),
        "only the session cookie goes to Kratos"
    );
    w.kratos.reset_calls();

    let r = get(&w, "/api/x", &[("Authorization", "bearer bearer-val")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        w.kratos.requests()[0].header("authorization"),
        Some("Bearer bearer-val")
    );

    // Bearer with extra parts is no credential: 401 without asking Kratos.
    w.kratos.reset_calls();
    let r = get(
        &w,
        "/api/x",
        &[("Authorization", "Bearer bearer-val extra")],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(w.kratos.whoami_calls(), 0);

    // Two X-Session-Token headers are ambiguous: 400.
    let r = get(
        &w,
        "/api/x",
        &[("X-Session-Token", "a"), ("X-Session-Token", "b")],
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_json_and_redirect_modes() {
    let w = World::start().await;
    let r = get(&w, "/api/x", &[]).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let b = json(r).await;
    assert_eq!(b["error"]["code"], 401);
    assert_eq!(b["error"]["status"], "Unauthorized");
    assert_eq!(w.upstream.count(), 0);

    // Redirect mode: 303 to the login URL, return_to from server.public_url, never from client headers.
    let r = get(
        &w,
        "/web/page?x=1",
        &[
            ("Host", "evil.example.net"),
            ("X-Forwarded-Host", "evil.example.net"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let url = url::Url::parse(&loc).expect("absolute");
    assert_eq!(
        url.origin().ascii_serialization(),
        "https://app.example.com"
    );
    assert_eq!(url.path(), "/login");
    let return_to: Vec<_> = url
        .query_pairs()
        .filter(|(k, _)| k == "return_to")
        .collect();
    assert_eq!(return_to.len(), 1);
    assert_eq!(return_to[0].1, "https://app.example.com/web/page?x=1");

    // Non-navigations get 401 JSON even in redirect mode.
    let r = client()
        .post(w.proxy.url("/web/page"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    assert_eq!(w.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_route_forwards_with_or_without_identity() {
    let w = World::start().await;
    let id = w.login("tok-o");
    assert_eq!(
        get(&w, "/maybe/a", &[("X-Session-Token", "tok-o")])
            .await
            .status(),
        200
    );
    assert_eq!(get(&w, "/maybe/b", &[]).await.status(), 200);
    assert_eq!(
        get(
            &w,
            "/maybe/c",
            &[("X-Session-Token", "wrong"), ("X-User-Id", "spoof")]
        )
        .await
        .status(),
        200
    );
    let seen = w.upstream.requests();
    assert_eq!(seen[0].header("x-user-id"), Some(id.as_str()));
    assert_eq!(seen[1].header("x-user-id"), None);
    assert_eq!(seen[2].header("x-user-id"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_rate_limit_and_outages() {
    // The breaker would (rightly) open during this string of failures; it has its own test.
    let w = World::start_with(&[("SESSIONGATE__KRATOS__CIRCUIT_BREAKER_FAILURES", "0")]).await;
    w.login("t1");

    // A session below the route's require_aal: 403 with a step-up URL.
    let r = get(&w, "/admin/x", &[("X-Session-Token", "t1")]).await;
    assert_eq!(r.status(), 403);
    let b = json(r).await;
    assert!(
        b["redirect_browser_to"]
            .as_str()
            .expect("url")
            .contains("aal=aal2"),
        "{b}"
    );

    // Kratos says aal2 is required.
    w.kratos.set_behavior(Behavior::Aal2Required);
    let r = get(&w, "/api/x", &[("X-Session-Token", "t2-unknown-but-valid")]).await;
    // The double answers 401 for unknown credentials even in this mode; use a known one.
    assert_eq!(r.status(), 401);
    w.login("t2");
    let r = get(&w, "/api/x", &[("X-Session-Token", "t2")]).await;
    assert_eq!(r.status(), 403);
    let b = json(r).await;
    assert_eq!(b["error"]["id"], "session_aal2_required");
    assert!(b["redirect_browser_to"]
        .as_str()
        .expect("redirect")
        .starts_with(&w.kratos.url()));
    w.login("t2b");
    let r = get(&w, "/web/x", &[("X-Session-Token", "t2b")]).await;
    assert_eq!(
        r.status(),
        303,
        "redirect mode sends browsers to the step-up"
    );

    w.kratos
        .set_behavior(Behavior::RateLimited { retry_after: 7 });
    w.login("t3");
    let r = get(&w, "/api/x", &[("X-Session-Token", "t3")]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");

    w.kratos.set_behavior(Behavior::ServerError);
    let r = get(&w, "/api/x", &[("X-Session-Token", "t3")]).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());

    w.kratos.set_behavior(Behavior::Garbage);
    assert_eq!(
        get(&w, "/api/x", &[("X-Session-Token", "t3")])
            .await
            .status(),
        503
    );
    w.kratos.set_behavior(Behavior::InvalidSession);
    assert_eq!(
        get(&w, "/api/x", &[("X-Session-Token", "t3")])
            .await
            .status(),
        503
    );
    w.kratos.set_behavior(Behavior::CloseMidResponse);
    assert_eq!(
        get(&w, "/api/x", &[("X-Session-Token", "t3")])
            .await
            .status(),
        503
    );

    // Slower than kratos.timeout (300ms): 503 within about the timeout.
    w.kratos.set_behavior(Behavior::Normal);
    w.kratos.set_delay(Duration::from_secs(3));
    let started = std::time::Instant::now();
    let r = get(&w, "/api/x", &[("X-Session-Token", "t3")]).await;
    assert_eq!(r.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    w.kratos.set_delay(Duration::ZERO);

    // Refused connections: 503. None of it reached the upstream.
    w.kratos.stop().await;
    assert_eq!(
        get(&w, "/api/x", &[("X-Session-Token", "t3")])
            .await
            .status(),
        503
    );
    assert_eq!(w.upstream.count(), 0);

    // Recovery on the very next request once Kratos is back (failures were not cached).
    w.kratos.restart().await.expect("restart");
    assert_eq!(
        get(&w, "/api/x", &[("X-Session-Token", "t3")])
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_precedence_canonical_paths_and_404() {
    let kratos = KratosDouble::start().await;
    let up = EchoUpstream::start().await;
    let cfg = format!(
        r#"
[kratos]
public_url = "{k}"
[[routes]]
name = "root"
path_prefix = "/"
upstream = "{u}"
auth = "anonymous"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{u}"
auth = "session"
[[routes]]
name = "health"
path = "/api/health"
upstream = "{u}"
auth = "anonymous"
[[routes]]
name = "host"
path_prefix = "/api"
host = "internal.example.com"
upstream = "{u}"
auth = "anonymous"
"#,
        k = kratos.url(),
        u = up.url()
    );
    let p = TestProxy::start(&cfg);
    let c = client();
    let status = |path: &'static str| {
        let c = c.clone();
        let url = p.url(path);
        async move { c.get(url).send().await.expect("req").status().as_u16() }
    };
    assert_eq!(status("/api/health").await, 200, "exact beats prefix");
    assert_eq!(status("/api/healthz").await, 401);
    assert_eq!(status("/api/x").await, 401);
    assert_eq!(status("/apix").await, 200, "/apix is not under /api");
    assert_eq!(
        status("/public/../api/x").await,
        401,
        "dot segments resolved before matching"
    );
    assert_eq!(status("//api/x").await, 401, "// merged before matching");
    let r = c
        .get(p.url("/api/x"))
        .header("Host", "internal.example.com")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 200, "host route beats the generic one");
    let last = up.requests().pop().expect("forwarded");
    assert_eq!(last.path, "/api/x");

    // The canonical path is what goes upstream.
    let r = raw(
        p.addr,
        b"GET /a/./b/../c//d?x=/../y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 200, "{r}");
    let last = up.requests().pop().expect("forwarded");
    assert_eq!(last.path, "/a/c/d");
    assert_eq!(last.query.as_deref(), Some("x=/../y"), "query untouched");

    // No route: 404 JSON.
    let only_api = format!(
        "[kratos]\npublic_url = \"{}\"\n[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"{}\"\nauth = \"anonymous\"\n",
        kratos.url(),
        up.url()
    );
    let p2 = TestProxy::start(&only_api);
    let r = client().get(p2.url("/nowhere")).send().await.expect("req");
    assert_eq!(r.status(), 404);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["code"], 404);
    let r = client().get(p2.url("/metrics")).send().await.expect("req");
    assert_eq!(r.status(), 404, "metrics are not on the public listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_are_400() {
    let w = World::start().await;
    for target in [
        "/public/%2e%2e/api/x",
        "/public/..%2fapi/x",
        "/public%2f..%2fapi",
        "/api%00",
        "/public/%5c..%5capi",
        "/public\\..\\api",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let r = raw(w.proxy.addr, req.as_bytes());
        assert_eq!(status_of(&r), 400, "{target}: {r}");
    }
    assert_eq!(w.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_health_and_metrics() {
    let w = World::start().await;
    w.login("m1");
    get(&w, "/api/x", &[("X-Session-Token", "m1")]).await;
    get(&w, "/api/x", &[("X-Session-Token", "m1")]).await;
    get(&w, "/api/x", &[]).await;
    let c = client();
    let alive = c
        .get(w.proxy.admin_url("/health/alive"))
        .send()
        .await
        .expect("alive");
    assert_eq!(alive.status(), 200);
    let ready = c
        .get(w.proxy.admin_url("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    let b: Value = ready.json().await.expect("json");
    assert_eq!(b["kratos"]["reachable"], true, "{b}");
    assert_eq!(b["listener"], "accepting");

    let text = w.proxy.metrics().await;
    for needle in [
        "sessiongate_requests_total{route=\"api\",status=\"200\"} 2",
        "sessiongate_requests_total{route=\"api\",status=\"401\"} 1",
        "sessiongate_request_duration_seconds_count{route=\"api\"} 3",
        "sessiongate_auth_decisions_total{outcome=\"authenticated\",route=\"api\"} 2",
        "sessiongate_auth_decisions_total{outcome=\"unauthenticated\",route=\"api\"} 1",
        "sessiongate_whoami_calls_total{result=\"valid\"} 1",
        "sessiongate_whoami_duration_seconds_count 1",
        "sessiongate_cache_lookups_total{result=\"hit\"} 1",
        "sessiongate_cache_lookups_total{result=\"miss\"} 1",
        "sessiongate_cache_entries 1",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert!(!text.contains("m1"), "a credential in the metrics");

    // Kratos down: readiness still 200 (it is reported, not decisive).
    w.kratos.stop().await;
    let b: Value = c
        .get(w.proxy.admin_url("/health/ready"))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(b["kratos"]["reachable"], false, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_propagated_or_generated() {
    let w = World::start().await;
    let r = get(&w, "/public/x", &[("X-Request-Id", "abc-123")]).await;
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    assert_eq!(
        w.upstream.requests()[0].header("x-request-id"),
        Some("abc-123")
    );
    let r = get(&w, "/public/x", &[("X-Request-Id", "bad id\twith junk")]).await;
    let generated = r.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    assert_ne!(generated, "bad id\twith junk");
    assert_eq!(generated.len(), 24);
    // Answers sessiongate gives itself carry it too, in header and body.
    let r = get(&w, "/api/x", &[("X-Request-Id", "rid-401")]).await;
    assert_eq!(r.headers()["x-request-id"], "rid-401");
    assert_eq!(json(r).await["error"]["request"], "rid-401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_breaks_the_process() {
    let w = World::start().await;
    // Invalid UTF-8 in a header value and in the credential.
    let r = raw(
        w.proxy.addr,
        b"GET /api/x HTTP/1.1\r\nHost: h\r\nX-Session-Token: \xff\xfe\r\nX-Other: \xc0\xae\r\nConnection: close\r\n\r\n",
    );
    assert!(matches!(status_of(&r), 400 | 401), "{r}");
    // A huge header: a clean 4xx, not a crash.
    let big = "a".repeat(64 * 1024);
    let req = format!(
        "GET /api/x HTTP/1.1\r\nHost: h\r\nX-Session-Token: {big}\r\nConnection: close\r\n\r\n"
    );
    let r = raw(w.proxy.addr, req.as_bytes());
    assert!(
        matches!(status_of(&r), 400 | 431),
        "{}",
        &r[..r.len().min(200)]
    );
    // Too many headers.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /public/x HTTP/1.1\r\nHost: h\r\n{many}Connection: close\r\n\r\n");
    assert_eq!(status_of(&raw(w.proxy.addr, req.as_bytes())), 431);
    // Still serving.
    w.login("after");
    assert_eq!(
        get(&w, "/api/x", &[("X-Session-Token", "after")])
            .await
            .status(),
        200
    );
    assert_eq!(w.upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_only_on_websocket_routes() {
    let w = World::start().await;
    let r = raw(
        w.proxy.addr,
        b"GET /public/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(status_of(&r), 400, "{r}");
    assert_eq!(w.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_json_502() {
    let kratos = KratosDouble::start().await;
    let port = free_port();
    let cfg = standard_config(&kratos.url(), &format!("http://127.0.0.1:{port}"));
    let p = TestProxy::start(&cfg);
    let r = client().get(p.url("/public/x")).send().await.expect("req");
    assert_eq!(r.status(), 502);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["code"], 502);
    assert!(
        p.metric("sessiongate_upstream_errors_total{route=\"public\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_pass_and_content_length_with_transfer_encoding_is_refused() {
    let w = World::start().await;
    let addr = w.proxy.addr;
    let ok = tokio::task::block_in_place(|| {
        raw(
            addr,
            b"POST /public/up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
    });
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert_eq!(w.upstream.requests()[0].body, b"hello");
    let bad = tokio::task::block_in_place(|| {
        raw(
            addr,
            b"POST /public/up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
    });
    assert_eq!(status_of(&bad), 400, "{bad}");
    assert_eq!(w.upstream.count(), 1);
}
