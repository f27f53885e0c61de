//! Property tests of the security-relevant library functions: canonical paths through the route
//! table, credential extraction against a reference model of Kratos's precedence, identity header
//! templating on arbitrary session JSON, and configuration parsing on arbitrary text.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use serde_json::Value;
use sessiongate::credential::{self, Credential, CredentialError, CredentialKind};
use sessiongate::identity::Template;
use sessiongate::path::{canonicalize, canonicalize_path};
use sessiongate::routing::RouteTable;

// ---------------------------------------------------------------------------------------------
// Paths and routing
// ---------------------------------------------------------------------------------------------

/// Path segments chosen to hit every rule of the canonicaliser and the route prefixes.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "api", "public", "maybe", "web", "admin", "API", "apix", "api.", "v1", "me", "x", "",
            ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2e.", "%2E%2E", "%2f", "%2F", "..%2f",
            "%5c", "\\", "..\\", ";", ";x=y", "..;", "%3b", "%00", "%09", "%0a", "%7f", "%2561pi",
            "%61pi", "%61%70%69", "%25", "%", "%zz", "%c0%ae", "%c0%ae%c0%ae", "%e0%80%ae",
            "%ef%bc%8f", "%C3%A9", "a%20b", "?", "?x=/../api", "#", "#x", "~", "@", ":", "=",
            "<", "%3F", "%2B", "+",
        ])
        .prop_map(str::to_string),
        1 => "[a-zA-Z0-9%._~;:@!$&'()*+,=\\\\-]{0,6}",
    ]
}

fn raw_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(segment(), 0..8),
        prop::sample::select(vec!["/", "//", "", "/./", "/../"]),
        any::<bool>(),
    )
        .prop_map(|(segs, lead, trailing)| {
            let mut p = format!("{lead}{}", segs.join("/"));
            if trailing {
                p.push('/');
            }
            p
        })
}

/// Routes of the standard integration config plus nested and exact ones.
fn route_config() -> sessiongate::Config {
    let route = |name: &str, matcher: &str, auth: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\n{matcher}\nupstream = \"http://127.0.0.1:1\"\nauth = \"{auth}\"\n"
        )
    };
    let text = [
        "[kratos]\npublic_url = \"http://127.0.0.1:4433\"\nlogin_url = \"https://app.example.com/login\"\n"
            .to_string(),
        route("public", "path_prefix = \"/public\"", "anonymous"),
        route("maybe", "path_prefix = \"/maybe\"", "optional"),
        route("api", "path_prefix = \"/api\"", "session"),
        route("api-v1", "path_prefix = \"/api/v1\"", "session"),
        route("api-me", "path = \"/api/v1/me\"", "session"),
        route("web", "path_prefix = \"/web\"", "session"),
        route("admin", "path_prefix = \"/admin\"", "session"),
    ]
    .concat();
    sessiongate::config::from_str(&text).expect("route config")
}

