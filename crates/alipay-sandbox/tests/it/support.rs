//! Test helpers: a sandbox on port 0 and a client registered with it.

#![allow(dead_code)]

use std::sync::Arc;

use alipay::{AppPrivateKey, Client, Config, PublicKey, Verification};
use alipay_sandbox::config::SandboxConfig;
use alipay_sandbox::{AppConfig, Ctx, Sandbox};
use serde_json::{Value, json};

pub struct TestSandbox {
    pub base_url: String,
    pub gateway_url: String,
    pub ctx: Arc<Ctx>,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub http: reqwest::Client,
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_sandbox() -> TestSandbox {
    spawn_sandbox_with(SandboxConfig::default()).await
}

pub async fn spawn_sandbox_with(config: SandboxConfig) -> TestSandbox {
    let sandbox = Sandbox::build(config, "127.0.0.1:0")
        .await
        .expect("sandbox builds");
    let base_url = format!("http://{}", sandbox.addr());
    let gateway_url = sandbox.gateway_url();
    let ctx = sandbox.ctx();
    let shutdown = sandbox.shutdown_token();
    tokio::spawn(sandbox.run_until_stopped());
    TestSandbox {
        base_url,
        gateway_url,
        ctx,
        shutdown,
        http: reqwest::Client::new(),
    }
}

pub struct TestApp {
    pub app_id: String,
    pub seller_pid: String,
    pub client: Client,
    pub key_text: String,
}

impl TestSandbox {
    /// Registers a fresh app with a new key pair and returns a client for it.
    pub async fn app(&self, app_id: &str) -> TestApp {
        self.app_with(app_id, json!({})).await
    }

    pub async fn app_with(&self, app_id: &str, extra: Value) -> TestApp {
        let key = AppPrivateKey::generate().expect("key");
        let key_text = key.to_pkcs8_base64().expect("pkcs8");
        let mut body = json!({ "app_id": app_id, "public_key": key.public_key().to_spki_base64() });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let reg: AppConfig = serde_json::from_value(body).expect("app config");
        let answer = self
            .post("/control/apps", serde_json::to_value(&reg).expect("json"))
            .await;
        let seller_pid = answer["seller_pid"].as_str().expect("pid").to_owned();
        let alipay_key =
            PublicKey::alipay_from_text(answer["alipay_public_key"].as_str().expect("key"))
                .expect("alipay key");
        let mut config = Config::new(app_id);
        config.gateway_url = self.gateway_url.clone();
        config.retry = alipay::retry::RetryPolicy::NONE;
        let client = Client::new(config, key, Verification::PublicKey(alipay_key)).expect("client");
        TestApp {
            app_id: app_id.to_owned(),
            seller_pid,
            client,
            key_text,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(&body)
            .send()
            .await
            .expect("request");
        resp.json().await.expect("json answer")
    }

    pub async fn post_status(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("request");
        resp.json().await.expect("json answer")
    }

    /// Creates a buyer with a balance in yuan and returns its user id.
    pub async fn buyer(&self, balance: &str) -> String {
        let b = self
            .post("/control/buyers", json!({ "balance": balance }))
            .await;
        b["user_id"].as_str().expect("user_id").to_owned()
    }
}
