//! The sandbox's own certificate authority for certificate mode (公钥证书模式, spec §1.8).
//!
//! One RSA root issues the "Alipay" certificate (for the sandbox's signing key) and the
//! certificates of apps registered in certificate mode. The root chain handed to apps
//! (`alipayRootCert.crt`) also holds an EC (P-256) root, as Alipay's chain holds a non-RSA
//! entry, so clients must skip it when they compute `alipay_root_cert_sn`.
//!
//! Everything needed to go on issuing after a restart lives in `ca.json` in the data folder
//! (written whole, through a temporary file). rcgen cannot load a certificate back, so the root
//! is re-created from its stored parameters and key: the issuer name and key are all that
//! signing a child needs, and the chain file served is always the stored PEM.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use alipay::PublicKey;
use alipay::cert::{cert_sn, root_cert_sn};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, PublicKeyData, RsaKeySize,
    SerialNumber, SignatureAlgorithm,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// File name of the CA state in the data folder.
pub const STATE_FILE: &str = "ca.json";
/// The root chain, as Alipay names it, written next to the state for developers.
pub const ROOT_CHAIN_FILE: &str = "alipayRootCert.crt";
/// The current Alipay certificate, as Alipay names it.
pub const ALIPAY_CERT_FILE: &str = "alipayCertPublicKey_RSA2.crt";

const ROOT_YEARS: i64 = 30;
const LEAF_YEARS: i64 = 10;

/// A certificate the CA issued: its SN (§1.8) and PEM text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// `md5(issuerDN + serialDecimal)`.
    pub sn: String,
    /// The certificate, PEM.
    pub pem: String,
}

/// What `ca.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// The RSA root's private key, PKCS#8 PEM.
    root_key_pem: String,
    /// Serial of the RSA root, big-endian hex.
    root_serial_hex: String,
    /// Validity of the RSA root, Unix seconds.
    root_not_before: i64,
    root_not_after: i64,
    /// The chain served to apps: the RSA root, then the EC root.
    chain_pem: String,
    /// Every Alipay certificate issued, oldest first; the last one signs answers.
    alipay_certs: Vec<Issued>,
}

struct State {
    stored: Stored,
    root_key: KeyPair,
    root: Certificate,
    root_sn: String,
}

impl std::fmt::Debug for State {
    // Never prints the root key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaState")
            .field("root_sn", &self.root_sn)
            .field("alipay_certs", &self.stored.alipay_certs.len())
            .finish()
    }
}

/// The CA: its root, the Alipay certificates, and issuing.
#[derive(Debug)]
pub struct Ca {
    state: RwLock<State>,
    path: Option<PathBuf>,
}

/// An RSA public key in the form rcgen signs over (PKCS#1 inside an `rsaEncryption` SPKI).
struct RsaSubject<'a>(&'a [u8]);

impl PublicKeyData for RsaSubject<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        &PKCS_RSA_SHA256
    }
}

fn root_name() -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "CN");
    dn.push(DnType::OrganizationName, "Alipay Sandbox");
    dn.push(DnType::OrganizationalUnitName, "Certification Authority");
    dn.push(DnType::CommonName, "Alipay Sandbox Root CA R1");
    dn
}

fn ec_root_name() -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "CN");
    dn.push(DnType::OrganizationName, "Alipay Sandbox");
    dn.push(DnType::OrganizationalUnitName, "Certification Authority");
    dn.push(DnType::CommonName, "Alipay Sandbox Root CA E1");
    dn
}

fn leaf_name(org: &str, cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "CN");
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::OrganizationalUnitName, "Alipay OpenPlatform");
    dn.push(DnType::CommonName, cn);
    dn
}

/// A random positive serial of 16 bytes.
fn random_serial() -> anyhow::Result<Vec<u8>> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
    // Positive, and never a leading zero byte, so the DER integer is exactly these bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    Ok(bytes.to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        anyhow::bail!("odd-length hex");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(text.get(i..i + 2).unwrap_or(""), 16)
                .map_err(|e| anyhow::anyhow!("bad hex: {e}"))
        })
        .collect()
}

