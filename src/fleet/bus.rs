//! The purge broadcast: what a purge message looks like on the Redis channel `{key_prefix}purge`.
//!
//! One message is one JSON object:
//!
//! ```json
//! {"v":1,"origin":"<16 hex>","credential":"<64 hex>","session_id":"...","identity_id":"..."}
//! ```
//!
//! - `origin`: the publishing replica's random id; a replica ignores its own messages (it applied
//!   the purge before publishing).
//! - `credential`: the SHA-256 cache key of a credential (hex), never the credential itself;
//!   `session_id` / `identity_id`: Kratos ids. At least one of the three is present; each present
//!   one is purged.
//!
//! Receiving replicas apply a message with `SessionStore::apply_remote`, which never publishes
//! again. A message that does not parse, or is larger than [`MAX_MESSAGE`], is ignored.

use serde::{Deserialize, Serialize};

use crate::credential::CacheKey;
use crate::session::shared::Purge;

/// The largest message read (ids are short; anything larger is not ours).
pub const MAX_MESSAGE: usize = 8 * 1024;

/// The version written and the only one read.
const VERSION: u8 = 1;

/// The purge channel's name.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}purge")
}

/// A purge message, owned (decoded from or to be encoded onto the channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeMessage {
    /// The format version (1).
    pub v: u8,
    /// The publishing replica's random id (16 hex digits).
    pub origin: String,
    /// A credential's SHA-256 cache key, 64 hex digits (never the credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// A Kratos session id: every credential of the session is purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// A Kratos identity id: every session of the identity is purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
}

impl PurgeMessage {
    /// The message for a purge this replica (`origin`) performed.
    pub fn of(origin: &str, purge: Purge<'_>) -> PurgeMessage {
        let mut m = PurgeMessage {
            v: VERSION,
            origin: origin.to_string(),
            credential: None,
            session_id: None,
            identity_id: None,
        };
        match purge {
            Purge::Credential { key, session_id } => {
                m.credential = Some(hex(&key.0));
                m.session_id = session_id.map(str::to_string);
            }
            Purge::SessionId(sid) => m.session_id = Some(sid.to_string()),
            Purge::Identity(iid) => m.identity_id = Some(iid.to_string()),
        }
        m
    }

    /// The JSON text sent on the channel.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a message; `None` for anything that is not a version-1 purge message naming at
    /// least one thing to purge (with a well-formed credential key when it names one).
    pub fn decode(bytes: &[u8]) -> Option<PurgeMessage> {
        if bytes.len() > MAX_MESSAGE {
            return None;
        }
        let m: PurgeMessage = serde_json::from_slice(bytes).ok()?;
        let names_something =
            m.credential.is_some() || m.session_id.is_some() || m.identity_id.is_some();
        let key_ok = m.credential.as_deref().is_none_or(|c| unhex(c).is_some());
        let ids_ok = [&m.session_id, &m.identity_id]
            .iter()
            .all(|id| id.as_deref().is_none_or(|s| !s.is_empty()));
        (m.v == VERSION && names_something && key_ok && ids_ok).then_some(m)
    }

    /// The purges this message asks for, in the store's terms.
    pub fn purges(&self) -> Vec<Purge<'_>> {
        let mut out = Vec::with_capacity(2);
        match self.credential.as_deref().and_then(unhex) {
            Some(key) => out.push(Purge::Credential {
                key,
                session_id: self.session_id.as_deref(),
            }),
            None => {
                if let Some(sid) = &self.session_id {
                    out.push(Purge::SessionId(sid));
                }
            }
        }
        if let Some(iid) = &self.identity_id {
            out.push(Purge::Identity(iid));
        }
        out
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// A cache key from its 64 hex digits (either case); `None` for anything else.
pub fn unhex(s: &str) -> Option<CacheKey> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut key = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        key[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(CacheKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_carry_no_credential() {
        let key = CacheKey([0xab; 32]);
        let m = PurgeMessage::of(
            "origin1",
            Purge::Credential {
                key,
                session_id: Some("s1"),
            },
        );
        let text = m.encode();
        assert_eq!(
            text,
            format!(
                r#"{{"v":1,"origin":"origin1","credential":"{}","session_id":"s1"}}"#,
                "ab".repeat(32)
            )
        );
        let back = PurgeMessage::decode(text.as_bytes()).expect("decodes");
        assert_eq!(back, m);
        assert_eq!(
            back.purges(),
            vec![Purge::Credential {
                key,
                session_id: Some("s1")
            }]
        );
        let id = PurgeMessage::of("o", Purge::Identity("i1"));
        assert_eq!(id.encode(), r#"{"v":1,"origin":"o","identity_id":"i1"}"#);
        assert_eq!(id.purges(), vec![Purge::Identity("i1")]);
        let sid = PurgeMessage::of("o", Purge::SessionId("s2"));
        assert_eq!(sid.purges(), vec![Purge::SessionId("s2")]);
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            &b"not json"[..],
            br#"{"v":2,"origin":"o","session_id":"s"}"#,
            br#"{"v":1,"origin":"o"}"#,
            br#"{"v":1,"origin":"o","credential":"abc"}"#,
            br#"{"v":1,"origin":"o","credential":"zz00000000000000000000000000000000000000000000000000000000000000"}"#,
            br#"{"v":1,"origin":"o","session_id":""}"#,
            br#"{"v":1,"origin":"o","session_id":"s","extra":1}"#,
            br#"{"v":1,"origin":7,"session_id":"s"}"#,
        ] {
            assert_eq!(
                PurgeMessage::decode(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = format!(
            r#"{{"v":1,"origin":"o","session_id":"{}"}}"#,
            "s".repeat(MAX_MESSAGE)
        );
        assert_eq!(PurgeMessage::decode(big.as_bytes()), None);
    }

    #[test]
    fn hex_round_trips() {
        let key = CacheKey(std::array::from_fn(|i| i as u8 * 7));
        assert_eq!(unhex(&hex(&key.0)), Some(key));
        assert_eq!(unhex(&hex(&key.0).to_uppercase()), Some(key));
    }
}
