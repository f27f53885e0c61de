//! Reference model: a deliberately naive, allocation-heavy restatement of the rules: split into
//! segments, tokenise each into raw bytes and decoded escapes, check, re-encode, then resolve
//! the segment list with a stack. Only used to cross-check the fast implementation.

use super::PATH_CASES;
use crate::path::escape::{is_unreserved, CLASS, KEEP};
use crate::path::{CanonicalTarget, MAX_TARGET_LEN};

#[derive(Clone, Copy)]
enum Tok {
    Raw(u8),
    Esc(u8),
}

pub(super) fn model(raw: &[u8]) -> Option<CanonicalTarget> {
    if raw.len() > MAX_TARGET_LEN || raw.first() != Some(&b'/') {
        return None;
    }
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    if let Some(q) = query {
        if q.iter().any(|&b| !(0x21..=0x7E).contains(&b) || b == b'#') {
            return None;
        }
    }
    let segments: Vec<&[u8]> = path[1..].split(|&b| b == b'/').collect();
    let n = segments.len();
    let mut stack: Vec<String> = Vec::new();
    let mut trailing = false;
    let mut decoded_all = Vec::new();
    for (k, seg) in segments.into_iter().enumerate() {
        let last = k + 1 == n;
        let mut toks = Vec::new();
        let mut j = 0;
        while j < seg.len() {
            if seg[j] == b'%' {
                let hex = std::str::from_utf8(seg.get(j + 1..j + 3)?).ok()?;
                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                    return None;
                }
                toks.push(Tok::Esc(u8::from_str_radix(hex, 16).ok()?));
                j += 3;
            } else {
                toks.push(Tok::Raw(seg[j]));
                j += 1;
            }
        }
        let decoded: Vec<u8> = toks
            .iter()
            .map(|t| match *t {
                Tok::Raw(b) | Tok::Esc(b) => b,
            })
            .collect();
        for t in &toks {
            match *t {
                Tok::Raw(b) => {
                    if b <= 0x20 || b >= 0x7F || b"\\#;".contains(&b) {
                        return None;
                    }
                }
                Tok::Esc(b) => {
                    if b < 0x20 || b == 0x7F || b"/\\;".contains(&b) {
                        return None;
                    }
                }
            }
        }
        // Whole-segment UTF-8 is equivalent to per-run (raw bytes are ASCII here).
        std::str::from_utf8(&decoded).ok()?;
        decoded_all.extend_from_slice(&decoded);
        decoded_all.push(b'/');
        let is_dot = decoded == b"." || decoded == b"..";
        if is_dot && toks.iter().any(|t| matches!(t, Tok::Esc(_))) {
            return None;
        }
        let mut canon = String::new();
        for t in &toks {
            match *t {
                Tok::Raw(b) if CLASS[b as usize] == KEEP => canon.push(b as char),
                Tok::Esc(b) if is_unreserved(b) => canon.push(b as char),
                Tok::Raw(b) | Tok::Esc(b) => canon.push_str(&format!("%{b:02X}")),
            }
        }
        match canon.as_str() {
            "" => trailing = last,
            "." => trailing = last,
            ".." => {
                stack.pop();
                trailing = last;
            }
            _ => {
                stack.push(canon);
                trailing = false;
            }
        }
    }
    // Every decoded run across segments is valid too (sanity of the model itself).
    std::str::from_utf8(&decoded_all).ok()?;
    let mut path = String::from("/");
    path.push_str(&stack.join("/"));
    if trailing && !stack.is_empty() {
        path.push('/');
    }
    let t = CanonicalTarget {
        path,
        query: query.map(|q| String::from_utf8(q.to_vec()).unwrap()),
    };
    if t.target_len() > MAX_TARGET_LEN {
        return None;
    }
    Some(t)
}

#[test]
fn model_agrees_with_table() {
    for &(input, expected) in PATH_CASES {
        assert_eq!(
            model(input.as_bytes()).map(|t| t.path),
            expected.ok().map(str::to_owned),
            "{input:?}"
        );
    }
}
