//! URLs sessiongate itself sends browsers to are public: step-up redirects (the 303 and the 403
//! JSON's `redirect_browser_to`), login redirects and a session cookie Kratos re-issued during
//! whoami go through the Kratos edge's rewriting when there is an edge route, or use
//! `kratos.login_url`'s origin; never the internal `kratos.public_url`.

mod common;

use common::*;
use serde_json::Value;

fn config(kratos: &str, upstream: &str, edge: bool, login_url: &str) -> String {
    let edge_route = if edge {
        "[[routes]]\nname = \"kratos\"\npath_prefix = \"/.ory\"\nkratos_edge = true\n"
    } else {
        ""
    };
    format!(
        r#"
[server]
public_url = "{{PROXY}}"

[kratos]
public_url = "{kratos}"
timeout = "2s"
login_url = "{login_url}"

[cache]
max_ttl = "0s"
negative_ttl = "0s"

{edge_route}
[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "{upstream}"
auth = "session"
require_aal = "aal2"
on_unauthenticated = "redirect"

[[routes]]
name = "web"
path_prefix = "/web"
upstream = "{upstream}"
auth = "session"
on_unauthenticated = "redirect"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{upstream}"
auth = "session"
require_aal = "aal2"
"#
    )
}

async fn get(p: &TestProxy, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut rq = client().get(p.url(path));
    if let Some(t) = token {
        rq = rq.header("Cookie", format!("ory_kratos_session={t}"));
    }
    rq.send().await.expect("request")
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_edge_step_up_and_login_redirects_and_reissued_cookies_are_public() {
    let kratos = KratosDouble::start().await;
    let upstream = EchoUpstream::start().await;
    // login_url left on Kratos's internal address: the edge makes it public too
    let login = format!("{}/self-service/login/browser", kratos.url());
    let proxy = TestProxy::start(&config(&kratos.url(), &upstream.url(), true, &login));
    let public = proxy.url("");
    let base = format!("{public}/.ory");
    kratos.add_session(
        "aal1",
        SessionSpec {
            set_cookie: Some(
                "ory_kratos_session=reissued; Path=/; Domain=127.0.0.1; HttpOnly; Secure; SameSite=Lax"
                    .into(),
            ),
            ..SessionSpec::default()
        },
    );

    // the step-up sessiongate builds (session below require_aal): 303 in redirect mode
    let r = get(&proxy, "/admin/x", Some("aal1")).await;
    assert_eq!(r.status(), 303);
    let to = location(&r);
    assert!(
        to.starts_with(&format!("{base}/self-service/login/browser?aal=aal2")),
        "{to}"
    );
    assert!(!to.contains(&kratos.url()), "{to}");
    // the same in the 403 JSON of a non-redirect route
    let r = get(&proxy, "/api/x", Some("aal1")).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.expect("json");
    let to = v["redirect_browser_to"].as_str().unwrap_or("").to_owned();
    assert!(
        to.starts_with(&format!("{base}/self-service/login/browser?aal=aal2")),
        "{v}"
    );

    // Kratos's own step-up answer (403 session_aal2_required) carries its internal URL
    kratos.set_behavior(Behavior::Aal2Required);
    let r = get(&proxy, "/api/x", Some("aal1")).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.expect("json");
    let to = v["redirect_browser_to"].as_str().unwrap_or("").to_owned();
    assert!(
        to.starts_with(&format!("{base}/self-service/login/browser")),
        "{v}"
    );
    assert!(!to.contains(&kratos.url()), "{v}");
    kratos.set_behavior(Behavior::Normal);

    // a session cookie Kratos re-issued during whoami reaches the browser as the edge passes
    // cookies on (host-only, no Secure on a plain-HTTP public origin)
    let r = get(&proxy, "/web/page", Some("aal1")).await;
    assert_eq!(r.status(), 200);
    let cookies: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        cookies,
        vec!["ory_kratos_session=reissued; Path=/; HttpOnly; SameSite=Lax"]
    );

    // the login redirect of a browser without a session
    let r = get(&proxy, "/web/page", None).await;
    assert_eq!(r.status(), 303);
    let to = location(&r);
    assert!(
        to.starts_with(&format!("{base}/self-service/login/browser?return_to=")),
        "{to}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_edge_kratos_urls_move_to_the_login_urls_origin() {
    let kratos = KratosDouble::start().await;
    let upstream = EchoUpstream::start().await;
    let proxy = TestProxy::start(&config(
        &kratos.url(),
        &upstream.url(),
        false,
        "https://auth.example.com/self-service/login/browser",
    ));
    kratos.add_session("aal1", SessionSpec::default());
    let r = get(&proxy, "/admin/x", Some("aal1")).await;
    assert_eq!(r.status(), 303);
    let to = location(&r);
    assert!(
        to.starts_with("https://auth.example.com/self-service/login/browser?aal=aal2&return_to="),
        "{to}"
    );
}
