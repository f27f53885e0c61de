//! Translating between Kratos's own URLs and the public origin + mount prefix.
//!
//! ## What counts as "a URL on Kratos's origin"
//!
//! Kratos's base URL `B` = `[kratos].public_url` without its trailing slash (scheme, host, port
//! and base path, e.g. `http://127.0.0.1:4433`). The [`Rewriter`] looks for `B` in three
//! spellings, each replaced by the same spelling of the public base `P`:
//!
//! | spelling | where Kratos (or a client) produces it | example |
//! |---|---|---|
//! | plain | JSON strings, HTML attributes, `Location`, prose in `error.reason` | `http://127.0.0.1:4433/x` |
//! | JSON-escaped slashes | JSON encoders that escape `/` | `http:\/\/127.0.0.1:4433\/x` |
//! | percent-encoded | a URL inside another URL's query (`?return_to=`) | `http%3A%2F%2F127.0.0.1%3A4433%2Fx` (hex digits in either case; the replacement keeps the case) |
//!
//! Scheme and authority compare ASCII-case-insensitively, the base path case-sensitively.
//!
//! An occurrence of `B` counts only when it is a whole origin:
//! * **before it** there is no scheme character (`xhttp://127.0.0.1:4433` is another scheme),
//!   except the tail of a `%XX` or `\uXXXX` escape (`%3Dhttp...`, `\u003dhttp...`);
//! * **after it** comes the end of the text or a character that ends an authority: one of
//!   `/ ? # \`, `" ' < >`, `` ` ``, whitespace; for the percent-encoded spelling also `&`
//!   (the end of the encoded value) and `%2F %3F %23 %5C`.
//!   When `B` ends in an explicit port (`:4433`), any other character that cannot continue a
//!   port or host ends it as well (`&`, `%`, `:`, `)`, `,` ...) unless an `@` follows before
//!   the authority ends (`http://127.0.0.1:4433&x@evil.com` is an URL on `evil.com`). Hence
//!   `http://127.0.0.1:4433` never matches inside `http://127.0.0.1:44330`,
//!   `http%3A%2F%2F127.0.0.1%3A4433%30` or `http://127.0.0.1:4433@evil.com`, `http://kratos`
//!   never inside `http://kratos.evil.com`, `http://kratos%2Eevil.com` or `http://kratos:8080`,
//!   and `http://kratos/base` never inside `http://kratos/basement`.
//!
//! ## URLs on other origins are never touched, not even their query
//!
//! Text is cut into *tokens* at the characters that cannot occur in a URL as Kratos writes it
//! (`" ' < >`, `` ` ``, whitespace). In each token the **first** scheme separator (`://`,
//! `:\/\/` or `%3A%2F%2F`) decides: if it belongs to an occurrence of `B`, every occurrence of
//! `B` in the token is rewritten (so `return_to=http%3A%2F%2F127.0.0.1%3A4433%2F...` inside
//! Kratos's own `request_url` is rewritten too); otherwise the token is an URL on another origin
//! and stays byte for byte. That is what keeps the OIDC provider's
//! `...?redirect_uri=http%3A%2F%2F127.0.0.1%3A4433%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fgoogle`
//! intact, in a `Location`, in `redirect_browser_to` and in the prose of `error.reason`
//! (Kratos repeats `redirect_uri` in its token request, so it must not change; see
//! [`super::oidc`] for detecting the misconfiguration instead), and `myapp://callback?code=...`.
//!
//! ## Cookies
//!
//! [`Rewriter::rewrite_set_cookie`] applies the route's cookie rules (`Domain`, `Secure`, `Path`,
//! `SameSite=None`; everything else byte for byte): see [`super::set_cookie`].

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::set_cookie::CookieRules;
use super::EdgeSettings;

/// How a spelling of the Kratos base looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Plain,
    JsonEscaped,
    Percent,
}

#[derive(Debug, Clone)]
struct Needle {
    form: Form,
    /// Bytes to find; where `ci[i]` is set they are stored lowercase and compared
    /// ASCII-case-insensitively.
    bytes: Vec<u8>,
    ci: Vec<bool>,
    /// The public base in the same spelling (upper-case hex for `Percent`).
    replacement: Vec<u8>,
    /// `Percent` only: the replacement with lower-case hex.
    replacement_lower: Vec<u8>,
}

impl Needle {
    fn matches_at(&self, hay: &[u8], pos: usize) -> bool {
        let Some(window) = hay.get(pos..pos + self.bytes.len()) else {
            return false;
        };
        window
            .iter()
            .zip(&self.bytes)
            .zip(&self.ci)
            .all(|((&h, &n), &ci)| {
                if ci {
                    h.to_ascii_lowercase() == n
                } else {
                    h == n
                }
            })
    }
}

