//! RSA keys: the app's private key and Alipay's public key, parsed once at load.
//!
//! Alipay's key tool writes keys as one line of bare base64, PKCS#8 ("Java") or PKCS#1
//! ("non-Java"); others keep PEM armour. Both are accepted. Key material never appears in
//! `Debug` output: the types print only a fingerprint of the public half.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::sign::SignType;

/// Which key a [`KeyError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// The app private key (应用私钥), used to sign requests.
    AppPrivateKey,
    /// Alipay's public key (支付宝公钥), used to verify responses and notifications.
    AlipayPublicKey,
    /// A public key registered for an app (used by gateways that verify requests).
    AppPublicKey,
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyRole::AppPrivateKey => "app private key",
            KeyRole::AlipayPublicKey => "Alipay public key",
            KeyRole::AppPublicKey => "app public key",
        })
    }
}

/// A key that could not be loaded; says which key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{role}: {problem}")]
pub struct KeyError {
    /// The key concerned.
    pub role: KeyRole,
    /// What is wrong, in words.
    pub problem: String,
}

impl KeyError {
    fn new(role: KeyRole, problem: impl Into<String>) -> Self {
        KeyError {
            role,
            problem: problem.into(),
        }
    }
}

/// What a key text turned out to hold.
enum Decoded {
    Der(Vec<u8>),
    Pem { label: String, der: Vec<u8> },
}

fn decode_text(role: KeyRole, text: &str) -> Result<Decoded, KeyError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(KeyError::new(role, "the key is empty"));
    }
    if let Some(rest) = trimmed.strip_prefix("-----BEGIN ") {
        let (label, after) = rest
            .split_once("-----")
            .ok_or_else(|| KeyError::new(role, "PEM header is malformed"))?;
        let end_marker = format!("-----END {label}-----");
        let body = after
            .split_once(end_marker.as_str())
            .map(|(b, _)| b)
            .ok_or_else(|| {
                KeyError::new(
                    role,
                    format!("PEM block has no `{end_marker}` line (truncated?)"),
                )
            })?;
        let der = decode_base64(role, body)?;
        return Ok(Decoded::Pem {
            label: label.to_owned(),
            der,
        });
    }
    Ok(Decoded::Der(decode_base64(role, trimmed)?))
}

fn decode_base64(role: KeyRole, body: &str) -> Result<Vec<u8>, KeyError> {
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    B64.decode(compact.as_bytes())
        .map_err(|e| KeyError::new(role, format!("not valid base64 ({e})")))
}

/// Rough structural look at DER to give a useful message when the wrong kind of key is given.
fn looks_like_spki(der: &[u8]) -> bool {
    // SubjectPublicKeyInfo starts with SEQUENCE { SEQUENCE { OID rsaEncryption ... } ... }.
    // The rsaEncryption OID bytes appear within the first ~20 bytes of an SPKI, and at a
    // later offset (after the version INTEGER) in PKCS#8.
    const RSA_OID: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    let head = &der[..der.len().min(24)];
    let has_oid = head.windows(RSA_OID.len()).any(|w| w == RSA_OID);
    // PKCS#8 has `INTEGER 0` (02 01 00) before the algorithm identifier.
    let has_version = head.windows(3).any(|w| w == [0x02, 0x01, 0x00]);
    has_oid && !has_version
}

/// aws-lc refuses RSA keys under 2048 bits before we can measure them; say so plainly.
fn too_small(role: KeyRole, e: &aws_lc_rs::error::KeyRejected) -> Option<KeyError> {
    (e.to_string() == "TooSmall").then(|| {
        KeyError::new(
            role,
            "RSA key of fewer than 2048 bits; Alipay requires at least 2048",
        )
    })
}

/// True when `der` is an X.509 certificate (given where a bare key was expected).
fn is_certificate(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok()
}

/// The app's RSA private key, used to sign requests (RSA2 = SHA256withRSA, PKCS#1 v1.5).
pub struct AppPrivateKey {
    pair: KeyPair,
    rng: SystemRandom,
    fingerprint: String,
}

