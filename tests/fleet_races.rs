//! Races between a purge and an L2 write (`mode = "purge_and_cache"`), on three real sessiongate
//! processes and one real redis-server.
//!
//! Replica 0 reaches Redis through [`LagProxy`], which delays what Redis sends on the pub/sub
//! connection: replica 0 learns of another replica's purges late, as over a slow network, while
//! its commands are not slowed. A whoami answer that Kratos decided before a logout then arrives
//! at replica 0 after the logout was performed (and published) by replica 1, but before replica 0
//! hears of it: replica 0 caches the session and writes it to Redis after replica 1 deleted the
//! shared copies. The purge's tombstones must keep that write out of Redis, or every replica would
//! serve the revoked session until `cache.max_ttl`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fleet::*;
use common::redis_server::RedisServer;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How late replica 0 hears of purges.
const LAG: Duration = Duration::from_millis(700);
/// How long Kratos's answer travels (decided at arrival, sent this much later).
const ANSWER_DELAY: Duration = Duration::from_millis(300);

/// A TCP proxy in front of Redis that delays everything Redis sends on a connection that sent
/// `SUBSCRIBE` by [`LAG`] (in order); other connections pass through as they are.
struct LagProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl LagProxy {
    async fn start(redis_port: u16) -> LagProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, redis_port));
            }
        });
        LagProxy { port, task }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for LagProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, redis_port: u16) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let subscribed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&subscribed);
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = client_rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let upper = buf[..n].to_ascii_uppercase();
            if upper.windows(9).any(|w| w == b"SUBSCRIBE") {
                flag.store(true, Ordering::SeqCst);
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    // Bytes from Redis are timestamped as they arrive and written LAG later, in order.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let down_read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = server_rx.read(&mut buf).await {
            if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let down_write = async move {
        while let Some((at, bytes)) = rx.recv().await {
            if subscribed.load(Ordering::SeqCst) {
                tokio::time::sleep_until((at + LAG).into()).await;
            }
            if client_tx.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(up, down_read, down_write);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_racing_an_l2_write_does_not_bring_the_session_back() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let lag = LagProxy::start(redis.port).await;
    let f = fleet_on(
        [lag.url(), redis.url(), redis.url()],
        "purge_and_cache",
        "2s",
    )
    .await;
    let token = "tok-race";
    f.kratos.add_session(token, SessionSpec::default());
    f.kratos.set_answer_delay(ANSWER_DELAY);

    // replica 0 asks Kratos; Kratos decides "valid" at once and answers ANSWER_DELAY later
    let first = {
        let (http, url) = (f.http.clone(), f.replicas[0].url("/api/x"));
        tokio::spawn(async move {
            http.get(url)
                .header("X-Session-Token", token)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    };
    tokio::time::sleep(ANSWER_DELAY / 3).await;
    assert_eq!(f.kratos.whoami_calls(), 1, "replica 0's call is in flight");
    // meanwhile the session is logged out through replica 1
    let r = client()
        .delete(f.replicas[1].url("/.ory/self-service/logout/api"))
        .json(&json!({ "session_token": token }))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 204);
    let logged_out = Instant::now();
    assert_eq!(
        first.await.expect("task"),
        200,
        "Kratos said valid before the logout"
    );
    let received = "sessiongate_shared_cache_purges_total{direction=\"received\"}";
    assert_eq!(
        f.metric(0, received).await,
        0.0,
        "replica 0 answered before it heard of the purge: the race was run"
    );
    assert!(logged_out.elapsed() < LAG);
    f.kratos.set_answer_delay(Duration::ZERO);

    // replica 0 hears of the purge (both messages) at least LAG after they were published; its
    // L2 write was queued long before
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.metric(0, received).await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "replica 0 never heard of the purge"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let key = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update([1u8]); // CredentialKind::Token's tag
        h.update(token.as_bytes());
        format!("{}session:{:x}", f.prefix, h.finalize())
    };
    let mut conn = f
        .redis(&redis)
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let left: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("get");
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(f.get(i, token).await);
    }
    assert_eq!(
        (statuses, left),
        (vec![401, 401, 401], None),
        "the revoked session came back through the shared cache; {}",
        f.purges().await
    );
}
