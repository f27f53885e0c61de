//! The signing keys of `[identity_token]`: PKCS#8 PEM files holding a P-256 (ES256) or an Ed25519
//! (EdDSA) private key, parsed once when the configuration is compiled, and the JSON Web Key Set
//! (RFC 7517) that publishes their public halves.
//!
//! Every key has a `kid`: its RFC 7638 JWK thumbprint (SHA-256 of the required public members,
//! base64url), so the same key always gets the same `kid`, on every replica and after a restart.
//! Nothing here ever logs or prints private key material ([`SigningKey`]'s `Debug` shows the `kid`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// One private key that can sign identity tokens, with its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    /// RFC 7638 thumbprint of the public key: the `kid` of tokens and of the JWKS entry.
    pub kid: String,
    /// `ES256` or `EdDSA`.
    pub alg: Algorithm,
    /// The public key as published (with `kid`, `alg` and `use`).
    pub jwk: Value,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl PartialEq for SigningKey {
    /// Two keys are the same key when their public halves are (the thumbprint covers them).
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.alg == other.alg
    }
}

impl SigningKey {
    /// Parses a PKCS#8 PEM file's content (`-----BEGIN PRIVATE KEY-----`) holding a P-256 or an
    /// Ed25519 private key.
    ///
    /// # Errors
    /// A message saying why the key cannot be used (never any part of the key itself).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, String> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|_| {
            "not a PKCS#8 PEM private key (\"BEGIN PRIVATE KEY\"; convert an \"EC PRIVATE KEY\" \
             with `openssl pkcs8 -topk8 -nocrypt`)"
                .to_string()
        })?;
        let der = der.secret_pkcs8_der();
        let rng = ring::rand::SystemRandom::new();
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng) {
            // uncompressed point: 0x04 || x (32 bytes) || y (32 bytes)
            let point = pair.public_key().as_ref();
            if point.len() != 65 {
                return Err("unexpected P-256 public key encoding".into());
            }
            let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
            let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
            // RFC 7638 §3.2: the required members, in lexicographic order, no whitespace
            let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
            let kid = thumbprint(&canonical);
            return Ok(SigningKey {
                jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid,
                            "alg": "ES256", "use": "sig"}),
                kid,
                alg: Algorithm::ES256,
                encoding: EncodingKey::from_ec_der(der),
            });
        }
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
            let kid = thumbprint(&canonical);
            return Ok(SigningKey {
                jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid,
                            "alg": "EdDSA", "use": "sig"}),
                kid,
                alg: Algorithm::EdDSA,
                encoding: EncodingKey::from_ed_der(der),
            });
        }
        Err("neither a P-256 (ES256) nor an Ed25519 (EdDSA) private key".into())
    }

    /// The key jsonwebtoken signs with.
    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// Base64url of the SHA-256 of an RFC 7638 canonical JWK.
fn thumbprint(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The JWKS document (`{"keys": [...]}`) publishing `keys`, in their order.
pub fn jwks(keys: &[SigningKey]) -> Vec<u8> {
    let doc = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    serde_json::to_vec(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PKCS#8 DER of an Ed25519 key from its 32-byte seed (RFC 8410 §7).
    fn ed25519_pem(seed: [u8; 32]) -> String {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    }

    #[test]
    fn ed25519_rfc8037_key_has_the_rfc_thumbprint() {
        // RFC 8037 appendix A.1/A.3: this seed's public key and JWK thumbprint.
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .expect("rfc seed")
            .try_into()
            .expect("32 bytes");
        let key = SigningKey::from_pem(ed25519_pem(seed).as_bytes()).expect("ed25519 key");
        assert_eq!(key.alg, Algorithm::EdDSA);
        assert_eq!(key.jwk["x"], "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!(key.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn garbage_and_wrong_curves_are_refused() {
        assert!(SigningKey::from_pem(b"not a key").is_err());
        assert!(SigningKey::from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }
}
