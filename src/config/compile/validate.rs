//! The checks every section shares: the [`Issues`] collector, URLs, origins, socket addresses,
//! durations, upstream origins and HTTP tokens. Each check that fails pushes one issue naming `key`
//! and returns `None`, so validation goes on and reports every problem at once.

use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use crate::config::{ConfigIssue, Upstream};

/// The issues found so far, in the order found.
pub(super) struct Issues(Vec<ConfigIssue>);

impl Issues {
    /// No issues yet.
    pub(super) fn new() -> Issues {
        Issues(Vec::new())
    }

    /// Records a problem with the key at `path` (`routes[1].upstream`).
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    /// How many issues were found so far: a check compares it before and after to see whether
    /// anything it validated failed.
    pub(super) fn count(&self) -> usize {
        self.0.len()
    }

    /// `Ok(())` when nothing was found, else every issue.
    pub(super) fn into_result(self) -> Result<(), Vec<ConfigIssue>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// An upstream origin `scheme://host[:port]` (no path, no query) as TLS flag, host name and port.
/// Only parses: the name is looked up at run time by [`crate::resolver`], never here.
pub(super) fn resolve_upstream(u: &str, key: &str, issues: &mut Issues) -> Option<Upstream> {
    let url = http_url(u, key, issues)?;
    if url.path() != "/" || url.query().is_some() {
        issues.push(
            key,
            format!("`{u}` must be an origin (scheme://host:port) without a path"),
        );
        return None;
    }
    let tls = url.scheme() == "https";
    let host = url
        .host_str()?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = url.port_or_known_default()?;
    Some(Upstream {
        tls,
        sni: host,
        port,
    })
}

/// An absolute `http://` or `https://` URL with a host and without credentials.
pub(super) fn http_url(u: &str, key: &str, issues: &mut Issues) -> Option<Url> {
    match Url::parse(u) {
        Ok(url) if (url.scheme() == "http" || url.scheme() == "https") && url.host().is_some() => {
            if !url.username().is_empty() || url.password().is_some() {
                issues.push(key, "must not carry credentials");
                return None;
            }
            Some(url)
        }
        Ok(_) => {
            issues.push(
                key,
                format!("`{u}` must be an http:// or https:// URL with a host"),
            );
            None
        }
        Err(e) => {
            issues.push(key, format!("`{u}` is not a URL: {e}"));
            None
        }
    }
}

/// An `http(s)://host[:port]` origin without a path, serialized without a trailing slash.
pub(super) fn origin_only(u: &str, key: &str, issues: &mut Issues) -> Option<String> {
    let url = http_url(u, key, issues)?;
    if url.path() != "/" || url.query().is_some() {
        issues.push(key, format!("`{u}` must be an origin without a path"));
        return None;
    }
    Some(url.origin().ascii_serialization())
}

/// An `ip:port` address (no host names: a listener binds an address).
pub(super) fn socket_addr(s: &str, key: &str, issues: &mut Issues) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            issues.push(key, format!("`{s}` is not an ip:port address"));
            None
        }
    }
}

/// Refuses a zero duration unless `zero_ok` (durations cannot be negative).
pub(super) fn positive(d: Duration, key: &str, issues: &mut Issues, zero_ok: bool) {
    if !zero_ok && d.is_zero() {
        issues.push(key, "must be greater than zero");
    }
}

/// RFC 7230 token characters.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
