//! A purge wins over everything in flight, and a logout ends the session, not one credential.
//!
//! - A whoami answer that Kratos decided before a logout and that arrives after it is given to the
//!   request that asked, but never cached; requests that arrive after the logout do not join that
//!   older call.
//! - Purging a credential purges every credential that resolved to the same session (a session
//!   cookie re-issued by Kratos on refresh or step-up is a new value for the same session).
//!
//! The Kratos double answers after a delay that starts once the answer is decided
//! (`set_answer_delay`), like a slow network between Kratos and the proxy.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn config(kratos: &str, upstream: &str) -> String {
    format!(
        r#"
[server]
public_url = "{{PROXY}}"

[kratos]
public_url = "{kratos}"
timeout = "3s"

[cache]
max_ttl = "5m"
negative_ttl = "0s"

[[routes]]
name = "kratos"
path_prefix = "/.ory"
kratos_edge = true

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

struct Lab {
    kratos: KratosDouble,
    proxy: TestProxy,
    _upstream: EchoUpstream,
}

async fn lab() -> Lab {
    let kratos = KratosDouble::start().await;
    let upstream = EchoUpstream::start().await;
    let proxy = TestProxy::start(&config(&kratos.url(), &upstream.url()));
    Lab {
        kratos,
        proxy,
        _upstream: upstream,
    }
}

async fn api(p: &TestProxy, header: (&str, &str)) -> u16 {
    client()
        .get(p.url("/api/x"))
        .header(header.0, header.1)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Waits until the double has received `n` whoami calls.
async fn whoami_calls_reach(k: &KratosDouble, n: usize) {
    for _ in 0..200 {
        if k.whoami_calls() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "the double saw {} whoami calls, waited for {n}",
        k.whoami_calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_while_whoami_is_in_flight_wins() {
    let l = lab().await;
    l.kratos.add_session("tok-race", SessionSpec::default());
    l.kratos.set_answer_delay(Duration::from_millis(700));

    // R1 asks Kratos; Kratos decides "valid" at once, the answer takes 700 ms to arrive
    let proxy = l.proxy.url("");
    let r1 = tokio::spawn(async move {
        client()
            .get(format!("{proxy}/api/x"))
            .header("X-Session-Token", "tok-race")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    });
    whoami_calls_reach(&l.kratos, 1).await;

    // the logout, through the edge, while R1's answer is on its way
    let r = client()
        .delete(l.proxy.url("/.ory/self-service/logout/api"))
        .json(&json!({ "session_token": "tok-race" }))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 204);

    // R2 arrives after the logout: it must not join R1's call
    assert_eq!(api(&l.proxy, ("X-Session-Token", "tok-race")).await, 401);
    assert_eq!(r1.await.expect("r1"), 200, "R1 asked before the logout");
    l.kratos.set_answer_delay(Duration::ZERO);
    // R1's answer was not cached after the purge
    assert_eq!(api(&l.proxy, ("X-Session-Token", "tok-race")).await, 401);
    assert_eq!(
        l.kratos.whoami_calls(),
        3,
        "R1, R2 and R3 each asked Kratos"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_while_another_credential_of_it_is_in_flight_is_not_cached() {
    let l = lab().await;
    let spec = SessionSpec::default();
    let s: Value = l.kratos.add_session("cookie-a", spec.clone());
    let session_id = s["id"].as_str().expect("session id").to_owned();
    // another session of the same identity revokes this one by id
    l.kratos.add_session("tok-other", spec);
    l.kratos.set_answer_delay(Duration::from_millis(700));

    let proxy = l.proxy.url("");
    let r1 = tokio::spawn(async move {
        client()
            .get(format!("{proxy}/api/x"))
            .header("Cookie", "ory_kratos_session=cookie-a")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    });
    whoami_calls_reach(&l.kratos, 1).await;
    let r = client()
        .delete(l.proxy.url(&format!("/.ory/sessions/{session_id}")))
        .header("X-Session-Token", "tok-other")
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 204);
    assert_eq!(r1.await.expect("r1"), 200, "asked before the revocation");
    l.kratos.set_answer_delay(Duration::ZERO);
    let before = l.kratos.whoami_calls();
    assert_eq!(
        api(&l.proxy, ("Cookie", "ory_kratos_session=cookie-a")).await,
        401
    );
    assert_eq!(
        l.kratos.whoami_calls(),
        before + 1,
        "asked again: nothing was cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_with_a_reissued_cookie_ends_every_credential_of_the_session() {
    let l = lab().await;
    l.kratos.add_session("cookie-a", SessionSpec::default());
    // Kratos re-issues the session cookie (refresh, step-up): B, the same session
    assert!(l.kratos.add_credential_alias("cookie-a", "cookie-b"));
    let a = ("Cookie", "ory_kratos_session=cookie-a");
    let b = ("Cookie", "ory_kratos_session=cookie-b");
    assert_eq!(api(&l.proxy, a).await, 200);
    assert_eq!(api(&l.proxy, b).await, 200);
    assert_eq!(api(&l.proxy, a).await, 200, "A is used again (cached)");
    assert_eq!(l.kratos.whoami_calls(), 2);

    // browser logout with B, through the edge
    let r = client()
        .get(l.proxy.url("/.ory/self-service/logout/browser"))
        .header("Cookie", "ory_kratos_session=cookie-b")
        .header("Accept", "application/json")
        .send()
        .await
        .expect("logout url");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let logout_url = v["logout_url"].as_str().expect("logout_url").to_owned();
    let r = client()
        .get(&logout_url)
        .header("Cookie", "ory_kratos_session=cookie-b")
        .send()
        .await
        .expect("logout");
    assert!(r.status().is_redirection(), "{}", r.status());

    // A is a credential of the logged-out session: refused at once, not after max_ttl (5 min)
    assert_eq!(api(&l.proxy, a).await, 401);
    assert_eq!(api(&l.proxy, b).await, 401);
    assert_eq!(l.kratos.whoami_calls(), 4, "both asked Kratos again");
    assert_eq!(l.proxy.shared.runtime().store.indexed_credentials(), 0);
}
