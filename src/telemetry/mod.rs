//! Traces: W3C Trace Context propagation, always, and spans exported over OTLP when
//! `[tracing] otlp_endpoint` is set.
//!
//! Each request gets a span of the proxy's own (`sessiongate.request`): it continues the trace of
//! a valid client `traceparent` (its trace id, sampled flag and `tracestate`; the client's span
//! is its parent) or starts a new trace. The upstream request carries the proxy's span as its
//! parent, and the whoami call to Kratos a child span of it (`kratos.whoami`).
//!
//! - Export off (the default): no exporter, no processor, no recording. A span is a pair of ids
//!   ([`RandomIdGenerator`]) and the headers are formatted from them; new traces are not sampled
//!   (flags `00`), a client's flags are kept.
//! - Export on ([`otlp`]): the OpenTelemetry SDK records the spans, samples new traces by
//!   `sample_ratio` and follows the client's sampled flag otherwise (parent-based), and a batch
//!   processor with a bounded queue exports them from its own thread; a full queue drops spans,
//!   a request never waits for the exporter.
//!
//! How the whoami call finds its parent: the proxy runs admission inside the request's
//! [`Context`] ([`RequestTrace::context`], attached to the admission future with
//! OpenTelemetry's `FutureExt::with_context`). The session store carries the context into the
//! task it starts for a whoami call ([`carry`]), and the whoami client reads it
//! ([`WhoamiTrace::start`]). Admission and the store name no pingora type and no span; requests
//! that join a call in flight share the span of the request that started it.
//!
//! Span attributes are from fixed lists and configuration (method, route name, status, outcome,
//! cache lookup kind, whoami result): never a path, a query, a header value, a token or a cookie.

pub mod otlp;
pub mod trace_context;

use std::future::Future;

use http::{HeaderMap, HeaderValue, Method};
use opentelemetry::context::{FutureExt, WithContext};
use opentelemetry::trace::{
    SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer};

use crate::config::TracingConfig;

/// The request span's name.
pub const REQUEST_SPAN: &str = "sessiongate.request";
/// The whoami call's span name.
pub const WHOAMI_SPAN: &str = "kratos.whoami";

/// The tracing of one runtime: export on or off.
pub struct Tracing {
    exporter: Option<otlp::Exporter>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("exporting", &self.exporter.is_some())
            .finish()
    }
}

/// The tracer of an exporting runtime, in a request's [`Context`], so the whoami call records
/// its span with the same SDK.
struct Recorder(SdkTracer);

impl Tracing {
    /// Propagation only.
    pub fn off() -> Tracing {
        Tracing { exporter: None }
    }

    /// Export on when `cfg` names an endpoint.
    ///
    /// # Errors
    /// When the OTLP exporter cannot be built.
    pub fn new(cfg: &TracingConfig) -> Result<Tracing, otlp::BuildError> {
        Ok(Tracing {
            exporter: otlp::Exporter::new(cfg)?,
        })
    }

    /// Whether spans are recorded and exported.
    pub fn is_exporting(&self) -> bool {
        self.exporter.is_some()
    }

    /// Exports the spans ended so far now (tests, shutdown); blocks until done or the export
    /// timeout. `true` when export is off or it succeeded.
    pub fn force_flush(&self) -> bool {
        self.exporter.as_ref().is_none_or(otlp::Exporter::flush)
    }

    /// The span of a request with these headers (its parent: a valid client `traceparent`).
    pub fn start_request(&self, headers: &HeaderMap, method: &Method) -> RequestTrace {
        let parent = trace_context::extract(headers);
        match &self.exporter {
            Some(exporter) => {
                let tracer = exporter.tracer();
                let span = tracer
                    .span_builder(REQUEST_SPAN)
                    .with_kind(SpanKind::Server)
                    .with_attributes([KeyValue::new("http.request.method", method_label(method))])
                    .start_with_context(tracer, &parent);
                let recording = opentelemetry::trace::Span::is_recording(&span);
                RequestTrace {
                    cx: parent.with_span(span).with_value(Recorder(tracer.clone())),
                    recording,
                }
            }
            None => {
                let sc = child_of(parent.span().span_context());
                RequestTrace {
                    cx: Context::new().with_remote_span_context(sc),
                    recording: false,
                }
            }
        }
    }
}

/// A span context of the proxy's own under `parent` (same trace, flags and state, a new span
/// id), or the root of a new, unsampled trace when `parent` is not valid.
fn child_of(parent: &SpanContext) -> SpanContext {
    let ids = RandomIdGenerator::default();
    if parent.is_valid() {
        SpanContext::new(
            parent.trace_id(),
            span_id(&ids),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    } else {
        let mut trace_id = ids.new_trace_id();
        while trace_id == opentelemetry::trace::TraceId::INVALID {
            trace_id = ids.new_trace_id();
        }
        SpanContext::new(
            trace_id,
            span_id(&ids),
            TraceFlags::default(),
            false,
            TraceState::NONE,
        )
    }
}

/// A random span id that is not the invalid all-zero one (§3.2.2.4).
fn span_id(ids: &RandomIdGenerator) -> opentelemetry::trace::SpanId {
    loop {
        let id = ids.new_span_id();
        if id != opentelemetry::trace::SpanId::INVALID {
            return id;
        }
    }
}

/// `http.request.method` as the HTTP semantic conventions bound it: a known method, else
/// `_OTHER` (a client's made-up method is not a label).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// What a request's span records when it ends.
#[derive(Debug, Clone, Copy)]
pub struct RequestOutcome<'a> {
    /// The matched route's name (`http.route`).
    pub route: &'a str,
    /// The status sent to the client; 0 when none was (`http.response.status_code` is left out).
    pub status: u16,
    /// The auth outcome label (`sessiongate.outcome`).
    pub outcome: &'a str,
    /// How the session was looked up (`sessiongate.cache`), when it was.
    pub cache: Option<&'static str>,
}

