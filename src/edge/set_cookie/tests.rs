//! Tests of [`super::CookieRules`], through [`Rewriter::rewrite_set_cookie`], checked against the
//! `cookie` crate's reading of the result.

use cookie::{Cookie, SameSite};
use proptest::prelude::*;

use super::super::test_support::*;
use super::super::EdgeSettings;
use super::CookieRules;
use crate::edge::rewrite::Rewriter;

fn rw() -> Rewriter {
    Rewriter::new(&settings())
}

#[test]
fn set_cookie_domain_secure_path() {
    let r = rw(); // https public, cookie_domain example.com
    assert_eq!(
        r.rewrite_set_cookie("ory_kratos_session=MTY4; Path=/; Domain=127.0.0.1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Max-Age=86400; HttpOnly; Secure; SameSite=Lax"),
        "ory_kratos_session=MTY4; Path=/; Domain=example.com; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Max-Age=86400; HttpOnly; Secure; SameSite=Lax"
    );
    // no Domain: added
    assert_eq!(
        r.rewrite_set_cookie("csrf_token_806060ca5bf70dff3caa0e5c860002aade9d470a5a4dce73bcfa7ba10778f481=aGk=; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"),
        "csrf_token_806060ca5bf70dff3caa0e5c860002aade9d470a5a4dce73bcfa7ba10778f481=aGk=; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax; Domain=example.com"
    );
    // Kratos endpoints' paths move under the prefix
    assert_eq!(
        r.rewrite_set_cookie("ory_kratos_continuity=x; path=/self-service/methods/oidc; httponly"),
        "ory_kratos_continuity=x; path=/.ory/self-service/methods/oidc; httponly; Domain=example.com"
    );
    // application paths are kept
    assert_eq!(
        r.rewrite_set_cookie("ory_kratos_session=x; Path=/app; domain=.127.0.0.1; secure"),
        "ory_kratos_session=x; Path=/app; Domain=example.com; secure"
    );

    // http public, host-only cookies
    let r = Rewriter::new(&settings_with(
        "http://127.0.0.1:4433/",
        "http://localhost:8080",
        "/.ory",
    ));
    assert_eq!(
        r.rewrite_set_cookie(
            "ory_kratos_session=v; Path=/; Domain=127.0.0.1; HttpOnly; Secure; SameSite=Lax"
        ),
        "ory_kratos_session=v; Path=/; HttpOnly; SameSite=Lax"
    );
    // SameSite=None cannot live without Secure: Lax on a plain-HTTP origin
    assert_eq!(
        r.rewrite_set_cookie("ory_kratos_continuity=c; Path=/; HttpOnly; Secure; SameSite=None"),
        "ory_kratos_continuity=c; Path=/; HttpOnly; SameSite=Lax"
    );
    assert_eq!(
        r.rewrite_set_cookie("csrf_token_x=c; Path=/; samesite=none"),
        "csrf_token_x=c; Path=/; samesite=Lax"
    );
    // deletion cookie keeps its expiry
    assert_eq!(
        r.rewrite_set_cookie("ory_kratos_session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly; SameSite=Lax"),
        "ory_kratos_session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly; SameSite=Lax"
    );
    // nothing to do
    assert_eq!(r.rewrite_set_cookie("a=b"), "a=b");

    // Kratos under a base path
    let r = Rewriter::new(&settings_with("http://k:1/base/", "https://a.com", "/auth"));
    assert_eq!(r.rewrite_set_cookie("c=1; Path=/base"), "c=1; Path=/auth");
    assert_eq!(
        r.rewrite_set_cookie("c=1; Path=/base/self-service"),
        "c=1; Path=/auth/self-service"
    );
    assert_eq!(r.rewrite_set_cookie("c=1; Path=/"), "c=1; Path=/");
    assert_eq!(
        r.rewrite_set_cookie("c=1; Path=/basement"),
        "c=1; Path=/basement"
    );
    let r = Rewriter::new(&settings_with("http://k:1/base/", "https://a.com", ""));
    assert_eq!(r.rewrite_set_cookie("c=1; Path=/base"), "c=1; Path=/");
}