fn time_at(unix: i64) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| anyhow::anyhow!("bad time: {e}"))
}

/// Validity of a new certificate. Clients check it against the real clock, and the sandbox
/// clock only runs ahead of it, so the window starts a day back in real time.
fn validity(years: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc());
    (now - Duration::days(1), now + Duration::days(365 * years))
}

fn root_params(
    serial: &[u8],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = root_name();
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.not_before = not_before;
    p.not_after = not_after;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn leaf_params(dn: DistinguishedName) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let (not_before, not_after) = validity(LEAF_YEARS);
    p.distinguished_name = dn;
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    p.not_before = not_before;
    p.not_after = not_after;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

impl Ca {
    /// Loads the CA from `dir/ca.json`, or creates one (and saves it when `dir` is given).
    /// A new CA issues its first Alipay certificate for `alipay_key`.
    pub fn load_or_create(dir: Option<&Path>, alipay_key: &PublicKey) -> anyhow::Result<Ca> {
        let path = dir.map(|d| d.join(STATE_FILE));
        let stored = match &path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)?;
                serde_json::from_str::<Stored>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            _ => Self::create_stored()?,
        };
        let state = Self::open_state(stored)?;
        let ca = Ca {
            state: RwLock::new(state),
            path,
        };
        if ca.read(|s| s.stored.alipay_certs.is_empty()) {
            ca.issue_alipay_cert(alipay_key)?;
        } else {
            ca.save()?;
        }
        Ok(ca)
    }

    fn create_stored() -> anyhow::Result<Stored> {
        let root_key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?;
        let serial = random_serial()?;
        let (not_before, not_after) = validity(ROOT_YEARS);
        let root = root_params(&serial, not_before, not_after).self_signed(&root_key)?;
        let ec_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut ec = CertificateParams::default();
        ec.distinguished_name = ec_root_name();
        ec.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        ec.not_before = not_before;
        ec.not_after = not_after;
        ec.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ec.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ec_root = ec.self_signed(&ec_key)?;
        Ok(Stored {
            root_key_pem: root_key.serialize_pem(),
            root_serial_hex: hex(&serial),
            root_not_before: not_before.unix_timestamp(),
            root_not_after: not_after.unix_timestamp(),
            chain_pem: format!("{}{}", root.pem(), ec_root.pem()),
            alipay_certs: Vec::new(),
        })
    }

    fn open_state(stored: Stored) -> anyhow::Result<State> {
        let root_key = KeyPair::from_pem(&stored.root_key_pem)
            .map_err(|e| anyhow::anyhow!("CA root key: {e}"))?;
        let params = root_params(
            &unhex(&stored.root_serial_hex)?,
            time_at(stored.root_not_before)?,
            time_at(stored.root_not_after)?,
        );
        let root = params.self_signed(&root_key)?;
        let root_sn =
            root_cert_sn(&stored.chain_pem).map_err(|e| anyhow::anyhow!("CA root chain: {e}"))?;
        Ok(State {
            stored,
            root_key,
            root,
            root_sn,
        })
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Writes `ca.json` and the developer copies of the chain and the Alipay certificate.
    fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let (json, chain, current) = self.read(|s| {
            (
                serde_json::to_string_pretty(&s.stored),
                s.stored.chain_pem.clone(),
                s.stored.alipay_certs.last().map(|c| c.pem.clone()),
            )
        });
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json?)?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::write(dir.join(ROOT_CHAIN_FILE), chain)?;
            if let Some(pem) = current {
                std::fs::write(dir.join(ALIPAY_CERT_FILE), pem)?;
            }
        }
        Ok(())
    }

    /// Issues a certificate for an RSA public key, signed by the root.
    fn issue(&self, dn: DistinguishedName, key: &PublicKey) -> anyhow::Result<Issued> {
        let params = leaf_params(dn)?;
        let cert =
            self.read(|s| params.signed_by(&RsaSubject(key.pkcs1_der()), &s.root, &s.root_key))?;
        let pem = cert.pem();
        let sn = cert_sn(&pem).map_err(|e| anyhow::anyhow!("issued certificate: {e}"))?;
        Ok(Issued { sn, pem })
    }

    /// Issues a new Alipay certificate for the sandbox's signing key; answers to apps in
    /// certificate mode carry its SN from now on. Returns it.
    pub fn issue_alipay_cert(&self, alipay_key: &PublicKey) -> anyhow::Result<Issued> {
        let issued = self.issue(
            leaf_name("Alipay Sandbox", "Alipay Sandbox Signing"),
            alipay_key,
        )?;
        {
            let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
            guard.stored.alipay_certs.push(issued.clone());
        }
        self.save()?;
        Ok(issued)
    }

    /// Issues an app certificate (the app's public key, subject CN = app_id).
    pub fn issue_app_cert(&self, app_id: &str, app_key: &PublicKey) -> anyhow::Result<Issued> {
        self.issue(leaf_name("Sandbox Merchant", app_id), app_key)
    }

    /// `alipay_root_cert_sn` of the chain.
    pub fn root_cert_sn(&self) -> String {
        self.read(|s| s.root_sn.clone())
    }

    /// The root chain PEM (RSA root, then EC root).
    pub fn root_chain_pem(&self) -> String {
        self.read(|s| s.stored.chain_pem.clone())
    }

    /// The Alipay certificate that signs answers now.
    pub fn current_alipay_cert(&self) -> Option<Issued> {
        self.read(|s| s.stored.alipay_certs.last().cloned())
    }

    /// Any Alipay certificate issued so far, by SN.
    pub fn alipay_cert(&self, sn: &str) -> Option<Issued> {
        self.read(|s| s.stored.alipay_certs.iter().find(|c| c.sn == sn).cloned())
    }

    /// Every Alipay certificate issued, oldest first.
    pub fn alipay_certs(&self) -> Vec<Issued> {
        self.read(|s| s.stored.alipay_certs.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_round_trip_through_hex() {
        let s = random_serial().unwrap();
        assert_eq!(unhex(&hex(&s)).unwrap(), s);
        assert!(s[0] & 0x80 == 0 && s[0] != 0);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }

    #[test]
    fn issued_certificates_verify_against_the_chain_and_the_root_sn_skips_the_ec_root() {
        let key = alipay::AppPrivateKey::generate().unwrap();
        let ca = Ca::load_or_create(None, &key.public_key()).unwrap();
        let chain = ca.root_chain_pem();
        let roots = alipay::cert::pem_certificates(&chain).unwrap();
        assert_eq!(roots.len(), 2);
        // Only the RSA root counts: one SN, no `_`.
        assert!(!ca.root_cert_sn().contains('_'));
        assert_eq!(
            ca.root_cert_sn(),
            alipay::cert::cert_sn_der(&roots[0]).unwrap()
        );
        let cert = ca.current_alipay_cert().unwrap();
        let der = alipay::cert::pem_certificates(&cert.pem).unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        alipay::cert::verify_issued_by(&der[0], &roots, now).unwrap();
        let in_cert =
            alipay::cert::cert_public_key(&der[0], alipay::KeyRole::AlipayPublicKey).unwrap();
        assert!(in_cert.same_key(&key.public_key()));
    }

    #[test]
    fn a_saved_ca_reloads_and_issues_under_the_same_root() {
        let dir = tempfile::tempdir().unwrap();
        let key = alipay::AppPrivateKey::generate().unwrap();
        let first = Ca::load_or_create(Some(dir.path()), &key.public_key()).unwrap();
        let again = Ca::load_or_create(Some(dir.path()), &key.public_key()).unwrap();
        assert_eq!(first.root_cert_sn(), again.root_cert_sn());
        assert_eq!(first.current_alipay_cert(), again.current_alipay_cert());
        let app = alipay::AppPrivateKey::generate().unwrap();
        let issued = again
            .issue_app_cert("2021000000000001", &app.public_key())
            .unwrap();
        let roots = alipay::cert::pem_certificates(&first.root_chain_pem()).unwrap();
        let der = alipay::cert::pem_certificates(&issued.pem).unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        alipay::cert::verify_issued_by(&der[0], &roots, now).unwrap();
        assert!(dir.path().join(ROOT_CHAIN_FILE).exists());
    }
}
