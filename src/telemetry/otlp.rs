//! Span export over OTLP/HTTP with protobuf bodies (OTLP specification, "OTLP/HTTP"), built from
//! `[tracing]`: the OpenTelemetry SDK's tracer provider with a parent-based ratio sampler and a
//! batch span processor in front of `opentelemetry-otlp`'s HTTP exporter.
//!
//! The batch processor keeps ended spans in a bounded queue ([`MAX_QUEUE`]; a full queue drops
//! spans) and exports from a thread of its own with a blocking HTTP client, so a request never
//! waits for the collector. Dropping the last [`Exporter`] shuts the provider down on another
//! thread (the shutdown flushes, which can take up to the export timeout).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use crate::config::TracingConfig;

/// Most ended spans waiting for export; more are dropped (the SDK's default).
pub const MAX_QUEUE: usize = 2048;
/// Most spans in one export request.
const MAX_BATCH: usize = 512;
/// How often the queue is exported.
const EXPORT_INTERVAL: Duration = Duration::from_secs(2);
/// The limit on one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// The instrumentation scope of sessiongate's spans.
const SCOPE: &str = "sessiongate";

/// Why export could not be set up.
pub type BuildError = opentelemetry_otlp::ExporterBuildError;

/// A running OTLP export: the provider that owns the batch processor, and its tracer.
pub struct Exporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Exporter {
    /// The export `cfg` asks for; `None` when it names no endpoint.
    ///
    /// # Errors
    /// When the exporter cannot be built (its HTTP client, or the endpoint as a URI).
    pub fn new(cfg: &TracingConfig) -> Result<Option<Exporter>, BuildError> {
        let Some(endpoint) = &cfg.otlp_endpoint else {
            return Ok(None);
        };
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUE)
            .with_max_export_batch_size(MAX_BATCH)
            .with_scheduled_delay(EXPORT_INTERVAL)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer(SCOPE);
        Ok(Some(Exporter { provider, tracer }))
    }

    /// The tracer spans are started with.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Exports what is queued now; `false` when the export failed.
    pub fn flush(&self) -> bool {
        self.provider.force_flush().is_ok()
    }
}

impl Drop for Exporter {
    /// Shuts the provider down (a last flush) on a thread of its own: the last runtime of a
    /// reload can be dropped on a proxy worker, which must not block.
    fn drop(&mut self) {
        let provider = self.provider.clone();
        let spawned = std::thread::Builder::new()
            .name("sessiongate-otlp-shutdown".into())
            .spawn(move || {
                let _ = provider.shutdown();
            });
        if spawned.is_err() {
            tracing::warn!("cannot start the OTLP shutdown thread; queued spans are dropped");
        }
    }
}
