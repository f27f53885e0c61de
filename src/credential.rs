//! Extracting the Kratos session credential from a request, following Kratos's own precedence:
//! a non-empty `X-Session-Token` wins and nothing else is looked at; else the session cookie; else
//! `Authorization: Bearer <token>` (scheme case-insensitive, exactly two parts).
//!
//! Exactly the credential chosen here is sent to whoami, and the cache is keyed on it, so what was
//! validated is what was cached. One refinement, measured against real Kratos v1.3.1
//! (`session/manager_http.go`, `extractToken`): when the session cookie cannot be decoded Kratos
//! falls back to `Authorization: Bearer`. sessiongate cannot decode Kratos's cookies, so a cookie
//! that arrives next to a Bearer token is sent to whoami *with* that token ([`Credential::bearer`]),
//! Kratos applies its own rule, and such answers are never cached (see `session::store`).

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// Which of Kratos's three carriers held the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    Token,
    Cookie,
    Bearer,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Token => "token",
            CredentialKind::Cookie => "cookie",
            CredentialKind::Bearer => "bearer",
        }
    }

    fn tag(self) -> u8 {
        match self {
            CredentialKind::Token => 1,
            CredentialKind::Cookie => 2,
            CredentialKind::Bearer => 3,
        }
    }
}

/// A credential borrowed from the request headers. Its `Debug` never shows the value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credential<'a> {
    pub kind: CredentialKind,
    pub value: &'a str,
    /// With a [`CredentialKind::Cookie`]: the request's well-formed `Authorization: Bearer` token,
    /// which Kratos uses when it cannot decode the cookie. Part of the cache key.
    pub bearer: Option<&'a str>,
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential({}, <{} bytes>)",
            self.kind.as_str(),
            self.value.len()
        )
    }
}

/// A cache key: SHA-256 of (kind, value). Never the raw credential, never a part of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CacheKey({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl<'a> Credential<'a> {
    /// A credential of one carrier alone.
    pub fn new(kind: CredentialKind, value: &'a str) -> Credential<'a> {
        Credential {
            kind,
            value,
            bearer: None,
        }
    }

    pub fn cache_key(&self) -> CacheKey {
        let mut h = Sha256::new();
        h.update([self.kind.tag()]);
        h.update(self.value.as_bytes());
        if let Some(b) = self.bearer {
            // A separator no credential byte can be (control characters are refused).
            h.update([0u8, CredentialKind::Bearer.tag()]);
            h.update(b.as_bytes());
        }
        CacheKey(h.finalize().into())
    }

    /// Whether Kratos's answer for this credential may be cached: not for a cookie sent with a
    /// Bearer fallback, because which of the two Kratos used is not visible in its answer.
    pub fn cacheable(&self) -> bool {
        self.bearer.is_none()
    }

    /// An owned copy for the whoami call.
    pub fn to_owned(&self) -> OwnedCredential {
        OwnedCredential {
            kind: self.kind,
            value: self.value.to_string(),
            bearer: self.bearer.map(str::to_string),
        }
    }
}

/// An owned credential (moved into the background whoami task). `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct OwnedCredential {
    pub kind: CredentialKind,
    pub value: String,
    /// See [`Credential::bearer`].
    pub bearer: Option<String>,
}

impl std::fmt::Debug for OwnedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential({}, <{} bytes>)",
            self.kind.as_str(),
            self.value.len()
        )
    }
}

/// Why a request's credential headers cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// More than one `X-Session-Token` header: which one Kratos would read is an accident.
    #[error("more than one X-Session-Token header")]
    DuplicateToken,
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    /// The chosen credential is not something Kratos could accept (not UTF-8, whitespace, control
    /// characters): it is rejected as Kratos would, without asking Kratos.
    #[error("malformed credential")]
    Malformed,
}

const X_SESSION_TOKEN: &str = "x-session-token";

