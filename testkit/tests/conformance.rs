//! The doubles against Kratos's own contract: bodies validated by Kratos's session JSON Schema
//! and parsed by the official `ory-kratos-client` models; every behaviour over real HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessiongate_testkit::kratos::{rfc3339, KRATOS_CACHE_CONTROL, UNAUTHORIZED_BODY};
use sessiongate_testkit::{session_json, Behavior, EchoUpstream, KratosDouble, SessionSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// helpers

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kratos/session.schema.json")
}

fn session_validator() -> jsonschema::Validator {
    let path = schema_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read Kratos session schema at {}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("session schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("session schema compiles")
}

fn schema_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build reqwest client")
}

fn whoami_url(k: &KratosDouble) -> String {
    format!("{}/sessions/whoami", k.url())
}

async fn whoami_with(k: &KratosDouble, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(whoami_url(k));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.send().await.expect("whoami request")
}

/// Sends raw bytes, reads until the server closes (or 5 s pass).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    match read {
        Ok(Ok(_)) => {}
        // A reset after partial data still counts as "closed"; keep what arrived.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => panic!("read: {e}"),
        Err(_) => panic!("server did not close the connection within 5 s"),
    }
    out
}

/// Reads exactly one HTTP/1.1 response with a Content-Length from a kept-alive stream.
async fn read_one_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("response within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before the response head was complete"
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..header_end].to_vec()).expect("ASCII head");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    let mut body = buf[header_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

fn specs() -> Vec<(&'static str, SessionSpec)> {
    vec![
        ("aal1", SessionSpec::default()),
        (
            "aal2",
            SessionSpec {
                aal: "aal2".into(),
                email: "second.factor@example.org".into(),
                ..SessionSpec::default()
            },
        ),
        (
            "aal1 cache_for",
            SessionSpec {
                cache_for: Some(30),
                ..SessionSpec::default()
            },
        ),
        (
            "aal2 cache_for set_cookie",
            SessionSpec {
                aal: "aal2".into(),
                cache_for: Some(120),
                set_cookie: Some("ory_kratos_session=new; Path=/; HttpOnly; SameSite=Lax".into()),
                ..SessionSpec::default()
            },
        ),
        (
            "inactive short",
            SessionSpec {
                active: false,
                expires_in: Duration::from_secs(1),
                ..SessionSpec::default()
            },
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. bodies: Kratos's JSON Schema and the official client models

#[tokio::test]
async fn served_session_bodies_validate_against_kratos_schema_and_parse_with_ory_client() {
    let validator = session_validator();
    let k = KratosDouble::start().await;
    for (i, (name, spec)) in specs().into_iter().enumerate() {
        let credential = format!("token-{i}");
        let identity_id = spec.identity_id.clone();
        let aal = spec.aal.clone();
        let active = spec.active;
        let promised = k.add_session(&credential, spec);

        let resp = whoami_with(&k, &[("X-Session-Token", &credential)]).await;
        assert_eq!(resp.status(), 200, "{name}");
        let bytes = resp.bytes().await.expect("body");
        let served: Value = serde_json::from_slice(&bytes).expect("served body is JSON");
        assert_eq!(
            served, promised,
            "{name}: add_session returns what is served"
        );

        let errors = schema_errors(&validator, &served);
        assert!(errors.is_empty(), "{name}: schema errors: {errors:#?}");

        let parsed: ory_kratos_client::models::Session =
            serde_json::from_slice(&bytes).expect("ory-kratos-client parses the session");
        assert_eq!(parsed.id, served["id"].as_str().expect("id"));
        assert_eq!(parsed.active, Some(active), "{name}");
        let identity = parsed.identity.expect("identity");
        assert_eq!(identity.id, identity_id);
        assert_eq!(identity.schema_id, "default");
        assert_eq!(
            identity.schema_url,
            format!("{}/schemas/ZGVmYXVsdA", k.url())
        );
        assert_eq!(
            identity.metadata_public,
            Some(None),
            "metadata_public is an explicit null"
        );
        assert_eq!(
            identity.organization_id,
            Some(None),
            "organization_id is an explicit null"
        );
        let level = serde_json::to_value(parsed.authenticator_assurance_level.expect("aal"))
            .expect("aal serializes");
        assert_eq!(level, json!(aal), "{name}");
        let methods = parsed
            .authentication_methods
            .expect("authentication_methods");
        assert_eq!(methods.len(), if aal == "aal2" { 2 } else { 1 }, "{name}");
        // the device of the login that made the session, as real Kratos v1.3.1 records it
        assert_eq!(parsed.devices.expect("devices").len(), 1, "{name}");
    }
}

#[tokio::test]
async fn session_json_builder_output_validates_and_parses() {
    let validator = session_validator();
    for (name, spec) in specs() {
        let body = session_json("0b6f2a8e-2d3c-4c53-9d6b-7f1c1e5a9b10", &spec);
        let errors = schema_errors(&validator, &body);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        let _: ory_kratos_client::models::Session =
            serde_json::from_value(body).expect("ory-kratos-client parses the session");
    }
}

#[test]
fn schema_check_can_fail() {
    let validator = session_validator();
    let good = session_json(
        "0b6f2a8e-2d3c-4c53-9d6b-7f1c1e5a9b10",
        &SessionSpec::default(),
    );
    assert!(validator.is_valid(&good));

    let mut active_yes = good.clone();
    active_yes["active"] = json!("yes");
    assert!(
        !validator.is_valid(&active_yes),
        "\"active\": \"yes\" must be rejected"
    );

    let mut bad_time = good.clone();
    bad_time["expires_at"] = json!("tomorrow");
    assert!(
        !validator.is_valid(&bad_time),
        "a non-RFC3339 expires_at must be rejected"
    );

    let mut bad_aal = good.clone();
    bad_aal["authenticator_assurance_level"] = json!("aal9");
    assert!(
        !validator.is_valid(&bad_aal),
        "an unknown AAL must be rejected"
    );

    let mut no_schema_id = good.clone();
    no_schema_id["identity"]
        .as_object_mut()
        .expect("identity object")
        .remove("schema_id");
    assert!(
        !validator.is_valid(&no_schema_id),
        "identity.schema_id is required"
    );

    assert!(
        !validator.is_valid(&json!({"foo": 1})),
        "a body without id is not a session"
    );
}

#[test]
fn timestamps_are_rfc3339_utc_like_go() {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_120_000_000).expect("time");
    assert_eq!(rfc3339(t), "2023-11-14T22:13:20.12Z");
    let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_000_001_000).expect("time");
    assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000001Z");

    let body = session_json("id", &SessionSpec::default());
    let now = OffsetDateTime::now_utc();
    for field in ["expires_at", "authenticated_at", "issued_at"] {
        let s = body[field].as_str().expect("timestamp string");
        assert!(s.ends_with('Z'), "{field}={s}");
        OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{field}={s}: {e}"));
    }
    let expires = OffsetDateTime::parse(body["expires_at"].as_str().expect("str"), &Rfc3339)
        .expect("expires_at");
    let ahead = (expires - now).whole_seconds();
    assert!(
        (3590..=3600).contains(&ahead),
        "expires_at is now + 1h, got +{ahead}s"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. whoami over real HTTP

#[tokio::test]
async fn token_cookie_and_bearer_all_resolve_with_kratos_headers() {
    let k = KratosDouble::start().await;
    let spec = SessionSpec::default();
    let identity_id = spec.identity_id.clone();
    let promised = k.add_session("cred-1", spec);

    for headers in [
        vec![("X-Session-Token", "cred-1")],
        vec![("Cookie", "theme=dark; ory_kratos_session=cred-1; other=x")],
        vec![("Authorization", "Bearer cred-1")],
        vec![("Authorization", "bEaReR cred-1")],
    ] {
        let resp = whoami_with(&k, &headers).await;
        assert_eq!(resp.status(), 200, "{headers:?}");
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/json; charset=utf-8");
        assert_eq!(h["cache-control"], KRATOS_CACHE_CONTROL);
        assert!(KRATOS_CACHE_CONTROL.starts_with("private, no-cache, no-store"));
        assert_eq!(
            h["x-kratos-authenticated-identity-id"],
            identity_id.as_str()
        );
        assert!(h.get("ory-session-cache-for").is_none());
        assert!(h.get("set-cookie").is_none());
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body, promised);
    }
    assert_eq!(k.whoami_calls(), 4);
}

#[tokio::test]
async fn unknown_or_missing_credential_is_kratos_exact_401() {
    let k = KratosDouble::start().await;
    k.add_session("good", SessionSpec::default());
    for headers in [
        vec![("X-Session-Token", "wrong")],
        vec![],
        vec![("Cookie", "ory_kratos_session=wrong")],
        vec![("Authorization", "Bearer wrong")],
    ] {
        let resp = whoami_with(&k, &headers).await;
        assert_eq!(resp.status(), 401, "{headers:?}");
        // herodot's error bodies: no charset (real Kratos v1.3.1, tests/real_ory/doubles.rs)
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert!(resp
            .headers()
            .get("x-kratos-authenticated-identity-id")
            .is_none());
        assert!(resp.headers().get("ory-session-cache-for").is_none());
        assert_eq!(resp.text().await.expect("body"), UNAUTHORIZED_BODY);
    }
    let body: Value = serde_json::from_str(UNAUTHORIZED_BODY).expect("json");
    assert_eq!(
        body,
        json!({"error":{"code":401,"status":"Unauthorized","reason":"No valid session credentials found in the request.","message":"The request could not be authorized"}})
    );
    assert!(body["error"].get("id").is_none());
}

#[tokio::test]
async fn credential_precedence_mirrors_kratos() {
    let k = KratosDouble::start().await;
    k.add_session("good", SessionSpec::default());
    // (request headers, expected status, why)
    type Case = (Vec<(&'static str, &'static str)>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("X-Session-Token", "bad"),
                ("Cookie", "ory_kratos_session=good"),
            ],
            401,
            "a non-empty token wins, even if invalid",
        ),
        (
            vec![("X-Session-Token", "bad"), ("Authorization", "Bearer good")],
            401,
            "token wins over bearer",
        ),
        (
            vec![
                ("X-Session-Token", ""),
                ("Cookie", "ory_kratos_session=good"),
            ],
            200,
            "an empty token is ignored",
        ),
        (
            vec![
                ("Cookie", "ory_kratos_session=good"),
                ("Authorization", "Bearer bad"),
            ],
            200,
            "cookie wins over bearer",
        ),
        (
            vec![
                ("Cookie", "ory_kratos_session=bad"),
                ("Authorization", "Bearer good"),
            ],
            401,
            "a present cookie is the credential",
        ),
        (
            vec![
                ("Cookie", "ory_kratos_session="),
                ("Authorization", "Bearer good"),
            ],
            200,
            "an empty cookie falls through to bearer",
        ),
        (
            vec![("Cookie", "ory_kratos_session=\"good\"")],
            200,
            "quoted cookie value (Go strips the quotes)",
        ),
        (
            vec![("Cookie", "session=good; ory_kratos_session_x=good")],
            401,
            "only the exact cookie name counts",
        ),
        (
            vec![("Authorization", "Bearer  good")],
            401,
            "bearer needs exactly two space-separated parts",
        ),
        (
            vec![("Authorization", "Bearer good extra")],
            401,
            "three parts",
        ),
        (vec![("Authorization", "Basic good")], 401, "other schemes"),
        (vec![("Authorization", "good")], 401, "no scheme"),
    ];
    for (headers, status, why) in cases {
        let resp = whoami_with(&k, &headers).await;
        assert_eq!(resp.status().as_u16(), status, "{why}: {headers:?}");
    }
}

#[tokio::test]
async fn cookie_name_is_configurable_for_ory_network() {
    let k = KratosDouble::start().await;
    k.add_session("opaque-cookie-value", SessionSpec::default());
    k.set_cookie_name("ory_session_coolslug");
    let resp = whoami_with(&k, &[("Cookie", "ory_kratos_session=opaque-cookie-value")]).await;
    assert_eq!(resp.status(), 401);
    let resp = whoami_with(
        &k,
        &[("Cookie", "ory_session_coolslug=opaque-cookie-value")],
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn remove_session_revokes() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    assert_eq!(
        whoami_with(&k, &[("X-Session-Token", "t")]).await.status(),
        200
    );
    k.remove_session("t");
    assert_eq!(
        whoami_with(&k, &[("X-Session-Token", "t")]).await.status(),
        401
    );
}

#[tokio::test]
async fn cache_for_and_set_cookie_headers() {
    let k = KratosDouble::start().await;
    k.add_session(
        "t",
        SessionSpec {
            cache_for: Some(42),
            set_cookie: Some("ory_kratos_session=rotated; Path=/; Max-Age=3600; HttpOnly".into()),
            ..SessionSpec::default()
        },
    );
    let resp = whoami_with(&k, &[("X-Session-Token", "t")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["ory-session-cache-for"], "42");
    assert_eq!(
        resp.headers()["set-cookie"],
        "ory_kratos_session=rotated; Path=/; Max-Age=3600; HttpOnly"
    );
}

#[tokio::test]
async fn negative_cache_header_only_without_credentials() {
    let k = KratosDouble::start().await;
    k.set_negative_cache_for(Some(60));
    let resp = whoami_with(&k, &[]).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["ory-session-cache-for"], "60");
    let resp = whoami_with(&k, &[("X-Session-Token", "unknown")]).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("ory-session-cache-for").is_none());
}

#[tokio::test]
async fn calls_are_counted_and_recorded() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    assert_eq!(k.whoami_calls(), 0);
    whoami_with(&k, &[("X-Session-Token", "t"), ("X-Extra", "A")]).await;
    whoami_with(&k, &[("X-Session-Token", "nope")]).await;
    client()
        .get(format!("{}/sessions/whoami?tokenize_as=jwt", k.url()))
        .send()
        .await
        .expect("send");
    client().post(whoami_url(&k)).send().await.expect("send");
    // Not whoami: not counted.
    client()
        .get(format!("{}/health/ready", k.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(k.whoami_calls(), 4);
    let reqs = k.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path_and_query, "/sessions/whoami");
    assert_eq!(reqs[0].header("x-session-token"), Some("t"));
    assert_eq!(reqs[0].header("X-EXTRA"), Some("A"));
    assert!(reqs[0]
        .headers
        .iter()
        .all(|(n, _)| n == &n.to_ascii_lowercase()));
    assert_eq!(reqs[1].header("x-session-token"), Some("nope"));
    assert_eq!(reqs[2].path_and_query, "/sessions/whoami?tokenize_as=jwt");
    assert_eq!(reqs[3].method, "POST");
    k.reset_calls();
    assert_eq!(k.whoami_calls(), 0);
    assert!(k.requests().is_empty());
}

#[tokio::test]
async fn status401_behavior_rejects_valid_credentials() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_behavior(Behavior::Status401);
    let resp = whoami_with(&k, &[("X-Session-Token", "t")]).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.text().await.expect("body"), UNAUTHORIZED_BODY);
    k.set_behavior(Behavior::Normal);
    assert_eq!(
        whoami_with(&k, &[("X-Session-Token", "t")]).await.status(),
        200
    );
}

