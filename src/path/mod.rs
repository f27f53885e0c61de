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
//!
//! # Layout
//!
//! This file holds the public API and the query check; `escape` normalises the bytes of one
//! segment (byte classes, percent-escapes, UTF-8 runs of decoded bytes) and `segments` drives
//! the pass over the path, merging slashes and removing dot segments.

mod escape;
mod segments;
#[cfg(test)]
mod tests;

use segments::canonical_path;

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

    /// Whether `raw` (a request target as received) is byte for byte [`Self::to_target`], checked
    /// without building it: the usual request needs no rewriting.
    pub fn is_target(&self, raw: &[u8]) -> bool {
        let path = self.path.as_bytes();
        match (&self.query, raw.split_at_checked(path.len())) {
            (None, Some((p, rest))) => p == path && rest.is_empty(),
            (Some(q), Some((p, rest))) => {
                p == path && rest.first() == Some(&b'?') && &rest[1..] == q.as_bytes()
            }
            (_, None) => false,
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