fn on_boundary(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn canonicalisation_is_idempotent_and_clean(p in raw_path(), q in proptest::option::of("[a-z=&%/.0-9]{0,8}")) {
        let target = match &q {
            Some(q) => format!("{p}?{q}"),
            None => p.clone(),
        };
        if let Ok(c) = canonicalize(target.as_bytes()) {
            // Twice gives the same result, through both entry points.
            prop_assert_eq!(canonicalize(c.to_target().as_bytes()), Ok(c.clone()));
            prop_assert_eq!(canonicalize_path(&c.path), Ok(c.path.clone()));
            // Never `//`, never a `.` or `..` segment, always absolute.
            prop_assert!(c.path.starts_with('/'));
            prop_assert!(!c.path.contains("//"), "{:?} -> {:?}", target, c.path);
            prop_assert!(
                c.path.split('/').all(|s| s != "." && s != ".."),
                "{:?} -> {:?}", target, c.path
            );
            // Nothing that a lenient decoder turns into a separator or a dot segment.
            let lower = c.path.to_ascii_lowercase();
            for bad in ["%2f", "%5c", "\\", ";", "%3b", "%00", "#"] {
                prop_assert!(!lower.contains(bad), "{:?} -> {:?}", target, c.path);
            }
            prop_assert!(
                lower.split('/').all(|s| !matches!(s, "%2e" | "%2e%2e" | ".%2e" | "%2e.")),
                "{:?} -> {:?}", target, c.path
            );
            // The query (after the first `?`) is untouched and never part of the path.
            let want = target.split_once('?').map(|(_, q)| q);
            prop_assert_eq!(c.query.as_deref(), want);
        }
    }

    /// Whatever route the canonical path selects, the canonical path is inside that route's
    /// prefix on a segment boundary (or equals its exact path), and no longer-prefix route that
    /// also matches was skipped.
    #[test]
    fn selected_route_contains_the_canonical_path(p in raw_path(), host in proptest::option::of("[a-z.]{1,12}(:[0-9]{1,4})?")) {
        let cfg = route_config();
        let table = RouteTable::new(&cfg.routes);
        let Ok(c) = canonicalize(p.as_bytes()) else { return Ok(()); };
        let found = table.find(host.as_deref(), &c.path, &Method::GET);
        let matching: Vec<usize> = cfg
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                if r.matcher.exact {
                    c.path == r.matcher.path
                } else {
                    on_boundary(&c.path, &r.matcher.path)
                }
            })
            .map(|(i, _)| i)
            .collect();
        match found {
            None => prop_assert!(matching.is_empty(), "{:?} -> {:?}: no route but {:?} match", p, c.path, matching),
            Some(i) => {
                let m = &cfg.routes[i].matcher;
                if m.exact {
                    prop_assert_eq!(&c.path, &m.path);
                } else {
                    prop_assert!(on_boundary(&c.path, &m.path), "{:?} -> {:?} routed to {}", p, c.path, m.path);
                    // Nothing more specific matched.
                    for j in matching {
                        let o = &cfg.routes[j].matcher;
                        prop_assert!(!o.exact && o.path.len() <= m.path.len(), "{:?} -> {:?}: {} chosen over {}", p, c.path, m.path, o.path);
                    }
                }
            }
        }
    }

    /// A request whose canonical path is under `/public/` never reaches a session route, and one
    /// that reaches the `/api` routes is under `/api` even when read by a lenient backend that
    /// decodes once and folds case.
    #[test]
    fn public_paths_never_route_to_api(p in raw_path()) {
        let cfg = route_config();
        let table = RouteTable::new(&cfg.routes);
        let Ok(c) = canonicalize(p.as_bytes()) else { return Ok(()); };
        let name = table.find(None, &c.path, &Method::GET).map(|i| cfg.routes[i].name.as_str());
        if c.path == "/public" || c.path.starts_with("/public/") {
            prop_assert_eq!(name, Some("public"), "{:?} -> {:?}", p, c.path);
        }
        if name == Some("public") {
            // A backend decoding the forwarded path once must still see it under /public.
            let decoded = percent_decode_once(&c.path);
            let resolved = resolve_dots(&decoded.replace('\\', "/"));
            prop_assert!(
                resolved == "/public" || resolved.starts_with("/public/"),
                "{:?} -> {:?} is read as {:?} by a decoding backend", p, c.path, resolved
            );
        }
        if matches!(name, Some("api" | "api-v1" | "api-me")) {
            prop_assert!(on_boundary(&c.path, "/api"), "{:?} -> {:?}", p, c.path);
        }
    }

    /// Segment-boundary prefixes: `/api` never matches `/apiX` and always matches `/api/...`.
    #[test]
    fn prefixes_match_on_segment_boundaries(rest in "[a-zA-Z0-9._~-]{1,8}", tail in "(/[a-z0-9]{0,4}){0,3}") {
        let cfg = route_config();
        let table = RouteTable::new(&cfg.routes);
        let glued = format!("/api{rest}{tail}");
        let name = table.find(None, &glued, &Method::GET).map(|i| cfg.routes[i].name.clone());
        prop_assert!(!matches!(name.as_deref(), Some("api" | "api-v1" | "api-me")), "{} -> {:?}", glued, name);
        let nested = format!("/api/{rest}{tail}");
        let name = table.find(None, &nested, &Method::GET).map(|i| cfg.routes[i].name.clone());
        prop_assert!(matches!(name.as_deref(), Some("api" | "api-v1" | "api-me")), "{} -> {:?}", nested, name);
    }
}

