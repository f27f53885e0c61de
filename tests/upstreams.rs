//! Upstream names are resolved at run time: a name is followed as it changes and one that does not
//! resolve does not keep sessiongate from starting; its requests get a 502 JSON answer.

mod common;

use common::*;

fn config(upstream: &str) -> String {
    format!(
        r#"
[kratos]
public_url = "http://127.0.0.1:9"

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "{upstream}"
auth = "anonymous"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_by_name_is_resolved_when_requests_need_it() {
    let up = EchoUpstream::start().await;
    let proxy = TestProxy::start(&config(&format!("http://localhost:{}", up.addr().port())));
    for _ in 0..3 {
        let r = client()
            .get(proxy.url("/public/x"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(up.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_resolve_starts_and_answers_502_json() {
    // today's config would have been refused at start-up ("cannot resolve")
    let proxy = TestProxy::start(&config("http://sessiongate-upstream.invalid:8080"));
    let r = client()
        .get(proxy.url("/public/x"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 502);
    assert!(r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .starts_with("application/json"));
    let v: serde_json::Value = r.json().await.expect("json body");
    assert_eq!(v["error"]["code"], 502, "{v}");
    assert_eq!(
        proxy
            .metric("sessiongate_upstream_errors_total{route=\"public\"}")
            .await,
        1.0
    );
}
