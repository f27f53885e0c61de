//! The session JSON the Kratos double serves: what real Kratos v1.3.1 answers whoami with for an
//! identity with an email (verifiable and recoverable) and a name, as after a password login.

use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::DEFAULT_BASE_URL;

/// What a registered session looks like.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Identity UUID (string form).
    pub identity_id: String,
    pub email: String,
    /// `"aal1"` or `"aal2"` (any value Kratos knows is passed through).
    pub aal: String,
    /// `expires_at = now + expires_in`.
    pub expires_in: Duration,
    /// If set, 200 answers carry `Ory-Session-Cache-For: n`.
    pub cache_for: Option<u64>,
    /// If set, 200 answers carry `Set-Cookie: <value>`.
    pub set_cookie: Option<String>,
    /// The session's `active` field. The double serves what it was given (real Kratos answers
    /// 401 for an inactive session), so a proxy's own check of `active` can be exercised.
    pub active: bool,
    /// Whether the identity's email address is verified (`verifiable_addresses[0]`: `verified`,
    /// `status` `completed` and `verified_at`, or `pending` without `verified_at`).
    pub verified: bool,
}

impl Default for SessionSpec {
    fn default() -> Self {
        SessionSpec {
            identity_id: uuid::Uuid::new_v4().to_string(),
            email: "user@example.com".to_owned(),
            aal: "aal1".to_owned(),
            expires_in: Duration::from_secs(3600),
            cache_for: None,
            set_cookie: None,
            active: true,
            verified: true,
        }
    }
}

/// Formats like Go's `time.Time` JSON encoding of a Postgres timestamp: RFC 3339, UTC `Z`,
/// microsecond precision with trailing zeros trimmed.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let micros = t.microsecond();
    if micros != 0 {
        let frac = format!("{micros:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// The session body Kratos would serve, with `identity.schema_url` on [`DEFAULT_BASE_URL`].
pub fn session_json(session_id: &str, spec: &SessionSpec) -> Value {
    session_json_at(DEFAULT_BASE_URL, session_id, spec)
}

/// The session body Kratos would serve from the public base URL `base_url`.
pub fn session_json_at(base_url: &str, session_id: &str, spec: &SessionSpec) -> Value {
    let now = OffsetDateTime::now_utc();
    let authenticated_at = now - time::Duration::seconds(5);
    let identity_created = now - time::Duration::days(30);
    let expires_at = now + spec.expires_in;
    let at = rfc3339(authenticated_at);
    let created = rfc3339(identity_created);

    let mut methods = vec![json!({
        "method": "password",
        "aal": "aal1",
        "completed_at": rfc3339(authenticated_at - time::Duration::seconds(20)),
    })];
    if spec.aal == "aal2" || spec.aal == "aal3" {
        methods.push(json!({ "method": "totp", "aal": "aal2", "completed_at": at }));
    }

    let local = spec.email.split('@').next().unwrap_or("user");
    let mut first: Vec<char> = local.chars().collect();
    if let Some(c) = first.first_mut() {
        *c = c.to_ascii_uppercase();
    }
    let first: String = first.into_iter().collect();

    let mut address = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "value": spec.email,
        "verified": spec.verified,
        "via": "email",
        "status": if spec.verified { "completed" } else { "pending" },
        "created_at": created,
        "updated_at": created,
    });
    if spec.verified {
        address["verified_at"] = json!(created);
    }

    json!({
        "id": session_id,
        "active": spec.active,
        "expires_at": rfc3339(expires_at),
        "authenticated_at": at,
        "authenticator_assurance_level": spec.aal,
        "authentication_methods": methods,
        "issued_at": rfc3339(authenticated_at - time::Duration::seconds(20)),
        "identity": {
            "id": spec.identity_id,
            "schema_id": "default",
            "schema_url": format!("{}/schemas/ZGVmYXVsdA", base_url.trim_end_matches('/')),
            "state": "active",
            "state_changed_at": created,
            "traits": {
                "email": spec.email,
                "name": { "first": first, "last": "Example" },
            },
            "verifiable_addresses": [address],
            "recovery_addresses": [{
                "id": uuid::Uuid::new_v4().to_string(),
                "value": spec.email,
                "via": "email",
                "created_at": created,
                "updated_at": created,
            }],
            "metadata_public": null,
            "created_at": created,
            "updated_at": created,
            "organization_id": null,
        },
        // The device of the request that created the session (Kratos records the peer address
        // with its port when no proxy header names the client).
        "devices": [{
            "id": uuid::Uuid::new_v4().to_string(),
            "ip_address": "127.0.0.1:50000",
            "user_agent": "sessiongate-testkit",
            "location": "",
        }],
    })
}