#[tokio::test]
async fn aal2_required_is_kratos_403() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_behavior(Behavior::Aal2Required);
    let resp = whoami_with(&k, &[("X-Session-Token", "t")]).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.expect("json");
    let redirect = format!("{}/self-service/login/browser?aal=aal2", k.url());
    assert_eq!(body["error"]["id"], "session_aal2_required");
    assert_eq!(body["error"]["code"], 403);
    assert_eq!(body["error"]["status"], "Forbidden");
    assert!(body["error"]["reason"]
        .as_str()
        .expect("reason")
        .contains("second factor"));
    assert!(body["error"]["message"].is_string());
    assert_eq!(
        body["error"]["details"]["redirect_browser_to"],
        redirect.as_str()
    );
    assert_eq!(body["redirect_browser_to"], redirect.as_str());
    // The herodot error shape from the whoami operation.
    let parsed: ory_kratos_client::models::ErrorGeneric =
        serde_json::from_value(body).expect("ory-kratos-client parses the error");
    assert_eq!(parsed.error.id.as_deref(), Some("session_aal2_required"));

    // Kratos looks the session up before checking the AAL: unknown is still 401.
    let resp = whoami_with(&k, &[("X-Session-Token", "unknown")]).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn rate_limited_is_429_with_retry_after() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_behavior(Behavior::RateLimited { retry_after: 7 });
    let resp = whoami_with(&k, &[("X-Session-Token", "t")]).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], 429);
}

