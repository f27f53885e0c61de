//! The whoami client: one `GET {kratos}/sessions/whoami` carrying exactly one credential, classified
//! into a [`Resolution`]. Bounded in time (`kratos.timeout`, waiting for a slot included) and in
//! concurrency (`kratos.max_concurrent_whoami`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, COOKIE, RETRY_AFTER, SET_COOKIE,
};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::breaker::{Breaker, Permit};
use super::{NotUsable, Resolution, Session, SessionEvents, UnavailableReason};
use crate::config::KratosConfig;
use crate::credential::{CredentialKind, OwnedCredential};
use crate::identity::Template;
use crate::telemetry::trace_context::{TRACEPARENT, TRACESTATE};
use crate::telemetry::WhoamiTrace;

/// Largest whoami body read; a session is a few KiB.
const MAX_BODY: usize = 1024 * 1024;

/// A whoami answer and how long Kratos allows it to be cached.
#[derive(Debug, Clone)]
pub struct WhoamiAnswer {
    pub resolution: Resolution,
    /// `Ory-Session-Cache-For`, when present.
    pub cache_for: Option<Duration>,
}

/// The whoami client (cheap to clone: connection pool and limits are shared).
#[derive(Clone)]
pub struct WhoamiClient {
    http: reqwest::Client,
    url: reqwest::Url,
    cookie_name: String,
    timeout: Duration,
    slots: Arc<Semaphore>,
    breaker: Arc<Breaker>,
    events: Arc<dyn SessionEvents>,
    /// The session paths identity headers read (`Config::session_paths`); their values are rendered
    /// once per validation, the rest of the session is not kept.
    kept: Arc<[Template]>,
}

