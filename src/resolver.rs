//! Upstream names resolved at run time, not once at start-up: an upstream whose addresses change
//! (a Kubernetes Service, a DNS failover) is followed, and one that does not resolve yet does not
//! stop sessiongate from starting.
//!
//! - Answers are used for [`REFRESH`]; after that the next request still gets the last answer at
//!   once and starts one lookup in the background (requests never wait for a refresh, and many
//!   requests make one lookup). Only a name with no usable answer is looked up inline.
//! - When lookups fail, the last answer is used while it is younger than [`STALE_FOR`]
//!   (a resolver hiccup is not an outage); after that the name's requests fail (502).
//! - The per-request path is a mutex and a map lookup by `&str`: no allocation.
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
    /// A background lookup for this name is under way.
    refreshing: bool,
}

/// A small cache of upstream name lookups, shared by all requests of a runtime.
#[derive(Default)]
pub struct Resolver {
    /// host -> (port, answer); few hosts, fewer ports each.
    answers: Mutex<HashMap<String, Vec<(u16, Answer)>>>,
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
    pub async fn addrs(
        self: &Arc<Self>,
        host: &str,
        port: u16,
    ) -> Result<Arc<[SocketAddr]>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Arc::from([SocketAddr::new(ip, port)]));
        }
        if let Some(addrs) = self.usable(host, port) {
            return Ok(addrs);
        }
        let found = lookup(host, port).await?;
        self.store(host, port, Arc::clone(&found));
        Ok(found)
    }

    /// A cached answer that may be used now; starts a background refresh when it is due.
    fn usable(self: &Arc<Self>, host: &str, port: u16) -> Option<Arc<[SocketAddr]>> {
        let mut map = self.answers.lock().ok()?;
        let (_, a) = map.get_mut(host)?.iter_mut().find(|(p, _)| *p == port)?;
        let age = a.at.elapsed();
        if age < REFRESH {
            return Some(Arc::clone(&a.addrs));
        }
        if age >= STALE_FOR {
            return None;
        }
        if !a.refreshing {
            a.refreshing = true;
            let (me, host) = (Arc::clone(self), host.to_owned());
            tokio::spawn(async move {
                match lookup(&host, port).await {
                    Ok(found) => me.store(&host, port, found),
                    Err(e) => {
                        tracing::warn!(error = %e, "upstream lookup failed; using its last answer");
                        me.done_refreshing(&host, port);
                    }
                }
            });
        }
        Some(Arc::clone(&a.addrs))
    }

    fn store(&self, host: &str, port: u16, addrs: Arc<[SocketAddr]>) {
        let answer = Answer {
            addrs,
            at: Instant::now(),
            refreshing: false,
        };
        if let Ok(mut map) = self.answers.lock() {
            let ports = map.entry(host.to_owned()).or_default();
            match ports.iter_mut().find(|(p, _)| *p == port) {
                Some((_, a)) => *a = answer,
                None => ports.push((port, answer)),
            }
        }
    }

    fn done_refreshing(&self, host: &str, port: u16) {
        if let Ok(mut map) = self.answers.lock() {
            if let Some((_, a)) = map
                .get_mut(host)
                .and_then(|ports| ports.iter_mut().find(|(p, _)| *p == port))
            {
                a.refreshing = false;
            }
        }
    }
}

async fn lookup(host: &str, port: u16) -> Result<Arc<[SocketAddr]>, ResolveError> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(found) => {
            let addrs: Arc<[SocketAddr]> = found.collect::<Vec<_>>().into();
            if addrs.is_empty() {
                Err(ResolveError::Empty(host.to_owned()))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(ResolveError::Lookup(host.to_owned(), e.to_string())),
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
        let r = Arc::new(Resolver::new());
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

    fn put(r: &Resolver, host: &str, port: u16, age: Duration) -> Arc<[SocketAddr]> {
        let addrs: Arc<[SocketAddr]> =
            Arc::from(["127.0.0.9:80".parse::<SocketAddr>().expect("a")]);
        r.answers.lock().expect("lock").insert(
            host.into(),
            vec![(
                port,
                Answer {
                    addrs: Arc::clone(&addrs),
                    at: Instant::now() - age,
                    refreshing: false,
                },
            )],
        );
        addrs
    }

    #[tokio::test]
    async fn a_due_refresh_answers_at_once_with_the_last_answer_and_looks_up_in_the_background() {
        let r = Arc::new(Resolver::new());
        let old = put(
            &r,
            "no-such-host.invalid",
            80,
            REFRESH + Duration::from_secs(1),
        );
        let got = r
            .addrs("no-such-host.invalid", 80)
            .await
            .expect("last answer");
        assert!(Arc::ptr_eq(&got, &old));
        // one background lookup at a time
        let refreshing = r.answers.lock().expect("lock")["no-such-host.invalid"][0]
            .1
            .refreshing;
        assert!(refreshing);
        // the failed lookup keeps the last answer and allows the next refresh
        for _ in 0..100 {
            if !r.answers.lock().expect("lock")["no-such-host.invalid"][0]
                .1
                .refreshing
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !r.answers.lock().expect("lock")["no-such-host.invalid"][0]
                .1
                .refreshing
        );
        let again = r
            .addrs("no-such-host.invalid", 80)
            .await
            .expect("still the last answer");
        assert!(Arc::ptr_eq(&again, &old));
    }

    #[tokio::test]
    async fn an_answer_older_than_stale_for_is_not_used() {
        let r = Arc::new(Resolver::new());
        put(
            &r,
            "no-such-host.invalid",
            80,
            STALE_FOR + Duration::from_secs(1),
        );
        assert!(r.addrs("no-such-host.invalid", 80).await.is_err());
    }
}
