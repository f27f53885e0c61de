//! Group 5: the testkit doubles held against reality. One scenario of requests goes, unchanged,
//! to the testkit's Kratos double and to real Kratos v1.3.1 (directly, not through sessiongate);
//! for every answer the two must agree on
//! - the status;
//! - the headers sessiongate reads: `Content-Type`, `Cache-Control`, `Vary`, `Retry-After`,
//!   `X-Kratos-Authenticated-Identity-Id` and `Ory-Session-Cache-For` (present or not), the
//!   `Location`'s shape (origins and UUIDs replaced, query values dropped) and each `Set-Cookie`'s
//!   name and attributes (`Path`, `HttpOnly`, `SameSite`, `Domain`, `Secure`, whether it deletes
//!   the cookie; never values);
//! - the body's kind (JSON, HTML, empty) and JSON shape: every field path with its JSON types
//!   (array elements merged into `path[]`), values only of discriminators (`error.id`,
//!   `error.code`, `continue_with[].action`, and every `type`, `state`, `active`,
//!   `authenticator_assurance_level`).
//!
//! Both sides are configured alike: real Kratos gets the identity schema of the double's
//! identities (`tests/ory/doubles.identity.schema.json`: email + name, the email verifiable),
//! the double gets the stack's UI URLs, an OIDC provider (`hydra`) and cacheable sessions. A
//! difference fails with every difference listed; fix the double (`testkit/src`), not this test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::RequestBuilder;
use serde_json::{json, Value};
use sessiongate_testkit::{KratosDouble, OidcProvider};

use crate::common::client;
use crate::stack::{browser, csrf_of, root, OryStack, StackOpts};

const PASSWORD: &str = "a-long-test-password-4711";
/// The double's stand-in for the application's public origin (its UI and return URLs).
const PUBLIC: &str = "https://public.example";
const EXCHANGE: &str = "return_session_token_exchange_code=true&return_to=myapp://callback";
/// A session id nobody has.
const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

/// Body fields real Kratos sends and the double may leave out because nothing in sessiongate or
/// its tests reads them (a path, or a prefix ending in `*`); each with its reason. None so far:
/// the double sends every field real Kratos v1.3.1 sends in this scenario.
const REAL_ONLY: &[&str] = &[];
/// Body fields only the double sends (same form, same rule). None so far.
const DOUBLE_ONLY: &[&str] = &[];
/// Fields whose values are compared, not only their types: keys anywhere, or path tails.
const DISCRIMINATORS: &[&str] = &[
    "type",
    "state",
    "active",
    "authenticator_assurance_level",
    "continue_with[].action",
    "error.id",
    "error.code",
];

/// What one answer looked like, reduced to what must agree.
#[derive(Debug, Clone, Default)]
struct Observed {
    status: u16,
    headers: BTreeMap<&'static str, String>,
    /// JSON path -> the kinds seen there (`string`, `object`, `"choose_method"`, ...).
    shape: BTreeMap<String, BTreeSet<String>>,
}

