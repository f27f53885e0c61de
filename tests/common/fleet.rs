//! Three real sessiongate processes on one real redis-server (`[cache.shared]`), in front of the
//! Kratos double and an echo upstream: the fleet of `tests/fleet.rs` and `tests/fleet_races.rs`.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::binary::Binary;
use super::redis_server::RedisServer;
use super::*;

/// The purge API token every fleet uses.
pub const TOKEN: &str = "purge-token-for-tests";

/// The tests run one at a time: each starts three proxies and a Redis, and the propagation
/// deadline (100 ms) is measured on a machine of 2 shared cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three replicas, the Kratos double and the upstream they share.
pub struct Fleet {
    pub http: reqwest::Client,
    pub kratos: KratosDouble,
    _upstream: EchoUpstream,
    pub replicas: Vec<Binary>,
    pub prefix: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[allow(clippy::too_many_arguments)]
fn config(
    timeout: &str,
    kratos: &str,
    upstream: &str,
    redis: &str,
    prefix: &str,
    mode: &str,
    token: &str,
) -> String {
    format!(
        r#"public_url = "https://app.example.com"
[kratos]
public_url = "{kratos}"
timeout = "2s"
[cache]
max_ttl = "5m"
negative_ttl = "0s"
[cache.shared]
redis_url = "{redis}"
key_prefix = "{prefix}"
mode = "{mode}"
timeout = "{timeout}"
[admin]
purge_token_file = "{token}"
[log]
level = "sessiongate=debug,info"
access_log = false
[[routes]]
name = "kratos"
path_prefix = "/.ory"
kratos_edge = true
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{upstream}"
auth = "session"
[routes.identity_headers]
"X-User-Id" = "identity.id"
"#
    )
}

/// Three replicas on `redis` in `mode`, each Redis call limited to `timeout`.
pub async fn fleet(redis: &RedisServer, mode: &str, timeout: &str) -> Fleet {
    let url = redis.url();
    fleet_on([url.clone(), url.clone(), url], mode, timeout).await
}

/// Three replicas, replica `i` on the Redis at `urls[i]` (one Redis, possibly through a proxy).
pub async fn fleet_on(urls: [String; 3], mode: &str, timeout: &str) -> Fleet {
    let kratos = KratosDouble::start().await;
    let upstream = EchoUpstream::start().await;
    let prefix = format!("t{}:", free_port());
    let dir = std::env::temp_dir().join(format!("sg-fleet-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token = dir.join("purge-token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let replicas: Vec<Binary> = urls
        .iter()
        .map(|redis| {
            Binary::start(&config(
                timeout,
                &kratos.url(),
                &upstream.url(),
                redis,
                &prefix,
                mode,
                &token.display().to_string(),
            ))
        })
        .collect();
    let f = Fleet {
        http: client(),
        kratos,
        _upstream: upstream,
        replicas,
        prefix,
        _dir: TempDir(dir),
    };
    // Subscribing drops the local cache: start only once every replica is subscribed.
    for i in 0..3 {
        f.wait_shared_cache(i, "ok").await;
    }
    f
}

impl Fleet {
    pub async fn get(&self, replica: usize, token: &str) -> u16 {
        self.http
            .get(self.replicas[replica].url("/api/x"))
            .header("X-Session-Token", token)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    pub async fn ready(&self, replica: usize) -> (u16, Value) {
        let r = client()
            .get(self.replicas[replica].admin_url("/health/ready"))
            .send()
            .await
            .expect("ready");
        (r.status().as_u16(), r.json().await.expect("json"))
    }

    /// Waits (at most 15 s) until replica `i` reports `shared_cache: want`; readiness is 200 all along.
    pub async fn wait_shared_cache(&self, i: usize, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) = self.ready(i).await;
            assert_eq!(status, 200, "Redis never fails readiness: {body}");
            if body["shared_cache"] == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i}: {body}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metric(&self, replica: usize, line_start: &str) -> f64 {
        let text = client()
            .get(self.replicas[replica].admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| l.starts_with(line_start))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn purge_api(&self, replica: usize, auth: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = client()
            .post(self.replicas[replica].admin_url("/cache/purge"))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let r = req.send().await.expect("purge api");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls (every 2 ms, at most 2 s) until each of `replicas` answers 401 for `token`; returns
    /// how long the slowest took from `since`.
    pub async fn until_401(&self, replicas: &[usize], token: &str, since: Instant) -> Duration {
        let mut slowest = Duration::ZERO;
        for &i in replicas {
            loop {
                let s = self.get(i, token).await;
                if s == 401 {
                    slowest = slowest.max(since.elapsed());
                    break;
                }
                assert_eq!(s, 200, "replica {i}");
                if since.elapsed() >= Duration::from_secs(2) {
                    panic!("replica {i} never purged; {}", self.purges().await);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        slowest
    }

    /// Every replica's `sessiongate_shared_cache_purges_total` (sent, received), for the message
    /// of a failed propagation assertion.
    pub async fn purges(&self) -> String {
        let mut out = String::from("purges_total (sent, received):");
        for i in 0..self.replicas.len() {
            let line = "sessiongate_shared_cache_purges_total{direction=";
            let sent = self.metric(i, &format!("{line}\"sent\"}}")).await;
            let received = self.metric(i, &format!("{line}\"received\"}}")).await;
            out.push_str(&format!(" replica {i}: ({sent}, {received})"));
        }
        out
    }

    /// Asserts a propagation took less than `limit`, naming every replica's purge counts if not.
    pub async fn assert_within(&self, took: Duration, limit: Duration) {
        if took >= limit {
            panic!("propagation took {took:?}; {}", self.purges().await);
        }
    }

    pub fn redis(&self, redis: &RedisServer) -> redis::Client {
        redis::Client::open(redis.url()).expect("redis client")
    }
}