fn percent_decode_once(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn resolve_dots(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

const COOKIE: &str = "ory_kratos_session";

/// Credential-ish values: mostly plain, sometimes with what Kratos would refuse.
fn cred_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[A-Za-z0-9._~+/=-]{1,12}",
        1 => Just(String::new()),
        1 => "[a-z]{1,4} [a-z]{1,4}",
        1 => "[a-z]{1,4}\t[a-z]{1,4}",
        1 => "[a-z]{1,4}\u{e9}",
    ]
}

/// One `Cookie` header: pairs, some named like the session cookie.
fn cookie_header() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                COOKIE,
                COOKIE,
                "other",
                "ory_kratos_session_x",
                "ORY_KRATOS_SESSION",
                "csrf_token_1",
            ]),
            prop_oneof![4 => "[A-Za-z0-9._~+/=-]{1,10}", 1 => Just(String::new())],
        )
            .prop_map(|(n, v)| (n.to_string(), v)),
        0..4,
    )
}

#[derive(Debug, Clone)]
struct Auth {
    scheme: &'static str,
    sep: &'static str,
    token: String,
    extra: Option<String>,
}

fn auth() -> impl Strategy<Value = Auth> {
    (
        prop::sample::select(vec![
            "Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Token", "",
        ]),
        prop::sample::select(vec![" ", " ", " ", "  ", "\t"]),
        cred_value(),
        proptest::option::weighted(0.15, "[a-z]{0,3}"),
    )
        .prop_map(|(scheme, sep, token, extra)| Auth {
            scheme,
            sep,
            token,
            extra,
        })
}

#[derive(Debug, Clone)]
struct Request {
    tokens: Vec<String>,
    cookies: Vec<Vec<(String, String)>>,
    auths: Vec<Auth>,
    /// Unrelated headers interleaved.
    noise: Vec<(String, String)>,
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop::collection::vec(cred_value(), 0..3),
        prop::collection::vec(cookie_header(), 0..3),
        prop::collection::vec(auth(), 0..3),
        prop::collection::vec(("x-[a-z]{1,6}", "[ -~]{0,8}"), 0..3),
    )
        .prop_map(|(tokens, cookies, auths, noise)| Request {
            tokens,
            cookies,
            auths,
            noise,
        })
}

fn auth_line(a: &Auth) -> String {
    let mut s = format!("{}{}{}", a.scheme, a.sep, a.token);
    if let Some(x) = &a.extra {
        s.push(' ');
        s.push_str(x);
    }
    s
}

fn to_headers(r: &Request) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &str, value: &str| {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_bytes(value.as_bytes()).expect("value"),
        );
    };
    for (n, v) in &r.noise {
        put(n, v);
    }
    for t in &r.tokens {
        put("X-Session-Token", t);
    }
    for c in &r.cookies {
        let line: Vec<String> = c.iter().map(|(n, v)| format!("{n}={v}")).collect();
        put("Cookie", &line.join("; "));
    }
    for a in &r.auths {
        put("authorization", &auth_line(a));
    }
    h
}

/// What Kratos would accept as a credential value.
fn acceptable(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_graphic())
}

