//! Independent implementations agree with the crate: `openssl` on signatures and key formats,
//! and the official Node SDK (`alipay-sdk` from npm, `interop/node`) on request signing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use alipay::api::trade::{GoodsDetail, Precreate, Query};
use alipay::sign::{SignScope, string_to_sign};
use alipay::{AppPrivateKey, CallOptions, Client, Config, PublicKey, SignType, Verification};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use time::OffsetDateTime;

use crate::support::{
    APP_ID, alipay_public_key, openssl, openssl_sha1_sign, repo_root, shared_openssl_key,
};

/// A request-like string with everything that has bitten signers: Chinese, JSON with `/` and
/// spaces, `&` and `=` inside a value.
const MESSAGE: &str = r#"app_id=2021000122671080&biz_content={"out_trade_no":"VM-0001_42","subject":"可口可乐 330ml","body":"a/b c","passback_params":"k=v&x=/y"}&charset=utf-8&method=alipay.trade.precreate&sign_type=RSA2&timestamp=2024-05-13 17:49:20&version=1.0"#;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write test file");
}

/// `openssl dgst -verify`, returning whether it printed `Verified OK` and exited 0.
fn openssl_verifies(dir: &Path, digest: &str, message: &[u8], sig: &[u8]) -> bool {
    write(dir, "msg.bin", message);
    write(dir, "sig.bin", sig);
    let out = Command::new("openssl")
        .args([
            "dgst",
            digest,
            "-verify",
            "pub.pem",
            "-signature",
            "sig.bin",
            "msg.bin",
        ])
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

#[test]
fn every_text_form_of_an_openssl_key_signs_byte_identically_to_openssl_dgst() {
    let key = shared_openssl_key();
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "key.pem", key.pkcs1_pem.as_bytes());
    let expected = openssl(
        dir.path(),
        &["dgst", "-sha256", "-sign", "key.pem"],
        MESSAGE.as_bytes(),
    );
    assert_eq!(expected.len(), 256, "RSA-2048 signatures are 256 bytes");
    for (form, text) in [
        ("PKCS#1 PEM", &key.pkcs1_pem),
        ("PKCS#8 PEM", &key.pkcs8_pem),
        ("PKCS#1 bare base64", &key.pkcs1_bare),
        ("PKCS#8 bare base64", &key.pkcs8_bare),
    ] {
        let ours = AppPrivateKey::from_text(text)
            .unwrap_or_else(|e| panic!("{form} should load, got: {e}"));
        assert_eq!(
            ours.sign_raw(MESSAGE.as_bytes()),
            expected,
            "{form}: signature differs from openssl's"
        );
        assert_eq!(
            ours.sign(MESSAGE.as_bytes()),
            B64.encode(&expected),
            "{form}"
        );
    }
}

#[test]
fn the_public_key_the_crate_derives_is_the_spki_openssl_derives() {
    let key = shared_openssl_key();
    let ours = AppPrivateKey::from_text(&key.pkcs8_bare).expect("key loads");
    assert_eq!(ours.public_key().to_spki_base64(), key.spki_bare);
}

#[test]
fn openssl_accepts_signatures_made_by_the_crate_and_refuses_them_on_other_text() {
    let key = shared_openssl_key();
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "pub.pem", key.spki_pem.as_bytes());
    let ours = AppPrivateKey::from_text(&key.pkcs1_bare).expect("key loads");
    let sig = ours.sign_raw(MESSAGE.as_bytes());
    assert!(openssl_verifies(
        dir.path(),
        "-sha256",
        MESSAGE.as_bytes(),
        &sig
    ));
    let other = MESSAGE.replace("330ml", "331ml");
    assert!(!openssl_verifies(
        dir.path(),
        "-sha256",
        other.as_bytes(),
        &sig
    ));
}

#[test]
fn the_crate_accepts_openssl_signatures_with_the_public_key_as_pem_or_bare_base64() {
    let key = shared_openssl_key();
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "key.pem", key.pkcs8_pem.as_bytes());
    let sig = B64.encode(openssl(
        dir.path(),
        &["dgst", "-sha256", "-sign", "key.pem"],
        MESSAGE.as_bytes(),
    ));
    for (form, text) in [("SPKI PEM", &key.spki_pem), ("bare base64", &key.spki_bare)] {
        let public = PublicKey::alipay_from_text(text)
            .unwrap_or_else(|e| panic!("{form} should load, got: {e}"));
        assert!(
            public.verify(SignType::Rsa2, MESSAGE.as_bytes(), &sig),
            "{form}: openssl's signature must verify"
        );
        assert!(
            !public.verify(SignType::Rsa2, b"something else", &sig),
            "{form}: the signature must not verify over other text"
        );
        assert!(
            !public.verify(SignType::Rsa, MESSAGE.as_bytes(), &sig),
            "{form}: a SHA-256 signature is not a SHA-1 one"
        );
    }
}

