//! Operations on the real binary: SIGHUP and file-watch reloads under load with zero failed requests,
//! invalid reloads refused, SIGTERM draining with readiness failing first.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::*;

fn routes(kratos: &str, upstream: &str, extra: &str) -> String {
    format!(
        r#"grace_period = "2s"
watch_config = true
watch_interval = "100ms"
[log]
level = "info"
[kratos]
public_url = "{kratos}"
timeout = "3s"
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{upstream}"
auth = "session"
[routes.identity_headers]
"X-User-Id" = "identity.id"
{extra}"#
    )
}

const NEW_ROUTE: &str =
    "[[routes]]\nname = \"new\"\npath_prefix = \"/new\"\nupstream = \"UP\"\nauth = \"anonymous\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_lose_no_request_and_bad_configs_are_refused() {
    let kratos = KratosDouble::start().await;
    let up = EchoUpstream::start().await;
    kratos.add_session("load", SessionSpec::default());
    let bin = Binary::start(&routes(&kratos.url(), &up.url(), ""));
    let c = client();
    assert_eq!(
        c.get(bin.url("/new/x")).send().await.expect("req").status(),
        404
    );

    // Constant load from 8 connections while the configuration is reloaded 6 times.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (c, url, stop, ok, failed) = (
            c.clone(),
            bin.url("/api/x"),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        load.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match c.get(&url).header("X-Session-Token", "load").send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed request: {:?}", other.map(|r| r.status()));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let new_route = NEW_ROUTE.replace("UP", &up.url());
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let extra = if i % 2 == 0 { new_route.as_str() } else { "" };
        bin.rewrite(&routes(&kratos.url(), &up.url(), extra));
        bin.signal("-HUP");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("reload under load: {ok} ok, {failed} failed");
    assert!(ok > 100, "load ran ({ok})");
    assert_eq!(failed, 0, "requests lost during reloads");
    assert_eq!(kratos.whoami_calls(), 1, "the cache survived the reloads");

    // Last rewrite had no /new route: 404 again. Then add it: served.
    assert_eq!(
        c.get(bin.url("/new/x")).send().await.expect("req").status(),
        404
    );
    bin.rewrite(&routes(&kratos.url(), &up.url(), &new_route));
    bin.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.get(bin.url("/new/x")).send().await.expect("req").status(),
        200
    );

    // An invalid configuration is refused; the old one keeps serving.
    bin.rewrite("this is [ not toml");
    bin.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.get(bin.url("/new/x")).send().await.expect("req").status(),
        200
    );
    let r = c
        .get(bin.url("/api/x"))
        .header("X-Session-Token", "load")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 200);
    let metrics = c
        .get(bin.admin_url("/metrics"))
        .send()
        .await
        .expect("m")
        .text()
        .await
        .expect("t");
    assert!(
        metrics.contains("sessiongate_config_reloads_total{result=\"rejected\"}"),
        "{metrics}"
    );
    let log = bin.stderr();
    assert!(log.contains("configuration reload rejected"), "{log}");
    assert!(!log.contains("load\""), "no token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watch_reloads_without_a_signal() {
    let kratos = KratosDouble::start().await;
    let up = EchoUpstream::start().await;
    let bin = Binary::start(&routes(&kratos.url(), &up.url(), ""));
    let c = client();
    assert_eq!(
        c.get(bin.url("/new/x")).send().await.expect("req").status(),
        404
    );
    bin.rewrite(&routes(
        &kratos.url(),
        &up.url(),
        &NEW_ROUTE.replace("UP", &up.url()),
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = c.get(bin.url("/new/x")).send().await.expect("req").status();
        if s == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the watch did not reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_first_then_drains_in_flight_requests() {
    let kratos = KratosDouble::start().await;
    let up = EchoUpstream::start().await;
    kratos.add_session("slow", SessionSpec::default());
    let mut bin = Binary::start(&routes(&kratos.url(), &up.url(), ""));
    let c = client();
    assert_eq!(
        c.get(bin.admin_url("/health/ready"))
            .send()
            .await
            .expect("ready")
            .status(),
        200
    );

    // A request that is still in flight when SIGTERM arrives (whoami takes 1.5s).
    kratos.set_delay(Duration::from_millis(1500));
    let in_flight = {
        let (c, url) = (c.clone(), bin.url("/api/x"));
        tokio::spawn(async move {
            c.get(url)
                .header("X-Session-Token", "slow")
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    bin.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = c
        .get(bin.admin_url("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 503, "readiness fails first");
    assert_eq!(
        in_flight.await.expect("join").expect("in-flight request"),
        200,
        "drained, not dropped"
    );

    // The process exits within the grace period (2s) plus the readiness lead (1s) and some slack.
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(s) = bin.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "{:?}",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_once_nothing_is_in_flight_not_after_the_whole_grace_period() {
    let kratos = KratosDouble::start().await;
    let up = EchoUpstream::start().await;
    // grace 8 s: readiness lead min(8 s, 5 s) / 2 = 2.5 s; pingora alone would then sleep 8 s more
    let config = routes(&kratos.url(), &up.url(), "")
        .replace("grace_period = \"2s\"", "grace_period = \"8s\"");
    let mut bin = Binary::start(&config);
    kratos.add_session("t", SessionSpec::default());
    // an idle keep-alive connection is not a request in flight
    let c = client();
    let r = c
        .get(bin.url("/api/x"))
        .header("X-Session-Token", "t")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let sent = Instant::now();
    bin.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = bin.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(2400) && took < Duration::from_millis(4500),
        "exited {took:?} after SIGTERM: expected the 2.5 s readiness lead and little more"
    );
    let err = bin.stderr();
    assert!(err.contains("drained: no request in flight"), "{err}");
}
