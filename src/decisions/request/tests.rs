//! Every convention, table-driven: what each ingress sends, and what sessiongate reads from it.

use super::*;

const TRUSTED: &str = "10.0.0.1";
const PREFIX: &str = "/ext_authz";

struct Case {
    name: &'static str,
    peer: &'static str,
    method: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: Result<(Convention, &'static str, Option<&'static str>, &'static str), Refusal>,
}

fn run(c: &Case) -> Result<Original, Refusal> {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().expect("net")];
    let mut headers = HeaderMap::new();
    for (n, v) in c.headers {
        headers.append(
            http::HeaderName::from_static(n),
            http::HeaderValue::from_static(v),
        );
    }
    let method = Method::from_bytes(c.method.as_bytes()).expect("method");
    original(
        &trusted,
        PREFIX,
        &Inbound {
            peer: c.peer.parse().ok(),
            method: &method,
            target: c.target.as_bytes(),
            headers: &headers,
        },
    )
}

#[test]
fn conventions() {
    use Convention::*;
    let cases = [
        Case {
            name: "nginx: X-Original-Method + X-Original-URI, host from Host",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[
                ("host", "app.example.com"),
                ("x-original-method", "POST"),
                ("x-original-uri", "/api/x?a=1"),
            ],
            want: Ok((Nginx, "POST", Some("app.example.com"), "/api/x?a=1")),
        },
        Case {
            name: "ingress-nginx: X-Original-URL carries the host",
            peer: TRUSTED,
            method: "GET",
            target: "/anything",
            headers: &[
                ("host", "sessiongate.internal"),
                ("x-original-method", "DELETE"),
                ("x-original-url", "https://app.example.com:8443/api/x?q"),
            ],
            want: Ok((Nginx, "DELETE", Some("app.example.com:8443"), "/api/x?q")),
        },
        Case {
            name: "nginx: URI and URL agreeing",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[
                ("host", "A.example"),
                ("x-original-method", "GET"),
                ("x-original-uri", "/api/x"),
                ("x-original-url", "http://a.example/api/x"),
            ],
            want: Ok((Nginx, "GET", Some("a.example"), "/api/x")),
        },
        Case {
            name: "nginx: a client's X-Original-URL naming another host",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[
                ("host", "app.example.com"),
                ("x-original-method", "GET"),
                ("x-original-uri", "/api/x"),
                ("x-original-url", "http://anonymous.example.com/api/x"),
            ],
            want: Err(Refusal::Ambiguous(
                "X-Original-URI and X-Original-URL disagree",
            )),
        },
        Case {
            name: "nginx: URI and URL disagreeing",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/public/x"),
                ("x-original-url", "http://a.example/api/x"),
            ],
            want: Err(Refusal::Ambiguous(
                "X-Original-URI and X-Original-URL disagree",
            )),
        },
        Case {
            name: "nginx: method missing",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[("x-original-uri", "/api/x")],
            want: Err(Refusal::Missing("X-Original-Method")),
        },
        Case {
            name: "nginx: URI repeated",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/api/x"),
                ("x-original-uri", "/public/x"),
            ],
            want: Err(Refusal::Ambiguous("X-Original-URI")),
        },
        Case {
            name: "nginx: absolute URI is not origin-form",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[
                ("x-original-method", "GET"),
                ("x-original-uri", "http://evil/api"),
            ],
            want: Err(Refusal::Invalid("X-Original-URI")),
        },
        Case {
            name: "nginx: URL with another scheme",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[
                ("x-original-method", "GET"),
                ("x-original-url", "ftp://a.example/api"),
            ],
            want: Err(Refusal::Invalid("X-Original-URL")),
        },
        Case {
            name: "forward auth (Traefik, Caddy)",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[
                ("host", "sessiongate.internal"),
                ("x-forwarded-method", "PUT"),
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-uri", "/api/x?y=2"),
                ("x-forwarded-proto", "https"),
            ],
            want: Ok((ForwardAuth, "PUT", Some("app.example.com"), "/api/x?y=2")),
        },
        Case {
            name: "forward auth: host missing",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/api")],
            want: Err(Refusal::Missing("X-Forwarded-Host")),
        },
        Case {
            name: "forward auth: method missing",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[("x-forwarded-host", "a"), ("x-forwarded-uri", "/api")],
            want: Err(Refusal::Missing("X-Forwarded-Method")),
        },
        Case {
            name: "mixed conventions",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/api"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-host", "a"),
                ("x-forwarded-uri", "/public"),
            ],
            want: Err(Refusal::Ambiguous(
                "X-Original-* and X-Forwarded-Uri together",
            )),
        },
        Case {
            name: "envoy: own method, path after the prefix, Host",
            peer: TRUSTED,
            method: "PATCH",
            target: "/ext_authz/api/x?z",
            headers: &[("host", "app.example.com")],
            want: Ok((Envoy, "PATCH", Some("app.example.com"), "/api/x?z")),
        },
        Case {
            name: "envoy: the prefix alone is /",
            peer: TRUSTED,
            method: "GET",
            target: "/ext_authz",
            headers: &[("host", "a")],
            want: Ok((Envoy, "GET", Some("a"), "/")),
        },
        Case {
            name: "envoy: a longer segment is not the prefix",
            peer: TRUSTED,
            method: "GET",
            target: "/ext_authzz/api",
            headers: &[("host", "a")],
            want: Err(Refusal::NoConvention),
        },
        Case {
            name: "oathkeeper: /decisions/<path>, own method and Host",
            peer: TRUSTED,
            method: "POST",
            target: "/decisions/api/x",
            headers: &[("host", "app.example.com")],
            want: Ok((Oathkeeper, "POST", Some("app.example.com"), "/api/x")),
        },
        Case {
            name: "oathkeeper: X-Forwarded-Method and -Host win",
            peer: TRUSTED,
            method: "GET",
            target: "/decisions/api/x?k=v",
            headers: &[
                ("host", "oathkeeper"),
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-host", "app.example.com"),
            ],
            want: Ok((Oathkeeper, "DELETE", Some("app.example.com"), "/api/x?k=v")),
        },
        Case {
            name: "oathkeeper: /decisionsx is not the form",
            peer: TRUSTED,
            method: "GET",
            target: "/decisionsx",
            headers: &[],
            want: Err(Refusal::NoConvention),
        },
        Case {
            name: "envoy path with a client's X-Original-URI",
            peer: TRUSTED,
            method: "GET",
            target: "/ext_authz/api/x",
            headers: &[
                ("host", "a"),
                ("x-original-method", "GET"),
                ("x-original-uri", "/public/x"),
            ],
            want: Err(Refusal::Ambiguous(
                "a decisions_path_prefix path with X-Original-* or X-Forwarded-Uri",
            )),
        },
        Case {
            name: "/decisions path with a client's X-Forwarded-Uri",
            peer: TRUSTED,
            method: "GET",
            target: "/decisions/api/x",
            headers: &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-host", "a"),
                ("x-forwarded-uri", "/public/x"),
            ],
            want: Err(Refusal::Ambiguous(
                "a /decisions path naming another target than the headers",
            )),
        },
        Case {
            name: "Traefik still pointed at /decisions (an Oathkeeper address)",
            peer: TRUSTED,
            method: "GET",
            target: "/decisions",
            headers: &[
                ("x-forwarded-method", "POST"),
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-uri", "/api/x"),
            ],
            want: Ok((ForwardAuth, "POST", Some("app.example.com"), "/api/x")),
        },
        Case {
            name: "nginx on /decisions<target> with the same target in its headers",
            peer: TRUSTED,
            method: "GET",
            target: "/decisions/api/x?q",
            headers: &[
                ("host", "app.example.com"),
                ("x-original-method", "DELETE"),
                ("x-original-uri", "/api/x?q"),
            ],
            want: Ok((Nginx, "DELETE", Some("app.example.com"), "/api/x?q")),
        },
        Case {
            name: "untrusted peer, even with valid headers",
            peer: "10.0.1.1",
            method: "GET",
            target: "/",
            headers: &[("x-original-method", "GET"), ("x-original-uri", "/api")],
            want: Err(Refusal::UntrustedPeer),
        },
        Case {
            name: "unknown peer",
            peer: "",
            method: "GET",
            target: "/decisions/api",
            headers: &[],
            want: Err(Refusal::UntrustedPeer),
        },
        Case {
            name: "nothing to go on",
            peer: TRUSTED,
            method: "GET",
            target: "/",
            headers: &[("host", "a")],
            want: Err(Refusal::NoConvention),
        },
    ];
    for c in &cases {
        let got = run(c);
        let want = c
            .want
            .clone()
            .map(|(convention, m, host, target)| Original {
                convention,
                method: Method::from_bytes(m.as_bytes()).expect("method"),
                host: host.map(str::to_owned),
                target: target.as_bytes().to_vec(),
            });
        assert_eq!(got, want, "{}", c.name);
    }
}

#[test]
fn refusal_statuses() {
    assert_eq!(Refusal::UntrustedPeer.status(), 403);
    assert_eq!(Refusal::NoConvention.status(), 400);
    assert_eq!(Refusal::Missing("X").status(), 400);
    assert_eq!(Refusal::Ambiguous("X").status(), 400);
}
