//! Request-target canonicalisation (DESIGN.md, "Security rules" 1).
//!
//! Every request is matched against routes and forwarded upstream using the *one* canonical path
//! produced here, so that two spellings of the same resource can never be routed differently and
//! the backend never sees a path other than the one that was authorised.
//!
//! # What [`canonicalize`] does
//!
//! 1. Refuses targets longer than [`MAX_TARGET_LEN`] bytes and targets that are not in origin form
//!    (they must start with `/`).
//! 2. Splits at the first `?`. The query is kept byte for byte and never takes part in matching;
//!    it is only checked for raw control characters, raw space, raw non-ASCII bytes and `#`.
//! 3. Scans the path once, left to right, normalising percent-encoding (RFC 3986 §6.2.2):
//!    * `%XX` of an unreserved character (`ALPHA DIGIT - . _ ~`) is decoded;
//!    * every other `%XX` stays encoded, spelled with uppercase hex;
//!    * raw bytes allowed in a path segment (unreserved, sub-delims except `;`, `:`, `@`) stay raw;
//!    * other printable ASCII (`"`, `<`, `>`, `` ` ``, `{`, `}`, `|`, `^`, `[`, `]`, and `?` in
//!      [`canonicalize_path`]) is percent-encoded;
//!    * refused: `%2F` (encoded slash), `\` and `%5C`, `;` and `%3B`, `#`, raw or encoded
//!      control bytes (0x00-0x1F, 0x7F), raw space, raw non-ASCII, malformed `%`, decoded byte
//!      runs that are not well-formed UTF-8, and segments that decode to `.` or `..` but were
//!      written with `%2E`.
//! 4. Merges runs of `/` into one and removes dot segments (RFC 3986 §5.2.4) without ever rising
//!    above the root. A trailing slash is kept (`/a/b/..` is `/a/`).
//!
//! The output is a fixed point: canonicalising a canonical target returns it unchanged.

/// Largest accepted request target, in bytes, query included.
///
/// The limit applies both to the raw target and to the canonical one (percent-encoding raw
/// characters such as `<` can make the canonical form longer), so every accepted result is itself
/// accepted again.
pub const MAX_TARGET_LEN: usize = 8192;

/// Why a request target was refused (each maps to HTTP 400 elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The target does not start with `/` (absolute-form `http://x/y`, authority-form, `*`,
    /// empty).
    #[error("request target is not in origin form")]
    NotOriginForm,
    /// `%2F` / `%2f` in the path.
    #[error("encoded slash in path")]
    EncodedSlash,
    /// A literal `\` or `%5C` / `%5c` in the path.
    #[error("backslash in path")]
    Backslash,
    /// A segment that decodes to `.` or `..` but was written with some `%2E`.
    #[error("encoded dot segment in path")]
    EncodedDotSegment,
    /// A raw or percent-encoded byte 0x00-0x1F or 0x7F; also a raw space or a raw non-ASCII byte
    /// (in the path or in the query).
    #[error("control character in path")]
    ControlCharacter,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in path")]
    BadPercentEncoding,
    /// Percent-decoded bytes that are not well-formed UTF-8 (overlong forms such as `%C0%AE`,
    /// lone continuation bytes, truncated sequences, surrogates, code points above U+10FFFF).
    #[error("invalid UTF-8 in path")]
    InvalidUtf8,
    /// A raw `#` in the path or in the query.
    #[error("fragment in request target")]
    Fragment,
    /// A `;` (raw or `%3B`) in the path: matrix parameters let requests bypass rules on
    /// Tomcat/Spring-style backends.
    #[error("path parameter in request target")]
    PathParameter,
    /// The raw or the canonical target is longer than [`MAX_TARGET_LEN`] bytes.
    #[error("request target too long")]
    TooLong,
}

/// A request target split into its canonical path and its untouched query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalTarget {
    /// The canonical path: starts with `/`, no empty or dot segments (except a trailing `/`),
    /// printable ASCII only, normalised percent-encoding. This is what routes are matched on.
    pub path: String,
    /// Everything after the first `?`, byte for byte (`Some("")` for a bare `?`), or `None` when
    /// the target has no `?`.
    pub query: Option<String>,
}

