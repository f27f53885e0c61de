//! Test doubles for sessiongate's integration tests.
//!
//! * [`kratos::KratosDouble`]: Ory Kratos's `GET /sessions/whoami` in Kratos's real wire format
//!   (bodies validate against Kratos's session schema and parse with `ory-kratos-client`), with
//!   switchable failure modes ([`kratos::Behavior`]): 401, 403 AAL2 step-up, 429, 500, garbage,
//!   a JSON non-session, a request that never gets an answer, connections closed mid-response,
//!   and a real stop/restart (connection refused while stopped).
//! * [`selfservice`]: the Kratos double's self-service endpoints (login/registration flows,
//!   password and OIDC sign-in, native token exchange, logout, session revocation), emitting
//!   absolute URLs on the double's own origin where real Kratos does.
//! * [`oidc::OidcProvider`]: an OpenID Connect provider (authorize, token, userinfo) that
//!   records the `redirect_uri` it was given and insists on it in the token request.
//! * [`loginui::LoginUi`]: a minimal self-service UI for a *real* Kratos (renders flow UI nodes as
//!   HTML forms; shows the identity headers forwarded to the protected page), for the real-stack demo.
//! * [`echo::EchoUpstream`]: an upstream that records every request (raw path, raw query,
//!   repeated headers, body) and echoes it back as JSON.
//!
//! All are plain HTTP/1.1 servers (hyper) on `127.0.0.1:0` with keep-alive; each runs on the
//! tokio runtime of the test that started it.

pub mod echo;
pub mod kratos;
pub mod loginui;
pub mod oidc;
pub mod selfservice;
mod server;

pub use echo::{EchoUpstream, EchoedRequest};
pub use kratos::{
    session_json, session_json_at, Behavior, KratosDouble, RecordedRequest, SessionSpec,
};
pub use loginui::{LoginUi, UiRequest};
pub use oidc::{OidcProvider, OidcUser};
