//! How sessiongate reads whoami answers that are not Kratos's usual ones. Only Kratos's 401, or a
//! 200 session with `active: false`, rejects a credential; anything else that is not a session is
//! "Kratos unavailable": 503 with `Retry-After`, never remembered as a rejection, never dropping a
//! `stale_if_error` copy. Native clients drop their token on a 401, so one bad minute of a gateway
//! in front of Kratos must not log everybody out.
//!
//! Kratos here is a canned answer on a raw socket (fault injection: a WAF page, a redirect, a body
//! that is not a session), switchable between requests, counting the whoami calls it gets.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use sessiongate_testkit::{session_json, SessionSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A "Kratos" that answers every request with the current canned bytes.
struct Canned {
    url: String,
    answer: Arc<Mutex<Vec<u8>>>,
    calls: Arc<AtomicUsize>,
}

impl Canned {
    async fn start() -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let answer = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let (a, c) = (Arc::clone(&answer), Arc::clone(&calls));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (a, c) = (Arc::clone(&a), Arc::clone(&c));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // one request per connection: read the head, answer, close
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                    let bytes = a.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let _ = s.write_all(&bytes).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Canned { url, answer, calls }
    }

    fn set(&self, status: &str, headers: &[&str], body: &str) {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for h in headers {
            r.push_str(h);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.push_str(body);
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = r.into_bytes();
    }

    fn set_session(&self, mut v: serde_json::Value, patch: impl Fn(&mut serde_json::Value)) {
        patch(&mut v);
        self.set(
            "200 OK",
            &["Content-Type: application/json"],
            &v.to_string(),
        );
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Puts one canned answer in place.
type SetAnswer = Box<dyn Fn(&Canned)>;

fn config(kratos: &str, upstream: &str, cache: &str) -> String {
    format!(
        r#"
[kratos]
public_url = "{kratos}"
timeout = "2s"
circuit_breaker_failures = 0

[cache]
{cache}

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{upstream}"
auth = "session"
[routes.identity_headers]
"X-User-Id" = "identity.id"
"#
    )
}

async fn get(p: &TestProxy) -> reqwest::Response {
    client()
        .get(p.url("/api/x"))
        .header("X-Session-Token", "tok-1")
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_are_not_sessions_are_503_and_never_remembered_as_rejections() {
    let kratos = Canned::start().await;
    let upstream = EchoUpstream::start().await;
    let proxy = TestProxy::start(&config(
        &kratos.url,
        &upstream.url(),
        "max_ttl = \"60s\"\nnegative_ttl = \"60s\"",
    ));
    let valid = session_json("s-1", &SessionSpec::default());
    let cases: Vec<(&str, SetAnswer)> = vec![
        (
            "403 from a WAF",
            Box::new(|k: &Canned| {
                k.set(
                    "403 Forbidden",
                    &["Content-Type: text/html"],
                    "<html>Request blocked</html>",
                )
            }),
        ),
        (
            "403 JSON that is not session_aal2_required",
            Box::new(|k: &Canned| {
                k.set(
                    "403 Forbidden",
                    &["Content-Type: application/json"],
                    r#"{"error":{"code":403,"status":"Forbidden","message":"Access denied"}}"#,
                )
            }),
        ),
        (
            "404",
            Box::new(|k: &Canned| {
                k.set(
                    "404 Not Found",
                    &["Content-Type: application/json"],
                    r#"{"error":{"code":404,"status":"Not Found"}}"#,
                )
            }),
        ),
        (
            "302 to a login page",
            Box::new(|k: &Canned| {
                k.set(
                    "302 Found",
                    &["Location: https://sso.example.com/login"],
                    "",
                )
            }),
        ),
        (
            "200 HTML",
            Box::new(|k: &Canned| {
                k.set(
                    "200 OK",
                    &["Content-Type: text/html"],
                    "<html>maintenance</html>",
                )
            }),
        ),
        (
            "200 without identity",
            Box::new({
                let v = valid.clone();
                move |k: &Canned| {
                    k.set_session(v.clone(), |s| {
                        s.as_object_mut().unwrap().remove("identity");
                    })
                }
            }),
        ),
        (
            "200 with identity.id a number",
            Box::new({
                let v = valid.clone();
                move |k: &Canned| {
                    k.set_session(v.clone(), |s| s["identity"]["id"] = serde_json::json!(42))
                }
            }),
        ),
        (
            "200 with active a string",
            Box::new({
                let v = valid.clone();
                move |k: &Canned| {
                    k.set_session(v.clone(), |s| s["active"] = serde_json::json!("true"))
                }
            }),
        ),
        (
            "200 with expires_at not a date",
            Box::new({
                let v = valid.clone();
                move |k: &Canned| {
                    k.set_session(v.clone(), |s| s["expires_at"] = serde_json::json!("soon"))
                }
            }),
        ),
    ];
    for (name, set) in &cases {
        set(&kratos);
        let before = kratos.calls();
        for round in 0..2 {
            let r = get(&proxy).await;
            assert_eq!(r.status(), 503, "{name} (request {round})");
            assert!(
                r.headers().contains_key("retry-after"),
                "{name}: Retry-After"
            );
        }
        // asked both times: a fault is never remembered (negative_ttl is 60 s here)
        assert_eq!(kratos.calls() - before, 2, "{name}: whoami calls");
    }
    assert_eq!(upstream.count(), 0);

    // Kratos's own rejections are 401 (and remembered for negative_ttl)
    kratos.set_session(valid.clone(), |s| s["active"] = serde_json::json!(false));
    let before = kratos.calls();
    assert_eq!(get(&proxy).await.status(), 401);
    assert_eq!(get(&proxy).await.status(), 401);
    assert_eq!(
        kratos.calls() - before,
        1,
        "an inactive session is a cached rejection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_keeps_the_stale_copy_and_a_rejection_drops_it() {
    let kratos = Canned::start().await;
    let upstream = EchoUpstream::start().await;
    // max_ttl 0: every request asks Kratos; stale_if_error serves the last validation on a fault
    let proxy = TestProxy::start(&config(
        &kratos.url,
        &upstream.url(),
        "max_ttl = \"0s\"\nnegative_ttl = \"0s\"\nstale_if_error = \"5m\"",
    ));
    let valid = session_json("s-2", &SessionSpec::default());
    kratos.set_session(valid.clone(), |_| {});
    assert_eq!(get(&proxy).await.status(), 200);
    kratos.set(
        "403 Forbidden",
        &["Content-Type: text/html"],
        "<html>WAF</html>",
    );
    assert_eq!(
        get(&proxy).await.status(),
        200,
        "served stale through a WAF page"
    );
    kratos.set_session(valid.clone(), |s| {
        s.as_object_mut().unwrap().remove("identity");
    });
    assert_eq!(
        get(&proxy).await.status(),
        200,
        "served stale through a non-session"
    );
    assert_eq!(
        proxy
            .metric("sessiongate_stale_sessions_served_total{route=\"api\"}")
            .await,
        2.0
    );
    kratos.set("401 Unauthorized", &["Content-Type: application/json"], r#"{"error":{"code":401,"status":"Unauthorized","reason":"No valid session credentials found in the request.","message":"The request could not be authorized"}}"#);
    assert_eq!(get(&proxy).await.status(), 401);
    kratos.set("500 Internal Server Error", &[], "");
    assert_eq!(
        get(&proxy).await.status(),
        503,
        "the 401 dropped the stale copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_expired_by_our_clock_but_active_for_kratos_is_forwarded_and_not_cached() {
    let kratos = Canned::start().await;
    let upstream = EchoUpstream::start().await;
    let proxy = TestProxy::start(&config(
        &kratos.url,
        &upstream.url(),
        "max_ttl = \"60s\"\nnegative_ttl = \"60s\"",
    ));
    let spec = SessionSpec::default();
    let id = spec.identity_id.clone();
    kratos.set_session(session_json("s-3", &spec), |s| {
        s["expires_at"] = serde_json::json!("2001-01-01T00:00:00Z");
    });
    for _ in 0..2 {
        assert_eq!(get(&proxy).await.status(), 200);
    }
    assert_eq!(kratos.calls(), 2, "never cached");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("x-user-id"), Some(id.as_str()));
}

/// `stale_if_error` counts from the latest validation: a session validated at 0 s and again at
/// 1.2 s is still served stale at 2.4 s with a 2 s window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stale_window_counts_from_the_latest_validation() {
    let kratos = Canned::start().await;
    let upstream = EchoUpstream::start().await;
    let proxy = TestProxy::start(&config(
        &kratos.url,
        &upstream.url(),
        "max_ttl = \"0s\"\nnegative_ttl = \"0s\"\nstale_if_error = \"2s\"",
    ));
    let started = std::time::Instant::now();
    kratos.set_session(session_json("s-4", &SessionSpec::default()), |_| {});
    assert_eq!(get(&proxy).await.status(), 200);
    tokio::time::sleep_until((started + std::time::Duration::from_millis(1200)).into()).await;
    assert_eq!(get(&proxy).await.status(), 200);
    kratos.set("500 Internal Server Error", &[], "");
    tokio::time::sleep_until((started + std::time::Duration::from_millis(2400)).into()).await;
    assert_eq!(
        get(&proxy).await.status(),
        200,
        "served stale: validated 1.2 s ago"
    );
    assert_eq!(kratos.calls(), 3);
}
