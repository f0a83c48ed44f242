//! `Qlik-Signature` verification: hex of HMAC-SHA256(secret, raw body bytes).
//!
//! The only way to obtain a [`VerifiedBody`] is [`WebhookSecrets::verify`], so code that publishes
//! a body can demand one and cannot be handed an unchecked request by mistake.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Name of the header Qlik Cloud puts the signature in (header names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "qlik-signature";

/// Qlik lets an admin set a secret of 32 to 64 characters; shorter ones are refused so a guessable
/// secret never protects a public endpoint.
pub const MIN_SECRET_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was not accepted. The HTTP answer is always a bare 401; this is for
/// the log only, and never contains the signature or a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Qlik-Signature header is missing")]
    Missing,
    #[error("the Qlik-Signature header is not hexadecimal")]
    NotHex,
    #[error("the Qlik-Signature header has {0} hex digits, expected 64")]
    WrongLength(usize),
    #[error("the Qlik-Signature does not match any configured secret")]
    Mismatch,
}

/// A webhook secret set was refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error("no webhook secret is configured")]
    Empty,
    #[error(
        "webhook secret #{position} has {len} characters; Qlik secrets have at least {MIN_SECRET_LEN}"
    )]
    TooShort { position: usize, len: usize },
}

/// One or more webhook secrets. Several are accepted at once so a secret can be rotated without
/// losing deliveries: add the new one, change it in Qlik, then remove the old one.
#[derive(Clone)]
pub struct WebhookSecrets {
    secrets: Vec<SecretString>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} redacted)", self.secrets.len())
    }
}