/// One side of the comparison.
struct Side {
    name: &'static str,
    /// Kratos's public API (requests go here).
    base: String,
    /// Origins of `Location`s and their placeholders.
    origins: Vec<(String, &'static str)>,
    out: Vec<(String, u16, Observed)>,
}

/// An answer: what was observed plus what the scenario needs to go on.
struct Answer {
    headers: HeaderMap,
    json: Value,
}

impl Side {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `rq`, records its answer as case `name` (expected status `want`).
    async fn step(&mut self, name: &str, want: u16, rq: RequestBuilder) -> Answer {
        let r = rq
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", self.name));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let observed = observe(status, &headers, &text, &self.origins);
        self.out.push((name.to_owned(), want, observed));
        Answer {
            headers,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// A native password login outside the recorded cases: (token, session id).
    async fn login(&self, email: &str) -> (String, String) {
        let flow = json_of(client().get(self.url("/self-service/login/api"))).await;
        let url = self.url(&format!("/self-service/login?flow={}", str_of(&flow["id"])));
        let body = json!({ "method": "password", "identifier": email, "password": PASSWORD });
        let v = json_of(client().post(url).json(&body)).await;
        (str_of(&v["session_token"]), str_of(&v["session"]["id"]))
    }
}

/// The JSON of a successful answer outside the recorded cases.
async fn json_of(rq: RequestBuilder) -> Value {
    let r = rq.send().await.and_then(|r| r.error_for_status());
    r.expect("request").json().await.expect("json")
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

fn observe(status: u16, h: &HeaderMap, body: &str, origins: &[(String, &str)]) -> Observed {
    let get = |n: &str| {
        h.get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut headers = BTreeMap::new();
    for n in ["content-type", "cache-control", "vary"] {
        headers.insert(n, get(n).unwrap_or_else(|| "(none)".into()));
    }
    for n in [
        "ory-session-cache-for",
        "retry-after",
        "x-kratos-authenticated-identity-id",
    ] {
        let present = if get(n).is_some() {
            "present"
        } else {
            "absent"
        };
        headers.insert(n, present.to_owned());
    }
    let location = get("location").map_or_else(|| "(none)".into(), |l| url_shape(&l, origins));
    headers.insert("location", location);
    let mut cookies: Vec<String> = h
        .get_all(SET_COOKIE)
        .iter()
        .map(|c| cookie_shape(&String::from_utf8_lossy(c.as_bytes())))
        .collect();
    cookies.sort();
    headers.insert("set-cookie", cookies.join(" | "));
    let ct = get("content-type").unwrap_or_default();
    let mut shape = BTreeMap::new();
    let kind = if body.is_empty() {
        "empty"
    } else if ct.contains("json") {
        match serde_json::from_str::<Value>(body) {
            Ok(v) => {
                shape_of("", &v, &mut shape);
                "json"
            }
            Err(_) => "not JSON",
        }
    } else if ct.contains("html") {
        "html"
    } else {
        "text"
    };
    headers.insert("body", kind.to_owned());
    Observed {
        status,
        headers,
        shape,
    }
}

/// `{public}/ui/login?flow=*`: known origins replaced, UUIDs and query values dropped.
fn url_shape(url: &str, origins: &[(String, &str)]) -> String {
    let mut u = url.to_owned();
    for (origin, name) in origins {
        if let Some(rest) = u.strip_prefix(origin.as_str()) {
            u = format!("{name}{rest}");
            break;
        }
    }
    let (path, query) = u.split_once('?').unwrap_or((&u, ""));
    let path: Vec<String> = path
        .split('/')
        .map(|seg| {
            let uuid = seg.len() == 36 && seg.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            if uuid {
                "{uuid}".to_owned()
            } else {
                seg.to_owned()
            }
        })
        .collect();
    let mut keys: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, _)| format!("{k}=*"))
        .collect();
    keys.sort();
    let mut out = path.join("/");
    if !keys.is_empty() {
        out = format!("{out}?{}", keys.join("&"));
    }
    out
}

/// `csrf_token_*; HttpOnly; Max-Age>0; Path=/; SameSite=Lax`: name and attributes, no values.
fn cookie_shape(c: &str) -> String {
    let mut parts = c.split(';').map(str::trim);
    let name = parts.next().unwrap_or_default();
    let name = name.split_once('=').map_or(name, |(n, _)| n);
    let name = if name.starts_with("csrf_token_") {
        "csrf_token_*"
    } else {
        name
    };
    let mut attrs: Vec<String> = parts
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k.to_ascii_lowercase().as_str() {
                "path" => format!("Path={v}"),
                "samesite" => format!("SameSite={v}"),
                "domain" => format!("Domain={v}"),
                "httponly" => "HttpOnly".into(),
                "secure" => "Secure".into(),
                "expires" => "Expires".into(),
                "max-age" if v.parse::<i64>().is_ok_and(|n| n <= 0) => "Max-Age=0".into(),
                "max-age" => "Max-Age>0".into(),
                other => format!("{other}?"),
            }
        })
        .collect();
    attrs.sort();
    format!("{name}; {}", attrs.join("; "))
}

/// Every field path of `v` with its kinds (see [`Observed::shape`]).
fn shape_of(path: &str, v: &Value, out: &mut BTreeMap<String, BTreeSet<String>>) {
    let key = path.rsplit('.').next().unwrap_or_default();
    let discriminator = DISCRIMINATORS
        .iter()
        .any(|d| path == *d || path.ends_with(&format!(".{d}")) || (!d.contains('.') && key == *d));
    let kind = match v {
        Value::Null => "null".to_owned(),
        Value::Bool(_) | Value::Number(_) | Value::String(_) if discriminator => v.to_string(),
        Value::Bool(_) => "bool".to_owned(),
        Value::Number(_) => "number".to_owned(),
        Value::String(_) => "string".to_owned(),
        Value::Array(items) => {
            for item in items {
                shape_of(&format!("{path}[]"), item, out);
            }
            "array".to_owned()
        }
        Value::Object(m) => {
            for (k, item) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                shape_of(&p, item, out);
            }
            "object".to_owned()
        }
    };
    if !path.is_empty() {
        out.entry(path.to_owned()).or_default().insert(kind);
    }
}

