//! Group 4: Ory OAuth2 on the custom domain. Hydra's public endpoints are routes of sessiongate
//! (`/oauth2`, `/.well-known`, `/userinfo`, anonymous) and Hydra's issuer is the public origin: a
//! public client (`token_endpoint_auth_method = none`) runs the authorization code flow with PKCE
//! S256 to `myapp://callback`, exchanges the code, and calls userinfo with the access token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::client;
use crate::native::query_param;
use crate::stack::{browser, follow_to_app, OryStack};

const CLIENT_ID: &str = "sessiongate-native-app";
const REDIRECT_URI: &str = "myapp://callback";

/// A PKCE pair (RFC 7636 §4.1-4.2): a 43-character verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Runs `/oauth2/auth` on the custom domain through Hydra's login/consent; the authorization code.
async fn authorize(stack: &OryStack, challenge: &str, state: &str) -> String {
    let (b, _jar) = browser();
    let mut auth = url::Url::parse(&stack.at("/oauth2/auth")).unwrap();
    auth.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", "openid email offline_access")
        .append_pair("state", state)
        .append_pair("nonce", "nonce-0123456789")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    let chain = follow_to_app(&b, auth.as_str()).await;
    let acceptor = format!("http://127.0.0.1:{}", stack.acceptor_port());
    for hop in &chain.visited {
        assert!(
            hop.starts_with(&stack.public) || hop.starts_with(&acceptor),
            "hop off the custom domain: {hop}"
        );
    }
    assert!(
        chain.app_redirect.starts_with("myapp://callback?"),
        "{}",
        chain.app_redirect
    );
    assert_eq!(
        query_param(&chain.app_redirect, "state").as_deref(),
        Some(state)
    );
    query_param(&chain.app_redirect, "code").expect("code")
}

async fn token(stack: &OryStack, code: &str, verifier: &str) -> reqwest::Response {
    client()
        .post(stack.at("/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", CLIENT_ID),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token request")
}

/// The claims of a JWT's payload (not verified: Hydra signed it, the test only reads it).
fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_client_runs_pkce_on_the_custom_domain_and_calls_userinfo() {
    let stack = OryStack::start().await;
    let c = client();

    // discovery on the custom domain names the custom domain everywhere
    let d: Value = c
        .get(stack.at("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], format!("{}/", stack.public));
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
    ] {
        assert!(
            d[endpoint]
                .as_str()
                .unwrap_or("")
                .starts_with(&stack.public),
            "{endpoint}: {}",
            d[endpoint]
        );
    }
    assert!(d["code_challenge_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from("S256")));

    let (verifier, challenge) = pkce();
    let code = authorize(&stack, &challenge, "state-0123456789").await;

    // the code exchanged with the verifier, no client secret
    let r = token(&stack, &code, &verifier).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "bearer");
    let access = t["access_token"].as_str().expect("access_token").to_owned();
    assert!(
        t["refresh_token"].is_string(),
        "offline_access gives a refresh token: {t}"
    );
    let id = jwt_claims(t["id_token"].as_str().expect("id_token"));
    assert_eq!(id["iss"], format!("{}/", stack.public));
    assert_eq!(id["aud"], serde_json::json!([CLIENT_ID]));
    assert_eq!(id["nonce"], "nonce-0123456789");
    assert_eq!(id["sub"], "alice@example.test");

    // userinfo with the access token (through an anonymous route: Authorization passes untouched)
    let r = c
        .get(stack.at("/userinfo"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let u: Value = r.json().await.unwrap();
    assert_eq!(u["sub"], "alice@example.test");
    assert_eq!(u["email"], "alice@example.test");
    // the code is single use, and its reuse revokes what it gave (RFC 6749 §4.1.2; fosite)
    let r = token(&stack, &code, &verifier).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_grant");

    let r = c
        .get(stack.at("/userinfo"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(stack.at("/userinfo"))
        .bearer_auth("ory_at_not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pkce_verifier_is_refused() {
    let stack = OryStack::start().await;
    let (_verifier, challenge) = pkce();
    let code = authorize(&stack, &challenge, "state-abcdefghij").await;
    let (other_verifier, _) = pkce();
    let r = token(&stack, &code, &other_verifier).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_grant", "{e}");
}
