//! The `return_to` allow-list, enforced before a request reaches Kratos.
//!
//! Kratos itself checks `return_to` against `selfservice.allowed_return_urls`
//! (`x/http_secure_redirect.go`): same scheme (case-insensitive), same host (case-insensitive;
//! `*.example.com` matches any host ending in `.example.com`), and the allowed path a **string**
//! prefix of the path; a relative value takes scheme and host from
//! `selfservice.default_browser_return_url`. The edge applies the same idea, stricter, so that a
//! route's own `allowed_return_urls` holds whatever Kratos is configured with.
//!
//! ## The rule, precisely
//!
//! A value `v` (already percent-decoded once, as Kratos's query parser does) is accepted when:
//!
//! 1. `v` is empty (Kratos uses its default), or
//! 2. `v` is a path-absolute reference: starts with one `/` (not `//`, not `/\`). Kratos resolves
//!    it against `default_browser_return_url`, an origin the operator configured, so it cannot
//!    leave that origin. (`dashboard` without the slash is refused, as Kratos refuses it.)
//! 3. `v` is an absolute `http`/`https` URL written `scheme://authority[path][?query][#fragment]`
//!    whose authority has no userinfo (`@`), no `%`, only ASCII letters, digits, `.`, `-`, `:`
//!    and IPv6 brackets, and whose origin (scheme, lowercase host, port with the scheme's
//!    default filled in) equals the **public origin** of the route or that of an allowed entry
//!    (`*.example.com`: any host with at least one more label in front of `.example.com`), and
//!    the allowed entry's path is a prefix of `v`'s path **at a segment boundary** (`/app`
//!    allows `/app`, `/app/x`, `/app?q`, not `/application`; `/app/` allows everything below
//!    `/app/`). The path compared is the one a browser will request, after dot segments are
//!    resolved (`/app/../admin` is `/admin`).
//! 4. `v` is a URL with another scheme (`myapp://callback`, `com.example.app:/oauth`), and an
//!    allowed entry has the same scheme (case-insensitive) and its text after `scheme:` is a
//!    prefix of `v`'s text after `scheme:`, ending at a boundary (end, `/`, `?` or `#`), so
//!    `myapp://callback` allows `myapp://callback?code=1` and `myapp://callback/x`, not
//!    `myapp://callbackevil` or `myapp://callback@evil`.
//!
//! Always refused: control characters, whitespace, backslashes anywhere; `//evil`, `\\evil`,
//! `https:evil`, `https:/evil`, `https://app.example.com@evil`, `https://app.example.com.evil`;
//! `javascript:`, `data:`, `vbscript:`, `file:` URLs; a value that is not UTF-8 after decoding.
//!
//! With an empty allow-list the edge does not judge (every value is passed to Kratos, which
//! applies its own list): [`check_return_to`] returns `Ok` for anything.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode;
use url::Url;

/// Why a `return_to` was refused. The messages never echo the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReturnToError {
    /// The percent-decoded value is not UTF-8.
    #[error("return_to is not valid UTF-8")]
    NotUtf8,
    /// A percent escape in the query or form body is broken (`%zz`, `%4`).
    #[error("return_to has an invalid percent-encoding")]
    BadEncoding,
    /// Not a URL the edge is willing to interpret (control characters, backslashes,
    /// scheme-relative, userinfo, ...).
    #[error("return_to is not a well-formed URL: {0}")]
    Malformed(&'static str),
    /// Well-formed, but not on the public origin nor on an allowed URL.
    #[error("return_to is not an allowed URL")]
    NotAllowed,
}

/// One `allowed_return_urls` entry, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct AllowedUrl {
    raw: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Web {
        scheme: String,
        /// Lowercase host; for a wildcard entry the suffix including the leading dot.
        host: String,
        wildcard: bool,
        port: u16,
        /// Starts with `/`.
        path: String,
    },
    Custom {
        /// Lowercase.
        scheme: String,
        /// Everything after `scheme:` (query and fragment are not allowed in the entry).
        rest: String,
    },
}

impl fmt::Debug for AllowedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AllowedUrl({:?})", self.raw)
    }
}

impl fmt::Display for AllowedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

const FORBIDDEN_SCHEMES: [&str; 4] = ["javascript", "data", "vbscript", "file"];