#[tokio::test]
async fn server_error_is_500_json() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_behavior(Behavior::ServerError);
    let resp = whoami_with(&k, &[("X-Session-Token", "t")]).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], 500);
    assert_eq!(body["error"]["status"], "Internal Server Error");
}

#[tokio::test]
async fn garbage_is_200_with_non_json_body() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_behavior(Behavior::Garbage);
    let resp = whoami_with(&k, &[("X-Session-Token", "t")]).await;
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.expect("body");
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
}

#[tokio::test]
async fn invalid_session_is_200_json_that_is_no_session() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_behavior(Behavior::InvalidSession);
    let resp = whoami_with(&k, &[("X-Session-Token", "t")]).await;
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.expect("body");
    let value: Value = serde_json::from_slice(&bytes).expect("is JSON");
    assert_eq!(value, json!({"foo": 1}));
    assert!(serde_json::from_slice::<ory_kratos_client::models::Session>(&bytes).is_err());
    assert!(!session_validator().is_valid(&value));
}

#[tokio::test]
async fn hang_never_answers_so_a_client_times_out() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_behavior(Behavior::Hang);
    let started = Instant::now();
    let err = client()
        .get(whoami_url(&k))
        .header("X-Session-Token", "t")
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .expect_err("a hanging whoami must time out");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        k.whoami_calls(),
        1,
        "the hanging request was received and counted"
    );
}

