//! W3C Trace Context (Level 1, <https://www.w3.org/TR/trace-context/>) in HTTP headers: reading a
//! request's `traceparent`/`tracestate` and writing them on the requests sessiongate sends.
//!
//! Parsing and formatting are the OpenTelemetry crate's [`TraceContextPropagator`]; this module
//! adds what the propagator leaves out of the spec's grammar (it parses the fields with
//! `from_str_radix`, which takes short fields, a `+` sign and upper-case version or flags):
//!
//! - §3.2.2: `version "-" trace-id "-" parent-id "-" trace-flags`, each field exactly 2, 32, 16
//!   and 2 lower-case hex digits (`HEXDIGLC`); version `ff` is invalid (§3.2.2.1); version `00`
//!   has nothing after the flags, a higher version may add fields after a `-` (§3.2.4);
//! - §3.2.2.3/§3.2.2.4: an all-zero trace-id or parent-id is invalid (the propagator checks it);
//! - §3.2: a request with more than one `traceparent` is treated as having none (the spec's test
//!   suite expects a new trace then);
//! - §3.3.1: several `tracestate` headers are one list, joined with `,` (RFC 9110 §5.3); an
//!   invalid list is dropped, and `tracestate` is never read when `traceparent` is invalid
//!   (§3.3: "if the vendor failed to parse traceparent, it MUST NOT attempt to parse tracestate");
//! - §3.3.1.1: whitespace around list-members and empty list-members are allowed (the crate's
//!   list parser takes neither: the list is handed to it without them).
//!
//! Only the sampled bit of the flags is kept (§3.2.2.5: the one flag Level 1 defines).

use std::borrow::Cow;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The `traceparent` header (§3.2).
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header (§3.3).
pub const TRACESTATE: &str = "tracestate";

fn propagator() -> &'static TraceContextPropagator {
    static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

/// The trace context a request's headers carry, as a [`Context`] holding the caller's (remote)
/// span: an empty context when there is no valid `traceparent`.
pub fn extract(headers: &HeaderMap) -> Context {
    match Fields::of(headers) {
        Some(fields) => propagator().extract(&fields),
        None => Context::new(),
    }
}

/// The caller's span context, when the headers carry a valid one.
pub fn parent_of(headers: &HeaderMap) -> Option<SpanContext> {
    let cx = extract(headers);
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.clone())
}

/// `traceparent` and `tracestate` for a request whose parent is the span of `cx` (§3.2.2,
/// version `00`); `None` when `cx` has no valid span. `tracestate` is `None` when the list is
/// empty: the header is then not sent (§3.3.1.1: an empty `tracestate` may be dropped).
pub fn headers_for(cx: &Context) -> Option<(HeaderValue, Option<HeaderValue>)> {
    let mut out = Outgoing::default();
    propagator().inject_context(cx, &mut out);
    Some((out.traceparent?, out.tracestate))
}

/// The two headers as the propagator reads them, after the grammar checks of the module docs.
struct Fields<'a> {
    traceparent: &'a str,
    tracestate: Option<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    fn of(headers: &'a HeaderMap) -> Option<Fields<'a>> {
        let mut all = headers.get_all(TRACEPARENT).iter();
        let (Some(value), None) = (all.next(), all.next()) else {
            return None;
        };
        let traceparent = value.to_str().ok()?;
        if !well_formed(traceparent) {
            return None;
        }
        Some(Fields {
            traceparent,
            tracestate: joined(headers).map(without_ows),
        })
    }
}

impl Extractor for Fields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// Every `tracestate` header as one list (§3.3.1); `None` when there is none or one is not
/// visible ASCII (then the whole list is unusable).
fn joined(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let mut values = headers.get_all(TRACESTATE).iter();
    let first = values.next()?.to_str().ok()?;
    let mut out = Cow::Borrowed(first);
    for v in values {
        let v = v.to_str().ok()?;
        let s = out.to_mut();
        s.push(',');
        s.push_str(v);
    }
    Some(out)
}

