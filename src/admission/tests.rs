//! Admission driven directly, without sockets: one case per row of the README's decision table
//! ("How a request is handled" -> "Decisions"), plus the checks before it (framing, `Host`, path,
//! route, upgrade, edge `return_to`). Sessions come from a table that counts the lookups, so a case
//! can show that Kratos was (or was not) asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::Aal;
use crate::session::{Session, UnavailableReason};

const CONFIG: &str = r#"
[server]
public_url = "https://app.example.com"

[kratos]
public_url = "http://127.0.0.1:4433"
login_url = "https://app.example.com/.ory/self-service/login/browser"

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "http://127.0.0.1:3000"
auth = "anonymous"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:3000"
auth = "session"
[routes.identity_headers]
"X-User-Id" = "identity.id"

[[routes]]
name = "opt"
path_prefix = "/opt"
upstream = "http://127.0.0.1:3000"
auth = "optional"
require_aal = "aal2"
[routes.identity_headers]
"X-User-Id" = "identity.id"

[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "http://127.0.0.1:3000"
auth = "session"
require_aal = "aal2"

[[routes]]
name = "app"
path_prefix = "/app"
upstream = "http://127.0.0.1:3000"
auth = "session"
on_unauthenticated = "redirect"

[[routes]]
name = "kratos"
path_prefix = "/.ory"
kratos_edge = true
allowed_return_urls = ["https://app.example.com/"]
"#;

/// Sessions by token value; unknown tokens are Kratos's 401. Counts lookups.
struct Table {
    answers: HashMap<&'static str, Resolution>,
    calls: AtomicUsize,
}

impl SessionSource for Table {
    fn resolve(
        &self,
        credential: &Credential<'_>,
    ) -> impl Future<Output = (Resolution, LookupKind)> + Send {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let r = self
            .answers
            .get(credential.value)
            .cloned()
            .unwrap_or(Resolution::Invalid);
        std::future::ready((r, LookupKind::Miss))
    }
}

fn session(aal: u8, expires_in: i64) -> Resolution {
    let now = SystemTime::now();
    let expires_at = if expires_in >= 0 {
        now + Duration::from_secs(expires_in as u64)
    } else {
        now - Duration::from_secs(expires_in.unsigned_abs())
    };
    Resolution::Valid {
        session: Arc::new(Session {
            id: "sess-1".into(),
            identity_id: "ident-1".into(),
            aal: Aal(aal),
            expires_at: Some(expires_at),
            values: vec![Some(HeaderValue::from_static("ident-1"))].into_boxed_slice(),
        }),
        set_cookie: Vec::new(),
        stale: false,
    }
}

fn table() -> Table {
    let mut answers = HashMap::new();
    answers.insert("valid", session(1, 3600));
    answers.insert("aal2", session(2, 3600));
    // Kratos said active; by our clock it expired already (clock skew): Kratos decides
    answers.insert("skewed", session(1, -60));
    answers.insert(
        "kratos-aal2",
        Resolution::Aal2Required {
            redirect_browser_to: Some(
                "http://127.0.0.1:4433/self-service/login/browser?aal=aal2".into(),
            ),
        },
    );
    answers.insert(
        "limited",
        Resolution::RateLimited {
            retry_after: Some(7),
        },
    );
    answers.insert(
        "undecodable",
        Resolution::Unavailable {
            reason: UnavailableReason::ServerError,
        },
    );
    answers.insert(
        "down",
        Resolution::Unavailable {
            reason: UnavailableReason::ServerError,
        },
    );
    Table {
        answers,
        calls: AtomicUsize::new(0),
    }
}

struct Req {
    method: Method,
    version: Version,
    uri: Uri,
    path: &'static str,
    headers: HeaderMap,
    cl_te: bool,
}

fn req(method: &str, path: &'static str, headers: &[(&'static str, &str)]) -> Req {
    let mut map = HeaderMap::new();
    map.append(HOST, HeaderValue::from_static("app.example.com"));
    for (n, v) in headers {
        map.append(*n, HeaderValue::from_str(v).expect("test header"));
    }
    Req {
        method: method.parse().expect("method"),
        version: Version::HTTP_11,
        uri: Uri::from_static("/"),
        path,
        headers: map,
        cl_te: false,
    }
}

/// What a case expects: the status of the answer, or "forwarded" with this outcome and identity.
#[derive(Debug, PartialEq)]
enum Expect {
    Answer(u16),
    Forward(&'static str, Option<&'static str>),
}

async fn run(t: &Table, r: &Req) -> (Decision, Expect) {
    let cfg = crate::config::from_str(CONFIG).expect("test config");
    let routes = RouteTable::new(&cfg.routes);
    let view = RequestView {
        method: &r.method,
        version: r.version,
        uri: &r.uri,
        raw_path: r.path.as_bytes(),
        headers: &r.headers,
        content_length_with_transfer_encoding: r.cl_te,
    };
    let gate = Gate {
        config: &cfg,
        table: &routes,
        sessions: t,
        tokens: None,
    };
    let d = admit(&gate, &view).await;
    let got = match &d.verdict {
        Ok(a) => Expect::Forward(
            a.outcome,
            a.identity
                .iter()
                .find(|(n, _)| n == "x-user-id")
                .and_then(|(_, v)| v.to_str().ok())
                .map(|v| if v == "ident-1" { "ident-1" } else { "other" }),
        ),
        Err(e) => Expect::Answer(e.status()),
    };
    (d, got)
}

