//! Tests of validation: every failure is located by its key path, and all are reported at once.

use crate::config::from_str;

fn base(routes: &str) -> String {
    format!(
        r#"
[kratos]
public_url = "http://127.0.0.1:4433"
login_url = "https://app.example.com/login"
{routes}
"#
    )
}

fn issues(text: &str) -> Vec<String> {
    match from_str(text) {
        Ok(_) => vec![],
        Err(e) => e.issues().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_error_is_located_and_all_are_reported() {
    let text = base(
        r#"
[[routes]]
name = "a"
path_prefix = "/api/../x"
upstream = "ftp://x"
auth = "session"
require_aal = "aal9"
[routes.identity_headers]
"Bad Header" = "identity.id"
"#,
    );
    let got = issues(&text);
    assert!(
        got.iter().any(|s| s.starts_with("routes[0].path_prefix: ")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|s| s.starts_with("routes[0].upstream: ")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|s| s.starts_with("routes[0].require_aal: ")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|s| s.starts_with("routes[0].identity_headers.\"Bad Header\": ")),
        "{got:?}"
    );
}

#[test]
fn duplicate_matchers_are_a_conflict() {
    let text = base(
        r#"
[[routes]]
name = "a"
path_prefix = "/api"
upstream = "http://127.0.0.1:1"
auth = "session"
[[routes]]
name = "b"
path_prefix = "/api/"
upstream = "http://127.0.0.1:1"
auth = "anonymous"
"#,
    );
    let got = issues(&text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("routes[1]: matches the same requests as routes[0]"),
        "{got:?}"
    );
}

#[test]
fn disjoint_methods_do_not_conflict() {
    let text = base(
        r#"
[[routes]]
name = "a"
path = "/x"
methods = ["GET"]
upstream = "http://127.0.0.1:1"
auth = "anonymous"
[[routes]]
name = "b"
path = "/x"
methods = ["post"]
upstream = "http://127.0.0.1:1"
auth = "session"
"#,
    );
    assert!(issues(&text).is_empty());
}

#[test]
fn a_method_filtered_route_beside_an_unfiltered_one_is_no_conflict() {
    // an anonymous OPTIONS route for CORS preflights on the prefix of a session route
    let text = base(
        r#"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:1"
auth = "session"
[[routes]]
name = "preflight"
path_prefix = "/api"
methods = ["OPTIONS"]
upstream = "http://127.0.0.1:1"
auth = "anonymous"
"#,
    );
    assert!(issues(&text).is_empty(), "{:?}", issues(&text));
}

#[test]
fn header_limits_beyond_the_parser_are_refused() {
    let text = base(
        r#"
[server]
max_request_headers = 300
max_request_header_bytes = 2000000
[[routes]]
name = "a"
path = "/x"
upstream = "http://127.0.0.1:1"
auth = "anonymous"
"#,
    );
    let got = issues(&text);
    assert!(
        got.iter()
            .any(|s| s.starts_with("server.max_request_headers: must be between 1 and 256")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|s| s
                .starts_with("server.max_request_header_bytes: must be between 1024 and 1048575")),
        "{got:?}"
    );
}

#[test]
fn trusting_everyone_is_refused() {
    let text = base(
        r#"
[server]
trusted_proxies = ["10.0.0.0/8", "0.0.0.0/0", "nonsense"]
[[routes]]
name = "a"
path = "/x"
upstream = "http://127.0.0.1:1"
auth = "anonymous"
"#,
    );
    let got = issues(&text);
    assert!(
        got.iter()
            .any(|s| s.starts_with("server.trusted_proxies[1]: ")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|s| s.starts_with("server.trusted_proxies[2]: ")),
        "{got:?}"
    );
}

#[test]
fn auth_is_mandatory_and_redirect_needs_login_url() {
    let text = r#"
[kratos]
public_url = "http://127.0.0.1:4433"
[[routes]]
name = "a"
path = "/x"
upstream = "http://127.0.0.1:1"
auth = "session"
on_unauthenticated = "redirect"
"#;
    let got = issues(text);
    assert!(
        got.iter()
            .any(|s| s.starts_with("routes[0].on_unauthenticated: ")),
        "{got:?}"
    );
    let missing_auth =
        base("[[routes]]\nname = \"a\"\npath = \"/x\"\nupstream = \"http://127.0.0.1:1\"\n");
    let got = issues(&missing_auth);
    assert!(got[0].starts_with("routes[0]"), "{got:?}");
    assert!(got[0].contains("auth"), "{got:?}");
}

#[test]
fn connection_limits_are_checked_with_their_key_paths() {
    let text = base(
        r#"
[server]
max_connections = 0
downstream_keepalive_timeout = "0s"
[[routes]]
name = "a"
path = "/x"
upstream = "http://127.0.0.1:1"
auth = "anonymous"
"#,
    );
    let got = issues(&text);
    assert!(
        got.iter()
            .any(|s| s.starts_with("server.max_connections: must be between 1 and 1000000")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|s| s.starts_with("server.downstream_keepalive_timeout:")),
        "{got:?}"
    );
    let ok = text
        .replace("max_connections = 0", "max_connections = 3")
        .replace("\"0s\"", "\"1s\"");
    assert!(issues(&ok).is_empty(), "{:?}", issues(&ok));
}
