//! The self-service endpoints of the Kratos double and the OIDC provider double, over real HTTP.
//! Bodies are checked against the official `ory-kratos-client` models and Kratos's session
//! schema.

use std::collections::HashMap;
use std::path::PathBuf;

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sessiongate_testkit::{KratosDouble, OidcProvider, SessionSpec};

// ---------------------------------------------------------------------------------------------
// helpers

fn client() -> reqwest::Client {
    // A User-Agent, as browsers send: real Kratos v1.3.1 records it in the session's device, and
    // without one writes `"user_agent": null`, which Kratos's session schema does not allow
    // (the double does the same; see tests/real_ory/doubles.rs).
    reqwest::Client::builder()
        .user_agent("sessiongate-testkit-tests")
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("build reqwest client")
}

fn session_validator() -> jsonschema::Validator {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kratos/session.schema.json");
    let text = std::fs::read_to_string(&path).expect("read Kratos session schema");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

fn assert_session(v: &Value) {
    let validator = session_validator();
    let errors: Vec<String> = validator.iter_errors(v).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "session schema errors: {errors:?}\n{v:#}"
    );
    let _: ory_kratos_client::models::Session =
        serde_json::from_value(v.clone()).expect("ory-kratos-client parses the session");
}

/// A tiny cookie jar: name -> value, updated from `Set-Cookie` (empty value / Max-Age=0 deletes).
#[derive(Default, Debug, Clone)]
struct Jar(HashMap<String, String>);

