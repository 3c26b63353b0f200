//! A sandbox with a data folder keeps everything across a restart: its Alipay key, apps,
//! buyers, trades, refunds, notifications (with their schedule), the id sequence and the clock.

#![allow(clippy::unwrap_used)] // tests may unwrap, helpers included

use alipay::api::trade::{Precreate, Query};
use alipay::{CallOptions, Client, TradeStatus, Verification};
use alipay_sandbox::config::SandboxConfig;
use alipay_sandbox::model::Refund;
use alipay_sandbox::{Ctx, Sandbox};
use serde_json::{Value, json};
use std::sync::Arc;

use crate::receiver::{Receiver, eventually};

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

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.base_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        reqwest::Client::new()
            .post(format!("{}{path}", self.base_url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn client(&self, app_id: &str, key: &alipay::AppPrivateKey) -> Client {
        let mut config = alipay::Config::new(app_id);
        config.gateway_url = format!("{}/gateway.do", self.base_url);
        config.retry = alipay::retry::RetryPolicy::NONE;
        let key = alipay::AppPrivateKey::from_text(&key.to_pkcs8_base64().unwrap()).unwrap();
        Client::new(
            config,
            key,
            Verification::PublicKey(self.ctx.public_key.clone()),
        )
        .unwrap()
    }

    async fn notification(&self, app_id: &str) -> Value {
        self.get(&format!("/control/notifications?app_id={app_id}"))
            .await["notifications"][0]
            .clone()
    }
}

#[tokio::test]
async fn a_restarted_sandbox_finds_everything_in_its_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let app_id = "2021000000000401";
    let app_key = alipay::AppPrivateKey::generate().unwrap();
    // Answers "fail" once: the notification is still pending when the sandbox stops.
    let receiver = Receiver::start(&["fail"], "success").await;

    let first = start(dir.path()).await;
    let alipay_key = first.ctx.public_key.to_spki_base64();
    first
        .post(
            "/control/apps",
            json!({ "app_id": app_id, "public_key": app_key.public_key().to_spki_base64(), "notify_url": receiver.url }),
        )
        .await;
    let buyer = first
        .post("/control/buyers", json!({ "balance": "30.00" }))
        .await["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = first.client(app_id, &app_key);
    let pre = client
        .execute(
            &Precreate::new("keep_1", "8.00".parse().unwrap(), "便当"),
            &CallOptions::default(),
        )
        .await
        .success()
        .unwrap();
    let paid = first
        .post(
            "/control/qr/pay",
            json!({ "qr_code": pre.qr_code, "buyer_id": buyer }),
        )
        .await;
    let trade_no = paid["trade_no"].as_str().unwrap().to_owned();
    {
        // The refund API lives on another branch; the record is what persistence is about.
        let mut store = first.ctx.store();
        store.put_refund(Refund {
            trade_no: trade_no.clone(),
            out_trade_no: "keep_1".into(),
            out_request_no: "keep_1_r1".into(),
            amount_fen: 300,
            reason: Some("少出一件".into()),
            refunded_at: first.ctx.clock.now_ms(),
        });
        store.flush();
    }
    let n = eventually("the first attempt", || async {
        let n = first.notification(app_id).await;
        (n["attempts"] == 1).then_some(n)
    })
    .await;
    assert_eq!(n["acknowledged"], false);
    let notify_id = n["notify_id"].as_str().unwrap().to_owned();
    first
        .post("/control/clock/advance", json!({ "seconds": 60 }))
        .await;
    first.stop().await;

    let second = start(dir.path()).await;
    assert_eq!(
        second.ctx.public_key.to_spki_base64(),
        alipay_key,
        "the same Alipay key"
    );
    assert!(dir.path().join("alipay_private_key.pem").exists());
    assert!(dir.path().join("alipay_public_key.txt").exists());
    assert!(second.ctx.clock.offset_ms() >= 60_000, "the clock offset");

    let client = second.client(app_id, &app_key);
    let q = client
        .execute(&Query::by_out_trade_no("keep_1"), &CallOptions::default())
        .await
        .success()
        .expect("the app and the trade are still there");
    assert_eq!(q.trade_status, TradeStatus::TradeSuccess);
    assert_eq!(q.trade_no, trade_no);

    let trades = second
        .get(&format!("/control/trades?app_id={app_id}"))
        .await;
    assert_eq!(
        trades["trades"][0]["refunds"][0]["out_request_no"],
        "keep_1_r1"
    );
    assert_eq!(trades["trades"][0]["refunds"][0]["amount_fen"], 300);
    let b = second.get(&format!("/control/buyers/{buyer}")).await;
    assert_eq!(b["balance_fen"], 3000 - 800);

    // The pending notification resumes its schedule: due 120 s after the first attempt.
    second
        .post("/control/clock/advance", json!({ "seconds": 61 }))
        .await;
    let n = eventually("the retry after the restart", || async {
        let n = second.notification(app_id).await;
        (n["acknowledged"] == true).then_some(n)
    })
    .await;
    assert_eq!(n["notify_id"], notify_id.as_str());
    assert_eq!(n["attempts"], 2);
    assert_eq!(receiver.bodies().len(), 2);

    // Ids keep counting: a new trade gets a new number.
    let again = client
        .execute(
            &Precreate::new("keep_2", "1.00".parse().unwrap(), "水"),
            &CallOptions::default(),
        )
        .await
        .success()
        .unwrap();
    assert!(!again.qr_code.contains(&trade_no));
    second.stop().await;
}

#[test]
fn the_config_file_example_in_the_docs_parses() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/sandbox.md"
    ))
    .unwrap();
    let start = doc.find("```toml\n").expect("a toml example") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let config: SandboxConfig = toml::from_str(&doc[start..end]).unwrap();
    assert_eq!(config.notify_schedule_secs.len(), 8);
    assert_eq!(config.apps.len(), 1);
    assert_eq!(config.apps[0].redirect_uris.len(), 1);
    assert!(!config.notify.refunds);
}