#[test]
fn value_and_unknown_attributes_pass_byte_for_byte() {
    // https public: only Domain changes; the value (quotes, `%`, `=`, `/`), unknown attributes
    // and the spelling and order of the others stay as Kratos wrote them.
    let v = "ory_kratos_session=\"MTY4%2Fab+c/d==\"; Path=/; Domain=127.0.0.1; Partitioned; \
             Priority=High; HttpOnly; Secure; SameSite=None; X-Future=a=b";
    assert_eq!(
        rw().rewrite_set_cookie(v),
        "ory_kratos_session=\"MTY4%2Fab+c/d==\"; Path=/; Domain=example.com; Partitioned; \
         Priority=High; HttpOnly; Secure; SameSite=None; X-Future=a=b"
    );
    let parsed = Cookie::parse(rw().rewrite_set_cookie(v)).expect("a cookie");
    assert_eq!(parsed.value(), "\"MTY4%2Fab+c/d==\"");
    assert_eq!(parsed.partitioned(), Some(true));

    // plain-HTTP public origin, host-only: Secure goes, None becomes Lax, the rest stays
    let http = Rewriter::new(&settings_with(
        "http://127.0.0.1:4433/",
        "http://localhost:8080",
        "/.ory",
    ));
    assert_eq!(
        http.rewrite_set_cookie(v),
        "ory_kratos_session=\"MTY4%2Fab+c/d==\"; Path=/; Partitioned; Priority=High; HttpOnly; \
         SameSite=Lax; X-Future=a=b"
    );
}

// -----------------------------------------------------------------------------------------
// properties: the `cookie` crate reads every rewritten cookie as the rules say

fn route() -> impl Strategy<Value = EdgeSettings> {
    prop_oneof![
        Just(settings()),
        Just(settings_with(
            "http://127.0.0.1:4433/",
            "http://localhost:8080",
            "/.ory"
        )),
        Just(settings_with("http://k:1/base/", "https://a.com", "/auth")),
        Just(settings_with("http://k:1/base/", "http://a.com", "")),
    ]
}

fn attribute() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Domain=127.0.0.1".to_owned()),
        Just("domain=.kratos.internal".to_owned()),
        Just("Domain".to_owned()),
        Just("Secure".to_owned()),
        Just("secure".to_owned()),
        Just("HttpOnly".to_owned()),
        Just("Partitioned".to_owned()),
        Just("Priority=High".to_owned()),
        Just("Max-Age=0".to_owned()),
        Just("Max-Age=86400".to_owned()),
        Just("Expires=Wed, 21 Oct 2026 07:28:00 GMT".to_owned()),
        "(SameSite|samesite)=(None|none|Lax|Strict|bogus)",
        "(Path|path)=(/|/app|/self-service/methods/oidc|/sessions|/base|/base/x|/basement)",
        "[A-Za-z-]{1,8}(=[a-z0-9=]{0,6})?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_cookie_crate_reads_the_rewrite_as_the_rules_say(
        s in route(),
        name in "[A-Za-z0-9_-]{1,12}",
        value in "\"?[!#-+\\--:<-\\[\\]-~]{0,16}\"?",
        attrs in proptest::collection::vec(attribute(), 0..8),
    ) {
        let rules = CookieRules::new(&s);
        let mut v = format!("{name}={value}");
        for a in &attrs {
            v.push_str("; ");
            v.push_str(a);
        }
        let out = rules.rewrite(&v);
        let before = Cookie::parse(v.as_str()).expect("generated cookies parse");
        let after = Cookie::parse(out.as_str()).expect("rewritten cookies parse");

        prop_assert_eq!(after.name_value(), before.name_value());
        prop_assert_eq!(after.http_only(), before.http_only());
        prop_assert_eq!(after.partitioned(), before.partitioned());
        prop_assert_eq!(after.max_age(), before.max_age());
        prop_assert_eq!(after.expires(), before.expires());
        prop_assert_eq!(after.domain(), s.cookie_domain.as_deref());
        let secure = if s.public_is_https { before.secure() } else { None };
        prop_assert_eq!(after.secure(), secure);
        let same_site = match before.same_site() {
            Some(SameSite::None) if !s.public_is_https => Some(SameSite::Lax),
            other => other,
        };
        prop_assert_eq!(after.same_site(), same_site);
        let path = before.path().map(|p| rules.map_path(p).unwrap_or_else(|| p.to_owned()));
        prop_assert_eq!(after.path().map(str::to_owned), path);
        // every attribute the rules do not touch is still there, as it was written
        for a in &attrs {
            let n = a.split('=').next().unwrap_or_default().to_ascii_lowercase();
            if !matches!(n.as_str(), "domain" | "secure" | "samesite" | "path") {
                prop_assert!(out.contains(a.as_str()), "{a:?} lost: {out:?}");
            }
        }
    }
}