fn allowed(list: &[&str], path: &str) -> bool {
    list.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == *a,
    })
}

/// Every difference between the double's answer and real Kratos's.
fn differences(double: &Observed, real: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    if double.status != real.status {
        out.push(format!(
            "status: double {}, real {}",
            double.status, real.status
        ));
    }
    for (name, r) in &real.headers {
        let d = &double.headers[name];
        if d != r {
            out.push(format!("{name}: double `{d}`, real `{r}`"));
        }
    }
    let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(" | ");
    for (path, r) in &real.shape {
        match double.shape.get(path) {
            None if allowed(REAL_ONLY, path) => {}
            None => out.push(format!("{path}: missing in the double (real: {})", join(r))),
            Some(d) if d != r => out.push(format!("{path}: double {}, real {}", join(d), join(r))),
            Some(_) => {}
        }
    }
    for (path, d) in &double.shape {
        if !real.shape.contains_key(path) && !allowed(DOUBLE_ONLY, path) {
            out.push(format!("{path}: only in the double ({})", join(d)));
        }
    }
    out
}

/// The scenario, the same for both sides: the answers are in `side.out`. The identity
/// `alice@example.test` (password [`PASSWORD`], verified email) exists beforehand.
async fn scenario(s: &mut Side) {
    let alice = "alice@example.test";
    let c = client();
    let accept = ("Accept", "application/json");
    let flow_of =
        |kind: &str, flow: &Value| format!("/self-service/{kind}?flow={}", str_of(&flow["id"]));
    let creds =
        |id: &str, pw: &str| json!({ "method": "password", "identifier": id, "password": pw });

    // native flows, created as a native app with the session token exchange does
    let rq = c.get(s.url(&format!("/self-service/login/api?{EXCHANGE}")));
    let login = s.step("native login flow", 200, rq).await.json;
    let rq = c.get(s.url(&format!("/self-service/registration/api?{EXCHANGE}")));
    let reg = s.step("native registration flow", 200, rq).await.json;
    let bob = json!({ "email": "bob@example.test", "name": { "first": "Bob", "last": "Example" } });
    let body = json!({ "method": "password", "password": PASSWORD, "traits": bob });
    let rq = c.post(s.url(&flow_of("registration", &reg))).json(&body);
    s.step("native registration: password accepted", 200, rq)
        .await;
    let reg2 = json_of(c.get(s.url("/self-service/registration/api"))).await;
    let body = json!({ "method": "password", "password": PASSWORD, "traits": { "email": alice } });
    let rq = c.post(s.url(&flow_of("registration", &reg2))).json(&body);
    s.step("native registration: email taken", 400, rq).await;
    let rq = c.get(s.url(&format!(
        "/self-service/registration/flows?id={}",
        str_of(&reg2["id"])
    )));
    s.step("registration flow by id, client without cookies", 200, rq)
        .await;
    let url = s.url(&flow_of("login", &login));
    let rq = c.post(&url).json(&creds(alice, "not-the-password"));
    s.step("native login: wrong password", 400, rq).await;
    let rq = c.post(&url).json(&creds(alice, PASSWORD));
    let token = str_of(
        &s.step("native login: password accepted", 200, rq)
            .await
            .json["session_token"],
    );

    // whoami
    let whoami = s.url("/sessions/whoami");
    let rq = c.get(&whoami).header("X-Session-Token", &token);
    s.step("whoami: session token", 200, rq).await;
    let rq = c
        .get(&whoami)
        .header("Authorization", format!("Bearer {token}"));
    s.step("whoami: bearer token", 200, rq).await;
    s.step("whoami: no credential", 401, c.get(&whoami)).await;
    let rq = c
        .get(&whoami)
        .header("X-Session-Token", "ory_st_unknown0000000000000000000");
    s.step("whoami: unknown token", 401, rq).await;

    // browser login
    let (html_browser, _) = browser();
    let flow_url = s.url("/self-service/login/browser");
    s.step(
        "browser login flow, HTML client",
        303,
        html_browser.get(&flow_url),
    )
    .await;
    let (b, _) = browser();
    let rq = b.get(&flow_url).header(accept.0, accept.1);
    let flow = s
        .step("browser login flow, JSON client", 200, rq)
        .await
        .json;
    let url = s.url(&flow_of("login", &flow));
    let post = |body: Value| b.post(&url).header(accept.0, accept.1).json(&body);
    s.step(
        "browser login: no csrf_token",
        403,
        post(creds(alice, PASSWORD)),
    )
    .await;
    let with_csrf = |mut v: Value| {
        v["csrf_token"] = json!(csrf_of(&flow));
        v
    };
    let rq = post(with_csrf(creds(alice, "not-the-password")));
    s.step("browser login: wrong password", 400, rq).await;
    let rq = post(with_csrf(creds(alice, PASSWORD)));
    let a = s.step("browser login: password accepted", 200, rq).await;
    let cookie = a
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("ory_kratos_session="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    let cookie_h = format!("ory_kratos_session={cookie}");
    let rq = c.get(&whoami).header("Cookie", &cookie_h);
    s.step("whoami: session cookie", 200, rq).await;
    let rq = b.get(&flow_url).header(accept.0, accept.1);
    s.step("browser login flow, JSON client with a session", 400, rq)
        .await;

    let (b3, _) = browser();
    let rq = b3
        .get(s.url("/self-service/registration/browser"))
        .header(accept.0, accept.1);
    let flow = s
        .step("browser registration flow, JSON client", 200, rq)
        .await
        .json;
    let carol = json!({ "email": "carol@example.test", "name": { "first": "C", "last": "E" } });
    let body = json!({ "method": "password", "password": PASSWORD, "traits": carol,
        "csrf_token": csrf_of(&flow) });
    let rq = b3
        .post(s.url(&flow_of("registration", &flow)))
        .header(accept.0, accept.1)
        .json(&body);
    s.step("browser registration: password accepted", 200, rq)
        .await;

    // browser logout
    let logout_url = s.url("/self-service/logout/browser");
    let rq = b.get(&logout_url).header(accept.0, accept.1);
    let logout_token =
        str_of(&s.step("logout URL, JSON client", 200, rq).await.json["logout_token"]);
    s.step("logout URL, HTML client", 200, b.get(&logout_url))
        .await;
    let (nobody, _) = browser();
    let rq = nobody.get(&logout_url).header(accept.0, accept.1);
    s.step("logout URL without a session, JSON client", 401, rq)
        .await;
    let rq = nobody.get(&logout_url);
    s.step("logout URL without a session, HTML client", 303, rq)
        .await;
    let logout = s.url("/self-service/logout");
    let rq = b
        .get(format!("{logout}?token=ory_lo_not-this-sessions"))
        .header(accept.0, accept.1);
    s.step("logout: another token, JSON client", 403, rq).await;
    let rq = b.get(&logout).header(accept.0, accept.1);
    s.step("logout: no token, JSON client", 400, rq).await;
    let rq = b.get(format!("{logout}?token={logout_token}"));
    s.step("logout: the session's token, HTML client", 303, rq)
        .await;
    let rq = c.get(&whoami).header("Cookie", &cookie_h);
    s.step("whoami: logged-out cookie", 401, rq).await;

    // API logout
    let (t2, _) = s.login(alice).await;
    let api_logout = s.url("/self-service/logout/api");
    let rq = |t: &str| c.delete(&api_logout).json(&json!({ "session_token": t }));
    s.step("API logout", 204, rq(&t2)).await;
    s.step("API logout: already logged out", 204, rq(&t2)).await;
    s.step(
        "API logout: unknown token",
        403,
        rq("ory_st_unknown0000000000000000000"),
    )
    .await;
    s.step("API logout: no body", 400, c.delete(&api_logout))
        .await;

    // revocation
    let (t3, s3) = s.login(alice).await;
    let (_, s4) = s.login(alice).await;
    let base = s.base.clone();
    let del = |id: &str| {
        c.delete(format!("{base}/sessions/{id}"))
            .header("X-Session-Token", &t3)
    };
    s.step(
        "DELETE /sessions/{id}: another session of the caller",
        204,
        del(&s4),
    )
    .await;
    s.step("DELETE /sessions/{id}: the caller's own", 400, del(&s3))
        .await;
    s.step("DELETE /sessions/{id}: unknown id", 204, del(UNKNOWN_ID))
        .await;
    s.step("DELETE /sessions/{id}: not a UUID", 400, del("not-a-uuid"))
        .await;
    let rq = c.delete(s.url(&format!("/sessions/{s4}")));
    s.step("DELETE /sessions/{id}: no credential", 401, rq)
        .await;
    let rq = c.delete(s.url("/sessions")).header("X-Session-Token", &t3);
    s.step("DELETE /sessions", 200, rq).await;
    s.step(
        "DELETE /sessions: no credential",
        401,
        c.delete(s.url("/sessions")),
    )
    .await;

    // session token exchange errors
    let exchange = s.url("/sessions/token-exchange");
    s.step("token exchange: no codes", 400, c.get(&exchange))
        .await;
    let rq = c.get(format!("{exchange}?init_code=abc"));
    s.step("token exchange: no return_to_code", 400, rq).await;
    let rq = c.get(format!("{exchange}?init_code=abc&return_to_code=def"));
    s.step("token exchange: unknown codes", 404, rq).await;
    let init = str_of(&login["session_token_exchange_code"]);
    let rq = c.get(format!("{exchange}?init_code={init}&return_to_code=wrong"));
    s.step(
        "token exchange: a flow's init code, wrong return_to_code",
        404,
        rq,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kratos_double_answers_like_real_kratos() {
    let schema = root().join("tests/ory/doubles.identity.schema.json");
    let schemas = json!([{ "id": "default", "url": format!("file://{}", schema.display()) }]);
    let stack = OryStack::start_with(StackOpts {
        ory_env: vec![("IDENTITY_SCHEMAS".into(), schemas.to_string())],
        ..StackOpts::default()
    })
    .await;
    // alice, with a verified address (as the double's `add_password_identity` makes her)
    let r = client()
        .post(format!("{}/admin/identities", stack.kratos_admin))
        .json(&json!({
            "schema_id": "default",
            "traits": { "email": "alice@example.test", "name": { "first": "Alice", "last": "Example" } },
            "credentials": { "password": { "config": { "password": PASSWORD } } },
            "verifiable_addresses": [{ "value": "alice@example.test", "via": "email",
                "verified": true, "status": "completed" }],
            "recovery_addresses": [{ "value": "alice@example.test", "via": "email" }],
        }))
        .send()
        .await
        .expect("create identity");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    let double = KratosDouble::start().await;
    double.set_ui_base(&format!("{PUBLIC}/ui"));
    double.set_default_return_url(&format!("{PUBLIC}/app/"));
    double.set_logout_return_url(Some(&format!("{PUBLIC}/ui/login")));
    double.set_session_cache_for(Some(30));
    double.set_negative_cache_for(Some(60));
    let provider = OidcProvider::start().await;
    double.add_oidc_provider("hydra", &provider);
    double.add_password_identity("alice@example.test", PASSWORD);

    let mut real = Side {
        name: "real Kratos",
        base: stack.kratos_public.clone(),
        origins: vec![
            (stack.kratos_base.clone(), "{kratos}"),
            (stack.kratos_public.clone(), "{kratos}"),
            (stack.public.clone(), "{public}"),
        ],
        out: Vec::new(),
    };
    let mut fake = Side {
        name: "the double",
        base: double.url(),
        origins: vec![(double.url(), "{kratos}"), (PUBLIC.to_owned(), "{public}")],
        out: Vec::new(),
    };
    scenario(&mut real).await;
    scenario(&mut fake).await;

    let mut report = String::new();
    for ((name, want, r), (_, _, d)) in real.out.iter().zip(&fake.out) {
        let mut diffs = differences(d, r);
        if r.status != *want {
            diffs.insert(
                0,
                format!(
                    "(scenario) real Kratos answered {}, expected {want}",
                    r.status
                ),
            );
        }
        if !diffs.is_empty() {
            let _ = writeln!(report, "── {name}");
            for line in diffs {
                let _ = writeln!(report, "     {line}");
            }
        }
    }
    assert_eq!(real.out.len(), fake.out.len());
    assert!(
        report.is_empty(),
        "the Kratos double differs from real Kratos v1.3.1:\n{report}\n{}",
        stack.log_tail("kratos")
    );
}