impl AllowedUrl {
    /// Parses a config entry: `https://app.example.com/`, `https://*.example.com`,
    /// `http://localhost:3000/callback`, `myapp://callback`, `com.example.app:/oauth`.
    /// Entries may not carry userinfo, a query or a fragment.
    pub fn parse(s: &str) -> Result<AllowedUrl, String> {
        let err = |why: &str| format!("allowed_return_urls entry {s:?}: {why}");
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\')
        {
            return Err(err(
                "contains whitespace, control characters or a backslash",
            ));
        }
        let (scheme, rest) = split_scheme(s).ok_or_else(|| err("not an absolute URL"))?;
        let scheme = scheme.to_ascii_lowercase();
        if FORBIDDEN_SCHEMES.contains(&scheme.as_str()) {
            return Err(err("scheme not allowed"));
        }
        if rest.contains(['?', '#']) {
            return Err(err("must not contain a query or fragment"));
        }
        if scheme == "http" || scheme == "https" {
            let after = rest
                .strip_prefix("//")
                .ok_or_else(|| err("http(s) URLs need '//'"))?;
            let (authority, _) = split_authority(after);
            let wildcard = authority.starts_with("*.");
            let concrete = if wildcard {
                format!("{scheme}://wildcard{}", &after[1..])
            } else {
                s.to_owned()
            };
            check_authority(if wildcard { &authority[1..] } else { authority }).map_err(&err)?;
            let url = Url::parse(&concrete).map_err(|e| err(&e.to_string()))?;
            let host = url.host_str().ok_or_else(|| err("no host"))?;
            let host = if wildcard {
                host.strip_prefix("wildcard")
                    .ok_or_else(|| err("bad wildcard host"))?
                    .to_owned()
            } else {
                host.to_owned()
            };
            if wildcard && host.matches('.').count() < 2 {
                return Err(err("a wildcard needs at least two labels after '*.'"));
            }
            Ok(AllowedUrl {
                raw: s.to_owned(),
                kind: Kind::Web {
                    scheme,
                    host,
                    wildcard,
                    port: url.port_or_known_default().unwrap_or(0),
                    path: url.path().to_owned(),
                },
            })
        } else {
            if rest.is_empty() {
                return Err(err("nothing after the scheme"));
            }
            Ok(AllowedUrl {
                raw: s.to_owned(),
                kind: Kind::Custom {
                    scheme,
                    rest: rest.to_owned(),
                },
            })
        }
    }

    /// The entry as configured.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    fn allows(&self, v: &Candidate<'_>) -> bool {
        match (&self.kind, v) {
            (
                Kind::Web {
                    scheme,
                    host,
                    wildcard,
                    port,
                    path,
                },
                Candidate::Web(u),
            ) => {
                let h = u.host_str().unwrap_or_default();
                let host_ok = if *wildcard {
                    h.len() > host.len() && h.ends_with(host.as_str())
                } else {
                    h == host
                };
                u.scheme() == scheme
                    && host_ok
                    && u.port_or_known_default() == Some(*port)
                    && path_prefix_at_boundary(u.path(), path)
            }
            (Kind::Custom { scheme, rest }, Candidate::Custom { scheme: s, rest: r }) => {
                s.eq_ignore_ascii_case(scheme) && path_prefix_at_boundary(r, rest)
            }
            _ => false,
        }
    }
}

/// `allowed` is a prefix of `value`, ending where a path segment (or the path) ends.
fn path_prefix_at_boundary(value: &str, allowed: &str) -> bool {
    let Some(rest) = value.strip_prefix(allowed) else {
        return false;
    };
    allowed.ends_with('/') || rest.is_empty() || matches!(rest.as_bytes()[0], b'/' | b'?' | b'#')
}

/// `scheme:rest` with a valid RFC 3986 scheme.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut b = scheme.bytes();
    let first = b.next()?;
    (first.is_ascii_alphabetic()
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
    .then_some((scheme, rest))
}

/// Splits `authority[/path...]` at the first `/`, `?` or `#`.
fn split_authority(after_slashes: &str) -> (&str, &str) {
    let end = after_slashes
        .find(['/', '?', '#'])
        .unwrap_or(after_slashes.len());
    after_slashes.split_at(end)
}

fn check_authority(a: &str) -> Result<(), &'static str> {
    if a.is_empty() {
        return Err("empty host");
    }
    if a.contains('@') {
        return Err("userinfo is not allowed");
    }
    if !a
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return Err("unexpected character in the host");
    }
    Ok(())
}

enum Candidate<'a> {
    Web(Url),
    Custom { scheme: &'a str, rest: &'a str },
}