#[tokio::test]
async fn stop_releases_hanging_requests_and_keepalive_connections() {
    let k = KratosDouble::start().await;
    k.set_behavior(Behavior::Hang);
    let hanging = {
        let url = whoami_url(&k);
        tokio::spawn(async move { client().get(url).send().await })
    };
    // An idle keep-alive connection.
    let mut idle = TcpStream::connect(k.addr()).await.expect("connect");
    idle.write_all(b"GET /health/ready HTTP/1.1\r\nHost: k\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_one_response(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200"));
    while k.whoami_calls() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    k.stop().await;
    let result = tokio::time::timeout(Duration::from_secs(5), hanging)
        .await
        .expect("hanging request ends once the double stops")
        .expect("join");
    assert!(
        result.is_err(),
        "a hanging request gets no answer: {result:?}"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("idle connection closed by stop()");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

#[tokio::test]
async fn close_mid_response_sends_headers_and_half_the_body() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_behavior(Behavior::CloseMidResponse);

    let raw = raw_exchange(
        k.addr(),
        b"GET /sessions/whoami HTTP/1.1\r\nHost: k\r\nX-Session-Token: t\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let header_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the whole header block was sent")
        + 4;
    let head = &text[..header_end];
    let declared: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .trim()
        .parse()
        .expect("number");
    let got = raw.len() - header_end;
    assert!(
        got > 0 && got < declared,
        "got {got} of {declared} body bytes"
    );

    // A real client sees the status and then a body error.
    let resp = whoami_with(&k, &[("X-Session-Token", "t")]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "the body must not complete");
    assert_eq!(k.whoami_calls(), 2);
}

