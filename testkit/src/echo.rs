//! An upstream that records every request and echoes it back as JSON.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use crate::server::{self, lock, Body, ConnCtx, Running};

/// One request as the upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoedRequest {
    pub method: String,
    /// The path exactly as it arrived in the request line (no normalisation, no decoding), without
    /// the query. For an absolute-form target (`GET http://host/p`) it is the path part.
    pub path: String,
    /// The raw query (after `?`), if any.
    pub query: Option<String>,
    /// Names lowercased; repeated headers kept. Order: by first appearance of each name, with
    /// all values of a name together in arrival order (hyper groups repeated names).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl EchoedRequest {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of a header, in arrival order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct State {
    addr: SocketAddr,
    requests: Mutex<Vec<EchoedRequest>>,
    running: tokio::sync::Mutex<Option<Running>>,
}

/// The echo upstream. Cheap to clone; clones share one server and one record.
#[derive(Clone)]
pub struct EchoUpstream {
    state: Arc<State>,
}

impl std::fmt::Debug for EchoUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoUpstream")
            .field("addr", &self.state.addr)
            .finish_non_exhaustive()
    }
}

impl EchoUpstream {
    /// Starts on `127.0.0.1:0`. Any method, any path: 200 `application/json`
    /// `{"method","path","query","headers":[[name,value],...],"body_len"}` with `X-Echo: 1`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> EchoUpstream {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the echo upstream on 127.0.0.1:0")
    }

    /// Starts on a given address (the demo uses a fixed port).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<EchoUpstream> {
        let listener = server::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            addr,
            requests: Mutex::new(Vec::new()),
            running: tokio::sync::Mutex::new(None),
        });
        let handler_state = state.clone();
        let running = server::serve(listener, move |req, ctx| {
            echo(handler_state.clone(), req, ctx)
        });
        *state.running.lock().await = Some(running);
        Ok(EchoUpstream { state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    /// Every request received since start or the last [`reset`](Self::reset).
    pub fn requests(&self) -> Vec<EchoedRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    pub fn reset(&self) {
        lock(&self.state.requests).clear();
    }

    /// Closes the listener and every open connection (an upstream that went away). Idempotent.
    pub async fn stop(&self) {
        let running = self.state.running.lock().await.take();
        if let Some(running) = running {
            running.stop().await;
        }
    }
}

async fn echo(state: Arc<State>, req: Request<Incoming>, _ctx: ConnCtx) -> Response<Body> {
    let (parts, body) = req.into_parts();
    // A body the client aborted is recorded as far as it got (here: empty).
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let recorded = EchoedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: crate::server::header_pairs(&parts.headers),
        body: body.to_vec(),
    };
    let answer = json!({
        "method": recorded.method,
        "path": recorded.path,
        "query": recorded.query,
        "headers": recorded.headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
        "body_len": recorded.body.len(),
    });
    lock(&state.requests).push(recorded);
    let mut resp = Response::new(Body::new(Bytes::from(
        serde_json::to_vec(&answer).expect("serialize echo JSON"),
    )));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert("x-echo", HeaderValue::from_static("1"));
    resp
}
