use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::*;
use crate::config::Aal;

/// An Ed25519 key in PKCS#8 PEM from a fixed test seed (RFC 8410 §7 layout); test material only.
fn key(seed: u8) -> SigningKey {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[seed; 32]);
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(der)
    );
    SigningKey::from_pem(pem.as_bytes()).expect("test key")
}

fn session(expires_in: Option<u64>, email: &str) -> Session {
    Session {
        id: "sess-1".into(),
        identity_id: "ident-1".into(),
        aal: Aal(1),
        expires_at: expires_in.map(|s| SystemTime::now() + Duration::from_secs(s)),
        values: vec![Some(HeaderValue::from_str(email).expect("value"))].into_boxed_slice(),
    }
}

fn spec() -> RouteToken {
    RouteToken {
        header: HeaderName::from_static("x-identity-token"),
        audience: Some("orders".into()),
        claims: vec![TokenClaim {
            name: "email".into(),
            template: Template::parse("identity.traits.email").expect("template"),
            slot: 0,
        }],
    }
}

/// The claims of a compact JWS, unverified (verification is tests/identity_token.rs's job).
fn claims(token: &HeaderValue) -> Value {
    let text = token.to_str().expect("ascii");
    let payload = text.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

#[test]
fn claims_are_complete_and_exp_respects_the_session() {
    let issuer = TokenIssuer::new("https://gate".into(), Duration::from_secs(60), vec![key(1)]);
    let now = SystemTime::now();
    let t = issuer
        .token(0, &spec(), &session(Some(3600), "a@example.com"), now)
        .expect("token");
    let c = claims(&t);
    assert_eq!(c["iss"], "https://gate");
    assert_eq!(c["sub"], "ident-1");
    assert_eq!(c["sid"], "sess-1");
    assert_eq!(c["aud"], "orders");
    assert_eq!(c["aal"], "aal1");
    assert_eq!(c["email"], "a@example.com");
    assert_eq!(c["exp"].as_u64(), c["iat"].as_u64().map(|i| i + 60));
    assert_eq!(c["jti"].as_str().map(str::len), Some(32));

    // a session ending in 10 s caps exp; one already past gets no token
    let t = issuer
        .token(1, &spec(), &session(Some(10), "a@example.com"), now)
        .expect("token");
    let c = claims(&t);
    let exp = c["exp"].as_u64().expect("exp");
    assert!(exp <= c["iat"].as_u64().expect("iat") + 10);
    let mut past = session(None, "a@example.com");
    past.id = "sess-2".into();
    past.expires_at = Some(UNIX_EPOCH + Duration::from_secs(10));
    assert!(issuer.token(0, &spec(), &past, now).is_none());
}

#[test]
fn tokens_are_reused_until_most_of_their_lifetime_or_a_session_change() {
    let issuer = TokenIssuer::new("gate".into(), Duration::from_secs(100), vec![key(2)]);
    let now = SystemTime::now();
    let s = session(None, "a@example.com");
    let first = issuer.token(0, &spec(), &s, now).expect("token");
    assert_eq!(
        issuer.token(0, &spec(), &s, now + Duration::from_secs(50)),
        Some(first.clone())
    );
    // another route: another token
    assert_ne!(issuer.token(1, &spec(), &s, now), Some(first.clone()));
    // past 80% of the lifetime: a fresh one
    assert_ne!(
        issuer.token(0, &spec(), &s, now + Duration::from_secs(81)),
        Some(first.clone())
    );
    // a step-up or a changed claim value: a fresh one at once
    let second = issuer
        .token(0, &spec(), &s, now + Duration::from_secs(81))
        .expect("token");
    let mut up = s.clone();
    up.aal = Aal(2);
    assert_ne!(
        issuer.token(0, &spec(), &up, now + Duration::from_secs(82)),
        Some(second.clone())
    );
    let changed = session(None, "b@example.com");
    let t = issuer
        .token(0, &spec(), &changed, now + Duration::from_secs(82))
        .expect("token");
    assert_eq!(claims(&t)["email"], "b@example.com");
}

#[test]
fn jwks_publishes_every_key_and_the_first_signs() {
    let issuer = TokenIssuer::new("gate".into(), Duration::from_secs(60), vec![key(3), key(4)]);
    let doc: Value = serde_json::from_slice(issuer.jwks()).expect("jwks json");
    let kids: Vec<&str> = doc["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, vec![key(3).kid.as_str(), key(4).kid.as_str()]);
    assert_eq!(issuer.signing_kid(), Some(key(3).kid.as_str()));
    let t = issuer
        .token(0, &spec(), &session(None, "x"), SystemTime::now())
        .expect("token");
    let head = t
        .to_str()
        .expect("ascii")
        .split('.')
        .next()
        .expect("header");
    let head: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).expect("b64")).expect("json");
    assert_eq!(head["kid"], key(3).kid);
    assert_eq!(head["alg"], "EdDSA");
    // the key material never shows in Debug
    assert!(!format!("{issuer:?}").contains("encoding"));
}
