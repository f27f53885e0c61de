//! Integration harness: boots the real proxy in-process on ephemeral ports, in front of the test
//! doubles of `sessiongate-testkit`, and talks to it over real HTTP.

#![allow(dead_code, unused_imports)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use sessiongate::state::Shared;
use tokio::sync::Notify;

pub mod binary;
pub mod fleet;
pub mod ingress;
pub mod redis_server;

pub use sessiongate_testkit::{Behavior, EchoUpstream, KratosDouble, SessionSpec};

/// A running sessiongate. Stops (fast) when dropped.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The decision API listener, when started with [`TestProxy::start_with_decisions`].
    pub decisions: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

struct StopSignal(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("ephemeral port")
}

impl TestProxy {
    /// Starts sessiongate with `config` (TOML without `server.listen`/`admin_listen`, which are
    /// chosen here; `{PROXY}` is replaced by `http://<listen address>`) plus extra
    /// `(env name, value)` overrides.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> TestProxy {
        Self::start_at(config, free_port(), env)
    }

    /// [`TestProxy::start_with_env`] with the public listener on `port` (for peers that must know
    /// the proxy's origin before it starts, like a real Kratos whose `base_url` it is).
    pub fn start_at(config: &str, port: u16, env: &[(&str, &str)]) -> TestProxy {
        Self::start_inner(config, port, env, false)
    }

    /// [`TestProxy::start_with_env`] plus the decision API on a third free port.
    pub fn start_with_decisions(config: &str, env: &[(&str, &str)]) -> TestProxy {
        Self::start_inner(config, free_port(), env, true)
    }

    fn start_inner(config: &str, port: u16, env: &[(&str, &str)], decisions: bool) -> TestProxy {
        let listen = format!("127.0.0.1:{port}");
        // Two binds to port 0 in a row can get the same port back once the first is closed: the
        // admin listener must not be given the public one (the config check refuses that).
        let admin_port = (0..100)
            .map(|_| free_port())
            .find(|p| *p != port)
            .expect("a second free port");
        let admin = format!("127.0.0.1:{admin_port}");
        let mut vars = vec![
            ("SESSIONGATE__SERVER__LISTEN".to_string(), listen.clone()),
            (
                "SESSIONGATE__SERVER__ADMIN_LISTEN".to_string(),
                admin.clone(),
            ),
            ("SESSIONGATE__SERVER__THREADS".to_string(), "2".to_string()),
            (
                "SESSIONGATE__SERVER__GRACE_PERIOD".to_string(),
                "\"0s\"".to_string(),
            ),
        ];
        let decisions = decisions.then(|| {
            let p = (0..100)
                .map(|_| free_port())
                .find(|p| *p != port && *p != admin_port)
                .expect("a third free port");
            SocketAddr::from(([127, 0, 0, 1], p))
        });
        if let Some(d) = decisions {
            vars.push((
                "SESSIONGATE__SERVER__DECISIONS_LISTEN".to_string(),
                d.to_string(),
            ));
        }
        for (k, v) in env {
            vars.push((k.to_string(), v.to_string()));
        }
        // `{PROXY}` in the config stands for the proxy's own origin (for server.public_url).
        let config = config.replace("{PROXY}", &format!("http://{listen}"));
        let cfg = sessiongate::config::from_str_with_env(&config, "test", vars)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let gate = sessiongate::build(cfg).expect("build");
        let shared = Arc::clone(&gate.shared);
        let stop = Arc::new(Notify::new());
        let signal = StopSignal(Arc::clone(&stop));
        let thread = std::thread::spawn(move || gate.run(Box::new(signal)));
        let proxy = TestProxy {
            addr: listen.parse().expect("addr"),
            admin: admin.parse().expect("addr"),
            decisions,
            shared,
            stop,
            thread: Some(thread),
        };
        proxy.wait_listening();
        proxy
    }

    pub fn start(config: &str) -> TestProxy {
        Self::start_with_env(config, &[])
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in [Some(self.addr), Some(self.admin), self.decisions]
            .into_iter()
            .flatten()
        {
            while TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "proxy did not start listening on {addr}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The Prometheus text of the admin listener.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of one sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A plain HTTP client: no redirects followed, no proxy from the environment, no pooling surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// `GET url` with `X-Session-Token: token`: the status (0 when no answer came) and how long it took.
pub async fn timed_token_get(c: &reqwest::Client, url: &str, token: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = c
        .get(url)
        .header("X-Session-Token", token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    (status, started.elapsed())
}

/// Sends raw bytes and reads the whole answer (until close or `timeout`).
pub fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if response_complete(&out) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `buf` holds one complete response with a Content-Length body.
fn response_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let head = text[..end].to_ascii_lowercase();
    match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(len) => buf.len() >= end + 4 + len,
        None => false,
    }
}

/// The status code of a raw response.
pub fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A config with one anonymous, one optional and one session route on `upstream`, Kratos at `kratos`.
pub fn standard_config(kratos: &str, upstream: &str) -> String {
    format!(
        r#"
[server]
public_url = "https://app.example.com"

[kratos]
public_url = "{kratos}"
timeout = "300ms"
login_url = "https://app.example.com/login"

[cache]
max_ttl = "60s"
negative_ttl = "5s"

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "{upstream}"
auth = "anonymous"

[[routes]]
name = "maybe"
path_prefix = "/maybe"
upstream = "{upstream}"
auth = "optional"
[routes.identity_headers]
"X-User-Id" = "identity.id"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{upstream}"
auth = "session"
[routes.identity_headers]
"X-User-Id" = "identity.id"
"X-User-Email" = "identity.traits.email"
"X-Session-Id" = "id"
"X-User-Name" = "identity.traits.name"
"X-User-Phone" = "identity.traits.phone"

[[routes]]
name = "web"
path_prefix = "/web"
upstream = "{upstream}"
auth = "session"
on_unauthenticated = "redirect"

[[routes]]
name = "admin"
path_prefix = "/admin"
upstream = "{upstream}"
auth = "session"
require_aal = "aal2"
[routes.identity_headers]
"X-User-Id" = "identity.id"
"#
    )
}

/// Kratos double + echo upstream + proxy with [`standard_config`].
pub struct World {
    pub kratos: KratosDouble,
    pub upstream: EchoUpstream,
    pub proxy: TestProxy,
}

impl World {
    pub async fn start() -> World {
        Self::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> World {
        let kratos = KratosDouble::start().await;
        let upstream = EchoUpstream::start().await;
        let cfg = standard_config(&kratos.url(), &upstream.url());
        let proxy = TestProxy::start_with_env(&cfg, env);
        World {
            kratos,
            upstream,
            proxy,
        }
    }

    /// Registers `token` as a valid session; returns the identity id.
    pub fn login(&self, token: &str) -> String {
        let spec = SessionSpec::default();
        let id = spec.identity_id.clone();
        self.kratos.add_session(token, spec);
        id
    }
}

/// A response header's value as text (`None` when absent or not visible ASCII).
pub fn header<'r>(r: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}
