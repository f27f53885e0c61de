//! sessiongate against the real Ory stack: Ory Kratos v1.3.1 and Ory Hydra v2.3.0 built from the Go
//! module proxy by `scripts/ory.sh build` (pinned in `tools/*/go.mod`), each test with its own
//! stack on free loopback ports. Nothing here is a test double except the echo upstream.
//!
//! Groups: [`whoami`] (credential forms and precedence, cache bounds, revocation), [`native`]
//! (native social sign-in with the session token exchange, Hydra as the OIDC provider),
//! [`browser`] (social sign-in in headless Chromium), [`oauth2`] (Ory OAuth2 with PKCE on the
//! custom domain), [`doubles`] (the testkit doubles held against real Kratos).
//!
//! Run only these: `cargo test --test real_ory`.

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod doubles;
mod native;
mod oauth2;
mod stack;
mod whoami;
