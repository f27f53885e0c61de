//! The `sessiongate` binary: `check` validates and names each error by its key path.

use std::process::Command;

fn sessiongate(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessiongate"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sessiongate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("sessiongate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[test]
fn the_example_config_is_valid() {
    let (code, out, err) = sessiongate(&["check", "--config", "config/sessiongate.toml"], &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(": ok ("), "{out}");
}

#[test]
fn check_names_every_error_by_key_path() {
    let path = write(
        "bad.toml",
        r#"
[kratos]
public_url = "http://127.0.0.1:4433"
[[routes]]
name = "ok"
path_prefix = "/a"
upstream = "http://127.0.0.1:3000"
auth = "anonymous"
[[routes]]
name = "broken"
path_prefix = "/b"
upstream = "not a url"
auth = "session"
require_aal = "aal7"
"#,
    );
    let (code, _, err) = sessiongate(&["check", "--config", &path], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("routes[1].upstream: "), "{err}");
    assert!(err.contains("routes[1].require_aal: "), "{err}");
}

#[test]
fn environment_overrides_are_validated_too() {
    let (code, _, err) = sessiongate(
        &["check", "--config", "config/sessiongate.toml"],
        &[("SESSIONGATE__KRATOS__PUBLIC_URL", "not-a-url")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("kratos.public_url: "), "{err}");
    let (code, _, err) = sessiongate(
        &["check", "--config", "config/sessiongate.toml"],
        &[("SESSIONGATE__CACHE__BOGUS", "1")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("cache") && err.contains("bogus"), "{err}");
    let (code, _, err) = sessiongate(
        &["check", "--config", "config/sessiongate.toml"],
        &[("SESSIONGATE__TRACING__SAMPLE_RATIO", "2")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("tracing.sample_ratio: "), "{err}");
}

#[test]
fn unreadable_and_malformed_files_are_clear_errors() {
    let (code, _, err) = sessiongate(&["check", "--config", "/nonexistent/x.toml"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/x.toml"), "{err}");
    let path = write("syntax.toml", "[kratos\npublic_url = 1\n");
    let (code, _, err) = sessiongate(&["check", "--config", &path], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn an_upstream_name_that_does_not_resolve_here_is_a_warning_not_an_error() {
    // names are resolved at run time (a Kubernetes Service resolves only inside the cluster)
    let path = write(
        "unresolved.toml",
        r#"
[kratos]
public_url = "http://127.0.0.1:4433"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "http://sessiongate-upstream.invalid:8080"
auth = "session"
"#,
    );
    let (code, out, err) = sessiongate(&["check", "--config", &path], &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(": ok ("), "{out}");
    assert!(
        err.contains("warning: routes[0].upstream: `sessiongate-upstream.invalid`"),
        "{err}"
    );
}
