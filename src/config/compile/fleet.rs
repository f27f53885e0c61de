//! `[cache.shared]` (the fleet's Redis) and `[admin]` (the purge API's token).
//!
//! Only checks and reads the token file: no connection is opened here (`crate::fleet` does that
//! at run time, and a Redis that is down at start-up is not a configuration error).

use super::validate::{positive, Issues};
use crate::config::schema::{RawAdmin, RawSharedCache, Secret};
use crate::config::{AdminConfig, SharedCacheConfig};

/// Validates `[cache.shared]`: a `redis://` or `rediss://` URL with a host, a timeout above zero,
/// a non-empty key prefix without whitespace.
pub(super) fn shared_cache(raw: &RawSharedCache, issues: &mut Issues) -> Option<SharedCacheConfig> {
    let before = issues.count();
    match url::Url::parse(&raw.redis_url.0) {
        Ok(u) if (u.scheme() == "redis" || u.scheme() == "rediss") && u.host().is_some() => {
            // the client's own parser (database number, parameters); no connection is opened
            if let Err(e) =
                redis::IntoConnectionInfo::into_connection_info(raw.redis_url.0.as_str())
            {
                issues.push(
                    "cache.shared.redis_url",
                    format!("refused by the Redis client: {:?}", e.kind()),
                );
            }
        }
        Ok(u) => issues.push(
            "cache.shared.redis_url",
            format!(
                "must be a redis:// or rediss:// URL with a host (scheme `{}`)",
                u.scheme()
            ),
        ),
        // The parser's message never echoes the URL (it may carry a password).
        Err(e) => issues.push("cache.shared.redis_url", format!("not a URL: {e}")),
    }
    positive(raw.timeout, "cache.shared.timeout", issues, false);
    if raw.key_prefix.is_empty() || raw.key_prefix.chars().any(char::is_whitespace) {
        issues.push(
            "cache.shared.key_prefix",
            "must be non-empty and without whitespace",
        );
    }
    (issues.count() == before).then(|| SharedCacheConfig {
        redis_url: raw.redis_url.clone(),
        key_prefix: raw.key_prefix.clone(),
        mode: raw.mode,
        timeout: raw.timeout,
    })
}

/// Validates `[admin]`: the purge token file, when set, is readable and holds a non-empty token
/// (surrounding whitespace, such as a final newline, is not part of it).
pub(super) fn admin(raw: &RawAdmin, issues: &mut Issues) -> AdminConfig {
    let Some(path) = &raw.purge_token_file else {
        return AdminConfig::default();
    };
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => AdminConfig {
            purge_token: Some(Secret(text.trim().to_string())),
        },
        Ok(_) => {
            issues.push(
                "admin.purge_token_file",
                format!("`{path}` is empty: it must hold the purge API's bearer token"),
            );
            AdminConfig::default()
        }
        Err(e) => {
            issues.push(
                "admin.purge_token_file",
                format!("cannot read `{path}`: {e}"),
            );
            AdminConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{from_str, from_str_with_env, SharedCacheMode};

    const BASE: &str = r#"
[kratos]
public_url = "http://127.0.0.1:4433"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:3000"
auth = "session"
"#;

    fn issues(extra: &str) -> Vec<String> {
        match from_str(&format!("{BASE}{extra}")) {
            Ok(_) => vec![],
            Err(e) => e.issues().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn shared_cache_defaults_and_env_overrides() {
        let cfg = from_str(BASE).expect("valid");
        assert!(cfg.shared_cache.is_none(), "absent = local only");
        assert!(cfg.admin.purge_token.is_none(), "absent = purge API off");
        let env = [
            (
                "SESSIONGATE__CACHE__SHARED__REDIS_URL",
                "redis://:pw@127.0.0.1:6379/2",
            ),
            ("SESSIONGATE__CACHE__SHARED__MODE", "purge_and_cache"),
            ("SESSIONGATE__CACHE__SHARED__TIMEOUT", "20ms"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg = from_str_with_env(BASE, "t", env).expect("valid");
        let shared = cfg.shared_cache.expect("set from the environment");
        assert_eq!(shared.redis_url.0, "redis://:pw@127.0.0.1:6379/2");
        assert_eq!(shared.key_prefix, "sessiongate:");
        assert_eq!(shared.mode, SharedCacheMode::PurgeAndCache);
        assert_eq!(shared.timeout, std::time::Duration::from_millis(20));
        // the password never shows in Debug output
        assert!(!format!("{shared:?}").contains("pw@"));
    }

    #[test]
    fn bad_shared_cache_keys_are_located() {
        let got = issues(
            "[cache.shared]\nredis_url = \"http://127.0.0.1:6379\"\ntimeout = \"0s\"\nkey_prefix = \"a b\"\n",
        );
        for key in [
            "cache.shared.redis_url: ",
            "cache.shared.timeout: ",
            "cache.shared.key_prefix: ",
        ] {
            assert!(got.iter().any(|s| s.starts_with(key)), "{key} in {got:?}");
        }
        let got = issues("[cache.shared]\nredis_url = \"redis://x/notadb\"\n");
        assert!(
            got[0].starts_with("cache.shared.redis_url: refused"),
            "{got:?}"
        );
        let got = issues("[cache.shared]\nredis_url = \"redis://x\"\nmode = \"all\"\n");
        assert!(got[0].starts_with("cache.shared.mode"), "{got:?}");
        let got = issues("[cache.shared]\nredis_url = \"redis://x\"\nbogus = 1\n");
        assert!(got[0].contains("bogus"), "{got:?}");
        assert!(issues("[cache.shared]\nredis_url = \"rediss://r.example:6380/0\"\n").is_empty());
    }

    #[test]
    fn the_purge_token_file_must_be_readable_and_non_empty() {
        let dir = std::env::temp_dir().join(format!("sg-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("token");
        std::fs::write(&good, "s3cret-token\n").expect("write");
        let empty = dir.join("empty");
        std::fs::write(&empty, " \n").expect("write");
        let cfg = from_str(&format!(
            "{BASE}[admin]\npurge_token_file = \"{}\"\n",
            good.display()
        ))
        .expect("valid");
        let token = cfg.admin.purge_token.expect("read");
        assert_eq!(
            token.0, "s3cret-token",
            "the final newline is not part of it"
        );
        let got = issues(&format!(
            "[admin]\npurge_token_file = \"{}\"\n",
            empty.display()
        ));
        assert!(got[0].starts_with("admin.purge_token_file: "), "{got:?}");
        assert!(got[0].contains("empty"), "{got:?}");
        let got = issues("[admin]\npurge_token_file = \"/nonexistent/sg-token\"\n");
        assert!(
            got[0].starts_with("admin.purge_token_file: cannot read"),
            "{got:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
