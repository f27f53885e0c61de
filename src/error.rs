//! Every answer sessiongate gives by itself, as a typed error, and the one place that turns it into an
//! HTTP response.
//!
//! Bodies follow Kratos's error shape (`{"error":{"code","status","reason","message","request"}}`) so
//! that clients already handling Kratos errors handle ours. No body ever carries a credential.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use serde_json::json;

use crate::credential::CredentialError;
use crate::path::PathError;
use crate::session::UnavailableReason;

/// `Retry-After` sent with 503s caused by Kratos.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// Why sessiongate answered a request itself instead of forwarding it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("invalid request target: {0}")]
    BadPath(#[from] PathError),
    #[error("invalid credential headers: {0}")]
    BadCredentialHeaders(CredentialError),
    #[error("this route does not accept protocol upgrades")]
    UpgradeNotAllowed,
    #[error("both Content-Length and Transfer-Encoding: ambiguous framing")]
    AmbiguousFraming,
    #[error("missing, repeated or invalid Host header")]
    BadHost,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("no route matches this request")]
    NoRoute,
    #[error("No valid session credentials found in the request.")]
    Unauthenticated { login_redirect: Option<String> },
    #[error("a higher authenticator assurance level is required")]
    StepUpRequired {
        redirect_browser_to: Option<String>,
        redirect: bool,
    },
    #[error("Kratos is rate-limiting session checks")]
    RateLimited { retry_after: u64 },
    #[error("the session service is unavailable")]
    KratosUnavailable { reason: UnavailableReason },
    #[error("the return_to target is not allowed")]
    ReturnToNotAllowed,
    #[error("the request body is too large to be inspected")]
    BodyTooLarge,
    #[error("the request body could not be read")]
    BadRequestBody,
    #[error("the upstream could not be reached")]
    UpstreamUnreachable,
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    /// Any other failure pingora reports while proxying (a request it could not read, an internal
    /// error), with the status it chose: still a Kratos-style JSON answer.
    #[error("the request could not be proxied")]
    Proxy { status: u16 },
}

impl GateError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            GateError::BadPath(_)
            | GateError::BadCredentialHeaders(_)
            | GateError::UpgradeNotAllowed
            | GateError::AmbiguousFraming
            | GateError::BadHost
            | GateError::ReturnToNotAllowed
            | GateError::BadRequestBody => 400,
            GateError::HeadersTooLarge => 431,
            GateError::BodyTooLarge => 413,
            GateError::NoRoute => 404,
            GateError::Unauthenticated {
                login_redirect: Some(_),
            } => 303,
            GateError::Unauthenticated { .. } => 401,
            GateError::StepUpRequired {
                redirect: true,
                redirect_browser_to: Some(_),
            } => 303,
            GateError::StepUpRequired { .. } => 403,
            GateError::RateLimited { .. } => 429,
            GateError::KratosUnavailable { .. } => 503,
            GateError::UpstreamUnreachable => 502,
            GateError::UpstreamTimeout => 504,
            GateError::Proxy { status } => *status,
        }
    }

    /// The `outcome` label for metrics and the access log.
    pub fn outcome(&self) -> &'static str {
        match self {
            GateError::BadPath(_) => "bad_path",
            GateError::BadCredentialHeaders(CredentialError::Malformed) => "invalid_credential",
            GateError::BadCredentialHeaders(_) => "bad_credential_headers",
            GateError::UpgradeNotAllowed => "upgrade_refused",
            GateError::AmbiguousFraming => "ambiguous_framing",
            GateError::BadHost => "bad_host",
            GateError::HeadersTooLarge => "headers_too_large",
            GateError::NoRoute => "no_route",
            GateError::Unauthenticated { .. } => "unauthenticated",
            GateError::StepUpRequired { .. } => "aal_insufficient",
            GateError::RateLimited { .. } => "rate_limited",
            GateError::KratosUnavailable { .. } => "kratos_unavailable",
            GateError::ReturnToNotAllowed => "return_to_refused",
            GateError::BodyTooLarge => "body_too_large",
            GateError::BadRequestBody => "bad_request_body",
            GateError::UpstreamUnreachable => "upstream_unreachable",
            GateError::UpstreamTimeout => "upstream_timeout",
            GateError::Proxy { .. } => "proxy_error",
        }
    }

    /// Kratos's `error.id` where Kratos has one for the same situation.
    fn kratos_id(&self) -> Option<&'static str> {
        match self {
            GateError::StepUpRequired { .. } => Some("session_aal2_required"),
            GateError::Unauthenticated { .. } => Some("session_inactive"),
            GateError::ReturnToNotAllowed => Some("self_service_flow_return_to_forbidden"),
            _ => None,
        }
    }

    /// The complete response: header and body.
    pub fn to_response(&self, request_id: &str) -> pingora::Result<(ResponseHeader, Bytes)> {
        let status = self.status();
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut error = json!({
            "code": status,
            "status": reason,
            "reason": self.to_string(),
            "message": message(self),
            "request": request_id,
        });
        if let Some(id) = self.kratos_id() {
            error["id"] = json!(id);
        }
        let mut body = json!({ "error": error });
        if let GateError::StepUpRequired {
            redirect_browser_to: Some(url),
            ..
        } = self
        {
            error_details(&mut body, url);
        }
        if let GateError::BadPath(e) = self {
            body["error"]["details"] = json!({ "path_error": format!("{e:?}") });
        }
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());

        let mut h = ResponseHeader::build(status, Some(6))?;
        h.insert_header("content-type", "application/json; charset=utf-8")?;
        h.insert_header("cache-control", "private, no-cache, no-store")?;
        h.insert_header("content-length", body.len().to_string())?;
        match self {
            GateError::Unauthenticated {
                login_redirect: Some(location),
            }
            | GateError::StepUpRequired {
                redirect: true,
                redirect_browser_to: Some(location),
            } => {
                h.insert_header("location", location.as_str())?;
            }
            GateError::Unauthenticated { .. } => {
                h.insert_header("www-authenticate", "Bearer realm=\"sessiongate\"")?;
            }
            GateError::RateLimited { retry_after } => {
                h.insert_header("retry-after", retry_after.to_string())?;
            }
            GateError::KratosUnavailable { .. } => {
                h.insert_header("retry-after", UNAVAILABLE_RETRY_AFTER_SECS.to_string())?;
            }
            _ => {}
        }
        Ok((h, body))
    }
}

