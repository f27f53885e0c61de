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
//! [`Rewriter::rewrite_set_cookie`]:
//! * `Domain` becomes `cookie_domain` (replacing Kratos's, or added) or is removed (host-only);
//! * `Secure` is kept when the public side is HTTPS and dropped when it is plain HTTP (it is not
//!   added: Kratos decides that, e.g. `--dev` mode omits it);
//! * `Path`: **`Path=/` is kept** — Kratos's session cookie (`ory_kratos_session`,
//!   `ory_session_<slug>`) must reach the application's routes, not only the mount prefix, and
//!   `csrf_token_<hash>` / `ory_kratos_continuity` at `/` are harmless (their names are Kratos's
//!   own). A `Path` that addresses Kratos endpoints is moved under the prefix: with a root
//!   Kratos base, a path starting with `/self-service`, `/sessions`, `/schemas` or
//!   `/.well-known/ory`; with a base path `/base`, `/base` and anything below it. Any other
//!   `Path` (e.g. an application path chosen in `session.cookie.path`) is kept.
//! * `SameSite=None` becomes `SameSite=Lax` on a plain-HTTP public origin (browsers drop `None`
//!   without `Secure`);
//! * everything else (`SameSite`, `HttpOnly`, `Max-Age`, `Expires`, `Partitioned`, the value) is
//!   kept as it is.

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
    cookie_domain: Option<String>,
    public_is_https: bool,
}