/// The list without whitespace around its members and without empty members (§3.3.1.1: `list =
/// list-member 0*31( OWS "," OWS list-member )`, "empty and whitespace-only list members are
/// allowed"); borrowed as it is when it has neither.
fn without_ows(list: Cow<'_, str>) -> Cow<'_, str> {
    const OWS: [char; 2] = [' ', '\t'];
    let messy = list
        .split(',')
        .any(|m| m.is_empty() || m.starts_with(OWS) || m.ends_with(OWS));
    if !messy {
        return list;
    }
    let members: Vec<&str> = list
        .split(',')
        .map(|m| m.trim_matches(OWS))
        .filter(|m| !m.is_empty())
        .collect();
    Cow::Owned(members.join(","))
}

/// Whether `v` has the shape of §3.2.2 (see the module docs); the values are checked by the
/// propagator.
pub fn well_formed(v: &str) -> bool {
    let b = v.as_bytes();
    let lower_hex = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|s| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
    };
    let dashes = [2, 35, 52].iter().all(|&i| b.get(i) == Some(&b'-'));
    let shape = dashes && lower_hex(0..2) && lower_hex(3..35) && lower_hex(36..52);
    let shape = shape && lower_hex(53..55);
    if !shape || &b[0..2] == b"ff" {
        return false;
    }
    if &b[0..2] == b"00" {
        b.len() == 55
    } else {
        b.len() == 55 || b.get(55) == Some(&b'-')
    }
}

/// What the propagator writes.
#[derive(Default)]
struct Outgoing {
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
}

impl Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        // Both values are printable ASCII: hex ids, and a list the propagator validated.
        let Ok(v) = HeaderValue::try_from(value) else {
            return;
        };
        match key {
            TRACEPARENT => self.traceparent = Some(v),
            TRACESTATE if !v.is_empty() => self.tracestate = Some(v),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn remote(sc: &SpanContext) -> Context {
        Context::new().with_remote_span_context(sc.clone())
    }

    fn parent(tp: &str) -> Option<SpanContext> {
        parent_of(&map(&[(TRACEPARENT, tp)]))
    }

    /// §3.2.2's example value.
    #[test]
    fn reads_the_spec_example() {
        let sc = parent(TP).expect("valid");
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex")
        );
        assert_eq!(
            sc.span_id(),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex")
        );
        assert!(sc.is_sampled());
        let unsampled = parent(&TP.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn refuses_what_the_grammar_refuses() {
        for (bad, why) in [
            ("", "empty"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "no flags",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-",
                "empty flags",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                "short flags",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                "v00 + more",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "v00 + field",
            ),
            (
                "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "short version",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version ff",
            ),
            (
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "upper version",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "upper trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                "upper parent id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
                "upper flags",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "zero trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "zero parent id",
            ),
            ("00-ab-cd-01", "short ids"),
            (
                "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "sign",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                "not hex",
            ),
            (
                " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "leading space",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                "wrong separator",
            ),
        ] {
            assert!(parent(bad).is_none(), "{why}: {bad:?}");
        }
    }

    /// §3.2.4: a later version may add fields; the known ones are read.
    #[test]
    fn reads_a_future_version() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert!(parent(v).is_some());
        let glued = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert!(parent(glued).is_none());
    }

    #[test]
    fn two_traceparents_are_none() {
        let h = map(&[(TRACEPARENT, TP), (TRACEPARENT, TP)]);
        assert!(parent_of(&h).is_none());
    }

    #[test]
    fn tracestate_headers_are_one_list_and_ignored_without_traceparent() {
        let h = map(&[
            (TRACEPARENT, TP),
            (TRACESTATE, "congo=t61rcWkgMzE"),
            (TRACESTATE, "rojo=00f067aa0ba902b7"),
        ]);
        let sc = parent_of(&h).expect("valid");
        assert_eq!(
            sc.trace_state().header(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        let (_, state) = headers_for(&remote(&sc)).expect("headers");
        assert_eq!(
            state.as_ref().and_then(|v| v.to_str().ok()),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        let bad = map(&[(TRACEPARENT, "00-xyz"), (TRACESTATE, "congo=t61rcWkgMzE")]);
        assert!(extract(&bad)
            .span()
            .span_context()
            .trace_state()
            .header()
            .is_empty());
        // whitespace and empty members are allowed (§3.3.1.1)
        let h = map(&[
            (TRACEPARENT, TP),
            (TRACESTATE, " congo=t61rcWkgMzE ,, \trojo=00f067aa0ba902b7,"),
        ]);
        let sc = parent_of(&h).expect("valid");
        assert_eq!(
            sc.trace_state().header(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        // an invalid list is dropped, the trace continues
        let h = map(&[(TRACEPARENT, TP), (TRACESTATE, "not a list")]);
        let sc = parent_of(&h).expect("valid");
        assert!(headers_for(&remote(&sc)).expect("headers").1.is_none());
    }

    #[test]
    fn writes_version_00_lower_case() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            false,
            Default::default(),
        );
        let (tp, state) = headers_for(&remote(&sc)).expect("headers");
        assert_eq!(tp.to_str().ok(), Some(TP));
        assert!(state.is_none());
        assert!(headers_for(&Context::new()).is_none());
    }
}
