//! `alipay.trade.pay` with payment codes and face tokens: who pays, when it waits for the
//! buyer, and what a refused payment leaves behind.

use alipay::{Outcome, Unknown};
use serde_json::json;

use crate::support::{TradePay, TradeQuery, spawn_sandbox};

fn bar_code(out_trade_no: &str, amount: &str, code: &str) -> TradePay {
    TradePay(json!({
        "out_trade_no": out_trade_no, "scene": "bar_code", "auth_code": code,
        "total_amount": amount, "subject": "矿泉水", "terminal_id": "VM-0001",
    }))
}

#[tokio::test]
async fn a_payment_code_pays_once_and_debits_the_buyer() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000101").await;
    let buyer = sandbox.buyer("100.00").await;
    let code = sandbox.payment_code(&buyer).await;

    let paid = app.ok(&bar_code("p1", "3.50", &code)).await;

    assert_eq!(paid["out_trade_no"], "p1");
    assert_eq!(paid["total_amount"], "3.50");
    assert_eq!(paid["buyer_pay_amount"], "3.50");
    assert_eq!(paid["buyer_user_id"], buyer.as_str());
    assert!(paid["trade_no"].as_str().is_some_and(|t| t.len() == 28));
    assert!(paid["gmt_payment"].is_string());
    assert_eq!(paid["fund_bill_list"][0]["fund_channel"], "ALIPAYACCOUNT");
    assert_eq!(sandbox.balance_fen(&buyer).await, 10000 - 350);
    let q = app.ok(&TradeQuery(json!({ "out_trade_no": "p1" }))).await;
    assert_eq!(q["trade_status"], "TRADE_SUCCESS");
    assert_eq!(
        app.fails(&bar_code("p2", "1.00", &code)).await,
        "ACQ.PAYMENT_AUTH_CODE_INVALID",
        "a payment code is single use"
    );
}

#[tokio::test]
async fn malformed_unknown_and_expired_codes_are_invalid() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000102").await;
    let buyer = sandbox.buyer("100.00").await;

    for bad in ["12345", "311234567890123456", "281234567890123456"] {
        assert_eq!(
            app.fails(&bar_code("p3", "1.00", bad)).await,
            "ACQ.PAYMENT_AUTH_CODE_INVALID",
            "{bad}"
        );
    }
    let code = sandbox.payment_code(&buyer).await;
    sandbox.advance(3 * 60).await;
    assert_eq!(
        app.fails(&bar_code("p3", "1.00", &code)).await,
        "ACQ.PAYMENT_AUTH_CODE_INVALID"
    );
    assert_eq!(
        app.fails(&TradePay(
            json!({ "out_trade_no": "p4", "total_amount": "1.00", "subject": "水" })
        ))
        .await,
        "ACQ.INVALID_PARAMETER",
        "auth_code is required for a code payment"
    );
}

#[tokio::test]
async fn a_large_payment_waits_for_the_buyer_until_confirmed() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000103").await;
    let buyer = sandbox.buyer("5000.00").await;
    let code = sandbox.payment_code(&buyer).await;

    let answer = app.call(&bar_code("big1", "2000.00", &code)).await;

    let Outcome::Unknown(Unknown::InProcess {
        trade_no: Some(trade_no),
    }) = answer
    else {
        panic!("expected 10003, got {answer:?}")
    };
    let q = app.ok(&TradeQuery(json!({ "trade_no": trade_no }))).await;
    assert_eq!(q["trade_status"], "WAIT_BUYER_PAY");
    assert_eq!(
        sandbox.balance_fen(&buyer).await,
        500_000,
        "nothing paid yet"
    );
    // A retry of the same call while waiting answers 10003 again.
    assert!(matches!(
        app.call(&bar_code("big1", "2000.00", &code)).await,
        Outcome::Unknown(Unknown::InProcess { .. })
    ));

    let confirmed = sandbox
        .post(
            "/control/trades/pay",
            json!({ "app_id": app.app_id, "trade_no": trade_no, "buyer_id": buyer }),
        )
        .await;

    assert_eq!(confirmed["trade_status"], "TRADE_SUCCESS");
    assert_eq!(sandbox.balance_fen(&buyer).await, 300_000);
}