#[tokio::test]
async fn close_mid_headers_cuts_inside_the_header_block() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_behavior(Behavior::CloseMidHeaders);
    let raw = raw_exchange(
        k.addr(),
        b"GET /sessions/whoami HTTP/1.1\r\nHost: k\r\nX-Session-Token: t\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(!text.contains("\r\n\r\n"), "{text}");
    let err = client()
        .get(whoami_url(&k))
        .header("X-Session-Token", "t")
        .send()
        .await
        .expect_err("no complete response head");
    assert!(!err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn delay_is_added_before_answering() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_delay(Duration::from_millis(1000));
    let started = Instant::now();
    let resp = whoami_with(&k, &[("X-Session-Token", "t")]).await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(1000));
    k.set_delay(Duration::ZERO);
    let started = Instant::now();
    whoami_with(&k, &[("X-Session-Token", "t")]).await;
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[tokio::test]
async fn delayed_calls_are_counted_on_arrival() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    k.set_delay(Duration::from_secs(3));
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let url = whoami_url(&k);
            tokio::spawn(async move {
                client()
                    .get(url)
                    .header("X-Session-Token", "t")
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while k.whoami_calls() < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(k.whoami_calls(), 5, "counted on arrival");
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "counted before any answer left"
    );
    assert_eq!(k.requests().len(), 5);
    for call in calls {
        assert_eq!(call.await.expect("join").expect("response"), 200);
    }
}

#[tokio::test]
async fn stop_refuses_connections_and_the_port_can_be_reused() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    let addr = k.addr();
    assert_eq!(
        whoami_with(&k, &[("X-Session-Token", "t")]).await.status(),
        200
    );

    k.stop().await;
    k.stop().await; // idempotent
    let err = TcpStream::connect(addr)
        .await
        .expect_err("refused while stopped");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let err = client()
        .get(whoami_url(&k))
        .header("X-Session-Token", "t")
        .send()
        .await
        .expect_err("refused while stopped");
    assert!(err.is_connect(), "{err:?}");

    // restart(): same port, same sessions and counters.
    k.restart().await.expect("restart on the same port");
    assert_eq!(k.addr(), addr);
    assert_eq!(
        whoami_with(&k, &[("X-Session-Token", "t")]).await.status(),
        200
    );
    assert_eq!(k.whoami_calls(), 2);

    // start_on(): a fresh double on the same port.
    k.stop().await;
    let fresh = KratosDouble::start_on(addr)
        .await
        .expect("start_on the old port");
    assert_eq!(fresh.addr(), addr);
    assert_eq!(fresh.url(), format!("http://{addr}"));
    assert_eq!(
        whoami_with(&fresh, &[("X-Session-Token", "t")])
            .await
            .status(),
        401,
        "a fresh double has no sessions"
    );
    fresh.add_session("t", SessionSpec::default());
    assert_eq!(
        whoami_with(&fresh, &[("X-Session-Token", "t")])
            .await
            .status(),
        200
    );
    fresh.stop().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let k = KratosDouble::start().await;
    k.add_session("t", SessionSpec::default());
    let mut stream = TcpStream::connect(k.addr()).await.expect("connect");
    for (token, status) in [("t", "200"), ("x", "401"), ("t", "200")] {
        let req =
            format!("GET /sessions/whoami HTTP/1.1\r\nHost: k\r\nX-Session-Token: {token}\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let (head, body) = read_one_response(&mut stream).await;
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
        assert!(!head.to_ascii_lowercase().contains("connection: close"));
        let _: Value = serde_json::from_slice(&body).expect("json body");
    }
    assert_eq!(k.whoami_calls(), 3);
}

#[tokio::test]
async fn health_trailing_slash_and_unknown_paths() {
    let k = KratosDouble::start().await;
    let resp = client()
        .get(format!("{}/health/ready", k.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"status": "ok"})
    );

    let resp = client()
        .get(format!("{}/sessions/whoami/", k.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401, "Kratos trims one trailing slash");

    let resp = client()
        .get(format!("{}/nope", k.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 404);
    assert_eq!(k.whoami_calls(), 1);
}

// ---------------------------------------------------------------------------------------------
// 3. the echo upstream

#[tokio::test]
async fn echo_records_raw_path_query_and_repeated_headers() {
    let echo = EchoUpstream::start().await;
    let raw = raw_exchange(
        echo.addr(),
        b"GET /a/../b//c%2Fd/./e?x=1&x=%20two&&y HTTP/1.1\r\nHost: up\r\nX-Dup: one\r\nX-Other: o\r\nx-dup: two\r\nX-Dup: three\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.to_ascii_lowercase().contains("\r\nx-echo: 1\r\n"));
    assert!(text
        .to_ascii_lowercase()
        .contains("\r\ncontent-type: application/json\r\n"));

    assert_eq!(echo.count(), 1);
    let r = &echo.requests()[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/a/../b//c%2Fd/./e");
    assert_eq!(r.query.as_deref(), Some("x=1&x=%20two&&y"));
    assert_eq!(r.header_all("x-dup"), vec!["one", "two", "three"]);
    assert_eq!(r.header("X-Other"), Some("o"));
    assert_eq!(r.header("host"), Some("up"));
    assert!(r.headers.iter().all(|(n, _)| n == &n.to_ascii_lowercase()));
    assert!(r.body.is_empty());

    let body_start = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    let answer: Value = serde_json::from_slice(&raw[body_start..]).expect("json answer");
    assert_eq!(answer["method"], "GET");
    assert_eq!(answer["path"], "/a/../b//c%2Fd/./e");
    assert_eq!(answer["query"], "x=1&x=%20two&&y");
    assert_eq!(answer["body_len"], 0);
    let dup: Vec<&str> = answer["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .filter(|pair| pair[0] == "x-dup")
        .map(|pair| pair[1].as_str().expect("value"))
        .collect();
    assert_eq!(dup, vec!["one", "two", "three"]);
}

#[tokio::test]
async fn echo_without_query_and_with_bodies() {
    let echo = EchoUpstream::start().await;
    let resp = client()
        .post(format!("{}/upload", echo.url()))
        .header("content-type", "text/plain")
        .body("hello body")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo"], "1");
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer["query"], Value::Null);
    assert_eq!(answer["body_len"], 10);

    // Chunked request body.
    raw_exchange(
        echo.addr(),
        b"PUT /chunked HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;

    let reqs = echo.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/upload");
    assert_eq!(reqs[0].query, None);
    assert_eq!(reqs[0].body, b"hello body");
    assert_eq!(reqs[1].method, "PUT");
    assert_eq!(reqs[1].body, b"hello world");

    echo.reset();
    assert_eq!(echo.count(), 0);
    assert!(echo.requests().is_empty());

    echo.stop().await;
    let err = TcpStream::connect(echo.addr())
        .await
        .expect_err("refused after stop");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}
