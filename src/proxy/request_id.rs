//! The request id: the client's `X-Request-Id` when it is short and plain, else a new one (a
//! process nonce and a counter: unique within a process's life, unguessable across restarts).

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use pingora::http::RequestHeader;

/// The request id header, on the upstream request and on every answer.
pub(crate) const X_REQUEST_ID: &str = "x-request-id";

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The client's `X-Request-Id` when it is short and plain (1 to 128 of `[A-Za-z0-9-_.:]`), else a
/// new one: 24 lower-case hex digits, the process nonce (8) then the counter (16).
///
/// A header value, because it is set on the upstream request and on the answer: the client's value
/// is shared, not copied, and a new one is built once. Its text is [`as_str`].
pub(crate) fn request_id(req: &RequestHeader) -> HeaderValue {
    if let Some(v) = req.headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            return v.clone();
        }
    }
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 24];
    hex(u64::from(process_nonce()), &mut id[..8]);
    hex(n, &mut id[8..]);
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The text of a request id from [`request_id`] (always ASCII; `-` otherwise).
pub(crate) fn as_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

/// Writes the low `out.len()` hex digits of `n`, most significant first, in lower case.
fn hex(mut n: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for d in out.iter_mut().rev() {
        *d = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

fn process_nonce() -> u32 {
    static NONCE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *NONCE.get_or_init(rand::random)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).expect("request");
        if let Some(id) = id {
            r.insert_header(X_REQUEST_ID, id).expect("header");
        }
        r
    }

    #[test]
    fn new_ids_are_24_hex_digits_counting_up() {
        let a = request_id(&req(None));
        let b = request_id(&req(None));
        for id in [&a, &b] {
            let s = as_str(id);
            assert_eq!(s.len(), 24, "{s}");
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{s}"
            );
        }
        assert_eq!(as_str(&a)[..8], as_str(&b)[..8], "one process nonce");
        let (na, nb) = (
            u64::from_str_radix(&as_str(&a)[8..], 16).expect("hex"),
            u64::from_str_radix(&as_str(&b)[8..], 16).expect("hex"),
        );
        assert!(nb > na, "{na} then {nb}");
    }

    #[test]
    fn hex_matches_format() {
        for n in [0u64, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            let mut out = [0u8; 16];
            hex(n, &mut out);
            assert_eq!(
                std::str::from_utf8(&out).expect("ascii"),
                format!("{n:016x}")
            );
        }
        let mut out = [0u8; 8];
        hex(0xdead_beef, &mut out);
        assert_eq!(&out, b"deadbeef");
    }

    #[test]
    fn the_clients_plain_id_is_kept_anything_else_replaced() {
        assert_eq!(
            as_str(&request_id(&req(Some("abc-123_x.y:z")))),
            "abc-123_x.y:z"
        );
        for bad in ["", "a b", "a/b", "\u{e9}", &"a".repeat(129)] {
            let id = request_id(&req(Some(bad)));
            assert_ne!(as_str(&id), bad);
            assert_eq!(as_str(&id).len(), 24);
        }
    }
}
