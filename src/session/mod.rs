//! Sessions: what whoami said about a credential, and remembering it.
//!
//! - [`whoami`]: the HTTP client for `GET /sessions/whoami` and the classification of its answers.
//! - [`store`]: the cache (expiry, negative entries) and request coalescing in front of the client.
//! - [`purger`]: [`Purger`], the store's purge operations alone, for the Kratos edge.
//! - [`shared`]: [`shared::SharedTier`], the store's view of a tier shared by replicas (the fleet).

pub mod breaker;
pub mod index;
pub mod purger;
pub mod shared;
pub mod store;
pub mod whoami;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use serde_json::Value;

use crate::config::Aal;
use crate::identity::Template;
pub use purger::Purger;
use store::LookupKind;

/// Where the session layer reports what it did, for metrics. The session layer names no metrics
/// type: the Prometheus registry (`crate::metrics::Metrics`) implements this trait and is handed
/// to [`store::SessionStore::new`] and [`whoami::WhoamiClient::new`], which keep it as an
/// `Arc<dyn SessionEvents>`.
///
/// Every label passed is from a fixed list (never a credential, a session or an identity id).
pub trait SessionEvents: Send + Sync {
    /// One session cache lookup, answered as `kind` (`sessiongate_cache_lookups_total{result}`).
    fn cache_lookup(&self, kind: LookupKind);

    /// One whoami call ended with `result` ([`whoami::result_label`] of its resolution, or
    /// `circuit_open` when the breaker refused it) after `duration` of wall time, `None` when
    /// nothing was sent (`sessiongate_whoami_calls_total{result}`; the duration, when there is
    /// one, in `sessiongate_whoami_duration_seconds`: refusals would pull its quantiles down).
    fn whoami_call(&self, result: &'static str, duration: Option<Duration>);
}

/// The parts of a Kratos session the proxy decides on, plus the identity header values rendered once,
/// when Kratos validated it (one slot per session path of [`crate::config::Config::session_paths`]).
/// A cached session costs a few hundred bytes this way; the whole JSON would cost kilobytes.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub identity_id: String,
    pub aal: Aal,
    pub expires_at: Option<SystemTime>,
    pub values: Box<[Option<HeaderValue>]>,
}

/// Why a whoami 200 body gives no usable session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotUsable {
    /// A session Kratos marks `active: false`: Kratos's own "no valid session" (a rejection).
    Inactive,
    /// Not a Kratos session at all (no `id`, no `identity.id`, wrong types, a date that does not
    /// parse): something else answered, so Kratos is treated as unavailable, never as a rejection.
    Malformed,
}

impl Session {
    /// Projects a whoami 200 body, rendering the values of `paths`.
    ///
    /// An `expires_at` already past by this machine's clock is *not* a rejection (Kratos said the
    /// session is active; the clocks disagree): the session is used, and the cache keeps it for no
    /// time at all (see `store`).
    pub fn from_json(json: &Value, paths: &[Template]) -> Result<Session, NotUsable> {
        let id = json
            .get("id")
            .and_then(Value::as_str)
            .ok_or(NotUsable::Malformed)?
            .to_string();
        match json.get("active").and_then(Value::as_bool) {
            Some(true) => {}
            Some(false) => return Err(NotUsable::Inactive),
            None => return Err(NotUsable::Malformed),
        }
        let identity_id = json
            .get("identity")
            .and_then(|i| i.get("id"))
            .and_then(Value::as_str)
            .ok_or(NotUsable::Malformed)?
            .to_string();
        let aal = match json.get("authenticator_assurance_level") {
            None | Some(Value::Null) => Aal(1),
            Some(v) => v
                .as_str()
                .and_then(Aal::parse)
                .ok_or(NotUsable::Malformed)?,
        };
        let expires_at = match json.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(parse_rfc3339)
                    .ok_or(NotUsable::Malformed)?,
            ),
        };
        Ok(Session {
            id,
            identity_id,
            aal,
            expires_at,
            values: paths.iter().map(|t| t.render(json)).collect(),
        })
    }
}

fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// What the proxy knows about a credential after asking (or remembering) Kratos.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// A valid session. `set_cookie` carries a re-issued session cookie to pass to the client.
    Valid {
        session: Arc<Session>,
        set_cookie: Vec<Bytes>,
        /// Served from the stale window because Kratos failed (`cache.stale_if_error`).
        stale: bool,
    },
    /// Kratos rejected the credential (401, inactive or expired session).
    Invalid,
    /// Kratos knows the session but wants a second factor (`session_aal2_required`).
    Aal2Required { redirect_browser_to: Option<String> },
    /// Kratos is rate-limiting us.
    RateLimited { retry_after: Option<u64> },
    /// Kratos did not give a usable answer (5xx, timeout, refused, garbage).
    Unavailable { reason: UnavailableReason },
}

/// Why whoami gave no usable answer; the metric label and the log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableReason {
    Timeout,
    Connect,
    ServerError,
    BadResponse,
    /// The circuit breaker refused the call (Kratos failed repeatedly); nothing was sent.
    CircuitOpen,
    Internal,
}

impl UnavailableReason {
    /// Whether this says Kratos is failing (as opposed to a fault of sessiongate itself).
    pub fn is_kratos_failure(self) -> bool {
        !matches!(self, UnavailableReason::Internal)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UnavailableReason::Timeout => "timeout",
            UnavailableReason::Connect => "connect_error",
            UnavailableReason::ServerError => "server_error",
            UnavailableReason::BadResponse => "bad_response",
            UnavailableReason::CircuitOpen => "circuit_open",
            UnavailableReason::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn projection_tells_rejections_from_things_that_are_not_sessions() {
        let now = SystemTime::now();
        let future = time::OffsetDateTime::from(now + Duration::from_secs(3600))
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format");
        let past = "2001-01-01T00:00:00.123456Z";
        let ok = json!({"id": "s", "active": true, "expires_at": future, "authenticator_assurance_level": "aal2", "identity": {"id": "i"}});
        let s = Session::from_json(&ok, &[]).expect("valid");
        assert_eq!(s.aal, Aal(2));
        assert_eq!(s.identity_id, "i");
        let mut inactive = ok.clone();
        inactive["active"] = json!(false);
        assert_eq!(
            Session::from_json(&inactive, &[]).err(),
            Some(NotUsable::Inactive)
        );
        // clock skew: Kratos says active, our clock says expired: used (and never cached)
        let mut expired = ok.clone();
        expired["expires_at"] = json!(past);
        assert!(Session::from_json(&expired, &[]).expect("used").expires_at < Some(now));
        let malformed = |f: &dyn Fn(&mut Value)| {
            let mut v = ok.clone();
            f(&mut v);
            Session::from_json(&v, &[]).err()
        };
        let m = Some(NotUsable::Malformed);
        assert_eq!(malformed(&|v| v["expires_at"] = json!("tomorrow")), m);
        assert_eq!(malformed(&|v| v["expires_at"] = json!(17)), m);
        assert_eq!(malformed(&|v| v["active"] = json!("yes")), m);
        assert_eq!(
            malformed(&|v| v.as_object_mut().unwrap().retain(|k, _| k != "active")),
            m
        );
        assert_eq!(
            malformed(&|v| v.as_object_mut().unwrap().retain(|k, _| k != "identity")),
            m
        );
        assert_eq!(malformed(&|v| v["identity"] = json!({"id": 7})), m);
        assert_eq!(malformed(&|v| v["id"] = json!(null)), m);
        assert_eq!(
            malformed(&|v| v["authenticator_assurance_level"] = json!("aal9")),
            m
        );
        assert_eq!(Session::from_json(&json!({"foo": 1}), &[]).err(), m);
    }
}
