//! Criterion benchmarks of the per-request hot paths: route matching over a 50-route table, path
//! canonicalisation, credential extraction, a cache hit, identity header rendering, rewriting a
//! typical Kratos login flow JSON body on the edge, W3C trace context propagation with span
//! export off (the default), and a signed identity token from its cache vs freshly signed.
//!
//! `cargo bench --bench hotpath`. Compare numbers from one run only (the machine is shared).

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use opentelemetry::context::FutureExt as _;
use sessiongate::config;
use sessiongate::credential;
use sessiongate::identity;
use sessiongate::metrics::Metrics;
use sessiongate::path::canonicalize;
use sessiongate::routing::RouteTable;
use sessiongate::session::store::SessionStore;
use sessiongate::session::whoami::WhoamiClient;
use sessiongate::telemetry::Tracing;
use sessiongate_testkit::{KratosDouble, SessionSpec};

fn fifty_routes() -> config::Config {
    let mut text = String::from("[kratos]\npublic_url = \"http://127.0.0.1:4433\"\n");
    for i in 0..50 {
        let (key, path) = match i % 3 {
            0 => ("path_prefix", format!("/svc{i}")),
            1 => ("path_prefix", format!("/svc{}/v{i}", i - 1)),
            _ => ("path", format!("/svc{}/v{}/health", i - 2, i - 1)),
        };
        let host = if i % 10 == 9 {
            format!("host = \"h{i}.example.com\"\n")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\n{key} = \"{path}\"\n{host}upstream = \"http://127.0.0.1:3000\"\nauth = \"session\"\n[routes.identity_headers]\n\"X-User-Id\" = \"identity.id\"\n\"X-User-Email\" = \"identity.traits.email\"\n\"X-Session-Id\" = \"id\"\n\"X-User-Name\" = \"identity.traits.name\"\n"
        ));
    }
    text.push_str("[[routes]]\nname = \"root\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:3000\"\nauth = \"anonymous\"\n");
    config::from_str(&text).expect("bench config")
}

fn routing(c: &mut Criterion) {
    let cfg = fifty_routes();
    let table = RouteTable::new(&cfg.routes);
    c.bench_function("route_match_50_routes_deep_prefix", |b| {
        b.iter(|| {
            table.find(
                black_box(Some("api.example.com")),
                black_box("/svc45/v46/items/17"),
                &Method::GET,
            )
        })
    });
    c.bench_function("route_match_50_routes_fallthrough", |b| {
        b.iter(|| {
            table.find(
                black_box(Some("api.example.com")),
                black_box("/nothing/here"),
                &Method::GET,
            )
        })
    });
    c.bench_function("canonicalize_typical_target", |b| {
        b.iter(|| canonicalize(black_box(b"/api/v1/users/12345/profile?fields=a,b&x=1")))
    });
}

fn credentials(c: &mut Criterion) {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("api.example.com"));
    h.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64)"),
    );
    h.insert("accept", HeaderValue::from_static("application/json"));
    h.insert(
        "cookie",
        HeaderValue::from_static("_ga=GA1.1.1; csrf_token_abc=xyz; ory_kratos_session=MTcwMDAwMDAwMHxEdi1CQkFFQ180SUFBUkFCRUFBQV9"),
    );
    c.bench_function("credential_extract_cookie", |b| {
        b.iter(|| {
            credential::extract(black_box(&h), "ory_kratos_session")
                .map(|c| c.map(|c| c.cache_key()))
        })
    });
    let mut t = HeaderMap::new();
    t.insert(
        "x-session-token",
        HeaderValue::from_static("ory_st_Yh4Lk2Jx9Qw8Vb7Nc6Mz5Ra4Sd3Fg2H"),
    );
    c.bench_function("credential_extract_token_and_key", |b| {
        b.iter(|| {
            credential::extract(black_box(&t), "ory_kratos_session")
                .map(|c| c.map(|c| c.cache_key()))
        })
    });
}

fn cache_and_identity(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let kratos = rt.block_on(KratosDouble::start());
    kratos.add_session("bench-token", SessionSpec::default());
    let cfg = config::from_str(&format!(
        "[kratos]\npublic_url = \"{}\"\n[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:3000\"\nauth = \"session\"\n[routes.identity_headers]\n\"X-User-Id\" = \"identity.id\"\n\"X-User-Email\" = \"identity.traits.email\"\n\"X-Session-Id\" = \"id\"\n\"X-User-Name\" = \"identity.traits.name\"\n",
        kratos.url()
    ))
    .expect("config");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let kept = cfg.session_paths.clone();
    let client = WhoamiClient::new(&cfg.kratos, Arc::clone(&metrics))
        .expect("client")
        .keeping(kept);
    let store = SessionStore::new(cfg.cache.clone(), client, metrics);
    let mut headers = HeaderMap::new();
    headers.insert("x-session-token", HeaderValue::from_static("bench-token"));
    let cred = credential::extract(&headers, "ory_kratos_session")
        .expect("ok")
        .expect("credential");
    let (first, _) = rt.block_on(store.resolve(&cred));
    let session = match first {
        sessiongate::session::Resolution::Valid { session, .. } => session,
        other => panic!("bench session not valid: {other:?}"),
    };
    assert_eq!(kratos.whoami_calls(), 1);
    c.bench_function("cache_hit_resolve", |b| {
        b.iter(|| rt.block_on(store.resolve(black_box(&cred))))
    });
    // The same lookup run as the proxy runs admission: inside the request's trace context.
    let trace = Tracing::off().start_request(&client_trace_headers(), &Method::GET);
    c.bench_function("cache_hit_resolve_in_trace_context", |b| {
        b.iter(|| {
            rt.block_on(
                store
                    .resolve(black_box(&cred))
                    .with_context(trace.context().clone()),
            )
        })
    });
    assert_eq!(kratos.whoami_calls(), 1, "every bench iteration was a hit");

    let route = &cfg.routes[0];
    assert_eq!(
        identity::render_all(&route.identity_headers, &session.values).len(),
        4
    );
    c.bench_function("identity_headers_render_4", |b| {
        b.iter(|| {
            identity::render_all(
                black_box(&route.identity_headers),
                black_box(&session.values),
            )
        })
    });
    drop(rt);
    let _ = Duration::ZERO;
}

