//! The floor of the load benchmark: pingora with nothing of sessiongate in it.
//!
//! A `ProxyHttp` whose only hook is `upstream_peer` (every request goes to one plain-HTTP upstream),
//! pingora's defaults otherwise, one worker thread, mimalloc as the global allocator (as in
//! sessiongate). sessiongate's per-request cost is measured against this binary in
//! `benches/load/run.sh` (cases `bare-pingora`, and `run.sh instructions`).
//!
//! ```sh
//! cargo build --release --example bare_pingora
//! target/release/examples/bare_pingora 127.0.0.1:21070 127.0.0.1:21000   # LISTEN UPSTREAM
//! ```
//!
//! pingora's own options, for `run.sh`'s `opt-*` cases (unset: pingora's default):
//! `BARE_THREADS` (worker threads, 1), `BARE_WORK_STEALING` (`0`/`1`, 1),
//! `BARE_POOL_SIZE` (`upstream_keepalive_pool_size`, 128; 0 keeps no upstream connection),
//! `BARE_L4_READ_BUFFER` (bytes of the read buffer in front of each client socket, 65536).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::Result;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sends every request to `upstream`.
struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    /// The one upstream, plain HTTP.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, upstream] => listen
            .parse::<SocketAddr>()
            .ok()
            .zip(upstream.parse::<SocketAddr>().ok()),
        _ => None,
    };
    let Some((listen, upstream)) = parsed else {
        eprintln!(
            "usage: bare_pingora LISTEN_ADDR UPSTREAM_ADDR (e.g. 127.0.0.1:21070 127.0.0.1:21000)"
        );
        return ExitCode::from(2);
    };
    let defaults = ServerConf::default();
    let (threads, work_stealing, pool_size, read_buffer) = match (
        env_or("BARE_THREADS", 1usize),
        env_or("BARE_WORK_STEALING", 1u8),
        env_or("BARE_POOL_SIZE", defaults.upstream_keepalive_pool_size),
        env_or::<usize>("BARE_L4_READ_BUFFER", usize::MAX),
    ) {
        (Ok(t), Ok(w), Ok(p), Ok(b)) => (t.max(1), w != 0, p, (b != usize::MAX).then_some(b)),
        _ => {
            eprintln!(
                "BARE_THREADS, BARE_WORK_STEALING, BARE_POOL_SIZE, BARE_L4_READ_BUFFER: numbers"
            );
            return ExitCode::from(2);
        }
    };
    let conf = ServerConf {
        threads,
        work_stealing,
        upstream_keepalive_pool_size: pool_size,
        ..defaults
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    let mut listener = ListenerConfig::tcp(listen.to_string());
    if let Some(bytes) = read_buffer {
        listener = listener.l4_buffer(L4BufferSettings::default().read(bytes));
    }
    proxy.add_listener(listener);
    proxy.threads = Some(threads);
    server.add_service(proxy);
    server.run_forever()
}

/// The value of the environment variable `name`, or `default` when it is unset.
fn env_or<T: FromStr>(name: &str, default: T) -> Result<T, T::Err> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse(),
        Err(_) => Ok(default),
    }
}
