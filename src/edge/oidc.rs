//! Detecting an OIDC `redirect_uri` that does not point at the public origin.
//!
//! Kratos builds the provider callback as `base_redirect_uri` (default: `serve.public.base_url`)
//! followed by `/self-service/methods/oidc/callback/<provider>` and sends the **same** value again in its
//! token request, so the edge must never rewrite it (the provider would refuse the mismatch).
//! When Kratos does not know the public URL, the provider sends the browser straight to Kratos's
//! internal address, past the edge. The fix is Kratos configuration:
//! `selfservice.methods.oidc.config.base_redirect_uri = <public url + prefix>` (and registering
//! that callback at the provider). [`provider_redirect_mismatch`] recognises the situation in a
//! redirect to a provider (`303 Location`, or `redirect_browser_to` of a 422
//! `browser_location_change_required`); [`WarnOnce`] lets the proxy log it once per provider.

use std::collections::HashSet;
use std::sync::Mutex;

use url::Url;

use super::EdgeSettings;

/// The path Kratos's OIDC callback lives under.
pub const CALLBACK_PATH: &str = "/self-service/methods/oidc/callback/";

/// A provider redirect whose `redirect_uri` bypasses the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcMismatch {
    /// The provider id from `.../oidc/callback/<provider>`.
    pub provider: String,
    /// The `redirect_uri` Kratos sent to the provider (a URL, not a secret).
    pub redirect_uri: String,
    /// What it should start with: public base + [`CALLBACK_PATH`].
    pub expected_prefix: String,
}

impl OidcMismatch {
    /// The operator-facing explanation, for one warning log line.
    pub fn advice(&self) -> String {
        let base = self
            .expected_prefix
            .strip_suffix(CALLBACK_PATH)
            .unwrap_or(&self.expected_prefix);
        format!(
            "OIDC provider {:?} was given redirect_uri {} which does not go through the edge \
             (expected {}{}); set selfservice.methods.oidc.config.base_redirect_uri to {} in \
             Kratos's configuration and register that callback URL at the provider",
            self.provider, self.redirect_uri, self.expected_prefix, self.provider, base
        )
    }
}

/// Inspects a redirect target. `Some` when it is a URL on another origin than Kratos's (the public
/// one included: a provider may be served on the custom domain too, like Ory Hydra here), carrying
/// a `redirect_uri` query parameter that is a Kratos OIDC callback
/// (`.../self-service/methods/oidc/callback/<provider>`) not under the public base.
/// `None` for everything else (including a correct `redirect_uri`).
pub fn provider_redirect_mismatch(location: &str, settings: &EdgeSettings) -> Option<OidcMismatch> {
    let url = Url::parse(location).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let origin = url.origin();
    if origin == settings.kratos_origin.origin() {
        return None;
    }
    let redirect_uri = url
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())?;
    let at = redirect_uri.find(CALLBACK_PATH)?;
    let provider: String = redirect_uri[at + CALLBACK_PATH.len()..]
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned();
    if provider.is_empty() {
        return None;
    }
    let expected_prefix = format!("{}{}", settings.public_base, CALLBACK_PATH);
    if redirect_uri.starts_with(&expected_prefix) {
        return None;
    }
    Some(OidcMismatch {
        provider,
        redirect_uri,
        expected_prefix,
    })
}

/// Remembers which keys (provider ids) were already reported, so a warning is logged once per
/// provider and process (bounded: at most `cap` keys are remembered; beyond that nothing more
/// is reported, so a hostile stream of provider names cannot grow memory or flood the log).
#[derive(Debug)]
pub struct WarnOnce {
    seen: Mutex<HashSet<String>>,
    cap: usize,
}

impl Default for WarnOnce {
    fn default() -> Self {
        WarnOnce::new(64)
    }
}

impl WarnOnce {
    pub fn new(cap: usize) -> WarnOnce {
        WarnOnce {
            seen: Mutex::new(HashSet::new()),
            cap,
        }
    }

