//! Identity headers: what the upstream learns about the caller, and the guarantee that the client
//! cannot set any of it.
//!
//! Every configured identity header name (of any route) and every header starting with
//! [`RESERVED_PREFIX`] is deleted from every client request, on every route, before the proxy sets its
//! own values. The values come from templates: a dotted path into the session JSON
//! (`identity.traits.email`, `identity.verifiable_addresses.0.value`).
//!
//! - [`keys`]: the signing keys of `[identity_token]` (PEM files) and the JWKS that publishes them.
//! - [`token`]: signed identity tokens (JWTs) and their cache.

pub mod keys;
pub mod token;

use std::borrow::Cow;

use http::{HeaderName, HeaderValue};
use serde_json::Value;

/// Headers starting with this prefix belong to sessiongate; clients never get to send them upstream.
pub const RESERVED_PREFIX: &str = "x-sessiongate-";

/// Headers that can never be identity headers: they carry framing, routing or credentials.
const FORBIDDEN: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "cookie",
    "authorization",
    "x-session-token",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
];

/// One configured identity header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    pub name: HeaderName,
    pub template: Template,
    /// Index of the template in `Config::session_paths`, i.e. of its value in `Session::values`.
    pub slot: usize,
}

/// A path into the session JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    /// A numeric segment: an array index, or an object key made of digits.
    Index(usize, String),
}

impl Template {
    /// Parses `identity.traits.email`. Segments are non-empty; digits index arrays.
    pub fn parse(path: &str) -> Result<Template, String> {
        if path.is_empty() {
            return Err("the session path is empty".into());
        }
        let mut segments = Vec::new();
        for seg in path.split('.') {
            if seg.is_empty() {
                return Err(format!("`{path}` has an empty segment"));
            }
            if seg.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(format!("`{path}` has a space or control character"));
            }
            segments.push(match seg.parse::<usize>() {
                Ok(i) => Segment::Index(i, seg.to_string()),
                Err(_) => Segment::Key(seg.to_string()),
            });
        }
        Ok(Template { segments })
    }

    /// The JSON value at this path, if present and not null.
    pub fn lookup<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        let mut cur = root;
        for seg in &self.segments {
            cur = match (seg, cur) {
                (Segment::Key(k), Value::Object(m)) => m.get(k)?,
                (Segment::Index(_, k), Value::Object(m)) => m.get(k)?,
                (Segment::Index(i, _), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        (!cur.is_null()).then_some(cur)
    }

    /// The header value for this path: strings as they are, anything else as compact JSON. `None` when
    /// the path is missing, or when the value holds a control character (never sent).
    pub fn render(&self, root: &Value) -> Option<HeaderValue> {
        let v = self.lookup(root)?;
        let text = match v {
            Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
            other => std::borrow::Cow::Owned(serde_json::to_string(other).ok()?),
        };
        header_value(&text)
    }
}

/// `text` as an identity header value: `None` when it holds a control character (tab included),
/// which is never sent. Every identity header value passes here: rendered from a whoami answer or
/// read back from the shared cache.
pub fn header_value(text: &str) -> Option<HeaderValue> {
    if text.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

/// Validates a configured identity header name.
pub fn parse_header_name(name: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    if FORBIDDEN.contains(&header.as_str()) {
        return Err(format!(
            "`{name}` carries framing, routing or credentials and cannot be an identity header"
        ));
    }
    Ok(header)
}

/// Whether a client-sent header must be removed before the request goes upstream. Names are compared
/// with `_` read as `-`: CGI, PHP and WSGI backends (Django, Flask) read `X_User_Id` as `X-User-Id`.
pub fn is_stripped(name: &HeaderName, configured: &[HeaderName]) -> bool {
    is_stripped_dashed(&dashed(name), configured)
}

/// [`is_stripped`] for a name already read through [`dashed`] (the proxy reads each client header
/// name once for this and for `forwarding::untrusted_only_dashed`).
pub fn is_stripped_dashed(name: &str, configured: &[HeaderName]) -> bool {
    name.starts_with(RESERVED_PREFIX) || configured.iter().any(|c| c.as_str() == name)
}

/// The name with `_` read as `-` (a copy only when it has any).
pub fn dashed(name: &HeaderName) -> Cow<'_, str> {
    let n = name.as_str();
    if n.contains('_') {
        Cow::Owned(n.replace('_', "-"))
    } else {
        Cow::Borrowed(n)
    }
}

/// The identity headers of one route, from a session's values rendered at validation time.
pub fn render_all(
    headers: &[IdentityHeader],
    values: &[Option<HeaderValue>],
) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter_map(|h| {
            let v = values.get(h.slot)?.as_ref()?;
            Some((h.name.clone(), v.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session() -> Value {
        json!({
            "id": "s-1",
            "identity": {
                "id": "i-1",
                "traits": {"email": "a@example.com", "age": 42, "name": {"first": "A"}, "evil": "x\r\nSet-Cookie: y", "tab": "a\tb", "null": null},
                "verifiable_addresses": [{"value": "a@example.com"}]
            }
        })
    }

    fn render(path: &str) -> Option<String> {
        Template::parse(path)
            .expect("valid template")
            .render(&session())
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    #[test]
    fn strings_numbers_objects_and_indexes() {
        assert_eq!(
            render("identity.traits.email").as_deref(),
            Some("a@example.com")
        );
        assert_eq!(render("identity.traits.age").as_deref(), Some("42"));
        assert_eq!(
            render("identity.traits.name").as_deref(),
            Some(r#"{"first":"A"}"#)
        );
        assert_eq!(
            render("identity.verifiable_addresses.0.value").as_deref(),
            Some("a@example.com")
        );
        assert_eq!(render("id").as_deref(), Some("s-1"));
    }

    #[test]
    fn missing_null_and_control_characters_are_absent() {
        assert_eq!(render("identity.traits.phone"), None);
        assert_eq!(render("identity.traits.null"), None);
        assert_eq!(render("identity.verifiable_addresses.7.value"), None);
        assert_eq!(render("identity.traits.email.x"), None);
        assert_eq!(render("identity.traits.evil"), None);
        assert_eq!(render("identity.traits.tab"), None);
    }

    #[test]
    fn bad_templates_and_names_are_refused() {
        assert!(Template::parse("").is_err());
        assert!(Template::parse("identity..id").is_err());
        assert!(Template::parse("identity. id").is_err());
        assert!(parse_header_name("X-User-Id").is_ok());
        assert!(parse_header_name("Bad Header").is_err());
        assert!(parse_header_name("Cookie").is_err());
        assert!(parse_header_name("x-forwarded-for").is_err());
    }

    #[test]
    fn reserved_prefix_and_configured_names_are_stripped() {
        let configured = vec![HeaderName::from_static("x-user-id")];
        assert!(is_stripped(
            &HeaderName::from_static("x-user-id"),
            &configured
        ));
        assert!(is_stripped(
            &HeaderName::from_static("x-sessiongate-anything"),
            &configured
        ));
        assert!(!is_stripped(
            &HeaderName::from_static("x-user"),
            &configured
        ));
        // CGI/WSGI backends read `_` as `-`.
        assert!(is_stripped(
            &HeaderName::from_static("x_user_id"),
            &configured
        ));
        assert!(is_stripped(
            &HeaderName::from_static("x_sessiongate_aal"),
            &configured
        ));
    }
}