const TOKEN: &str = "x-session-token";

/// One row: path, method, headers, what admission must do, how many whoami lookups it may make.
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Expect,
    usize,
);

#[tokio::test]
async fn decision_table() {
    use Expect::*;
    // (path, method, headers, expected, whoami calls)
    let cases: Vec<Case> = vec![
        // no credential
        ("/api/x", "GET", vec![], Answer(401), 0),
        ("/app/x", "GET", vec![], Answer(303), 0),
        ("/app/x", "POST", vec![], Answer(401), 0),
        ("/opt/x", "GET", vec![], Forward("no_credential", None), 0),
        ("/public/x", "GET", vec![], Forward("anonymous", None), 0),
        // Kratos: 401 / inactive (the only rejections)
        ("/api/x", "GET", vec![(TOKEN, "nope")], Answer(401), 1),
        ("/app/x", "GET", vec![(TOKEN, "nope")], Answer(303), 1),
        (
            "/opt/x",
            "GET",
            vec![(TOKEN, "nope")],
            Forward("invalid_credential", None),
            1,
        ),
        // anonymous routes never ask Kratos, whatever the request carries
        (
            "/public/x",
            "GET",
            vec![(TOKEN, "valid")],
            Forward("anonymous", None),
            0,
        ),
        // a malformed credential is rejected as Kratos would, without asking
        (
            "/api/x",
            "GET",
            vec![("authorization", "Bearer a b")],
            Answer(401),
            0,
        ),
        // valid session, and the clock-skewed one
        (
            "/api/x",
            "GET",
            vec![(TOKEN, "valid")],
            Forward("authenticated", Some("ident-1")),
            1,
        ),
        (
            "/api/x",
            "GET",
            vec![(TOKEN, "skewed")],
            Forward("authenticated", Some("ident-1")),
            1,
        ),
        // below require_aal, or Kratos's session_aal2_required
        ("/admin/x", "GET", vec![(TOKEN, "valid")], Answer(403), 1),
        (
            "/admin/x",
            "GET",
            vec![(TOKEN, "aal2")],
            Forward("authenticated", None),
            1,
        ),
        (
            "/api/x",
            "GET",
            vec![(TOKEN, "kratos-aal2")],
            Answer(403),
            1,
        ),
        (
            "/opt/x",
            "GET",
            vec![(TOKEN, "valid")],
            Forward("aal_insufficient", None),
            1,
        ),
        (
            "/opt/x",
            "GET",
            vec![(TOKEN, "kratos-aal2")],
            Forward("aal_insufficient", None),
            1,
        ),
        (
            "/opt/x",
            "GET",
            vec![(TOKEN, "aal2")],
            Forward("authenticated", Some("ident-1")),
            1,
        ),
        // Kratos 429, Kratos unavailable: never a rejection, never a pass
        ("/api/x", "GET", vec![(TOKEN, "limited")], Answer(429), 1),
        ("/opt/x", "GET", vec![(TOKEN, "limited")], Answer(429), 1),
        ("/api/x", "GET", vec![(TOKEN, "down")], Answer(503), 1),
        ("/opt/x", "GET", vec![(TOKEN, "down")], Answer(503), 1),
        // Kratos v1.3.1 answers 500 for an undecodable cookie sent with a valid Bearer token:
        // sent together (Kratos applies its own fallback rule), the answer is "unavailable"
        (
            "/api/x",
            "GET",
            vec![
                ("cookie", "ory_kratos_session=undecodable"),
                ("authorization", "Bearer valid"),
            ],
            Answer(503),
            1,
        ),
        (
            "/opt/x",
            "GET",
            vec![
                ("cookie", "ory_kratos_session=undecodable"),
                ("authorization", "Bearer valid"),
            ],
            Answer(503),
            1,
        ),
        // two X-Session-Token or two Authorization headers
        (
            "/api/x",
            "GET",
            vec![(TOKEN, "valid"), (TOKEN, "valid")],
            Answer(400),
            0,
        ),
        (
            "/opt/x",
            "GET",
            vec![("authorization", "Bearer a"), ("authorization", "Bearer b")],
            Answer(400),
            0,
        ),
        // before any route: path, route, upgrade, Host
        ("/api/%2e%2e/admin", "GET", vec![], Answer(400), 0),
        ("/api%2Fx", "GET", vec![], Answer(400), 0),
        ("/elsewhere", "GET", vec![], Answer(404), 0),
        (
            "/api/x",
            "GET",
            vec![(TOKEN, "valid"), ("upgrade", "websocket")],
            Answer(400),
            0,
        ),
        (
            "/public/x",
            "GET",
            vec![("host", "second.example.com")],
            Answer(400),
            0,
        ),
        // the edge: a return_to outside the allow-list never reaches Kratos
        (
            "/.ory/self-service/login/browser?return_to=https%3A%2F%2Fevil.example%2F",
            "GET",
            vec![],
            Answer(400),
            0,
        ),
        (
            "/.ory/self-service/login/browser?return_to=https%3A%2F%2Fapp.example.com%2Fx",
            "GET",
            vec![],
            Forward("anonymous", None),
            0,
        ),
    ];
    for (path, method, headers, expected, calls) in cases {
        let t = table();
        let r = req(method, path, &headers);
        let (_, got) = run(&t, &r).await;
        assert_eq!(got, expected, "{method} {path} {headers:?}");
        assert_eq!(
            t.calls.load(Ordering::Relaxed),
            calls,
            "whoami calls for {method} {path} {headers:?}"
        );
    }
}

