//! Traces over real HTTP: W3C trace context reaches the upstream and Kratos with the proxy's spans as
//! parents (export off, the default), and with `[tracing] otlp_endpoint` the spans arrive at an
//! OTLP/HTTP receiver written here (protobuf `ExportTraceServiceRequest`, decoded with the
//! `opentelemetry-proto` types) with their names, parents and attributes, and no credential.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

/// The client's span: W3C Trace Context §3.2.2's example, sampled.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const TOKEN: &str = "ory_st_secret-token-value-7f3a";
const COOKIE: &str = "MTcwMDAwMDAwMHxzZWNyZXQtY29va2llLXZhbHVl";

fn traceparent(flags: &str) -> String {
    format!("00-{TRACE_ID}-{CLIENT_SPAN}-{flags}")
}

fn config(kratos: &str, upstream: &str, tracing: &str) -> String {
    format!(
        r#"{tracing}
[kratos]
public_url = "{kratos}"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{upstream}"
auth = "session"
[routes.identity_headers]
"X-User-Id" = "identity.id"
[[routes]]
name = "public"
path_prefix = "/public"
upstream = "{upstream}"
auth = "anonymous"
"#
    )
}

/// `traceparent` split into its four fields (after checking its §3.2.2 shape).
fn fields(v: &str) -> [String; 4] {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    let lens = [2, 32, 16, 2];
    for (p, len) in parts.iter().zip(lens) {
        assert_eq!(p.len(), len, "{v}");
        assert!(
            p.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{v}"
        );
    }
    assert_ne!(parts[1], "0".repeat(32), "{v}");
    assert_ne!(parts[2], "0".repeat(16), "{v}");
    [0, 1, 2, 3].map(|i| parts[i].to_string())
}