/// Finds the credential Kratos would use, or `None` when the request carries none.
pub fn extract<'a>(
    headers: &'a HeaderMap,
    cookie_name: &str,
) -> Result<Option<Credential<'a>>, CredentialError> {
    let mut tokens = headers.get_all(X_SESSION_TOKEN).iter();
    if let Some(first) = tokens.next() {
        if tokens.next().is_some() {
            return Err(CredentialError::DuplicateToken);
        }
        let v = first.to_str().map_err(|_| CredentialError::Malformed)?;
        if !v.trim().is_empty() {
            return well_formed(CredentialKind::Token, v).map(Some);
        }
    }
    for cookie_header in headers.get_all(COOKIE) {
        let Ok(line) = cookie_header.to_str() else {
            continue;
        };
        if let Some(v) = find_cookie(line, cookie_name) {
            if !v.is_empty() {
                let mut cookie = well_formed(CredentialKind::Cookie, v)?;
                // Only a usable Bearer is a fallback; anything else leaves the cookie alone, as
                // it did before the fallback existed.
                cookie.bearer = bearer(headers).ok().flatten().map(|b| b.value);
                return Ok(Some(cookie));
            }
        }
    }
    bearer(headers)
}

/// The `Authorization: Bearer <token>` credential, if the request has a well-formed one.
fn bearer(headers: &HeaderMap) -> Result<Option<Credential<'_>>, CredentialError> {
    let mut auths = headers.get_all(AUTHORIZATION).iter();
    if let Some(first) = auths.next() {
        if auths.next().is_some() {
            return Err(CredentialError::DuplicateAuthorization);
        }
        let Ok(v) = first.to_str() else {
            return Ok(None);
        };
        let mut parts = v.split(' ');
        if let (Some(scheme), Some(token), None) = (parts.next(), parts.next(), parts.next()) {
            if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
                return well_formed(CredentialKind::Bearer, token).map(Some);
            }
        }
    }
    Ok(None)
}

fn well_formed(kind: CredentialKind, value: &str) -> Result<Credential<'_>, CredentialError> {
    if value
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b >= 0x80)
    {
        return Err(CredentialError::Malformed);
    }
    Ok(Credential::new(kind, value))
}

