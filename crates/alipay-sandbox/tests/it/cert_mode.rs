//! Certificate mode (公钥证书): the sandbox is its own CA, issues app certificates, checks
//! `app_cert_sn` / `alipay_root_cert_sn`, signs answers with an Alipay certificate whose SN it
//! names, serves `alipay.open.app.alipaycert.download`, rotates, and keeps it all on disk.

use alipay::api::trade::{Precreate, Query};
use alipay::cert::{CertMode, cert_sn_der, pem_certificates, root_cert_sn, verify_issued_by};
use alipay::{AppPrivateKey, CallOptions, Client, Config, Outcome, TradeStatus, Verification};
use alipay_sandbox::config::SandboxConfig;
use alipay_sandbox::{Ctx, Sandbox};
use base64::Engine as _;
use serde_json::{Value, json};
use std::sync::Arc;

use crate::support::{TestSandbox, spawn_sandbox};

/// What a cert-mode registration hands back.
struct CertApp {
    app_id: String,
    key: String,
    certs: Value,
}

impl CertApp {
    fn pem(&self, field: &str) -> &str {
        self.certs[field].as_str().unwrap()
    }

    /// A real client in certificate mode against `gateway_url`, with the given PEMs.
    fn client_with(
        &self,
        gateway_url: &str,
        app_cert: &str,
        alipay_cert: &str,
        chain: &str,
    ) -> Client {
        let mut config = Config::new(&self.app_id);
        config.gateway_url = gateway_url.to_owned();
        config.retry = alipay::retry::RetryPolicy::NONE;
        let mode = CertMode::new(app_cert, alipay_cert, chain).unwrap();
        let key = AppPrivateKey::from_text(&self.key).unwrap();
        Client::new(config, key, Verification::Certificates(mode)).unwrap()
    }

    fn client(&self, gateway_url: &str) -> Client {
        self.client_with(
            gateway_url,
            self.pem("app_cert"),
            self.pem("alipay_cert"),
            self.pem("alipay_root_cert"),
        )
    }
}

