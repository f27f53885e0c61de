//! The request id: the client's `X-Request-Id` when it is short and plain, else a new one (a
//! process nonce and a counter: unique within a process's life, unguessable across restarts).

use std::sync::atomic::{AtomicU64, Ordering};

use pingora::http::RequestHeader;

/// The request id header, on the upstream request and on every answer.
pub(crate) const X_REQUEST_ID: &str = "x-request-id";

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The client's `X-Request-Id` when it is short and plain, else a new one.
pub(crate) fn request_id(req: &RequestHeader) -> String {
    if let Some(v) = req.headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            return String::from_utf8_lossy(b).into_owned();
        }
    }
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}{:016x}", process_nonce(), n)
}

fn process_nonce() -> u32 {
    static NONCE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *NONCE.get_or_init(rand::random)
}
