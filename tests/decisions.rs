//! The decision API (`server.decisions_listen`) over real HTTP, for every ingress convention:
//! allow with identity headers, 401, 303 for redirect routes, 403 step-up, 429 and 503 with
//! `Retry-After`, whoami once per credential across repeated questions, spoofed identity headers
//! never echoed, untrusted peers refused.

mod common;

use common::*;
use serde_json::Value;

/// How an ingress asks.
#[derive(Debug, Clone, Copy)]
enum Convention {
    Nginx,
    IngressNginx,
    ForwardAuth,
    Envoy,
    Oathkeeper,
}

const ALL: [Convention; 5] = [
    Convention::Nginx,
    Convention::IngressNginx,
    Convention::ForwardAuth,
    Convention::Envoy,
    Convention::Oathkeeper,
];

const HOST: &str = "app.example.com";

/// [`standard_config`] with 127.0.0.1 trusted and the Envoy prefix set.
fn config(w_kratos: &str, upstream: &str, trusted: &str) -> String {
    standard_config(w_kratos, upstream).replacen(
        "[server]\n",
        &format!(
            "[server]\ntrusted_proxies = [\"{trusted}\"]\ndecisions_path_prefix = \"/ext_authz\"\n"
        ),
        1,
    )
}

struct Gate {
    kratos: KratosDouble,
    _upstream: EchoUpstream,
    proxy: TestProxy,
}

async fn start(trusted: &str) -> Gate {
    let kratos = KratosDouble::start().await;
    let upstream = EchoUpstream::start().await;
    let cfg = config(&kratos.url(), &upstream.url(), trusted);
    // every failure below is its own case: the breaker has its own tests
    let proxy = TestProxy::start_with_decisions(
        &cfg,
        &[("SESSIONGATE__KRATOS__CIRCUIT_BREAKER_FAILURES", "0")],
    );
    Gate {
        kratos,
        _upstream: upstream,
        proxy,
    }
}

