//! `[identity_token]` (the signing keys, read and parsed here, at load time) and the token keys of
//! one route (`identity_token`, `identity_token_header`, `identity_token_audience`,
//! `[routes.identity_token_claims]`). A key file that cannot be read or is not a usable key is an
//! issue at `identity_token.signing_keys[i]` naming the file, never showing its content.

use std::time::Duration;

use http::HeaderName;

use super::validate::Issues;
use crate::config::schema::{AuthMode, RawIdentityToken, RawRoute};
use crate::config::types::IdentityTokenConfig;
use crate::identity::keys::SigningKey;
use crate::identity::token::{RouteToken, TokenClaim, REGISTERED_CLAIMS};
use crate::identity::Template;

/// The default `identity_token_header`.
pub const DEFAULT_HEADER: &str = "x-identity-token";

/// The longest `identity_token.ttl`: a token outlives a purge of its session by up to this long.
const MAX_TTL: Duration = Duration::from_secs(3600);

/// Validates `[identity_token]` and reads its key files; `None` when absent or invalid.
pub(super) fn issuer(
    raw: Option<&RawIdentityToken>,
    issues: &mut Issues,
) -> Option<IdentityTokenConfig> {
    let raw = raw?;
    let before = issues.count();
    if raw.signing_keys.is_empty() {
        issues.push(
            "identity_token.signing_keys",
            "at least one key file is required",
        );
    }
    let mut keys: Vec<SigningKey> = Vec::new();
    for (i, path) in raw.signing_keys.iter().enumerate() {
        let key = format!("identity_token.signing_keys[{i}]");
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) => {
                issues.push(key, format!("cannot read `{path}`: {e}"));
                continue;
            }
        };
        match SigningKey::from_pem(&pem) {
            Ok(k) if keys.iter().any(|o| o.kid == k.kid) => issues.push(
                key,
                format!("`{path}` holds the same key as an earlier entry"),
            ),
            Ok(k) => keys.push(k),
            Err(e) => issues.push(key, format!("`{path}`: {e}")),
        }
    }
    if raw.issuer.trim().is_empty() || raw.issuer.bytes().any(|b| b.is_ascii_control()) {
        issues.push(
            "identity_token.issuer",
            "must be a non-empty name without control characters",
        );
    }
    if raw.ttl < Duration::from_secs(1) || raw.ttl > MAX_TTL || raw.ttl.subsec_nanos() != 0 {
        issues.push("identity_token.ttl", "must be whole seconds, from 1s to 1h");
    }
    if let Some(p) = &raw.jwks_path {
        let canonical = crate::path::canonicalize_path(p).ok();
        if !p.starts_with('/') || p.contains('?') || canonical.as_deref() != Some(p.as_str()) {
            issues.push(
                "identity_token.jwks_path",
                format!("`{p}` is not a canonical path (\"/.well-known/jwks.json\")"),
            );
        }
    }
    (issues.count() == before).then(|| IdentityTokenConfig {
        issuer: raw.issuer.clone(),
        ttl: raw.ttl,
        keys,
        jwks_path: raw.jwks_path.clone(),
    })
}

