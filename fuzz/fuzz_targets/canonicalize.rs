//! Fuzz the request-target canonicaliser (DESIGN.md, "Security rules" 1).
//!
//! Run with `cargo +nightly fuzz run canonicalize` from the repository root.
//! On arbitrary bytes it must never panic, and every accepted target must be a fixed point with
//! the documented shape: no dot segments, no `//`, no encoded slash, backslash or dot, no `;`,
//! `#` or control byte, uppercase hex in every escape, nothing longer than `MAX_TARGET_LEN`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiongate::path::{canonicalize, canonicalize_path, MAX_TARGET_LEN};

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'A'..=b'F' => b - b'A' + 10,
        _ => panic!("escape is not uppercase hex"),
    }
}

fn check_path(p: &str) {
    assert!(p.starts_with('/'), "{p:?} does not start with '/'");
    assert!(!p.contains("//"), "{p:?} has an empty segment");
    assert!(
        p.split('/').all(|seg| seg != "." && seg != ".."),
        "{p:?} has a dot segment"
    );
    let bytes = p.as_bytes();
    let mut k = 0;
    while k < bytes.len() {
        let b = bytes[k];
        assert!(
            b.is_ascii_graphic(),
            "{p:?} has a control, space or non-ASCII byte"
        );
        assert!(
            !matches!(b, b'\\' | b';' | b'#' | b'?'),
            "{p:?} has {:?}",
            b as char
        );
        if b == b'%' {
            assert!(k + 2 < bytes.len(), "{p:?} has a truncated escape");
            let v = (hex(bytes[k + 1]) << 4) | hex(bytes[k + 2]);
            assert!(!is_unreserved(v), "{p:?} leaves an unreserved byte encoded");
            assert!(
                !matches!(v, b'/' | b'\\' | b';' | 0x00..=0x1F | 0x7F),
                "{p:?} has a forbidden escape"
            );
            k += 3;
        } else {
            k += 1;
        }
    }
    assert!(p.len() <= MAX_TARGET_LEN);
}

/// Inputs that the rules say must be refused, recognised without decoding anything.
fn must_refuse(data: &[u8]) -> bool {
    if data.len() > MAX_TARGET_LEN || data.first() != Some(&b'/') {
        return true;
    }
    if data.iter().any(|&b| b <= b' ' || b >= 0x7F || b == b'#') {
        return true;
    }
    let path = match data.iter().position(|&b| b == b'?') {
        Some(i) => &data[..i],
        None => data,
    };
    let lower = path.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    if has(b"%2f") || has(b"%5c") || has(b"\\") || has(b";") || has(b"%3b") {
        return true;
    }
    lower.split(|&b| b == b'/').any(|seg| {
        matches!(
            seg,
            b"%2e" | b"%2e%2e" | b".%2e" | b"%2e." | b"%00" | b"%7f" | b"%0a" | b"%0d"
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let result = canonicalize(data);
    if must_refuse(data) {
        assert!(result.is_err(), "accepted a target the rules refuse");
    }

    // canonicalize_path is canonicalize without the '?' split.
    if let Ok(s) = std::str::from_utf8(data) {
        if !s.contains('?') {
            assert_eq!(
                canonicalize_path(s),
                result.clone().map(|t| t.path),
                "canonicalize_path disagrees"
            );
        }
    }

    let Ok(target) = result else {
        return;
    };
    check_path(&target.path);

    // The query is the raw bytes after the first '?', untouched.
    let question = data.iter().position(|&b| b == b'?');
    match (&target.query, question) {
        (Some(q), Some(i)) => assert_eq!(q.as_bytes(), &data[i + 1..]),
        (None, None) => {}
        _ => panic!("query split is wrong"),
    }

    // Idempotence: the forwarded target canonicalises to itself.
    let forwarded = target.to_target();
    assert!(forwarded.len() <= MAX_TARGET_LEN);
    assert_eq!(canonicalize(forwarded.as_bytes()), Ok(target.clone()));
    assert_eq!(canonicalize_path(&target.path), Ok(target.path.clone()));
});
