//! The shared L2 cache (`mode = "purge_and_cache"`): sessions validated by one replica, read by the
//! others before they call Kratos.
//!
//! Keys (all under `key_prefix`):
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `session:<sha256 hex>` | string | [`SharedValue`] JSON of one credential's session | at the session's deadline (`PX`) |
//! | `sid:<session id>` | set | the hex keys of the session's credentials | `cache.max_ttl` after the last write |
//! | `iid:<identity id>` | set | the identity's session ids | `cache.max_ttl` after the last write |
//! | `tomb:key:<sha256 hex>`, `tomb:sid:<session id>`, `tomb:iid:<identity id>` | string | the Unix ms of the last purge of it | [`tombstone_ttl`] after the purge |
//!
//! Both writers are single Lua scripts (`super::scripts`), so they never interleave: a purge
//! writes its tombstones, then deletes what the indexes name; a write checks the tombstones of
//! its credential, session and identity and stores nothing when one was recorded at or after the
//! moment its whoami call started (less [`CLOCK_SKEW`]): an answer Kratos gave before a
//! revocation cannot land in Redis after the purge that followed it, on any replica.
//!
//! The key is the credential's cache key (SHA-256 of kind and value), never the credential. The
//! value holds only what identity headers need (ids, AAL, `expires_at`, the rendered header
//! values) and the deadline the validating replica computed (min of `max_ttl`, `expires_at`,
//! `Ory-Session-Cache-For`); a reader never keeps it longer. A value that does not parse, was
//! written for other identity header templates (`paths` fingerprint), or is past its deadline is
//! ignored, and so is one whose deadline is further away than the reader's own `cache.max_ttl`,
//! or whose session has expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use serde::{Deserialize, Serialize};

use super::bus::hex;
use crate::config::Aal;
use crate::credential::CacheKey;
use crate::identity::header_value;
use crate::session::shared::{Scope, SharedSession};
use crate::session::Session;

/// The largest value read; a projected session is a few hundred bytes.
pub const MAX_VALUE: usize = 64 * 1024;

const VERSION: u8 = 1;

/// How far apart the replicas' clocks may be: a write is dropped when a purge of its session was
/// recorded up to this long *before* its whoami call started (the purging replica's clock may be
/// behind). Dropping costs a shared copy, never correctness.
pub const CLOCK_SKEW: Duration = Duration::from_secs(1);

/// How long tombstones outlive `cache.max_ttl` (the longest a value written is kept).
pub const TOMBSTONE_MARGIN: Duration = Duration::from_secs(30);

/// How long a tombstone lives: longer than any whoami call and queued write that it must stop.
pub fn tombstone_ttl(max_ttl: Duration) -> Duration {
    max_ttl + TOMBSTONE_MARGIN
}

/// The key of a credential's shared session.
pub fn session_key(prefix: &str, key: &CacheKey) -> String {
    format!("{prefix}session:{}", hex(&key.0))
}

/// The key of the set of a session's credentials (hex cache keys).
pub fn sid_key(prefix: &str, session_id: &str) -> String {
    format!("{prefix}sid:{session_id}")
}

/// The key of the set of an identity's session ids.
pub fn iid_key(prefix: &str, identity_id: &str) -> String {
    format!("{prefix}iid:{identity_id}")
}

/// The tombstone key of a credential (`kind` `key`), a session (`sid`) or an identity (`iid`).
pub fn tomb_key(prefix: &str, kind: &str, id: &str) -> String {
    format!("{prefix}tomb:{kind}:{id}")
}

/// What is stored for one credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedValue {
    /// The format version (1).
    pub v: u8,
    /// The writer's scope fingerprint ([`Scope`]: format, Kratos, session paths).
    pub paths: String,
    /// The Kratos session id.
    pub session_id: String,
    /// The Kratos identity id.
    pub identity_id: String,
    /// 1, 2 or 3.
    pub aal: u8,
    /// The session's `expires_at`, Unix milliseconds.
    pub expires_at_ms: Option<u64>,
    /// The deadline of this shared copy, Unix milliseconds.
    pub until_ms: u64,
    /// The rendered identity header values, one per session path (UTF-8; `None` = absent).
    pub values: Vec<Option<String>>,
}

