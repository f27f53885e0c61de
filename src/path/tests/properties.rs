//! Property tests: idempotence, the shape of every accepted path, agreement with the reference
//! model, and invariance under noise and re-encoding.

use proptest::prelude::*;

use super::model::model;
use crate::path::escape::{hex_value, is_unreserved, CLASS, ENCODE, SLASH};
use crate::path::{canonicalize, canonicalize_path, MAX_TARGET_LEN};

/// Printable rendering of a byte string for failure messages.
fn escape(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for &b in bytes {
        if (0x20..0x7F).contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// Interesting fragments: concatenations of these reach every rule and most combinations.
const TOKENS: &[&str] = &[
    "/",
    "/",
    "/",
    "//",
    ".",
    ".",
    "..",
    "a",
    "b",
    "Z",
    "0",
    "~",
    "-",
    "_",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%5c",
    "%7e",
    "%7E",
    "%41",
    "%61",
    "%c3",
    "%a9",
    "%C3%A9",
    "%e2%82%ac",
    "%f0%9f%98%80",
    "%ed%a0%80",
    "%c0%ae",
    "%80",
    "%",
    "%z",
    "%2",
    "?",
    "?",
    "#",
    ";",
    "%3b",
    "\\",
    " ",
    "\t",
    "\0",
    "<",
    "\"",
    "%20",
    "%25",
    "%3F",
    "%3f",
    "%23",
    "@",
    ":",
    "!",
    "=",
    "&",
    "*",
    "%3a",
    "%21",
    "[",
    "{",
    "|",
    "\u{e9}",
    "%00",
    "%7f",
    "%0a",
];

fn tokens_target() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..24).prop_map(|ts| {
        let mut v = b"/".to_vec();
        for t in ts {
            v.extend_from_slice(t.as_bytes());
        }
        v
    })
}

/// Mostly printable ASCII after a leading slash, to get past the origin-form check.
fn ascii_target() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![8 => 0x21u8..0x7F, 1 => any::<u8>()], 0..64).prop_map(
        |mut v| {
            v.insert(0, b'/');
            v
        },
    )
}

fn any_target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => tokens_target(),
        2 => ascii_target(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// A segment of unreserved characters that is not a dot segment.
fn safe_segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~-]{1,12}".prop_filter("dot segment", |s| s != "." && s != "..")
}

/// A canonical path: "/" + safe segments joined by "/", with an optional trailing slash.
fn safe_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(safe_segment(), 0..8), any::<bool>()).prop_map(|(segs, slash)| {
        let mut p = String::from("/");
        p.push_str(&segs.join("/"));
        if slash && !segs.is_empty() {
            p.push('/');
        }
        p
    })
}

