//! # sessiongate
//!
//! An auth-aware reverse proxy on [pingora](https://github.com/cloudflare/pingora) for applications whose
//! identity lives in Ory Kratos. Per request it matches a route, extracts the Kratos session credential,
//! resolves it to a session (cache, or one coalesced `GET /sessions/whoami`), decides, and forwards
//! with the identity in headers the client cannot spoof.
//!
//! ## Layout
//!
//! | module | concept |
//! |---|---|
//! | [`config`] | TOML schema, environment overrides, validation into a typed [`config::Config`] |
//! | [`admission`] | the request pipeline as plain code: framing, `Host`, path, route, credential, session, policy -> forward or answer |
//! | [`path`] | canonical request paths (the one spelling used for matching and forwarding) |
//! | [`host`] | the one host-name rule (request `Host`, route `host`, `cookie_domain`) |
//! | [`routing`] | the route table and its precedence |
//! | [`resolver`] | upstream names resolved at run time, every address tried in order |
//! | [`credential`] | extracting the credential with Kratos's precedence; cache keys |
//! | [`session`] | the whoami client, the session projection, the cache with coalescing |
//! | [`policy`] | route policy + session -> forward or answer |
//! | [`edge`] | the Kratos edge: Kratos's public API on the app's domain, URL/cookie/body rewriting |
//! | [`identity`] | identity header templates, stripping of client-sent copies, signed identity tokens and their JWKS |
//! | [`forwarding`] | forwarding and re-routing headers only trusted proxies may send |
//! | [`error`] | every answer sessiongate gives itself, and its HTTP form |
//! | [`fleet`] | several replicas as one cache on Redis: purge broadcast, shared L2 cache, purge API |
//! | [`proxy`] | the pingora `ProxyHttp` hooks, delegating to the above |
//! | [`decisions`] | the decision API for ingresses (nginx `auth_request`, forward auth, Envoy `ext_authz`): a question rebuilt into a `RequestView`, answered by admission |
//! | [`connections`] | downstream connection limit, keep-alive idle timeout, the idle wait outside the proxy, the worker maintenance tick |
//! | [`admin`] | health and metrics listener |
//! | [`metrics`] | Prometheus metrics with bounded labels |
//! | [`state`] | the reloadable runtime shared by proxy and admin |
//! | [`telemetry`] | W3C trace context propagation, optional OTLP span export |
//! | [`reload`] | SIGHUP and file-watch reloads |
//! | [`logging`] | log format and the access log |
//! | [`server`] | assembling and running the pingora server |
//!
//! The binary (`src/main.rs`) only parses the command line, sets up logging and calls [`server`].

pub mod admin;
pub mod admission;
pub mod config;
pub mod connections;
pub mod credential;
pub mod decisions;
pub mod edge;
pub mod error;
pub mod fleet;
pub mod forwarding;
pub mod host;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod resolver;
pub mod routing;
pub mod server;
pub mod session;
pub mod state;
pub mod telemetry;

pub use config::Config;
pub use server::{build, Sessiongate};