#[tokio::test]
async fn a_refused_payment_leaves_nothing_so_the_same_order_can_be_retried() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000104").await;
    let poor = sandbox.buyer("1.00").await;
    let rich = sandbox.buyer("100.00").await;
    let code = sandbox.payment_code(&poor).await;

    assert_eq!(
        app.fails(&bar_code("p5", "5.00", &code)).await,
        "ACQ.BUYER_BALANCE_NOT_ENOUGH"
    );
    assert_eq!(
        app.fails(&TradeQuery(json!({ "out_trade_no": "p5" })))
            .await,
        "ACQ.TRADE_NOT_EXIST"
    );
    let other = sandbox.payment_code(&rich).await;
    let paid = app.ok(&bar_code("p5", "5.00", &other)).await;
    assert_eq!(paid["buyer_user_id"], rich.as_str());
    assert_eq!(
        app.fails(&bar_code("p5", "5.00", &sandbox.payment_code(&rich).await))
            .await,
        "ACQ.TRADE_HAS_SUCCESS"
    );
}

#[tokio::test]
async fn a_face_token_pays_once() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000105").await;
    let buyer = sandbox.buyer("100.00").await;
    let ftoken = sandbox
        .post("/control/face/token", json!({ "buyer_id": buyer }))
        .await["ftoken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ftoken.starts_with("fp") && ftoken.len() == 35);
    let face = |no: &str| {
        TradePay(json!({
            "out_trade_no": no, "scene": "security_code", "auth_code": ftoken,
            "total_amount": "4.00", "subject": "果汁", "product_code": "FACE_TO_FACE_PAYMENT",
        }))
    };

    let paid = app.ok(&face("f1")).await;

    assert_eq!(paid["buyer_user_id"], buyer.as_str());
    assert_eq!(sandbox.balance_fen(&buyer).await, 9600);
    assert_eq!(
        app.fails(&face("f2")).await,
        "ACQ.PAYMENT_AUTH_CODE_INVALID"
    );
}

#[tokio::test]
async fn a_waiting_payment_cancelled_after_polling_can_no_longer_be_confirmed() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000106").await;
    let buyer = sandbox.buyer("5000.00").await;
    let code = sandbox.payment_code(&buyer).await;
    let answer = app.call(&bar_code("big2", "2500.00", &code)).await;
    assert!(matches!(
        answer,
        Outcome::Unknown(Unknown::InProcess { .. })
    ));

    // The merchant polls, gives up, and cancels right after the last query.
    let q = app.ok(&TradeQuery(json!({ "out_trade_no": "big2" }))).await;
    assert_eq!(q["trade_status"], "WAIT_BUYER_PAY");
    let cancelled = app
        .ok(&crate::support::TradeCancel(
            json!({ "out_trade_no": "big2" }),
        ))
        .await;
    assert_eq!(cancelled["action"], "close");

    let (status, _) = sandbox
        .post_status(
            "/control/trades/pay",
            json!({ "app_id": app.app_id, "out_trade_no": "big2", "buyer_id": buyer }),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(sandbox.balance_fen(&buyer).await, 500_000);
}

#[tokio::test]
async fn payment_codes_survive_a_restart_of_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let config = alipay_sandbox::config::SandboxConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let sandbox = crate::support::spawn_sandbox_with(config).await;
    let buyer = sandbox.buyer("1.00").await;
    let code = sandbox.payment_code(&buyer).await;
    drop(sandbox);

    let store = alipay_sandbox::store::Store::open(dir.path()).unwrap();

    let saved = store.data.payment_codes.get(&code).expect("code persisted");
    assert_eq!(saved.user_id, buyer);
    assert!(!saved.used);
}