/// The reference model, written from the structure of the request rather than its bytes:
/// - two or more tokens: ambiguous; one non-blank token: it, and nothing else is looked at;
/// - else the first `Cookie` header whose first session cookie is non-empty;
/// - else exactly one `Authorization` with a case-insensitive `Bearer` scheme, one space and a
///   non-empty token, nothing after it; two `Authorization` headers are ambiguous.
///
/// A chosen value Kratos could not accept (space, control, non-ASCII) is `Malformed`.
fn model(r: &Request) -> Result<Option<(CredentialKind, String)>, CredentialError> {
    let pick = |kind, v: &str| {
        if acceptable(v) {
            Ok(Some((kind, v.to_string())))
        } else {
            Err(CredentialError::Malformed)
        }
    };
    match r.tokens.as_slice() {
        [] => {}
        [t] if !t.is_ascii() => return Err(CredentialError::Malformed),
        [t] if !t.trim().is_empty() => return pick(CredentialKind::Token, t),
        [_] => {}
        _ => return Err(CredentialError::DuplicateToken),
    }
    for c in &r.cookies {
        if let Some((_, v)) = c.iter().find(|(n, _)| n == COOKIE) {
            if !v.is_empty() {
                return pick(CredentialKind::Cookie, v);
            }
        }
    }
    match r.auths.as_slice() {
        [] => Ok(None),
        [a] => {
            let line = auth_line(a);
            if !line.is_ascii() {
                return Ok(None);
            }
            // `split(' ')` into exactly two parts: a tab is not a separator (and then makes the
            // token malformed), a space inside the token makes three parts.
            let bearer = a.scheme.eq_ignore_ascii_case("bearer")
                && a.sep == " "
                && !a.token.is_empty()
                && !a.token.contains(' ')
                && a.extra.is_none();
            if bearer {
                pick(CredentialKind::Bearer, &a.token)
            } else {
                Ok(None)
            }
        }
        _ => Err(CredentialError::DuplicateAuthorization),
    }
}

/// Arbitrary header maps (any names the `http` crate accepts, any legal value bytes).
fn arbitrary_headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec(
        (
            prop_oneof![
                prop::sample::select(vec![
                    "x-session-token",
                    "X-Session-Token",
                    "cookie",
                    "Cookie",
                    "authorization",
                    "Authorization",
                ])
                .prop_map(str::to_string),
                "[a-zA-Z0-9_-]{1,12}",
            ],
            prop::collection::vec(any::<u8>(), 0..40),
        ),
        0..8,
    )
    .prop_map(|pairs| {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            let v: Vec<u8> = v
                .into_iter()
                .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7F))
                .collect();
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_bytes(&v),
            ) {
                h.append(n, v);
            }
        }
        h
    })
}