async fn register_cert_app(base_url: &str, app_id: &str) -> CertApp {
    let key = AppPrivateKey::generate().unwrap();
    let answer: Value = reqwest::Client::new()
        .post(format!("{base_url}/control/apps"))
        .json(&json!({
            "app_id": app_id,
            "public_key": key.public_key().to_spki_base64(),
            "key_mode": "cert",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["key_mode"], "cert", "{answer}");
    CertApp {
        app_id: app_id.to_owned(),
        key: key.to_pkcs8_base64().unwrap(),
        certs: answer,
    }
}

async fn precreate(
    client: &Client,
    out_trade_no: &str,
) -> Outcome<alipay::api::trade::PrecreateResponse> {
    let order = Precreate::new(out_trade_no, "3.50".parse().unwrap(), "Cola");
    client.execute(&order, &CallOptions::default()).await
}

fn failure_code<T: std::fmt::Debug>(outcome: Outcome<T>) -> String {
    match outcome {
        Outcome::Failure(f) => f.sub_code().to_owned(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_cert_mode_app_pays_and_queries_with_the_real_client_in_certificate_mode() {
    let sb = spawn_sandbox().await;
    let app = register_cert_app(&sb.base_url, "2021000000000701").await;
    // The registration answer carries everything an app configures, consistent with itself.
    assert_eq!(
        app.certs["app_cert_sn"].as_str().unwrap(),
        alipay::cert::cert_sn(app.pem("app_cert")).unwrap()
    );
    assert_eq!(
        app.certs["alipay_root_cert_sn"].as_str().unwrap(),
        root_cert_sn(app.pem("alipay_root_cert")).unwrap()
    );
    let client = app.client(&sb.gateway_url);

    let created = match precreate(&client, "cert-order-1").await {
        Outcome::Success(r) => r,
        other => panic!("precreate: {other:?}"),
    };
    let buyer = sb.buyer("100.00").await;
    let paid = sb
        .post(
            "/control/qr/pay",
            json!({ "qr_code": created.qr_code, "buyer_id": buyer }),
        )
        .await;
    assert_eq!(paid["trade_status"], "TRADE_SUCCESS", "{paid}");
    match client
        .execute(
            &Query::by_out_trade_no("cert-order-1"),
            &CallOptions::default(),
        )
        .await
    {
        Outcome::Success(q) => assert_eq!(q.trade_status, TradeStatus::TradeSuccess),
        other => panic!("query: {other:?}"),
    }

    // On the wire: `alipay_cert_sn` sits next to `sign`.
    let signed = client
        .sign_request(
            &Query::by_out_trade_no("cert-order-1"),
            &CallOptions::default(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let body = raw_post(&sb.gateway_url, &signed).await;
    let sn = app.certs["alipay_cert_sn"].as_str().unwrap();
    assert!(
        body.contains(&format!("}},\"alipay_cert_sn\":\"{sn}\",\"sign\":\"")),
        "{body}"
    );
}

/// Posts a signed request as the SDKs do and returns the answer text.
async fn raw_post(gateway_url: &str, signed: &alipay::SignedRequest) -> String {
    let form: Vec<String> = signed
        .all()
        .map(|(k, v)| {
            format!(
                "{}={}",
                alipay::form::encode_component(k.as_bytes()),
                alipay::form::encode_component(v.as_bytes())
            )
        })
        .collect();
    reqwest::Client::new()
        .post(gateway_url)
        .header(
            "content-type",
            "application/x-www-form-urlencoded;charset=utf-8",
        )
        .body(form.join("&"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_missing_or_wrong_app_cert_sn_is_refused() {
    let sb = spawn_sandbox().await;
    let app = register_cert_app(&sb.base_url, "2021000000000702").await;
    let other = register_cert_app(&sb.base_url, "2021000000000703").await;

    // Same key, public-key mode: no SNs are sent.
    let alipay_key = alipay::PublicKey::alipay_from_text(
        sb.get("/control/info").await["alipay_public_key"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let mut config = Config::new(&app.app_id);
    config.gateway_url = sb.gateway_url.clone();
    config.retry = alipay::retry::RetryPolicy::NONE;
    let plain = Client::new(
        config,
        AppPrivateKey::from_text(&app.key).unwrap(),
        Verification::PublicKey(alipay_key),
    )
    .unwrap();
    let signed = plain
        .sign_request(
            &Query::by_out_trade_no("x"),
            &CallOptions::default(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let body = raw_post(&sb.gateway_url, &signed).await;
    assert!(body.contains("\"code\":\"40002\""), "{body}");
    assert!(
        body.contains("\"sub_code\":\"isv.missing-app-cert-sn\""),
        "{body}"
    );

    // Another app's certificate: the SN names no certificate of this app.
    let wrong = app.client_with(
        &sb.gateway_url,
        other.pem("app_cert"),
        app.pem("alipay_cert"),
        app.pem("alipay_root_cert"),
    );
    assert_eq!(
        failure_code(precreate(&wrong, "cert-order-2").await),
        "isv.app-cert-not-exist"
    );
    assert!(
        sb.ctx
            .store()
            .trade_by_out_no(&app.app_id, "cert-order-2")
            .is_none()
    );
}

#[tokio::test]
async fn a_root_chain_of_another_ca_is_refused() {
    let sb = spawn_sandbox().await;
    let foreign = spawn_sandbox().await;
    let app = register_cert_app(&sb.base_url, "2021000000000704").await;
    let foreign_chain = reqwest::get(format!(
        "{}/control/ca/alipayRootCert.crt",
        foreign.base_url
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let client = app.client_with(
        &sb.gateway_url,
        app.pem("app_cert"),
        app.pem("alipay_cert"),
        &foreign_chain,
    );
    assert_eq!(
        failure_code(precreate(&client, "cert-order-3").await),
        "isv.invalid-alipay-root-cert-sn"
    );
}

#[tokio::test]
async fn the_served_root_chain_holds_an_ec_root_that_the_root_sn_skips() {
    let sb = spawn_sandbox().await;
    let chain = reqwest::get(format!("{}/control/ca/alipayRootCert.crt", sb.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ders = pem_certificates(&chain).unwrap();
    assert_eq!(ders.len(), 2);
    // ecdsa-with-SHA256 (1.2.840.10045.4.3.2) signs the second root.
    let ecdsa_sha256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    assert!(ders[1].windows(8).any(|w| w == ecdsa_sha256));
    let root_sn = root_cert_sn(&chain).unwrap();
    assert_eq!(root_sn, cert_sn_der(&ders[0]).unwrap());
    assert!(!root_sn.contains('_'));
    assert_eq!(sb.get("/control/ca").await["alipay_root_cert_sn"], root_sn);
}

#[derive(Debug, serde::Serialize)]
struct CertDownload {
    alipay_cert_sn: String,
}

impl alipay::ApiRequest for CertDownload {
    const METHOD: &'static str = "alipay.open.app.alipaycert.download";
    type Response = Value;
}

#[tokio::test]
async fn after_rotation_the_client_downloads_the_new_certificate_and_verifies_it() {
    let sb = spawn_sandbox().await;
    let app = register_cert_app(&sb.base_url, "2021000000000705").await;
    let client = app.client(&sb.gateway_url);
    assert!(matches!(
        precreate(&client, "rot-1").await,
        Outcome::Success(_)
    ));

    let old_sn = app.certs["alipay_cert_sn"].as_str().unwrap().to_owned();
    let rotated = sb.post("/control/ca/rotate", json!({})).await;
    let new_sn = rotated["alipay_cert_sn"].as_str().unwrap().to_owned();
    assert_ne!(new_sn, old_sn);
    assert_eq!(rotated["alipay_cert_sns"], json!([old_sn, new_sn]));

    // The client only knows the old certificate: it must fetch the new one, check it against
    // the root chain, and then accept the answer.
    match precreate(&client, "rot-2").await {
        Outcome::Success(r) => assert_eq!(r.out_trade_no, "rot-2"),
        other => panic!("after rotation: {other:?}"),
    }

    // The download itself, checked by hand.
    let answer = match client
        .execute(
            &CertDownload {
                alipay_cert_sn: new_sn.clone(),
            },
            &CallOptions::default(),
        )
        .await
    {
        Outcome::Success(v) => v,
        other => panic!("download: {other:?}"),
    };
    let pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(answer["alipay_cert_content"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let der = &pem_certificates(&pem).unwrap()[0];
    assert_eq!(cert_sn_der(der).unwrap(), new_sn);
    let roots = pem_certificates(app.pem("alipay_root_cert")).unwrap();
    verify_issued_by(
        der,
        &roots,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();

    let unknown = client
        .execute(
            &CertDownload {
                alipay_cert_sn: "0".repeat(32),
            },
            &CallOptions::default(),
        )
        .await;
    assert_eq!(failure_code(unknown), "isv.alipay-cert-not-exist");
}

struct Running {
    ctx: Arc<Ctx>,
    base_url: String,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(dir: &std::path::Path) -> Running {
    let config = SandboxConfig {
        data_dir: Some(dir.to_owned()),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::build(config, "127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", sandbox.addr());
    let ctx = sandbox.ctx();
    let stop = sandbox.shutdown_token();
    let task = tokio::spawn(sandbox.run_until_stopped());
    Running {
        ctx,
        base_url,
        stop,
        task,
    }
}

#[tokio::test]
async fn certificates_survive_a_restart_with_the_same_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path()).await;
    let app = register_cert_app(&first.base_url, "2021000000000706").await;
    let ca_before = first.ctx.ca.root_cert_sn();
    first.stop.cancel();
    first.task.await.unwrap().unwrap();

    let second = start(dir.path()).await;
    assert_eq!(second.ctx.ca.root_cert_sn(), ca_before);
    assert_eq!(
        second.ctx.ca.current_alipay_cert().unwrap().sn,
        app.certs["alipay_cert_sn"].as_str().unwrap()
    );
    let certs: Value = reqwest::get(format!(
        "{}/control/apps/{}/certs",
        second.base_url, app.app_id
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(certs["app_cert"], app.certs["app_cert"]);
    // The files an app was given before the restart still work, and a new certificate is
    // issued under the same root.
    let client = app.client(&format!("{}/gateway.do", second.base_url));
    assert!(matches!(
        precreate(&client, "restart-1").await,
        Outcome::Success(_)
    ));
    let later = register_cert_app(&second.base_url, "2021000000000707").await;
    assert_eq!(
        later.certs["alipay_root_cert"],
        app.certs["alipay_root_cert"]
    );
    second.stop.cancel();
    second.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn public_key_mode_apps_get_no_cert_sn_and_no_certificates() {
    let sb: TestSandbox = spawn_sandbox().await;
    let app = sb.app("2021000000000708").await;
    let resp = reqwest::get(format!("{}/control/apps/{}/certs", sb.base_url, app.app_id))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let signed = app
        .client
        .sign_request(
            &Query::by_out_trade_no("x"),
            &CallOptions::default(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let body = raw_post(&sb.gateway_url, &signed).await;
    assert!(!body.contains("alipay_cert_sn"), "{body}");
}

#[tokio::test]
async fn a_config_file_app_in_cert_apps_keeps_its_certificate_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let key = AppPrivateKey::generate().unwrap();
    let config: SandboxConfig = toml::from_str(&format!(
        r#"
        data_dir = "{}"
        cert_apps = ["2021000000000709"]
        [[apps]]
        app_id = "2021000000000709"
        public_key = "{}"
        "#,
        dir.path().display(),
        key.public_key().to_spki_base64()
    ))
    .unwrap();
    let mut sns = Vec::new();
    for _ in 0..2 {
        let sandbox = Sandbox::build(config.clone(), "127.0.0.1:0").await.unwrap();
        let app = sandbox.ctx().app("2021000000000709").unwrap();
        match app.key_mode {
            alipay_sandbox::model::KeyMode::Certificate { app_cert_sn, .. } => {
                sns.push(app_cert_sn)
            }
            other => panic!("not in certificate mode: {other:?}"),
        }
    }
    assert_eq!(sns[0], sns[1]);
}
