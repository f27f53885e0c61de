//! The local demo: a Kratos stand-in with demo sessions on 127.0.0.1:4433, an echo upstream on
//! 127.0.0.1:3000, and sessiongate with `config/demo.toml` on 127.0.0.1:8080 (admin on 9091).
//!
//! Run it with `bash scripts/demo.sh` (or `cargo run --example demo`), then try the printed `curl`
//! lines. Stop it with Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use sessiongate_testkit::{EchoUpstream, KratosDouble, SessionSpec};

const ALICE: &str = "demo-token-alice";
const BOB_AAL2: &str = "demo-token-bob-aal2";
const COOKIE: &str = "demo-cookie-carol";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "config/demo.toml".to_string());
    let config = sessiongate::config::load(config_path.as_ref()).map_err(|e| format!("{e}"))?;
    sessiongate::logging::init(&config.log)?;

    // The doubles run on a runtime of their own, beside pingora's.
    let doubles = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let kratos_addr: SocketAddr = "127.0.0.1:4433".parse()?;
    let upstream_addr: SocketAddr = "127.0.0.1:3000".parse()?;
    let (kratos, _upstream) = doubles.block_on(async {
        let kratos = KratosDouble::start_on(kratos_addr).await?;
        let upstream = EchoUpstream::start_on(upstream_addr).await?;
        Ok::<_, std::io::Error>((kratos, upstream))
    })?;
    kratos.add_session(
        ALICE,
        SessionSpec {
            email: "alice@example.com".into(),
            expires_in: Duration::from_secs(24 * 3600),
            ..SessionSpec::default()
        },
    );
    kratos.add_session(
        BOB_AAL2,
        SessionSpec {
            email: "bob@example.com".into(),
            aal: "aal2".into(),
            expires_in: Duration::from_secs(24 * 3600),
            ..SessionSpec::default()
        },
    );
    kratos.add_session(
        COOKIE,
        SessionSpec {
            email: "carol@example.com".into(),
            expires_in: Duration::from_secs(24 * 3600),
            ..SessionSpec::default()
        },
    );

    let listen = config.server.listen;
    let admin = config.server.admin_listen;
    let gate = sessiongate::build(config)?;
    println!(
        r#"
sessiongate demo
  proxy     http://{listen}      (config: {config_path})
  admin     http://{admin}
  kratos    http://{kratos_addr}  (stand-in; demo sessions below)
  upstream  http://{upstream_addr}  (echoes what it receives)

Demo credentials:
  {ALICE}     alice, aal1
  {BOB_AAL2}  bob, aal2
  {COOKIE}      carol, as the ory_kratos_session cookie

Try:
  curl -i http://{listen}/api/hello                                          # 401: no session
  curl -s http://{listen}/api/hello -H 'X-Session-Token: {ALICE}'        # 200: identity headers upstream
  curl -s http://{listen}/api/hello -H 'Cookie: ory_kratos_session={COOKIE}'
  curl -s http://{listen}/api/hello -H 'X-Session-Token: {ALICE}' -H 'X-User-Id: spoofed'   # spoof removed
  curl -i http://{listen}/admin/x -H 'X-Session-Token: {ALICE}'          # 403: aal2 required
  curl -s http://{listen}/admin/x -H 'X-Session-Token: {BOB_AAL2}'  # 200
  curl -i http://{listen}/app/page                                           # 303 to the login page
  curl -i 'http://{listen}/public/%2e%2e/api/x'                              # 400: ambiguous path
  curl -s http://{admin}/metrics | grep sessiongate_                     # metrics
  curl -s http://{admin}/health/ready

Ctrl-C stops the demo.
"#
    );
    let signals = sessiongate::server::UnixSignals {
        shared: gate.shared.clone(),
        readiness_lead: Duration::ZERO,
    };
    gate.run(Box::new(signals));
    drop(kratos);
    drop(doubles);
    Ok(())
}