impl WhoamiClient {
    /// A client for `cfg.whoami_url` reporting every call to `events`.
    ///
    /// # Errors
    /// When reqwest cannot build its HTTP client (its TLS backend fails to initialise).
    pub fn new(
        cfg: &KratosConfig,
        events: Arc<impl SessionEvents + 'static>,
    ) -> Result<WhoamiClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .pool_max_idle_per_host(cfg.max_concurrent_whoami)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sessiongate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WhoamiClient {
            http,
            url: cfg.whoami_url.clone(),
            cookie_name: cfg.session_cookie.clone(),
            timeout: cfg.timeout,
            slots: Arc::new(Semaphore::new(cfg.max_concurrent_whoami)),
            breaker: Arc::new(Breaker::new(
                cfg.circuit_breaker_failures,
                cfg.circuit_breaker_interval,
            )),
            events,
            kept: Arc::from(Vec::new()),
        })
    }

    /// Keeps only these session paths (the identity header templates of every route) in sessions.
    pub fn keeping(mut self, templates: Vec<Template>) -> WhoamiClient {
        self.kept = Arc::from(templates);
        self
    }

    /// The session paths kept in sessions.
    pub fn kept(&self) -> &[Template] {
        &self.kept
    }

    /// The whoami endpoint (derived from `kratos.public_url`).
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// Asks Kratos about one credential, in a span that is a child of the current trace context's
    /// (`crate::telemetry`); the request carries it as `traceparent`.
    pub async fn whoami(&self, cred: &OwnedCredential) -> WhoamiAnswer {
        let trace = WhoamiTrace::start();
        let started = Instant::now();
        if self.breaker.permit(started) == Permit::Reject {
            self.events.whoami_call("circuit_open", None);
            trace.finish("circuit_open");
            return unavailable(UnavailableReason::CircuitOpen);
        }
        let answer = match tokio::time::timeout(self.timeout, self.call(cred, &trace)).await {
            Ok(a) => a,
            Err(_) => unavailable(UnavailableReason::Timeout),
        };
        let failed = matches!(
            answer.resolution,
            Resolution::Unavailable { reason } if reason.is_kratos_failure()
        );
        self.breaker.record(!failed, Instant::now());
        let label = result_label(&answer.resolution);
        self.events.whoami_call(label, Some(started.elapsed()));
        trace.finish(label);
        answer
    }

    /// The whole whoami call's limit (`kratos.timeout`): no call outlives it.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the circuit breaker currently refuses calls.
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// Whether Kratos answers at all (`GET /health/alive`): `Ok(status)` or the reason it did not.
    pub async fn probe(&self) -> Result<u16, &'static str> {
        let Ok(url) = self.url.join("../health/alive") else {
            return Err("bad url");
        };
        // Short and independent of kratos.timeout, so a hanging Kratos never stalls a readiness probe.
        let limit = self.timeout.min(Duration::from_millis(800));
        match self.http.get(url).timeout(limit).send().await {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) if e.is_timeout() => Err("timeout"),
            Err(e) if e.is_connect() => Err("connect_error"),
            Err(_) => Err("error"),
        }
    }

    async fn call(&self, cred: &OwnedCredential, trace: &WhoamiTrace) -> WhoamiAnswer {
        let Ok(_permit) = self.slots.acquire().await else {
            return unavailable(UnavailableReason::Internal);
        };
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some((parent, state)) = trace.headers() {
            headers.insert(TRACEPARENT, parent);
            if let Some(state) = state {
                headers.insert(TRACESTATE, state);
            }
        }
        let credential_header = match cred.kind {
            CredentialKind::Token => {
                HeaderValue::from_str(&cred.value).map(|v| ("x-session-token", v))
            }
            CredentialKind::Cookie => {
                HeaderValue::from_str(&format!("{}={}", self.cookie_name, cred.value))
                    .map(|v| (COOKIE.as_str(), v))
            }
            CredentialKind::Bearer => HeaderValue::from_str(&format!("Bearer {}", cred.value))
                .map(|v| (AUTHORIZATION.as_str(), v)),
        };
        let Ok((name, mut value)) = credential_header else {
            // Credentials are checked before they get here; an unsendable one is Kratos's 401.
            return answer(Resolution::Invalid);
        };
        value.set_sensitive(true);
        headers.insert(name, value);
        if let Some(bearer) = &cred.bearer {
            // Kratos's fallback for a cookie it cannot decode (see `credential`).
            let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {bearer}")) else {
                return answer(Resolution::Invalid);
            };
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }

        let resp = match self
            .http
            .get(self.url.clone())
            .headers(headers)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return unavailable(UnavailableReason::Timeout),
            Err(e) if e.is_connect() => return unavailable(UnavailableReason::Connect),
            Err(_) => return unavailable(UnavailableReason::BadResponse),
        };
        let status = resp.status().as_u16();
        let cache_for = resp
            .headers()
            .get("ory-session-cache-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let set_cookie: Vec<Bytes> = resp
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
            .collect();

        match status {
            200 => {
                let Some(body) = read_body(resp).await else {
                    return unavailable(UnavailableReason::BadResponse);
                };
                let Ok(json) = serde_json::from_slice::<Value>(&body) else {
                    return unavailable(UnavailableReason::BadResponse);
                };
                match Session::from_json(&json, &self.kept) {
                    Ok(s) => WhoamiAnswer {
                        resolution: Resolution::Valid {
                            session: Arc::new(s),
                            set_cookie,
                            stale: false,
                        },
                        cache_for,
                    },
                    Err(NotUsable::Inactive) => answer(Resolution::Invalid),
                    // Not a session at all: a broken Kratos, or something else on that port.
                    Err(NotUsable::Malformed) => unavailable(UnavailableReason::BadResponse),
                }
            }
            // Kratos's own "no valid session" (session/handler.go, whoami): the only rejection
            // besides an inactive session.
            401 => answer(Resolution::Invalid),
            403 => {
                let body = read_body(resp).await.unwrap_or_default();
                let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let id = json.pointer("/error/id").and_then(Value::as_str);
                if id == Some("session_aal2_required") {
                    let redirect = json
                        .get("redirect_browser_to")
                        .or_else(|| json.pointer("/error/details/redirect_browser_to"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    answer(Resolution::Aal2Required {
                        redirect_browser_to: redirect,
                    })
                } else {
                    // Kratos's whoami has no other 403: a WAF or gateway page in front of it.
                    unavailable(UnavailableReason::BadResponse)
                }
            }
            429 => answer(Resolution::RateLimited { retry_after }),
            s if s >= 500 => unavailable(UnavailableReason::ServerError),
            _ => unavailable(UnavailableReason::BadResponse),
        }
    }
}

async fn read_body(mut resp: reqwest::Response) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if out.len() + chunk.len() > MAX_BODY {
            return None;
        }
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

fn answer(resolution: Resolution) -> WhoamiAnswer {
    WhoamiAnswer {
        resolution,
        cache_for: None,
    }
}

fn unavailable(reason: UnavailableReason) -> WhoamiAnswer {
    answer(Resolution::Unavailable { reason })
}

/// `Retry-After` (RFC 9110 §10.2.3) as whole seconds from now: delta-seconds as given, or an
/// HTTP-date (§5.6.7: IMF-fixdate, or the obsolete RFC 850 and asctime forms; two-digit years are
/// 1970-2069) as the seconds until it, 0 when it is past. `None` for anything else (surrounding
/// whitespace is ignored).
pub fn parse_retry_after(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// The metric label of a whoami result.
pub fn result_label(r: &Resolution) -> &'static str {
    match r {
        Resolution::Valid { .. } => "valid",
        Resolution::Invalid => "invalid",
        Resolution::Aal2Required { .. } => "aal2_required",
        Resolution::RateLimited { .. } => "rate_limited",
        Resolution::Unavailable { reason } => reason.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(7));
        assert_eq!(parse_retry_after(" 12 "), Some(12));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0));
        assert_eq!(parse_retry_after("soon"), None);
    }

    /// The three HTTP-date forms of RFC 9110 §5.6.7: a past date is 0 seconds away, a future one
    /// the seconds until it.
    #[test]
    fn retry_after_http_dates() {
        // RFC 9110's own example, in each form.
        for past in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_retry_after(past), Some(0), "{past}");
        }
        // 2068-12-31T23:59:59Z, the last second a two-digit RFC 850 year can name.
        let until = Duration::from_secs(3_124_223_999)
            .saturating_sub(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            )
            .as_secs();
        for future in [
            "Mon, 31 Dec 2068 23:59:59 GMT",
            "Monday, 31-Dec-68 23:59:59 GMT",
            "Mon Dec 31 23:59:59 2068",
            " Mon, 31 Dec 2068 23:59:59 GMT ",
        ] {
            let secs = parse_retry_after(future);
            assert!(
                secs.is_some_and(|s| s + 2 >= until && s <= until),
                "{future}: {secs:?}, expected about {until}"
            );
        }
    }

    #[test]
    fn retry_after_garbage_is_none() {
        for garbage in [
            "",
            "   ",
            "-1",
            "1.5",
            "18446744073709551616",
            "tomorrow",
            // numeric zones are RFC 2822, not HTTP-dates
            "Sun, 06 Nov 1994 08:49:37 +0000",
            // wrong weekday, impossible day, lower-case month, missing zone, two-digit IMF year
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Tue, 31 Feb 2015 07:28:00 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
        ] {
            assert_eq!(parse_retry_after(garbage), None, "{garbage:?}");
        }
    }
}
