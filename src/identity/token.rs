//! Signed identity tokens: a JWT per session and route, set upstream in a header
//! (`identity_token = true` on a route, keys and issuer in `[identity_token]`).
//!
//! Claims: `iss`, `sub` (identity id), `aud` (the route's audience, when set), `iat`, `nbf`, `exp`
//! (now + `ttl`, never past the session's own `expires_at`), `jti` (random, 128 bits), `sid`
//! (session id), `aal`, plus the route's `identity_token_claims` (strings, rendered like identity
//! header values). The first signing key signs; all are published ([`TokenIssuer::jwks`]).
//!
//! Signing costs far more than the rest of a request, so a token is kept per (session, route)
//! and reused until [`REUSE_SHARE`] of its lifetime has passed, and only while the session still
//! has the same assurance level, deadline and claim values.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use jsonwebtoken::Header;
use serde_json::{Map, Value};

use super::keys::{jwks, SigningKey};
use super::Template;
use crate::session::Session;

/// Share of a token's lifetime during which it is reused; a later request gets a fresh one, so an
/// upstream never receives a token about to expire.
pub const REUSE_SHARE: f64 = 0.8;

/// Most tokens kept (one per session and route recently seen).
const CACHE_ENTRIES: u64 = 100_000;

/// The claim names sessiongate sets itself; a configured claim cannot replace them.
pub const REGISTERED_CLAIMS: &[&str] = &[
    "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "sid", "aal",
];

/// A route's token settings (`identity_token = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteToken {
    /// The header the token goes in (`identity_token_header`, default `X-Identity-Token`).
    pub header: HeaderName,
    /// The `aud` claim (`identity_token_audience`); `None`: no `aud`.
    pub audience: Option<String>,
    /// Extra claims: name, session path, and the path's slot in `Config::session_paths`.
    pub claims: Vec<TokenClaim>,
}

/// One configured claim (`[routes.identity_token_claims]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaim {
    /// The claim name.
    pub name: String,
    /// The session path its value is read from.
    pub template: Template,
    /// Index of the template in `Config::session_paths`, i.e. of its value in `Session::values`.
    pub slot: usize,
}

/// What a cached token was issued from, and when it stops being reused.
struct Cached {
    value: HeaderValue,
    reuse_until: SystemTime,
    aal: crate::config::Aal,
    expires_at: Option<SystemTime>,
    claims: Vec<Option<HeaderValue>>,
}

/// Signs identity tokens and keeps them for reuse; built from `[identity_token]` when the
/// configuration is compiled (a reload starts with an empty cache: one signature per session).
pub struct TokenIssuer {
    issuer: String,
    ttl: Duration,
    keys: Vec<SigningKey>,
    jwks: Arc<[u8]>,
    jwks_path: Option<String>,
    cache: moka::sync::Cache<(String, usize), Arc<Cached>>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer signing with `keys[0]` and publishing all of `keys` (at least one).
    pub fn new(issuer: String, ttl: Duration, keys: Vec<SigningKey>) -> TokenIssuer {
        let jwks = jwks(&keys).into();
        TokenIssuer {
            issuer,
            ttl,
            keys,
            jwks,
            jwks_path: None,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Also answers the JWKS on the public listener at `path` (`identity_token.jwks_path`).
    pub fn with_jwks_path(mut self, path: Option<String>) -> TokenIssuer {
        self.jwks_path = path;
        self
    }

    /// `identity_token.jwks_path`: where the public listener answers the JWKS, if anywhere.
    pub fn jwks_path(&self) -> Option<&str> {
        self.jwks_path.as_deref()
    }

    /// The JWKS document publishing every configured key.
    pub fn jwks(&self) -> &[u8] {
        &self.jwks
    }

    /// `identity_token.ttl`: also how long a JWKS answer may be cached (a new key is published at
    /// least this long before it signs; see the README's rotation procedure).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The `kid` of the key that signs.
    pub fn signing_kid(&self) -> Option<&str> {
        self.keys.first().map(|k| k.kid.as_str())
    }

    /// The token of `session` on route `route` (its index), from the cache when one issued for the
    /// same session state is young enough, else freshly signed. `None` when no token can be issued:
    /// the session's deadline has passed by this clock, or signing failed (logged, never the key).
    pub fn token(
        &self,
        route: usize,
        spec: &RouteToken,
        session: &Session,
        now: SystemTime,
    ) -> Option<HeaderValue> {
        let key = (session.id.clone(), route);
        if let Some(c) = self.cache.get(&key) {
            if now < c.reuse_until
                && c.aal == session.aal
                && c.expires_at == session.expires_at
                && spec
                    .claims
                    .iter()
                    .zip(&c.claims)
                    .all(|(claim, v)| slot(session, claim.slot) == v.as_ref())
            {
                return Some(c.value.clone());
            }
        }
        let (value, reuse_until) = self.sign(spec, session, now)?;
        let cached = Cached {
            value: value.clone(),
            reuse_until,
            aal: session.aal,
            expires_at: session.expires_at,
            claims: spec
                .claims
                .iter()
                .map(|c| slot(session, c.slot).cloned())
                .collect(),
        };
        self.cache.insert(key, Arc::new(cached));
        Some(value)
    }

    /// Signs a fresh token; returns it with the time until which it may be reused.
    fn sign(
        &self,
        spec: &RouteToken,
        session: &Session,
        now: SystemTime,
    ) -> Option<(HeaderValue, SystemTime)> {
        let key = self.keys.first()?;
        let iat = secs(now);
        let mut exp = iat.saturating_add(self.ttl.as_secs());
        if let Some(deadline) = session.expires_at {
            exp = exp.min(secs(deadline));
        }
        if exp <= iat {
            return None;
        }
        let mut claims = Map::new();
        claims.insert("iss".into(), self.issuer.clone().into());
        claims.insert("sub".into(), session.identity_id.clone().into());
        if let Some(aud) = &spec.audience {
            claims.insert("aud".into(), aud.clone().into());
        }
        claims.insert("iat".into(), iat.into());
        claims.insert("nbf".into(), iat.into());
        claims.insert("exp".into(), exp.into());
        claims.insert(
            "jti".into(),
            format!("{:032x}", rand::random::<u128>()).into(),
        );
        claims.insert("sid".into(), session.id.clone().into());
        claims.insert("aal".into(), format!("aal{}", session.aal.0).into());
        for c in &spec.claims {
            if let Some(text) = slot(session, c.slot).and_then(|v| v.to_str().ok()) {
                claims.insert(c.name.clone(), Value::String(text.to_string()));
            }
        }
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        let jwt = match jsonwebtoken::encode(&header, &claims, key.encoding()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(kid = %key.kid, error = %e, "identity token: signing failed");
                return None;
            }
        };
        let value = HeaderValue::from_str(&jwt).ok()?;
        let lifetime = (exp - iat) as f64 * REUSE_SHARE;
        let reuse_until = UNIX_EPOCH + Duration::from_secs(iat) + Duration::from_secs_f64(lifetime);
        Some((value, reuse_until))
    }
}

/// The rendered value of session path `slot`, if present.
fn slot(session: &Session, slot: usize) -> Option<&HeaderValue> {
    session.values.get(slot)?.as_ref()
}

/// Whole seconds since the Unix epoch (0 before it).
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