#[tokio::test]
async fn framing_and_host_are_refused_on_every_route() {
    for path in ["/public/x", "/api/x", "/opt/x"] {
        let t = table();
        let mut r = req("POST", path, &[(TOKEN, "valid")]);
        r.cl_te = true;
        let (d, got) = run(&t, &r).await;
        assert_eq!(got, Expect::Answer(400), "CL+TE on {path}");
        assert!(matches!(d.verdict, Err(GateError::AmbiguousFraming)));

        let mut r = req("GET", path, &[]);
        r.headers.remove(HOST);
        let (d, got) = run(&t, &r).await;
        assert_eq!(got, Expect::Answer(400), "HTTP/1.1 without Host on {path}");
        assert!(matches!(d.verdict, Err(GateError::BadHost)));
        // HTTP/1.0 may omit it
        r.version = Version::HTTP_10;
        let (d, _) = run(&t, &r).await;
        assert!(!matches!(d.verdict, Err(GateError::BadHost)), "{path}");

        for bad in ["user@app.example.com", "app.example.com/x", "a b", ""] {
            let mut r = req("GET", path, &[]);
            r.headers
                .insert(HOST, HeaderValue::from_str(bad).expect("v"));
            let (d, _) = run(&t, &r).await;
            assert!(
                matches!(d.verdict, Err(GateError::BadHost)),
                "Host {bad:?} on {path}"
            );
        }
        assert_eq!(t.calls.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test]
async fn header_limits_answer_431_before_anything_else() {
    let t = table();
    let big = "a".repeat(40_000);
    let r = req("GET", "/api/%2e%2e", &[("x-big", big.as_str())]);
    let (d, got) = run(&t, &r).await;
    assert_eq!(got, Expect::Answer(431));
    assert!(d.route.is_none() && d.target.is_none());
}

#[tokio::test]
async fn the_decision_carries_route_target_and_lookup_also_when_refused() {
    let t = table();
    let (d, _) = run(&t, &req("GET", "/api//a/./b?q=1", &[(TOKEN, "nope")])).await;
    assert_eq!(d.route, Some(1));
    let target = d.target.expect("target");
    assert_eq!(target.path, "/api/a/b");
    assert_eq!(target.query.as_deref(), Some("q=1"));
    assert_eq!(d.lookup, Some(LookupKind::Miss));
    assert!(matches!(
        d.verdict,
        Err(GateError::Unauthenticated {
            login_redirect: None
        })
    ));
}

#[tokio::test]
async fn browser_urls_point_at_the_public_edge() {
    // the 303 of a redirect route and the 403's redirect_browser_to never name Kratos's internal URL
    let t = table();
    let (d, _) = run(&t, &req("GET", "/app/x", &[])).await;
    match d.verdict {
        Err(GateError::Unauthenticated {
            login_redirect: Some(url),
        }) => {
            assert!(
                url.starts_with("https://app.example.com/.ory/self-service/login/browser?"),
                "{url}"
            );
            assert!(url.contains("return_to=https%3A%2F%2Fapp.example.com%2Fapp%2Fx"));
        }
        other => panic!("{other:?}"),
    }
    let (d, _) = run(&t, &req("GET", "/api/x", &[(TOKEN, "kratos-aal2")])).await;
    match d.verdict {
        Err(GateError::StepUpRequired {
            redirect_browser_to: Some(url),
            ..
        }) => assert_eq!(
            url,
            "https://app.example.com/.ory/self-service/login/browser?aal=aal2"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn edge_plan_strips_the_prefix_and_keeps_the_query() {
    let t = table();
    let r = req(
        "GET",
        "/.ory/sessions/whoami?x=1",
        &[(TOKEN, "valid"), ("cookie", "a=b")],
    );
    let (d, got) = run(&t, &r).await;
    assert_eq!(got, Expect::Forward("anonymous", None));
    let plan = d.verdict.expect("forwarded").edge.expect("edge plan");
    assert_eq!(plan.upstream_target, "/sessions/whoami?x=1");
    assert!(plan.credential.is_some());
    assert!(!plan.buffer_request);
}