impl AppPrivateKey {
    /// Loads a private key from PEM (`RSA PRIVATE KEY` or `PRIVATE KEY`) or bare base64 of
    /// PKCS#8 or PKCS#1 DER, as Alipay's key tool writes it.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let role = KeyRole::AppPrivateKey;
        let pair = match decode_text(role, text)? {
            Decoded::Pem { label, der } => match label.as_str() {
                "PRIVATE KEY" => KeyPair::from_pkcs8(&der).map_err(|e| {
                    too_small(role, &e).unwrap_or_else(|| {
                        KeyError::new(
                            role,
                            format!("PKCS#8 key rejected ({e}); truncated or not RSA?"),
                        )
                    })
                })?,
                "RSA PRIVATE KEY" => KeyPair::from_der(&der).map_err(|e| {
                    too_small(role, &e).unwrap_or_else(|| {
                        KeyError::new(role, format!("PKCS#1 key rejected ({e}); truncated?"))
                    })
                })?,
                "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                    return Err(KeyError::new(
                        role,
                        "this is a public key; the app private key is needed here",
                    ));
                }
                "CERTIFICATE" => {
                    return Err(KeyError::new(
                        role,
                        "this is a certificate; the app private key is needed here",
                    ));
                }
                other => {
                    return Err(KeyError::new(
                        role,
                        format!("unsupported PEM block `{other}`"),
                    ));
                }
            },
            Decoded::Der(der) => Self::parse_der(&der)?,
        };
        Self::from_pair(pair)
    }

    fn parse_der(der: &[u8]) -> Result<KeyPair, KeyError> {
        let role = KeyRole::AppPrivateKey;
        let pkcs8 = match KeyPair::from_pkcs8(der) {
            Ok(pair) => return Ok(pair),
            Err(e) => e,
        };
        let pkcs1 = match KeyPair::from_der(der) {
            Ok(pair) => return Ok(pair),
            Err(e) => e,
        };
        if let Some(e) = too_small(role, &pkcs8).or_else(|| too_small(role, &pkcs1)) {
            return Err(e);
        }
        if is_certificate(der) {
            return Err(KeyError::new(
                role,
                "this is a certificate; the app private key is needed here",
            ));
        }
        if looks_like_spki(der) {
            return Err(KeyError::new(
                role,
                "this is a public key; the app private key is needed here",
            ));
        }
        Err(KeyError::new(
            role,
            format!(
                "{} bytes that are neither a PKCS#8 nor a PKCS#1 RSA private key (truncated or corrupt?)",
                der.len()
            ),
        ))
    }

    fn from_pair(pair: KeyPair) -> Result<Self, KeyError> {
        let bits = pair.public_modulus_len() * 8;
        if bits < 2048 {
            return Err(KeyError::new(
                KeyRole::AppPrivateKey,
                format!("RSA key of {bits} bits; Alipay requires at least 2048"),
            ));
        }
        let fingerprint = fingerprint(pair.public_key().as_ref());
        Ok(AppPrivateKey {
            pair,
            rng: SystemRandom::new(),
            fingerprint,
        })
    }

    /// Generates a fresh RSA-2048 key pair (for tests, sandboxes and `keygen`).
    pub fn generate() -> Result<Self, KeyError> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| KeyError::new(KeyRole::AppPrivateKey, "key generation failed"))?;
        Self::from_pair(pair)
    }

    /// Signs `message` with RSA2 (SHA256withRSA) and returns the standard base64 signature,
    /// as Alipay's `sign` field. (Legacy `RSA` is only ever verified, never produced.)
    pub fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.sign_raw(message))
    }

    /// Signs `message` with RSA2 and returns the raw signature bytes.
    pub fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        let alg = &signature::RSA_PKCS1_SHA256;
        let mut out = vec![0u8; self.pair.public_modulus_len()];
        // Signing with a valid, loaded RSA key only fails on allocation failure inside the
        // C library; the buffer has the modulus length, which is what the API requires.
        if self.pair.sign(alg, &self.rng, message, &mut out).is_err() {
            out.clear();
        }
        out
    }

    /// The public half, as a verifier.
    pub fn public_key(&self) -> PublicKey {
        // The public key of a loaded pair always re-parses.
        PublicKey::from_der_unchecked(self.pair.public_key().as_ref())
    }

    /// The private key as PKCS#8 DER, bare base64 (the format Alipay's key tool writes).
    pub fn to_pkcs8_base64(&self) -> Result<String, KeyError> {
        let der: Pkcs8V1Der<'_> = self
            .pair
            .as_der()
            .map_err(|_| KeyError::new(KeyRole::AppPrivateKey, "cannot encode key as PKCS#8"))?;
        Ok(B64.encode(der.as_ref()))
    }

    /// The private key as a PKCS#8 PEM block.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        Ok(pem("PRIVATE KEY", &self.to_pkcs8_base64()?))
    }

    /// A short, non-secret identifier of this key (hex of the SHA-256 of its public half).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl fmt::Debug for AppPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppPrivateKey")
            .field("fingerprint", &self.fingerprint)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// An RSA public key parsed once for fast verification (SHA256withRSA and legacy SHA1withRSA).
#[derive(Clone)]
pub struct PublicKey {
    inner: std::sync::Arc<PublicKeyInner>,
}

struct PublicKeyInner {
    rsa2: Option<ParsedPublicKey>,
    rsa1: Option<ParsedPublicKey>,
    pkcs1_der: Vec<u8>,
    fingerprint: String,
}

