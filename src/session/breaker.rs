//! A circuit breaker in front of whoami, so that a dead Kratos costs one timeout per interval instead
//! of one per request.
//!
//! Closed: calls go through; `failures` consecutive failures (timeout, refused connection, 5xx, garbage)
//! open it. Open: calls fail at once (`circuit_open`) for `interval`. Then one call is let through as
//! a probe (half-open): success closes the breaker, failure opens it for another interval. Answers
//! that prove Kratos is alive (200, 401, 403, 429) count as success.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The breaker; `threshold = 0` disables it.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    interval: Duration,
    state: Mutex<State>,
}

/// Whether a call may go to Kratos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead.
    Call,
    /// Go ahead: this call is the probe that decides whether the breaker closes.
    Probe,
    /// Fail now without calling.
    Reject,
}

impl Breaker {
    pub fn new(threshold: u32, interval: Duration) -> Breaker {
        Breaker {
            threshold,
            interval,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Asks for permission to call Kratos now.
    pub fn permit(&self, now: Instant) -> Permit {
        if self.threshold == 0 {
            return Permit::Call;
        }
        let Ok(mut state) = self.state.lock() else {
            return Permit::Call;
        };
        match *state {
            State::Closed { .. } => Permit::Call,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                Permit::Probe
            }
            State::Open { .. } | State::HalfOpen => Permit::Reject,
        }
    }

    /// Records the outcome of a call made with [`Permit::Call`] or [`Permit::Probe`].
    pub fn record(&self, success: bool, now: Instant) {
        if self.threshold == 0 {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        *state = match (*state, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (_, false) => State::Open {
                until: now + self.interval,
            },
        };
    }

    /// Whether calls are being refused right now (for readiness reports).
    pub fn is_open(&self) -> bool {
        self.state
            .lock()
            .map(|s| !matches!(*s, State::Closed { .. }))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_probes_once_per_interval() {
        let b = Breaker::new(3, Duration::from_secs(5));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.permit(t0), Permit::Call);
            b.record(false, t0);
        }
        assert_eq!(b.permit(t0), Permit::Call);
        b.record(false, t0);
        assert_eq!(b.permit(t0), Permit::Reject, "open after 3 failures");
        assert_eq!(b.permit(t0 + Duration::from_secs(4)), Permit::Reject);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.permit(t1), Permit::Probe, "one probe after the interval");
        assert_eq!(b.permit(t1), Permit::Reject, "only one probe at a time");
        b.record(false, t1);
        assert_eq!(
            b.permit(t1 + Duration::from_secs(1)),
            Permit::Reject,
            "reopened"
        );
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(b.permit(t2), Permit::Probe);
        b.record(true, t2);
        assert_eq!(b.permit(t2), Permit::Call, "closed after a good probe");
        assert!(!b.is_open());
    }

    #[test]
    fn success_resets_the_count_and_zero_disables() {
        let b = Breaker::new(2, Duration::from_secs(1));
        let t = Instant::now();
        b.record(false, t);
        b.record(true, t);
        b.record(false, t);
        assert_eq!(b.permit(t), Permit::Call);
        let off = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..10 {
            off.record(false, t);
        }
        assert_eq!(off.permit(t), Permit::Call);
    }
}