async fn get(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut rb = client().get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.expect("request").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_reaches_upstream_and_kratos_with_export_off() {
    let kratos = KratosDouble::start().await;
    let upstream = EchoUpstream::start().await;
    kratos.add_session(TOKEN, SessionSpec::default());
    let proxy = TestProxy::start(&config(&kratos.url(), &upstream.url(), ""));
    assert!(!proxy.shared.runtime().tracing.is_exporting());

    // A client trace is continued: same trace id and flags, the proxy's own span as parent,
    // tracestate passed on; the request id is untouched.
    let tp = traceparent("01");
    let status = get(
        &proxy.url("/api/x"),
        &[
            ("X-Session-Token", TOKEN),
            ("traceparent", &tp),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            ("X-Request-Id", "req-1"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen = upstream.requests();
    let up = fields(seen[0].header("traceparent").expect("upstream traceparent"));
    assert_eq!(up[0], "00");
    assert_eq!(up[1], TRACE_ID);
    assert_ne!(up[2], CLIENT_SPAN, "the proxy's span is the parent");
    assert_eq!(up[3], "01", "flags preserved");
    assert_eq!(
        seen[0].header("tracestate"),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );
    assert_eq!(seen[0].header_all("traceparent").len(), 1);
    assert_eq!(seen[0].header("x-request-id"), Some("req-1"));

    // The whoami call is a child span: same trace, a span id of its own.
    let whoami = kratos.requests();
    assert_eq!(whoami.len(), 1);
    let k = fields(whoami[0].header("traceparent").expect("kratos traceparent"));
    assert_eq!(k[1], TRACE_ID);
    assert_ne!(k[2], CLIENT_SPAN);
    assert_ne!(k[2], up[2], "whoami has a span of its own");
    assert_eq!(k[3], "01");
    assert_eq!(
        whoami[0].header("tracestate"),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );

    // Without a traceparent (an anonymous route too): a new, valid, unsampled trace.
    upstream.reset();
    assert_eq!(get(&proxy.url("/public/y"), &[]).await, 200);
    assert_eq!(get(&proxy.url("/public/y"), &[]).await, 200);
    let seen = upstream.requests();
    let a = fields(seen[0].header("traceparent").expect("traceparent"));
    let b = fields(seen[1].header("traceparent").expect("traceparent"));
    assert_ne!(a[1], TRACE_ID);
    assert_ne!(a[1], b[1], "each request starts its own trace");
    assert_eq!(a[3], "00");
    assert_eq!(seen[0].header("tracestate"), None);

    // A client traceparent is continued on an anonymous route as well; an invalid one (upper
    // case, §3.2.2.3) starts a new trace, and its tracestate is not passed on (§3.3).
    upstream.reset();
    let tp0 = traceparent("00");
    assert_eq!(
        get(&proxy.url("/public/z"), &[("traceparent", &tp0)]).await,
        200
    );
    let bad = traceparent("01").to_uppercase();
    let bad = bad.as_str();
    assert_eq!(
        get(
            &proxy.url("/public/z"),
            &[("traceparent", bad), ("tracestate", "congo=t61rcWkgMzE")]
        )
        .await,
        200
    );
    let seen = upstream.requests();
    let cont = fields(seen[0].header("traceparent").expect("traceparent"));
    assert_eq!((cont[1].as_str(), cont[3].as_str()), (TRACE_ID, "00"));
    let fresh = fields(seen[1].header("traceparent").expect("traceparent"));
    assert_ne!(fresh[1], TRACE_ID);
    assert_eq!(seen[1].header("tracestate"), None);
}

/// The spans an OTLP/HTTP receiver got, with the resource's `service.name`.
#[derive(Default)]
struct Received {
    spans: Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>,
    requests: usize,
}

/// A minimal OTLP/HTTP collector: `POST /v1/traces` with a protobuf body.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Received>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Received::default()));
        let state = Arc::clone(&got);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(receive(req, &state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, got }
    }

    fn spans(&self) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        self.got.lock().expect("lock").spans.clone()
    }
}

async fn receive(req: Request<Incoming>, state: &Mutex<Received>) -> Response<Full<Bytes>> {
    let ok_path = req.method() == hyper::Method::POST && req.uri().path() == "/v1/traces";
    let protobuf = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let decoded = body
        .ok()
        .and_then(|b| ExportTraceServiceRequest::decode(b).ok());
    let (status, ok) = match decoded {
        Some(export) if ok_path && protobuf => {
            let mut got = state.lock().expect("lock");
            got.requests += 1;
            for rs in export.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        got.spans.push((service.clone(), span));
                    }
                }
            }
            (200, true)
        }
        _ => (400, false),
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    if ok {
        resp.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/x-protobuf"),
        );
    }
    resp
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(AnyValue::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_with_parents_and_attributes_and_no_credential() {
    let kratos = KratosDouble::start().await;
    let upstream = EchoUpstream::start().await;
    kratos.add_session(TOKEN, SessionSpec::default());
    kratos.add_session(COOKIE, SessionSpec::default());
    let receiver = Receiver::start().await;
    let tracing = format!(
        "[tracing]\notlp_endpoint = \"http://{}\"\nservice_name = \"sg-traces-test\"\nsample_ratio = 1.0",
        receiver.addr
    );
    let proxy = TestProxy::start(&config(&kratos.url(), &upstream.url(), &tracing));
    assert!(proxy.shared.runtime().tracing.is_exporting());

    // An unsampled client trace is followed: nothing of it is recorded.
    let unsampled = format!("00-{}-{CLIENT_SPAN}-00", "a".repeat(32));
    assert_eq!(
        get(&proxy.url("/public/quiet"), &[("traceparent", &unsampled)]).await,
        200
    );
    // A sampled client trace, with the session cookie and a query that must not be exported.
    let tp = traceparent("01");
    let cookie = format!("ory_kratos_session={COOKIE}");
    let status = get(
        &proxy.url("/api/items?secret-query=1"),
        &[("traceparent", &tp), ("Cookie", &cookie)],
    )
    .await;
    assert_eq!(status, 200);
    // A new trace (sample_ratio 1.0), with a token.
    let status = get(&proxy.url("/api/other"), &[("X-Session-Token", TOKEN)]).await;
    assert_eq!(status, 200);

    // Bounded wait: flush (the spans end in the logging hook, after the answer) until the four
    // spans are there.
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let shared = Arc::clone(&proxy.shared);
        tokio::task::spawn_blocking(move || shared.runtime().tracing.force_flush())
            .await
            .expect("flush");
        let spans = receiver.spans();
        if spans.len() >= 4 || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert_eq!(spans.len(), 4, "{names:?}");
    assert!(spans.iter().all(|(service, _)| service == "sg-traces-test"));
    assert!(
        spans
            .iter()
            .all(|(_, s)| hex(&s.trace_id) != "a".repeat(32)),
        "an unsampled parent is followed"
    );

    let in_trace = |trace: &str, name: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| hex(&s.trace_id) == trace && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {trace}: {names:?}"))
            .clone()
    };
    let request = in_trace(TRACE_ID, "sessiongate.request");
    let whoami = in_trace(TRACE_ID, "kratos.whoami");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(whoami.kind, SpanKind::Client as i32);
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    assert_eq!(whoami.parent_span_id, request.span_id);
    let a = &request.attributes;
    assert_eq!(
        string_attr(a, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(string_attr(a, "http.route").as_deref(), Some("api"));
    assert_eq!(
        attr(a, "http.response.status_code"),
        Some(&AnyValue::IntValue(200))
    );
    assert_eq!(
        string_attr(a, "sessiongate.outcome").as_deref(),
        Some("authenticated")
    );
    assert_eq!(string_attr(a, "sessiongate.cache").as_deref(), Some("miss"));
    assert_eq!(
        string_attr(&whoami.attributes, "sessiongate.whoami.result").as_deref(),
        Some("valid")
    );

    // What was sent carries these spans' ids: the upstream's parent is the request span, Kratos's
    // the whoami span.
    let up = upstream
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/items")
        .expect("upstream request");
    let up = fields(up.header("traceparent").expect("traceparent"));
    assert_eq!(up[2], hex(&request.span_id));
    let k = kratos
        .requests()
        .into_iter()
        .find(|r| r.header("cookie").is_some())
        .expect("whoami request");
    let k = fields(k.header("traceparent").expect("traceparent"));
    assert_eq!(k[2], hex(&whoami.span_id));

    // The new trace: a root request span and its whoami child.
    let root = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "sessiongate.request" && hex(&s.trace_id) != TRACE_ID)
        .expect("root request span");
    assert!(root.parent_span_id.is_empty());
    let child = in_trace(&hex(&root.trace_id), "kratos.whoami");
    assert_eq!(child.parent_span_id, root.span_id);

    // No exported value carries the token, the cookie or the query.
    for (_, s) in &spans {
        for kv in &s.attributes {
            let v = format!("{:?}", kv.value);
            for secret in [TOKEN, COOKIE, "secret-query"] {
                assert!(!v.contains(secret), "{}: {v}", kv.key);
            }
        }
        assert!(!s.name.contains("secret"));
    }
}
