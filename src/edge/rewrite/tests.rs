//! Tests of [`super::Rewriter`]: paths, `Location`s and bodies (cookies: `super::super::set_cookie`).

use super::super::test_support::*;
use super::*;

fn rw() -> Rewriter {
    Rewriter::new(&settings())
}

fn body(r: &Rewriter, s: &str) -> String {
    match r.rewrite_body(s.as_bytes()) {
        Some(b) => String::from_utf8(b).unwrap(),
        None => s.to_owned(),
    }
}

#[test]
fn strip_prefix_maps_paths_under_the_mount() {
    let r = rw();
    assert_eq!(r.strip_prefix("/.ory").as_deref(), Some("/"));
    assert_eq!(r.strip_prefix("/.ory/").as_deref(), Some("/"));
    assert_eq!(r.strip_prefix("/.ory/x").as_deref(), Some("/x"));
    assert_eq!(
        r.strip_prefix("/.ory/self-service/login/browser")
            .as_deref(),
        Some("/self-service/login/browser")
    );
    assert_eq!(r.strip_prefix("/.oryx"), None);
    assert_eq!(r.strip_prefix("/other"), None);
    assert_eq!(r.strip_prefix("/"), None);
    assert_eq!(r.strip_prefix(""), None);
    assert_eq!(r.upstream_path("/x"), "/x");

    let root = Rewriter::new(&settings_with("http://k:1/", "https://a.com", ""));
    assert_eq!(root.strip_prefix("/").as_deref(), Some("/"));
    assert_eq!(root.strip_prefix("/x/y").as_deref(), Some("/x/y"));
    assert_eq!(root.strip_prefix("x"), None);

    let based = Rewriter::new(&settings_with("http://k:1/base/", "https://a.com", "/auth"));
    assert_eq!(
        based.strip_prefix("/auth/sessions/whoami").as_deref(),
        Some("/sessions/whoami")
    );
    assert_eq!(
        based.upstream_path("/sessions/whoami"),
        "/base/sessions/whoami"
    );
    assert_eq!(based.upstream_path("/"), "/base/");
}

#[test]
fn location_on_kratos_origin_is_rewritten() {
    let r = rw();
    assert_eq!(
        r.rewrite_location("http://127.0.0.1:4433/self-service/login/browser?aal=aal2")
            .as_deref(),
        Some("https://app.example.com/.ory/self-service/login/browser?aal=aal2")
    );
    assert_eq!(
        r.rewrite_location("http://127.0.0.1:4433").as_deref(),
        Some("https://app.example.com/.ory")
    );
    assert_eq!(
        r.rewrite_location("HTTP://127.0.0.1:4433/").as_deref(),
        Some("https://app.example.com/.ory/")
    );
    // nested, percent-encoded Kratos URL in the query of a Kratos URL
    assert_eq!(
        r.rewrite_location(
            "http://127.0.0.1:4433/self-service/login/browser?return_to=http%3A%2F%2F127.0.0.1%3A4433%2Fsessions%2Fwhoami"
        )
        .as_deref(),
        Some("https://app.example.com/.ory/self-service/login/browser?return_to=https%3A%2F%2Fapp.example.com%2F.ory%2Fsessions%2Fwhoami")
    );
    // lower-case escapes keep their case
    assert_eq!(
        r.rewrite_location("http://127.0.0.1:4433/x?r=http%3a%2f%2f127.0.0.1%3a4433%2fy")
            .as_deref(),
        Some("https://app.example.com/.ory/x?r=https%3a%2f%2fapp.example.com%2f.ory%2fy")
    );
}

#[test]
fn location_elsewhere_is_left_alone() {
    let r = rw();
    for v in [
        "http://127.0.0.1:4455/login?flow=abc",
        "http://127.0.0.1:44330/x",
        "https://127.0.0.1:4433/x",
        "https://accounts.google.com/o/oauth2/v2/auth?client_id=c&redirect_uri=http%3A%2F%2F127.0.0.1%3A4433%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fgoogle&state=s",
        "https://idp.example/authorize?redirect_uri=http://127.0.0.1:4433/self-service/methods/oidc/callback/x",
        "myapp://callback?code=AbC%2B%2F123-_.~",
        "myapp://callback?return=http://127.0.0.1:4433/x",
        "https://app.example.com/dashboard",
        "//evil.example/x",
        "/\\evil.example",
        "xhttp://127.0.0.1:4433/x",
        "",
    ] {
        assert_eq!(r.rewrite_location(v), None, "{v}");
    }
}

