//! The real-stack demo: sessiongate with `config/demo-real.toml` on 127.0.0.1:4455 in front of real
//! Ory Kratos and Ory Hydra (started by `scripts/ory.sh start`), an echo upstream on 127.0.0.1:3000
//! and a minimal login UI on 127.0.0.1:3001. It registers a demo user and prints its session token.
//!
//! Run it with `bash scripts/demo.sh --real`, which builds and starts Kratos and Hydra first and
//! stops them when this exits. Stop it with Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sessiongate_testkit::{EchoUpstream, LoginUi};

const EMAIL: &str = "demo@example.test";
const PASSWORD: &str = "demo-password-4711-ory";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "config/demo-real.toml".to_string());
    let config = sessiongate::config::load(config_path.as_ref()).map_err(|e| format!("{e}"))?;
    sessiongate::logging::init(&config.log)?;
    let kratos = config.kratos.public_url.to_string();
    let kratos = kratos.trim_end_matches('/').to_owned();
    let listen = config.server.listen;
    let admin = config.server.admin_listen;
    let public = format!("http://{listen}");

    let side = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let upstream_addr: SocketAddr = "127.0.0.1:3000".parse()?;
    let ui_addr: SocketAddr = "127.0.0.1:3001".parse()?;
    let (_upstream, _ui) = side.block_on(async {
        let upstream = EchoUpstream::start_on(upstream_addr).await?;
        let ui = LoginUi::start_on(ui_addr, &kratos, &format!("{public}/.ory")).await?;
        Ok::<_, std::io::Error>((upstream, ui))
    })?;

    let gate = sessiongate::build(config)?;
    let signals = sessiongate::server::UnixSignals {
        shared: gate.shared.clone(),
        readiness_lead: Duration::ZERO,
    };
    let proxy = std::thread::spawn(move || gate.run(Box::new(signals)));

    // A demo user, registered through sessiongate's edge like a native app would.
    let token = side
        .block_on(register(&public))
        .unwrap_or_else(|e| format!("(registration failed: {e})"));
    println!(
        r#"
sessiongate demo against real Ory Kratos and Ory Hydra
  public origin  {public}      (sessiongate; config: {config_path})
  admin          http://{admin}
  Kratos         {kratos}  (its public API is {public}/.ory)
  Hydra          {public}/oauth2, {public}/.well-known/openid-configuration
  upstream       http://{upstream_addr} (echo), login UI http://{ui_addr}

Demo user: {EMAIL} / {PASSWORD}, session token:
  {token}

Try:
  curl -i {public}/api/hello                                        # 401: no session
  curl -s {public}/api/hello -H 'X-Session-Token: {token}'   # 200: identity headers upstream
  curl -s {public}/.ory/sessions/whoami -H 'X-Session-Token: {token}'   # Kratos itself, on the custom domain
  curl -s {public}/.ory/self-service/login/api                      # a native login flow: every URL on {public}
  curl -s {public}/.well-known/openid-configuration                 # Hydra, on the custom domain
  curl -s http://{admin}/metrics | grep sessiongate_

In a browser open {public}/app/ : sessiongate sends you to Kratos's login, the login page offers
"Sign in with Test IdP (Ory Hydra)" (Hydra's login and consent are accepted automatically as
alice@example.test) or the demo user's password, and you come back to the protected page with an
ory_kratos_session cookie on {public}.

Ctrl-C stops the demo (and scripts/demo.sh --real stops Kratos and Hydra).
"#
    );
    let _ = proxy.join();
    Ok(())
}

/// Registers (or, when it exists, logs in) the demo user through the edge; its session token.
async fn register(public: &str) -> Result<String, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    // sessiongate is starting on another thread: wait for it
    for _ in 0..50 {
        if http
            .get(format!("{public}/.ory/health/alive"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (kind, body) in [
        (
            "registration",
            json!({"method": "password", "password": PASSWORD, "traits": {"email": EMAIL}}),
        ),
        (
            "login",
            json!({"method": "password", "identifier": EMAIL, "password": PASSWORD}),
        ),
    ] {
        let flow = json_of(http.get(format!("{public}/.ory/self-service/{kind}/api"))).await?;
        let action = flow["ui"]["action"].as_str().ok_or("no ui.action")?;
        let done = json_of(http.post(action).json(&body)).await?;
        if let Some(t) = done["session_token"].as_str() {
            return Ok(t.to_owned());
        }
    }
    Err("neither registration nor login gave a session token".into())
}

/// Sends `request` and reads its JSON body.
async fn json_of(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let resp = request.send().await.map_err(|e| e.to_string())?;
    resp.json().await.map_err(|e| e.to_string())
}
