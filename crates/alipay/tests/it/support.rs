//! Shared helpers of the integration tests: keys, an independent string-to-sign and form
//! encoder (written here, not borrowed from the crate, so tests compare two implementations),
//! `openssl` on the command line, and a client whose "Alipay" key the tests hold.

#![allow(dead_code)] // each test module uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use alipay::{AppPrivateKey, Charset, Client, Config, PublicKey, Verification};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// The app id used throughout.
pub const APP_ID: &str = "2021000122671080";

/// An RSA-2048 key made by `openssl genrsa`, in every text form Alipay's tools produce.
#[derive(Debug)]
pub struct OpensslKey {
    /// PKCS#1 `RSA PRIVATE KEY` PEM.
    pub pkcs1_pem: String,
    /// PKCS#8 `PRIVATE KEY` PEM.
    pub pkcs8_pem: String,
    /// One line of bare base64 of the PKCS#1 DER ("non-Java" key tool output).
    pub pkcs1_bare: String,
    /// One line of bare base64 of the PKCS#8 DER ("Java" key tool output).
    pub pkcs8_bare: String,
    /// SubjectPublicKeyInfo `PUBLIC KEY` PEM.
    pub spki_pem: String,
    /// One line of bare base64 of the SPKI DER (as Alipay's console shows it).
    pub spki_bare: String,
}

/// Runs `openssl` with `args` in `dir`, feeding `stdin`; panics with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`openssl` must be installed (.ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin)
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Generates a key with `openssl genrsa` of the given size, in a fresh directory.
pub fn openssl_key(bits: u32) -> OpensslKey {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let bits = bits.to_string();
    // `-traditional` keeps OpenSSL 3 writing PKCS#1 (`RSA PRIVATE KEY`).
    let pkcs1_pem = openssl(d, &["genrsa", "-traditional", bits.as_str()], b"");
    let pkcs1_pem = String::from_utf8(pkcs1_pem).expect("PEM is text");
    assert!(pkcs1_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let pkcs8_pem = openssl(d, &["pkcs8", "-topk8", "-nocrypt"], pkcs1_pem.as_bytes());
    let pkcs1_der = openssl(
        d,
        &["rsa", "-traditional", "-outform", "DER"],
        pkcs1_pem.as_bytes(),
    );
    let pkcs8_der = openssl(
        d,
        &["pkcs8", "-topk8", "-nocrypt", "-outform", "DER"],
        pkcs1_pem.as_bytes(),
    );
    let spki_pem = openssl(d, &["rsa", "-pubout"], pkcs1_pem.as_bytes());
    let spki_der = openssl(
        d,
        &["rsa", "-pubout", "-outform", "DER"],
        pkcs1_pem.as_bytes(),
    );
    OpensslKey {
        pkcs8_pem: String::from_utf8(pkcs8_pem).expect("PEM is text"),
        pkcs1_bare: B64.encode(&pkcs1_der),
        pkcs8_bare: B64.encode(&pkcs8_der),
        spki_pem: String::from_utf8(spki_pem).expect("PEM is text"),
        spki_bare: B64.encode(&spki_der),
        pkcs1_pem,
    }
}

/// One RSA-2048 openssl key shared by the tests of this binary (generated once).
pub fn shared_openssl_key() -> &'static OpensslKey {
    static KEY: OnceLock<OpensslKey> = OnceLock::new();
    KEY.get_or_init(|| openssl_key(2048))
}

/// The key that plays Alipay: it signs answers and notifications; generated once.
pub fn alipay_private_key() -> &'static AppPrivateKey {
    static KEY: OnceLock<AppPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| AppPrivateKey::generate().expect("generate the Alipay key"))
}

/// The public half of [`alipay_private_key`], as the app loads it.
pub fn alipay_public_key() -> PublicKey {
    PublicKey::alipay_from_text(&alipay_private_key().public_key().to_spki_base64())
        .expect("Alipay public key loads")
}

/// Some other key, not Alipay's: signatures by it must never verify.
pub fn stranger_key() -> &'static AppPrivateKey {
    static KEY: OnceLock<AppPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| AppPrivateKey::generate().expect("generate a stranger key"))
}

/// A client of app [`APP_ID`] with a fresh app key, verifying with [`alipay_public_key`].
pub fn client(charset: Charset) -> Client {
    let mut config = Config::new(APP_ID);
    config.charset = charset;
    let key = AppPrivateKey::generate().expect("generate the app key");
    Client::new(config, key, Verification::PublicKey(alipay_public_key())).expect("client builds")
}

/// Runs a future to completion on a current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Alipay's string to sign, written independently of the crate: drop the excluded names and
/// empty values, sort by name bytewise, join `k=v` with `&`.
pub fn reference_string_to_sign(params: &[(&[u8], &[u8])], exclude: &[&str]) -> Vec<u8> {
    let mut kept: Vec<&(&[u8], &[u8])> = params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !exclude.iter().any(|e| e.as_bytes() == *k))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (i, (k, v)) in kept.into_iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
    }
    out
}

/// `application/x-www-form-urlencoded` as Java's `URLEncoder` writes it (space as `+`),
/// written independently of the crate.
pub fn reference_form_encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    fn component(out: &mut Vec<u8>, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b),
                b' ' => out.push(b'+'),
                _ => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
            }
        }
    }
    let mut out = Vec::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        component(&mut out, k);
        out.push(b'=');
        component(&mut out, v);
    }
    out
}

/// A notification as Alipay sends it: `params` (values in their charset's bytes) signed
/// rsaCheckV1-style (`sign` and `sign_type` left out) with `key`, `sign_type=RSA2` and `sign`
/// appended, form-encoded.
pub fn signed_notification(params: &[(&str, &[u8])], key: &AppPrivateKey) -> Vec<u8> {
    notification_with(params, |s| key.sign(s), "RSA2", &["sign", "sign_type"])
}

/// A notification signed by `sign` over the string built without the `exclude` names,
/// declaring `sign_type`.
pub fn notification_with(
    params: &[(&str, &[u8])],
    sign: impl Fn(&[u8]) -> String,
    sign_type: &str,
    exclude: &[&str],
) -> Vec<u8> {
    let mut pairs: Vec<(&[u8], &[u8])> = params.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
    pairs.push((b"sign_type", sign_type.as_bytes()));
    let signature = sign(&reference_string_to_sign(&pairs, exclude));
    pairs.push((b"sign", signature.as_bytes()));
    reference_form_encode(&pairs)
}

/// Signs `message` with SHA1withRSA (legacy `RSA`) using `openssl` and the PEM key.
pub fn openssl_sha1_sign(private_pem: &str, message: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key.pem"), private_pem).expect("write key");
    let sig = openssl(dir.path(), &["dgst", "-sha1", "-sign", "key.pem"], message);
    B64.encode(sig)
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
