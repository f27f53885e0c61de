//! One path segment, byte by byte: the byte classes of the raw path, percent-escape
//! normalisation and the UTF-8 check on runs of decoded non-ASCII bytes.

use super::PathError;

// Byte classes for the raw path.
/// Allowed raw and kept raw: unreserved, sub-delims except `;`, `:`, `@`.
pub(super) const KEEP: u8 = 0;
/// Printable ASCII that is not allowed raw in a path: percent-encoded in the output.
pub(super) const ENCODE: u8 = 1;
const PERCENT: u8 = 2;
pub(super) const SLASH: u8 = 3;
/// Controls, space, DEL, non-ASCII.
const CONTROL: u8 = 4;
const BACKSLASH: u8 = 5;
const HASH: u8 = 6;
const SEMICOLON: u8 = 7;

/// The class of every byte of a raw path.
pub(super) const CLASS: [u8; 256] = {
    let mut t = [CONTROL; 256];
    let mut b = 0x21;
    while b < 0x7F {
        t[b] = if is_unreserved(b as u8) { KEEP } else { ENCODE };
        b += 1;
    }
    let keep = b"!$&'()*+,=:@";
    let mut i = 0;
    while i < keep.len() {
        t[keep[i] as usize] = KEEP;
        i += 1;
    }
    t[b'%' as usize] = PERCENT;
    t[b'/' as usize] = SLASH;
    t[b'\\' as usize] = BACKSLASH;
    t[b'#' as usize] = HASH;
    t[b';' as usize] = SEMICOLON;
    t
};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// `ALPHA DIGIT - . _ ~` (RFC 3986 §2.3): decoded when percent-encoded.
pub(super) const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The value of one hex digit, either case.
pub(super) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_encoded(out: &mut Vec<u8>, v: u8) {
    out.extend_from_slice(&[
        b'%',
        HEX_UPPER[usize::from(v >> 4)],
        HEX_UPPER[usize::from(v & 0x0F)],
    ]);
}

/// Incremental check that a run of percent-decoded non-ASCII bytes is well-formed UTF-8
/// (Unicode Table 3-7: no overlongs, no surrogates, nothing above U+10FFFF).
struct Utf8Run {
    /// Continuation bytes still expected.
    need: u8,
    /// Allowed range for the next continuation byte.
    lo: u8,
    hi: u8,
}

impl Utf8Run {
    const fn new() -> Self {
        Utf8Run {
            need: 0,
            lo: 0x80,
            hi: 0xBF,
        }
    }

    fn byte(&mut self, v: u8) -> Result<(), PathError> {
        if self.need > 0 {
            if v < self.lo || v > self.hi {
                return Err(PathError::InvalidUtf8);
            }
            self.need -= 1;
            self.lo = 0x80;
            self.hi = 0xBF;
            return Ok(());
        }
        let (need, lo, hi) = match v {
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            // Lone continuation bytes, C0/C1 (overlong), F5..FF.
            _ => return Err(PathError::InvalidUtf8),
        };
        self.need = need;
        self.lo = lo;
        self.hi = hi;
        Ok(())
    }

    /// Anything but another decoded non-ASCII byte ends the run: it must be complete.
    #[inline]
    fn end(&self) -> Result<(), PathError> {
        if self.need == 0 {
            Ok(())
        } else {
            Err(PathError::InvalidUtf8)
        }
    }
}

/// Validates one segment, `raw[i..]` up to the next `/` or the end, and appends its normalised
/// form to `out` (printable ASCII only). Returns where the segment ends (the index of that `/`,
/// or `raw.len()`) and whether some `%2E` was decoded in it.
///
/// A run of decoded non-ASCII bytes never crosses a `/`, so each segment starts a fresh UTF-8
/// run and must complete it.
#[inline]
pub(super) fn normalise_segment(
    raw: &[u8],
    mut i: usize,
    out: &mut Vec<u8>,
) -> Result<(usize, bool), PathError> {
    let mut utf8 = Utf8Run::new();
    let mut encoded_dot = false;
    while let Some(&b) = raw.get(i) {
        match CLASS[usize::from(b)] {
            KEEP => {
                utf8.end()?;
                // Copy the whole run of bytes that stay as they are.
                let run = raw[i..]
                    .iter()
                    .position(|&c| CLASS[usize::from(c)] != KEEP)
                    .map_or(raw.len(), |n| i + n);
                out.extend_from_slice(&raw[i..run]);
                i = run;
            }
            SLASH => break,
            PERCENT => {
                let v = match (
                    raw.get(i + 1).copied().and_then(hex_value),
                    raw.get(i + 2).copied().and_then(hex_value),
                ) {
                    (Some(h), Some(l)) => (h << 4) | l,
                    _ => return Err(PathError::BadPercentEncoding),
                };
                i += 3;
                if v >= 0x80 {
                    utf8.byte(v)?;
                    push_encoded(out, v);
                    continue;
                }
                utf8.end()?;
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    b';' => return Err(PathError::PathParameter),
                    0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter),
                    _ if is_unreserved(v) => {
                        encoded_dot |= v == b'.';
                        out.push(v);
                    }
                    _ => push_encoded(out, v),
                }
            }
            ENCODE => {
                utf8.end()?;
                push_encoded(out, b);
                i += 1;
            }
            BACKSLASH => return Err(PathError::Backslash),
            HASH => return Err(PathError::Fragment),
            SEMICOLON => return Err(PathError::PathParameter),
            _ => return Err(PathError::ControlCharacter),
        }
    }
    utf8.end()?;
    Ok((i, encoded_dot))
}
