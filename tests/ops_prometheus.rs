//! The metrics contract against a real Prometheus: sessiongate runs in-process in front of the Kratos
//! double, a real `prometheus` (Debian's package: `bash scripts/prometheus.sh`) scrapes its admin
//! listener every second with deploy/prometheus/alerts.yaml loaded, known traffic goes through, and
//! Prometheus's HTTP API must then hold exactly the series that traffic makes: requests by route and
//! status, decision outcomes, whoami calls and latency, cache hit ratio, stale sessions, upstream
//! errors, reloads. Every query of deploy/grafana/sessiongate.json (panels and template variables)
//! must parse and return data, and every alert rule must evaluate without error.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

/// The scrape job's name, as in deploy/prometheus/scrape.yaml (alerts.yaml's SessiongateDown uses it).
const JOB: &str = "sessiongate";

/// A real Prometheus on a loopback port, with its config and storage in a temporary directory.
/// Killed (by its pid) and its directory removed when dropped, also when the test panics.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Prometheus {
    fn start(target: SocketAddr, rules: &Path) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "sessiongate-prometheus-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir_all(dir.join("data")).expect("prometheus temp dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: ['{target}']\n",
            rules = rules.display()
        );
        fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        let log = fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let port = free_port();
        let spawned = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                panic!(
                    "cannot start `prometheus` ({e}): install it with `bash scripts/prometheus.sh` \
                     (scripts/test.sh does)"
                );
            }
        };
        Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The end of Prometheus's own log, for failure messages.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let r = client()
            .get(format!("{}{path}", self.url))
            .query(params)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log_tail()));
        let status = r.status();
        let body = r.text().await.expect("prometheus body");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} {params:?}: {status}, not JSON ({e}): {body}"))
    }

    /// `/api/v1/query`: the `data.result` vector of a successful instant query.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let v = self.get("/api/v1/query", &[("query", promql)]).await;
        assert_eq!(
            v["status"], "success",
            "query failed: {promql}\nanswer: {v}"
        );
        assert_eq!(v["data"]["resultType"], "vector", "query: {promql}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of a query that must return exactly one series.
    async fn scalar(&self, promql: &str) -> f64 {
        let result = self.query(promql).await;
        assert_eq!(
            result.len(),
            1,
            "one series expected for {promql}: {result:?}"
        );
        sample_value(&result[0])
    }

    /// `{label values joined by ','} -> value` of every series of `promql`.
    async fn by_labels(&self, promql: &str, labels: &[&str]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for series in self.query(promql).await {
            let key: Vec<&str> = labels
                .iter()
                .map(|l| series["metric"][*l].as_str().unwrap_or("<missing>"))
                .collect();
            out.insert(key.join(","), sample_value(&series));
        }
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Child::kill signals this child's own pid; nothing else is touched.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The value of one instant-vector sample (`"value": [time, "1.5"]`); NaN stays NaN.
fn sample_value(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no sample value in {series}"))
}

fn expect_map(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn config(kratos: &str, upstream: &str, dead: &str) -> String {
    format!(
        r#"
[server]
public_url = "https://app.example.com"

[kratos]
public_url = "{kratos}"
timeout = "300ms"
circuit_breaker_failures = 3
circuit_breaker_interval = "60s"

[cache]
max_ttl = "60s"
negative_ttl = "60s"
stale_if_error = "5m"

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

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "{upstream}"
auth = "session"

[[routes]]
name = "dead"
path_prefix = "/dead"
upstream = "{dead}"
auth = "anonymous"
"#
    )
}

async fn get(url: &str, token: Option<&str>) -> u16 {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.header("X-Session-Token", t);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}

/// Sends `n` requests and asserts each one's status.
async fn send(n: usize, url: &str, token: Option<&str>, status: u16) {
    for i in 0..n {
        assert_eq!(
            get(url, token).await,
            status,
            "request {i} of {n} to {url} (token {token:?})"
        );
    }
}

/// Polls `check` every 200 ms until it returns true, for at most `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, prom: &Prometheus, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}\nprometheus log:\n{}",
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The time of Prometheus's latest scrape of sessiongate (unix seconds), if it has one.
async fn last_scrape(prom: &Prometheus) -> Option<f64> {
    let v = prom
        .get(
            "/api/v1/query",
            &[("query", &format!("timestamp(up{{job=\"{JOB}\"}} == 1)"))],
        )
        .await;
    v["data"]["result"]
        .as_array()
        .and_then(|r| r.first())
        .map(sample_value)
}

/// Every `expr` of the dashboard's panels (rows included, in case one is collapsed), with its title.
fn panel_queries(panels: &[Value], out: &mut Vec<(String, String)>) {
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr: {t}"));
            out.push((title.clone(), expr.to_string()));
        }
        if let Some(inner) = p["panels"].as_array() {
            panel_queries(inner, out);
        }
    }
}

/// The dashboard's variables as a test fills them in: its job, every route, a 1m rate window.
fn substitute(expr: &str) -> String {
    let out = expr
        .replace("$__rate_interval", "1m")
        .replace("${job}", JOB)
        .replace("$job", JOB)
        .replace("${route}", ".*")
        .replace("$route", ".*");
    assert!(
        !out.contains('$'),
        "dashboard query uses a variable the test does not know: {expr}"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_metrics_contract_and_every_dashboard_query_has_data() {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kratos = KratosDouble::start().await;
    let upstream = EchoUpstream::start().await;
    // A route whose upstream refuses connections: nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cfg = config(&kratos.url(), &upstream.url(), &dead);
    let proxy = TestProxy::start(&cfg);
    let prom = Prometheus::start(proxy.admin, &root.join("deploy/prometheus/alerts.yaml"));

    // Prometheus is up, has the target and has scraped it once before any traffic, so that the
    // counters' increases below fall inside Prometheus's samples.
    wait_for(
        "prometheus to be ready",
        Duration::from_secs(30),
        &prom,
        || {
            let url = format!("{}/-/ready", prom.url);
            async move {
                client()
                    .get(url)
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 200)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    wait_for(
        "the sessiongate target to be up",
        Duration::from_secs(20),
        &prom,
        || async {
            let v = prom.get("/api/v1/targets", &[]).await;
            let targets = v["data"]["activeTargets"].as_array().cloned();
            targets.is_some_and(|t| {
                t.iter().any(|t| {
                    t["labels"]["job"] == JOB
                        && t["health"] == "up"
                        && t["scrapeUrl"] == format!("http://{}/metrics", proxy.admin)
                })
            })
        },
    )
    .await;
    wait_for("a first scrape", Duration::from_secs(10), &prom, || async {
        last_scrape(&prom).await.is_some()
    })
    .await;

    // Phase 1, Kratos healthy.
    kratos.add_session("alice", SessionSpec::default());
    kratos.add_session(
        "stale-user",
        SessionSpec {
            cache_for: Some(1),
            ..SessionSpec::default()
        },
    );
    let api = proxy.url("/api/x");
    send(5, &api, Some("alice"), 200).await; // 1 miss (whoami valid), 4 hits
    send(2, &api, Some("nobody"), 401).await; // 1 miss (whoami invalid), 1 negative hit
    send(3, &api, None, 401).await; // no credential: no lookup
    send(4, &proxy.url("/public/x"), None, 200).await;
    send(1, &proxy.url("/maybe/x"), None, 200).await;
    send(2, &proxy.url("/dead/x"), None, 502).await;
    send(1, &api, Some("stale-user"), 200).await; // miss (whoami valid), cached for 1 s only
                                                  // Past stale-user's Ory-Session-Cache-For, and a few scrapes so that phase 2 is a change.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Phase 2, Kratos answers 500.
    kratos.set_behavior(Behavior::ServerError);
    // Miss, whoami server_error (failure 1): served from the stale_if_error window.
    send(1, &api, Some("stale-user"), 200).await;
    // Misses, server_error (failures 2 and 3): 503; the breaker opens.
    send(1, &api, Some("down-1"), 503).await;
    send(1, &api, Some("down-2"), 503).await;
    // Miss, refused unsent by the open breaker: 503.
    send(1, &api, Some("down-3"), 503).await;
    assert_eq!(kratos.whoami_calls(), 6, "whoami calls that reached Kratos");

    // Reloads: an invalid file is rejected, the same configuration in a file is accepted.
    let reload_dir = prom.dir.join("reload");
    fs::create_dir_all(&reload_dir).expect("reload dir");
    let bad = reload_dir.join("bad.toml");
    fs::write(&bad, "[kratos\npublic_url = ").expect("write bad config");
    assert!(!sessiongate::reload::reload_from(&proxy.shared, &bad));
    let good = reload_dir.join("good.toml");
    fs::write(&good, &cfg).expect("write config");
    assert!(sessiongate::reload::reload_from(&proxy.shared, &good));
    let traffic_done = unix_now();

    // A scrape that started a second after the last request (whose metrics are recorded in the
    // logging phase, after the answer) has everything.
    wait_for(
        "a scrape after the traffic",
        Duration::from_secs(20),
        &prom,
        || async {
            last_scrape(&prom)
                .await
                .is_some_and(|t| t > traffic_done + 1.0)
        },
    )
    .await;

    // Requests by route and status: exactly these series.
    let sel = format!("job=\"{JOB}\"");
    assert_eq!(
        prom.by_labels(
            &format!("sessiongate_requests_total{{{sel}}}"),
            &["route", "status"]
        )
        .await,
        expect_map(&[
            ("api,200", 7.0),
            ("api,401", 5.0),
            ("api,503", 3.0),
            ("dead,502", 2.0),
            ("maybe,200", 1.0),
            ("public,200", 4.0),
        ]),
        "sessiongate_requests_total by route and status"
    );
    assert_eq!(
        prom.scalar(&format!(
            "sessiongate_requests_total{{{sel}, route=\"api\", status=\"401\"}}"
        ))
        .await,
        5.0
    );
    // Request rate by route: a query over the window of the traffic.
    let rates = prom
        .by_labels(
            &format!("sum by (route) (rate(sessiongate_requests_total{{{sel}}}[1m]))"),
            &["route"],
        )
        .await;
    assert_eq!(
        rates.keys().cloned().collect::<Vec<_>>(),
        ["api", "dead", "maybe", "public"],
        "request rate by route: {rates:?}"
    );
    assert!(
        rates["api"] > 0.0,
        "api's request rate after traffic: {rates:?}"
    );

    // Decision outcomes.
    assert_eq!(
        prom.by_labels(
            &format!("sessiongate_auth_decisions_total{{{sel}}}"),
            &["route", "outcome"]
        )
        .await,
        expect_map(&[
            ("api,authenticated", 6.0),
            ("api,authenticated_stale", 1.0),
            ("api,kratos_unavailable", 3.0),
            ("api,unauthenticated", 5.0),
            ("dead,upstream_unreachable", 2.0),
            ("maybe,no_credential", 1.0),
            ("public,anonymous", 4.0),
        ]),
        "sessiongate_auth_decisions_total by route and outcome"
    );

    // whoami calls and latency. circuit_open is observed in the histogram too (as 0 s).
    assert_eq!(
        prom.by_labels(
            &format!("sessiongate_whoami_calls_total{{{sel}}}"),
            &["result"]
        )
        .await,
        expect_map(&[
            ("circuit_open", 1.0),
            ("invalid", 1.0),
            ("server_error", 3.0),
            ("valid", 2.0),
        ]),
        "sessiongate_whoami_calls_total by result"
    );
    assert_eq!(
        prom.scalar(&format!(
            "sessiongate_whoami_duration_seconds_count{{{sel}}}"
        ))
        .await,
        // the six calls Kratos saw; the breaker's refusal sent nothing and has no duration
        6.0
    );
    for q in ["0.5", "0.9", "0.99"] {
        let v = prom
            .scalar(&format!(
                "histogram_quantile({q}, sum by (le) (rate(sessiongate_whoami_duration_seconds_bucket{{{sel}}}[1m])))"
            ))
            .await;
        // Every call ended within kratos.timeout (300 ms).
        assert!(
            v.is_finite() && (0.0..=0.3).contains(&v),
            "whoami latency p{q}: {v}"
        );
    }

    // Cache: 4 hits + 1 negative hit of 12 lookups.
    assert_eq!(
        prom.by_labels(
            &format!("sessiongate_cache_lookups_total{{{sel}}}"),
            &["result"]
        )
        .await,
        expect_map(&[("hit", 4.0), ("miss", 7.0), ("negative_hit", 1.0)]),
        "sessiongate_cache_lookups_total by result"
    );
    let ratio = prom
        .scalar(&format!(
            "sum(sessiongate_cache_lookups_total{{{sel}, result=~\"hit|negative_hit|coalesced\"}}) / sum(sessiongate_cache_lookups_total{{{sel}}})"
        ))
        .await;
    assert!(
        (ratio - 5.0 / 12.0).abs() < 1e-9,
        "cache hit ratio {ratio}, expected 5/12"
    );
    // Sampled at scrape time after the cache's maintenance: alice's session and nobody's rejection
    // (stale-user's entry expired with its Ory-Session-Cache-For; 5xx answers are not cached).
    assert_eq!(
        prom.scalar(&format!("sessiongate_cache_entries{{{sel}}}"))
            .await,
        2.0,
        "sessiongate_cache_entries"
    );

    // Stale sessions, upstream errors, reloads.
    assert_eq!(
        prom.by_labels(
            &format!("sessiongate_stale_sessions_served_total{{{sel}}}"),
            &["route"]
        )
        .await,
        expect_map(&[("api", 1.0)])
    );
    assert_eq!(
        prom.by_labels(
            &format!("sessiongate_upstream_errors_total{{{sel}}}"),
            &["route"]
        )
        .await,
        expect_map(&[("dead", 2.0)])
    );
    assert_eq!(
        prom.by_labels(
            &format!("sessiongate_config_reloads_total{{{sel}}}"),
            &["result"]
        )
        .await,
        expect_map(&[("ok", 1.0), ("rejected", 1.0)])
    );

    // The dashboard: every panel query parses and returns at least one series with a number.
    let path = root.join("deploy/grafana/sessiongate.json");
    let dashboard: Value = serde_json::from_str(
        &fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut queries = Vec::new();
    panel_queries(
        dashboard["panels"].as_array().expect("dashboard panels"),
        &mut queries,
    );
    assert!(queries.len() >= 20, "dashboard queries: {}", queries.len());
    let mut failures = Vec::new();
    for (title, expr) in &queries {
        let promql = substitute(expr);
        let v = prom.get("/api/v1/query", &[("query", &promql)]).await;
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if v["status"] != "success" {
            failures.push(format!("{title}: {promql}: {v}"));
        } else if !result.iter().any(|s| sample_value(s).is_finite()) {
            failures.push(format!(
                "{title}: {promql}: no series with a number: {result:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard queries without data:\n{}",
        failures.join("\n")
    );

    // The dashboard's template variables (Grafana's label_values(metric, label)).
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("templating list");
    let mut names = Vec::new();
    for var in vars {
        let name = var["name"].as_str().expect("variable name");
        names.push(name);
        let def = var["definition"].as_str().expect("variable definition");
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: not label_values(...): {def}"));
        let (metric, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("variable {name}: {def}"));
        let v = prom
            .get(
                &format!("/api/v1/label/{}/values", label.trim()),
                &[("match[]", &substitute(metric.trim()))],
            )
            .await;
        assert_eq!(v["status"], "success", "variable {name}: {v}");
        let values: Vec<&str> = v["data"]
            .as_array()
            .expect("label values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let expected: &[&str] = match name {
            "job" => &[JOB],
            "route" => &["api", "dead", "maybe", "public"],
            other => panic!("unexpected dashboard variable {other}"),
        };
        assert_eq!(values, expected, "values of variable {name}");
    }
    assert_eq!(names, ["job", "route"]);

    // alerts.yaml loaded into the real server: every rule evaluates without error.
    let rules = prom.get("/api/v1/rules", &[]).await;
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(loaded.len(), 9, "rules loaded from alerts.yaml: {rules}");
    for r in loaded {
        assert_eq!(r["health"], "ok", "rule {} evaluates: {r}", r["name"]);
    }

    eprintln!(
        "prometheus contract checked: {} dashboard queries, {:.1}s",
        queries.len(),
        started.elapsed().as_secs_f64()
    );
}
