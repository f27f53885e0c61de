//! Group 2: the seed's native flow end to end through the edge, with real Hydra as the generic OIDC
//! provider: an API login flow asking for a session token exchange code, the `oidc` submission's
//! 422, the system browser's leg through Hydra's login/consent back to Kratos's callback on the
//! custom domain, the `myapp://callback?code=...` redirect, the exchange, and a session route.

use ory_kratos_client_v1::apis::frontend_api;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::client;
use crate::stack::{browser, follow_to_app, OryStack};

/// `key=value` of a URL's query (percent-decoded).
pub fn query_param(u: &str, key: &str) -> Option<String> {
    url::Url::parse(u)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_social_sign_in_with_hydra_and_the_token_exchange_through_the_edge() {
    let stack = OryStack::start().await;
    let app = client(); // the native app: no cookies, no Origin

    // 1. the API flow, asking for an exchange code, coming back to the app's custom scheme
    let flow = stack
        .api_flow(
            "login",
            "return_session_token_exchange_code=true&return_to=myapp://callback",
        )
        .await;
    assert_eq!(flow["type"], "api");
    assert_eq!(flow["return_to"], "myapp://callback");
    let init_code = flow["session_token_exchange_code"]
        .as_str()
        .expect("session_token_exchange_code")
        .to_owned();
    let action = flow["ui"]["action"].as_str().unwrap().to_owned();
    assert!(action.starts_with(&format!("{}/self-service/login?flow=", stack.kratos_base)));

    // 2. submit the provider: 422 browser_location_change_required
    let r = app
        .post(&action)
        .json(&json!({
            "method": "oidc",
            "provider": "hydra",
            "upstream_parameters": { "login_hint": "erin@example.test" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["id"], "browser_location_change_required", "{v}");
    let to_hydra = v["redirect_browser_to"].as_str().unwrap().to_owned();
    let callback = format!(
        "{}/self-service/methods/oidc/callback/hydra",
        stack.kratos_base
    );
    assert!(
        to_hydra.starts_with(&format!("{}/oauth2/auth?", stack.public)),
        "Hydra's authorize endpoint on the custom domain: {to_hydra}"
    );
    assert_eq!(
        query_param(&to_hydra, "redirect_uri").as_deref(),
        Some(callback.as_str())
    );
    assert_eq!(
        query_param(&to_hydra, "client_id").as_deref(),
        Some("kratos-test-client")
    );
    assert_eq!(
        query_param(&to_hydra, "login_hint").as_deref(),
        Some("erin@example.test")
    );

    // 3. + 4. the system browser: Hydra, its login/consent app, Kratos's callback, the app
    let (system_browser, _jar) = browser();
    let chain = follow_to_app(&system_browser, &to_hydra).await;
    let acceptor = format!("http://127.0.0.1:{}", stack.acceptor_port());
    for hop in &chain.visited {
        assert!(
            hop.starts_with(&stack.public) || hop.starts_with(&acceptor),
            "every hop on the custom domain (or Hydra's login/consent app): {hop}\n{:#?}",
            chain.visited
        );
    }
    assert!(
        chain
            .visited
            .iter()
            .any(|h| h.starts_with(&format!("{callback}?"))),
        "Kratos's callback reached through the edge: {:#?}",
        chain.visited
    );
    let code = chain
        .app_redirect
        .strip_prefix("myapp://callback?code=")
        .unwrap_or_else(|| panic!("custom scheme and code untouched: {}", chain.app_redirect))
        .to_owned();
    assert!(
        !code.is_empty() && !code.contains('&'),
        "{}",
        chain.app_redirect
    );

    // 5. the exchange, with the official SDK, on the custom domain
    let exchanged = frontend_api::exchange_session_token(&stack.sdk(), &init_code, &code)
        .await
        .unwrap_or_else(|e| panic!("token exchange: {e:?}\n{}", stack.log_tail("kratos")));
    let token = exchanged.session_token.expect("session_token");
    let session = exchanged.session;
    let identity = session.identity.expect("identity");
    assert_eq!(
        identity.traits.as_ref().unwrap()["email"],
        "erin@example.test"
    );
    assert_eq!(
        identity.schema_url,
        format!("{}/schemas/ZGVmYXVsdA", stack.kratos_base),
        "identity.schema_url rewritten to the custom domain"
    );
    // Kratos v1.3.1 does not consume the codes (session/handler.go, exchangeCode): the same pair
    // gives the same token again; a wrong code is a 404, a missing one a 400.
    let exchange = |init: &str, ret: &str| {
        app.get(format!(
            "{}/sessions/token-exchange?init_code={init}&return_to_code={ret}",
            stack.kratos_base
        ))
        .send()
    };
    let again = exchange(&init_code, &code).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["session_token"], token.as_str());
    let wrong = exchange(&init_code, "not-the-code").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);
    let missing = exchange(&init_code, "").await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);

    // 6. the app calls a session route with the token: identity headers upstream
    stack.upstream.reset();
    let r = app
        .get(stack.at("/api/me"))
        .header("X-Session-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up = stack.upstream.requests();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].header("x-user-id"), Some(identity.id.as_str()));
    assert_eq!(up[0].header("x-user-email"), Some("erin@example.test"));
    assert_eq!(up[0].header("x-session-id"), Some(session.id.as_str()));
    assert_eq!(up[0].header("x-aal"), Some("aal1"));
    assert!(
        up[0].header("x-session-token").is_some(),
        "the credential reaches the app"
    );
    assert_eq!(
        stack
            .proxy
            .metric("sessiongate_oidc_redirect_uri_mismatch_total{provider=\"hydra\"}")
            .await,
        0.0
    );

    // 7. sign-out through the edge revokes the token in Kratos and in the cache at once
    frontend_api::perform_native_logout(
        &stack.sdk(),
        ory_kratos_client_v1::models::PerformNativeLogoutBody::new(token.clone()),
    )
    .await
    .expect("native logout");
    let r = app
        .get(stack.at("/api/me"))
        .header("X-Session-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