fn kind() -> impl Strategy<Value = CredentialKind> {
    prop::sample::select(vec![
        CredentialKind::Token,
        CredentialKind::Cookie,
        CredentialKind::Bearer,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn extraction_follows_the_reference_model(r in request()) {
        let h = to_headers(&r);
        let got = credential::extract(&h, COOKIE).map(|c| c.map(|c| (c.kind, c.value.to_string())));
        prop_assert_eq!(got, model(&r), "{:?}", r);
    }

    #[test]
    fn extraction_never_panics_and_returns_a_clean_value(h in arbitrary_headers(), name in "[a-z_]{1,20}") {
        if let Ok(Some(c)) = credential::extract(&h, &name) {
            prop_assert!(!c.value.is_empty());
            prop_assert!(acceptable(c.value), "{:?}", c.value);
            if c.kind == CredentialKind::Cookie {
                prop_assert!(!c.value.contains(';'), "{:?}", c.value);
            }
            // Debug never shows the value.
            if c.value.len() > 3 {
                let shown = format!("{c:?}");
                prop_assert!(!shown.contains(c.value));
            }
        }
        // Same answer twice (no hidden state).
        let a = credential::extract(&h, &name).map(|c| c.map(|c| (c.kind, c.value.to_string())));
        let b = credential::extract(&h, &name).map(|c| c.map(|c| (c.kind, c.value.to_string())));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn find_cookie_never_returns_a_separator(line in "[ -~]{0,64}", name in "[a-z_;= ]{0,12}") {
        if let Some(v) = credential::find_cookie(&line, &name) {
            prop_assert!(!v.contains(';'), "{:?} in {:?}", v, line);
            prop_assert!(line.contains(v));
        }
    }

    #[test]
    fn find_cookie_finds_the_first_of_its_name(
        before in prop::collection::vec(("[a-z]{1,6}", "[A-Za-z0-9]{0,6}"), 0..3),
        first in "[A-Za-z0-9._-]{1,10}",
        second in "[A-Za-z0-9._-]{1,10}",
    ) {
        let mut parts: Vec<String> = before
            .iter()
            .filter(|(n, _)| n != COOKIE)
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        parts.push(format!("{COOKIE}={first}"));
        parts.push(format!("{COOKIE}={second}"));
        let line = parts.join("; ");
        prop_assert_eq!(credential::find_cookie(&line, COOKIE), Some(first.as_str()));
    }

    #[test]
    fn cache_keys_differ_for_different_credentials(
        (k1, v1) in (kind(), "[ -~]{0,16}"),
        (k2, v2) in (kind(), "[ -~]{0,16}"),
    ) {
        let a = Credential::new(k1, &v1);
        let b = Credential::new(k2, &v2);
        prop_assert_eq!(a.cache_key() == b.cache_key(), (k1, &v1) == (k2, &v2));
        // The key never embeds the value.
        if v1.len() >= 4 {
            let shown = format!("{:?}", a.cache_key());
            prop_assert!(!shown.contains(&v1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Identity templates
// ---------------------------------------------------------------------------------------------

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "identity", "traits", "email", "id", "name", "0", "1", "2", "00", "a.b", "", " ", "\n",
            "metadata_public", "verifiable_addresses", "value",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\\x00-\\x1f\\x7f a-z\u{80}-\u{10ffff}]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..5)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn dotted_path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(json_key(), 0..5).prop_map(|v| v.join(".")),
        1 => any::<String>(),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        // Keys as a template can spell them: non-empty, no dot, no space or control.
        "[a-zA-Z0-9_@+:-]{1,10}".prop_map(Step::Key),
        (0usize..4, 0usize..3).prop_map(|(i, extra)| Step::Index(i, i + 1 + extra)),
    ]
}

/// `root` with `leaf` at `steps`, and filler around it.
fn build(steps: &[Step], leaf: Value) -> Value {
    steps.iter().rev().fold(leaf, |inner, s| match s {
        Step::Key(k) => {
            let mut m = serde_json::Map::new();
            m.insert("filler".to_string(), Value::from(1));
            m.insert(k.clone(), inner);
            Value::Object(m)
        }
        Step::Index(i, len) => {
            let mut a = vec![Value::String("filler".into()); *len];
            a[*i] = inner;
            Value::Array(a)
        }
    })
}

fn path_of(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| match s {
            Step::Key(k) => k.clone(),
            Step::Index(i, _) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rendering_never_panics_nor_emits_control_bytes(json in json_value(), path in dotted_path()) {
        if let Ok(t) = Template::parse(&path) {
            if let Some(v) = t.render(&json) {
                prop_assert!(
                    v.as_bytes().iter().all(|&b| b >= 0x20 && b != 0x7F),
                    "{:?} rendered {:?}", path, v
                );
            }
        }
    }

    #[test]
    fn rendering_a_string_leaf_returns_it_exactly(
        steps in prop::collection::vec(step(), 1..6),
        leaf in "[^\\x00-\\x1f\\x7f]{0,24}",
    ) {
        let json = build(&steps, Value::String(leaf.clone()));
        let path = path_of(&steps);
        let t = Template::parse(&path).expect("a path built from valid keys parses");
        let got = t.render(&json).map(|v| v.as_bytes().to_vec());
        prop_assert_eq!(got, Some(leaf.into_bytes()), "{} in {}", path, json);
    }

    #[test]
    fn non_string_leaves_render_as_compact_json_and_null_is_absent(
        steps in prop::collection::vec(step(), 1..5),
        leaf in json_value(),
    ) {
        let json = build(&steps, leaf.clone());
        let t = Template::parse(&path_of(&steps)).expect("valid path");
        let got = t.render(&json).map(|v| v.as_bytes().to_vec());
        match &leaf {
            Value::Null => prop_assert_eq!(got, None),
            Value::String(s) if s.bytes().any(|b| b.is_ascii_control()) => prop_assert_eq!(got, None),
            Value::String(s) => prop_assert_eq!(got, Some(s.as_bytes().to_vec())),
            other => {
                let text = serde_json::to_string(other).expect("json");
                if text.bytes().any(|b| b.is_ascii_control()) {
                    prop_assert_eq!(got, None);
                } else {
                    prop_assert_eq!(got, Some(text.into_bytes()));
                }
            }
        }
    }

    #[test]
    fn a_missing_path_renders_nothing(steps in prop::collection::vec(step(), 1..5), missing in "[a-z]{1,6}") {
        let json = build(&steps, Value::from("x"));
        let path = format!("{}.{}-missing", path_of(&steps), missing);
        let t = Template::parse(&path).expect("valid path");
        prop_assert_eq!(t.render(&json), None);
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

const VALID_CONFIG: &str = r#"
[server]
public_url = "https://app.example.com"
trusted_proxies = ["10.0.0.0/8"]

[kratos]
public_url = "http://127.0.0.1:4433"
login_url = "https://app.example.com/login"

[cache]
max_ttl = "60s"

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
require_aal = "aal2"
on_unauthenticated = "redirect"
[routes.identity_headers]
"X-User-Id" = "identity.id"
"#;

/// A line that could appear in the config (never an `upstream`, so nothing is resolved by DNS).
fn config_line() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "path",
        "path_prefix",
        "host",
        "methods",
        "auth",
        "require_aal",
        "on_unauthenticated",
        "websocket",
        "public_url",
        "listen",
        "admin_listen",
        "threads",
        "trusted_proxies",
        "timeout",
        "session_cookie",
        "login_url",
        "max_entries",
        "max_ttl",
        "negative_ttl",
        "format",
        "level",
        "grace_period",
        "max_request_header_bytes",
        "X-User-Id",
        "\"Cookie\"",
        "unknown",
    ]);
    let value = prop_oneof![
        "\"[ -!#-\\[\\]-~]{0,12}\"".prop_map(|s| s),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("[]".to_string()),
        Just("[\"0.0.0.0/0\"]".to_string()),
        Just("\"/\"".to_string()),
        Just("\"/api/../x\"".to_string()),
        Just("\"%2e%2e\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"aal9\"".to_string()),
        Just("\"identity..id\"".to_string()),
        Just("{}".to_string()),
    ];
    prop_oneof![
        4 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(vec!["[server]", "[kratos]", "[cache]", "[log]", "[routes.identity_headers]", "[[routes]]", "[x]", "["]).prop_map(str::to_string),
        1 => "[ -~]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn config_parsing_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = sessiongate::config::from_str(&text);
    }

    #[test]
    fn config_parsing_never_panics_on_mutated_configs(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), config_line()), 0..6),
    ) {
        let mut lines: Vec<String> = VALID_CONFIG.lines().map(str::to_string).collect();
        for (at, replace, line) in edits {
            let i = at.index(lines.len() + 1);
            if replace && i < lines.len() && !lines[i].starts_with("upstream") {
                lines[i] = line;
            } else {
                lines.insert(i, line);
            }
        }
        let text = lines.join("\n");
        if let Err(e) = sessiongate::config::from_str(&text) {
            // Every issue is located and printable.
            let shown = e.to_string();
            prop_assert!(!shown.is_empty());
            for issue in e.issues() {
                prop_assert!(!issue.message.is_empty(), "{:?}", issue);
            }
        }
    }
}

#[test]
fn the_valid_config_is_valid() {
    sessiongate::config::from_str(VALID_CONFIG).expect("valid");
}