/// Checks one (decoded) `return_to` value; see the module docs for the rule.
///
/// `public_origin`: the route's public origin (`https://app.example.com`), always allowed in
/// addition to `allowed`. With an empty `allowed` the edge does not judge and returns `Ok`.
pub fn check_return_to(
    value: &str,
    allowed: &[AllowedUrl],
    public_origin: Option<&str>,
) -> Result<(), ReturnToError> {
    if allowed.is_empty() || value.is_empty() {
        return Ok(());
    }
    if value
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\' || c == '\u{FFFD}')
    {
        return Err(ReturnToError::Malformed(
            "control characters, whitespace or backslashes",
        ));
    }
    if let Some(rest) = value.strip_prefix('/') {
        if rest.starts_with('/') {
            return Err(ReturnToError::Malformed("scheme-relative URL"));
        }
        return Ok(());
    }
    let (scheme, rest) = split_scheme(value).ok_or(ReturnToError::Malformed(
        "neither an absolute URL nor an absolute path",
    ))?;
    let scheme_lc = scheme.to_ascii_lowercase();
    if FORBIDDEN_SCHEMES.contains(&scheme_lc.as_str()) {
        return Err(ReturnToError::NotAllowed);
    }
    let candidate = if scheme_lc == "http" || scheme_lc == "https" {
        let after = rest
            .strip_prefix("//")
            .ok_or(ReturnToError::Malformed("http(s) URL without '//'"))?;
        let (authority, _) = split_authority(after);
        check_authority(authority).map_err(ReturnToError::Malformed)?;
        let url = Url::parse(value).map_err(|_| ReturnToError::Malformed("unparsable URL"))?;
        if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
            return Err(ReturnToError::Malformed("no host or userinfo"));
        }
        Candidate::Web(url)
    } else {
        Candidate::Custom { scheme, rest }
    };
    if let (Some(origin), Candidate::Web(u)) = (public_origin, &candidate) {
        if let Ok(o) = Url::parse(origin) {
            if o.scheme() == u.scheme()
                && o.host_str() == u.host_str()
                && o.port_or_known_default() == u.port_or_known_default()
            {
                return Ok(());
            }
        }
    }
    if allowed.iter().any(|a| a.allows(&candidate)) {
        Ok(())
    } else {
        Err(ReturnToError::NotAllowed)
    }
}

/// Strict `application/x-www-form-urlencoded` decoding of one component: `+` is a space,
/// `%XX` a byte; a broken escape is an error (Go drops such a pair; the edge refuses it).
fn form_decode(s: &[u8]) -> Result<Vec<u8>, ReturnToError> {
    if !escapes_well_formed(s) {
        return Err(ReturnToError::BadEncoding);
    }
    // `+` becomes a space before decoding, so that `%2B` stays a plus.
    let spaced: Cow<'_, [u8]> = if s.contains(&b'+') {
        Cow::Owned(
            s.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    };
    Ok(percent_decode(&spaced).collect())
}

/// Every `%` starts an escape of two hex digits. `percent_decode` leaves any other `%` as it is;
/// Go's `url.ParseQuery` refuses it.
fn escapes_well_formed(s: &[u8]) -> bool {
    s.split(|&b| b == b'%').skip(1).all(|after| {
        after
            .get(..2)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })
}

/// Decoded values of every `return_to` field of a query string or form body (Go's
/// `url.ParseQuery`: pairs split on `&`, names decoded too, so `return%5Fto` counts).
fn return_to_pairs(s: &[u8]) -> Result<Vec<String>, ReturnToError> {
    let mut out = Vec::new();
    for pair in s.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        // cheap filter before decoding: the name must be able to decode to "return_to"
        if name.len() < 9 {
            continue;
        }
        let Ok(name) = form_decode(name) else {
            continue;
        };
        if name != b"return_to" {
            continue;
        }
        let value = form_decode(value)?;
        out.push(String::from_utf8(value).map_err(|_| ReturnToError::NotUtf8)?);
    }
    Ok(out)
}

/// Percent-decoded values of all `return_to` parameters of a raw query string (without `?`).
/// Check each with [`check_return_to`].
pub fn return_to_in_query(query: &str) -> Result<Vec<String>, ReturnToError> {
    return_to_pairs(query.as_bytes())
}

/// Decoded values of all `return_to` fields of an `application/x-www-form-urlencoded` body.
pub fn return_to_in_form(body: &[u8]) -> Result<Vec<String>, ReturnToError> {
    return_to_pairs(body)
}

/// String values of top-level `return_to` members of a JSON object body, the name compared
/// ASCII-case-insensitively (Go's `encoding/json` matches field names that way). A body that is
/// not a JSON object yields nothing (Kratos refuses it anyway). A non-string `return_to` is
/// refused.
pub fn return_to_in_json(body: &[u8]) -> Result<Vec<String>, ReturnToError> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (k, v) in map {
        if k.eq_ignore_ascii_case("return_to") {
            match v {
                serde_json::Value::String(s) => out.push(s),
                serde_json::Value::Null => {}
                _ => return Err(ReturnToError::Malformed("return_to is not a string")),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
