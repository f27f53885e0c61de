//! The `return_to` rule and the extraction of values from queries, forms and JSON bodies.

use super::*;
use proptest::prelude::*;

fn list(entries: &[&str]) -> Vec<AllowedUrl> {
    entries
        .iter()
        .map(|e| AllowedUrl::parse(e).unwrap())
        .collect()
}

fn std_list() -> Vec<AllowedUrl> {
    list(&[
        "https://app.example.com/",
        "https://docs.example.com/guide",
        "http://localhost:3000",
        "https://*.tenant.example.com/",
        "myapp://callback",
        "com.example.app:/oauth",
    ])
}

fn ok(v: &str) -> bool {
    check_return_to(v, &std_list(), Some("https://public.example.com")).is_ok()
}

#[test]
fn parse_entries() {
    assert!(AllowedUrl::parse("https://app.example.com").is_ok());
    assert!(AllowedUrl::parse("HTTPS://APP.example.com:443/x/").is_ok());
    assert!(AllowedUrl::parse("https://*.example.com").is_ok());
    assert!(AllowedUrl::parse("myapp://callback").is_ok());
    assert!(AllowedUrl::parse("http://[::1]:8080/").is_ok());
    for bad in [
        "",
        "app.example.com",
        "/relative",
        "https:app.example.com",
        "https://u:p@app.example.com/",
        "https://app.example.com/?q=1",
        "https://app.example.com/#f",
        "https://*.com",
        "https://a*.example.com",
        "javascript:alert(1)",
        "data:text/html,x",
        "https://app.example.com\\x",
        "https://app example.com",
        "myapp:",
        "https://",
    ] {
        assert!(AllowedUrl::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(
        format!("{:?}", AllowedUrl::parse("myapp://x").unwrap()),
        "AllowedUrl(\"myapp://x\")"
    );
    assert_eq!(
        AllowedUrl::parse("myapp://x").unwrap().to_string(),
        "myapp://x"
    );
}

#[test]
fn allowed_values() {
    for v in [
        "https://app.example.com/",
        "https://app.example.com",
        "https://APP.Example.com/dashboard?x=1#y",
        "https://app.example.com:443/x",
        "https://docs.example.com/guide",
        "https://docs.example.com/guide/",
        "https://docs.example.com/guide/intro?x",
        "https://docs.example.com/guide?x",
        "http://localhost:3000/anything",
        "https://a.tenant.example.com/x",
        "https://a.b.tenant.example.com/",
        "myapp://callback",
        "myapp://callback?code=1",
        "MyApp://callback/x",
        "com.example.app:/oauth",
        "com.example.app:/oauth?code=x",
        "/dashboard",
        "/",
        "/a/../b",
        "https://public.example.com/any/path",
        "",
    ] {
        assert!(ok(v), "{v} should be allowed");
    }
}

#[test]
fn refused_values() {
    for v in [
        "//evil.com",
        "//evil.com/app.example.com",
        "/\\evil.com",
        "\\\\evil.com",
        "\\/evil.com",
        "https:evil.com",
        "https:/evil.com",
        "https:\\\\evil.com",
        "https://app.example.com@evil.com/",
        "https://app.example.com:@evil.com/",
        "https://user:pass@app.example.com/",
        "https://app.example.com.evil.com/",
        "https://app.example.com%2eevil.com/",
        "https://evil.com/https://app.example.com/",
        "https://evil.com?https://app.example.com/",
        "http://app.example.com/",
        "https://app.example.com:8443/",
        "https://docs.example.com/guidebook",
        "https://docs.example.com/",
        "https://docs.example.com/guide/../admin",
        "https://docs.example.com/guide/%2e%2e/admin",
        "http://localhost:3001/",
        "https://localhost:3000/",
        "https://tenant.example.com/",
        "https://eviltenant.example.com/",
        "myapp://callbackevil",
        "myapp://callback@evil",
        "myapp://evil",
        "otherapp://callback",
        "com.example.app:/oauthx",
        "javascript:alert(1)",
        "JavaScript://app.example.com/%0aalert(1)",
        "data:text/html,x",
        "dashboard",
        "evil.com/path",
        " https://app.example.com/",
        "https://app.example.com/\n",
        "https://app.example.com/\u{0}",
        "https://app.example.com/a b",
        "https://app.example.com/\u{FFFD}",
        "https://аpp.example.com/",
        "https://app.example.com\\@evil.com/",
        "https://app.example.com\\.evil.com/",
        "https://[::1]/",
    ] {
        assert!(!ok(v), "{v:?} should be refused");
    }
}

#[test]
fn error_kinds() {
    let l = std_list();
    assert_eq!(
        check_return_to("https://evil.com/", &l, None),
        Err(ReturnToError::NotAllowed)
    );
    assert!(matches!(
        check_return_to("//evil", &l, None),
        Err(ReturnToError::Malformed(_))
    ));
    assert!(!ReturnToError::NotAllowed.to_string().contains("evil"));
    // no allow-list: no judgement
    assert_eq!(check_return_to("https://evil.com/", &[], None), Ok(()));
    // public origin implicitly allowed only when given
    assert!(check_return_to("https://public.example.com/", &l, None).is_err());
}

#[test]
fn query_extraction() {
    assert_eq!(
        return_to_in_query("flow=1&return_to=https%3A%2F%2Fapp.example.com%2Fx%3Fy%3D1&b").unwrap(),
        vec!["https://app.example.com/x?y=1"]
    );
    assert_eq!(
        return_to_in_query("return_to=a&return_to=b&return%5Fto=c&RETURN_TO=d&return_to").unwrap(),
        vec!["a", "b", "c", ""]
    );
    assert_eq!(return_to_in_query("return_to=a+b").unwrap(), vec!["a b"]);
    assert_eq!(return_to_in_query("").unwrap(), Vec::<String>::new());
    assert_eq!(
        return_to_in_query("x=%zz&return_to=ok").unwrap(),
        vec!["ok"]
    );
    assert_eq!(
        return_to_in_query("return_to=%zz"),
        Err(ReturnToError::BadEncoding)
    );
    assert_eq!(
        return_to_in_query("return_to=%4"),
        Err(ReturnToError::BadEncoding)
    );
    assert_eq!(
        return_to_in_query("return_to=%FF"),
        Err(ReturnToError::NotUtf8)
    );
    assert_eq!(
        return_to_in_query("return_to=caf%C3%A9").unwrap(),
        vec!["café"]
    );
    assert_eq!(
        return_to_in_query("return_to=myapp%3A%2F%2Fcallback").unwrap(),
        vec!["myapp://callback"]
    );
}

#[test]
fn form_and_json_extraction() {
    assert_eq!(
        return_to_in_form(b"csrf_token=x&method=password&return_to=https%3A%2F%2Fevil.com")
            .unwrap(),
        vec!["https://evil.com"]
    );
    assert_eq!(return_to_in_form(b"a=\xff&return_to=x").unwrap(), vec!["x"]);
    assert_eq!(
        return_to_in_json(br#"{"method":"password","return_to":"https://evil.com"}"#).unwrap(),
        vec!["https://evil.com"]
    );
    let mut v =
        return_to_in_json(br#"{"return_to":"a","Return_To":"b","x":{"return_to":"c"}}"#).unwrap();
    v.sort();
    assert_eq!(v, vec!["a", "b"]);
    // duplicate keys: the last one is what Go and serde see
    assert_eq!(
        return_to_in_json(br#"{"return_to":"a","return_to":"b"}"#).unwrap(),
        vec!["b"]
    );
    assert_eq!(
        return_to_in_json(b"not json").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        return_to_in_json(b"[\"return_to\"]").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        return_to_in_json(br#"{"return_to":null}"#).unwrap(),
        Vec::<String>::new()
    );
    assert!(return_to_in_json(br#"{"return_to":1}"#).is_err());
}

/// Go's `url.QueryUnescape`, one byte at a time, refusing broken escapes: the reference for
/// [`form_decode`].
fn form_decode_model(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

#[test]
fn form_decoding() {
    let cases: &[(&[u8], Option<&[u8]>)] = &[
        (b"", Some(b"")),
        (b"a+b", Some(b"a b")),
        (b"a%2Bb", Some(b"a+b")),
        (b"%2b+", Some(b"+ ")),
        (b"%41%62", Some(b"Ab")),
        (b"%2541", Some(b"%41")),
        (b"%C3%a9", Some("\u{e9}".as_bytes())),
        (b"%FF", Some(b"\xff")),
        (b"\xff%00", Some(b"\xff\0")),
        (b"%", None),
        (b"a%", None),
        (b"%4", None),
        (b"%zz", None),
        (b"%%41", None),
        (b"%+1", None),
        (b"%-1", None),
        (b"%41%", None),
        (b"%4g", None),
    ];
    for &(input, expected) in cases {
        assert_eq!(
            form_decode(input).ok().as_deref(),
            expected,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        if expected.is_none() {
            assert_eq!(form_decode(input), Err(ReturnToError::BadEncoding));
        }
    }
}

proptest! {
    /// Whatever follows, a value whose authority is not exactly an allowed host is refused.
    #[test]
    fn foreign_hosts_are_refused(host in "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,8}){0,3}", tail in "[ -~]{0,20}") {
        prop_assume!(host != "app.example.com" && host != "docs.example.com" && host != "localhost"
            && !host.ends_with(".tenant.example.com") && host != "public.example.com");
        let v = format!("https://{host}{}", if tail.starts_with(['/', '?', '#']) { tail.clone() } else { format!("/{tail}") });
        prop_assert!(!ok(&v), "{}", v);
        let v = format!("https://app.example.com@{host}/");
        prop_assert!(!ok(&v), "{}", v);
        let v = format!("https://app.example.com.{host}/");
        prop_assert!(!ok(&v), "{}", v);
    }

    /// Anything accepted is either relative or, parsed as a browser would, on an allowed origin.
    #[test]
    fn accepted_values_land_on_allowed_origins(v in "(https?://|//|/|myapp://|\\\\)?[ -~]{0,30}") {
        if ok(&v) && !v.is_empty() {
            if v.starts_with('/') {
                prop_assert!(!v.starts_with("//"));
                let u = Url::parse("https://default.example/").unwrap().join(&v).unwrap();
                prop_assert_eq!(u.host_str(), Some("default.example"));
            } else if let Ok(u) = Url::parse(&v) {
                if u.scheme().starts_with("http") {
                    let h = u.host_str().unwrap_or_default();
                    prop_assert!(
                        ["app.example.com", "docs.example.com", "localhost", "public.example.com"].contains(&h)
                            || h.ends_with(".tenant.example.com"),
                        "{} -> {}", v, h
                    );
                    prop_assert_eq!(u.username(), "");
                }
            }
        }
    }

    /// `form_decode` is Go's query unescaping, broken escapes refused.
    #[test]
    fn form_decode_agrees_with_model(
        b in proptest::collection::vec(prop_oneof![
            4 => prop::sample::select(&b"%+aF09zg%"[..]),
            1 => any::<u8>(),
        ], 0..24),
    ) {
        prop_assert_eq!(form_decode(&b).ok(), form_decode_model(&b));
    }

    #[test]
    fn extraction_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = return_to_in_form(&b);
        let _ = return_to_in_json(&b);
        if let Ok(s) = std::str::from_utf8(&b) {
            let _ = return_to_in_query(s);
            let _ = check_return_to(s, &std_list(), Some("https://public.example.com"));
        }
    }
}
