//! The session cache over real HTTP: coalescing, expiry bounds, negative entries, what is never
//! cached, cancellation, bounds.

mod common;

use std::time::Duration;

use common::*;

async fn api(w: &World, token: &str) -> reqwest::Response {
    client()
        .get(w.proxy.url("/api/x"))
        .header("X-Session-Token", token)
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_make_one_whoami_call() {
    let w = World::start().await;
    w.login("burst");
    w.kratos.set_delay(Duration::from_millis(150));
    let c = client();
    let url = w.proxy.url("/api/x");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            tokio::spawn(async move {
                c.get(url)
                    .header("X-Session-Token", "burst")
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.expect("join").expect("response") == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 200);
    assert_eq!(w.kratos.whoami_calls(), 1);
    assert_eq!(w.upstream.count(), 200);
    let coalesced = w
        .proxy
        .metric("sessiongate_cache_lookups_total{result=\"coalesced\"}")
        .await;
    let hits = w
        .proxy
        .metric("sessiongate_cache_lookups_total{result=\"hit\"}")
        .await;
    assert_eq!(coalesced + hits, 199.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_client_does_not_cause_a_second_call() {
    let w = World::start().await;
    w.login("cancel");
    // Slower than the client's patience, faster than kratos.timeout (300ms).
    w.kratos.set_delay(Duration::from_millis(200));
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .no_proxy()
        .build()
        .expect("client");
    let r = quick
        .get(w.proxy.url("/api/x"))
        .header("X-Session-Token", "cancel")
        .send()
        .await;
    assert!(r.is_err(), "the client gave up");
    // The call started for the cancelled client finishes and is cached; the next request uses it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(api(&w, "cancel").await.status(), 200);
    assert_eq!(w.kratos.whoami_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_do_not_call_and_expiry_is_the_minimum_of_the_bounds() {
    // expires_at bound: the session expires in 1s though max_ttl is 60s.
    let w = World::start().await;
    w.kratos.add_session(
        "short",
        SessionSpec {
            expires_in: Duration::from_millis(1200),
            ..SessionSpec::default()
        },
    );
    for _ in 0..5 {
        assert_eq!(api(&w, "short").await.status(), 200);
    }
    assert_eq!(w.kratos.whoami_calls(), 1, "hits served from the cache");
    tokio::time::sleep(Duration::from_millis(1400)).await;
    // The entry expired with the session. The double still calls it active (real Kratos would
    // answer 401): Kratos decides validity, so the session is forwarded, as under clock skew, but
    // an expires_at already past is never cached (asked again on the next request).
    let r = api(&w, "short").await;
    assert_eq!(w.kratos.whoami_calls(), 2, "entry expired with the session");
    assert_eq!(r.status(), 200);
    assert_eq!(api(&w, "short").await.status(), 200);
    assert_eq!(w.kratos.whoami_calls(), 3, "not cached");

    // Ory-Session-Cache-For bound.
    w.kratos.add_session(
        "cache-for",
        SessionSpec {
            cache_for: Some(1),
            ..SessionSpec::default()
        },
    );
    w.kratos.reset_calls();
    for _ in 0..3 {
        assert_eq!(api(&w, "cache-for").await.status(), 200);
    }
    assert_eq!(w.kratos.whoami_calls(), 1);
    // Hits during the window do not extend it.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        api(&w, "cache-for").await;
    }
    assert!(w.kratos.whoami_calls() >= 2, "a hit extended the entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ttl_bounds_and_revocation_is_seen_after_it() {
    let w = World::start_with(&[("SESSIONGATE__CACHE__MAX_TTL", "\"1s\"")]).await;
    w.login("revoked");
    assert_eq!(api(&w, "revoked").await.status(), 200);
    w.kratos.remove_session("revoked");
    assert_eq!(
        api(&w, "revoked").await.status(),
        200,
        "still cached within max_ttl"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        api(&w, "revoked").await.status(),
        401,
        "revocation seen after max_ttl"
    );
    assert_eq!(w.kratos.whoami_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_entries_and_uncacheable_answers() {
    let w = World::start().await;
    // 401 is remembered for negative_ttl (5s).
    for _ in 0..4 {
        assert_eq!(api(&w, "nobody").await.status(), 401);
    }
    assert_eq!(w.kratos.whoami_calls(), 1);
    assert_eq!(
        w.proxy
            .metric("sessiongate_cache_lookups_total{result=\"negative_hit\"}")
            .await,
        3.0
    );

    // 5xx is not cached: each request asks again.
    w.kratos.reset_calls();
    w.kratos.set_behavior(Behavior::ServerError);
    w.login("flaky");
    assert_eq!(api(&w, "flaky").await.status(), 503);
    assert_eq!(api(&w, "flaky").await.status(), 503);
    assert_eq!(w.kratos.whoami_calls(), 2);

    // 429 is not cached either.
    w.kratos.reset_calls();
    w.kratos
        .set_behavior(Behavior::RateLimited { retry_after: 2 });
    assert_eq!(api(&w, "flaky").await.status(), 429);
    assert_eq!(api(&w, "flaky").await.status(), 429);
    assert_eq!(w.kratos.whoami_calls(), 2);
    w.kratos.set_behavior(Behavior::Normal);

    // A whoami answer that re-issues the cookie is not cached, and the cookie reaches the client.
    w.kratos.reset_calls();
    w.kratos.add_session(
        "cookie-refresh",
        SessionSpec {
            set_cookie: Some("ory_kratos_session=new-value; Path=/; HttpOnly".into()),
            ..SessionSpec::default()
        },
    );
    let r = api(&w, "cookie-refresh").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["set-cookie"],
        "ory_kratos_session=new-value; Path=/; HttpOnly"
    );
    api(&w, "cookie-refresh").await;
    assert_eq!(w.kratos.whoami_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_negative_ttl_disables_negative_caching_and_max_entries_bounds() {
    let w = World::start_with(&[
        ("SESSIONGATE__CACHE__NEGATIVE_TTL", "\"0s\""),
        ("SESSIONGATE__CACHE__MAX_ENTRIES", "50"),
    ])
    .await;
    assert_eq!(api(&w, "nobody").await.status(), 401);
    assert_eq!(api(&w, "nobody").await.status(), 401);
    assert_eq!(w.kratos.whoami_calls(), 2);
    for i in 0..300 {
        let t = format!("bound-{i}");
        w.login(&t);
        assert_eq!(api(&w, &t).await.status(), 200);
    }
    let entries = w.proxy.metric("sessiongate_cache_entries").await;
    assert!(
        entries <= 50.0,
        "cache holds {entries} entries with max_entries = 50"
    );
}
