//! `server.decisions_listen` and `server.decisions_path_prefix`: the decision API for ingresses
//! (`crate::decisions`).

use std::net::SocketAddr;

use super::validate::{socket_addr, Issues};
use crate::config::schema::RawServer;

/// Whether two listen addresses would collide (same port on the same or an unspecified address).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Checks both keys; returns the decision listener's address when one is configured and valid.
pub(super) fn check(
    raw: &RawServer,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    issues: &mut Issues,
) -> Option<SocketAddr> {
    let prefix = &raw.decisions_path_prefix;
    if !prefix.is_empty()
        && (!prefix.starts_with('/')
            || prefix.ends_with('/')
            || prefix
                .bytes()
                .any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#'))
    {
        issues.push(
            "server.decisions_path_prefix",
            format!("`{prefix}` must be \"\" or a path like \"/ext_authz\" (no trailing `/`, query or spaces)"),
        );
    }
    let addr = socket_addr(
        raw.decisions_listen.as_deref()?,
        "server.decisions_listen",
        issues,
    )?;
    for (other, key) in [
        (listen, "server.listen"),
        (admin_listen, "server.admin_listen"),
    ] {
        if other.is_some_and(|o| overlaps(addr, o)) {
            issues.push("server.decisions_listen", format!("must differ from {key}"));
        }
    }
    Some(addr)
}

#[cfg(test)]
mod tests {
    const ROUTES: &str = r#"
[kratos]
public_url = "http://127.0.0.1:4433"
[[routes]]
name = "a"
path = "/x"
upstream = "http://127.0.0.1:1"
auth = "anonymous"
"#;

    fn issues(server: &str) -> Vec<String> {
        match crate::config::from_str(&format!("[server]\n{server}\n{ROUTES}")) {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn off_by_default_and_parsed_when_set() {
        let cfg = crate::config::from_str(&format!("[server]\n{ROUTES}")).expect("valid");
        assert_eq!(cfg.server.decisions_listen, None);
        assert_eq!(cfg.server.decisions_path_prefix, "");
        let cfg = crate::config::from_str(&format!(
            "[server]\ndecisions_listen = \"127.0.0.1:4456\"\ndecisions_path_prefix = \"/ext_authz\"\n{ROUTES}"
        ))
        .expect("valid");
        assert_eq!(
            cfg.server.decisions_listen,
            Some("127.0.0.1:4456".parse().expect("addr"))
        );
        assert_eq!(cfg.server.decisions_path_prefix, "/ext_authz");
    }

    #[test]
    fn collisions_and_bad_values_name_their_key() {
        let cases = [
            (
                "decisions_listen = \"127.0.0.1:8080\"",
                "server.decisions_listen: must differ from server.listen",
            ),
            (
                "decisions_listen = \"0.0.0.0:9091\"",
                "server.decisions_listen: must differ from server.admin_listen",
            ),
            ("decisions_listen = \"nope\"", "server.decisions_listen"),
            (
                "decisions_path_prefix = \"ext\"",
                "server.decisions_path_prefix",
            ),
            (
                "decisions_path_prefix = \"/ext/\"",
                "server.decisions_path_prefix",
            ),
            (
                "decisions_path_prefix = \"/e x\"",
                "server.decisions_path_prefix",
            ),
        ];
        for (line, want) in cases {
            let got = issues(line);
            assert!(got.iter().any(|l| l.contains(want)), "{line}: {got:?}");
        }
    }
}