#[test]
fn a_legacy_sha1_signature_by_openssl_verifies_as_sign_type_rsa_and_not_as_rsa2() {
    let key = shared_openssl_key();
    let sig = openssl_sha1_sign(&key.pkcs1_pem, MESSAGE.as_bytes());
    let public = PublicKey::alipay_from_text(&key.spki_bare).expect("key loads");
    assert!(public.verify(SignType::Rsa, MESSAGE.as_bytes(), &sig));
    assert!(!public.verify(SignType::Rsa2, MESSAGE.as_bytes(), &sig));
    assert!(!public.verify(SignType::Rsa, b"app_id=1", &sig));
}

// ---- the official Node SDK ----

/// `interop/node`, after checking that its dependencies are installed.
fn node_dir() -> PathBuf {
    let dir = repo_root().join("interop/node");
    let sdk = dir.join("node_modules/alipay-sdk/package.json");
    if !sdk.is_file() {
        install_node_sdk(&dir);
    }
    assert!(
        sdk.is_file(),
        "the official Node SDK is still missing at {} after `npm ci`",
        sdk.display()
    );
    dir
}

/// Installs the pinned SDK from `package-lock.json` once, so `cargo test` alone works on a
/// fresh checkout (Node.js and npm must be installed). Tests run in parallel: a lock file
/// keeps two of them from running `npm ci` at the same time.
fn install_node_sdk(dir: &std::path::Path) {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if dir.join("node_modules/alipay-sdk/package.json").is_file() {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run npm (install Node.js and npm) to fetch the official Alipay SDK: {e}")
        });
    assert!(
        status.success(),
        "`npm ci --prefix {}` failed",
        dir.display()
    );
}

/// What `interop/node/sign.js` printed.
#[derive(Debug, serde::Deserialize)]
struct NodeSigned {
    sdk_version: String,
    string_to_sign: String,
    sign: String,
    params: BTreeMap<String, String>,
}

/// Signs `params` with the Node SDK and the PEM key at `key_pem`.
fn node_sign(key_pem: &Path, params: &BTreeMap<&str, &str>) -> NodeSigned {
    use std::io::Write as _;
    let dir = node_dir();
    let mut child = Command::new("node")
        .arg(dir.join("sign.js"))
        .arg(key_pem)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`node` must be installed (.ci/run installs it)");
    let input = serde_json::to_vec(params).expect("params to JSON");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&input)
        .expect("write params to node");
    let out = child.wait_with_output().expect("node runs");
    assert!(
        out.status.success(),
        "sign.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sign.js prints one JSON object")
}

fn fixed_time() -> OffsetDateTime {
    // 2024-05-13 17:49:20 Beijing time.
    OffsetDateTime::from_unix_timestamp(1_715_593_760).expect("valid timestamp")
}

