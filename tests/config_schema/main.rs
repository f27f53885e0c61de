//! `sessiongate config-schema`: the JSON Schema of the configuration file, checked against the
//! configurations the project ships and its test suite uses, and against `check`'s own verdicts: a
//! file the parser rejects (unknown key, wrong type) is rejected by the schema at the same key.

#[path = "../common/mod.rs"]
mod common;
mod suite;

use std::path::{Path, PathBuf};
use std::process::Command;

use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde_json::{json, Value};
use sessiongate::config::RawConfig;

fn schema() -> Value {
    sessiongate::config::json_schema()
}

fn validator() -> Validator {
    jsonschema::draft7::new(&schema()).unwrap_or_else(|e| panic!("schema does not compile: {e}"))
}

/// The TOML text as the JSON instance the schema describes.
fn instance(text: &str) -> Value {
    toml::from_str::<Value>(text).unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"))
}

/// Every schema error, as the key path `check` would print (`routes[0].auth`). Like serde, an
/// unknown key is named itself (the schema reports the table that holds it) and a missing key by
/// the table that lacks it (the schema names the key).
fn schema_errors(v: &Validator, text: &str) -> Vec<String> {
    let doc = instance(text);
    let mut out: Vec<String> = v
        .iter_errors(&doc)
        .flat_map(|e| {
            let at = key_path(&e.instance_path.to_string());
            match &e.kind {
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    unexpected.iter().map(|k| join(&at, k)).collect::<Vec<_>>()
                }
                _ => vec![at],
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `/routes/0/auth` → `routes[0].auth`.
fn key_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            out = join(&out, seg);
        }
    }
    out
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Whether the serde layer (`RawConfig`, before any value check) accepts the file.
fn parses(text: &str) -> bool {
    toml::from_str::<RawConfig>(text).is_ok()
}

const ROUTE: &str = r#"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:3000"
auth = "session"
"#;

/// A valid configuration: Kratos and one route.
fn minimal() -> String {
    format!("[kratos]\npublic_url = \"http://127.0.0.1:4433\"\n{ROUTE}")
}

#[test]
fn the_schema_is_draft_7_with_an_id_and_a_title() {
    let s = schema();
    jsonschema::draft7::meta::validate(&s).unwrap_or_else(|e| panic!("not a draft 7 schema: {e}"));
    assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(s["$id"], "urn:sessiongate:config");
    assert_eq!(s["title"], "sessiongate configuration");
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(s["required"], json!(["kratos"]));
    let sections: Vec<&String> = s["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .collect();
    assert_eq!(
        sections,
        [
            "admin",
            "cache",
            "identity_token",
            "kratos",
            "log",
            "routes",
            "server",
            "tracing"
        ]
    );
    for table in [
        "RawServer",
        "RawKratos",
        "RawCache",
        "RawSharedCache",
        "RawLog",
        "RawRoute",
        "RawAdmin",
        "RawTracing",
        "RawIdentityToken",
    ] {
        assert_eq!(
            s["definitions"][table]["additionalProperties"], false,
            "{table} must refuse unknown keys like deny_unknown_fields does"
        );
    }
}

/// The properties of every table: `(key path, property schema, required)`.
fn keys(s: &Value) -> Vec<(String, Value, bool)> {
    let tables = [
        ("", s.clone()),
        ("server", s["definitions"]["RawServer"].clone()),
        ("kratos", s["definitions"]["RawKratos"].clone()),
        ("cache", s["definitions"]["RawCache"].clone()),
        ("cache.shared", s["definitions"]["RawSharedCache"].clone()),
        ("log", s["definitions"]["RawLog"].clone()),
        ("routes[]", s["definitions"]["RawRoute"].clone()),
        ("admin", s["definitions"]["RawAdmin"].clone()),
        ("tracing", s["definitions"]["RawTracing"].clone()),
        (
            "identity_token",
            s["definitions"]["RawIdentityToken"].clone(),
        ),
    ];
    let mut out = Vec::new();
    for (prefix, table) in tables {
        let required: Vec<Value> = table["required"].as_array().cloned().unwrap_or_default();
        let props = table["properties"]
            .as_object()
            .expect("a table has properties");
        for (k, v) in props {
            out.push((join(prefix, k), v.clone(), required.contains(&json!(k))));
        }
    }
    out
}

#[test]
fn every_key_has_a_description_and_the_optional_ones_their_default() {
    let s = schema();
    let keys = keys(&s);
    // root, server, kratos, cache, cache.shared, log, routes[], admin, tracing, identity_token
    assert_eq!(
        keys.len(),
        8 + 17 + 7 + 5 + 4 + 3 + 19 + 1 + 3 + 4,
        "{keys:#?}"
    );
    let mut without_default = Vec::new();
    for (path, prop, required) in &keys {
        let d = prop["description"].as_str().unwrap_or("");
        assert!(d.len() >= 20, "{path}: description {d:?}");
        assert!(!d.contains('\n'), "{path}: line breaks left in {d:?}");
        if prop.get("default").is_none() {
            without_default.push(format!(
                "{path}{}",
                if *required { " (required)" } else { "" }
            ));
        }
    }
    // Sections have their keys' defaults; optional keys that are unset by default have none.
    assert_eq!(
        without_default,
        [
            "admin",
            "cache",
            "identity_token",
            "kratos (required)",
            "log",
            "routes",
            "server",
            "tracing",
            "server.decisions_listen",
            "server.public_url",
            "kratos.login_url",
            "kratos.public_url (required)",
            "cache.shared",
            "cache.shared.redis_url (required)",
            "routes[].auth",
            "routes[].cookie_domain",
            "routes[].host",
            "routes[].identity_token_audience",
            "routes[].identity_token_header",
            "routes[].methods",
            "routes[].name (required)",
            "routes[].ory_network_api_key",
            "routes[].path",
            "routes[].path_prefix",
            "routes[].require_aal",
            "routes[].upstream",
            "admin.purge_token_file",
            "tracing.otlp_endpoint",
            "identity_token.issuer (required)",
            "identity_token.jwks_path",
            "identity_token.signing_keys (required)",
        ]
    );
}

#[test]
fn defaults_durations_and_enumerations_are_what_the_parser_uses() {
    let s = schema();
    let server = &s["definitions"]["RawServer"]["properties"];
    assert_eq!(server["threads"]["default"], 2);
    assert_eq!(server["threads"]["type"], "integer");
    assert_eq!(server["grace_period"]["default"], "10s");
    assert_eq!(server["grace_period"]["type"], "string");
    assert_eq!(
        server["grace_period"]["pattern"],
        sessiongate::config::DURATION_PATTERN
    );
    assert_eq!(
        s["definitions"]["RawKratos"]["properties"]["timeout"]["default"],
        "500ms"
    );
    assert_eq!(
        s["definitions"]["RawCache"]["properties"]["max_ttl"]["default"],
        "1m"
    );
    assert_eq!(
        s["definitions"]["RawLog"]["properties"]["format"]["default"],
        "text"
    );
    let route = &s["definitions"]["RawRoute"]["properties"];
    assert_eq!(route["on_unauthenticated"]["default"], "json");
    assert_eq!(
        s["definitions"]["AuthMode"]["enum"],
        json!(["anonymous", "optional", "session"])
    );
    assert_eq!(
        s["definitions"]["LogFormat"]["enum"],
        json!(["text", "json"])
    );
    assert_eq!(
        s["definitions"]["OnUnauthenticated"]["enum"],
        json!(["json", "redirect"])
    );
    let auth = s["definitions"]["AuthMode"]["description"]
        .as_str()
        .unwrap_or("");
    assert!(
        auth.contains("\"session\": A valid session is required."),
        "{auth}"
    );

    // Writing every advertised default out gives the same parsed configuration as leaving them out.
    let mut explicit = String::new();
    for (section, def) in [
        ("server", "RawServer"),
        ("kratos", "RawKratos"),
        ("cache", "RawCache"),
        ("log", "RawLog"),
    ] {
        explicit.push_str(&format!("[{section}]\n"));
        if section == "kratos" {
            explicit.push_str("public_url = \"http://127.0.0.1:4433\"\n");
        }
        for (k, p) in s["definitions"][def]["properties"]
            .as_object()
            .expect("props")
        {
            if let Some(d) = p.get("default") {
                explicit.push_str(&format!("{k} = {d}\n"));
            }
        }
    }
    explicit.push_str(ROUTE);
    for (k, p) in route.as_object().expect("route props") {
        if let Some(d) = p.get("default") {
            explicit.push_str(&format!("{k} = {d}\n"));
        }
    }
    // server 15 defaults (decisions_listen has none), kratos public_url + 5, cache 4, log 3, the
    // route's 4 keys + 7 defaults.
    assert_eq!(explicit.matches(" = ").count(), 15 + 6 + 4 + 3 + 4 + 7);
    let with_defaults: RawConfig = toml::from_str(&explicit)
        .unwrap_or_else(|e| panic!("defaults do not parse: {e}\n{explicit}"));
    let implicit: RawConfig = toml::from_str(&minimal()).expect("minimal parses");
    assert_eq!(format!("{with_defaults:?}"), format!("{implicit:?}"));
}

/// `config/*.toml`, read from the repository.
fn shipped_configs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_shipped_configs_are_valid_against_the_schema() {
    let v = validator();
    let files = shipped_configs();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(
        ["demo-real.toml", "demo.toml", "sessiongate.toml"]
            .iter()
            .all(|n| names.iter().any(|m| m == n)),
        "{names:?}"
    );
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        assert_eq!(
            schema_errors(&v, &text),
            Vec::<String>::new(),
            "{}",
            f.display()
        );
        assert!(parses(&text), "{}", f.display());
    }
}

#[test]
fn the_test_suite_configs_get_the_same_verdict_from_the_schema_and_the_parser() {
    let v = validator();
    let configs = suite::configs();
    let mut valid = 0;
    let mut rejected = Vec::new();
    let mut disagreements = Vec::new();
    for c in &configs {
        let Ok(doc) = toml::from_str::<Value>(&c.text) else {
            rejected.push(format!("{} (TOML syntax)", c.origin));
            continue;
        };
        let by_schema = v.is_valid(&doc);
        let by_parser = parses(&c.text);
        if by_schema != by_parser {
            disagreements.push(format!(
                "{}: schema {by_schema}, parser {by_parser}: {:?}\n{}",
                c.origin,
                schema_errors(&v, &c.text),
                c.text
            ));
        } else if by_schema {
            valid += 1;
        } else {
            rejected.push(c.origin.clone());
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    eprintln!(
        "{} configs, {valid} valid, rejected: {rejected:#?}",
        configs.len()
    );
    assert!(configs.len() >= 23, "only {} configs found", configs.len());
    assert!(valid >= 22, "only {valid} of {} valid", configs.len());
    for file in [
        "tests/common/mod.rs",
        "tests/core.rs",
        "tests/edge.rs",
        "tests/http_protocol.rs",
        "tests/operations.rs",
        "tests/whoami_answers.rs",
        "tests/real_ory/stack.rs",
    ] {
        assert!(
            configs.iter().any(|c| c.origin.starts_with(file)),
            "no config found in {file}"
        );
    }
}

/// `(what, file, the key path check names)`: each file has exactly one mistake the parser catches.
fn bad_configs() -> Vec<(&'static str, String, &'static str)> {
    let with =
        |section: &str, line: &str| minimal().replacen(section, &format!("{section}\n{line}"), 1);
    vec![
        (
            "unknown top-level key",
            format!("bogus = 1\n{}", minimal()),
            "bogus",
        ),
        (
            "unknown key in [server]",
            format!("[server]\nthreadz = 2\n{}", minimal()),
            "server.threadz",
        ),
        (
            "unknown key in a route",
            format!("{}bogus = 1\n", minimal()),
            "routes[0].bogus",
        ),
        (
            "unknown section",
            format!("{}[tls]\ncert = \"x\"\n", minimal()),
            "tls",
        ),
        (
            "threads is a string",
            format!("[server]\nthreads = \"two\"\n{}", minimal()),
            "server.threads",
        ),
        (
            "threads is negative",
            format!("[server]\nthreads = -1\n{}", minimal()),
            "server.threads",
        ),
        (
            "auth is not a mode",
            minimal().replace("\"session\"", "\"maybe\""),
            "routes[0].auth",
        ),
        (
            "max_ttl is a number",
            format!("[cache]\nmax_ttl = 5\n{}", minimal()),
            "cache.max_ttl",
        ),
        (
            "max_ttl has no unit",
            format!("[cache]\nmax_ttl = \"5\"\n{}", minimal()),
            "cache.max_ttl",
        ),
        (
            "max_ttl has an unknown unit",
            format!("[cache]\nmax_ttl = \"5 parsecs\"\n{}", minimal()),
            "cache.max_ttl",
        ),
        (
            "breaker threshold over u32",
            with("[kratos]", "circuit_breaker_failures = 5000000000"),
            "kratos.circuit_breaker_failures",
        ),
        (
            "log format is not a format",
            format!("[log]\nformat = \"xml\"\n{}", minimal()),
            "log.format",
        ),
        (
            "websocket is a string",
            format!("{}websocket = \"yes\"\n", minimal()),
            "routes[0].websocket",
        ),
        (
            "an identity header path is a number",
            format!("{}[routes.identity_headers]\n\"X-Id\" = 1\n", minimal()),
            "routes[0].identity_headers.X-Id",
        ),
        (
            "methods is a string",
            format!("{}methods = \"GET\"\n", minimal()),
            "routes[0].methods",
        ),
        (
            "routes is a table",
            "[kratos]\npublic_url = \"http://127.0.0.1:4433\"\n[routes]\nname = \"api\"\n"
                .to_string(),
            "routes",
        ),
        (
            "kratos.public_url is missing",
            minimal().replace("public_url = \"http://127.0.0.1:4433\"", "timeout = \"1s\""),
            "kratos",
        ),
        ("[kratos] is missing", ROUTE.to_string(), "(top level)"),
    ]
}

#[test]
fn a_mistake_is_rejected_by_the_schema_at_the_key_check_names() {
    let v = validator();
    let cases = bad_configs();
    assert_eq!(cases.len(), 18);
    for (what, text, key) in &cases {
        let issues = sessiongate::config::from_str(text)
            .map(|_| panic!("{what}: check accepted\n{text}"))
            .unwrap_err()
            .issues();
        assert_eq!(issues.len(), 1, "{what}: {issues:?}");
        assert_eq!(issues[0].path, *key, "{what}: check: {issues:?}");
        let found: Vec<String> = schema_errors(&v, text)
            .into_iter()
            .map(|p| {
                if p.is_empty() {
                    "(top level)".into()
                } else {
                    p
                }
            })
            .collect();
        assert_eq!(found, [*key], "{what}: schema\n{text}");
    }
    // The same files with the mistake removed are valid for both.
    assert!(v.is_valid(&instance(&minimal())));
    assert!(sessiongate::config::from_str(&minimal()).is_ok());
}

#[test]
fn config_schema_prints_the_librarys_schema_without_reading_a_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["config-schema", "--config", "/nonexistent/sessiongate.toml"])
        .output()
        .expect("run sessiongate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        stdout.starts_with("{\n  \"$id\": \"urn:sessiongate:config\","),
        "{stdout}"
    );
    let printed: Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(printed, schema());
}

#[test]
fn the_duration_pattern_accepts_what_humantime_accepts() {
    let v = validator();
    let verdicts = |d: &str| {
        let text = format!("[cache]\nmax_ttl = \"{d}\"\n{}", minimal());
        (v.is_valid(&instance(&text)), parses(&text))
    };
    for ok in [
        "0",
        "0s",
        "500ms",
        "10s",
        "1m",
        "1h 30m",
        "1h30m",
        "1.5s",
        "2min",
        "1 day",
        " 3 weeks ",
    ] {
        assert_eq!(verdicts(ok), (true, true), "{ok:?}");
    }
    for bad in [
        "",
        "5",
        "s",
        "5 parsecs",
        "-1s",
        "1.s",
        "1h x",
        "1,5s",
        "5S",
    ] {
        assert_eq!(verdicts(bad), (false, false), "{bad:?}");
    }
    // Known corners where the pattern is stricter or looser than humantime; `check` decides.
    assert_eq!(
        verdicts("1 0s"),
        (false, true),
        "humantime skips spaces inside a number"
    );
    assert_eq!(
        verdicts("1.5ns"),
        (true, false),
        "humantime refuses a fraction of a nanosecond"
    );
}
