//! Stand-ins and small load clients for sessiongate's load benchmark (`benches/load/run.sh`).
//!
//! ```text
//! sessiongate-loadstub serve [--upstream ADDR] [--whoami ADDR] [--threads N]
//! sessiongate-loadstub burst --target ADDR --path P [--tokens N] [--fanout N] [--wave N] [--prefix S] [--stats ADDR]
//! sessiongate-loadstub drive --target ADDR --path P --tokens N [--distinct K] [--connections N] [--prefix S] [--max-secs N]
//! ```
//!
//! `serve` runs two HTTP/1.1 servers in one process (tokio, 2 worker threads by default):
//!
//! * the **upstream** answers `200 {"ok":true}` to anything;
//! * the **whoami stand-in** plays Kratos' `GET /sessions/whoami`. Every path other than the
//!   control endpoints below is treated as a whoami call, because ext_authz / forwardAuth peers send
//!   the client's own path (Envoy appends it to `path_prefix`). A request with a credential (non-empty
//!   `X-Session-Token`, else cookie `ory_kratos_session`, else `Authorization: Bearer`) gets 200 and a
//!   Kratos-shaped session (distinct ids per credential); a credential starting with `bad-` or no
//!   credential gets Kratos' 401 body. The 200 also carries `X-User-Id` / `X-User-Email` so that
//!   header-copying peers (nginx `auth_request_set`, Envoy `allowed_upstream_headers`, Traefik
//!   `authResponseHeaders`, Caddy `copy_headers`) can forward the identity like sessiongate does.
//!   Control: `GET /__count` (whoami calls, plain number), `GET /__stats` (JSON counters, including
//!   accepted connections per port, the connection-reuse check), `POST /__reset`, and
//!   `/health/alive`, `/health/ready` (not counted).
//!
//! `burst` is the cold-burst client: for each of `--tokens` fresh tokens it opens `--fanout`
//! connections, and once every connection of a wave is open, all of them send at once. `drive` sends
//! `--tokens` requests over keep-alive connections, request i with token `<prefix>-<i % distinct>`
//! (one request per distinct token by default: the memory mode; a fixed count over few tokens: the
//! instruction-count mode). Both print JSON.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const UNAUTHORIZED: &str = r#"{"error":{"code":401,"status":"Unauthorized","reason":"No valid session credentials found in the request.","message":"The request could not be authorized"}}"#;
const UPSTREAM_BODY: &str = r#"{"ok":true}"#;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        usage();
    }
    let cmd = args.remove(0);
    let opts = Opts::parse(&args);
    let code = match cmd.as_str() {
        "serve" => {
            let threads = opts.num("threads", 2) as usize;
            runtime(threads).block_on(serve(opts))
        }
        "burst" => runtime(2).block_on(burst(opts)),
        "drive" => runtime(2).block_on(drive(opts)),
        _ => usage(),
    };
    std::process::exit(code);
}

