//! Configuration: one TOML file, every key overridable from the environment, parsed and validated
//! completely at start-up into a typed [`Config`].
//!
//! - [`schema`]: the serde structs of the file (`deny_unknown_fields` everywhere).
//! - `compile`: validation into the typed config the proxy runs on; every error names its key path.
//! - `types`: the typed config itself ([`Config`] and its parts), plain data.
//! - `json_schema`: the JSON Schema of the file ([`json_schema()`], `sessiongate config-schema`).
//!
//! Environment overrides: `SESSIONGATE__KRATOS__PUBLIC_URL=...` sets `kratos.public_url`;
//! `SESSIONGATE__ROUTES__0__UPSTREAM=...` sets `routes[0].upstream`. Sections are separated by `__`;
//! a value is read as a TOML value when it parses as one (`2`, `true`, `["a"]`), else as a string.

mod compile;
mod json_schema;
pub mod schema;
mod types;

use std::fmt;
use std::path::Path;

pub use json_schema::{json_schema, DURATION_PATTERN, SCHEMA_ID};
pub use schema::{AuthMode, LogFormat, OnUnauthenticated, RawConfig, Secret, SharedCacheMode};
pub use types::{
    Aal, AdminConfig, CacheConfig, Config, IdentityTokenConfig, KratosConfig, LimitsConfig, Route,
    RouteMatch, ServerConfig, SharedCacheConfig, TracingConfig, Upstream,
};

/// The largest `server.max_connections` accepted (each connection also needs a file descriptor).
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// The prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SESSIONGATE__";

/// One problem in the configuration, located by its key path (`routes[1].upstream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("{}", list(.0))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The located issues (one for read/syntax errors).
    pub fn issues(&self) -> Vec<ConfigIssue> {
        match self {
            ConfigError::Invalid(v) => v.clone(),
            other => vec![ConfigIssue {
                path: String::new(),
                message: other.to_string(),
            }],
        }
    }
}

fn list(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads `path`, applies the process environment's overrides, and validates.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    from_str_with_env(&text, &path.display().to_string(), std::env::vars())
}

/// Parses TOML text without environment overrides (tests, `check` of a snippet).
pub fn from_str(text: &str) -> Result<Config, ConfigError> {
    from_str_with_env(text, "config", std::iter::empty())
}

/// Parses TOML text, applies the given `(name, value)` overrides, and validates.
pub fn from_str_with_env(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: match e.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                format!("{origin}:{line}:{column}")
            }
            None => origin.to_string(),
        },
        message: e.message().to_string(),
    })?;
    let mut issues = Vec::new();
    for (name, raw) in env {
        if let Some(key) = name.strip_prefix(ENV_PREFIX) {
            if let Err(message) = apply_override(&mut value, key, &raw) {
                issues.push(ConfigIssue {
                    path: format!("env {name}"),
                    message,
                });
            }
        }
    }
    if !issues.is_empty() {
        return Err(ConfigError::Invalid(issues));
    }
    let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::Invalid(vec![ConfigIssue {
            path: if path == "." {
                "(top level)".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }])
    })?;
    compile::compile(raw).map_err(ConfigError::Invalid)
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Sets one key of the TOML tree from an environment variable (`KRATOS__PUBLIC_URL`).
fn apply_override(root: &mut toml::Value, key: &str, raw: &str) -> Result<(), String> {
    let segments: Vec<String> = key.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if segments.iter().any(String::is_empty) {
        return Err("empty key segment".into());
    }
    let leaf = parse_env_value(raw);
    let mut cur = root;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        cur = match cur {
            toml::Value::Table(t) => {
                if last {
                    t.insert(seg.clone(), leaf);
                    return Ok(());
                }
                let next_is_index = segments[i + 1].parse::<usize>().is_ok();
                t.entry(seg.clone()).or_insert_with(|| {
                    if next_is_index {
                        toml::Value::Array(Vec::new())
                    } else {
                        toml::Value::Table(Default::default())
                    }
                })
            }
            toml::Value::Array(a) => {
                let idx: usize = seg
                    .parse()
                    .map_err(|_| format!("`{seg}` is not an index into a list"))?;
                if idx > a.len() {
                    return Err(format!("index {idx} skips entries (list has {})", a.len()));
                }
                if idx == a.len() {
                    a.push(toml::Value::Table(Default::default()));
                }
                if last {
                    a[idx] = leaf;
                    return Ok(());
                }
                &mut a[idx]
            }
            _ => return Err(format!("`{seg}` is below a key that is not a table")),
        };
    }
    Ok(())
}

/// Reads an environment value as a TOML value where it is one, else as a plain string.
fn parse_env_value(raw: &str) -> toml::Value {
    #[derive(serde::Deserialize)]
    struct Probe {
        v: toml::Value,
    }
    match toml::from_str::<Probe>(&format!("v = {raw}")) {
        Ok(p) => p.v,
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[kratos]
public_url = "http://127.0.0.1:4433"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:3000"
auth = "session"
"#;

    #[test]
    fn env_overrides_nested_and_indexed_keys() {
        let env = vec![
            (
                "SESSIONGATE__KRATOS__PUBLIC_URL".to_string(),
                "http://127.0.0.1:5555".to_string(),
            ),
            ("SESSIONGATE__SERVER__THREADS".to_string(), "3".to_string()),
            (
                "SESSIONGATE__ROUTES__0__UPSTREAM".to_string(),
                "http://127.0.0.1:4000".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let cfg = from_str_with_env(MINIMAL, "t", env).expect("valid");
        assert_eq!(cfg.kratos.public_url.as_str(), "http://127.0.0.1:5555/");
        assert_eq!(cfg.server.threads, 3);
        assert_eq!(cfg.routes[0].upstream.as_ref().map(|u| u.port), Some(4000));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let text = format!("{MINIMAL}\nbogus = 1\n");
        let err = from_str(&text).expect_err("unknown key");
        let issues = err.issues();
        assert!(issues[0].path.starts_with("routes[0]"), "{issues:?}");
        assert!(issues[0].message.contains("bogus"), "{issues:?}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let text = MINIMAL.replace("[kratos]", "[server]\nthreads = \"many\"\n[kratos]");
        let err = from_str(&text).expect_err("bad type");
        assert_eq!(err.issues()[0].path, "server.threads");
    }

    #[test]
    fn syntax_errors_are_reported_with_line_and_column() {
        let err = from_str("[kratos\n").expect_err("syntax");
        assert!(matches!(err, ConfigError::Syntax { .. }));
        let err =
            from_str("[kratos]\npublic_url = \"http://x\"\ntimeout = 5s\n").expect_err("syntax");
        let text = err.to_string();
        assert!(text.starts_with("config:3:"), "{text}");
    }
}