impl PublicKey {
    /// Loads Alipay's public key: SubjectPublicKeyInfo as PEM or bare base64
    /// (`MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A…`).
    pub fn alipay_from_text(text: &str) -> Result<Self, KeyError> {
        Self::from_text(KeyRole::AlipayPublicKey, text)
    }

    /// Loads a public key for the given role from PEM or bare base64 (SPKI or PKCS#1).
    pub fn from_text(role: KeyRole, text: &str) -> Result<Self, KeyError> {
        let der = match decode_text(role, text)? {
            Decoded::Pem { label, der } => match label.as_str() {
                "PUBLIC KEY" | "RSA PUBLIC KEY" => der,
                "PRIVATE KEY" | "RSA PRIVATE KEY" => {
                    return Err(KeyError::new(
                        role,
                        "this is a private key; a public key is needed here (and never share the private key)",
                    ));
                }
                "CERTIFICATE" => {
                    return Err(KeyError::new(
                        role,
                        "this is a certificate; use certificate mode, or give the public key",
                    ));
                }
                other => {
                    return Err(KeyError::new(
                        role,
                        format!("unsupported PEM block `{other}`"),
                    ));
                }
            },
            Decoded::Der(der) => der,
        };
        Self::from_der(role, &der)
    }

    /// Loads a public key from SPKI or PKCS#1 DER.
    pub fn from_der(role: KeyRole, der: &[u8]) -> Result<Self, KeyError> {
        let parsed = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|_| {
            if KeyPair::from_pkcs8(der).is_ok() || KeyPair::from_der(der).is_ok() {
                KeyError::new(role, "this is a private key; a public key is needed here")
            } else if is_certificate(der) {
                KeyError::new(
                    role,
                    "this is a certificate; use certificate mode, or give the public key",
                )
            } else {
                KeyError::new(
                    role,
                    format!(
                        "{} bytes that are not an RSA public key (truncated or corrupt?)",
                        der.len()
                    ),
                )
            }
        })?;
        let bits = parsed.modulus_len() * 8;
        if bits < 2048 {
            return Err(KeyError::new(
                role,
                format!("RSA key of {bits} bits; at least 2048 are required"),
            ));
        }
        Ok(Self::from_der_unchecked(parsed.as_ref()))
    }

    fn from_der_unchecked(pkcs1: &[u8]) -> Self {
        let rsa2 = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, pkcs1).ok();
        let rsa1 = ParsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            pkcs1,
        )
        .ok();
        PublicKey {
            inner: std::sync::Arc::new(PublicKeyInner {
                rsa2,
                rsa1,
                pkcs1_der: pkcs1.to_vec(),
                fingerprint: fingerprint(pkcs1),
            }),
        }
    }

    /// Verifies a base64 `sign` over `message`. Returns false for any malformed signature.
    pub fn verify(&self, sign_type: SignType, message: &[u8], sign_b64: &str) -> bool {
        let Ok(sig) = B64.decode(sign_b64.trim().as_bytes()) else {
            return false;
        };
        self.verify_raw(sign_type, message, &sig)
    }

    /// Verifies raw signature bytes over `message`.
    pub fn verify_raw(&self, sign_type: SignType, message: &[u8], sig: &[u8]) -> bool {
        let key = match sign_type {
            SignType::Rsa2 => &self.inner.rsa2,
            SignType::Rsa => &self.inner.rsa1,
        };
        key.as_ref()
            .is_some_and(|k| k.verify_sig(message, sig).is_ok())
    }

    /// The key as SubjectPublicKeyInfo DER, bare base64 (the format Alipay's console shows).
    pub fn to_spki_base64(&self) -> String {
        B64.encode(self.spki_der())
    }

    /// The key as a `PUBLIC KEY` PEM block.
    pub fn to_spki_pem(&self) -> String {
        pem("PUBLIC KEY", &self.to_spki_base64())
    }

    /// SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> Vec<u8> {
        aws_lc_rs::rsa::PublicKey::from_der(&self.inner.pkcs1_der)
            .ok()
            .and_then(|k| {
                let der: Result<PublicKeyX509Der<'_>, _> = k.as_der();
                der.ok().map(|d| d.as_ref().to_vec())
            })
            .unwrap_or_default()
    }

    /// The key as PKCS#1 `RSAPublicKey` DER.
    pub fn pkcs1_der(&self) -> &[u8] {
        &self.inner.pkcs1_der
    }

    /// A short, non-secret identifier of this key.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// True when both keys have the same modulus and exponent.
    pub fn same_key(&self, other: &PublicKey) -> bool {
        self.inner.pkcs1_der == other.inner.pkcs1_der
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("fingerprint", &self.inner.fingerprint)
            .finish()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.same_key(other)
    }
}

fn fingerprint(public_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_der);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pem(label: &str, b64: &str) -> String {
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
