//! Keys given wrong: every mistake is a `KeyError` that names the key and the problem, and no
//! key material ever reaches `Debug` output.

use alipay::{AppPrivateKey, Client, Config, KeyError, KeyRole, PublicKey, Verification};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::support::{APP_ID, openssl, openssl_key, shared_openssl_key};

/// Asserts `result` is a `KeyError` for `role` whose message says the role and contains
/// every one of `words` (case-insensitive).
fn assert_key_error<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, KeyError>,
    role: KeyRole,
    words: &[&str],
) {
    let err = match result {
        Ok(v) => panic!("{what}: accepted, got {v:?}"),
        Err(e) => e,
    };
    assert_eq!(err.role, role, "{what}: wrong role in {err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{role}: ")),
        "{what}: message does not name the key: {message}"
    );
    for word in words {
        assert!(
            message.to_lowercase().contains(&word.to_lowercase()),
            "{what}: message does not say {word:?}: {message}"
        );
    }
}

/// Every 20-character window of `secret` that appears in `text`.
fn leaked_windows(text: &str, secret: &str) -> Vec<String> {
    let secret: Vec<char> = secret.chars().filter(|c| !c.is_whitespace()).collect();
    secret
        .windows(20)
        .map(|w| w.iter().collect::<String>())
        .filter(|w| text.contains(w.as_str()))
        .collect()
}

#[test]
fn a_public_key_given_as_the_app_private_key_is_refused_as_a_public_key() {
    let key = shared_openssl_key();
    for (form, text) in [("PEM", &key.spki_pem), ("bare", &key.spki_bare)] {
        assert_key_error(
            form,
            AppPrivateKey::from_text(text),
            KeyRole::AppPrivateKey,
            &["public key", "private key is needed"],
        );
    }
}

#[test]
fn a_private_key_given_as_the_alipay_public_key_is_refused_as_a_private_key() {
    let key = shared_openssl_key();
    for (form, text) in [
        ("PKCS#1 PEM", &key.pkcs1_pem),
        ("PKCS#8 PEM", &key.pkcs8_pem),
        ("PKCS#1 bare", &key.pkcs1_bare),
        ("PKCS#8 bare", &key.pkcs8_bare),
    ] {
        assert_key_error(
            form,
            PublicKey::alipay_from_text(text),
            KeyRole::AlipayPublicKey,
            &["private key", "public key is needed"],
        );
    }
}

#[test]
fn a_truncated_private_key_is_refused_as_truncated_in_pem_and_bare_form() {
    let key = shared_openssl_key();
    // PEM cut in the middle of its body, END line lost.
    let cut_pem = &key.pkcs8_pem[..key.pkcs8_pem.len() / 2];
    assert_key_error(
        "PEM without END line",
        AppPrivateKey::from_text(cut_pem),
        KeyRole::AppPrivateKey,
        &["truncated"],
    );
    // PEM whose body lost its second half but kept the END line (valid base64, short DER).
    let lines: Vec<&str> = key.pkcs1_pem.lines().collect();
    let kept = lines.len() / 2;
    let short_pem = format!(
        "{}\n{}\n",
        lines[..kept].join("\n"),
        lines.last().expect("END line")
    );
    assert_key_error(
        "PEM body cut",
        AppPrivateKey::from_text(&short_pem),
        KeyRole::AppPrivateKey,
        &["truncated"],
    );
    // Bare base64 cut on a 4-character boundary: still base64, but half a key.
    for (form, text) in [("PKCS#8", &key.pkcs8_bare), ("PKCS#1", &key.pkcs1_bare)] {
        let cut = &text[..(text.len() / 2) & !3];
        assert_key_error(
            form,
            AppPrivateKey::from_text(cut),
            KeyRole::AppPrivateKey,
            &["truncated"],
        );
    }
}

#[test]
fn a_truncated_public_key_is_refused_as_truncated_in_pem_and_bare_form() {
    let key = shared_openssl_key();
    let cut = &key.spki_bare[..(key.spki_bare.len() / 2) & !3];
    assert_key_error(
        "bare",
        PublicKey::alipay_from_text(cut),
        KeyRole::AlipayPublicKey,
        &["truncated"],
    );
    let cut_pem = &key.spki_pem[..key.spki_pem.len() - 30];
    assert_key_error(
        "PEM",
        PublicKey::alipay_from_text(cut_pem),
        KeyRole::AlipayPublicKey,
        &["truncated"],
    );
}

#[test]
fn garbage_that_is_not_base64_is_refused_as_not_base64() {
    for text in [
        "not a key!",
        "MIIBIjANBg***",
        "-----BEGIN PUBLIC KEY-----\n@@@@\n-----END PUBLIC KEY-----",
    ] {
        assert_key_error(
            text,
            PublicKey::alipay_from_text(text),
            KeyRole::AlipayPublicKey,
            &["base64"],
        );
    }
    assert_key_error(
        "private",
        AppPrivateKey::from_text("MIIEvQ%%%%"),
        KeyRole::AppPrivateKey,
        &["base64"],
    );
}

