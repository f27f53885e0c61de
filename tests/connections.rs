//! Downstream connection limits: `server.downstream_keepalive_timeout` closes idle keep-alive
//! connections, and `server.max_connections` answers connections beyond it with 503 (counted in
//! `sessiongate_connections_refused_total`) while the open ones keep working.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const GET: &[u8] = b"GET /public/x HTTP/1.1\r\nHost: app.example.com\r\n\r\n";

/// Sends one request on `s` and reads exactly one response (Content-Length framed).
fn exchange(s: &mut TcpStream, request: &[u8]) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// How long after `since` the server closes `s` (EOF or reset), or `None` if it is still open
/// `max` after `since`.
fn closed_within(s: &mut TcpStream, since: Instant, max: Duration) -> Option<Duration> {
    let left = max
        .saturating_sub(since.elapsed())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).expect("timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => Some(since.elapsed()),
        Ok(n) => panic!("unexpected {n} bytes on an idle connection"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(_) => Some(since.elapsed()),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_is_closed_after_the_timeout() {
    let w = World::start_with(&[(
        "SESSIONGATE__SERVER__DOWNSTREAM_KEEPALIVE_TIMEOUT",
        "\"1s\"",
    )])
    .await;
    let addr = w.proxy.addr;
    let idle = tokio::task::spawn_blocking(move || {
        // without any request
        let mut silent = connect(addr);
        let silent_since = Instant::now();
        // and after one request
        let mut used = connect(addr);
        let answer = exchange(&mut used, GET);
        let used_since = Instant::now();
        assert_eq!(status_of(&answer), 200, "{answer}");
        (
            closed_within(&mut used, used_since, Duration::from_secs(3)),
            closed_within(&mut silent, silent_since, Duration::from_secs(3)),
        )
    })
    .await
    .expect("client thread");
    for (what, took) in [("after a request", idle.0), ("without a request", idle.1)] {
        let took = took.unwrap_or_else(|| panic!("connection {what} still open after 3 s"));
        assert!(
            took >= Duration::from_millis(700),
            "connection {what} closed after {took:?}, before the 1 s timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_keepalive_timeout_keeps_an_idle_connection() {
    let w = World::start().await;
    let addr = w.proxy.addr;
    let open = tokio::task::spawn_blocking(move || {
        let mut s = connect(addr);
        let first = exchange(&mut s, GET);
        let still_open = closed_within(&mut s, Instant::now(), Duration::from_secs(2)).is_none();
        let second = exchange(&mut s, GET);
        (status_of(&first), still_open, status_of(&second))
    })
    .await
    .expect("client thread");
    assert_eq!(open, (200, true, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_get_503_and_are_counted() {
    let w = World::start_with(&[("SESSIONGATE__SERVER__MAX_CONNECTIONS", "3")]).await;
    let addr = w.proxy.addr;
    let (mut held, refused) = tokio::task::spawn_blocking(move || {
        let mut held: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
        for s in &mut held {
            let answer = exchange(s, GET);
            assert_eq!(status_of(&answer), 200, "{answer}");
        }
        let mut extra = connect(addr);
        let refused = exchange(&mut extra, GET);
        let closed = closed_within(&mut extra, Instant::now(), Duration::from_secs(3)).is_some();
        assert!(closed, "the refused connection stays open");
        (held, refused)
    })
    .await
    .expect("client thread");
    assert_eq!(status_of(&refused), 503, "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert_eq!(
        w.proxy
            .metric("sessiongate_connections_refused_total")
            .await,
        1.0
    );
    assert_eq!(w.proxy.metric("sessiongate_connections_open").await, 3.0);

    // The held connections keep working, and closing one makes room for a new one.
    let again = tokio::task::spawn_blocking(move || {
        let reused = exchange(&mut held[0], GET);
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut s = connect(addr);
            let answer = exchange(&mut s, GET);
            if status_of(&answer) == 200 || Instant::now() > deadline {
                return (status_of(&reused), status_of(&answer));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("client thread");
    assert_eq!(again, (200, 200));
}
