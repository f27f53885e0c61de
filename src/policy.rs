//! The per-route decision: given the route and what Kratos said about the request's credential, forward
//! (with or without an identity) or answer with a [`GateError`].
//!
//! Fail closed: on a `session` or `optional` route an unanswered whoami is a 503, never a pass.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use url::Url;

use crate::config::{Aal, AuthMode, OnUnauthenticated, Route};
use crate::edge::rewrite::Rewriter;
use crate::error::GateError;
use crate::path::CanonicalTarget;
use crate::session::{Resolution, Session};

/// What the request brings for the decision.
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// `server.public_url`, when configured.
    pub public_origin: Option<&'a str>,
    /// The canonical target; with the public origin it makes the `return_to` of login redirects.
    pub target: &'a CanonicalTarget,
    /// `kratos.login_url`.
    pub login_url: Option<&'a Url>,
    /// Kratos's public URL, for building a step-up URL when Kratos gave none.
    pub kratos_url: &'a Url,
    /// The Kratos edge browsers use, when there is one: Kratos URLs in redirects go through its
    /// rewriting (the public origin + prefix). Without one, `login_url`'s origin replaces Kratos's.
    pub edge: Option<&'a Rewriter>,
}

impl RequestFacts<'_> {
    /// The original URL on the public origin, built only when a redirect needs it.
    fn public_url(&self) -> Option<String> {
        self.public_origin
            .map(|o| format!("{o}{}", self.target.to_target()))
    }

    /// A Kratos URL as a browser must see it: through the edge when there is one, else under the
    /// public Kratos base that `login_url` shows when it is a Kratos self-service URL
    /// (`https://auth.example.com/self-service/login/browser` -> `https://auth.example.com/`);
    /// otherwise unchanged (a UI page's origin says nothing about where Kratos is).
    pub fn browser_url(&self, url: String) -> String {
        if let Some(edge) = self.edge {
            return edge.rewrite_location(&url).unwrap_or(url);
        }
        let public_base = self.login_url.and_then(|l| {
            let s = l.as_str();
            s.find("/self-service/").map(|i| &s[..=i])
        });
        let internal = self.kratos_url.as_str();
        match (public_base, url.strip_prefix(internal)) {
            (Some(base), Some(rest)) if base != internal => format!("{base}{rest}"),
            _ => url,
        }
    }
}

/// A request that goes upstream.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The session whose identity is forwarded; `None` forwards no identity.
    pub session: Option<Arc<Session>>,
    /// A session cookie Kratos re-issued, for the client.
    pub set_cookie: Vec<Bytes>,
    /// The `outcome` label.
    pub outcome: &'static str,
    /// The session came from the `stale_if_error` window because Kratos failed.
    pub stale: bool,
}

impl Forward {
    fn anonymous(outcome: &'static str) -> Forward {
        Forward {
            session: None,
            set_cookie: Vec::new(),
            outcome,
            stale: false,
        }
    }
}

/// Decides a request. `resolution` is `None` when the request carried no credential.
pub fn decide(
    route: &Route,
    resolution: Option<Resolution>,
    facts: &RequestFacts<'_>,
) -> Result<Forward, GateError> {
    if route.auth == AuthMode::Anonymous {
        return Ok(Forward::anonymous("anonymous"));
    }
    let optional = route.auth == AuthMode::Optional;
    match resolution {
        None if optional => Ok(Forward::anonymous("no_credential")),
        None => Err(unauthenticated(route, facts)),
        Some(Resolution::Invalid) if optional => Ok(Forward::anonymous("invalid_credential")),
        Some(Resolution::Invalid) => Err(unauthenticated(route, facts)),
        Some(Resolution::Valid {
            session,
            set_cookie,
            stale,
        }) => match route.require_aal {
            Some(required) if session.aal < required => {
                if optional {
                    Ok(Forward::anonymous("aal_insufficient"))
                } else {
                    Err(step_up(route, facts, None, required))
                }
            }
            _ => Ok(Forward {
                session: Some(session),
                set_cookie,
                outcome: if stale {
                    "authenticated_stale"
                } else {
                    "authenticated"
                },
                stale,
            }),
        },
        Some(Resolution::Aal2Required { .. }) if optional => {
            Ok(Forward::anonymous("aal_insufficient"))
        }
        Some(Resolution::Aal2Required {
            redirect_browser_to,
        }) => Err(step_up(route, facts, redirect_browser_to, Aal(2))),
        Some(Resolution::RateLimited { retry_after }) => Err(GateError::RateLimited {
            retry_after: retry_after.unwrap_or(1),
        }),
        Some(Resolution::Unavailable { reason }) => Err(GateError::KratosUnavailable { reason }),
    }
}

fn is_browser_navigation(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn unauthenticated(route: &Route, facts: &RequestFacts<'_>) -> GateError {
    let login_redirect = match (route.on_unauthenticated, facts.login_url) {
        (OnUnauthenticated::Redirect, Some(login)) if is_browser_navigation(facts.method) => {
            Some(facts.browser_url(with_return_to(login, facts.public_url().as_deref())))
        }
        _ => None,
    };
    GateError::Unauthenticated { login_redirect }
}

fn step_up(
    route: &Route,
    facts: &RequestFacts<'_>,
    from_kratos: Option<String>,
    required: Aal,
) -> GateError {
    let target = from_kratos.or_else(|| {
        let mut url = facts.kratos_url.join("self-service/login/browser").ok()?;
        url.query_pairs_mut()
            .append_pair("aal", &format!("aal{}", required.0));
        if let Some(back) = &facts.public_url() {
            url.query_pairs_mut().append_pair("return_to", back);
        }
        Some(url.to_string())
    });
    GateError::StepUpRequired {
        redirect_browser_to: target.map(|t| facts.browser_url(t)),
        redirect: route.on_unauthenticated == OnUnauthenticated::Redirect
            && is_browser_navigation(facts.method),
    }
}

/// `login_url` with `return_to` set to the original public URL (when there is one).
fn with_return_to(login: &Url, back: Option<&str>) -> String {
    let mut url = login.clone();
    if let Some(back) = back {
        url.query_pairs_mut().append_pair("return_to", back);
    }
    url.to_string()
}
