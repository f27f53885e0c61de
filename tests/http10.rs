//! HTTP/1.0 clients never get `Transfer-Encoding: chunked` (RFC 9112 §6.1: a server must not send
//! it to an HTTP/1.0 client). The edge rewrites Kratos's JSON bodies, so their length changes and
//! they go out without `Content-Length`: chunked to HTTP/1.1 clients, close-delimited to HTTP/1.0.

mod common;

use common::*;

fn config(kratos: &str) -> String {
    format!(
        r#"
[server]
public_url = "{{PROXY}}"

[kratos]
public_url = "{kratos}"
timeout = "2s"

[[routes]]
name = "kratos"
path_prefix = "/.ory"
kratos_edge = true
"#
    )
}

/// The head (lower case) and the body of a raw response.
fn split(raw: &str) -> (String, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_gets_a_close_delimited_body_not_chunks() {
    let kratos = KratosDouble::start().await;
    let proxy = TestProxy::start(&config(&kratos.url()));
    let addr = proxy.addr;

    let http10 = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            b"GET /.ory/self-service/login/api HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
        )
    })
    .await
    .expect("raw");
    assert_eq!(status_of(&http10), 200, "{http10}");
    let (head, body) = split(&http10);
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let flow: serde_json::Value = serde_json::from_str(&body).expect("the whole body, unchunked");
    assert_eq!(flow["type"], "api");

    // HTTP/1.1 still gets chunks (the control)
    let http11 = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            b"GET /.ory/self-service/login/api HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .expect("raw");
    let (head, _) = split(&http11);
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
}