/// The value of the first cookie called `name` in one `Cookie` header line, read with the
/// `cookie` crate: pairs are cut at `;`, name and value trimmed, a pair without `=` or with an
/// empty name skipped, nothing percent-decoded. The value is a slice of `line`, with any `"`
/// at either end removed (all of them, paired or not, as before the crate read it).
pub fn find_cookie<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    cookie::Cookie::split_parse(line)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)?
        .value_raw()
        .map(|v| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn got(pairs: &[(&str, &str)]) -> Result<Option<(CredentialKind, String)>, CredentialError> {
        let h = headers(pairs);
        extract(&h, "ory_kratos_session").map(|c| c.map(|c| (c.kind, c.value.to_string())))
    }

    #[test]
    fn precedence_follows_kratos() {
        let all = [
            ("X-Session-Token", "tok"),
            ("Cookie", "a=b; ory_kratos_session=cook"),
            ("Authorization", "Bearer bear"),
        ];
        assert_eq!(got(&all), Ok(Some((CredentialKind::Token, "tok".into()))));
        assert_eq!(
            got(&all[1..]),
            Ok(Some((CredentialKind::Cookie, "cook".into())))
        );
        assert_eq!(
            got(&all[2..]),
            Ok(Some((CredentialKind::Bearer, "bear".into())))
        );
        // An empty token is "no token": the cookie is used.
        assert_eq!(
            got(&[("X-Session-Token", ""), all[1]]),
            Ok(Some((CredentialKind::Cookie, "cook".into())))
        );
    }

    #[test]
    fn a_cookie_carries_the_bearer_kratos_falls_back_to() {
        let h = headers(&[
            ("Cookie", "ory_kratos_session=cook"),
            ("Authorization", "Bearer bear"),
        ]);
        let c = extract(&h, "ory_kratos_session").unwrap().unwrap();
        assert_eq!(
            (c.kind, c.value, c.bearer),
            (CredentialKind::Cookie, "cook", Some("bear"))
        );
        assert!(!c.cacheable());
        assert_ne!(
            c.cache_key(),
            Credential::new(CredentialKind::Cookie, "cook").cache_key()
        );
        assert_eq!(c.to_owned().bearer.as_deref(), Some("bear"));
        // a token wins outright; a malformed or non-Bearer Authorization is no fallback
        let t = headers(&[("X-Session-Token", "tok"), ("Authorization", "Bearer bear")]);
        assert_eq!(
            extract(&t, "ory_kratos_session").unwrap().unwrap().bearer,
            None
        );
        let basic = headers(&[
            ("Cookie", "ory_kratos_session=cook"),
            ("Authorization", "Basic x"),
        ]);
        let c = extract(&basic, "ory_kratos_session").unwrap().unwrap();
        assert_eq!(c.bearer, None);
        assert!(c.cacheable());
        // two Authorization headers next to a cookie: the cookie alone, as Kratos reads it
        let two = headers(&[
            ("Cookie", "ory_kratos_session=cook"),
            ("Authorization", "Bearer a"),
            ("Authorization", "Bearer b"),
        ]);
        let c = extract(&two, "ory_kratos_session").unwrap().unwrap();
        assert_eq!((c.value, c.bearer), ("cook", None));
    }

    #[test]
    fn bearer_rules() {
        assert_eq!(
            got(&[("Authorization", "bEaReR t")]),
            Ok(Some((CredentialKind::Bearer, "t".into())))
        );
        assert_eq!(got(&[("Authorization", "Bearer a b")]), Ok(None));
        assert_eq!(got(&[("Authorization", "Bearer")]), Ok(None));
        assert_eq!(got(&[("Authorization", "Basic dXNlcjpwYXNz")]), Ok(None));
        assert_eq!(got(&[("Authorization", "Bearer  t")]), Ok(None));
    }

    #[test]
    fn ambiguity_and_malformed_values_are_errors() {
        assert_eq!(
            got(&[("X-Session-Token", "a"), ("X-Session-Token", "b")]),
            Err(CredentialError::DuplicateToken)
        );
        assert_eq!(
            got(&[("X-Session-Token", "a b")]),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            got(&[("X-Session-Token", "a\tb")]),
            Err(CredentialError::Malformed)
        );
    }

    #[test]
    fn cookies() {
        assert_eq!(
            find_cookie("a=1; ory_kratos_session=x; b=2", "ory_kratos_session"),
            Some("x")
        );
        assert_eq!(
            find_cookie("ory_kratos_session_other=x", "ory_kratos_session"),
            None
        );
        assert_eq!(
            find_cookie(
                "ory_kratos_session=first; ory_kratos_session=second",
                "ory_kratos_session"
            ),
            Some("first")
        );
        assert_eq!(
            got(&[("Cookie", "a=1"), ("Cookie", "ory_kratos_session=y")]),
            Ok(Some((CredentialKind::Cookie, "y".into())))
        );
    }

    #[test]
    fn cookie_values_pass_byte_for_byte() {
        const N: &str = "ory_kratos_session";
        // nothing is percent-decoded; `=` and `/` inside the value stay
        assert_eq!(
            find_cookie("a=1; ory_kratos_session=MTY4%2Fab+c/d==; b", N),
            Some("MTY4%2Fab+c/d==")
        );
        // pairs without `=`, with an empty name, or empty ones are skipped
        assert_eq!(
            find_cookie(";; garbage ; =x; ory_kratos_session = v ;", N),
            Some("v")
        );
        // quotes at either end go, paired or not; inner ones stay
        assert_eq!(find_cookie("ory_kratos_session=\"v\"", N), Some("v"));
        assert_eq!(find_cookie("ory_kratos_session=\"v", N), Some("v"));
        assert_eq!(find_cookie("ory_kratos_session=a\"b", N), Some("a\"b"));
        // the first of the name decides, even when it is empty: the line has no session cookie
        assert_eq!(
            find_cookie("ory_kratos_session=; ory_kratos_session=x", N),
            Some("")
        );
        assert_eq!(
            got(&[("Cookie", "ory_kratos_session=; ory_kratos_session=x")]),
            Ok(None)
        );
        // a value Kratos could not have set is refused, not cut
        assert_eq!(
            got(&[("Cookie", "ory_kratos_session=a b")]),
            Err(CredentialError::Malformed)
        );
    }

    #[test]
    fn cache_key_depends_on_kind_and_whole_value_and_hides_it() {
        let a = Credential::new(CredentialKind::Token, "secret-token-1");
        let b = Credential::new(CredentialKind::Bearer, "secret-token-1");
        let c = Credential::new(CredentialKind::Token, "secret-token-2");
        assert_ne!(a.cache_key(), b.cache_key());
        assert_ne!(a.cache_key(), c.cache_key());
        assert_eq!(a.cache_key(), a.cache_key());
        assert!(!format!("{a:?} {:?}", a.cache_key()).contains("secret"));
    }
}