/// A match of the Kratos base in some text.
#[derive(Debug, Clone, Copy)]
struct Match {
    start: usize,
    end: usize,
    needle: usize,
    lower_hex: bool,
}

/// Rewrites Kratos's URLs, `Location`s and cookies for one edge route. Built once per route
/// (cheap: a few short strings) from [`EdgeSettings`].
#[derive(Debug, Clone)]
pub struct Rewriter {
    needles: [Needle; 3],
    scheme_len: usize,
    /// Public base == Kratos base: URLs need no rewriting.
    identity: bool,
    /// Kratos's base ends in an explicit port, so any non-digit ends it.
    port_end: bool,
    prefix: String,
    kratos_base_path: String,
    cookies: CookieRules,
}

/// Every byte but the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) is percent-encoded
/// (non-ASCII bytes always are).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded with [`NOT_UNRESERVED`], hex digits upper-case (`%3A`) or, with `lower`,
/// lower-case (`%3a`): the crate writes upper case, and a match keeps the case it found.
fn percent_encode(s: &str, lower: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for piece in utf8_percent_encode(s, NOT_UNRESERVED) {
        // A piece is either a run of unreserved characters or one `%XX` escape (`%` itself is
        // always escaped, so a piece starting with it is an escape).
        if lower && piece.starts_with('%') {
            out.push_str(&piece.to_ascii_lowercase());
        } else {
            out.push_str(piece);
        }
    }
    out
}

/// Bytes that end a token (cannot be part of a URL as Kratos writes one).
fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'"' | b'\'' | b'<' | b'>' | b'`' | b' ' | b'\t' | b'\r' | b'\n' | b'\x0c'
    )
}

/// The byte a `%XX` escape at `i` stands for (`None` when there is no well-formed escape there).
fn pct_at(hay: &[u8], i: usize) -> Option<u8> {
    let escape = hay.get(i..i + 3)?;
    if escape[0] != b'%' {
        return None;
    }
    // a well-formed escape decodes to exactly one byte; a broken one is passed through as three
    let mut decoded = percent_encoding::percent_decode(escape);
    match (decoded.next(), decoded.next()) {
        (Some(b), None) => Some(b),
        _ => None,
    }
}

fn is_scheme_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

/// May an origin start at `pos` (no scheme character glued in front of it)?
fn starts_ok(hay: &[u8], pos: usize) -> bool {
    if pos == 0 || !is_scheme_char(hay[pos - 1]) {
        return true;
    }
    // the tail of a %XX escape: `%3Dhttp...`
    if pos >= 3
        && hay[pos - 3] == b'%'
        && hay[pos - 2].is_ascii_hexdigit()
        && hay[pos - 1].is_ascii_hexdigit()
    {
        return true;
    }
    // the tail of a JSON \uXXXX escape: `\u003dhttp...`
    pos >= 6
        && hay[pos - 6] == b'\\'
        && hay[pos - 5] == b'u'
        && hay[pos - 4..pos].iter().all(u8::is_ascii_hexdigit)
}

impl Rewriter {
    /// Precomputes the three spellings of Kratos's base and of the public base.
    pub fn new(settings: &EdgeSettings) -> Rewriter {
        let k = &settings.kratos_origin;
        let scheme = k.scheme();
        let base = settings.kratos_base();
        let after_scheme = &base[scheme.len() + 3..]; // authority + base path
        let base_path = settings.kratos_base_path();
        let authority = &after_scheme[..after_scheme.len() - base_path.len()];
        let public = settings.public_base.as_str();

        let mut plain = Needle {
            form: Form::Plain,
            bytes: Vec::new(),
            ci: Vec::new(),
            replacement: public.as_bytes().to_vec(),
            replacement_lower: public.as_bytes().to_vec(),
        };
        let mut json = Needle {
            form: Form::JsonEscaped,
            bytes: Vec::new(),
            ci: Vec::new(),
            replacement: public.replace('/', "\\/").into_bytes(),
            replacement_lower: public.replace('/', "\\/").into_bytes(),
        };
        let mut pct = Needle {
            form: Form::Percent,
            bytes: Vec::new(),
            ci: Vec::new(),
            replacement: percent_encode(public, false).into_bytes(),
            replacement_lower: percent_encode(public, true).into_bytes(),
        };
        let push = |n: &mut Needle, s: &str, ci: bool| {
            for b in s.bytes() {
                n.bytes.push(if ci { b.to_ascii_lowercase() } else { b });
                n.ci.push(ci);
            }
        };
        // scheme + separator + authority: case-insensitive
        push(&mut plain, &format!("{scheme}://{authority}"), true);
        push(&mut json, &format!("{scheme}:\\/\\/{authority}"), true);
        push(
            &mut pct,
            &format!("{scheme}%3a%2f%2f{}", percent_encode(authority, true)),
            true,
        );
        // base path: case-sensitive (escapes' hex digits are not)
        push(&mut plain, base_path, false);
        push(&mut json, &base_path.replace('/', "\\/"), false);
        for piece in utf8_percent_encode(base_path, NOT_UNRESERVED) {
            // escapes' hex digits in either case; unreserved characters as they are
            push(&mut pct, piece, piece.starts_with('%'));
        }

        Rewriter {
            needles: [plain, json, pct],
            scheme_len: scheme.len(),
            identity: public == base,
            port_end: base_path.is_empty() && k.port().is_some(),
            prefix: settings.prefix.clone(),
            kratos_base_path: base_path.to_owned(),
            cookies: CookieRules::new(settings),
        }
    }

