//! The pass over the whole path: one segment at a time, merging runs of `/` and removing dot
//! segments (RFC 3986 §5.2.4) on the output itself, never rising above the root.

use super::escape::normalise_segment;
use super::PathError;

/// The single pass over the path: validate, normalise each segment straight into `out`, then
/// merge empty segments and resolve dot segments on `out` itself. `out` only ever receives
/// printable ASCII.
pub(super) fn canonical_path(raw: &[u8]) -> Result<String, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 1; // just past a '/'
    loop {
        // One segment: raw[i..] up to the next '/' or the end.
        let seg_start = out.len();
        out.push(b'/');
        let (end, encoded_dot) = normalise_segment(raw, i, &mut out)?;
        i = end;
        let last = i >= raw.len();
        match &out[seg_start + 1..] {
            // `//` merges into `/`; a final empty segment is the trailing slash and stays.
            b"" if !last => out.truncate(seg_start),
            seg @ (b"." | b"..") => {
                if encoded_dot {
                    return Err(PathError::EncodedDotSegment);
                }
                let parent = seg.len() == 2;
                out.truncate(seg_start);
                if parent {
                    // `out` is "/s1/s2/..." with non-empty segments: drop the last one, if any.
                    let cut = out.iter().rposition(|&c| c == b'/').unwrap_or(0);
                    out.truncate(cut);
                }
                if last {
                    out.push(b'/');
                }
            }
            _ => {}
        }
        if last {
            break;
        }
        i += 1; // the '/'
    }
    if out.is_empty() {
        out.push(b'/');
    }
    // Always ASCII, so this cannot fail; no `unsafe` for a few nanoseconds.
    String::from_utf8(out).map_err(|_| PathError::ControlCharacter)
}
