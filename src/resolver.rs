//! Upstream names resolved at run time, not once at start-up: an upstream whose addresses change
//! (a Kubernetes Service, a DNS failover) is followed, and one that does not resolve yet does not
//! stop sessiongate from starting.
//!
//! - Answers are kept for [`REFRESH`]; the next request after that resolves again.
//! - When a lookup fails, the last answer is used while it is younger than [`STALE_FOR`]
//!   (a resolver hiccup is not an outage).
//! - Every address is tried in the order the system resolver gave them: a connection that fails
//!   moves on to the next one ([`next_attempt`]).
//!
//! IP literals are never looked up.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a lookup's answer is used before the name is resolved again.
pub const REFRESH: Duration = Duration::from_secs(30);
/// How long the last answer is still used when the name cannot be resolved any more.
pub const STALE_FOR: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct Answer {
    addrs: Arc<[SocketAddr]>,
    at: Instant,
}

/// A small cache of upstream name lookups, shared by all requests of a runtime.
#[derive(Default)]
pub struct Resolver {
    answers: Mutex<HashMap<(String, u16), Answer>>,
}

/// Why an upstream has no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("`{0}` does not resolve: {1}")]
    Lookup(String, String),
    #[error("`{0}` resolves to no address")]
    Empty(String),
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// The addresses of `host:port`, in the resolver's order.
    pub async fn addrs(&self, host: &str, port: u16) -> Result<Arc<[SocketAddr]>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Arc::from([SocketAddr::new(ip, port)]));
        }
        let key = (host.to_owned(), port);
        let cached = self.cached(&key);
        if let Some(a) = &cached {
            if a.at.elapsed() < REFRESH {
                return Ok(Arc::clone(&a.addrs));
            }
        }
        match tokio::net::lookup_host((host, port)).await {
            Ok(found) => {
                let addrs: Arc<[SocketAddr]> = found.collect::<Vec<_>>().into();
                if addrs.is_empty() {
                    return stale_or(cached, ResolveError::Empty(host.to_owned()));
                }
                let answer = Answer {
                    addrs: Arc::clone(&addrs),
                    at: Instant::now(),
                };
                if let Ok(mut m) = self.answers.lock() {
                    m.insert(key, answer);
                }
                Ok(addrs)
            }
            Err(e) => stale_or(cached, ResolveError::Lookup(host.to_owned(), e.to_string())),
        }
    }

    fn cached(&self, key: &(String, u16)) -> Option<Answer> {
        self.answers.lock().ok()?.get(key).cloned()
    }
}

fn stale_or(cached: Option<Answer>, err: ResolveError) -> Result<Arc<[SocketAddr]>, ResolveError> {
    match cached {
        Some(a) if a.at.elapsed() < STALE_FOR => {
            tracing::warn!(error = %err, "upstream lookup failed; using its last answer");
            Ok(a.addrs)
        }
        _ => Err(err),
    }
}

/// After a failed connection to address number `attempt` of `count`: the next one to try, if any.
pub fn next_attempt(attempt: usize, count: usize) -> Option<usize> {
    (attempt + 1 < count).then_some(attempt + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_once_in_order() {
        assert_eq!(next_attempt(0, 3), Some(1));
        assert_eq!(next_attempt(1, 3), Some(2));
        assert_eq!(next_attempt(2, 3), None);
        assert_eq!(next_attempt(0, 1), None);
        assert_eq!(next_attempt(0, 0), None);
    }

    #[tokio::test]
    async fn literals_are_not_looked_up_and_names_are_cached() {
        let r = Resolver::new();
        assert_eq!(
            &*r.addrs("127.0.0.1", 80).await.expect("literal"),
            &["127.0.0.1:80".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(
            &*r.addrs("::1", 81).await.expect("literal"),
            &["[::1]:81".parse::<SocketAddr>().expect("addr")]
        );
        let a = r.addrs("localhost", 82).await.expect("localhost resolves");
        assert!(
            a.iter().all(|s| s.ip().is_loopback() && s.port() == 82),
            "{a:?}"
        );
        let b = r.addrs("localhost", 82).await.expect("cached");
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second answer comes from the cache"
        );
        assert!(matches!(
            r.addrs("no-such-host.invalid", 83).await,
            Err(ResolveError::Lookup(..) | ResolveError::Empty(..))
        ));
    }

    #[tokio::test]
    async fn a_failed_lookup_uses_a_recent_answer() {
        let r = Resolver::new();
        let addrs: Arc<[SocketAddr]> =
            Arc::from(["127.0.0.9:80".parse::<SocketAddr>().expect("a")]);
        r.answers.lock().expect("lock").insert(
            ("no-such-host.invalid".into(), 80),
            Answer {
                addrs: Arc::clone(&addrs),
                at: Instant::now() - REFRESH - Duration::from_secs(1),
            },
        );
        let got = r
            .addrs("no-such-host.invalid", 80)
            .await
            .expect("stale answer");
        assert!(Arc::ptr_eq(&got, &addrs));
    }
}