/// Validates route `i`'s token keys. Claim slots are left at 0: the caller numbers them across
/// routes, with the identity headers'.
pub(super) fn route_token(
    i: usize,
    r: &RawRoute,
    auth: AuthMode,
    have_section: bool,
    issues: &mut Issues,
) -> Option<RouteToken> {
    let key = |k: &str| format!("routes[{i}].{k}");
    if !r.identity_token {
        for (set, k) in [
            (r.identity_token_header.is_some(), "identity_token_header"),
            (
                r.identity_token_audience.is_some(),
                "identity_token_audience",
            ),
            (!r.identity_token_claims.is_empty(), "identity_token_claims"),
        ] {
            if set {
                issues.push(key(k), "has no effect without `identity_token = true`");
            }
        }
        return None;
    }
    if auth == AuthMode::Anonymous {
        issues.push(
            key("identity_token"),
            "an `anonymous` route never has a session to sign",
        );
    }
    if !have_section {
        issues.push(
            key("identity_token"),
            "needs an [identity_token] section (signing keys, issuer)",
        );
    }
    let header = match r.identity_token_header.as_deref() {
        None => HeaderName::from_static(DEFAULT_HEADER),
        Some(name) => match crate::identity::parse_header_name(name) {
            Ok(h) => h,
            Err(e) => {
                issues.push(key("identity_token_header"), e);
                HeaderName::from_static(DEFAULT_HEADER)
            }
        },
    };
    if r.identity_headers
        .keys()
        .any(|n| n.eq_ignore_ascii_case(header.as_str()))
    {
        issues.push(
            key("identity_token_header"),
            format!("`{header}` is also an identity header"),
        );
    }
    if let Some(aud) = &r.identity_token_audience {
        if aud.is_empty() || aud.bytes().any(|b| b.is_ascii_control()) {
            issues.push(
                key("identity_token_audience"),
                "must be non-empty, without control characters",
            );
        }
    }
    let mut claims = Vec::new();
    for (name, path) in &r.identity_token_claims {
        let ckey = format!("routes[{i}].identity_token_claims.\"{name}\"");
        if name.is_empty() || REGISTERED_CLAIMS.contains(&name.as_str()) {
            issues.push(ckey, format!("`{name}` is set by sessiongate itself"));
            continue;
        }
        match Template::parse(path) {
            Ok(template) => claims.push(TokenClaim {
                name: name.clone(),
                template,
                slot: 0,
            }),
            Err(e) => issues.push(ckey, e),
        }
    }
    Some(RouteToken {
        header,
        audience: r.identity_token_audience.clone(),
        claims,
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use crate::config::from_str;

    /// A valid `[identity_token]` with a fixed Ed25519 test key (not a secret) written to a file.
    fn section() -> String {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&[7u8; 32]);
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        let path = std::env::temp_dir().join(format!("sg-idtoken-unit-{}.pem", std::process::id()));
        std::fs::write(&path, pem).expect("write test key");
        format!(
            "[identity_token]\nsigning_keys = [{:?}]\nissuer = \"gate\"\n",
            path.display().to_string()
        )
    }

    fn issues(section: &str, route: &str) -> String {
        let text = format!(
            "[kratos]\npublic_url = \"http://127.0.0.1:4433\"\n{section}\n[[routes]]\nname = \"r\"\n\
             path_prefix = \"/\"\nupstream = \"http://127.0.0.1:3000\"\n{route}"
        );
        match from_str(&text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn route_keys_are_checked() {
        let s = section();
        assert_eq!(
            issues(&s, "auth = \"session\"\nidentity_token = true\n"),
            ""
        );
        let e = issues("", "auth = \"session\"\nidentity_token = true\n");
        assert!(
            e.contains("routes[0].identity_token: needs an [identity_token]"),
            "{e}"
        );
        let e = issues(&s, "auth = \"anonymous\"\nidentity_token = true\n");
        assert!(
            e.contains("routes[0].identity_token: an `anonymous` route"),
            "{e}"
        );
        let e = issues(&s, "auth = \"session\"\nidentity_token_audience = \"x\"\n");
        assert!(
            e.contains("routes[0].identity_token_audience: has no effect"),
            "{e}"
        );
        let e = issues(
            &s,
            "auth = \"session\"\nidentity_token = true\nidentity_token_header = \"Cookie\"\n",
        );
        assert!(e.contains("routes[0].identity_token_header"), "{e}");
        let e = issues(
            &s,
            "auth = \"session\"\nidentity_token = true\n[routes.identity_token_claims]\nsub = \"id\"\n",
        );
        assert!(e.contains("routes[0].identity_token_claims.\"sub\""), "{e}");
        let e = issues(
            &s.replace("issuer = \"gate\"", "issuer = \"\""),
            "auth = \"session\"\n",
        );
        assert!(e.contains("identity_token.issuer"), "{e}");
        let e = issues(&format!("{s}ttl = \"1500ms\"\n"), "auth = \"session\"\n");
        assert!(e.contains("identity_token.ttl"), "{e}");
        let e = issues(
            &format!("{s}jwks_path = \"/a/../jwks\"\n"),
            "auth = \"session\"\n",
        );
        assert!(e.contains("identity_token.jwks_path"), "{e}");
        let ok = issues(
            &format!("{s}jwks_path = \"/.well-known/jwks.json\"\n"),
            "auth = \"session\"\n",
        );
        assert_eq!(ok, "");
    }

    #[test]
    fn the_token_header_is_stripped_and_claims_get_session_slots() {
        let s = section();
        let text = format!(
            "[kratos]\npublic_url = \"http://127.0.0.1:4433\"\n{s}\n[[routes]]\nname = \"r\"\n\
             path_prefix = \"/\"\nupstream = \"http://127.0.0.1:3000\"\nauth = \"session\"\n\
             identity_token = true\nidentity_token_header = \"X-Jwt\"\n\
             [routes.identity_token_claims]\nemail = \"identity.traits.email\"\n"
        );
        let cfg = from_str(&text).expect("valid");
        assert!(cfg.identity_header_names.iter().any(|h| h == "x-jwt"));
        let t = cfg.routes[0].identity_token.as_ref().expect("route token");
        assert_eq!(cfg.session_paths[t.claims[0].slot], t.claims[0].template);
        assert!(cfg.identity_token.is_some());
    }
}
