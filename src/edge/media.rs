//! Which bodies the edge reads: the media type of a `Content-Type` header, parsed with the
//! `mime` crate and compared by type, subtype and `+suffix` (case-insensitive).
//!
//! | `Content-Type` | [`Media`] |
//! |---|---|
//! | `application/json`, `application/problem+json`, `Application/JSON; charset=UTF-8` | JSON, textual |
//! | `application/x-www-form-urlencoded` (parameters allowed) | form |
//! | `text/html`, `text/plain`, any `text/*` | textual |
//! | `application/xhtml+xml` | textual |
//! | missing, not UTF-8, garbage (`json`, `application/`, `application/json, text/html`) | nothing |
//!
//! Only the part before the first `;` is parsed. Parameters (`charset`, `boundary`) never change
//! what a body is, and the crate refuses some spellings that Kratos's own parser (Go's
//! `mime.ParseMediaType`) accepts, e.g. `application/json ; charset=utf-8` with a space before
//! the `;`: such a JSON body must still be recognised, or its `return_to` would go unchecked.

use http::HeaderValue;
use mime::Mime;

/// What a `Content-Type` says about a body, as far as the edge cares. The default (no header,
/// garbage) is none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Media {
    /// JSON: subtype `json` or suffix `+json` (`application/json`, `application/problem+json`).
    pub json: bool,
    /// An HTML form: `application/x-www-form-urlencoded`.
    pub form: bool,
    /// Text the rewriter may edit: JSON, any `text/*`, or `application/xhtml+xml`.
    pub textual: bool,
}

impl Media {
    /// Reads a `Content-Type` header value (`None` = no header).
    pub fn of(content_type: Option<&HeaderValue>) -> Media {
        content_type
            .and_then(|v| v.to_str().ok())
            .map_or_else(Media::default, Media::parse)
    }

    /// Reads a `Content-Type` value as text.
    pub fn parse(content_type: &str) -> Media {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let Ok(m) = essence.parse::<Mime>() else {
            return Media::default();
        };
        let json = m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json");
        let form = m.type_() == "application" && m.subtype() == "x-www-form-urlencoded";
        let textual =
            json || m.type_() == "text" || (m.type_() == "application" && m.subtype() == "xhtml");
        Media {
            json,
            form,
            textual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Media = Media {
        json: true,
        form: false,
        textual: true,
    };
    const FORM: Media = Media {
        json: false,
        form: true,
        textual: false,
    };
    const TEXT: Media = Media {
        json: false,
        form: false,
        textual: true,
    };
    const NONE: Media = Media {
        json: false,
        form: false,
        textual: false,
    };

    #[test]
    fn json_by_subtype_or_suffix_in_any_case_with_parameters() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json ; charset=utf-8",
            " application/json ",
            "Application/JSON",
            "APPLICATION/JSON; CHARSET=UTF-8",
            "application/problem+json",
            "application/problem+json; charset=utf-8",
            "application/vnd.api+JSON",
            "application/json;",
        ] {
            assert_eq!(Media::parse(ct), JSON, "{ct}");
        }
    }

    #[test]
    fn forms_and_text() {
        for ct in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8",
        ] {
            assert_eq!(Media::parse(ct), FORM, "{ct}");
        }
        for ct in [
            "text/html",
            "text/html; charset=utf-8",
            "TEXT/HTML",
            "text/plain",
            "text/css",
            "application/xhtml+xml",
        ] {
            assert_eq!(Media::parse(ct), TEXT, "{ct}");
        }
    }

    #[test]
    fn other_types_and_garbage_are_nothing() {
        for ct in [
            "",
            "json",
            "application/",
            "/json",
            "application/octet-stream",
            "image/png",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "application/x-ndjson",
            "application/json-patch",
            "application/json, text/html",
            "application /json",
            "application/ json",
            "appli\u{e9}cation/json",
        ] {
            assert_eq!(Media::parse(ct), NONE, "{ct:?}");
        }
    }

    #[test]
    fn header_values() {
        assert_eq!(Media::of(None), NONE);
        let v = HeaderValue::from_static("application/json; charset=utf-8");
        assert_eq!(Media::of(Some(&v)), JSON);
        let not_utf8 = HeaderValue::from_bytes(b"application/json\xff").expect("opaque bytes");
        assert_eq!(Media::of(Some(&not_utf8)), NONE);
    }
}