/// Asks the decision API about `method target` (on [`HOST`]) the way `c` does, with the
/// original request's `headers`.
async fn ask(
    g: &Gate,
    c: Convention,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let base = format!("http://{}", g.proxy.decisions.expect("decisions listener"));
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let client = client();
    let rb = match c {
        Convention::Nginx => client
            .get(format!("{base}/auth"))
            .header("host", HOST)
            .header("x-original-method", method)
            .header("x-original-uri", target),
        Convention::IngressNginx => client
            .get(format!("{base}/"))
            .header("host", "sessiongate.svc")
            .header("x-original-method", method)
            .header("x-original-url", format!("https://{HOST}{target}")),
        Convention::ForwardAuth => client
            .get(format!("{base}/"))
            .header("x-forwarded-method", method)
            .header("x-forwarded-host", HOST)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-uri", target),
        Convention::Envoy => client
            .request(m, format!("{base}/ext_authz{target}"))
            .header("host", HOST),
        Convention::Oathkeeper => client
            .request(m, format!("{base}/decisions{target}"))
            .header("host", HOST),
    };
    let mut rb = rb;
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.expect("decision request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_convention_allows_with_identity_headers_and_asks_kratos_once() {
    let g = start("127.0.0.1").await;
    for c in ALL {
        let token = format!("tok-{c:?}");
        let spec = SessionSpec {
            identity_id: format!("id-{c:?}"),
            email: format!("{c:?}@example.com").to_lowercase(),
            ..SessionSpec::default()
        };
        g.kratos.add_session(&token, spec);
        let before = g.kratos.whoami_calls();
        for _ in 0..3 {
            let r = ask(
                &g,
                c,
                "POST",
                "/api/orders?x=1",
                &[("X-Session-Token", &token), ("X-User-Id", "spoofed")],
            )
            .await;
            assert_eq!(r.status(), 200, "{c:?}");
            assert_eq!(
                r.headers()
                    .get_all("x-user-id")
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?"))
                    .collect::<Vec<_>>(),
                [format!("id-{c:?}")],
                "{c:?}: the session's id, never the client's"
            );
            assert_eq!(
                header(&r, "x-user-email"),
                Some(format!("{c:?}@example.com").to_lowercase().as_str()),
                "{c:?}"
            );
            assert!(header(&r, "x-request-id").is_some_and(|v| !v.is_empty()));
            assert_eq!(header(&r, "content-length"), Some("0"));
            assert!(r.bytes().await.expect("body").is_empty());
        }
        assert_eq!(
            g.kratos.whoami_calls() - before,
            1,
            "{c:?}: one whoami for three questions with one credential"
        );
        // optional route without a credential: allowed, and no identity header at all
        let r = ask(&g, c, "GET", "/maybe/x", &[("X-User-Id", "spoofed")]).await;
        assert_eq!(r.status(), 200, "{c:?}");
        assert_eq!(header(&r, "x-user-id"), None, "{c:?}");
        // anonymous route: allowed without asking Kratos
        let before = g.kratos.whoami_calls();
        let r = ask(&g, c, "GET", "/public/x", &[("X-Session-Token", &token)]).await;
        assert_eq!(r.status(), 200, "{c:?}");
        assert_eq!(g.kratos.whoami_calls(), before, "{c:?}");
    }
    assert!(
        g.proxy
            .metric("sessiongate_requests_total{route=\"api\",status=\"200\"}")
            .await
            >= 15.0
    );
    assert!(
        g.proxy
            .metric("sessiongate_auth_decisions_total{outcome=\"authenticated\",route=\"api\"}")
            .await
            >= 15.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_convention_denies_with_the_routes_own_answer() {
    let g = start("127.0.0.1").await;
    g.kratos.add_session("aal1", SessionSpec::default());
    for c in ALL {
        // no credential: 401 JSON with WWW-Authenticate
        let r = ask(&g, c, "GET", "/api/x", &[]).await;
        assert_eq!(r.status(), 401, "{c:?}");
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"sessiongate\""),
            "{c:?}"
        );
        let b: Value = r.json().await.expect("json");
        assert_eq!(b["error"]["code"], 401, "{c:?}");

        // unknown credential: 401 too
        let r = ask(&g, c, "GET", "/api/x", &[("X-Session-Token", "nobody")]).await;
        assert_eq!(r.status(), 401, "{c:?}");

        // redirect route: 303 to the login page with the original URL as return_to
        let r = ask(&g, c, "GET", "/web/page?a=b", &[]).await;
        assert_eq!(r.status(), 303, "{c:?}");
        let location = header(&r, "location").expect("location");
        assert!(
            location.starts_with("https://app.example.com/login?return_to="),
            "{c:?}: {location}"
        );
        assert!(location.contains("%2Fweb%2Fpage"), "{c:?}: {location}");

        // aal1 session on an aal2 route: 403 step-up
        let r = ask(&g, c, "GET", "/admin/x", &[("X-Session-Token", "aal1")]).await;
        assert_eq!(r.status(), 403, "{c:?}");
        assert_eq!(header(&r, "x-user-id"), None, "{c:?}");
        let b: Value = r.json().await.expect("json");
        assert_eq!(b["error"]["id"], "session_aal2_required", "{c:?}");
        assert!(
            b["redirect_browser_to"]
                .as_str()
                .is_some_and(|u| u.contains("aal=aal2")),
            "{c:?}: {b}"
        );

        // no route
        let r = ask(&g, c, "GET", "/nowhere", &[]).await;
        assert_eq!(r.status(), 404, "{c:?}");

        // a path that is not canonical is refused as the proxy refuses it
        let r = ask(&g, c, "GET", "/public/..%2fapi/x", &[]).await;
        assert_eq!(r.status(), 400, "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kratos_429_and_503_surface_with_retry_after() {
    let g = start("127.0.0.1").await;
    g.kratos
        .set_behavior(Behavior::RateLimited { retry_after: 7 });
    for c in ALL {
        let token = format!("limited-{c:?}");
        g.kratos.add_session(&token, SessionSpec::default());
        let r = ask(&g, c, "GET", "/api/x", &[("X-Session-Token", &token)]).await;
        assert_eq!(r.status(), 429, "{c:?}");
        assert_eq!(header(&r, "retry-after"), Some("7"), "{c:?}");
    }
    g.kratos.set_behavior(Behavior::ServerError);
    for c in ALL {
        let token = format!("down-{c:?}");
        g.kratos.add_session(&token, SessionSpec::default());
        let r = ask(&g, c, "GET", "/api/x", &[("X-Session-Token", &token)]).await;
        assert_eq!(r.status(), 503, "{c:?}");
        assert_eq!(header(&r, "retry-after"), Some("1"), "{c:?}");
        let b: Value = r.json().await.expect("json");
        assert_eq!(b["error"]["code"], 503, "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peers_and_malformed_questions_are_refused() {
    // 127.0.0.1 is not in 10.0.0.0/8: nothing is believed, not even the path forms
    let g = start("10.0.0.0/8").await;
    g.kratos.add_session("tok", SessionSpec::default());
    for c in ALL {
        let r = ask(&g, c, "GET", "/api/x", &[("X-Session-Token", "tok")]).await;
        assert_eq!(r.status(), 403, "{c:?}");
        assert!(header(&r, "x-user-id").is_none());
        let b: Value = r.json().await.expect("json");
        assert_eq!(b["error"]["code"], 403, "{c:?}");
    }
    assert_eq!(
        g.kratos.whoami_calls(),
        0,
        "an untrusted peer never costs a whoami"
    );
    assert_eq!(
        g.proxy
            .metric("sessiongate_requests_total{route=\"none\",status=\"403\"}")
            .await,
        5.0
    );
    drop(g);

    let g = start("127.0.0.1").await;
    let base = format!("http://{}", g.proxy.decisions.expect("decisions"));
    let c = client();
    // no convention at all
    let r = c.get(format!("{base}/")).send().await.expect("send");
    assert_eq!(r.status(), 400);
    // nginx without X-Original-Method
    let r = c
        .get(format!("{base}/"))
        .header("x-original-uri", "/api/x")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    // two conventions at once
    let r = c
        .get(format!("{base}/"))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/public/x")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-host", HOST)
        .header("x-forwarded-uri", "/api/x")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.expect("json");
    assert!(
        b["error"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("ambiguous")),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_questions_get_no_body_and_the_ingress_request_id_carries_over() {
    let g = start("127.0.0.1").await;
    let base = format!("http://{}", g.proxy.decisions.expect("decisions"));
    let r = client()
        .head(format!("{base}/decisions/api/x"))
        .header("host", HOST)
        .header("x-request-id", "ingress-42")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "x-request-id"), Some("ingress-42"));
    assert!(header(&r, "content-length").is_some_and(|l| l != "0"));
    assert!(r.bytes().await.expect("body").is_empty());
    // without an ingress id, sessiongate makes one
    let r = ask(&g, Convention::Oathkeeper, "GET", "/public/x", &[]).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "x-request-id").is_some_and(|v| v.len() >= 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_kratos_reissues_is_in_the_allow_answer() {
    let g = start("127.0.0.1").await;
    let spec = SessionSpec {
        set_cookie: Some("ory_kratos_session=renewed; Path=/; HttpOnly".into()),
        ..SessionSpec::default()
    };
    g.kratos.add_session("old", spec);
    let r = ask(
        &g,
        Convention::ForwardAuth,
        "GET",
        "/api/x",
        &[("cookie", "ory_kratos_session=old")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0]
        .to_str()
        .is_ok_and(|c| c.starts_with("ory_kratos_session=renewed")));
}