fn error_details(body: &mut serde_json::Value, url: &str) {
    body["error"]["details"] = json!({ "redirect_browser_to": url });
    body["redirect_browser_to"] = json!(url);
}

fn message(e: &GateError) -> &'static str {
    match e {
        GateError::BadPath(_)
        | GateError::BadCredentialHeaders(_)
        | GateError::UpgradeNotAllowed
        | GateError::AmbiguousFraming
        | GateError::BadHost => "The request was malformed or contained invalid parameters",
        GateError::HeadersTooLarge => "The request headers are too large",
        GateError::BodyTooLarge => "The request body is too large",
        GateError::BadRequestBody => "The request body could not be read",
        GateError::NoRoute => "The requested resource could not be found",
        GateError::Unauthenticated { .. } => "The request could not be authorized",
        GateError::StepUpRequired { .. } => "The requested action was forbidden",
        GateError::RateLimited { .. } => "Too many requests; retry later",
        GateError::KratosUnavailable { .. } => "The session could not be checked; retry later",
        GateError::ReturnToNotAllowed => "The requested return_to URL is not allowed",
        GateError::UpstreamUnreachable | GateError::UpstreamTimeout => {
            "The service behind this proxy did not answer"
        }
        GateError::Proxy { status } if *status < 500 => {
            "The request was malformed or contained invalid parameters"
        }
        GateError::Proxy { .. } => "An internal error occurred",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: &GateError) -> serde_json::Value {
        serde_json::from_slice(&e.to_response("req-1").expect("response").1).expect("json")
    }

    #[test]
    fn unauthenticated_json_is_kratos_shaped() {
        let e = GateError::Unauthenticated {
            login_redirect: None,
        };
        let (h, _) = e.to_response("req-1").expect("response");
        assert_eq!(h.status.as_u16(), 401);
        assert!(h.headers.get("www-authenticate").is_some());
        let b = body(&e);
        assert_eq!(b["error"]["code"], 401);
        assert_eq!(b["error"]["status"], "Unauthorized");
        assert_eq!(b["error"]["request"], "req-1");
    }

    #[test]
    fn redirects_and_retry_after() {
        let e = GateError::Unauthenticated {
            login_redirect: Some("https://app/login?return_to=x".into()),
        };
        let (h, _) = e.to_response("r").expect("response");
        assert_eq!(h.status.as_u16(), 303);
        assert_eq!(h.headers["location"], "https://app/login?return_to=x");
        let (h, _) = GateError::RateLimited { retry_after: 9 }
            .to_response("r")
            .expect("response");
        assert_eq!(
            (h.status.as_u16(), h.headers["retry-after"].to_str().ok()),
            (429, Some("9"))
        );
        let (h, _) = GateError::KratosUnavailable {
            reason: UnavailableReason::Timeout,
        }
        .to_response("r")
        .expect("response");
        assert_eq!(h.status.as_u16(), 503);
        assert!(h.headers.get("retry-after").is_some());
        let step = GateError::StepUpRequired {
            redirect_browser_to: Some("https://k/self-service/login/browser?aal=aal2".into()),
            redirect: false,
        };
        assert_eq!(step.status(), 403);
        assert_eq!(
            body(&step)["redirect_browser_to"],
            "https://k/self-service/login/browser?aal=aal2"
        );
        assert_eq!(body(&step)["error"]["id"], "session_aal2_required");
    }
}