/// One request's span: its [`Context`] (the parent of the whoami call) and its ids (the parent
/// of the upstream request).
pub struct RequestTrace {
    cx: Context,
    recording: bool,
}

impl RequestTrace {
    /// The context to run the request's work in (admission and the whoami call it makes).
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// The proxy's span context.
    pub fn span_context(&self) -> SpanContext {
        self.cx.span().span_context().clone()
    }

    /// `traceparent` (the proxy's span as parent) and `tracestate` (the caller's, when any) for
    /// the upstream request.
    pub fn upstream_headers(&self) -> Option<(HeaderValue, Option<HeaderValue>)> {
        trace_context::headers_for(&self.cx)
    }

    /// Ends the span with what the request came to (a no-op when nothing is recorded).
    pub fn finish(&self, end: &RequestOutcome<'_>) {
        if !self.recording {
            return;
        }
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("http.route", end.route.to_string()));
        if end.status > 0 {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(end.status),
            ));
        }
        span.set_attribute(KeyValue::new(
            "sessiongate.outcome",
            end.outcome.to_string(),
        ));
        if let Some(cache) = end.cache {
            span.set_attribute(KeyValue::new("sessiongate.cache", cache));
        }
        if end.status >= 500 || end.status == 0 {
            // HTTP semantic conventions: a server span is an error for 5xx (and no answer).
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// `fut`, run inside the current [`Context`] wherever it is polled (a task spawned for a whoami
/// call keeps the trace of the request that started it).
pub fn carry<F: Future>(fut: F) -> WithContext<F> {
    fut.with_current_context()
}

/// The whoami call's span: a child of the current context's span.
pub struct WhoamiTrace {
    cx: Context,
    recording: bool,
}

impl WhoamiTrace {
    /// A child of the span of the current [`Context`] (see [`carry`]); without one (no request
    /// around the call), a span of nothing: no headers are sent.
    pub fn start() -> WhoamiTrace {
        let cx = Context::current();
        match cx.get::<Recorder>() {
            Some(Recorder(tracer)) => {
                let span = tracer
                    .span_builder(WHOAMI_SPAN)
                    .with_kind(SpanKind::Client)
                    .with_attributes([KeyValue::new("http.request.method", "GET")])
                    .start_with_context(tracer, &cx);
                let recording = opentelemetry::trace::Span::is_recording(&span);
                WhoamiTrace {
                    cx: cx.with_span(span),
                    recording,
                }
            }
            None => {
                let parent = cx.span();
                let parent = parent.span_context();
                let cx = if parent.is_valid() {
                    Context::new().with_remote_span_context(child_of(parent))
                } else {
                    Context::new()
                };
                WhoamiTrace {
                    cx,
                    recording: false,
                }
            }
        }
    }

    /// `traceparent` (this span as parent) and `tracestate` for the whoami request; `None` when
    /// there is no trace.
    pub fn headers(&self) -> Option<(HeaderValue, Option<HeaderValue>)> {
        trace_context::headers_for(&self.cx)
    }

    /// Ends the span with the call's result label (`sessiongate.whoami.result`).
    pub fn finish(self, result: &'static str) {
        if self.recording {
            let span = self.cx.span();
            span.set_attribute(KeyValue::new("sessiongate.whoami.result", result));
            span.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceId;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn export_off_continues_a_client_trace_with_a_span_of_its_own() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(TP));
        h.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
        let trace = Tracing::off().start_request(&h, &Method::GET);
        let (tp, state) = trace.upstream_headers().expect("headers");
        let tp = tp.to_str().expect("ascii");
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(tp.ends_with("-01"), "{tp}");
        assert_ne!(&tp[36..52], "00f067aa0ba902b7");
        assert!(trace_context::well_formed(tp));
        assert_eq!(
            state.as_ref().and_then(|v| v.to_str().ok()),
            Some("congo=t61rcWkgMzE")
        );
    }

    #[test]
    fn export_off_starts_an_unsampled_trace_without_one() {
        let trace = Tracing::off().start_request(&HeaderMap::new(), &Method::GET);
        let sc = trace.span_context();
        assert!(sc.is_valid());
        assert!(!sc.is_sampled());
        assert_ne!(sc.trace_id(), TraceId::INVALID);
        let (tp, state) = trace.upstream_headers().expect("headers");
        assert!(trace_context::well_formed(tp.to_str().expect("ascii")));
        assert!(state.is_none());
    }

    #[tokio::test]
    async fn whoami_is_a_child_of_the_carried_context() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(TP));
        let trace = Tracing::off().start_request(&h, &Method::GET);
        let request = trace.span_context();
        // `carry` runs where the store calls it: inside the request's context.
        let child = async {
            tokio::spawn(carry(async {
                WhoamiTrace::start().cx.span().span_context().clone()
            }))
            .await
        }
        .with_context(trace.context().clone())
        .await
        .expect("task");
        assert_eq!(child.trace_id(), request.trace_id());
        assert_ne!(child.span_id(), request.span_id());
        assert!(child.is_sampled());
        // outside a request: nothing to propagate
        assert!(WhoamiTrace::start().headers().is_none());
    }

    #[test]
    fn unknown_methods_are_other() {
        let m = Method::from_bytes(b"BREW").expect("method");
        assert_eq!(method_label(&m), "_OTHER");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }
}