fn usage() -> ! {
    eprintln!(
        "usage: sessiongate-loadstub serve [--upstream ADDR] [--whoami ADDR] [--threads N]\n       \
         sessiongate-loadstub burst --target ADDR --path P [--tokens N] [--fanout N] [--wave N] [--prefix S] [--stats ADDR]\n       \
         sessiongate-loadstub drive --target ADDR --path P --tokens N [--distinct K] [--connections N] [--prefix S] [--max-secs N]"
    );
    std::process::exit(2);
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `--key value` options.
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else {
                eprintln!("unexpected argument {k:?}");
                usage();
            };
            let Some(v) = it.next() else {
                eprintln!("--{key} needs a value");
                usage();
            };
            out.push((key.to_string(), v.clone()));
        }
        Opts(out)
    }
    fn str(&self, key: &str, default: &str) -> String {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| default.to_string())
    }
    fn num(&self, key: &str, default: u64) -> u64 {
        let v = self.str(key, &default.to_string());
        v.parse().unwrap_or_else(|_| {
            eprintln!("--{key}: not a number: {v:?}");
            usage()
        })
    }
    fn addr(&self, key: &str, default: &str) -> SocketAddr {
        let v = self.str(key, default);
        v.parse().unwrap_or_else(|_| {
            eprintln!("--{key}: not an address: {v:?}");
            usage()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    whoami_calls: AtomicU64,
    whoami_ok: AtomicU64,
    whoami_unauthorized: AtomicU64,
    whoami_connections: AtomicU64,
    upstream_requests: AtomicU64,
    upstream_with_identity: AtomicU64,
    upstream_connections: AtomicU64,
}

impl Stats {
    fn reset(&self) {
        for c in [
            &self.whoami_calls,
            &self.whoami_ok,
            &self.whoami_unauthorized,
            &self.whoami_connections,
            &self.upstream_requests,
            &self.upstream_with_identity,
            &self.upstream_connections,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
    fn json(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            r#"{{"whoami_calls":{},"whoami_ok":{},"whoami_unauthorized":{},"whoami_connections":{},"upstream_requests":{},"upstream_with_identity":{},"upstream_connections":{}}}"#,
            g(&self.whoami_calls),
            g(&self.whoami_ok),
            g(&self.whoami_unauthorized),
            g(&self.whoami_connections),
            g(&self.upstream_requests),
            g(&self.upstream_with_identity),
            g(&self.upstream_connections),
        )
    }
}

#[derive(Clone, Copy)]
enum Role {
    Upstream,
    Whoami,
}

async fn serve(opts: Opts) -> i32 {
    let upstream = opts.addr("upstream", "127.0.0.1:13000");
    let whoami = opts.addr("whoami", "127.0.0.1:14433");
    let stats = Arc::new(Stats::default());
    let (u, w) = match (TcpListener::bind(upstream).await, TcpListener::bind(whoami).await) {
        (Ok(u), Ok(w)) => (u, w),
        (Err(e), _) => {
            eprintln!("bind {upstream}: {e}");
            return 1;
        }
        (_, Err(e)) => {
            eprintln!("bind {whoami}: {e}");
            return 1;
        }
    };
    eprintln!("loadstub: upstream on {upstream}, whoami stand-in on {whoami}");
    let a = tokio::spawn(accept_loop(u, Role::Upstream, Arc::clone(&stats)));
    let b = tokio::spawn(accept_loop(w, Role::Whoami, Arc::clone(&stats)));
    let _ = tokio::join!(a, b);
    0
}

async fn accept_loop(listener: TcpListener, role: Role, stats: Arc<Stats>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("loadstub: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match role {
            Role::Upstream => &stats.upstream_connections,
            Role::Whoami => &stats.whoami_connections,
        }
        .fetch_add(1, Ordering::Relaxed);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let stats = Arc::clone(&stats);
                async move {
                    Ok::<_, Infallible>(match role {
                        Role::Upstream => upstream_answer(&req, &stats),
                        Role::Whoami => whoami_answer(&req, &stats),
                    })
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    r
}

fn upstream_answer(req: &Request<Incoming>, stats: &Stats) -> Response<Full<Bytes>> {
    stats.upstream_requests.fetch_add(1, Ordering::Relaxed);
    if req.headers().get("x-user-id").is_some_and(|v| !v.is_empty()) {
        stats.upstream_with_identity.fetch_add(1, Ordering::Relaxed);
    }
    respond(StatusCode::OK, UPSTREAM_BODY)
}

fn whoami_answer(req: &Request<Incoming>, stats: &Stats) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/__count") => {
            let n = stats.whoami_calls.load(Ordering::Relaxed);
            return respond(StatusCode::OK, format!("{n}\n"));
        }
        (&Method::GET, "/__stats") => return respond(StatusCode::OK, stats.json()),
        (&Method::POST, "/__reset") => {
            stats.reset();
            return respond(StatusCode::OK, stats.json());
        }
        (_, "/health/alive") | (_, "/health/ready") => {
            return respond(StatusCode::OK, r#"{"status":"ok"}"#)
        }
        _ => {}
    }
    stats.whoami_calls.fetch_add(1, Ordering::Relaxed);
    match credential(req) {
        Some(cred) if !cred.starts_with(b"bad-") => {
            stats.whoami_ok.fetch_add(1, Ordering::Relaxed);
            let mut r = session_answer(cred);
            // `?body=none`: headers only (what a purpose-built forward-auth endpoint answers),
            // to tell the cost of reading a whoami body from the rest.
            if req.uri().query() == Some("body=none") {
                *r.body_mut() = Full::new(Bytes::new());
            }
            r
        }
        _ => {
            stats.whoami_unauthorized.fetch_add(1, Ordering::Relaxed);
            let mut r = respond(StatusCode::UNAUTHORIZED, UNAUTHORIZED);
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache, no-store"));
            r
        }
    }
}

/// Kratos' precedence: a non-empty `X-Session-Token` wins, else the session cookie, else Bearer.
fn credential(req: &Request<Incoming>) -> Option<&[u8]> {
    let h = req.headers();
    if let Some(v) = h.get("x-session-token") {
        if !v.is_empty() {
            return Some(v.as_bytes());
        }
    }
    for v in h.get_all(COOKIE) {
        for pair in v.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if let Some(value) = pair.strip_prefix(b"ory_kratos_session=") {
                if !value.is_empty() {
                    return Some(value);
                }
            }
        }
    }
    if let Some(v) = h.get(AUTHORIZATION) {
        let mut parts = v.as_bytes().split(|b| *b == b' ').filter(|p| !p.is_empty());
        if let (Some(scheme), Some(token), None) = (parts.next(), parts.next(), parts.next()) {
            if scheme.eq_ignore_ascii_case(b"bearer") {
                return Some(token);
            }
        }
    }
    None
}

fn session_answer(cred: &[u8]) -> Response<Full<Bytes>> {
    let h1 = fnv1a(cred, 0xcbf2_9ce4_8422_2325);
    let h2 = fnv1a(cred, 0x8422_2325_cbf2_9ce4);
    let h3 = fnv1a(cred, 0x1234_5678_9abc_def1);
    let session_id = uuid(h1, h2);
    let identity_id = uuid(h2, h3);
    let device_id = uuid(h3, h1);
    let now = unix_now();
    let issued = rfc3339(now - 60);
    let expires = rfc3339(now + 3600);
    let created = rfc3339(now - 86_400);
    let email = format!("user-{:016x}@example.com", h3);
    let body = format!(
        concat!(
            r#"{{"id":"{sid}","active":true,"expires_at":"{exp}","authenticated_at":"{iss}","#,
            r#""authenticator_assurance_level":"aal1","#,
            r#""authentication_methods":[{{"method":"password","aal":"aal1","completed_at":"{iss}"}}],"#,
            r#""issued_at":"{iss}","#,
            r#""identity":{{"id":"{iid}","schema_id":"default","#,
            r#""schema_url":"http://127.0.0.1:4433/schemas/ZGVmYXVsdA","state":"active","#,
            r#""state_changed_at":"{cre}","traits":{{"email":"{email}"}},"#,
            r#""verifiable_addresses":[],"recovery_addresses":[],"metadata_public":null,"#,
            r#""created_at":"{cre}","updated_at":"{cre}","organization_id":null}},"#,
            r#""devices":[{{"id":"{did}","ip_address":"127.0.0.1","user_agent":"loadstub","location":""}}]}}"#
        ),
        sid = session_id,
        exp = expires,
        iss = issued,
        iid = identity_id,
        cre = created,
        email = email,
        did = device_id,
    );
    let mut r = respond(StatusCode::OK, body);
    let hs = r.headers_mut();
    hs.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache, no-store"));
    hs.insert("x-user-id", HeaderValue::from_str(&identity_id).expect("ascii"));
    hs.insert("x-user-email", HeaderValue::from_str(&email).expect("ascii"));
    r
}

fn fnv1a(data: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche so that close inputs give far-apart ids.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// A version-4-shaped UUID from 128 bits.
fn uuid(a: u64, b: u64) -> String {
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (proleptic Gregorian calendar, days-to-civil conversion).
fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

// ---------------------------------------------------------------------------------------------
// clients
// ---------------------------------------------------------------------------------------------

/// Reads one HTTP/1.1 response (Content-Length or chunked body) and returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed before the response head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.parse().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    if chunked {
        while find(&buf[head_end..], b"0\r\n\r\n").is_none() {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(bad("connection closed inside a chunked body"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    } else {
        let want = head_end + content_length.unwrap_or(0);
        while buf.len() < want {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(bad("connection closed inside the body"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(status)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn request_bytes(host: &SocketAddr, path: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: loadstub\r\nAccept: */*\r\nX-Session-Token: {token}\r\n\r\n"
    )
    .into_bytes()
}

/// `GET /__count` on the whoami stand-in.
async fn whoami_count(stats: SocketAddr) -> Option<u64> {
    let mut s = TcpStream::connect(stats).await.ok()?;
    let req = format!("GET /__count HTTP/1.1\r\nHost: {stats}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1)?;
    body.trim().parse().ok()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[derive(Default)]
struct Outcome {
    status: Option<u16>,
    error: Option<String>,
    latency_us: u64,
}

async fn burst(opts: Opts) -> i32 {
    let target = opts.addr("target", "127.0.0.1:18080");
    let path = opts.str("path", "/api/burst");
    let tokens = opts.num("tokens", 1000);
    let fanout = opts.num("fanout", 20);
    let wave = opts.num("wave", 250).max(1);
    let prefix = opts.str("prefix", &format!("burst-{}", unix_now()));
    let stats = opts.str("stats", "127.0.0.1:14433").parse::<SocketAddr>().ok();
    let timeout = Duration::from_secs(opts.num("timeout-secs", 15));

    let before = match stats {
        Some(s) => whoami_count(s).await,
        None => None,
    };
    let started = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity((tokens * fanout) as usize);
    let mut connect_errors = 0u64;
    let mut first = 0u64;
    while first < tokens {
        let last = (first + wave).min(tokens);
        let n = ((last - first) * fanout) as usize;
        // 1. open every connection of this wave (bounded parallelism, bounded time).
        let sem = Arc::new(tokio::sync::Semaphore::new(512));
        let mut connecting = Vec::with_capacity(n);
        for _ in 0..n {
            let sem = Arc::clone(&sem);
            connecting.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.ok()?;
                let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target))
                    .await
                    .ok()?
                    .ok()?;
                let _ = s.set_nodelay(true);
                Some(s)
            }));
        }
        let mut streams = Vec::with_capacity(n);
        for c in connecting {
            streams.push(c.await.ok().flatten());
        }
        // 2. release all requests of the wave at once.
        let go = Arc::new(tokio::sync::Barrier::new(n));
        let mut tasks = Vec::with_capacity(n);
        for (i, s) in streams.into_iter().enumerate() {
            let token = format!("{prefix}-{}", first + (i as u64 % (last - first)));
            let req = request_bytes(&target, &path, &token);
            let go = Arc::clone(&go);
            tasks.push(tokio::spawn(async move {
                go.wait().await;
                let Some(mut s) = s else {
                    return Outcome {
                        error: Some("connect".into()),
                        ..Default::default()
                    };
                };
                let t0 = Instant::now();
                let mut buf = Vec::with_capacity(4096);
                let res = tokio::time::timeout(timeout, async {
                    s.write_all(&req).await?;
                    read_response(&mut s, &mut buf).await
                })
                .await;
                let latency_us = t0.elapsed().as_micros() as u64;
                // RST instead of FIN: no TIME_WAIT left behind by thousands of one-shot connections.
                let _ = s.set_zero_linger();
                match res {
                    Ok(Ok(status)) => Outcome {
                        status: Some(status),
                        error: None,
                        latency_us,
                    },
                    Ok(Err(e)) => Outcome {
                        error: Some(format!("io: {e}")),
                        latency_us,
                        ..Default::default()
                    },
                    Err(_) => Outcome {
                        error: Some("timeout".into()),
                        latency_us,
                        ..Default::default()
                    },
                }
            }));
        }
        for t in tasks {
            let o = t.await.unwrap_or_else(|e| Outcome {
                error: Some(format!("task: {e}")),
                ..Default::default()
            });
            if o.error.as_deref() == Some("connect") {
                connect_errors += 1;
            }
            outcomes.push(o);
        }
        first = last;
    }
    let elapsed = started.elapsed();
    // Let late whoami calls (none expected) land before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = match stats {
        Some(s) => whoami_count(s).await,
        None => None,
    };
    report(&outcomes, elapsed, connect_errors, before, after, &[
        ("tokens", tokens),
        ("fanout", fanout),
        ("wave_tokens", wave),
    ]);
    0
}

async fn drive(opts: Opts) -> i32 {
    let target = opts.addr("target", "127.0.0.1:18080");
    let path = opts.str("path", "/api/mem");
    let tokens = opts.num("tokens", 100_000);
    // request i carries token i % distinct (default: every request a new token)
    let distinct = opts.num("distinct", tokens).max(1);
    let connections = opts.num("connections", 64).max(1);
    let prefix = opts.str("prefix", &format!("mem-{}", unix_now()));
    let deadline = Instant::now() + Duration::from_secs(opts.num("max-secs", 900));
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let non2xx = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, ok, non2xx, errors, path, prefix) = (
            Arc::clone(&next),
            Arc::clone(&ok),
            Arc::clone(&non2xx),
            Arc::clone(&errors),
            path.clone(),
            prefix.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut stream: Option<TcpStream> = None;
            let mut buf = Vec::with_capacity(4096);
            loop {
                if Instant::now() >= deadline {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tokens {
                    return;
                }
                if stream.is_none() {
                    match TcpStream::connect(target).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            stream = Some(s);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let s = stream.as_mut().expect("connected");
                let req = request_bytes(&target, &path, &format!("{prefix}-{}", i % distinct));
                let res = tokio::time::timeout(Duration::from_secs(10), async {
                    s.write_all(&req).await?;
                    read_response(s, &mut buf).await
                })
                .await;
                match res {
                    Ok(Ok(st)) if (200..300).contains(&st) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(_)) => {
                        non2xx.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        stream = None;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (ok, non2xx, errors) = (
        ok.load(Ordering::Relaxed),
        non2xx.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    println!(
        r#"{{"tokens":{tokens},"ok":{ok},"non2xx":{non2xx},"errors":{errors},"seconds":{secs:.3},"rps":{:.1}}}"#,
        (ok + non2xx) as f64 / secs.max(1e-9)
    );
    0
}

fn report(
    outcomes: &[Outcome],
    elapsed: Duration,
    connect_errors: u64,
    before: Option<u64>,
    after: Option<u64>,
    extra: &[(&str, u64)],
) {
    let mut lat: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.status.is_some())
        .map(|o| o.latency_us)
        .collect();
    lat.sort_unstable();
    let ok = outcomes
        .iter()
        .filter(|o| o.status.is_some_and(|s| (200..300).contains(&s)))
        .count();
    let non2xx = outcomes
        .iter()
        .filter(|o| o.status.is_some_and(|s| !(200..300).contains(&s)))
        .count();
    let errors = outcomes.iter().filter(|o| o.error.is_some()).count();
    let mut statuses: Vec<(u16, usize)> = Vec::new();
    for o in outcomes {
        if let Some(s) = o.status {
            match statuses.iter_mut().find(|(k, _)| *k == s) {
                Some((_, c)) => *c += 1,
                None => statuses.push((s, 1)),
            }
        }
    }
    statuses.sort_unstable();
    let mut first_errors: Vec<&str> = outcomes.iter().filter_map(|o| o.error.as_deref()).collect();
    first_errors.sort_unstable();
    first_errors.dedup();
    first_errors.truncate(5);
    let whoami = match (before, after) {
        (Some(b), Some(a)) => (a - b).to_string(),
        _ => "null".into(),
    };
    let extra: Vec<String> = extra.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
    let statuses: Vec<String> = statuses.iter().map(|(s, c)| format!(r#""{s}":{c}"#)).collect();
    let errs: Vec<String> = first_errors
        .iter()
        .map(|e| format!("\"{}\"", e.replace('\\', "\\\\").replace('"', "'")))
        .collect();
    println!(
        r#"{{{},"requests":{},"ok":{ok},"non2xx":{non2xx},"errors":{errors},"connect_errors":{connect_errors},"statuses":{{{}}},"error_kinds":[{}],"whoami_calls":{whoami},"seconds":{:.3},"latency_us":{{"p50":{},"p90":{},"p99":{},"max":{}}}}}"#,
        extra.join(","),
        outcomes.len(),
        statuses.join(","),
        errs.join(","),
        elapsed.as_secs_f64(),
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn uuid_shape() {
        let u = uuid(fnv1a(b"a", 1), fnv1a(b"a", 2));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