/// `t` in Unix milliseconds (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl SharedValue {
    /// The value of `session`, valid until `until`; `None` when a header value is not UTF-8
    /// (such a session is simply not shared).
    pub fn of(session: &Session, until: SystemTime, paths: &str) -> Option<SharedValue> {
        let values = session
            .values
            .iter()
            .map(|v| match v {
                None => Some(None),
                Some(h) => std::str::from_utf8(h.as_bytes())
                    .ok()
                    .map(|s| Some(s.to_string())),
            })
            .collect::<Option<Vec<_>>>()?;
        Some(SharedValue {
            v: VERSION,
            paths: paths.to_string(),
            session_id: session.id.clone(),
            identity_id: session.identity_id.clone(),
            aal: session.aal.0,
            expires_at_ms: session.expires_at.map(unix_ms),
            until_ms: unix_ms(until),
            values,
        })
    }

    /// The JSON stored.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// How long the key lives in Redis: until the deadline (at least 1 ms).
    pub fn ttl(&self, now: SystemTime) -> Duration {
        let left = self.until_ms.saturating_sub(unix_ms(now));
        Duration::from_millis(left.max(1))
    }

    /// Reads a stored value as a session of `scope`, at `now`, for a reader whose own
    /// `cache.max_ttl` is `max_ttl`. `Err(())` for a value that does not parse or carries a header
    /// value no rendered one could have (counted by the caller); `Ok(None)` for one that is
    /// well-formed but not usable here (another scope, past its deadline or its session's
    /// `expires_at`, or a deadline further than `max_ttl` away).
    #[allow(clippy::result_unit_err)]
    pub fn decode(
        bytes: &[u8],
        scope: &Scope,
        max_ttl: Duration,
        now: SystemTime,
    ) -> Result<Option<SharedSession>, ()> {
        if bytes.len() > MAX_VALUE {
            return Err(());
        }
        let v: SharedValue = serde_json::from_slice(bytes).map_err(|_| ())?;
        if v.v != VERSION || !(1..=3).contains(&v.aal) || v.session_id.is_empty() {
            return Err(());
        }
        let now_ms = unix_ms(now);
        let latest = now_ms.saturating_add(u64::try_from(max_ttl.as_millis()).unwrap_or(u64::MAX));
        if v.paths != scope.fingerprint
            || v.values.len() != scope.slots
            || v.until_ms <= now_ms
            || v.until_ms > latest
            || v.expires_at_ms.is_some_and(|e| e <= now_ms)
        {
            return Ok(None);
        }
        let mut values: Vec<Option<HeaderValue>> = Vec::with_capacity(v.values.len());
        for s in &v.values {
            values.push(match s {
                None => None,
                Some(s) => Some(header_value(s).ok_or(())?),
            });
        }
        Ok(Some(SharedSession {
            session: Session {
                id: v.session_id,
                identity_id: v.identity_id,
                aal: Aal(v.aal),
                expires_at: v
                    .expires_at_ms
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
                values: values.into_boxed_slice(),
            },
            until: UNIX_EPOCH + Duration::from_millis(v.until_ms),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_TTL: Duration = Duration::from_secs(300);

    fn scope(fingerprint: &str, slots: usize) -> Scope {
        Scope {
            fingerprint: fingerprint.to_string(),
            slots,
        }
    }

    fn session() -> Session {
        Session {
            id: "s1".into(),
            identity_id: "i1".into(),
            aal: Aal(2),
            expires_at: Some(UNIX_EPOCH + Duration::from_millis(4_000_000_000_000)),
            values: vec![Some(HeaderValue::from_static("i1")), None].into_boxed_slice(),
        }
    }

    #[test]
    fn values_round_trip_with_their_deadline() {
        let now = SystemTime::now();
        let until = now + Duration::from_secs(30);
        let v = SharedValue::of(&session(), until, "fp").expect("utf-8");
        let text = v.encode();
        assert!(!text.contains("token"), "{text}");
        let back = SharedValue::decode(text.as_bytes(), &scope("fp", 2), MAX_TTL, now)
            .expect("parses")
            .expect("usable");
        assert_eq!(back.session.id, "s1");
        assert_eq!(back.session.identity_id, "i1");
        assert_eq!(back.session.aal, Aal(2));
        assert_eq!(back.session.expires_at, session().expires_at);
        assert_eq!(&*back.session.values, &*session().values);
        assert_eq!(unix_ms(back.until), unix_ms(until));
        let ttl = v.ttl(now);
        assert!(ttl <= Duration::from_secs(30) && ttl >= Duration::from_millis(29_900));
    }

    #[test]
    fn unusable_and_garbage_values_are_told_apart() {
        let now = SystemTime::now();
        let v = SharedValue::of(&session(), now + Duration::from_secs(5), "fp").expect("v");
        let text = v.encode();
        // other templates, other slot count, past the deadline: well-formed, not used
        assert!(matches!(
            SharedValue::decode(text.as_bytes(), &scope("other", 2), MAX_TTL, now),
            Ok(None)
        ));
        assert!(matches!(
            SharedValue::decode(text.as_bytes(), &scope("fp", 3), MAX_TTL, now),
            Ok(None)
        ));
        let later = now + Duration::from_secs(6);
        assert!(matches!(
            SharedValue::decode(text.as_bytes(), &scope("fp", 2), MAX_TTL, later),
            Ok(None)
        ));
        for bad in [
            "garbage".to_string(),
            text.replace("\"v\":1", "\"v\":9"),
            text.replace("\"aal\":2", "\"aal\":7"),
            text.replace("\"values\":[\"i1\",null]", "\"values\":[\"a\\nb\",null]"),
            // a tab passes `HeaderValue` but never the renderer
            text.replace("\"values\":[\"i1\",null]", "\"values\":[\"a\\tb\",null]"),
            text.replace("\"paths\"", "\"extra\":1,\"paths\""),
        ] {
            assert!(
                SharedValue::decode(bad.as_bytes(), &scope("fp", 2), MAX_TTL, now).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn deadlines_beyond_the_readers_max_ttl_and_expired_sessions_are_not_used() {
        let now = SystemTime::now();
        let far = SharedValue::of(&session(), now + MAX_TTL * 2, "fp").expect("v");
        assert!(matches!(
            SharedValue::decode(far.encode().as_bytes(), &scope("fp", 2), MAX_TTL, now),
            Ok(None)
        ));
        let mut expired = session();
        expired.expires_at = Some(now - Duration::from_secs(1));
        let v = SharedValue::of(&expired, now + Duration::from_secs(5), "fp").expect("v");
        assert!(matches!(
            SharedValue::decode(v.encode().as_bytes(), &scope("fp", 2), MAX_TTL, now),
            Ok(None)
        ));
    }
}