    /// Request path on the public side -> the path relative to Kratos's base (what Kratos's
    /// router sees under its base path, and what [`super::purge::on_request`] takes):
    /// `"/.ory"` -> `"/"`, `"/.ory/"` -> `"/"`, `"/.ory/x"` -> `"/x"`, `"/.oryx"` -> `None`,
    /// `"/other"` -> `None`. With an empty prefix every path maps to itself. The path is the
    /// canonical path (no query).
    pub fn strip_prefix(&self, path: &str) -> Option<String> {
        if !path.starts_with('/') {
            return None;
        }
        let rest = path.strip_prefix(self.prefix.as_str())?;
        if rest.is_empty() {
            Some("/".to_owned())
        } else if rest.starts_with('/') {
            Some(rest.to_owned())
        } else {
            None
        }
    }

    /// The path to send upstream for a Kratos path from [`Rewriter::strip_prefix`]: Kratos's
    /// base path + the Kratos path (`"/x"` -> `"/base/x"`; unchanged for a root base).
    pub fn upstream_path(&self, kratos_path: &str) -> String {
        format!("{}{}", self.kratos_base_path, kratos_path)
    }

    /// Rewrites a `Location` header value. `None` = leave it as it is.
    ///
    /// * on Kratos's origin: the public base replaces Kratos's base, and Kratos URLs nested in
    ///   its query are rewritten too (see the module docs);
    /// * a path-absolute reference (`/self-service/...`, not `//host`) is relative to Kratos's
    ///   host: it gets the prefix when it lies under Kratos's base path;
    /// * anything else (another origin, an OIDC provider with its `redirect_uri`,
    ///   `myapp://callback?code=...`) is left alone.
    pub fn rewrite_location(&self, v: &str) -> Option<String> {
        let b = v.as_bytes();
        if b.first() == Some(&b'/') {
            if matches!(b.get(1), Some(b'/' | b'\\')) {
                return None;
            }
            let rest = if self.kratos_base_path.is_empty() {
                v
            } else {
                let r = v.strip_prefix(self.kratos_base_path.as_str())?;
                if r.is_empty() || matches!(r.as_bytes()[0], b'/' | b'?' | b'#') {
                    r
                } else {
                    return None;
                }
            };
            let out = format!("{}{}", self.prefix, rest);
            return (out != v).then_some(out);
        }
        if self.identity {
            return None;
        }
        let m = self.find(b, 0)?;
        if m.start != 0 || self.needles[m.needle].form != Form::Plain {
            return None;
        }
        let out = self.rewrite_token(b, 0, b.len(), None);
        Some(String::from_utf8(out).expect("ASCII replacements keep UTF-8 valid"))
    }

