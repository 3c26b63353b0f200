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

// ---- Generic requests for methods the `alipay` crate has no typed request for yet. ----

/// Declares one request type per gateway method: the `biz_content` is a `serde_json::Value`
/// sent as is, and the answer is read back as a `Value`, over real HTTP with real signatures.
macro_rules! raw_requests {
    ($($name:ident => $method:literal),* $(,)?) => {$(
        #[derive(Debug, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(pub Value);
        impl alipay::ApiRequest for $name {
            const METHOD: &'static str = $method;
            type Response = Value;
        }
    )*};
}

raw_requests! {
    TradePay => "alipay.trade.pay",
    TradeCancel => "alipay.trade.cancel",
    TradeClose => "alipay.trade.close",
    TradeRefund => "alipay.trade.refund",
    RefundQuery => "alipay.trade.fastpay.refund.query",
    TradeQuery => "alipay.trade.query",
    TradePrecreate => "alipay.trade.precreate",
    TradeCreate => "alipay.trade.create",
    RelationBind => "alipay.trade.royalty.relation.bind",
    RelationUnbind => "alipay.trade.royalty.relation.unbind",
    RelationBatchQuery => "alipay.trade.royalty.relation.batchquery",
    OrderSettle => "alipay.trade.order.settle",
    SettleQuery => "alipay.trade.order.settle.query",
    OnSettleQuery => "alipay.trade.order.onsettle.query",
    VoucherCreate => "alipay.fund.auth.order.voucher.create",
    AppFreeze => "alipay.fund.auth.order.app.freeze",
    Unfreeze => "alipay.fund.auth.order.unfreeze",
    FundDetailQuery => "alipay.fund.auth.operation.detail.query",
    AgreementQuery => "alipay.user.agreement.query",
    SmilepayInitialize => "zoloz.authentication.smilepay.initialize",
    FtokenQuery => "zoloz.authentication.customer.ftoken.query",
}

/// `alipay.system.oauth.token`: top-level parameters, no `biz_content`.
#[derive(Debug, serde::Serialize)]
pub struct OauthToken {
    #[serde(skip)]
    pub grant_type: &'static str,
    #[serde(skip)]
    pub code: Option<String>,
    #[serde(skip)]
    pub refresh_token: Option<String>,
}

impl alipay::ApiRequest for OauthToken {
    const METHOD: &'static str = "alipay.system.oauth.token";
    type Response = Value;
    const HAS_BIZ_CONTENT: bool = false;

    fn top_level_params(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![("grant_type", self.grant_type.to_owned())];
        if let Some(c) = &self.code {
            p.push(("code", c.clone()));
        }
        if let Some(r) = &self.refresh_token {
            p.push(("refresh_token", r.clone()));
        }
        p
    }
}

/// `alipay.user.info.share`: no `biz_content`; the token goes in `CallOptions::auth_token`.
#[derive(Debug, serde::Serialize)]
pub struct UserInfoShare;

impl alipay::ApiRequest for UserInfoShare {
    const METHOD: &'static str = "alipay.user.info.share";
    type Response = Value;
    const HAS_BIZ_CONTENT: bool = false;
}

impl TestApp {
    /// Sends a request with default options.
    pub async fn call<R: alipay::ApiRequest<Response = Value>>(
        &self,
        request: &R,
    ) -> alipay::Outcome<Value> {
        self.client
            .execute(request, &alipay::CallOptions::default())
            .await
    }

    /// Sends a request that must succeed and returns the answer.
    pub async fn ok<R: alipay::ApiRequest<Response = Value>>(&self, request: &R) -> Value {
        match self.call(request).await {
            alipay::Outcome::Success(v) => v,
            other => panic!("{} failed: {other:?}", R::METHOD),
        }
    }

    /// Sends a request that must fail and returns its sub_code.
    pub async fn fails<R: alipay::ApiRequest<Response = Value>>(&self, request: &R) -> String {
        match self.call(request).await {
            alipay::Outcome::Failure(f) => f.sub_code().to_owned(),
            other => panic!("{} was expected to fail: {other:?}", R::METHOD),
        }
    }
}

impl TestSandbox {
    /// A fresh payment code of a buyer.
    pub async fn payment_code(&self, buyer: &str) -> String {
        let v = self
            .post(&format!("/control/buyers/{buyer}/payment_code"), json!({}))
            .await;
        v["auth_code"].as_str().expect("auth_code").to_owned()
    }

    /// A buyer's balance in fen.
    pub async fn balance_fen(&self, buyer: &str) -> i64 {
        self.get(&format!("/control/buyers/{buyer}")).await["balance_fen"]
            .as_i64()
            .expect("balance_fen")
    }

    /// Queued notifications of an app, as the control API lists them.
    pub async fn notifications(&self, app_id: &str) -> Vec<Value> {
        self.get(&format!("/control/notifications?app_id={app_id}"))
            .await["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Moves the sandbox clock forward.
    pub async fn advance(&self, seconds: i64) {
        self.post("/control/clock/advance", json!({ "seconds": seconds }))
            .await;
    }
}
