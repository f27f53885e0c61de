//! The fleet's metrics, registered in the server's registry (`crate::metrics::Metrics::register`).
//! Labels come from fixed lists: `op` is one of [`Op`]'s names, never a key or a credential.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use crate::metrics::Metrics;

const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// One kind of Redis call (the `op` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET` of a shared session.
    Get,
    /// Storing a shared session and its index entries (one script, checking tombstones).
    Put,
    /// `PUBLISH` of a purge.
    Publish,
    /// Writing a purge's tombstones and deleting the shared sessions it covers (one script).
    Purge,
    /// Subscribing to the purge channel (connecting included), or losing the subscription.
    Subscribe,
    /// The periodic `PING` of both connections.
    Ping,
    /// A value or message from Redis that does not parse (ignored).
    Decode,
    /// Work dropped because the fleet's queue was full or too much work was in flight.
    Queue,
    /// A purge that could not be published dropped from the retry list (full): the other
    /// replicas will not hear of it (their copies live at most `cache.max_ttl`).
    PendingDropped,
}

impl Op {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Publish => "publish",
            Op::Purge => "purge",
            Op::Subscribe => "subscribe",
            Op::Ping => "ping",
            Op::Decode => "decode",
            Op::Queue => "queue",
            Op::PendingDropped => "pending_dropped",
        }
    }
}

/// `sessiongate_shared_cache_*`.
#[derive(Clone)]
pub struct FleetMetrics {
    errors: IntCounterVec,
    lookups: IntCounterVec,
    purges: IntCounterVec,
    duration: HistogramVec,
    full_drops: IntCounter,
}

impl FleetMetrics {
    /// Creates the metrics and registers them in `metrics`' registry.
    ///
    /// # Errors
    /// When prometheus refuses a metric (a duplicate registration): a programming error.
    pub fn new(metrics: &Metrics) -> prometheus::Result<FleetMetrics> {
        let errors = IntCounterVec::new(
            Opts::new(
                "sessiongate_shared_cache_errors_total",
                "Redis calls of the fleet that failed, timed out or returned garbage, by op.",
            ),
            &["op"],
        )?;
        let lookups = IntCounterVec::new(
            Opts::new(
                "sessiongate_shared_cache_lookups_total",
                "Shared (L2) cache lookups, by result (hit, miss, skipped: degraded or the fleet's queue full).",
            ),
            &["result"],
        )?;
        let purges = IntCounterVec::new(
            Opts::new(
                "sessiongate_shared_cache_purges_total",
                "Purges sent to or received from the other replicas, by direction.",
            ),
            &["direction"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sessiongate_shared_cache_redis_duration_seconds",
                "Duration of Redis calls of the fleet, by op.",
            )
            .buckets(REDIS_BUCKETS.to_vec()),
            &["op"],
        )?;
        let full_drops = IntCounter::new(
            "sessiongate_shared_cache_full_drops_total",
            "Whole local cache dropped after (re)subscribing to the purge channel.",
        )?;
        metrics.register(Box::new(errors.clone()))?;
        metrics.register(Box::new(lookups.clone()))?;
        metrics.register(Box::new(purges.clone()))?;
        metrics.register(Box::new(duration.clone()))?;
        metrics.register(Box::new(full_drops.clone()))?;
        Ok(FleetMetrics {
            errors,
            lookups,
            purges,
            duration,
            full_drops,
        })
    }

    /// One failed (or skipped, or unparsable) Redis call.
    pub fn error(&self, op: Op) {
        self.errors.with_label_values(&[op.as_str()]).inc();
    }

    /// One Redis call that took `took`.
    pub fn observe(&self, op: Op, took: Duration) {
        self.duration
            .with_label_values(&[op.as_str()])
            .observe(took.as_secs_f64());
    }

    /// One L2 lookup answered as `result` (`hit`, `miss`, `skipped`).
    pub fn lookup(&self, result: &'static str) {
        self.lookups.with_label_values(&[result]).inc();
    }

    /// One purge published (`sent`) or applied from another replica (`received`).
    pub fn purge(&self, direction: &'static str) {
        self.purges.with_label_values(&[direction]).inc();
    }

    /// The whole local cache was dropped on (re)subscription.
    pub fn full_drop(&self) {
        self.full_drops.inc();
    }
}
