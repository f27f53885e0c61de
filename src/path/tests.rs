//! Unit cases for the canonicaliser: the table of documented inputs, the query, the length
//! limits and an exhaustive run over single bytes. The reference model and the property tests
//! are in `tests/`.

use super::escape::is_unreserved;
use super::*;
use PathError::*;

mod model;
mod properties;

fn ok(raw: &str) -> CanonicalTarget {
    match canonicalize(raw.as_bytes()) {
        Ok(t) => t,
        Err(e) => panic!("{raw:?} was refused: {e:?}"),
    }
}

/// (input, expected canonical path or error, expected query)
pub(super) const PATH_CASES: &[(&str, Result<&str, PathError>)] = &[
    // Dot segments.
    ("/public/../api", Ok("/api")),
    ("/a/./b/../c/", Ok("/a/c/")),
    ("/../a", Ok("/a")),
    ("/../../../../etc/passwd", Ok("/etc/passwd")),
    ("/..", Ok("/")),
    ("/.", Ok("/")),
    ("/./", Ok("/")),
    ("/../", Ok("/")),
    ("/api/x/..", Ok("/api/")),
    ("/api/.", Ok("/api/")),
    ("/api/./", Ok("/api/")),
    ("/a/b/../../..", Ok("/")),
    ("/a/b/../../../c", Ok("/c")),
    ("/a/..b/c", Ok("/a/..b/c")),
    ("/a/b../c", Ok("/a/b../c")),
    ("/a/.../c", Ok("/a/.../c")),
    ("/a/.b", Ok("/a/.b")),
    ("/a/..", Ok("/")),
    // Slash merging (before dot removal).
    ("//api", Ok("/api")),
    ("///api//x///", Ok("/api/x/")),
    ("/a//../b", Ok("/b")),
    ("//", Ok("/")),
    ("/", Ok("/")),
    ("/api/", Ok("/api/")),
    ("/api", Ok("/api")),
    ("/API/Users", Ok("/API/Users")),
    // Encoded dot segments.
    ("/public/%2e%2e/api", Err(EncodedDotSegment)),
    ("/public/%2E%2E/api", Err(EncodedDotSegment)),
    ("/public/.%2e/api", Err(EncodedDotSegment)),
    ("/public/%2e./api", Err(EncodedDotSegment)),
    ("/public/%2e/api", Err(EncodedDotSegment)),
    ("/public/%2E", Err(EncodedDotSegment)),
    ("/public/%2E%2E", Err(EncodedDotSegment)),
    ("/a/file%2Etxt", Ok("/a/file.txt")),
    ("/a/%2e%2e%2e", Ok("/a/...")),
    ("/a/%2ehidden", Ok("/a/.hidden")),
    // Encoded slash and backslash.
    ("/public/..%2fapi", Err(EncodedSlash)),
    ("/public%2f..%2fapi", Err(EncodedSlash)),
    ("/a%2Fb", Err(EncodedSlash)),
    ("/api\\x", Err(Backslash)),
    ("/api%5cx", Err(Backslash)),
    ("/api%5Cx", Err(Backslash)),
    ("/..\\..\\x", Err(Backslash)),
    // Path parameters.
    ("/api;x=y", Err(PathParameter)),
    ("/api;", Err(PathParameter)),
    ("/public/..;/api", Err(PathParameter)),
    ("/api%3bx", Err(PathParameter)),
    ("/api%3Bx", Err(PathParameter)),
    // Control characters.
    ("/api%00", Err(ControlCharacter)),
    ("/api\0", Err(ControlCharacter)),
    ("/api\tx", Err(ControlCharacter)),
    ("/api%09x", Err(ControlCharacter)),
    ("/api\r\nx", Err(ControlCharacter)),
    ("/api%0d%0aX-Evil:1", Err(ControlCharacter)),
    ("/api%1F", Err(ControlCharacter)),
    ("/api%7f", Err(ControlCharacter)),
    ("/api\x7f", Err(ControlCharacter)),
    ("/a b", Err(ControlCharacter)),
    ("/caf\u{e9}", Err(ControlCharacter)),
    ("/a%20b", Ok("/a%20b")),
    // Fragment.
    ("/api#frag", Err(Fragment)),
    ("/api/#", Err(Fragment)),
    ("/api%23frag", Ok("/api%23frag")),
    // Origin form.
    ("http://other/api", Err(NotOriginForm)),
    ("https://other/api", Err(NotOriginForm)),
    ("other:443", Err(NotOriginForm)),
    ("*", Err(NotOriginForm)),
    ("", Err(NotOriginForm)),
    ("api", Err(NotOriginForm)),
    ("?a=b", Err(NotOriginForm)),
    ("%2F", Err(NotOriginForm)),
    ("\\api", Err(NotOriginForm)),
    // Percent-encoding normalisation.
    ("/a/%7euser", Ok("/a/~user")),
    ("/a/%7Euser", Ok("/a/~user")),
    ("/%41%42%43%61%62%63%30%39%2D%5F", Ok("/ABCabc09-_")),
    ("/caf%c3%a9", Ok("/caf%C3%A9")),
    ("/caf%C3%A9", Ok("/caf%C3%A9")),
    ("/%e2%82%ac", Ok("/%E2%82%AC")),
    ("/%f0%9f%98%80", Ok("/%F0%9F%98%80")),
    ("/%ef%bf%bf", Ok("/%EF%BF%BF")),
    ("/%f4%8f%bf%bf", Ok("/%F4%8F%BF%BF")),
    ("/a%21b", Ok("/a%21b")),
    ("/a!b", Ok("/a!b")),
    ("/a%3ab%40c", Ok("/a%3Ab%40c")),
    ("/a:b@c", Ok("/a:b@c")),
    ("/a%3fb", Ok("/a%3Fb")),
    ("/a%25b", Ok("/a%25b")),
    ("/a%252e%252e", Ok("/a%252e%252e")),
    ("/a%2bb+c", Ok("/a%2Bb+c")),
    ("/!$&'()*+,=:@-._~", Ok("/!$&'()*+,=:@-._~")),
    ("/a\"b", Ok("/a%22b")),
    ("/<script>", Ok("/%3Cscript%3E")),
    ("/`{|}^[]", Ok("/%60%7B%7C%7D%5E%5B%5D")),
    ("/a%3cb", Ok("/a%3Cb")),
    // Invalid percent-encoding.
    ("/%zz", Err(BadPercentEncoding)),
    ("/a%2", Err(BadPercentEncoding)),
    ("/a%", Err(BadPercentEncoding)),
    ("/a%g0", Err(BadPercentEncoding)),
    ("/a%0g", Err(BadPercentEncoding)),
    ("/a%%41", Err(BadPercentEncoding)),
    ("/a%+1", Err(BadPercentEncoding)),
    ("/a%-1", Err(BadPercentEncoding)),
    ("/a% 1", Err(BadPercentEncoding)),
    // Invalid UTF-8.
    ("/%C0%AE%C0%AE/api", Err(InvalidUtf8)),
    ("/%c0%af", Err(InvalidUtf8)),
    ("/%c1%bf", Err(InvalidUtf8)),
    ("/%e0%80%ae", Err(InvalidUtf8)),
    ("/%f0%80%80%ae", Err(InvalidUtf8)),
    ("/%80", Err(InvalidUtf8)),
    ("/a%bf", Err(InvalidUtf8)),
    ("/%c3", Err(InvalidUtf8)),
    ("/%c3/%a9", Err(InvalidUtf8)),
    ("/%c3a%a9", Err(InvalidUtf8)),
    ("/%c3%41", Err(InvalidUtf8)),
    ("/%e2%82", Err(InvalidUtf8)),
    ("/%e2%82x", Err(InvalidUtf8)),
    ("/%ed%a0%80", Err(InvalidUtf8)),
    ("/%ed%bf%bf", Err(InvalidUtf8)),
    ("/%f4%90%80%80", Err(InvalidUtf8)),
    ("/%f5%80%80%80", Err(InvalidUtf8)),
    ("/%ff", Err(InvalidUtf8)),
    ("/%c3%a9%a9", Err(InvalidUtf8)),
    // Errors inside segments that would later be removed are still errors.
    ("/a%00/../b", Err(ControlCharacter)),
    ("/a%2f/../b", Err(EncodedSlash)),
];