impl WebhookSecrets {
    /// Parses a comma-separated list (surrounding white space is ignored, empty items skipped).
    pub fn from_list(list: &str) -> Result<Self, SecretsError> {
        Self::new(list.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Result<Self, SecretsError> {
        let secrets: Vec<SecretString> = secrets
            .into_iter()
            .enumerate()
            .map(|(index, secret)| {
                let len = secret.chars().count();
                if len < MIN_SECRET_LEN {
                    Err(SecretsError::TooShort {
                        position: index + 1,
                        len,
                    })
                } else {
                    Ok(SecretString::from(secret.to_owned()))
                }
            })
            .collect::<Result<_, _>>()?;
        if secrets.is_empty() {
            return Err(SecretsError::Empty);
        }
        Ok(Self { secrets })
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Checks `signature` (the header value, if any) against `body` with every secret.
    ///
    /// The comparison is constant-time per secret, and every secret is tried even after a match,
    /// so timing tells nothing about which secret matched or how much of a signature was right.
    pub fn verify(
        &self,
        signature: Option<&[u8]>,
        body: impl Into<Vec<u8>>,
    ) -> Result<VerifiedBody, SignatureError> {
        let expected = decode_signature(signature.ok_or(SignatureError::Missing)?)?;
        let body = body.into();
        let mut matched = false;
        for secret in &self.secrets {
            let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(&body);
            matched |= mac.verify_slice(&expected).is_ok();
        }
        if matched {
            Ok(VerifiedBody(body))
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// The signature Qlik would send for `body` with the first secret (lower-case hex). For tools
    /// and tests that need to produce a signed request.
    pub fn sign(&self, body: &[u8]) -> String {
        sign(self.secrets[0].expose_secret(), body)
    }
}

/// Whether a value sent by a client equals a secret, in time that depends on neither the
/// secret's length nor where they differ: both are hashed first and the fixed-size digests
/// compared in constant time (a plain slice compare returns early on a length mismatch).
pub fn secret_value_eq(sent: &[u8], secret: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let sent = Sha256::digest(sent);
    let secret = Sha256::digest(secret);
    bool::from(sent.as_slice().ct_eq(secret.as_slice()))
}

/// Lower-case hex HMAC-SHA256 of `body` under `secret`, as Qlik computes it.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn decode_signature(header: &[u8]) -> Result<[u8; 32], SignatureError> {
    let header = header.trim_ascii();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    if !header.iter().all(u8::is_ascii_hexdigit) {
        return Err(SignatureError::NotHex);
    }
    if header.len() != 64 {
        return Err(SignatureError::WrongLength(header.len()));
    }
    let mut out = [0u8; 32];
    // hex::decode_to_slice accepts both cases, which Qlik's documentation leaves open.
    hex::decode_to_slice(header, &mut out).map_err(|_| SignatureError::NotHex)?;
    Ok(out)
}

/// A request body whose `Qlik-Signature` matched one of the configured secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBody(Vec<u8>);

impl VerifiedBody {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl AsRef<[u8]> for VerifiedBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-secret-0123456789abcdefghijklmnop";
    const OTHER: &str = "other-secret-0123456789abcdefghijklmno";

    fn secrets(list: &str) -> WebhookSecrets {
        WebhookSecrets::from_list(list).unwrap()
    }

    #[test]
    fn accepts_the_signature_qlik_computes() {
        let body = br#"{"id":"1"}"#;
        let sig = sign(SECRET, body);
        let verified = secrets(SECRET).verify(Some(sig.as_bytes()), *body).unwrap();
        assert_eq!(verified.as_bytes(), body);
    }

    #[test]
    fn known_vector_matches_openssl() {
        // printf '%s' '{"a":1}' | openssl dgst -sha256 -hmac "test-secret-0123456789abcdefghijklmnop"
        assert_eq!(
            sign(SECRET, br#"{"a":1}"#),
            "bfe9b0f53599af43483a3092643d2080aa39787fe08459aee3f11948e528ed76"
        );
    }

    #[test]
    fn upper_case_hex_and_surrounding_space_are_accepted() {
        let body = b"{}";
        let sig = format!("  {}\t", sign(SECRET, body).to_uppercase());
        assert!(secrets(SECRET).verify(Some(sig.as_bytes()), *body).is_ok());
    }

    #[test]
    fn every_malformed_signature_has_its_reason() {
        let s = secrets(SECRET);
        assert_eq!(s.verify(None, *b"{}"), Err(SignatureError::Missing));
        assert_eq!(s.verify(Some(b"  "), *b"{}"), Err(SignatureError::Missing));
        assert_eq!(
            s.verify(Some(b"sha256=abcd"), *b"{}"),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            s.verify(Some(b"abcd"), *b"{}"),
            Err(SignatureError::WrongLength(4))
        );
        let wrong = sign(OTHER, b"{}");
        assert_eq!(
            s.verify(Some(wrong.as_bytes()), *b"{}"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_changed_body_does_not_verify() {
        let sig = sign(SECRET, br#"{"status":"error"}"#);
        assert_eq!(
            secrets(SECRET).verify(Some(sig.as_bytes()), br#"{"status":"ok"}"#.to_vec()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_secret_of_a_rotation_set_verifies() {
        let both = secrets(&format!("{SECRET}, {OTHER}"));
        assert_eq!(both.len(), 2);
        for secret in [SECRET, OTHER] {
            let sig = sign(secret, b"{}");
            assert!(both.verify(Some(sig.as_bytes()), *b"{}").is_ok());
        }
    }

    #[test]
    fn short_or_missing_secrets_are_refused_without_echoing_them() {
        let err = WebhookSecrets::from_list(&format!("{SECRET},short")).unwrap_err();
        assert_eq!(
            err,
            SecretsError::TooShort {
                position: 2,
                len: 5
            }
        );
        assert!(!err.to_string().contains("short"));
        assert_eq!(
            WebhookSecrets::from_list(" , ").unwrap_err(),
            SecretsError::Empty
        );
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let shown = format!("{:?}", secrets(SECRET));
        assert!(!shown.contains(SECRET), "{shown}");
    }

    #[test]
    fn secret_values_compare_whole() {
        assert!(secret_value_eq(b"s3cret-value", b"s3cret-value"));
        assert!(!secret_value_eq(b"s3cret-valu", b"s3cret-value"));
        assert!(!secret_value_eq(b"s3cret-value!", b"s3cret-value"));
        assert!(!secret_value_eq(b"", b"s3cret-value"));
        assert!(!secret_value_eq(b"S3cret-value", b"s3cret-value"));
    }
}