fn assert_canonical_path(p: &str) {
    assert!(p.starts_with('/'), "{p:?}");
    assert!(!p.contains("//"), "{p:?}");
    for seg in p.split('/') {
        assert!(seg != "." && seg != "..", "dot segment in {p:?}");
    }
    let upper = p.to_ascii_uppercase();
    for bad in ["\\", "%2F", "%5C", "%2E", "%3B", ";", "#", "?", "%00"] {
        assert!(!upper.contains(bad), "{bad:?} in {p:?}");
    }
    let bytes = p.as_bytes();
    for (k, &b) in bytes.iter().enumerate() {
        assert!(
            CLASS[b as usize] <= SLASH && CLASS[b as usize] != ENCODE,
            "{p:?}"
        );
        if b == b'%' {
            let hex = &bytes[k + 1..k + 3];
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || h.is_ascii_uppercase()),
                "{p:?}"
            );
            let v = hex_value(hex[0]).unwrap() << 4 | hex_value(hex[1]).unwrap();
            assert!(!is_unreserved(v), "{p:?} leaves an unreserved char encoded");
            assert!(v >= 0x20 && v != 0x7F, "{p:?}");
        }
    }
    assert!(p.len() <= MAX_TARGET_LEN);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// (3) Never panics, whatever the bytes.
    #[test]
    fn no_panic(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = canonicalize(&raw);
        if let Ok(s) = std::str::from_utf8(&raw) {
            let _ = canonicalize_path(s);
        }
    }

    /// (1) Idempotence, (2) shape of the output, and agreement with the reference model.
    #[test]
    fn idempotent_invariants_and_model(raw in any_target()) {
        let got = canonicalize(&raw);
        let expected = model(&raw);
        prop_assert_eq!(got.clone().ok(), expected, "input {}", escape(&raw));
        if let Ok(t) = got {
            assert_canonical_path(&t.path);
            let again = canonicalize(t.to_target().as_bytes());
            prop_assert_eq!(again, Ok(t.clone()), "input {}", escape(&raw));
            prop_assert_eq!(canonicalize_path(&t.path), Ok(t.path.clone()));
            if let Some(q) = &t.query {
                // The query is the raw bytes after the first '?', untouched.
                let i = raw.iter().position(|&b| b == b'?').unwrap();
                prop_assert_eq!(q.as_bytes(), &raw[i + 1..]);
            }
        }
    }

    /// canonicalize_path is canonicalize without the '?' split.
    #[test]
    fn path_variant_agrees(raw in any_target()) {
        if let Ok(s) = std::str::from_utf8(&raw) {
            if !s.contains('?') {
                prop_assert_eq!(canonicalize_path(s), canonicalize(&raw).map(|t| t.path));
            }
        }
    }

    /// (4) Safe paths are already canonical.
    #[test]
    fn safe_paths_are_fixed_points(p in safe_path(), q in proptest::option::of("[a-z=&%0-9]{0,8}")) {
        let raw = match &q { Some(q) => format!("{p}?{q}"), None => p.clone() };
        let t = canonicalize(raw.as_bytes()).unwrap();
        prop_assert_eq!(&t.path, &p);
        prop_assert_eq!(&t.query, &q);
        prop_assert_eq!(t.to_target(), raw);
    }

    /// (5) Inserting "./", "x/../" or an extra "/" after any slash changes nothing.
    #[test]
    fn noise_does_not_change_result(
        p in safe_path(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..4), 1..4),
    ) {
        let mut noisy = p.clone();
        for (at, kind) in edits {
            let slashes: Vec<usize> =
                noisy.match_indices('/').map(|(k, _)| k).collect();
            let pos = slashes[at.index(slashes.len())] + 1;
            let insert = ["./", "x/../", "/", "%41b/../"][kind];
            noisy.insert_str(pos, insert);
        }
        prop_assert_eq!(canonicalize(noisy.as_bytes()).map(|t| t.path), Ok(p), "{}", noisy);
    }

    /// Percent-encoding any unreserved characters of a safe path (either hex case) changes
    /// nothing.
    #[test]
    fn encoding_unreserved_changes_nothing(p in safe_path(), mask in any::<u64>(), upper in any::<bool>()) {
        let mut encoded = String::new();
        for (k, c) in p.chars().enumerate() {
            if c != '/' && mask & (1 << (k % 64)) != 0 {
                let e = format!("%{:02x}", c as u32);
                encoded.push_str(&if upper { e.to_uppercase() } else { e });
            } else {
                encoded.push(c);
            }
        }
        prop_assert_eq!(canonicalize(encoded.as_bytes()).map(|t| t.path), Ok(p), "{}", encoded);
    }

    /// Any well-formed UTF-8 text, percent-encoded byte by byte, is accepted and decodes back
    /// to the same text.
    #[test]
    fn encoded_utf8_round_trips(s in "[^/]{0,16}") {
        let enc: String = s.bytes().map(|b| format!("%{b:02x}")).collect();
        match canonicalize(format!("/{enc}").as_bytes()) {
            Ok(t) => {
                let mut bytes = Vec::new();
                let p = t.path.as_bytes();
                let mut k = 1;
                while k < p.len() {
                    if p[k] == b'%' {
                        bytes.push(hex_value(p[k + 1]).unwrap() << 4 | hex_value(p[k + 2]).unwrap());
                        k += 3;
                    } else {
                        bytes.push(p[k]);
                        k += 1;
                    }
                }
                if s == "." || s == ".." {
                    prop_assert!(false, "encoded dot segment accepted");
                }
                prop_assert_eq!(String::from_utf8(bytes).unwrap(), s);
            }
            Err(e) => {
                // Only the documented refusals of ASCII characters are possible.
                let refused_ascii = s.bytes().any(|b| b < 0x20 || b == 0x7F || b == b'\\' || b == b';');
                prop_assert!(refused_ascii || s == "." || s == "..", "{:?} refused: {:?}", s, e);
            }
        }
    }
}
