//! Signing and verification of device messages: pure functions, no I/O, no clock.
//!
//! An envelope's signature covers the *canonical string*
//! `machine \n msg_id \n ts \n kind \n body`, where `body` is the body JSON exactly as the
//! sender wrote it (the envelope carries the body as a JSON *string*, so no
//! canonicalisation of JSON is ever needed). The signature is the standard base64 (with
//! padding) of HMAC-SHA256 keyed with the machine secret's UTF-8 bytes.
//!
//! HTTP requests from machines are signed over `method \n path \n ts \n nonce \n
//! sha256hex(body)` with the same key. Every comparison of a signature is constant-time
//! (`aws_lc_rs::hmac::verify`).

use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The bytes an envelope signature covers.
pub fn envelope_string(machine: &str, msg_id: &str, ts: i64, kind: &str, body: &str) -> String {
    format!("{machine}\n{msg_id}\n{ts}\n{kind}\n{body}")
}

/// The bytes an HTTP request signature covers. `path` is the path without the query.
pub fn http_string(method: &str, path: &str, ts: i64, nonce: &str, body: &[u8]) -> String {
    format!("{method}\n{path}\n{ts}\n{nonce}\n{}", sha256_hex(body))
}

/// Lower-case hex of the SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = String::with_capacity(64);
    for b in d.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// base64(HMAC-SHA256(secret, message)).
pub fn sign(secret: &[u8], message: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    STANDARD.encode(hmac::sign(&key, message).as_ref())
}

/// Whether `sig_b64` is the signature of `message` with `secret`, compared in constant time.
/// A signature that is not valid base64 is simply wrong.
pub fn verify(secret: &[u8], message: &[u8], sig_b64: &str) -> bool {
    let Ok(tag) = STANDARD.decode(sig_b64.as_bytes()) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, message, &tag).is_ok()
}

/// Constant-time equality of two secrets (MQTT passwords at CONNECT).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    // Compare MACs of both under a fixed key, so unequal lengths do not leak either.
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"openvend-secret-compare");
    let tag = hmac::sign(&key, b);
    hmac::verify(&key, a, tag.as_ref()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let msg = envelope_string("VM001", "m1", 1_700_000_000_000, "heartbeat", "{}");
        let sig = sign(b"s3cret", msg.as_bytes());
        assert!(verify(b"s3cret", msg.as_bytes(), &sig));
        assert!(!verify(b"other", msg.as_bytes(), &sig));
        let changed = envelope_string("VM001", "m1", 1_700_000_000_001, "heartbeat", "{}");
        assert!(!verify(b"s3cret", changed.as_bytes(), &sig));
        assert!(!verify(b"s3cret", msg.as_bytes(), "not base64!"));
        assert!(!verify(b"s3cret", msg.as_bytes(), ""));
    }

    #[test]
    fn sha256_hex_matches_the_published_vector_for_abc() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        // key "Jefe", data "what do ya want for nothing?"
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
        assert!(!secrets_equal(b"", b"a"));
    }
}
