//! Certificate mode (公钥证书): certificate serial numbers and the Alipay certificate store.
//!
//! A certificate's SN is the lowercase hex MD5 of `issuerDN + serialDecimal`, where the issuer
//! DN is written RFC 2253 style (attributes in reverse order, `CN=…,OU=…,O=…,C=…`). The root
//! SN joins the SNs of the RSA certificates (signature OID under `1.2.840.113549.1.1`) of the
//! root chain with `_`; other certificates in the chain (an ECC root) are skipped.

use std::collections::HashMap;
use std::sync::RwLock;

use md5::{Digest, Md5};
use num_bigint::BigUint;
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::keys::{KeyError, KeyRole, PublicKey};

/// A certificate that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate: {0}")]
pub struct CertError(pub String);

const RSA_FAMILY_OID_PREFIX: &str = "1.2.840.113549.1.1";

/// Parses every certificate of a PEM text (one or a chain) into DER blocks.
pub fn pem_certificates(pem_text: &str) -> Result<Vec<Vec<u8>>, CertError> {
    let mut out = Vec::new();
    for pem in Pem::iter_from_buffer(pem_text.as_bytes()) {
        let pem = pem.map_err(|e| CertError(format!("bad PEM: {e}")))?;
        if pem.label == "CERTIFICATE" {
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err(CertError("no CERTIFICATE block found".into()));
    }
    Ok(out)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| CertError(format!("not an X.509 certificate: {e}")))
}

fn short_name(oid: &str) -> String {
    match oid {
        "2.5.4.3" => "CN".into(),
        "2.5.4.11" => "OU".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.9" => "STREET".into(),
        "0.9.2342.19200300.100.1.25" => "DC".into(),
        "0.9.2342.19200300.100.1.1" => "UID".into(),
        other => other.to_owned(),
    }
}

/// The RFC 2253 form of a name as Alipay's SDKs compute it: RDNs in reverse order.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let value = attr.as_str().map(str::to_owned).unwrap_or_else(|_| {
                        String::from_utf8_lossy(attr.attr_value().data).into_owned()
                    });
                    format!("{}={}", short_name(&attr.attr_type().to_id_string()), value)
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

/// The SN of one DER certificate: `md5(issuerDN + serialDecimal)` as 32 lowercase hex digits.
pub fn cert_sn_der(der: &[u8]) -> Result<String, CertError> {
    let cert = parse(der)?;
    Ok(sn_of(&cert))
}

fn sn_of(cert: &X509Certificate<'_>) -> String {
    let serial = BigUint::from_bytes_be(cert.raw_serial()).to_str_radix(10);
    let text = format!("{}{}", rfc2253(cert.issuer()), serial);
    let digest = Md5::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SN of the first certificate in a PEM text (`app_cert_sn`).
pub fn cert_sn(pem_text: &str) -> Result<String, CertError> {
    let ders = pem_certificates(pem_text)?;
    cert_sn_der(&ders[0])
}

/// The root SN of a chain (`alipay_root_cert_sn`): SNs of the RSA certificates joined by `_`.
pub fn root_cert_sn(pem_chain: &str) -> Result<String, CertError> {
    let mut sns = Vec::new();
    for der in pem_certificates(pem_chain)? {
        let cert = parse(&der)?;
        if cert
            .signature_algorithm
            .algorithm
            .to_id_string()
            .starts_with(RSA_FAMILY_OID_PREFIX)
        {
            sns.push(sn_of(&cert));
        }
    }
    if sns.is_empty() {
        return Err(CertError("the root chain holds no RSA certificate".into()));
    }
    Ok(sns.join("_"))
}

/// The RSA public key inside a certificate.
pub fn cert_public_key(der: &[u8], role: KeyRole) -> Result<PublicKey, KeyError> {
    let cert = parse(der).map_err(|e| KeyError { role, problem: e.0 })?;
    PublicKey::from_der(role, cert.public_key().raw)
}

/// Checks that `der` was signed by one of the certificates of `roots` (by subject match and
/// an RSA signature check) and is valid at `unix_now`.
pub fn verify_issued_by(der: &[u8], roots: &[Vec<u8>], unix_now: i64) -> Result<(), CertError> {
    let cert = parse(der)?;
    let validity = cert.validity();
    if unix_now < validity.not_before.timestamp() || unix_now > validity.not_after.timestamp() {
        return Err(CertError(
            "certificate is outside its validity period".into(),
        ));
    }
    let sig_alg = cert.signature_algorithm.algorithm.to_id_string();
    let alg: &'static dyn aws_lc_rs::signature::VerificationAlgorithm = match sig_alg.as_str() {
        "1.2.840.113549.1.1.11" => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.5" => {
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
        }
        other => {
            return Err(CertError(format!(
                "unsupported certificate signature algorithm {other}"
            )));
        }
    };
    for root_der in roots {
        let Ok(root) = parse(root_der) else { continue };
        if root.subject().as_raw() != cert.issuer().as_raw() {
            continue;
        }
        let key = aws_lc_rs::signature::UnparsedPublicKey::new(
            alg,
            root.public_key().subject_public_key.data.as_ref(),
        );
        if key
            .verify(
                cert.tbs_certificate.as_ref(),
                cert.signature_value.data.as_ref(),
            )
            .is_ok()
        {
            return Ok(());
        }
    }
    Err(CertError(
        "certificate is not issued by any certificate of the root chain".into(),
    ))
}

