//! Fuzz credential extraction (DESIGN.md, "Kratos facts": credential precedence; "Security rules" 4).
//!
//! Run with `scripts/fuzz.sh` (or `cargo fuzz run credential` from the repository root).
//! Arbitrary bytes are split into lines: the first names the session cookie, the others are header
//! lines (`name: value`) and those the `http` crate accepts become a `HeaderMap` (aliases: `t:`
//! X-Session-Token, `c:` Cookie, `a:` Authorization, `b:` Authorization with `Bearer `, `k:` a
//! Cookie holding the session cookie). Then `credential::extract` must never panic, and:
//! - an extracted credential is non-empty, visible ASCII only (Kratos would refuse anything else);
//! - it follows Kratos's precedence: a token comes from the single `X-Session-Token` header, a
//!   cookie only when no non-blank token was sent, a bearer only when neither was;
//! - a cookie value never contains `;` and is the first session cookie of some `Cookie` line;
//! - a bearer comes from exactly one `Authorization` header of exactly two space-separated parts;
//! - `find_cookie` never returns a value containing `;`;
//! - cache keys are deterministic and differ across kinds for the same value.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sessiongate::credential::{extract, find_cookie, Credential, CredentialError, CredentialKind};

fn headers(data: &[u8]) -> (HeaderMap, String) {
    // The first line names the session cookie (as `kratos.session_cookie` would).
    let mut lines = data.split(|&b| b == b'\n');
    let cookie_name = lines
        .next()
        .map(|l| String::from_utf8_lossy(l).trim().to_string())
        .filter(|n| !n.is_empty() && !n.contains([';', '=']))
        .unwrap_or_else(|| "ory_kratos_session".to_string());
    let mut map = HeaderMap::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        // Short aliases make the interesting names (and the bearer scheme) cheap to reach.
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let mut owned = Vec::new();
        let name: &[u8] = match name {
            b"t" => b"x-session-token",
            b"c" => b"cookie",
            b"a" => b"authorization",
            b"b" => {
                owned.extend_from_slice(b"Bearer ");
                owned.extend_from_slice(value);
                b"authorization"
            }
            b"k" => {
                owned.extend_from_slice(cookie_name.as_bytes());
                owned.push(b'=');
                owned.extend_from_slice(value);
                b"cookie"
            }
            other => other,
        };
        let value = if owned.is_empty() { value } else { &owned[..] };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    (map, cookie_name)
}

fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
    h.get_all(name).iter().map(HeaderValue::as_bytes).collect()
}

fuzz_target!(|data: &[u8]| {
    let (h, cookie_name) = headers(data);
    let result = extract(&h, &cookie_name);
    let tokens = values(&h, "x-session-token");
    let auths = values(&h, "authorization");
    let blank = |v: &[u8]| v.iter().all(|b| b.is_ascii_whitespace());

    match &result {
        Err(CredentialError::DuplicateToken) => assert!(tokens.len() > 1),
        Err(CredentialError::DuplicateAuthorization) => assert!(auths.len() > 1),
        Err(CredentialError::Malformed) => {}
        Ok(None) => {
            // Nothing usable: no single non-blank token.
            assert!(tokens.len() <= 1);
            assert!(
                tokens.iter().all(|t| blank(t)),
                "a non-blank token was ignored"
            );
        }
        Ok(Some(c)) => {
            assert!(!c.value.is_empty());
            assert!(
                c.value.bytes().all(|b| b.is_ascii_graphic()),
                "credential value with space, control or non-ASCII byte: {:?}",
                c.value
            );
            match c.kind {
                CredentialKind::Token => {
                    assert_eq!(tokens.len(), 1);
                    assert_eq!(tokens[0], c.value.as_bytes());
                }
                CredentialKind::Cookie => {
                    assert!(tokens.len() <= 1 && tokens.iter().all(|t| blank(t)));
                    assert!(!c.value.contains(';'));
                    let from_a_line = h.get_all("cookie").iter().any(|line| {
                        line.to_str()
                            .ok()
                            .and_then(|l| find_cookie(l, &cookie_name))
                            == Some(c.value)
                    });
                    assert!(from_a_line, "cookie value not found in any Cookie line");
                }
                CredentialKind::Bearer => {
                    assert!(tokens.len() <= 1 && tokens.iter().all(|t| blank(t)));
                    assert_eq!(auths.len(), 1);
                    let line = std::str::from_utf8(auths[0]).expect("bearer came from UTF-8");
                    let parts: Vec<&str> = line.split(' ').collect();
                    assert_eq!(parts.len(), 2, "bearer from {line:?}");
                    assert!(parts[0].eq_ignore_ascii_case("bearer"));
                    assert_eq!(parts[1], c.value);
                }
            }
            // A Bearer fallback only rides with a cookie, from exactly one well-formed header.
            if let Some(b) = c.bearer {
                assert_eq!(c.kind, CredentialKind::Cookie);
                assert_eq!(auths.len(), 1);
                let line = std::str::from_utf8(auths[0]).expect("bearer came from UTF-8");
                assert_eq!(line.split(' ').nth(1), Some(b), "fallback from {line:?}");
                assert!(!c.cacheable());
            }
            // Cache keys: deterministic, kind-separated, and never the value itself.
            let same = *c;
            assert_eq!(c.cache_key(), same.cache_key());
            for other in [
                CredentialKind::Token,
                CredentialKind::Cookie,
                CredentialKind::Bearer,
            ] {
                if other != c.kind {
                    let o = Credential { kind: other, ..*c };
                    assert_ne!(c.cache_key(), o.cache_key());
                }
            }
            // The Debug output must not carry the value. Short values, and values that are part of
            // the fixed text itself (e.g. "Credenti"), can appear by coincidence: compare with the
            // output for another value of the same length, which shows the same fixed text.
            if c.value.len() >= 4 {
                let shown = format!("{c:?} {:?}", c.cache_key());
                let other_value = "\u{1}".repeat(c.value.len());
                let other = Credential {
                    value: &other_value,
                    bearer: None,
                    ..*c
                };
                let baseline = format!("{other:?}");
                if !baseline.contains(c.value) {
                    let hex_free = shown.split("CacheKey(").next().unwrap_or(&shown);
                    assert!(!hex_free.contains(c.value), "{shown}");
                }
            }
        }
    }

    // find_cookie on every line, with the configured and the default name.
    for line in h.get_all("cookie") {
        if let Ok(l) = line.to_str() {
            for name in [cookie_name.as_str(), "ory_kratos_session"] {
                if let Some(v) = find_cookie(l, name) {
                    assert!(!v.contains(';'), "{v:?} from {l:?}");
                }
            }
        }
    }
    // Also on the raw input as one line.
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(v) = find_cookie(s, &cookie_name) {
            assert!(!v.contains(';'));
        }
    }
});
