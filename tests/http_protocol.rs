//! HTTP details a client relies on, on the Kratos edge:
//! - HTTP/1.0 clients never get `Transfer-Encoding: chunked` (RFC 9112 §6.1). The edge rewrites
//!   Kratos's JSON bodies, so their length changes and they go out without `Content-Length`:
//!   chunked to HTTP/1.1 clients, close-delimited to HTTP/1.0.
//! - `Expect: 100-continue` on a request whose body the edge reads itself (the `return_to`
//!   check) is answered `100 Continue` at once (RFC 9110 §10.1.1), not after the client's timer.
//! - A client that half-closes after its request still gets the answer (RFC 9112 §9.6).

mod common;

use std::io::{Read, Write};

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
allowed_return_urls = ["myapp://callback"]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_edge_reads_the_body() {
    let kratos = KratosDouble::start().await;
    let proxy = TestProxy::start(&config(&kratos.url()));
    let addr = proxy.addr;
    let out = tokio::task::spawn_blocking(move || {
        let body = br#"{"method":"password","identifier":"a@example.test","password":"x","return_to":"myapp://callback"}"#;
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .expect("timeout");
        let head = format!(
            "POST /.ory/self-service/login?flow=00000000-0000-0000-0000-000000000000 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).expect("head");
        // the interim answer comes before the body is sent
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
        s.write_all(body).expect("body");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (interim, String::from_utf8_lossy(&rest).into_owned())
    })
    .await
    .expect("raw");
    let (interim, rest) = out;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "no 100 Continue within 1 s of the head: {interim:?}"
    );
    // then exactly one final answer (Kratos's own 100 is not passed on as a second one)
    let all = format!("{interim}{rest}");
    assert_eq!(all.matches("100 Continue").count(), 1, "{all}");
    assert_eq!(
        all.matches("HTTP/1.1 ").count(),
        2,
        "the 100, then the final answer: {all}"
    );
}

/// A request pingora cannot proxy (here: a chunked body that is not chunked) is answered from the
/// one error mapping: a Kratos-style JSON 400, not pingora's plain error page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pingora_cannot_proxy_gets_a_json_answer() {
    let up = EchoUpstream::start().await;
    let proxy = TestProxy::start(&format!(
        "[kratos]\npublic_url = \"http://127.0.0.1:9\"\n[[routes]]\nname = \"public\"\npath_prefix = \"/public\"\nupstream = \"{}\"\nauth = \"anonymous\"\n",
        up.url()
    ));
    let addr = proxy.addr;
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            b"POST /public/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nnot a chunk\r\n\r\n",
        )
    })
    .await
    .expect("raw");
    assert_eq!(status_of(&answer), 400, "{answer}");
    let (head, body) = split(&answer);
    assert!(head.contains("content-type: application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(v["error"]["code"], 400, "{v}");
    assert!(v["error"]["request"].is_string(), "{v}");
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host` is a 400; HTTP/1.0 may omit it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_host_is_400_and_http10_without_host_passes() {
    let up = EchoUpstream::start().await;
    let proxy = TestProxy::start(&format!(
        "[kratos]\npublic_url = \"http://127.0.0.1:9\"\n[[routes]]\nname = \"public\"\npath_prefix = \"/public\"\nupstream = \"{}\"\nauth = \"anonymous\"\n",
        up.url()
    ));
    let addr = proxy.addr;
    let (v11, v10) = tokio::task::spawn_blocking(move || {
        (
            raw(addr, b"GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n"),
            raw(addr, b"GET /public/x HTTP/1.0\r\n\r\n"),
        )
    })
    .await
    .expect("raw");
    assert_eq!(status_of(&v11), 400, "{v11}");
    assert!(split(&v11).1.contains("\"code\":400"), "{v11}");
    assert_eq!(status_of(&v10), 200, "{v10}");
    assert_eq!(up.count(), 1);
}

/// RFC 9112 §9.6: a client that half-closes (sends FIN) after a complete request still wants the
/// answer — `printf ... | nc` and HTTP/1.1 conformance probes do exactly this. pingora aborts
/// such a request by default (pingora #305); sessiongate turns that off, on every route, for
/// answers from the upstream and for its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let w = World::start().await;
    w.login("half-closer");
    let addr = w.proxy.addr;
    let answers = tokio::task::spawn_blocking(move || {
        let ask = |request: &str| {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(request.as_bytes()).expect("write");
            s.shutdown(std::net::Shutdown::Write).expect("half-close");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        };
        [
            ask("GET /public/x HTTP/1.1\r\nHost: a\r\n\r\n"),
            ask("GET /api/x HTTP/1.1\r\nHost: a\r\nX-Session-Token: half-closer\r\n\r\n"),
            ask("GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n"),
        ]
    })
    .await
    .expect("raw");
    assert_eq!(status_of(&answers[0]), 200, "{}", answers[0]);
    assert_eq!(status_of(&answers[1]), 200, "{}", answers[1]);
    assert!(
        split(&answers[1]).1.contains("x-user-id"),
        "identity forwarded: {}",
        answers[1]
    );
    assert_eq!(status_of(&answers[2]), 401, "{}", answers[2]);
    assert_eq!(w.upstream.count(), 2);
}