/// RFC 3986 unreserved characters: never percent-encoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn percent_encode(s: &str, lower: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(b as char);
        } else if lower {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
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

/// The byte a `%XX` escape at `i` stands for.
fn pct_at(hay: &[u8], i: usize) -> Option<u8> {
    if hay.get(i) != Some(&b'%') {
        return None;
    }
    let h = (*hay.get(i + 1)? as char).to_digit(16)?;
    let l = (*hay.get(i + 2)? as char).to_digit(16)?;
    Some((h * 16 + l) as u8)
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
        for &b in base_path.as_bytes() {
            if is_unreserved(b) {
                push(&mut pct, &(b as char).to_string(), false);
            } else {
                push(&mut pct, &format!("%{b:02x}"), true);
            }
        }

        Rewriter {
            needles: [plain, json, pct],
            scheme_len: scheme.len(),
            identity: public == base,
            port_end: base_path.is_empty() && k.port().is_some(),
            prefix: settings.prefix.clone(),
            kratos_base_path: base_path.to_owned(),
            cookie_domain: settings.cookie_domain.clone(),
            public_is_https: settings.public_is_https,
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

    /// Rewrites one `Set-Cookie` value (see the module docs). Returns the value unchanged
    /// (apart from `; ` spacing between attributes) when nothing applies.
    pub fn rewrite_set_cookie(&self, v: &str) -> String {
        let mut parts = v.split(';');
        let name_value = parts.next().unwrap_or_default().trim();
        let mut attrs: Vec<String> = Vec::new();
        let mut domain_at: Option<usize> = None;
        for attr in parts {
            let attr = attr.trim();
            if attr.is_empty() {
                continue;
            }
            let (name, value) = match attr.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (attr, None),
            };
            if name.eq_ignore_ascii_case("domain") {
                domain_at.get_or_insert(attrs.len());
                continue;
            }
            if name.eq_ignore_ascii_case("secure") && !self.public_is_https {
                continue;
            }
            if name.eq_ignore_ascii_case("samesite")
                && value.is_some_and(|v| v.eq_ignore_ascii_case("none"))
                && !self.public_is_https
            {
                // Browsers drop `SameSite=None` without `Secure` (RFC 6265bis, the SameSite attribute),
                // and a plain-HTTP origin cannot have `Secure`: `Lax` keeps the cookie.
                attrs.push(format!("{name}=Lax"));
                continue;
            }
            if name.eq_ignore_ascii_case("path") {
                if let Some(p) = value.and_then(|p| self.map_cookie_path(p)) {
                    attrs.push(format!("{name}={p}"));
                    continue;
                }
            }
            attrs.push(attr.to_owned());
        }
        if let Some(d) = &self.cookie_domain {
            let at = domain_at.unwrap_or(attrs.len());
            attrs.insert(at, format!("Domain={d}"));
        }
        let mut out = name_value.to_owned();
        for a in attrs {
            out.push_str("; ");
            out.push_str(&a);
        }
        out
    }

    /// `Some(new path)` for a cookie `Path` that addresses Kratos endpoints; `None` = keep.
    fn map_cookie_path(&self, path: &str) -> Option<String> {
        if path == "/" || !path.starts_with('/') {
            return None;
        }
        let rest = if self.kratos_base_path.is_empty() {
            const KRATOS_ROUTES: [&str; 4] =
                ["/self-service", "/sessions", "/schemas", "/.well-known/ory"];
            let is_kratos = KRATOS_ROUTES.iter().any(|r| {
                path.strip_prefix(r)
                    .is_some_and(|t| t.is_empty() || t.starts_with('/'))
            });
            if !is_kratos {
                return None;
            }
            path
        } else {
            let r = path.strip_prefix(self.kratos_base_path.as_str())?;
            if !(r.is_empty() || r.starts_with('/')) {
                return None;
            }
            r
        };
        let mapped = match (self.prefix.is_empty(), rest.is_empty()) {
            (true, true) => "/".to_owned(),
            _ => format!("{}{}", self.prefix, rest),
        };
        (mapped != path).then_some(mapped)
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
mod tests {
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
    fn identity_rewriter_changes_nothing() {
        let r = Rewriter::new(&settings_with("http://k:1/", "http://k:1", ""));
        assert_eq!(r.rewrite_body(b"http://k:1/x"), None);
        assert_eq!(r.rewrite_location("http://k:1/x"), None);
    }

    #[test]
    fn set_cookie_domain_secure_path() {
        let r = rw(); // https public, cookie_domain example.com
        assert_eq!(
            r.rewrite_set_cookie("ory_kratos_session=MTY4; Path=/; Domain=127.0.0.1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Max-Age=86400; HttpOnly; Secure; SameSite=Lax"),
            "ory_kratos_session=MTY4; Path=/; Domain=example.com; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Max-Age=86400; HttpOnly; Secure; SameSite=Lax"
        );
        // no Domain: added
        assert_eq!(
            r.rewrite_set_cookie("csrf_token_806060ca5bf70dff3caa0e5c860002aade9d470a5a4dce73bcfa7ba10778f481=aGk=; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"),
            "csrf_token_806060ca5bf70dff3caa0e5c860002aade9d470a5a4dce73bcfa7ba10778f481=aGk=; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax; Domain=example.com"
        );
        // Kratos endpoints' paths move under the prefix
        assert_eq!(
            r.rewrite_set_cookie("ory_kratos_continuity=x; path=/self-service/methods/oidc; httponly"),
            "ory_kratos_continuity=x; path=/.ory/self-service/methods/oidc; httponly; Domain=example.com"
        );
        // application paths are kept
        assert_eq!(
            r.rewrite_set_cookie("ory_kratos_session=x; Path=/app; domain=.127.0.0.1; secure"),
            "ory_kratos_session=x; Path=/app; Domain=example.com; secure"
        );

        // http public, host-only cookies
        let r = Rewriter::new(&settings_with(
            "http://127.0.0.1:4433/",
            "http://localhost:8080",
            "/.ory",
        ));
        assert_eq!(
            r.rewrite_set_cookie(
                "ory_kratos_session=v; Path=/; Domain=127.0.0.1; HttpOnly; Secure; SameSite=Lax"
            ),
            "ory_kratos_session=v; Path=/; HttpOnly; SameSite=Lax"
        );
        // SameSite=None cannot live without Secure: Lax on a plain-HTTP origin
        assert_eq!(
            r.rewrite_set_cookie(
                "ory_kratos_continuity=c; Path=/; HttpOnly; Secure; SameSite=None"
            ),
            "ory_kratos_continuity=c; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            r.rewrite_set_cookie("csrf_token_x=c; Path=/; samesite=none"),
            "csrf_token_x=c; Path=/; samesite=Lax"
        );
        // deletion cookie keeps its expiry
        assert_eq!(
            r.rewrite_set_cookie("ory_kratos_session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly; SameSite=Lax"),
            "ory_kratos_session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly; SameSite=Lax"
        );
        // nothing to do
        assert_eq!(r.rewrite_set_cookie("a=b"), "a=b");

        // Kratos under a base path
        let r = Rewriter::new(&settings_with("http://k:1/base/", "https://a.com", "/auth"));
        assert_eq!(r.rewrite_set_cookie("c=1; Path=/base"), "c=1; Path=/auth");
        assert_eq!(
            r.rewrite_set_cookie("c=1; Path=/base/self-service"),
            "c=1; Path=/auth/self-service"
        );
        assert_eq!(r.rewrite_set_cookie("c=1; Path=/"), "c=1; Path=/");
        assert_eq!(
            r.rewrite_set_cookie("c=1; Path=/basement"),
            "c=1; Path=/basement"
        );
        let r = Rewriter::new(&settings_with("http://k:1/base/", "https://a.com", ""));
        assert_eq!(r.rewrite_set_cookie("c=1; Path=/base"), "c=1; Path=/");
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
}
