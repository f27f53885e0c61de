//! `[tracing]`: the OTLP endpoint spans are exported to (none: no export), the service name and
//! the sample ratio. Trace context propagation needs no configuration: it is always on.

use url::Url;

use super::validate::{http_url, Issues};
use crate::config::schema::RawTracing;
use crate::config::TracingConfig;

/// The path OTLP/HTTP collectors take traces on when the endpoint names none (OTLP
/// specification, "OTLP/HTTP Request": `/v1/traces`).
const OTLP_TRACES_PATH: &str = "v1/traces";

/// Validates `[tracing]`; `None` after pushing an issue for each bad key.
pub(super) fn compile_tracing(raw: &RawTracing, issues: &mut Issues) -> Option<TracingConfig> {
    let before = issues.count();
    let otlp_endpoint = match raw.otlp_endpoint.as_deref() {
        None => None,
        Some(u) => http_url(u, "tracing.otlp_endpoint", issues).and_then(|url| {
            if url.query().is_some() || url.fragment().is_some() {
                issues.push(
                    "tracing.otlp_endpoint",
                    format!("`{u}` must not have a query or a fragment"),
                );
                return None;
            }
            Some(traces_url(url))
        }),
    };
    let name = raw.service_name.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        issues.push(
            "tracing.service_name",
            "must be 1 to 255 characters without control characters",
        );
    }
    if !(0.0..=1.0).contains(&raw.sample_ratio) {
        issues.push(
            "tracing.sample_ratio",
            format!("{} is not between 0.0 and 1.0", raw.sample_ratio),
        );
    }
    (issues.count() == before).then(|| TracingConfig {
        otlp_endpoint,
        service_name: name.to_string(),
        sample_ratio: raw.sample_ratio,
    })
}

/// The URL spans are posted to: the endpoint as written when it has a path, else the endpoint
/// with `/v1/traces` (as the OTLP exporter specification derives a signal's URL from a base).
fn traces_url(url: Url) -> Url {
    if url.path() == "/" {
        url.join(OTLP_TRACES_PATH).unwrap_or(url)
    } else {
        url
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{from_str, from_str_with_env};

    const MINIMAL: &str = r#"
[kratos]
public_url = "http://127.0.0.1:4433"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:3000"
auth = "session"
"#;

    fn with(tracing: &str) -> String {
        format!("[tracing]\n{tracing}\n{MINIMAL}")
    }

    #[test]
    fn export_is_off_by_default() {
        let cfg = from_str(MINIMAL).expect("valid");
        assert_eq!(cfg.tracing.otlp_endpoint, None);
        assert_eq!(cfg.tracing.service_name, "sessiongate");
        assert_eq!(cfg.tracing.sample_ratio, 1.0);
    }

    #[test]
    fn endpoint_without_path_gets_the_otlp_traces_path() {
        let cfg = from_str(&with("otlp_endpoint = \"http://127.0.0.1:4318\"")).expect("valid");
        let url = cfg.tracing.otlp_endpoint.map(|u| u.to_string());
        assert_eq!(url.as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
        let cfg = from_str(&with(
            "otlp_endpoint = \"http://collector:4318/otlp/traces\"",
        ))
        .expect("valid");
        let url = cfg.tracing.otlp_endpoint.map(|u| u.to_string());
        assert_eq!(url.as_deref(), Some("http://collector:4318/otlp/traces"));
    }

    #[test]
    fn environment_overrides_tracing_keys() {
        let env = [
            (
                "SESSIONGATE__TRACING__OTLP_ENDPOINT".to_string(),
                "http://127.0.0.1:4318".to_string(),
            ),
            (
                "SESSIONGATE__TRACING__SAMPLE_RATIO".to_string(),
                "0.25".to_string(),
            ),
            (
                "SESSIONGATE__TRACING__SERVICE_NAME".to_string(),
                "edge-gate".to_string(),
            ),
        ];
        let cfg = from_str_with_env(MINIMAL, "t", env).expect("valid");
        assert!(cfg.tracing.otlp_endpoint.is_some());
        assert_eq!(cfg.tracing.sample_ratio, 0.25);
        assert_eq!(cfg.tracing.service_name, "edge-gate");
    }

    #[test]
    fn bad_values_name_their_keys() {
        for (text, key) in [
            (
                "otlp_endpoint = \"grpc://127.0.0.1:4317\"",
                "tracing.otlp_endpoint",
            ),
            ("otlp_endpoint = \"not a url\"", "tracing.otlp_endpoint"),
            (
                "otlp_endpoint = \"http://u:p@127.0.0.1:4318\"",
                "tracing.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"http://127.0.0.1:4318/?a=b\"",
                "tracing.otlp_endpoint",
            ),
            ("sample_ratio = 1.5", "tracing.sample_ratio"),
            ("sample_ratio = -0.1", "tracing.sample_ratio"),
            ("sample_ratio = nan", "tracing.sample_ratio"),
            ("service_name = \"  \"", "tracing.service_name"),
            ("bogus = 1", "tracing"),
        ] {
            let err = from_str(&with(text)).expect_err(text);
            let issues = err.issues();
            assert!(
                issues.iter().any(|i| i.path.starts_with(key)),
                "{text}: {issues:?}"
            );
        }
    }
}