fn edge_rewrite(c: &mut Criterion) {
    let settings = sessiongate::edge::EdgeSettings::new(
        "http://127.0.0.1:4433/",
        "https://app.example.com",
        "/.ory",
        Some("example.com"),
        &[],
    )
    .expect("edge settings");
    let rewriter = sessiongate::edge::Rewriter::new(&settings);
    let body = include_bytes!("../src/edge/fixtures/login_flow.json");
    let out = rewriter
        .rewrite_body(body)
        .expect("the fixture has Kratos URLs");
    assert!(!String::from_utf8_lossy(&out).contains("127.0.0.1:4433"));
    c.bench_function("edge_rewrite_login_flow_json", |b| {
        b.iter(|| rewriter.rewrite_body(black_box(body)))
    });
}

/// A browser's request headers with a sampled client trace and a vendor's `tracestate`.
fn client_trace_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("api.example.com"));
    h.insert("accept", HeaderValue::from_static("application/json"));
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    h.insert(
        "tracestate",
        HeaderValue::from_static("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    );
    h
}

/// What every request pays for trace context with export off: read the client's context (or
/// start a trace), make the proxy's span ids, format the upstream `traceparent`/`tracestate`.
fn trace_propagation(c: &mut Criterion) {
    let tracing = Tracing::off();
    let with = client_trace_headers();
    let mut without = with.clone();
    without.remove("traceparent");
    without.remove("tracestate");
    assert!(tracing
        .start_request(&with, &Method::GET)
        .upstream_headers()
        .is_some_and(|(_, state)| state.is_some()));
    c.bench_function("trace_propagation_off_client_trace", |b| {
        b.iter(|| {
            tracing
                .start_request(black_box(&with), &Method::GET)
                .upstream_headers()
        })
    });
    let mut bare = with.clone();
    bare.remove("tracestate");
    c.bench_function("trace_propagation_off_client_traceparent_only", |b| {
        b.iter(|| {
            tracing
                .start_request(black_box(&bare), &Method::GET)
                .upstream_headers()
        })
    });
    c.bench_function("trace_propagation_off_new_trace", |b| {
        b.iter(|| {
            tracing
                .start_request(black_box(&without), &Method::GET)
                .upstream_headers()
        })
    });
}

/// A signed identity token: reused from the cache (what nearly every request of a session gets)
/// against a fresh signature (the first request, and once per 80% of `ttl` after that).
fn identity_tokens(c: &mut Criterion) {
    use base64::Engine as _;
    use identity::keys::SigningKey;
    use identity::token::{RouteToken, TokenIssuer};
    use p256::pkcs8::EncodePrivateKey as _;
    use std::time::SystemTime;

    let es256 = p256::SecretKey::from_slice(&[0x42; 32]).expect("bench key (not a secret)");
    let es256 = es256
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .expect("pem");
    let mut ed_der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    ed_der.extend_from_slice(&[0x24; 32]);
    let ed25519 = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(ed_der)
    );
    let session = sessiongate::session::Session {
        id: "9f2c4a8e-5b1d-4c3a-8e7f-1a2b3c4d5e6f".into(),
        identity_id: "1b2c3d4e-5f60-4718-9a0b-c1d2e3f40516".into(),
        aal: config::Aal(1),
        expires_at: None,
        values: vec![Some(HeaderValue::from_static("user@example.com"))].into_boxed_slice(),
    };
    let spec = RouteToken {
        header: http::HeaderName::from_static("x-identity-token"),
        audience: Some("orders".into()),
        claims: Vec::new(),
    };
    for (name, pem) in [("es256", es256.as_bytes()), ("eddsa", ed25519.as_bytes())] {
        let key = SigningKey::from_pem(pem).expect("bench key");
        let issuer = TokenIssuer::new("https://gate".into(), Duration::from_secs(60), vec![key]);
        let now = SystemTime::now();
        let first = issuer.token(0, &spec, &session, now).expect("token");
        c.bench_function(&format!("identity_token_{name}_cache_hit"), |b| {
            b.iter(|| issuer.token(0, black_box(&spec), black_box(&session), now))
        });
        assert_eq!(issuer.token(0, &spec, &session, now), Some(first));
        // every iteration is past the previous token's reuse window: a new signature each time
        let mut later = now;
        c.bench_function(&format!("identity_token_{name}_fresh_signature"), |b| {
            b.iter(|| {
                later += Duration::from_secs(100);
                issuer.token(0, black_box(&spec), black_box(&session), later)
            })
        });
    }
}

criterion_group!(
    benches,
    routing,
    credentials,
    cache_and_identity,
    edge_rewrite,
    trace_propagation,
    identity_tokens
);
criterion_main!(benches);