impl CanonicalTarget {
    /// `path` + (`"?"` + `query` if any): what is forwarded upstream.
    pub fn to_target(&self) -> String {
        match &self.query {
            None => self.path.clone(),
            Some(q) => {
                let mut t = String::with_capacity(self.path.len() + 1 + q.len());
                t.push_str(&self.path);
                t.push('?');
                t.push_str(q);
                t
            }
        }
    }

    fn target_len(&self) -> usize {
        self.path.len() + self.query.as_ref().map_or(0, |q| q.len() + 1)
    }
}

/// Canonicalise a raw HTTP request target (bytes exactly as on the request line, query included).
///
/// See the [module documentation](self) for the rules. Errors are reported for the first offending
/// byte of the path, then of the query.
pub fn canonicalize(raw: &[u8]) -> Result<CanonicalTarget, PathError> {
    if raw.len() > MAX_TARGET_LEN {
        return Err(PathError::TooLong);
    }
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let path = canonical_path(path)?;
    let query = match query {
        Some(q) => Some(checked_query(q)?),
        None => None,
    };
    let target = CanonicalTarget { path, query };
    if target.target_len() > MAX_TARGET_LEN {
        return Err(PathError::TooLong);
    }
    Ok(target)
}

/// Canonicalise just a path (no `?` split); used for config values like `path_prefix`.
///
/// Same rules as [`canonicalize`]; a `?` here is an ordinary character and comes out as `%3F`.
/// For any `p` without `?`, `canonicalize_path(p)` equals `canonicalize(p.as_bytes())`'s path.
pub fn canonicalize_path(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_TARGET_LEN {
        return Err(PathError::TooLong);
    }
    let path = canonical_path(raw.as_bytes())?;
    if path.len() > MAX_TARGET_LEN {
        return Err(PathError::TooLong);
    }
    Ok(path)
}

// Byte classes for the raw path.
/// Allowed raw and kept raw: unreserved, sub-delims except `;`, `:`, `@`.
const KEEP: u8 = 0;
/// Printable ASCII that is not allowed raw in a path: percent-encoded in the output.
const ENCODE: u8 = 1;
const PERCENT: u8 = 2;
const SLASH: u8 = 3;
/// Controls, space, DEL, non-ASCII.
const CONTROL: u8 = 4;
const BACKSLASH: u8 = 5;
const HASH: u8 = 6;
const SEMICOLON: u8 = 7;

const CLASS: [u8; 256] = {
    let mut t = [CONTROL; 256];
    let mut b = 0x21;
    while b < 0x7F {
        t[b] = if is_unreserved(b as u8) { KEEP } else { ENCODE };
        b += 1;
    }
    let keep = b"!$&'()*+,=:@";
    let mut i = 0;
    while i < keep.len() {
        t[keep[i] as usize] = KEEP;
        i += 1;
    }
    t[b'%' as usize] = PERCENT;
    t[b'/' as usize] = SLASH;
    t[b'\\' as usize] = BACKSLASH;
    t[b'#' as usize] = HASH;
    t[b';' as usize] = SEMICOLON;
    t
};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_encoded(out: &mut Vec<u8>, v: u8) {
    out.extend_from_slice(&[
        b'%',
        HEX_UPPER[usize::from(v >> 4)],
        HEX_UPPER[usize::from(v & 0x0F)],
    ]);
}

/// Incremental check that a run of percent-decoded non-ASCII bytes is well-formed UTF-8
/// (Unicode Table 3-7: no overlongs, no surrogates, nothing above U+10FFFF).
struct Utf8Run {
    /// Continuation bytes still expected.
    need: u8,
    /// Allowed range for the next continuation byte.
    lo: u8,
    hi: u8,
}

impl Utf8Run {
    const fn new() -> Self {
        Utf8Run {
            need: 0,
            lo: 0x80,
            hi: 0xBF,
        }
    }

    fn byte(&mut self, v: u8) -> Result<(), PathError> {
        if self.need > 0 {
            if v < self.lo || v > self.hi {
                return Err(PathError::InvalidUtf8);
            }
            self.need -= 1;
            self.lo = 0x80;
            self.hi = 0xBF;
            return Ok(());
        }
        let (need, lo, hi) = match v {
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            // Lone continuation bytes, C0/C1 (overlong), F5..FF.
            _ => return Err(PathError::InvalidUtf8),
        };
        self.need = need;
        self.lo = lo;
        self.hi = hi;
        Ok(())
    }