/// Certificate-mode material of a client: its own SNs and the Alipay certificates it knows.
#[derive(Debug)]
pub struct CertMode {
    app_cert_sn: String,
    root_cert_sn: String,
    roots: Vec<Vec<u8>>,
    known: RwLock<HashMap<String, PublicKey>>,
}

impl CertMode {
    /// Builds the material from the app certificate, the Alipay public certificate and the
    /// Alipay root chain, all PEM.
    pub fn new(
        app_cert_pem: &str,
        alipay_cert_pem: &str,
        root_chain_pem: &str,
    ) -> Result<Self, CertError> {
        let app_cert_sn =
            cert_sn(app_cert_pem).map_err(|e| CertError(format!("app certificate: {}", e.0)))?;
        let root_cert_sn = root_cert_sn(root_chain_pem)
            .map_err(|e| CertError(format!("Alipay root certificate: {}", e.0)))?;
        let roots = pem_certificates(root_chain_pem)?;
        let mode = CertMode {
            app_cert_sn,
            root_cert_sn,
            roots,
            known: RwLock::new(HashMap::new()),
        };
        for der in pem_certificates(alipay_cert_pem)
            .map_err(|e| CertError(format!("Alipay certificate: {}", e.0)))?
        {
            mode.add_alipay_cert_der(&der)?;
        }
        Ok(mode)
    }

    /// `app_cert_sn`, sent on every request.
    pub fn app_cert_sn(&self) -> &str {
        &self.app_cert_sn
    }

    /// `alipay_root_cert_sn`, sent on every request.
    pub fn root_cert_sn(&self) -> &str {
        &self.root_cert_sn
    }

    /// The root chain, DER.
    pub fn roots(&self) -> &[Vec<u8>] {
        &self.roots
    }

    /// The public key of a known Alipay certificate.
    pub fn key_for(&self, sn: &str) -> Option<PublicKey> {
        self.known.read().ok()?.get(sn).cloned()
    }

    /// Any known Alipay key (for answers that carry no `alipay_cert_sn`).
    pub fn any_key(&self) -> Option<PublicKey> {
        self.known.read().ok()?.values().next().cloned()
    }

    /// Adds an Alipay certificate (DER) and returns its SN.
    pub fn add_alipay_cert_der(&self, der: &[u8]) -> Result<String, CertError> {
        let sn = cert_sn_der(der)?;
        let key =
            cert_public_key(der, KeyRole::AlipayPublicKey).map_err(|e| CertError(e.to_string()))?;
        if let Ok(mut known) = self.known.write() {
            known.insert(sn.clone(), key);
        }
        Ok(sn)
    }
}