impl Jar {
    fn update(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let first = v.split(';').next().unwrap();
            let (n, val) = first.split_once('=').unwrap();
            if val.is_empty() || v.contains("Max-Age=0") {
                self.0.remove(n);
            } else {
                self.0.insert(n.to_owned(), val.to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn get(&self, n: &str) -> Option<&str> {
        self.0.get(n).map(String::as_str)
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(LOCATION)
        .expect("Location")
        .to_str()
        .unwrap()
        .to_owned()
}

fn query_of(url: &str) -> HashMap<String, String> {
    let u = url::Url::parse(url).unwrap();
    u.query_pairs().into_owned().collect()
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

async fn whoami(k: &KratosDouble, header: (&str, &str)) -> StatusCode {
    client()
        .get(format!("{}/sessions/whoami", k.url()))
        .header(header.0, header.1)
        .send()
        .await
        .unwrap()
        .status()
}

async fn whoami_cookie(k: &KratosDouble, jar: &Jar) -> StatusCode {
    whoami(k, ("cookie", &jar.header())).await
}

/// Starts a browser flow the way a browser does; returns (flow JSON, jar with the csrf cookie).
async fn browser_flow(k: &KratosDouble, kind: &str, return_to: Option<&str>) -> (Value, Jar) {
    let c = client();
    let mut url = format!("{}/self-service/{kind}/browser", k.url());
    if let Some(r) = return_to {
        url = format!("{url}?return_to={}", urlenc(r));
    }
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let mut jar = Jar::default();
    jar.update(r.headers());
    assert!(jar.get(&k.csrf_cookie_name()).is_some(), "csrf cookie set");
    let ui = location(&r);
    assert!(
        ui.starts_with(&format!("http://127.0.0.1:4455/{kind}?flow=")),
        "{ui}"
    );
    let id = query_of(&ui)["flow"].clone();
    let flow: Value = c
        .get(format!("{}/self-service/{kind}/flows?id={id}", k.url()))
        .header(COOKIE, jar.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (flow, jar)
}

/// Parses a flow with the official client. The generated `UiNodeAttributes` is an internally
/// tagged enum on `node_type` whose variants *also* require `node_type`, so no real Kratos flow
/// with nodes deserialises as a whole (a bug of the generated client, not of the JSON): the
/// flow is parsed with its nodes set aside, and each node's parts are parsed on their own.
fn parse_flow<T: serde::de::DeserializeOwned>(flow: &Value) -> T {
    use ory_kratos_client::models;
    let mut without_nodes = flow.clone();
    without_nodes["ui"]["nodes"] = json!([]);
    let parsed: T =
        serde_json::from_value(without_nodes).expect("flow parses with ory-kratos-client");
    for node in flow["ui"]["nodes"].as_array().expect("ui.nodes") {
        let attrs = node["attributes"].clone();
        match attrs["node_type"].as_str() {
            Some("input") => {
                let _: models::UiNodeInputAttributes =
                    serde_json::from_value(attrs).expect("input attributes");
            }
            Some("script") => {
                let _: models::UiNodeScriptAttributes =
                    serde_json::from_value(attrs).expect("script attributes");
            }
            other => panic!("unexpected node_type {other:?}"),
        }
        assert_eq!(node["type"], node["attributes"]["node_type"]);
        let _: models::ui_node::GroupEnum =
            serde_json::from_value(node["group"].clone()).expect("group");
        let _: models::ui_node::TypeEnum =
            serde_json::from_value(node["type"].clone()).expect("type");
        let _: models::UiNodeMeta = serde_json::from_value(node["meta"].clone()).expect("meta");
        let _: Vec<models::UiText> =
            serde_json::from_value(node["messages"].clone()).expect("messages");
    }
    parsed
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn csrf_of(flow: &Value) -> String {
    flow["ui"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["attributes"]["name"] == "csrf_token")
        .unwrap()["attributes"]["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// flows

#[tokio::test]
async fn browser_login_flow_has_absolute_urls_on_the_doubles_origin() {
    let k = KratosDouble::start().await;
    let (flow, _) = browser_flow(&k, "login", Some("https://app.example.com/dashboard")).await;
    let id = flow["id"].as_str().unwrap();
    assert_eq!(
        flow["ui"]["action"],
        format!("{}/self-service/login?flow={id}", k.url())
    );
    assert_eq!(
        flow["request_url"],
        format!(
            "{}/self-service/login/browser?return_to=https%3A%2F%2Fapp.example.com%2Fdashboard",
            k.url()
        )
    );
    assert_eq!(flow["return_to"], "https://app.example.com/dashboard");
    assert_eq!(flow["type"], "browser");
    assert_eq!(flow["state"], "choose_method");
    let parsed: ory_kratos_client::models::LoginFlow = parse_flow(&flow);
    assert_eq!(parsed.id, id);

    // JSON straight away, with Go's escaping of '&'
    let r = client()
        .get(format!(
            "{}/self-service/login/browser?return_to=https%3A%2F%2Fa.example%2F&refresh=false",
            k.url()
        ))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(set_cookies(&r)[0].starts_with("csrf_token_"));
    let text = r.text().await.unwrap();
    assert!(text.contains("\\u0026refresh=false"), "{text}");
    let _: ory_kratos_client::models::LoginFlow = parse_flow(&serde_json::from_str(&text).unwrap());
}

#[tokio::test]
async fn browser_password_login_then_logout() {
    let k = KratosDouble::start().await;
    let identity = k.add_password_identity("alice@example.com", "s3cret!");
    let (flow, mut jar) = browser_flow(&k, "login", Some("https://app.example.com/home")).await;
    let c = client();
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .header(COOKIE, jar.header())
        .form(&[
            ("csrf_token", csrf_of(&flow).as_str()),
            ("method", "password"),
            ("identifier", "alice@example.com"),
            ("password", "s3cret!"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "https://app.example.com/home");
    let cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("ory_kratos_session="))
        .expect("session cookie");
    assert!(cookie.contains("; Path=/;"), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    assert!(!cookie.contains("Domain=") && !cookie.contains("Secure"));
    jar.update(r.headers());

    let r = c
        .get(format!("{}/sessions/whoami", k.url()))
        .header(COOKIE, jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let session: Value = r.json().await.unwrap();
    assert_session(&session);
    assert_eq!(session["identity"]["id"], identity.as_str());
    assert_eq!(session["identity"]["traits"]["email"], "alice@example.com");

    // a second browser flow with a valid session goes straight to the return URL
    let r = c
        .get(format!("{}/self-service/login/browser", k.url()))
        .header(COOKIE, jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "http://127.0.0.1:4455/welcome");

    // logout
    let r = c
        .get(format!(
            "{}/self-service/logout/browser?return_to=https%3A%2F%2Fapp.example.com%2Fbye",
            k.url()
        ))
        .header(COOKIE, jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let logout: Value = r.json().await.unwrap();
    let _: ory_kratos_client::models::LogoutFlow = serde_json::from_value(logout.clone()).unwrap();
    let url = logout["logout_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/self-service/logout?token=", k.url())),
        "{url}"
    );
    assert!(url.ends_with("&return_to=https%3A%2F%2Fapp.example.com%2Fbye"));
    let r = c
        .get(url)
        .header(COOKIE, jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "https://app.example.com/bye");
    let clear = set_cookies(&r);
    // Kratos deletes the cookie with a (meaningless) non-empty value, Expires in 1970, Max-Age=0
    assert!(clear[0].starts_with("ory_kratos_session=") && clear[0].contains("Max-Age=0"));
    assert_eq!(whoami_cookie(&k, &jar).await, StatusCode::UNAUTHORIZED);
    jar.update(r.headers());
    assert!(jar.get("ory_kratos_session").is_none());

    // the logout token is single use
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("http://127.0.0.1:4455/error?id="));
    let r = c
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // logout/browser without a session: the error UI (401 session_inactive with JSON)
    let r = c
        .get(format!("{}/self-service/logout/browser", k.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("http://127.0.0.1:4455/error?id="));
}

#[tokio::test]
async fn logout_with_json_answers_204() {
    let k = KratosDouble::start().await;
    k.add_session("cookie-v", SessionSpec::default());
    let c = client();
    let logout: Value = c
        .get(format!("{}/self-service/logout/browser", k.url()))
        .header(COOKIE, "ory_kratos_session=cookie-v")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = logout["logout_url"].as_str().unwrap();
    // the logout URL works with the session's cookie only (as in Kratos)
    let r = c
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["id"], "session_inactive");
    assert!(k.has_session("cookie-v"));
    let r = c
        .get(url)
        .header(ACCEPT, "application/json")
        .header(COOKIE, "ory_kratos_session=cookie-v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!k.has_session("cookie-v"));
}

#[tokio::test]
async fn failed_submissions_and_csrf() {
    let k = KratosDouble::start().await;
    k.add_password_identity("bob@example.com", "right");
    let (flow, jar) = browser_flow(&k, "login", None).await;
    let c = client();
    let action = flow["ui"]["action"].as_str().unwrap();
    // wrong password: back to the UI
    let r = c
        .post(action)
        .header(COOKIE, jar.header())
        .form(&[
            ("csrf_token", csrf_of(&flow).as_str()),
            ("method", "password"),
            ("identifier", "bob@example.com"),
            ("password", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("http://127.0.0.1:4455/login?flow="));
    assert!(set_cookies(&r).is_empty());
    // the same with JSON: 400 and the flow with a message
    let r = c
        .post(action)
        .header(COOKIE, jar.header())
        .header(ACCEPT, "application/json")
        .json(&json!({"csrf_token": csrf_of(&flow), "method": "password", "identifier": "bob@example.com", "password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let f: Value = r.json().await.unwrap();
    assert_eq!(f["ui"]["messages"][0]["type"], "error");
    // no csrf cookie
    let r = c
        .post(action)
        .form(&[
            ("csrf_token", csrf_of(&flow).as_str()),
            ("method", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["id"], "security_csrf_violation");
    // unknown flow
    let r = c
        .post(format!("{}/self-service/login?flow=nope", k.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn api_password_login_and_api_logout() {
    let k = KratosDouble::start().await;
    let identity = k.add_password_identity("carol@example.com", "pw");
    let c = client();
    let flow: Value = c
        .get(format!("{}/self-service/login/api", k.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(flow["type"], "api");
    assert_eq!(csrf_of(&flow), "");
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .json(&json!({"method": "password", "identifier": "carol@example.com", "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(set_cookies(&r).is_empty());
    let body: Value = r.json().await.unwrap();
    let parsed: ory_kratos_client::models::SuccessfulNativeLogin =
        serde_json::from_value(body.clone()).unwrap();
    let token = parsed.session_token.unwrap();
    assert!(token.starts_with("ory_st_"));
    assert_session(&body["session"]);
    assert_eq!(body["session"]["identity"]["id"], identity.as_str());
    assert_eq!(
        whoami(&k, ("x-session-token", &token)).await,
        StatusCode::OK
    );

    let r = c
        .delete(format!("{}/self-service/logout/api", k.url()))
        .json(&json!({ "session_token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        whoami(&k, ("x-session-token", &token)).await,
        StatusCode::UNAUTHORIZED
    );
    // Kratos keeps the revoked session: logging it out again is still 204; an unknown token 403
    let r = c
        .delete(format!("{}/self-service/logout/api", k.url()))
        .json(&json!({ "session_token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .delete(format!("{}/self-service/logout/api", k.url()))
        .json(&json!({ "session_token": "ory_st_never-issued" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn registration_creates_an_identity_and_a_session() {
    let k = KratosDouble::start().await;
    let c = client();
    let flow: Value = c
        .get(format!("{}/self-service/registration/api", k.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _: ory_kratos_client::models::RegistrationFlow = parse_flow(&flow);
    assert!(flow["ui"]["action"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}/self-service/registration?flow=", k.url())));
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .json(&json!({"method": "password", "traits": {"email": "dave@example.com"}, "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_session(&body["session"]);
    // and the password works for login afterwards
    let flow: Value = c
        .get(format!("{}/self-service/login/api", k.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("method=password&identifier=dave%40example.com&password=pw")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// OIDC

#[tokio::test]
async fn browser_oidc_sign_in_round_trip() {
    let k = KratosDouble::start().await;
    let google = OidcProvider::start().await;
    k.add_oidc_provider("google", &google);
    k.set_session_cookie_domain(Some("example.com"));
    k.set_session_cookie_secure(true);
    let (flow, mut jar) = browser_flow(&k, "login", Some("https://app.example.com/after")).await;
    assert!(flow["ui"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["attributes"]["name"] == "provider" && n["attributes"]["value"] == "google"));
    let c = client();
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .header(COOKIE, jar.header())
        .form(&[
            ("csrf_token", csrf_of(&flow).as_str()),
            ("method", "oidc"),
            ("provider", "google"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let authorize = location(&r);
    assert!(
        authorize.starts_with(&google.authorize_url()),
        "{authorize}"
    );
    let q = query_of(&authorize);
    assert_eq!(
        q["redirect_uri"],
        format!("{}/self-service/methods/oidc/callback/google", k.url())
    );
    assert_eq!(q["redirect_uri"], k.oidc_redirect_uri("google"));
    let continuity = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("ory_kratos_continuity="))
        .expect("continuity cookie");
    assert!(continuity.contains("Domain=example.com") && continuity.contains("Secure"));
    jar.update(r.headers());

    // the provider sends the browser to redirect_uri
    let r = c.get(&authorize).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let callback = location(&r);
    assert!(callback.starts_with(&format!(
        "{}/self-service/methods/oidc/callback/google?code=",
        k.url()
    )));
    assert_eq!(google.redirect_uris(), vec![k.oidc_redirect_uri("google")]);

    let r = c
        .get(&callback)
        .header(COOKIE, jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        k.selfservice_errors()
    );
    assert_eq!(location(&r), "https://app.example.com/after");
    let cookies = set_cookies(&r);
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("ory_kratos_session=") && !c.starts_with("ory_kratos_session=;"))
        .expect("session cookie");
    assert!(session_cookie.contains("; Path=/;"));
    assert!(session_cookie.contains("HttpOnly; SameSite=Lax; Domain=example.com; Secure"));
    assert!(cookies
        .iter()
        .any(|c| c.starts_with("ory_kratos_continuity=") && c.contains("Max-Age=0")));
    jar.update(r.headers());
    assert_eq!(whoami_cookie(&k, &jar).await, StatusCode::OK);

    // the token request repeated the redirect_uri and was granted
    let tr = google.token_requests();
    assert_eq!(tr.len(), 1);
    assert!(tr[0].granted);
    assert_eq!(
        tr[0].redirect_uri.as_deref(),
        Some(k.oidc_redirect_uri("google").as_str())
    );

    // replaying the callback: state is single use
    let r = c
        .get(&callback)
        .header(COOKIE, jar.header())
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("http://127.0.0.1:4455/error?id="));
}

#[tokio::test]
async fn oidc_callback_needs_the_continuity_cookie() {
    let k = KratosDouble::start().await;
    let gh = OidcProvider::start().await;
    k.add_oidc_provider("github", &gh);
    let (flow, jar) = browser_flow(&k, "registration", None).await;
    let c = client();
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .header(COOKIE, jar.header())
        .form(&[
            ("csrf_token", csrf_of(&flow).as_str()),
            ("method", "oidc"),
            ("provider", "github"),
        ])
        .send()
        .await
        .unwrap();
    let authorize = location(&r);
    let callback = location(&c.get(&authorize).send().await.unwrap());
    // csrf cookie only, no continuity cookie
    let r = c
        .get(&callback)
        .header(COOKIE, jar.header())
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("http://127.0.0.1:4455/error?id="));
    assert!(k.selfservice_errors()[0].contains("continuity"));
}

#[tokio::test]
async fn base_redirect_uri_is_what_the_provider_sees_and_gets_back() {
    let k = KratosDouble::start().await;
    let google = OidcProvider::start().await;
    k.add_oidc_provider("google", &google);
    k.set_oidc_base_redirect_uri(Some("https://app.example.com/.ory/"));
    assert_eq!(
        k.oidc_redirect_uri("google"),
        "https://app.example.com/.ory/self-service/methods/oidc/callback/google"
    );
    let c = client();
    let flow: Value = c
        .get(format!("{}/self-service/login/api", k.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .json(&json!({"method": "oidc", "provider": "google"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    let authorize = body["redirect_browser_to"].as_str().unwrap();
    assert_eq!(
        query_of(authorize)["redirect_uri"],
        "https://app.example.com/.ory/self-service/methods/oidc/callback/google"
    );
    // the provider redirects to the public URL; a proxy would forward it to the double
    let public_callback = location(&c.get(authorize).send().await.unwrap());
    let path_and_query = public_callback
        .strip_prefix("https://app.example.com/.ory")
        .unwrap();
    let r = c
        .get(format!("{}{path_and_query}", k.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "http://127.0.0.1:4455/welcome");
    let tr = google.token_requests();
    assert!(tr[0].granted);
    assert_eq!(
        tr[0].redirect_uri.as_deref(),
        Some("https://app.example.com/.ory/self-service/methods/oidc/callback/google")
    );
}

#[tokio::test]
async fn native_app_oidc_with_session_token_exchange() {
    let k = KratosDouble::start().await;
    let apple = OidcProvider::start().await;
    k.add_oidc_provider("apple", &apple);
    let c = client();
    let r = c
        .get(format!(
            "{}/self-service/login/api?return_session_token_exchange_code=true&return_to=myapp://callback",
            k.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(set_cookies(&r).is_empty());
    let flow: Value = r.json().await.unwrap();
    let parsed: ory_kratos_client::models::LoginFlow = parse_flow(&flow);
    let init_code = parsed.session_token_exchange_code.expect("init code");
    assert_eq!(flow["return_to"], "myapp://callback");

    let r = c
        .post(flow["ui"]["action"].as_str().unwrap())
        .json(&json!({"method": "oidc", "provider": "apple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\\u0026redirect_uri="),
        "Go-style escaping: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    // The generated ErrorBrowserLocationChangeRequired nests `error.error` (the spec's
    // swagger wrapper); Kratos's wire format is herodot's `{"error": {..}, ...}`.
    let e: ory_kratos_client::models::GenericError =
        serde_json::from_value(body["error"].clone()).unwrap();
    assert_eq!(e.code, Some(422));
    assert_eq!(body["error"]["id"], "browser_location_change_required");
    let authorize = body["redirect_browser_to"].as_str().unwrap();
    assert!(body["error"]["reason"]
        .as_str()
        .unwrap()
        .ends_with(&format!("redirect the browser to: {authorize}")));
    assert_eq!(
        query_of(authorize)["redirect_uri"],
        k.oidc_redirect_uri("apple")
    );

    let callback = location(&c.get(authorize).send().await.unwrap());
    let r = c.get(&callback).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        k.selfservice_errors()
    );
    let back = location(&r);
    assert!(back.starts_with("myapp://callback?code="), "{back}");
    let return_to_code = back.strip_prefix("myapp://callback?code=").unwrap();

    let r = c
        .get(format!(
            "{}/sessions/token-exchange?init_code={init_code}&return_to_code={return_to_code}",
            k.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let parsed: ory_kratos_client::models::SuccessfulNativeLogin =
        serde_json::from_value(body.clone()).unwrap();
    assert_session(&body["session"]);
    assert_eq!(
        body["session"]["identity"]["traits"]["email"],
        apple.user().email
    );
    let token = parsed.session_token.unwrap();
    assert_eq!(
        whoami(&k, ("authorization", &format!("Bearer {token}"))).await,
        StatusCode::OK
    );

    // single use
    let r = c
        .get(format!(
            "{}/sessions/token-exchange?init_code={init_code}&return_to_code={return_to_code}",
            k.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .get(format!("{}/sessions/token-exchange", k.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------------------------------------
// revocation

#[tokio::test]
async fn delete_sessions_revokes_the_other_sessions_of_the_identity() {
    let k = KratosDouble::start().await;
    k.add_identity_session(
        "tok-a",
        "11111111-1111-4111-8111-111111111111",
        "a@example.com",
    );
    k.add_identity_session(
        "tok-b",
        "11111111-1111-4111-8111-111111111111",
        "a@example.com",
    );
    k.add_identity_session(
        "cookie-c",
        "11111111-1111-4111-8111-111111111111",
        "a@example.com",
    );
    k.add_identity_session(
        "tok-other",
        "22222222-2222-4222-8222-222222222222",
        "o@example.com",
    );
    let c = client();
    let r = c
        .delete(format!("{}/sessions", k.url()))
        .header("x-session-token", "tok-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let _: ory_kratos_client::models::DeleteMySessionsCount =
        serde_json::from_value(body.clone()).unwrap();
    assert_eq!(body["count"], 2);
    assert_eq!(
        whoami(&k, ("x-session-token", "tok-a")).await,
        StatusCode::OK
    );
    assert_eq!(
        whoami(&k, ("x-session-token", "tok-b")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        whoami(&k, ("cookie", "ory_kratos_session=cookie-c")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        whoami(&k, ("x-session-token", "tok-other")).await,
        StatusCode::OK
    );
    let r = c
        .delete(format!("{}/sessions", k.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn delete_session_by_id() {
    let k = KratosDouble::start().await;
    let me = k.add_identity_session(
        "tok-1",
        "33333333-3333-4333-8333-333333333333",
        "m@example.com",
    );
    let other = k.add_identity_session(
        "tok-2",
        "33333333-3333-4333-8333-333333333333",
        "m@example.com",
    );
    let stranger = k.add_identity_session(
        "tok-3",
        "44444444-4444-4444-8444-444444444444",
        "s@example.com",
    );
    let c = client();
    let del = |id: &Value, cred: &'static str| {
        let url = format!("{}/sessions/{}", k.url(), id.as_str().unwrap());
        let c = c.clone();
        async move {
            c.delete(url)
                .header("x-session-token", cred)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(del(&me["id"], "tok-1").await, StatusCode::BAD_REQUEST);
    // Kratos answers 204 for a session id that is not the caller's (and leaves it alone)
    assert_eq!(del(&stranger["id"], "tok-1").await, StatusCode::NO_CONTENT);
    assert_eq!(
        whoami(&k, ("x-session-token", "tok-3")).await,
        StatusCode::OK
    );
    assert_eq!(del(&other["id"], "tok-1").await, StatusCode::NO_CONTENT);
    assert_eq!(
        whoami(&k, ("x-session-token", "tok-2")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        whoami(&k, ("x-session-token", "tok-1")).await,
        StatusCode::OK
    );
    assert_eq!(del(&other["id"], "tok-1").await, StatusCode::NO_CONTENT);
    assert_eq!(
        del(&other["id"], "tok-gone").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn selfservice_requests_are_recorded_and_other_paths_still_404() {
    let k = KratosDouble::start().await;
    let c = client();
    c.get(format!("{}/self-service/login/api?x=1", k.url()))
        .header("x-forwarded-host", "app.example.com")
        .send()
        .await
        .unwrap();
    let recorded = k.selfservice_requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, "GET");
    assert_eq!(recorded[0].path_and_query, "/self-service/login/api?x=1");
    assert_eq!(
        recorded[0].header("X-Forwarded-Host"),
        Some("app.example.com")
    );
    // whoami calls are not counted as self-service requests and vice versa
    assert_eq!(k.whoami_calls(), 0);
    for p in ["/self-service/nope", "/sessions/abc", "/other"] {
        let r = c.get(format!("{}{p}", k.url())).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{p}");
    }
}

// ---------------------------------------------------------------------------------------------
// the OIDC provider on its own

#[tokio::test]
async fn oidc_provider_contract() {
    let p = OidcProvider::start().await;
    let c = client();
    let r = c
        .get(format!("{}?state=s", p.authorize_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let r = c
        .get(format!(
            "{}?client_id=c&redirect_uri={}&state=xyz&response_type=code",
            p.authorize_url(),
            urlenc("https://rp.example/cb?keep=1")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let loc = location(&r);
    assert!(
        loc.starts_with("https://rp.example/cb?keep=1&code="),
        "{loc}"
    );
    let q = query_of(&loc);
    assert_eq!(q["state"], "xyz");
    assert_eq!(p.redirect_uris(), vec!["https://rp.example/cb?keep=1"]);
    assert_eq!(p.authorizations()[0].client_id.as_deref(), Some("c"));

    // a different redirect_uri in the token request is refused (and burns the code)
    let r = c
        .post(p.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            ("redirect_uri", "https://rp.example/other"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!p.token_requests()[0].granted);

    // the right one works once
    let loc = location(
        &c.get(format!(
            "{}?redirect_uri={}&state=s2",
            p.authorize_url(),
            urlenc("https://rp.example/cb")
        ))
        .send()
        .await
        .unwrap(),
    );
    let code = query_of(&loc)["code"].clone();
    let token = |code: String| {
        let c = c.clone();
        let url = p.token_url();
        async move {
            c.post(url)
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", "https://rp.example/cb"),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let r = token(code.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.unwrap();
    let at = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(token(code).await.status(), StatusCode::BAD_REQUEST);

    let r = c
        .get(p.userinfo_url())
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["sub"], p.user().sub.as_str());
    assert_eq!(info["email"], p.user().email.as_str());
    let r = c
        .get(p.userinfo_url())
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    p.stop().await;
}