    /// Anything but another decoded non-ASCII byte ends the run: it must be complete.
    #[inline]
    fn end(&self) -> Result<(), PathError> {
        if self.need == 0 {
            Ok(())
        } else {
            Err(PathError::InvalidUtf8)
        }
    }
}

/// The single pass over the path: validate, normalise each segment straight into `out`, then
/// merge empty segments and resolve dot segments on `out` itself. `out` only ever receives
/// printable ASCII.
fn canonical_path(raw: &[u8]) -> Result<String, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut utf8 = Utf8Run::new();
    let mut i = 1; // just past a '/'
    loop {
        // One segment: raw[i..] up to the next '/' or the end.
        let seg_start = out.len();
        out.push(b'/');
        let mut encoded_dot = false;
        while let Some(&b) = raw.get(i) {
            match CLASS[usize::from(b)] {
                KEEP => {
                    utf8.end()?;
                    // Copy the whole run of bytes that stay as they are.
                    let run = raw[i..]
                        .iter()
                        .position(|&c| CLASS[usize::from(c)] != KEEP)
                        .map_or(raw.len(), |n| i + n);
                    out.extend_from_slice(&raw[i..run]);
                    i = run;
                }
                SLASH => break,
                PERCENT => {
                    let v = match (
                        raw.get(i + 1).copied().and_then(hex_value),
                        raw.get(i + 2).copied().and_then(hex_value),
                    ) {
                        (Some(h), Some(l)) => (h << 4) | l,
                        _ => return Err(PathError::BadPercentEncoding),
                    };
                    i += 3;
                    if v >= 0x80 {
                        utf8.byte(v)?;
                        push_encoded(&mut out, v);
                        continue;
                    }
                    utf8.end()?;
                    match v {
                        b'/' => return Err(PathError::EncodedSlash),
                        b'\\' => return Err(PathError::Backslash),
                        b';' => return Err(PathError::PathParameter),
                        0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter),
                        _ if is_unreserved(v) => {
                            encoded_dot |= v == b'.';
                            out.push(v);
                        }
                        _ => push_encoded(&mut out, v),
                    }
                }
                ENCODE => {
                    utf8.end()?;
                    push_encoded(&mut out, b);
                    i += 1;
                }
                BACKSLASH => return Err(PathError::Backslash),
                HASH => return Err(PathError::Fragment),
                SEMICOLON => return Err(PathError::PathParameter),
                _ => return Err(PathError::ControlCharacter),
            }
        }
        utf8.end()?;
        let last = i >= raw.len();
        match &out[seg_start + 1..] {
            // `//` merges into `/`; a final empty segment is the trailing slash and stays.
            b"" if !last => out.truncate(seg_start),
            seg @ (b"." | b"..") => {
                if encoded_dot {
                    return Err(PathError::EncodedDotSegment);
                }
                let parent = seg.len() == 2;
                out.truncate(seg_start);
                if parent {
                    // `out` is "/s1/s2/..." with non-empty segments: drop the last one, if any.
                    let cut = out.iter().rposition(|&c| c == b'/').unwrap_or(0);
                    out.truncate(cut);
                }
                if last {
                    out.push(b'/');
                }
            }
            _ => {}
        }
        if last {
            break;
        }
        i += 1; // the '/'
    }
    if out.is_empty() {
        out.push(b'/');
    }
    // Always ASCII, so this cannot fail; no `unsafe` for a few nanoseconds.
    String::from_utf8(out).map_err(|_| PathError::ControlCharacter)
}