    /// `true` the first time `key` is seen (and the set is not full).
    pub fn first_time(&self, key: &str) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(key) || seen.len() >= self.cap {
            return false;
        }
        seen.insert(key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const GOOGLE_BAD: &str = "https://accounts.google.com/o/oauth2/v2/auth?client_id=abc&redirect_uri=http%3A%2F%2F127.0.0.1%3A4433%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fgoogle&response_type=code&scope=openid+email&state=xyz";

    #[test]
    fn detects_internal_redirect_uri() {
        let s = settings();
        let m = provider_redirect_mismatch(GOOGLE_BAD, &s).unwrap();
        assert_eq!(m.provider, "google");
        assert_eq!(
            m.redirect_uri,
            "http://127.0.0.1:4433/self-service/methods/oidc/callback/google"
        );
        assert_eq!(
            m.expected_prefix,
            "https://app.example.com/.ory/self-service/methods/oidc/callback/"
        );
        let advice = m.advice();
        assert!(advice.contains("base_redirect_uri to https://app.example.com/.ory "));
        assert!(advice.contains("\"google\""));
    }

    #[test]
    fn correct_or_unrelated_redirects_are_fine() {
        let s = settings();
        for loc in [
            "https://accounts.google.com/auth?redirect_uri=https%3A%2F%2Fapp.example.com%2F.ory%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fgoogle",
            "https://accounts.google.com/auth?client_id=x",
            "https://idp.example/auth?redirect_uri=https%3A%2F%2Fother.example%2Fcallback",
            "https://idp.example/auth?redirect_uri=http%3A%2F%2F127.0.0.1%3A4433%2Fself-service%2Fmethods%2Foidc%2Fcallback%2F",
            "http://127.0.0.1:4433/self-service/login?redirect_uri=http%3A%2F%2F127.0.0.1%3A4433%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fx",
            "myapp://callback?redirect_uri=http%3A%2F%2F127.0.0.1%3A4433%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fx",
            "/relative?redirect_uri=x",
            "not a url",
        ] {
            assert_eq!(provider_redirect_mismatch(loc, &s), None, "{loc}");
        }
    }

    #[test]
    fn a_provider_on_the_public_origin_is_checked_too() {
        // e.g. Ory Hydra / Ory OAuth2 served on the same custom domain as the edge
        let loc = "https://app.example.com/oauth2/auth?client_id=k&redirect_uri=http%3A%2F%2F127.0.0.1%3A4433%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fhydra&state=s";
        let m = provider_redirect_mismatch(loc, &settings()).unwrap();
        assert_eq!(m.provider, "hydra");
        let ok = "https://app.example.com/oauth2/auth?redirect_uri=https%3A%2F%2Fapp.example.com%2F.ory%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fhydra";
        assert_eq!(provider_redirect_mismatch(ok, &settings()), None);
    }

    #[test]
    fn root_mount_and_other_hosts() {
        let s = settings_with("http://kratos:4433/", "https://auth.example.com", "");
        let loc = "https://github.com/login/oauth/authorize?redirect_uri=https%3A%2F%2Fkratos.internal%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fgithub%3Fx&state=1";
        let m = provider_redirect_mismatch(loc, &s).unwrap();
        assert_eq!(m.provider, "github");
        assert_eq!(
            m.expected_prefix,
            "https://auth.example.com/self-service/methods/oidc/callback/"
        );
        let ok = "https://github.com/login/oauth/authorize?redirect_uri=https%3A%2F%2Fauth.example.com%2Fself-service%2Fmethods%2Foidc%2Fcallback%2Fgithub";
        assert_eq!(provider_redirect_mismatch(ok, &s), None);
    }

    #[test]
    fn warn_once_per_provider() {
        let w = WarnOnce::new(2);
        assert!(w.first_time("google"));
        assert!(!w.first_time("google"));
        assert!(w.first_time("github"));
        assert!(!w.first_time("apple"), "capped");
        assert!(!w.first_time("github"));
    }
}
