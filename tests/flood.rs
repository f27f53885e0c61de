//! A token flood: 100,000 random tokens at full speed against the real binary. Memory stays bounded
//! by `cache.max_entries`, whoami concurrency by `kratos.max_concurrent_whoami`, and a cached valid
//! session keeps being served (its latency before and during the flood is printed for the notes).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::*;

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default()
}

async fn measure_good(url: &str, n: usize, out: &Mutex<Vec<Duration>>, bad: &AtomicUsize) {
    let c = client();
    for _ in 0..n {
        let (status, took) = timed_token_get(&c, url, "good").await;
        if status != 200 {
            bad.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut v) = out.lock() {
            v.push(took);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_random_tokens_stays_bounded() {
    let total: usize = std::env::var("FLOOD_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let kratos = KratosDouble::start().await;
    let up = EchoUpstream::start().await;
    kratos.add_session("good", SessionSpec::default());
    let body = format!(
        r#"[log]
level = "warn"
access_log = false
[kratos]
public_url = "{k}"
timeout = "2s"
max_concurrent_whoami = 8
[cache]
max_entries = 5000
negative_ttl = "30s"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{u}"
auth = "session"
[routes.identity_headers]
"X-User-Id" = "identity.id"
"#,
        k = kratos.url(),
        u = up.url()
    );
    let bin = Binary::start(&body);
    let url = bin.url("/api/x");
    let bad = Arc::new(AtomicUsize::new(0));

    let before = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, before, bad) = (url.clone(), before.clone(), bad.clone());
        tasks.push(tokio::spawn(async move {
            measure_good(&url, 300, &before, &bad).await
        }));
    }
    for t in tasks {
        t.await.expect("baseline");
    }
    let rss_before = bin.rss_kib();

    let next = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    let flooding = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..32 {
        let (url, next, statuses) = (url.clone(), next.clone(), statuses.clone());
        flood.push(tokio::spawn(async move {
            let c = client();
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > deadline {
                    break;
                }
                let token = format!("flood-{i:08}-{:016x}", rand_u64(i));
                let s = c
                    .get(&url)
                    .header("X-Session-Token", token)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if let Ok(mut m) = statuses.lock() {
                    *m.entry(s).or_default() += 1;
                }
            }
        }));
    }
    let during = Arc::new(Mutex::new(Vec::new()));
    let measurer = {
        let (url, during, bad, flooding) =
            (url.clone(), during.clone(), bad.clone(), flooding.clone());
        tokio::spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                measure_good(&url, 20, &during, &bad).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    for t in flood {
        t.await.expect("flood");
    }
    let elapsed = started.elapsed();
    flooding.store(false, Ordering::Relaxed);
    measurer.await.expect("measurer");

    let rss_after = bin.rss_kib();
    let metrics = client()
        .get(bin.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let entries: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sessiongate_cache_entries "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0);
    let statuses = statuses.lock().expect("statuses").clone();
    let (b, d) = (
        p99(before.lock().expect("b").clone()),
        p99(during.lock().expect("d").clone()),
    );
    println!(
        "flood: {total} tokens in {elapsed:?} ({:.0}/s); statuses {statuses:?}; whoami calls {}, max in flight {}; \
         cache entries {entries}; rss {rss_before} -> {rss_after} KiB; cached-session p99 before {b:?}, during {d:?} ({:.2}x)",
        total as f64 / elapsed.as_secs_f64(),
        kratos.whoami_calls(),
        kratos.max_in_flight(),
        d.as_secs_f64() / b.as_secs_f64().max(1e-9),
    );
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "the cached session was refused during the flood"
    );
    assert!(
        kratos.max_in_flight() <= 8,
        "whoami concurrency {} > 8",
        kratos.max_in_flight()
    );
    assert!(
        (0.0..=5000.0).contains(&entries),
        "cache entries {entries} beyond max_entries"
    );
    let answered: usize = statuses
        .iter()
        .filter(|(s, _)| matches!(**s, 401 | 503))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        answered, total,
        "every flood request got 401 (or 503 when Kratos was saturated): {statuses:?}"
    );
    assert!(
        rss_after <= rss_before + 64 * 1024,
        "memory grew by {} KiB with a cache bounded at 5000 entries",
        rss_after.saturating_sub(rss_before)
    );
}

/// A cheap deterministic scrambler for token suffixes (no RNG crate needed in this test).
fn rand_u64(i: usize) -> u64 {
    let mut x = i as u64 ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}
