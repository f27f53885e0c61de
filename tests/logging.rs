//! One access line per request, with route, status, outcome, duration and request id; never a token,
//! a cookie or a query string.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_the_fields_and_no_credentials() {
    let buffer = Buffer::default();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(sessiongate::logging::filter("debug").expect("filter"))
        .with_writer(buffer.clone())
        .try_init()
        .expect("subscriber");

    let w = World::start().await;
    let secrets = [
        "tok-SECRET-valid-1111",
        "tok-SECRET-invalid-2222",
        "cookie-SECRET-3333",
        "bearer-SECRET-4444",
        "query-SECRET-5555",
    ];
    w.login(secrets[0]);
    w.login(secrets[2]);
    w.login(secrets[3]);
    let c = client();
    let send = |path: String, h: (&'static str, String)| {
        let c = c.clone();
        let url = w.proxy.url(&path);
        async move {
            c.get(url)
                .header(h.0, h.1)
                .header("X-Request-Id", "log-test")
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        send("/api/a".into(), ("X-Session-Token", secrets[0].into())).await,
        200
    );
    assert_eq!(
        send("/api/b".into(), ("X-Session-Token", secrets[1].into())).await,
        401
    );
    assert_eq!(
        send(
            "/api/c".into(),
            ("Cookie", format!("ory_kratos_session={}", secrets[2]))
        )
        .await,
        200
    );
    assert_eq!(
        send(
            "/api/d".into(),
            ("Authorization", format!("Bearer {}", secrets[3]))
        )
        .await,
        200
    );
    assert_eq!(
        send(
            format!("/public/e?token={}", secrets[4]),
            ("X-Session-Token", secrets[0].into())
        )
        .await,
        200
    );
    w.kratos.set_behavior(Behavior::ServerError);
    assert_eq!(
        send("/api/f".into(), ("X-Session-Token", "tok-SECRET-x".into())).await,
        503
    );
    // The access line is written after the response is sent: wait for the last one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while count_access(&buffer) < 6 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(w);

    let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf8");
    for s in secrets.iter().chain(["SECRET"].iter()) {
        assert!(!text.contains(s), "`{s}` appears in the log:\n{text}");
    }
    let access: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "sessiongate::access")
        .collect();
    assert_eq!(access.len(), 6, "one line per request:\n{text}");
    let first = &access[0];
    assert_eq!(first["route"], "api");
    assert_eq!(first["status"], 200);
    assert_eq!(first["outcome"], "authenticated");
    assert_eq!(first["request_id"], "log-test");
    assert_eq!(first["path"], "/api/a");
    assert!(first["duration_ms"].as_f64().is_some());
    assert_eq!(access[1]["outcome"], "unauthenticated");
    assert_eq!(access[5]["status"], 503);
    assert_eq!(access[5]["outcome"], "kratos_unavailable");
}

fn count_access(buffer: &Buffer) -> usize {
    let bytes = buffer.0.lock().map(|b| b.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains("\"target\":\"sessiongate::access\""))
        .count()
}