    /// Rewrites every URL on Kratos's origin in a JSON or HTML body (the whole body; see the
    /// module docs for the rules). `None` = no occurrence, send the body as it is.
    pub fn rewrite_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        if self.identity {
            return None;
        }
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut pos = 0;
        while let Some(m) = self.find(body, pos) {
            let mut tok_start = m.start;
            while tok_start > 0 && !is_delimiter(body[tok_start - 1]) {
                tok_start -= 1;
            }
            let mut tok_end = m.end;
            while tok_end < body.len() && !is_delimiter(body[tok_end]) {
                tok_end += 1;
            }
            if self.outer_is_kratos(body, tok_start, tok_end) {
                let buf = out.get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
                buf.extend_from_slice(&body[copied..m.start]);
                let rewritten = self.rewrite_token(body, m.start, tok_end, Some(m));
                buf.extend_from_slice(&rewritten);
                copied = tok_end;
            }
            pos = tok_end;
        }
        let mut buf = out?;
        buf.extend_from_slice(&body[copied..]);
        Some(buf)
    }

    /// Rewrites one `Set-Cookie` value with the route's cookie rules (see
    /// [`super::set_cookie`]). Returns the value unchanged (apart from `; ` spacing between
    /// attributes) when nothing applies.
    pub fn rewrite_set_cookie(&self, v: &str) -> String {
        self.cookies.rewrite(v)
    }

    /// The first whole-origin occurrence of Kratos's base at or after `from`.
    fn find(&self, hay: &[u8], from: usize) -> Option<Match> {
        let first = self.needles[0].bytes[0];
        let mut i = from;
        while i < hay.len() {
            let off = hay[i..]
                .iter()
                .position(|&b| b.to_ascii_lowercase() == first)?;
            let pos = i + off;
            if let Some(m) = self.match_at(hay, pos) {
                return Some(m);
            }
            i = pos + 1;
        }
        None
    }

    fn match_at(&self, hay: &[u8], pos: usize) -> Option<Match> {
        if !starts_ok(hay, pos) {
            return None;
        }
        for (idx, n) in self.needles.iter().enumerate() {
            if n.matches_at(hay, pos) {
                let end = pos + n.bytes.len();
                if self.ends_ok(n.form, hay, end) {
                    let lower_hex = n.form == Form::Percent
                        && hay[pos + self.scheme_len + 2].is_ascii_lowercase();
                    return Some(Match {
                        start: pos,
                        end,
                        needle: idx,
                        lower_hex,
                    });
                }
            }
        }
        None
    }

    /// Does position `i` (may be the end) certainly end an authority?
    fn hard_end(form: Form, hay: &[u8], i: usize) -> bool {
        let Some(&b) = hay.get(i) else {
            return true;
        };
        matches!(b, b'/' | b'?' | b'#' | b'\\')
            || is_delimiter(b)
            || (form == Form::Percent
                && (b == b'&' || matches!(pct_at(hay, i), Some(b'/' | b'?' | b'#' | b'\\'))))
    }

    fn ends_ok(&self, form: Form, hay: &[u8], end: usize) -> bool {
        if Self::hard_end(form, hay, end) {
            return true;
        }
        if !self.port_end {
            return false;
        }
        // After an explicit port any other character ends the authority too, unless it is part
        // of a host or turns what came before into userinfo (`http://kratos:4433@evil.com`,
        // `http://kratos:4433&x@evil.com`).
        let first = if form == Form::Percent {
            pct_at(hay, end).unwrap_or(hay[end])
        } else {
            hay[end]
        };
        if first.is_ascii_alphanumeric() || matches!(first, b'.' | b'-' | b'_' | b'~' | b'@') {
            return false;
        }
        let mut i = end;
        while !Self::hard_end(form, hay, i) {
            if hay[i] == b'@' || (form == Form::Percent && pct_at(hay, i) == Some(b'@')) {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Does the first absolute URL in `hay[start..end]` start with Kratos's base?
    fn outer_is_kratos(&self, hay: &[u8], start: usize, end: usize) -> bool {
        let tok = &hay[start..end];
        let sep = (0..tok.len()).find(|&i| {
            let t = &tok[i..];
            t.starts_with(b"://")
                || t.starts_with(b":\\/\\/")
                || (t.len() >= 9 && t[..9].eq_ignore_ascii_case(b"%3a%2f%2f"))
        });
        let Some(sep) = sep else {
            return false;
        };
        let Some(pos) = (start + sep).checked_sub(self.scheme_len) else {
            return false;
        };
        pos >= start && self.match_at(hay, pos).is_some()
    }

    /// Rewrites every occurrence in `hay[start..end]` (`first` = the one already found at
    /// `start`, if any).
    fn rewrite_token(&self, hay: &[u8], start: usize, end: usize, first: Option<Match>) -> Vec<u8> {
        let mut out = Vec::with_capacity(end - start + 64);
        let mut copied = start;
        let mut next = first.or_else(|| self.find(&hay[..end], start));
        while let Some(m) = next {
            if m.start >= end {
                break;
            }
            out.extend_from_slice(&hay[copied..m.start]);
            let n = &self.needles[m.needle];
            out.extend_from_slice(if m.lower_hex {
                &n.replacement_lower
            } else {
                &n.replacement
            });
            copied = m.end;
            next = self.find(&hay[..end], m.end);
        }
        out.extend_from_slice(&hay[copied..end]);
        out
    }
}

#[cfg(test)]
mod tests;
