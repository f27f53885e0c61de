//! Several replicas as one cache (`[cache.shared]`): three real sessiongate processes sharing one
//! real redis-server, in front of the Kratos double and an echo upstream.
//!
//! - a logout through one replica reaches the others (401 on their next request) within 100 ms;
//! - the purge API (admin listener) by identity reaches every replica; 401 without the token,
//!   400 on a bad body;
//! - the shared L2 cache: 1,000 tokens sent to each of 3 replicas cost 1,000 whoami calls, not
//!   3,000; garbage in Redis is ignored;
//! - Redis killed, stopped and restarted mid-run: every request is still answered correctly (no
//!   5xx), readiness stays 200 and says `degraded`, and the fleet recovers (a replica that may have
//!   missed a purge drops its whole local cache).

mod common;

use std::time::{Duration, Instant};

use common::fleet::*;
use common::redis_server::RedisServer;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_through_one_replica_reaches_every_replica() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let f = fleet(&redis, "purge", "50ms").await;
    f.kratos.add_session("tok-a", SessionSpec::default());
    for i in 0..3 {
        assert_eq!(f.get(i, "tok-a").await, 200);
        assert_eq!(f.get(i, "tok-a").await, 200, "cached");
    }
    assert_eq!(
        f.kratos.whoami_calls(),
        3,
        "purge mode: one call per replica"
    );

    let r = client()
        .delete(f.replicas[0].url("/.ory/self-service/logout/api"))
        .json(&json!({ "session_token": "tok-a" }))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 204);
    let logged_out = Instant::now();
    assert_eq!(
        f.get(0, "tok-a").await,
        401,
        "the replica that saw the logout"
    );
    let took = f.until_401(&[1, 2], "tok-a", logged_out).await;
    eprintln!("logout propagation to replicas 2 and 3: {took:?}");
    f.assert_within(took, Duration::from_millis(100)).await;
    for i in [1, 2] {
        let got = f
            .metric(
                i,
                "sessiongate_shared_cache_purges_total{direction=\"received\"}",
            )
            .await;
        // the API logout purges the token as X-Session-Token and as Bearer: two messages
        assert_eq!(got, 2.0, "replica {i} applied exactly the two purges");
    }
    let sent = f
        .metric(
            0,
            "sessiongate_shared_cache_purges_total{direction=\"sent\"}",
        )
        .await;
    assert_eq!(sent, 2.0, "one message per purge, never one per replica");
    let own = f
        .metric(
            0,
            "sessiongate_shared_cache_purges_total{direction=\"received\"}",
        )
        .await;
    assert_eq!(own, 0.0, "a replica ignores its own messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_api_by_identity_reaches_every_replica() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let f = fleet(&redis, "purge", "50ms").await;
    let spec = SessionSpec::default();
    let identity = spec.identity_id.clone();
    f.kratos.add_session("tok-b1", spec.clone());
    f.kratos.add_session("tok-b2", spec);
    f.kratos.add_session("tok-other", SessionSpec::default());
    for i in 0..3 {
        for t in ["tok-b1", "tok-b2", "tok-other"] {
            assert_eq!(f.get(i, t).await, 200);
        }
    }
    // An app revokes the identity's sessions through Kratos's admin API: Kratos forgets them,
    // the replicas' caches do not (yet).
    f.kratos.remove_session("tok-b1");
    f.kratos.remove_session("tok-b2");
    for i in 0..3 {
        assert_eq!(f.get(i, "tok-b1").await, 200, "still cached on replica {i}");
    }

    let body = json!({ "identity_id": identity }).to_string();
    let (s, _) = f.purge_api(1, None, &body).await;
    assert_eq!(s, 401, "no token");
    let (s, _) = f.purge_api(1, Some("Bearer wrong"), &body).await;
    assert_eq!(s, 401, "wrong token");
    let bearer = format!("Bearer {TOKEN}");
    let (s, v) = f.purge_api(1, Some(&bearer), "{\"identity\":").await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = f
        .purge_api(1, Some(&bearer), r#"{"session_id":"a","identity_id":"b"}"#)
        .await;
    assert_eq!(s, 400, "{v}");
    let before = f.kratos.whoami_calls();
    let (s, v) = f.purge_api(1, Some(&bearer), &body).await;
    let purged = Instant::now();
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        v,
        json!({ "purged": 2 }),
        "both sessions of the identity, here"
    );
    let took = f.until_401(&[0, 1, 2], "tok-b2", purged).await;
    eprintln!("purge API propagation to every replica: {took:?}");
    f.assert_within(took, Duration::from_millis(100)).await;
    for i in 0..3 {
        assert_eq!(f.get(i, "tok-b1").await, 401, "replica {i}");
        assert_eq!(
            f.get(i, "tok-other").await,
            200,
            "another identity stays cached"
        );
    }
    assert_eq!(
        f.kratos.whoami_calls() - before,
        6,
        "each replica asked Kratos once per purged token, never for the other identity"
    );
    // a session id and a credential purge are accepted as well
    let (s, v) = f
        .purge_api(
            2,
            Some(&bearer),
            r#"{"credential":{"kind":"token","value":"tok-other"}}"#,
        )
        .await;
    assert_eq!((s, v), (202, json!({ "purged": 1 })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_cache_saves_whoami_calls_and_purges_reach_it() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    // A generous timeout: this test counts calls, and a loaded machine can exceed 50 ms (a
    // slower Redis call is a miss, by design; the outage test covers that).
    let f = fleet(&redis, "purge_and_cache", "1s").await;
    let tokens: Vec<String> = (0..1000).map(|n| format!("l2-token-{n}")).collect();
    for t in &tokens {
        f.kratos.add_session(t, SessionSpec::default());
    }
    let started = Instant::now();
    send_all(&f, 0, &tokens).await;
    assert_eq!(f.kratos.whoami_calls(), 1000);
    // the writes to Redis are queued after the answers: wait until all 1,000 are there
    let mut conn = f
        .redis(&redis)
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let pattern = format!("{}session:*", f.prefix);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .expect("keys");
        if keys.len() == 1000 {
            assert!(
                keys.iter().all(|k| !k.contains("l2-token")),
                "keys are hashes, never the credential"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{} shared entries", keys.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_all(&f, 1, &tokens).await;
    send_all(&f, 2, &tokens).await;
    let calls = f.kratos.whoami_calls();
    eprintln!(
        "L2: 3 replicas x 1000 tokens -> {calls} whoami calls in {:?}",
        started.elapsed()
    );
    if calls != 1000 {
        for i in 0..3 {
            for line in [
                "sessiongate_shared_cache_lookups_total",
                "sessiongate_shared_cache_errors_total",
            ] {
                eprintln!("replica {i} {line}: {}", f.metric(i, line).await);
            }
        }
    }
    assert_eq!(calls, 1000, "replicas 2 and 3 read the shared cache");
    for i in [1, 2] {
        let hits = f
            .metric(i, "sessiongate_shared_cache_lookups_total{result=\"hit\"}")
            .await;
        assert_eq!(hits, 1000.0, "replica {i}");
    }

    // a logout through replica 3 also removes the shared copy: replica 1 and 2 give 401
    let r = client()
        .delete(f.replicas[2].url("/.ory/self-service/logout/api"))
        .json(&json!({ "session_token": "l2-token-7" }))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 204);
    let took = f.until_401(&[0, 1], "l2-token-7", Instant::now()).await;
    eprintln!("L2 logout propagation to replicas 1 and 2: {took:?}");
    f.assert_within(took, Duration::from_millis(100)).await;

    // garbage in Redis is ignored: a value that does not parse is a miss, Kratos answers
    f.kratos.add_session("tok-garbage", SessionSpec::default());
    let key = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update([1u8]); // CredentialKind::Token's tag
        h.update(b"tok-garbage");
        format!("{}session:{:x}", f.prefix, h.finalize())
    };
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("set");
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{}purge", f.prefix))
        .arg("garbage")
        .query_async(&mut conn)
        .await
        .expect("publish");
    let before = f.kratos.whoami_calls();
    assert_eq!(f.get(1, "tok-garbage").await, 200);
    assert_eq!(f.kratos.whoami_calls(), before + 1, "asked Kratos");
    let decode = f
        .metric(1, "sessiongate_shared_cache_errors_total{op=\"decode\"}")
        .await;
    assert_eq!(decode, 2.0, "the garbage value and the garbage message");
}

/// Sends every token once to `replica`, 16 at a time; each must be 200.
async fn send_all(f: &Fleet, replica: usize, tokens: &[String]) {
    let c = client();
    let url = f.replicas[replica].url("/api/x");
    for chunk in tokens.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for t in chunk {
            let (c, url, t) = (c.clone(), url.clone(), t.clone());
            set.spawn(async move {
                let s = c
                    .get(&url)
                    .header("X-Session-Token", &t)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                (t, s)
            });
        }
        while let Some(r) = set.join_next().await {
            let (t, s) = r.expect("task");
            assert_eq!(s, 200, "{t} on replica {replica}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_or_stopped_is_survived_and_recovered_from() {
    let _serial = SERIAL.lock().await;
    let mut redis = RedisServer::start();
    let f = fleet(&redis, "purge_and_cache", "50ms").await;
    for t in ["tok-1", "tok-2", "tok-3", "tok-new", "tok-slow"] {
        f.kratos.add_session(t, SessionSpec::default());
    }
    for i in 0..3 {
        assert_eq!(f.get(i, "tok-1").await, 200);
        assert_eq!(f.get(i, "tok-2").await, 200);
    }

    redis.kill();
    for i in 0..3 {
        f.wait_shared_cache(i, "degraded").await;
    }
    // every request is answered correctly: cached, new (Kratos), unknown
    for i in 0..3 {
        assert_eq!(f.get(i, "tok-1").await, 200, "cached, replica {i}");
        assert_eq!(f.get(i, "tok-new").await, 200, "from Kratos, replica {i}");
        assert_eq!(f.get(i, "nobody").await, 401, "replica {i}");
    }
    // a logout while Redis is down: the replica that saw it purges at once
    let r = client()
        .delete(f.replicas[0].url("/.ory/self-service/logout/api"))
        .json(&json!({ "session_token": "tok-2" }))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 204);
    assert_eq!(f.get(0, "tok-2").await, 401);
    for i in 0..3 {
        let errors = f.metric(i, "sessiongate_shared_cache_errors_total").await;
        assert!(errors >= 1.0, "replica {i} counted the outage: {errors}");
    }

    redis.restart();
    for i in 0..3 {
        f.wait_shared_cache(i, "ok").await;
    }
    // the replicas that missed the purge dropped their whole cache when they came back
    for i in 0..3 {
        assert_eq!(f.get(i, "tok-2").await, 401, "replica {i}");
        assert_eq!(f.get(i, "tok-1").await, 200, "replica {i}");
        let drops = f
            .metric(i, "sessiongate_shared_cache_full_drops_total")
            .await;
        assert_eq!(drops, 2.0, "replica {i}: at start and after the restart");
    }
    // and purges reach every replica again
    let r = client()
        .delete(f.replicas[1].url("/.ory/self-service/logout/api"))
        .json(&json!({ "session_token": "tok-1" }))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 204);
    let took = f.until_401(&[0, 2], "tok-1", Instant::now()).await;
    eprintln!("propagation after the Redis restart: {took:?}");
    f.assert_within(took, Duration::from_millis(100)).await;

    // a Redis that stops answering: requests are not held beyond the timeout
    redis.pause(true);
    let c = client();
    for i in 0..3 {
        let (s, took) = timed_token_get(&c, &f.replicas[i].url("/api/x"), "tok-slow").await;
        assert_eq!(s, 200, "replica {i}");
        assert!(
            took < Duration::from_millis(500),
            "replica {i} took {took:?}"
        );
        let (s, _) = timed_token_get(&c, &f.replicas[i].url("/api/x"), "tok-3").await;
        assert_eq!(s, 200, "replica {i}");
    }
    redis.pause(false);
    for i in 0..3 {
        f.wait_shared_cache(i, "ok").await;
    }
    let no_5xx: f64 = {
        let mut n = 0.0;
        for i in 0..3 {
            n += f
                .metric(i, "sessiongate_requests_total{route=\"api\",status=\"5")
                .await;
        }
        n
    };
    assert_eq!(no_5xx, 0.0, "no 5xx caused by Redis");
}