/// The query is forwarded untouched; only bytes that can never appear raw in a request target
/// are refused.
fn checked_query(q: &[u8]) -> Result<String, PathError> {
    for &b in q {
        match b {
            b'#' => return Err(PathError::Fragment),
            0x21..=0x7E => {}
            _ => return Err(PathError::ControlCharacter),
        }
    }
    // Printable ASCII only, so this cannot fail.
    String::from_utf8(q.to_vec()).map_err(|_| PathError::ControlCharacter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use PathError::*;

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

    fn ok(raw: &str) -> CanonicalTarget {
        match canonicalize(raw.as_bytes()) {
            Ok(t) => t,
            Err(e) => panic!("{raw:?} was refused: {e:?}"),
        }
    }

    /// (input, expected canonical path or error, expected query)
    const PATH_CASES: &[(&str, Result<&str, PathError>)] = &[
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
                _ if is_unreserved(b) || b"!$&'()*+,=:@".contains(&b) => {
                    Ok(format!("/{}", b as char))
                }
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

    // ----- Reference model -------------------------------------------------------------------
    //
    // A deliberately naive, allocation-heavy restatement of the rules: split into segments,
    // tokenise each into raw bytes and decoded escapes, check, re-encode, then resolve the
    // segment list with a stack. Only used to cross-check the fast implementation.

    #[derive(Clone, Copy)]
    enum Tok {
        Raw(u8),
        Esc(u8),
    }

    fn model(raw: &[u8]) -> Option<CanonicalTarget> {
        if raw.len() > MAX_TARGET_LEN || raw.first() != Some(&b'/') {
            return None;
        }
        let (path, query) = match raw.iter().position(|&b| b == b'?') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        if let Some(q) = query {
            if q.iter().any(|&b| !(0x21..=0x7E).contains(&b) || b == b'#') {
                return None;
            }
        }
        let segments: Vec<&[u8]> = path[1..].split(|&b| b == b'/').collect();
        let n = segments.len();
        let mut stack: Vec<String> = Vec::new();
        let mut trailing = false;
        let mut decoded_all = Vec::new();
        for (k, seg) in segments.into_iter().enumerate() {
            let last = k + 1 == n;
            let mut toks = Vec::new();
            let mut j = 0;
            while j < seg.len() {
                if seg[j] == b'%' {
                    let hex = std::str::from_utf8(seg.get(j + 1..j + 3)?).ok()?;
                    if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                        return None;
                    }
                    toks.push(Tok::Esc(u8::from_str_radix(hex, 16).ok()?));
                    j += 3;
                } else {
                    toks.push(Tok::Raw(seg[j]));
                    j += 1;
                }
            }
            let decoded: Vec<u8> = toks
                .iter()
                .map(|t| match *t {
                    Tok::Raw(b) | Tok::Esc(b) => b,
                })
                .collect();
            for t in &toks {
                match *t {
                    Tok::Raw(b) => {
                        if b <= 0x20 || b >= 0x7F || b"\\#;".contains(&b) {
                            return None;
                        }
                    }
                    Tok::Esc(b) => {
                        if b < 0x20 || b == 0x7F || b"/\\;".contains(&b) {
                            return None;
                        }
                    }
                }
            }
            // Whole-segment UTF-8 is equivalent to per-run (raw bytes are ASCII here).
            std::str::from_utf8(&decoded).ok()?;
            decoded_all.extend_from_slice(&decoded);
            decoded_all.push(b'/');
            let is_dot = decoded == b"." || decoded == b"..";
            if is_dot && toks.iter().any(|t| matches!(t, Tok::Esc(_))) {
                return None;
            }
            let mut canon = String::new();
            for t in &toks {
                match *t {
                    Tok::Raw(b) if CLASS[b as usize] == KEEP => canon.push(b as char),
                    Tok::Esc(b) if is_unreserved(b) => canon.push(b as char),
                    Tok::Raw(b) | Tok::Esc(b) => canon.push_str(&format!("%{b:02X}")),
                }
            }
            match canon.as_str() {
                "" => trailing = last,
                "." => trailing = last,
                ".." => {
                    stack.pop();
                    trailing = last;
                }
                _ => {
                    stack.push(canon);
                    trailing = false;
                }
            }
        }
        // Every decoded run across segments is valid too (sanity of the model itself).
        std::str::from_utf8(&decoded_all).ok()?;
        let mut path = String::from("/");
        path.push_str(&stack.join("/"));
        if trailing && !stack.is_empty() {
            path.push('/');
        }
        let t = CanonicalTarget {
            path,
            query: query.map(|q| String::from_utf8(q.to_vec()).unwrap()),
        };
        if t.target_len() > MAX_TARGET_LEN {
            return None;
        }
        Some(t)
    }

    #[test]
    fn model_agrees_with_table() {
        for &(input, expected) in PATH_CASES {
            assert_eq!(
                model(input.as_bytes()).map(|t| t.path),
                expected.ok().map(str::to_owned),
                "{input:?}"
            );
        }
    }

    // ----- Property tests --------------------------------------------------------------------

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
}
