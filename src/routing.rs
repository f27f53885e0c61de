//! The route table: which route serves a request, decided on the canonical path, the host and the
//! method. The query string never takes part.
//!
//! Precedence is deterministic and does not depend on the order of the file:
//! 1. a route with `host` beats one without (as nginx picks the server before the location);
//! 2. an exact `path` beats a `path_prefix`;
//! 3. a longer prefix beats a shorter one;
//! 4. with the same host and path, a route with `methods` beats one without (e.g. an anonymous
//!    `OPTIONS` route for CORS preflights beside a `session` route on the same prefix).
//!
//! A method filter is part of the match: a route whose methods exclude the request's does not match,
//! and the next route in precedence order is tried.

use http::Method;

use crate::config::{Route, RouteMatch};

/// Routes in precedence order; the first that matches wins.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Indices into the config's route list, best first.
    order: Vec<usize>,
    matchers: Vec<RouteMatch>,
}

impl RouteTable {
    pub fn new(routes: &[Route]) -> RouteTable {
        let matchers: Vec<RouteMatch> = routes.iter().map(|r| r.matcher.clone()).collect();
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_key(|&i| {
            let m = &matchers[i];
            (
                std::cmp::Reverse(m.host.is_some()),
                std::cmp::Reverse(m.exact),
                std::cmp::Reverse(m.path.len()),
                std::cmp::Reverse(m.methods.is_some()),
                i,
            )
        });
        RouteTable { order, matchers }
    }

    /// The index of the route for a canonical path, a host header value and a method. A port and a
    /// trailing dot of the host are ignored.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<usize> {
        let host = host
            .map(strip_port)
            .map(|h| h.strip_suffix('.').unwrap_or(h));
        self.order
            .iter()
            .copied()
            .find(|&i| matches(&self.matchers[i], host, path, method))
    }
}

fn matches(m: &RouteMatch, host: Option<&str>, path: &str, method: &Method) -> bool {
    if let Some(want) = &m.host {
        match host {
            Some(h) if h.eq_ignore_ascii_case(want) => {}
            _ => return false,
        }
    }
    let path_ok = if m.exact {
        path == m.path
    } else if m.path == "/" {
        true
    } else {
        path.strip_prefix(m.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    path_ok
        && m.methods
            .as_ref()
            .is_none_or(|ms| ms.iter().any(|x| x == method))
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_str;

    fn table(routes: &str) -> (RouteTable, Vec<String>) {
        let text = format!("[kratos]\npublic_url = \"http://127.0.0.1:4433\"\n{routes}");
        let cfg = from_str(&text).expect("valid config");
        (
            RouteTable::new(&cfg.routes),
            cfg.routes.iter().map(|r| r.name.clone()).collect(),
        )
    }

    fn route(name: &str, extra: &str) -> String {
        format!(
            "[[routes]]\nname = \"{name}\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"anonymous\"\n{extra}\n"
        )
    }

    fn find(
        t: &(RouteTable, Vec<String>),
        host: Option<&str>,
        path: &str,
        m: Method,
    ) -> Option<String> {
        t.0.find(host, path, &m).map(|i| t.1[i].clone())
    }

    #[test]
    fn precedence() {
        let t = table(
            &[
                route("root", "path_prefix = \"/\""),
                route("api", "path_prefix = \"/api\""),
                route("api-v1", "path_prefix = \"/api/v1\""),
                route("exact", "path = \"/api/v1/me\""),
                route("host", "path_prefix = \"/\"\nhost = \"admin.example.com\""),
            ]
            .concat(),
        );
        assert_eq!(
            find(&t, None, "/api/v1/me", Method::GET),
            Some("exact".to_string())
        );
        assert_eq!(
            find(&t, None, "/api/v1/me/x", Method::GET),
            Some("api-v1".to_string())
        );
        assert_eq!(
            find(&t, None, "/api/v1", Method::GET),
            Some("api-v1".to_string())
        );
        assert_eq!(
            find(&t, None, "/api/v10", Method::GET),
            Some("api".to_string())
        );
        assert_eq!(find(&t, None, "/api", Method::GET), Some("api".to_string()));
        assert_eq!(
            find(&t, None, "/apix", Method::GET),
            Some("root".to_string())
        );
        assert_eq!(
            find(
                &t,
                Some("ADMIN.example.com:8443"),
                "/api/v1/me",
                Method::GET
            ),
            Some("host".to_string())
        );
        assert_eq!(
            find(&t, Some("other.example.com"), "/api", Method::GET),
            Some("api".to_string())
        );
    }

    #[test]
    fn prefix_never_matches_a_longer_segment_and_no_route_is_none() {
        let t = table(&route("api", "path_prefix = \"/api\""));
        assert_eq!(find(&t, None, "/api", Method::GET), Some("api".to_string()));
        assert_eq!(
            find(&t, None, "/api/", Method::GET),
            Some("api".to_string())
        );
        assert_eq!(
            find(&t, None, "/api/x", Method::GET),
            Some("api".to_string())
        );
        assert_eq!(find(&t, None, "/apix", Method::GET), None);
        assert_eq!(find(&t, None, "/", Method::GET), None);
    }

    #[test]
    fn methods_filter_then_fall_through() {
        let t = table(
            &[
                route(
                    "read",
                    "path_prefix = \"/api\"\nmethods = [\"GET\", \"HEAD\"]",
                ),
                route("root", "path_prefix = \"/\""),
            ]
            .concat(),
        );
        assert_eq!(
            find(&t, None, "/api/x", Method::GET),
            Some("read".to_string())
        );
        assert_eq!(
            find(&t, None, "/api/x", Method::POST),
            Some("root".to_string())
        );
    }

    #[test]
    fn a_method_filter_beats_no_filter_on_the_same_prefix() {
        // CORS preflights pass anonymously; everything else on /api needs a session
        for order in [["preflight", "api"], ["api", "preflight"]] {
            let routes: Vec<String> = order
                .iter()
                .map(|n| match *n {
                    "preflight" => route(n, "path_prefix = \"/api\"\nmethods = [\"OPTIONS\"]"),
                    _ => route(n, "path_prefix = \"/api\""),
                })
                .collect();
            let t = table(&routes.concat());
            assert_eq!(
                find(&t, None, "/api/x", Method::OPTIONS).as_deref(),
                Some("preflight")
            );
            assert_eq!(
                find(&t, None, "/api/x", Method::GET).as_deref(),
                Some("api")
            );
        }
    }

    #[test]
    fn file_order_does_not_matter() {
        let a = table(
            &[
                route("short", "path_prefix = \"/a\""),
                route("long", "path_prefix = \"/a/b\""),
            ]
            .concat(),
        );
        let b = table(
            &[
                route("long", "path_prefix = \"/a/b\""),
                route("short", "path_prefix = \"/a\""),
            ]
            .concat(),
        );
        assert_eq!(
            find(&a, None, "/a/b/c", Method::GET),
            Some("long".to_string())
        );
        assert_eq!(
            find(&b, None, "/a/b/c", Method::GET),
            Some("long".to_string())
        );
    }

    #[test]
    fn ports_are_ignored_in_host_matching() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