#[test]
fn relative_location_gets_the_prefix() {
    let r = rw();
    assert_eq!(
        r.rewrite_location("/self-service/login/browser").as_deref(),
        Some("/.ory/self-service/login/browser")
    );
    let root = Rewriter::new(&settings_with("http://k:1/", "https://a.com", ""));
    assert_eq!(root.rewrite_location("/self-service/x"), None);
    let based = Rewriter::new(&settings_with("http://k:1/base/", "https://a.com", "/auth"));
    assert_eq!(
        based.rewrite_location("/base/x?y").as_deref(),
        Some("/auth/x?y")
    );
    assert_eq!(based.rewrite_location("/base").as_deref(), Some("/auth"));
    assert_eq!(based.rewrite_location("/basement"), None);
    assert_eq!(based.rewrite_location("/other"), None);
}

#[test]
fn body_spellings() {
    let r = rw();
    assert_eq!(
        body(
            &r,
            r#"{"a":"http://127.0.0.1:4433/x","b":"http:\/\/127.0.0.1:4433\/y"}"#
        ),
        r#"{"a":"https://app.example.com/.ory/x","b":"https:\/\/app.example.com\/.ory\/y"}"#
    );
    assert_eq!(
        body(&r, "q=http%3A%2F%2F127.0.0.1%3A4433%2Fz&x=1"),
        "q=https%3A%2F%2Fapp.example.com%2F.ory%2Fz&x=1"
    );
    assert_eq!(
        body(&r, "q=http%3a%2f%2f127.0.0.1%3a4433&x=1"),
        "q=https%3a%2f%2fapp.example.com%2f.ory&x=1"
    );
    assert_eq!(
        body(&r, "<a href='http://127.0.0.1:4433'>"),
        "<a href='https://app.example.com/.ory'>"
    );
    assert_eq!(
        body(
            &r,
            "<form action=\"http://127.0.0.1:4433/self-service/login?flow=1&amp;x=2\">"
        ),
        "<form action=\"https://app.example.com/.ory/self-service/login?flow=1&amp;x=2\">"
    );
    // Go's JSON escaping of & and <
    assert_eq!(
        body(
            &r,
            r#""http://127.0.0.1:4433/x?a=1\u0026b=http%3A%2F%2F127.0.0.1%3A4433%2F""#
        ),
        r#""https://app.example.com/.ory/x?a=1\u0026b=https%3A%2F%2Fapp.example.com%2F.ory%2F""#
    );
    assert_eq!(
        body(&r, r#""\u003chttp://127.0.0.1:4433/x\u003e""#),
        r#""\u003chttps://app.example.com/.ory/x\u003e""#
    );
}

#[test]
fn body_boundaries() {
    let r = rw();
    for s in [
        "http://127.0.0.1:44330/x",
        "http://127.0.0.1:4433x",
        "http://127.0.0.1:4433.evil.com/",
        "http://127.0.0.1:4433@evil.com/",
        "xhttp://127.0.0.1:4433/",
        "ahttp:\\/\\/127.0.0.1:4433\\/",
        "https://127.0.0.1:4433/",
        "http://127.0.0.11:4433/",
        "http%3A%2F%2F127.0.0.1%3A44330",
        "http%3A%2F%2F127.0.0.1%3A4433%30",
        "http://127.0.0.1:4433&x@evil.com/",
        "http://127.0.0.1:4433:x@evil.com/",
        "http://127.0.0.1:4433)@evil.com",
        "http%3A%2F%2F127.0.0.1%3A4433%40evil.com",
        "http%3A%2F%2F127.0.0.1%3A4433%3Ax%40evil.com%2F",
        "http:\\/\\/127.0.0.1:4433@evil.com",
        "no urls at all",
        "",
    ] {
        assert_eq!(r.rewrite_body(s.as_bytes()), None, "{s}");
    }
    for (s, want) in [
        ("http://127.0.0.1:4433", "https://app.example.com/.ory"),
        ("http://127.0.0.1:4433?x", "https://app.example.com/.ory?x"),
        ("http://127.0.0.1:4433#x", "https://app.example.com/.ory#x"),
        ("(http://127.0.0.1:4433)", "(https://app.example.com/.ory)"),
        ("http://127.0.0.1:4433&x", "https://app.example.com/.ory&x"),
        (
            "a http://127.0.0.1:4433\n",
            "a https://app.example.com/.ory\n",
        ),
        (
            "http://127.0.0.1:4433: refused",
            "https://app.example.com/.ory: refused",
        ),
        (
            "http://127.0.0.1:4433, x",
            "https://app.example.com/.ory, x",
        ),
    ] {
        assert_eq!(body(&r, s), want, "{s}");
    }

    // no port: a dot, colon, & or % continue the host
    let r = Rewriter::new(&settings_with("http://kratos/", "https://a.com", "/.ory"));
    for s in [
        "http://kratos.evil.com/",
        "http://kratos:8080/",
        "http://kratos&x",
        "http://kratos%2Eevil.com",
        "http%3A%2F%2Fkratos%2Eevil.com",
        "http%3A%2F%2Fkratos.evil.com",
    ] {
        assert_eq!(r.rewrite_body(s.as_bytes()), None, "{s}");
    }
    assert_eq!(body(&r, "http://kratos/x"), "https://a.com/.ory/x");
    // an empty port is left alone (rare, and `http://kratos: text` would be ambiguous)
    assert_eq!(r.rewrite_body(b"http://kratos:/x"), None);
    assert_eq!(
        body(&r, "x=http%3A%2F%2Fkratos&y"),
        "x=https%3A%2F%2Fa.com%2F.ory&y"
    );

    // base path: a whole segment only
    let r = Rewriter::new(&settings_with(
        "http://kratos:4433/base/",
        "https://a.com",
        "",
    ));
    assert_eq!(r.rewrite_body(b"http://kratos:4433/basement"), None);
    assert_eq!(r.rewrite_body(b"http://kratos:4433/Base/x"), None);
    assert_eq!(r.rewrite_body(b"http://kratos:4433/"), None);
    assert_eq!(body(&r, "http://kratos:4433/base/x"), "https://a.com/x");
    assert_eq!(body(&r, "http://KRATOS:4433/base"), "https://a.com");
    assert_eq!(
        body(&r, "http%3A%2F%2Fkratos%3A4433%2Fbase%2Fx"),
        "https%3A%2F%2Fa.com%2Fx"
    );
}

#[test]
fn other_origins_keep_their_nested_kratos_urls() {
    let r = rw();
    let provider = "https://accounts.google.com/o/oauth2/v2/auth?client_id=c\\u0026redirect_uri=http%3A%2F%2F127.0.0.1%3A4433%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fgoogle\\u0026state=s";
    let reason = format!(
        r#"{{"error":{{"id":"browser_location_change_required","code":422,"status":"Unprocessable Entity","reason":"In order to complete this flow please redirect the browser to: {provider}","message":"browser location change required"}},"redirect_browser_to":"{provider}"}}"#
    );
    assert_eq!(r.rewrite_body(reason.as_bytes()), None);

    // UI origin with a nested Kratos URL: another origin, untouched
    let ui = "http://127.0.0.1:4455/login?return_to=http%3A%2F%2F127.0.0.1%3A4433%2Fx";
    assert_eq!(r.rewrite_body(ui.as_bytes()), None);

    // but the Kratos URLs around it are rewritten
    let mixed = format!(r#"["{ui}","http://127.0.0.1:4433/a", "{provider}"]"#);
    assert_eq!(
        body(&r, &mixed),
        format!(r#"["{ui}","https://app.example.com/.ory/a", "{provider}"]"#)
    );
}

#[test]
fn error_reason_prose_is_rewritten() {
    let r = rw();
    let s = r#"{"error":{"id":"browser_location_change_required","code":422,"reason":"In order to complete this flow please redirect the browser to: http://127.0.0.1:4433/self-service/login/browser?aal=aal2","message":"browser location change required"},"redirect_browser_to":"http://127.0.0.1:4433/self-service/login/browser?aal=aal2"}"#;
    let out = body(&r, s);
    assert_eq!(
        out.matches("https://app.example.com/.ory/self-service/login/browser?aal=aal2")
            .count(),
        2
    );
    assert!(!out.contains("127.0.0.1"));
}

#[test]
fn native_app_return_to_passes_untouched() {
    let r = rw();
    let s = r#"{"return_to":"myapp://callback","ui":{"action":"http://127.0.0.1:4433/self-service/login?flow=f"},"request_url":"http://127.0.0.1:4433/self-service/login/api?return_session_token_exchange_code=true\u0026return_to=myapp%3A%2F%2Fcallback","session_token_exchange_code":"Z5bD4k"}"#;
    let out = body(&r, s);
    assert!(out.contains(r#""return_to":"myapp://callback""#));
    assert!(out.contains("return_to=myapp%3A%2F%2Fcallback"));
    assert!(out.contains(r#""session_token_exchange_code":"Z5bD4k""#));
    assert!(!out.contains("127.0.0.1"));
}

#[test]
fn login_flow_fixture() {
    let r = rw();
    let out = r
        .rewrite_body(LOGIN_FLOW.as_bytes())
        .expect("fixture has Kratos URLs");
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("127.0.0.1:4433"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
    let orig: serde_json::Value = serde_json::from_str(LOGIN_FLOW).unwrap();
    assert!(v["ui"]["action"]
        .as_str()
        .unwrap()
        .starts_with("https://app.example.com/.ory/self-service/login?flow="));
    assert_eq!(
        v["request_url"],
        "https://app.example.com/.ory/self-service/login/browser?return_to=https%3A%2F%2Fapp.example.com%2Fdashboard&refresh=false"
    );
    assert_eq!(v["return_to"], orig["return_to"]);
    assert_eq!(
        v["ui"]["nodes"][0], orig["ui"]["nodes"][0],
        "csrf node untouched"
    );
    let script = v["ui"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "script")
        .unwrap();
    assert_eq!(
        script["attributes"]["src"],
        "https://app.example.com/.ory/.well-known/ory/webauthn.js"
    );
    assert_eq!(r.rewrite_body(out.as_bytes()), None, "idempotent");
}

#[test]
fn percent_encoding_keeps_unreserved_and_the_hex_case_asked_for() {
    let s = "https://a.example:8443/b c/\u{e4}~-._?x=1&y=%";
    assert_eq!(
        percent_encode(s, false),
        "https%3A%2F%2Fa.example%3A8443%2Fb%20c%2F%C3%A4~-._%3Fx%3D1%26y%3D%25"
    );
    assert_eq!(
        percent_encode(s, true),
        "https%3a%2f%2fa.example%3a8443%2fb%20c%2f%c3%a4~-._%3fx%3d1%26y%3d%25"
    );
    assert_eq!(percent_encode("AZaz09", true), "AZaz09");
}

#[test]
fn identity_rewriter_changes_nothing() {
    let r = Rewriter::new(&settings_with("http://k:1/", "http://k:1", ""));
    assert_eq!(r.rewrite_body(b"http://k:1/x"), None);
    assert_eq!(r.rewrite_location("http://k:1/x"), None);
}

// -----------------------------------------------------------------------------------------
// properties

use proptest::prelude::*;

fn pct(s: &str) -> String {
    percent_encode(s, false)
}

fn kratos_settings() -> impl Strategy<Value = EdgeSettings> {
    prop_oneof![
        Just(settings()),
        Just(settings_with(
            "http://127.0.0.1:4433/",
            "http://localhost:8080",
            ""
        )),
        Just(settings_with(
            "http://kratos/",
            "https://auth.example.com",
            "/a/b"
        )),
        Just(settings_with(
            "https://kratos.internal:8443/base/",
            "https://app.example.com",
            "/.ory"
        )),
    ]
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-zA-Z0-9._~-]{0,8}", 0..4)
        .prop_map(|segs| segs.iter().map(|s| format!("/{s}")).collect::<String>())
}

/// An absolute URL on an origin that is not Kratos's (near misses included), possibly with
/// a Kratos URL nested in its query, plain or percent-encoded.
fn other_url(kratos: String) -> impl Strategy<Value = String> {
    let origin = prop_oneof![
        "(https?|myapp|xhttp|ftp)://[a-z0-9-]{1,10}(\\.[a-z]{2,5})?(:[0-9]{1,5})?",
        Just(format!("{kratos}0")),
        Just(format!("{kratos}.evil.com")),
        Just(format!("x{kratos}")),
        Just(kratos.replacen("://", "s://", 1)),
    ]
    .prop_filter("not Kratos's origin", move |o: &String| {
        !o.eq_ignore_ascii_case(&kratos)
    });
    let nested = prop_oneof![Just(0u8), Just(1u8), Just(2u8)];
    (origin, path(), nested, path()).prop_map(move |(o, p, n, np)| match n {
        0 => format!("{o}{p}"),
        1 => format!("{o}{p}?redirect_uri={}&state=s", pct(&format!("{{K}}{np}"))),
        _ => format!("{o}{p}?return_to={{K}}{np}"),
    })
}

/// A URL on Kratos's origin, possibly with a nested Kratos or foreign URL in its query,
/// in one of the three spellings.
fn kratos_url() -> impl Strategy<Value = (String, u8)> {
    (path(), 0u8..4, path(), 0u8..3).prop_map(|(p, nested, np, form)| {
        let url = match nested {
            0 => format!("{{K}}{p}"),
            1 => format!("{{K}}{p}?return_to={}", pct(&format!("{{K}}{np}"))),
            2 => format!("{{K}}{p}?return_to={}", pct("myapp://callback")),
            _ => format!(
                "{{K}}{p}?x=1&return_to={}",
                pct(&format!("https://app.example.com{np}"))
            ),
        };
        (url, form)
    })
}

fn spell(url: &str, form: u8) -> String {
    match form {
        0 => url.to_owned(),
        1 => url.replace('/', "\\/"),
        _ => pct(url),
    }
}

fn contains_kratos_url(r: &Rewriter, s: &[u8]) -> bool {
    r.find(s, 0).is_some()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_changes_other_origins_and_leaves_no_kratos_url(
        (s, pieces, seps) in kratos_settings().prop_flat_map(|s| {
            let k = s.kratos_base().to_owned();
            let piece = prop_oneof![
                kratos_url().prop_map({
                    let k = k.clone();
                    move |(u, form)| (true, spell(&u.replace("{K}", &k), form))
                }),
                other_url(k.clone()).prop_map({
                    let k = k.clone();
                    move |u| (false, u.replace("{K}", &k))
                }),
            ];
            let sep = prop_oneof![
                Just(" "), Just("\",\""), Just("\n"), Just("'"), Just("<"), Just("> "),
                Just("\r\n"), Just("\t")
            ];
            (Just(s), proptest::collection::vec(piece, 1..8), proptest::collection::vec(sep, 8))
        }),
    ) {
        let r = Rewriter::new(&s);
        let k = s.kratos_base().to_owned();
        let mut text = String::new();
        for (i, (_, piece)) in pieces.iter().enumerate() {
            if i > 0 {
                text.push_str(seps[i % seps.len()]);
            }
            text.push_str(piece);
        }
        let out = r.rewrite_body(text.as_bytes()).unwrap_or_else(|| text.clone().into_bytes());
        let out = String::from_utf8(out).unwrap();
        // walk the output piece by piece with the same separators
        let mut rest = out.as_str();
        for (i, (is_kratos, piece)) in pieces.iter().enumerate() {
            if i > 0 {
                let sep = seps[i % seps.len()];
                prop_assert!(rest.starts_with(sep));
                rest = &rest[sep.len()..];
            }
            let end = if i + 1 < pieces.len() {
                rest.find(seps[(i + 1) % seps.len()]).unwrap_or(rest.len())
            } else {
                rest.len()
            };
            let got = &rest[..end];
            if *is_kratos {
                prop_assert!(!contains_kratos_url(&r, got.as_bytes()), "left a Kratos URL: {}", got);
                prop_assert!(got.contains(&s.public_base)
                    || got.contains(&s.public_base.replace('/', "\\/"))
                    || got.contains(&pct(&s.public_base))
                    || s.public_base == k, "{}", got);
            } else {
                prop_assert_eq!(got, piece.as_str());
            }
            rest = &rest[end..];
        }
        // idempotent
        prop_assert_eq!(r.rewrite_body(out.as_bytes()), None);
    }

    #[test]
    fn rewrite_is_idempotent_on_arbitrary_text(
        s in kratos_settings(),
        parts in proptest::collection::vec(prop_oneof![
            Just("{K}".to_owned()), Just("{P}".to_owned()),
            "[ -~]{0,12}", "[/?#%&\"' ]", Just("%3A%2F%2F".to_owned()), Just("://".to_owned()),
            Just("http".to_owned()),
        ], 0..16),
    ) {
        let r = Rewriter::new(&s);
        let text: String = parts
            .concat()
            .replace("{K}", s.kratos_base())
            .replace("{P}", &s.public_base);
        if let Some(once) = r.rewrite_body(text.as_bytes()) {
            prop_assert_eq!(r.rewrite_body(&once), None);
            prop_assert!(std::str::from_utf8(&once).is_ok());
        }
        if let Some(loc) = r.rewrite_location(&text) {
            if !loc.starts_with('/') {
                prop_assert_eq!(r.rewrite_location(&loc), None);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(s in kratos_settings(), b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let r = Rewriter::new(&s);
        let _ = r.rewrite_body(&b);
        if let Ok(t) = std::str::from_utf8(&b) {
            let _ = r.rewrite_location(t);
            let _ = r.rewrite_set_cookie(t);
            let _ = r.strip_prefix(t);
        }
    }
}
