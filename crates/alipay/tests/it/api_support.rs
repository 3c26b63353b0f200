//! Shared helpers for the API tests: keys, a client, signed gateway answers.

use std::sync::OnceLock;

use alipay::{ApiRequest, AppPrivateKey, CallOptions, Client, Config, Verification};
use time::OffsetDateTime;

pub const APP_ID: &str = "2021000122671080";

/// The app's key and the fake "Alipay" key, generated once per test binary.
pub fn keys() -> &'static (AppPrivateKey, AppPrivateKey) {
    static KEYS: OnceLock<(AppPrivateKey, AppPrivateKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            AppPrivateKey::generate().expect("app key"),
            AppPrivateKey::generate().expect("alipay key"),
        )
    })
}

pub fn app_key() -> &'static AppPrivateKey {
    &keys().0
}

pub fn alipay_key() -> &'static AppPrivateKey {
    &keys().1
}

/// A client against `gateway_url` that trusts [`alipay_key`].
pub fn client_with(mut config: Config) -> Client {
    config.app_id = APP_ID.into();
    Client::new(
        config,
        // AppPrivateKey is deliberately not Clone: reload the same key from its PKCS#8 text.
        AppPrivateKey::from_text(&app_key().to_pkcs8_base64().expect("pkcs8")).expect("reload"),
        Verification::PublicKey(alipay_key().public_key()),
    )
    .expect("client")
}

/// A client whose gateway is never contacted.
pub fn client() -> Client {
    client_with(Config::new(APP_ID))
}

/// The `biz_content` text the client would send for `request`.
pub fn biz_content<R: ApiRequest>(request: &R) -> String {
    let signed = client()
        .sign_request(request, &CallOptions::default(), OffsetDateTime::UNIX_EPOCH)
        .expect("request is valid");
    signed
        .body
        .iter()
        .find(|(k, _)| k == "biz_content")
        .map(|(_, v)| v.clone())
        .expect("biz_content in the body")
}

/// The `validate()` message of a request that must be refused.
pub fn refusal<R: ApiRequest>(request: &R) -> String {
    request.validate().expect_err("request must be refused")
}

/// A gateway answer to `method` with `inner` as the response object, signed by "Alipay".
pub fn signed_answer(method: &str, inner: &str) -> Vec<u8> {
    let key = method.replace('.', "_") + "_response";
    let sign = alipay_key().sign(inner.as_bytes());
    format!(r#"{{"{key}":{inner},"sign":"{sign}"}}"#).into_bytes()
}

/// An answer to `method` with no `sign`.
pub fn unsigned_answer(method: &str, inner: &str) -> Vec<u8> {
    let key = method.replace('.', "_") + "_response";
    format!(r#"{{"{key}":{inner}}}"#).into_bytes()
}

/// Verifies and classifies a signed answer to `R`.
pub async fn process<R: ApiRequest>(inner: &str) -> alipay::Outcome<R::Response> {
    client()
        .process::<R::Response>(R::METHOD, &signed_answer(R::METHOD, inner))
        .await
}
