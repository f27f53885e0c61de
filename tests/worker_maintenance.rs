//! The worker maintenance the binary installs (`connections::set_worker_maintenance`: mimalloc's
//! collection, so that memory freed by closed connections goes back to the OS): it starts with the
//! first connection, on the proxy's runtime, and runs again about once a second. Its own test
//! binary, because the hook is process-wide.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

static RUNS: AtomicUsize = AtomicUsize::new(0);

fn count_run() {
    RUNS.fetch_add(1, Ordering::SeqCst);
}

/// Waits (bounded by `within`) until the hook ran at least `n` times; the count it reached.
async fn runs_reach(n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    while RUNS.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    RUNS.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_starts_with_the_first_connection_and_repeats_every_second() {
    assert!(sessiongate::connections::set_worker_maintenance(count_run));
    assert!(
        !sessiongate::connections::set_worker_maintenance(count_run),
        "only the first hook counts"
    );
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        0,
        "nothing runs before a proxy serves"
    );
    // World::start connects to the proxy's port to see it listening: the first connection
    let w = World::start().await;
    let r = client()
        .get(w.proxy.url("/public/x"))
        .header("host", "app.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert!(
        runs_reach(1, Duration::from_secs(2)).await >= 1,
        "ran after the first connection"
    );
    let (first, seen) = (Instant::now(), RUNS.load(Ordering::SeqCst));
    // two more runs: at least one whole second apart, and both within a few seconds
    assert!(
        runs_reach(seen + 2, Duration::from_secs(4)).await >= seen + 2,
        "runs again every second"
    );
    assert!(
        first.elapsed() >= Duration::from_millis(900),
        "not more often than once a second: two more runs in {:?}",
        first.elapsed()
    );
}