#[test]
fn valid_base64_of_random_bytes_is_refused_as_not_a_key() {
    let junk = B64.encode([0x30u8, 0x82, 0x01, 0x22, 7, 7, 7, 7, 7, 7, 7, 7]);
    assert_key_error(
        "public",
        PublicKey::alipay_from_text(&junk),
        KeyRole::AlipayPublicKey,
        &["not an RSA public key"],
    );
    assert_key_error(
        "private",
        AppPrivateKey::from_text(&junk),
        KeyRole::AppPrivateKey,
        &["neither"],
    );
}

#[test]
fn an_empty_or_blank_key_is_refused_as_empty() {
    for text in ["", "   \n\t "] {
        assert_key_error(
            "private",
            AppPrivateKey::from_text(text),
            KeyRole::AppPrivateKey,
            &["empty"],
        );
        assert_key_error(
            "public",
            PublicKey::alipay_from_text(text),
            KeyRole::AlipayPublicKey,
            &["empty"],
        );
    }
}

#[test]
fn a_1024_bit_key_is_refused_with_its_size_and_the_minimum() {
    let small = openssl_key(1024);
    for (form, text) in [
        ("PKCS#1 PEM", &small.pkcs1_pem),
        ("PKCS#8 PEM", &small.pkcs8_pem),
        ("PKCS#1 bare", &small.pkcs1_bare),
        ("PKCS#8 bare", &small.pkcs8_bare),
    ] {
        assert_key_error(
            form,
            AppPrivateKey::from_text(text),
            KeyRole::AppPrivateKey,
            &["fewer than 2048 bits", "at least 2048"],
        );
    }
    for (form, text) in [("PEM", &small.spki_pem), ("bare", &small.spki_bare)] {
        assert_key_error(
            form,
            PublicKey::alipay_from_text(text),
            KeyRole::AlipayPublicKey,
            &["1024 bits", "at least 2048"],
        );
    }
}

#[test]
fn a_certificate_given_as_a_key_is_refused_as_a_certificate() {
    let key = shared_openssl_key();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key.pem"), &key.pkcs1_pem).expect("write key");
    let cert_pem = openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-subj",
            "/CN=OpenVend test",
            "-days",
            "1",
        ],
        b"",
    );
    let cert_pem = String::from_utf8(cert_pem).expect("PEM is text");
    let cert_der = openssl(
        dir.path(),
        &["x509", "-outform", "DER"],
        cert_pem.as_bytes(),
    );
    let cert_bare = B64.encode(cert_der);
    for (form, text) in [("PEM", &cert_pem), ("bare", &cert_bare)] {
        assert_key_error(
            form,
            AppPrivateKey::from_text(text),
            KeyRole::AppPrivateKey,
            &["certificate"],
        );
        assert_key_error(
            form,
            PublicKey::alipay_from_text(text),
            KeyRole::AlipayPublicKey,
            &["certificate"],
        );
    }
}

#[test]
fn debug_output_of_keys_and_clients_holds_no_key_material() {
    let key = shared_openssl_key();
    let secrets = [&key.pkcs1_bare, &key.pkcs8_bare, &key.spki_bare];
    let private = AppPrivateKey::from_text(&key.pkcs8_pem).expect("key loads");
    let public = PublicKey::alipay_from_text(&key.spki_pem).expect("key loads");
    let alipay = PublicKey::alipay_from_text(
        &AppPrivateKey::generate()
            .expect("generate")
            .public_key()
            .to_spki_base64(),
    )
    .expect("key loads");
    let client = Client::new(
        Config::new(APP_ID),
        AppPrivateKey::from_text(&key.pkcs1_bare).expect("key loads"),
        Verification::PublicKey(alipay),
    )
    .expect("client builds");
    let errors = [
        PublicKey::alipay_from_text(&key.pkcs8_bare).expect_err("private as public"),
        AppPrivateKey::from_text(&key.spki_bare).expect_err("public as private"),
    ];
    let mut outputs = vec![
        format!("{private:?}"),
        format!("{private:#?}"),
        format!("{public:?}"),
        format!("{client:?}"),
        format!("{client:#?}"),
    ];
    outputs.extend(errors.iter().map(|e| format!("{e:?} {e}")));
    // The check can fail: a text that does hold the key is caught.
    assert!(!leaked_windows(&format!("x{}y", key.pkcs8_bare), &key.pkcs8_bare).is_empty());
    for output in &outputs {
        for secret in secrets {
            let leaked = leaked_windows(output, secret);
            assert!(leaked.is_empty(), "key material {leaked:?} in {output}");
        }
    }
    assert!(format!("{private:?}").contains(private.fingerprint()));
}

#[test]
fn the_client_refuses_the_apps_own_public_key_as_the_alipay_key() {
    let app_key = AppPrivateKey::generate().expect("generate");
    let own_public = PublicKey::alipay_from_text(&app_key.public_key().to_spki_pem())
        .expect("the key itself is valid");
    let err = Client::new(
        Config::new(APP_ID),
        app_key,
        Verification::PublicKey(own_public),
    )
    .expect_err("the app's own public key must be refused");
    assert!(
        err.to_string().contains("app's own public key"),
        "unclear message: {err}"
    );
}