fn vending_precreate() -> Precreate {
    let mut p = Precreate::new(
        "VM-0001_20240513174920_42",
        "3.50".parse().expect("amount"),
        "可口可乐 330ml 罐装 (冰)",
    )
    .terminal_id("VM-0001")
    .timeout_express("5m");
    p.body = Some("货道 A3 / 第 2 层; path a/b/c".into());
    p.store_id = Some("上海 静安 01".into());
    p.passback_params =
        Some(r#"{"machine":"VM-0001","url":"https://x.example/a/b?c=d&e=f"}"#.into());
    p.goods_detail = Some(vec![GoodsDetail {
        goods_id: "cola-330".into(),
        goods_name: "可乐".into(),
        quantity: 1,
        price: "3.50".parse().expect("amount"),
        goods_category: Some("饮料/碳酸".into()),
        body: Some(String::new()),
    }]);
    p
}

#[test]
fn the_official_node_sdk_builds_the_same_string_to_sign_and_signature_for_realistic_requests() {
    let key = shared_openssl_key();
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("key.pem");
    write(dir.path(), "key.pem", key.pkcs1_pem.as_bytes());

    let mut config = Config::new(APP_ID);
    config.notify_url = Some("https://vend.example.com/alipay/notify?from=a b".into());
    let app_key = AppPrivateKey::from_text(&key.pkcs8_bare).expect("key loads");
    let client = Client::new(
        config,
        app_key,
        Verification::PublicKey(alipay_public_key()),
    )
    .expect("client builds");

    let precreate = vending_precreate();
    let mut empty_body = vending_precreate();
    empty_body.body = Some(String::new());
    let mut requests = vec![
        (
            "precreate",
            client.sign_request(&precreate, &CallOptions::default(), fixed_time()),
        ),
        (
            "precreate with an empty body inside biz_content, for a merchant",
            client.sign_request(
                &empty_body,
                &CallOptions::for_merchant("202405BB3f2c8a9d0e7e4a6b8c1d2e3f4a5b6X42"),
                fixed_time(),
            ),
        ),
    ];
    requests.push((
        "query",
        client.sign_request(
            &Query::by_out_trade_no("VM-0001_20240513174920_42"),
            &CallOptions::default().notify_url(""),
            fixed_time(),
        ),
    ));

    for (name, signed) in requests {
        let signed = signed.unwrap_or_else(|f| panic!("{name}: not signed: {f}"));
        let ours_sign = signed
            .all()
            .find(|(k, _)| *k == "sign")
            .map(|(_, v)| v.to_owned())
            .expect("a sign parameter");
        let params: BTreeMap<&str, &str> = signed.all().filter(|(k, _)| *k != "sign").collect();
        let ours_string = string_to_sign(params.iter().map(|(k, v)| (*k, *v)), SignScope::Request);

        let node = node_sign(&key_path, &params);
        assert_eq!(node.sdk_version, "4.14.0", "the pinned SDK is installed");
        assert_eq!(node.string_to_sign, ours_string, "{name}: string to sign");
        assert_eq!(node.sign, ours_sign, "{name}: signature");
        let mut node_params = node.params;
        node_params.remove("sign");
        let ours_params: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(node_params, ours_params, "{name}: parameters sent");
    }
}

#[test]
fn the_node_sdk_signs_empty_values_but_the_crate_never_sends_one() {
    // The Node SDK keeps `k=` for an empty value; the Java SDK and the crate drop it. The two
    // only agree on the wire because the crate never sends an empty parameter.
    let key = shared_openssl_key();
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "key.pem", key.pkcs1_pem.as_bytes());
    let params = BTreeMap::from([
        ("app_id", APP_ID),
        ("method", "alipay.trade.query"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("version", "1.0"),
        ("timestamp", "2024-05-13 17:49:20"),
        ("notify_url", ""),
    ]);
    let node = node_sign(&dir.path().join("key.pem"), &params);
    assert!(node.string_to_sign.contains("&notify_url=&"));
    let ours = string_to_sign(params.iter().map(|(k, v)| (*k, *v)), SignScope::Request);
    assert!(!ours.contains("notify_url"));

    let app_key = AppPrivateKey::from_text(&key.pkcs1_pem).expect("key loads");
    let client = Client::new(
        Config::new(APP_ID),
        app_key,
        Verification::PublicKey(alipay_public_key()),
    )
    .expect("client builds");
    let signed = client
        .sign_request(
            &Query::by_out_trade_no("o1"),
            &CallOptions {
                notify_url: Some(String::new()),
                app_auth_token: Some(String::new()),
                ..CallOptions::default()
            },
            fixed_time(),
        )
        .expect("signed");
    for (k, v) in signed.all() {
        assert!(!v.is_empty(), "the crate sent an empty `{k}`");
    }
}

/// Asks the Node SDK's `checkNotifySignV2` about a notification body.
fn node_accepts_notification(alipay_public_pem: &str, body: &[u8]) -> bool {
    use std::io::Write as _;
    let dir = node_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    write(
        tmp.path(),
        "alipay_public.pem",
        alipay_public_pem.as_bytes(),
    );
    let mut child = Command::new("node")
        .arg(dir.join("verify-notify.js"))
        .arg(tmp.path().join("alipay_public.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`node` must be installed (.ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(body)
        .expect("write body to node");
    let out = child.wait_with_output().expect("node runs");
    assert!(
        out.status.success(),
        "verify-notify.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("verify-notify.js prints JSON");
    answer["check_notify_sign_v2"]
        .as_bool()
        .expect("a boolean answer")
}

#[test]
fn the_official_node_sdk_accepts_the_notifications_these_tests_build_and_so_does_the_crate() {
    use crate::support::{alipay_private_key, signed_notification};
    let params: Vec<(&str, &[u8])> = vec![
        ("notify_type", b"trade_status_sync"),
        ("notify_id", b"2024051300222174930046880512345678"),
        ("notify_time", b"2024-05-13 17:49:31"),
        ("charset", b"utf-8"),
        ("version", b"1.0"),
        ("app_id", APP_ID.as_bytes()),
        ("trade_no", b"2024051322001446880512345678"),
        ("out_trade_no", b"VM-0001_20240513174920_42"),
        ("trade_status", b"TRADE_SUCCESS"),
        ("total_amount", b"3.50"),
        ("subject", "可口可乐 330ml".as_bytes()),
        ("passback_params", br#"{"note":"a+b = c & d/e %"}"#),
        (
            "fund_bill_list",
            br#"[{"amount":"3.50","fundChannel":"ALIPAYACCOUNT"}]"#,
        ),
    ];
    let alipay = alipay_private_key();
    let pem = alipay.public_key().to_spki_pem();
    let body = signed_notification(&params, alipay);
    assert!(node_accepts_notification(&pem, &body));
    assert!(alipay::notify::parse(&body, &alipay_public_key()).is_ok());

    let text = String::from_utf8(body).expect("ASCII body");
    let forged = text.replacen("total_amount=3.50", "total_amount=0.01", 1);
    assert_ne!(forged, text);
    assert!(!node_accepts_notification(&pem, forged.as_bytes()));
    assert!(alipay::notify::parse(forged.as_bytes(), &alipay_public_key()).is_err());
}