#[test]
fn path_table() {
    let mut failures = Vec::new();
    for &(input, expected) in PATH_CASES {
        let got = canonicalize(input.as_bytes()).map(|t| t.path);
        let expected = expected.map(str::to_owned);
        if got != expected {
            failures.push(format!("{input:?}: got {got:?}, expected {expected:?}"));
        }
        // canonicalize_path agrees whenever there is no '?'.
        if !input.contains('?') {
            let via_path = canonicalize_path(input);
            if via_path != expected {
                failures.push(format!("path {input:?}: got {via_path:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// (input, expected path, expected query)
const QUERY_CASES: &[(&str, &str, Option<&str>)] = &[
    ("/x?a=%2F..&b=/../", "/x", Some("a=%2F..&b=/../")),
    ("/x?", "/x", Some("")),
    ("/x", "/x", None),
    ("/?", "/", Some("")),
    ("/a/../b?c=d?e", "/b", Some("c=d?e")),
    ("/x?a=%zz;b=%00\\%2e%2e", "/x", Some("a=%zz;b=%00\\%2e%2e")),
    ("/x??", "/x", Some("?")),
    ("/%7e?%7e", "/~", Some("%7e")),
];

#[test]
fn query_table() {
    for &(input, path, query) in QUERY_CASES {
        let t = ok(input);
        assert_eq!(t.path, path, "{input:?}");
        assert_eq!(t.query.as_deref(), query, "{input:?}");
    }
}

#[test]
fn query_refusals() {
    for (input, err) in [
        ("/x?a#b", Fragment),
        ("/x?#", Fragment),
        ("/x?a\0", ControlCharacter),
        ("/x?a\tb", ControlCharacter),
        ("/x?a b", ControlCharacter),
        ("/x?a\r\nb", ControlCharacter),
        ("/x?a\x7f", ControlCharacter),
        ("/x?caf\u{e9}", ControlCharacter),
        // The path is checked first.
        ("/x#y?a\0", Fragment),
        ("http://h/x?a", NotOriginForm),
    ] {
        assert_eq!(canonicalize(input.as_bytes()), Err(err), "{input:?}");
    }
}

#[test]
fn raw_non_utf8_bytes_are_refused() {
    for input in [&b"/a\xff"[..], b"/\xc3\xa9", b"/\x80", b"/x?\xff"] {
        assert_eq!(canonicalize(input), Err(ControlCharacter));
    }
}

#[test]
fn to_target() {
    assert_eq!(ok("/a/../b?x=1").to_target(), "/b?x=1");
    assert_eq!(ok("/a?").to_target(), "/a?");
    assert_eq!(ok("//a/").to_target(), "/a/");
}

#[test]
fn is_target_is_to_target_compared() {
    let raws = [
        "/a",
        "/a?",
        "/a?x=1",
        "/a/../b?x=1",
        "//a/",
        "/a%2f",
        "/a%2F",
        "/%7e",
        "/~",
        "/a?b?c",
        "/a/.",
        "/a/./b",
        "/a b",
        "/",
    ];
    for raw in raws {
        let Ok(target) = canonicalize(raw.as_bytes()) else {
            continue;
        };
        for other in raws {
            assert_eq!(
                target.is_target(other.as_bytes()),
                target.to_target() == other,
                "{raw} canonical {:?} vs {other}",
                target.to_target()
            );
        }
    }
}

#[test]
fn canonicalize_path_treats_question_mark_as_data() {
    assert_eq!(canonicalize_path("/api?x").as_deref(), Ok("/api%3Fx"));
    assert_eq!(canonicalize_path("/api/../v1/").as_deref(), Ok("/v1/"));
    assert_eq!(canonicalize_path("api"), Err(NotOriginForm));
    assert_eq!(canonicalize_path("/a/%2e%2e"), Err(EncodedDotSegment));
}

#[test]
fn length_limits() {
    let max = format!("/{}", "a".repeat(MAX_TARGET_LEN - 1));
    assert_eq!(ok(&max).path, max);
    let over = format!("/{}", "a".repeat(MAX_TARGET_LEN));
    assert_eq!(canonicalize(over.as_bytes()), Err(TooLong));
    assert_eq!(canonicalize_path(&over), Err(TooLong));
    // Query counts.
    let q = format!("/?{}", "a".repeat(MAX_TARGET_LEN - 2));
    assert_eq!(ok(&q).to_target(), q);
    let q = format!("/?{}", "a".repeat(MAX_TARGET_LEN - 1));
    assert_eq!(canonicalize(q.as_bytes()), Err(TooLong));
    // The checks come before anything else.
    let junk = vec![0u8; MAX_TARGET_LEN + 1];
    assert_eq!(canonicalize(&junk), Err(TooLong));
    // A raw target under the limit whose canonical form is over it.
    let grows = format!("/{}", "<".repeat(MAX_TARGET_LEN / 2));
    assert_eq!(canonicalize(grows.as_bytes()), Err(TooLong));
    assert_eq!(canonicalize_path(&grows), Err(TooLong));
    // Shrinking under the limit is fine.
    let shrinks = format!("/{}", "%7E".repeat((MAX_TARGET_LEN - 1) / 3));
    assert_eq!(ok(&shrinks).path.len(), 1 + (MAX_TARGET_LEN - 1) / 3);
}

#[test]
fn every_single_byte_after_slash() {
    // Exhaustive over "/" + one byte and "/%XX": the class of every byte is as documented.
    for b in 0u8..=255 {
        let got = canonicalize(&[b'/', b]);
        let expected = match b {
            b'?' => Ok("/".to_owned()),
            b'/' => Ok("/".to_owned()),
            b'.' => Ok("/".to_owned()),
            b'%' => Err(BadPercentEncoding),
            b'\\' => Err(Backslash),
            b'#' => Err(Fragment),
            b';' => Err(PathParameter),
            0x00..=0x20 | 0x7F..=0xFF => Err(ControlCharacter),
            _ if is_unreserved(b) || b"!$&'()*+,=:@".contains(&b) => Ok(format!("/{}", b as char)),
            _ => Ok(format!("/%{b:02X}")),
        };
        assert_eq!(got.map(|t| t.path), expected, "byte {b:#04x}");

        let encoded = format!("/%{b:02x}");
        let got = canonicalize(encoded.as_bytes()).map(|t| t.path);
        let expected = match b {
            b'.' => Err(EncodedDotSegment),
            b'/' => Err(EncodedSlash),
            b'\\' => Err(Backslash),
            b';' => Err(PathParameter),
            0x00..=0x1F | 0x7F => Err(ControlCharacter),
            0x80..=0xFF => Err(InvalidUtf8),
            _ if is_unreserved(b) => Ok(format!("/{}", b as char)),
            _ => Ok(format!("/%{b:02X}")),
        };
        assert_eq!(got, expected, "encoded byte {b:#04x}");
    }
}

#[test]
fn every_encoded_char_round_trips_as_utf8() {
    // Every scalar value is accepted in percent-encoded UTF-8 and comes out uppercase.
    for c in (0x80u32..=0x10FFFF).step_by(97).filter_map(char::from_u32) {
        let mut buf = [0u8; 4];
        let enc: String = c
            .encode_utf8(&mut buf)
            .bytes()
            .map(|b| format!("%{b:02x}"))
            .collect();
        let got = canonicalize(format!("/{enc}").as_bytes()).map(|t| t.path);
        assert_eq!(
            got,
            Ok(format!("/{}", enc.to_uppercase())),
            "U+{:04X}",
            c as u32
        );
    }
}

#[test]
fn errors_display() {
    assert_eq!(
        EncodedSlash.to_string(),
        "encoded slash in path",
        "thiserror messages are part of the API"
    );
    assert_eq!(TooLong.to_string(), "request target too long");
}
