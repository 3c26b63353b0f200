//! Refund, refund query, cancel and close: money back to the buyer, idempotent by
//! `out_request_no`, and the state rules around them.

use alipay_sandbox::config::SandboxConfig;
use serde_json::{Value, json};

use crate::support::*;

/// A trade paid with a payment code by a new buyer holding 100.00; returns (answer, buyer).
async fn paid(sandbox: &TestSandbox, app: &TestApp, no: &str, amount: &str) -> (Value, String) {
    let buyer = sandbox.buyer("100.00").await;
    let code = sandbox.payment_code(&buyer).await;
    let answer = app
        .ok(&TradePay(json!({
            "out_trade_no": no, "auth_code": code, "scene": "bar_code",
            "total_amount": amount, "subject": "可乐",
        })))
        .await;
    (answer, buyer)
}

fn refund(no: &str, amount: &str, request_no: Option<&str>) -> TradeRefund {
    let mut biz = json!({ "out_trade_no": no, "refund_amount": amount });
    if let Some(r) = request_no {
        biz["out_request_no"] = r.into();
    }
    TradeRefund(biz)
}

#[tokio::test]
async fn partial_refunds_add_up_and_a_repeat_moves_no_money() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000201").await;
    let (_, buyer) = paid(&sandbox, &app, "r1", "10.00").await;

    let first = app.ok(&refund("r1", "3.00", Some("rq1"))).await;
    assert_eq!(first["fund_change"], "Y");
    assert_eq!(first["refund_fee"], "3.00");
    assert_eq!(first["buyer_user_id"], buyer.as_str());
    let second = app.ok(&refund("r1", "2.00", Some("rq2"))).await;
    assert_eq!(second["refund_fee"], "5.00", "refund_fee is cumulative");
    assert_eq!(sandbox.balance_fen(&buyer).await, 10000 - 1000 + 500);

    let again = app.ok(&refund("r1", "3.00", Some("rq1"))).await;
    assert_eq!(again["fund_change"], "N");
    assert_eq!(again["refund_fee"], "5.00");
    assert_eq!(
        sandbox.balance_fen(&buyer).await,
        9500,
        "a repeat moves nothing"
    );
    assert_eq!(
        app.fails(&refund("r1", "4.00", Some("rq1"))).await,
        "ACQ.DISCORDANT_REPEAT_REQUEST"
    );
    assert_eq!(
        app.fails(&refund("r1", "5.01", Some("rq3"))).await,
        "ACQ.REASON_TRADE_REFUND_FEE_ERR"
    );
    let q = app.ok(&TradeQuery(json!({ "out_trade_no": "r1" }))).await;
    assert_eq!(
        q["trade_status"], "TRADE_SUCCESS",
        "a partial refund keeps the trade paid"
    );

    let last = app.ok(&refund("r1", "5.00", Some("rq3"))).await;
    assert_eq!(last["refund_fee"], "10.00");
    let q = app.ok(&TradeQuery(json!({ "out_trade_no": "r1" }))).await;
    assert_eq!(q["trade_status"], "TRADE_CLOSED");
    assert_eq!(sandbox.balance_fen(&buyer).await, 10000);
}

#[tokio::test]
async fn the_refund_query_reports_success_and_says_nothing_of_unknown_numbers() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000202").await;
    paid(&sandbox, &app, "r2", "8.00").await;
    // Without out_request_no the refund is numbered by the out_trade_no.
    app.ok(&TradeRefund(
        json!({ "out_trade_no": "r2", "refund_amount": "8.00", "refund_reason": "出货失败" }),
    ))
    .await;

    let q = app
        .ok(&RefundQuery(
            json!({ "out_trade_no": "r2", "out_request_no": "r2" }),
        ))
        .await;
    assert_eq!(q["refund_status"], "REFUND_SUCCESS");
    assert_eq!(q["refund_amount"], "8.00");
    assert_eq!(q["total_amount"], "8.00");
    assert_eq!(q["refund_reason"], "出货失败");

    let unknown = app
        .ok(&RefundQuery(
            json!({ "out_trade_no": "r2", "out_request_no": "nope" }),
        ))
        .await;
    assert!(unknown.get("refund_status").is_none());
    assert!(unknown.get("refund_amount").is_none());
}

#[tokio::test]
async fn an_unpaid_trade_cannot_be_refunded() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000203").await;
    let buyer = sandbox.buyer("10.00").await;
    app.ok(&TradeCreate(json!({
        "out_trade_no": "r3", "total_amount": "1.00", "subject": "水", "buyer_id": buyer,
    })))
    .await;

    assert_eq!(
        app.fails(&refund("r3", "1.00", None)).await,
        "ACQ.TRADE_STATUS_ERROR"
    );
}

#[tokio::test]
async fn cancel_closes_an_unpaid_trade_and_refunds_a_paid_one() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000204").await;
    let buyer = sandbox.buyer("10.00").await;
    app.ok(&TradeCreate(json!({
        "out_trade_no": "c1", "total_amount": "1.00", "subject": "水", "buyer_id": buyer,
    })))
    .await;
    let closed = app.ok(&TradeCancel(json!({ "out_trade_no": "c1" }))).await;
    assert_eq!(closed["action"], "close");
    assert_eq!(closed["retry_flag"], "N");
    let q = app.ok(&TradeQuery(json!({ "out_trade_no": "c1" }))).await;
    assert_eq!(q["trade_status"], "TRADE_CLOSED");

    let (_, payer) = paid(&sandbox, &app, "c2", "6.00").await;
    let refunded = app.ok(&TradeCancel(json!({ "out_trade_no": "c2" }))).await;
    assert_eq!(refunded["action"], "refund");
    assert!(refunded["gmt_refund_pay"].is_string());
    assert_eq!(sandbox.balance_fen(&payer).await, 10000);
    let again = app.ok(&TradeCancel(json!({ "out_trade_no": "c2" }))).await;
    assert_eq!(
        again["action"], "refund",
        "a repeated cancel answers the same"
    );
    assert_eq!(sandbox.balance_fen(&payer).await, 10000);
}

#[tokio::test]
async fn cancel_closes_a_never_scanned_precreate_and_times_out_after_a_day() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000205").await;
    let pre = app
        .ok(&TradePrecreate(
            json!({ "out_trade_no": "c3", "total_amount": "2.00", "subject": "水" }),
        ))
        .await;
    let closed = app.ok(&TradeCancel(json!({ "out_trade_no": "c3" }))).await;
    assert_eq!(closed["action"], "close");
    let (status, _) = sandbox
        .post_status(
            "/control/qr/pay",
            json!({ "qr_code": pre["qr_code"], "buyer_id": sandbox.buyer("10.00").await }),
        )
        .await;
    assert_eq!(status, 409, "a cancelled QR cannot be paid");

    paid(&sandbox, &app, "c4", "1.00").await;
    sandbox.advance(24 * 3600 + 1).await;
    assert_eq!(
        app.fails(&TradeCancel(json!({ "out_trade_no": "c4" })))
            .await,
        "ACQ.TRADE_CANCEL_TIME_OUT"
    );
}

#[tokio::test]
async fn close_only_ends_trades_waiting_for_payment() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000206").await;
    let buyer = sandbox.buyer("10.00").await;
    app.ok(&TradeCreate(json!({
        "out_trade_no": "k1", "total_amount": "1.00", "subject": "水", "buyer_id": buyer,
    })))
    .await;

    let closed = app.ok(&TradeClose(json!({ "out_trade_no": "k1" }))).await;
    assert_eq!(closed["out_trade_no"], "k1");
    assert!(closed["trade_no"].is_string());
    assert_eq!(
        app.fails(&TradeClose(json!({ "out_trade_no": "k1" })))
            .await,
        "ACQ.TRADE_STATUS_ERROR"
    );
    paid(&sandbox, &app, "k2", "1.00").await;
    assert_eq!(
        app.fails(&TradeClose(json!({ "out_trade_no": "k2" })))
            .await,
        "ACQ.TRADE_STATUS_ERROR"
    );
    assert_eq!(
        app.fails(&TradeClose(json!({ "out_trade_no": "nothing" })))
            .await,
        "ACQ.TRADE_NOT_EXIST"
    );
}

#[tokio::test]
async fn refunds_are_notified_only_when_configured() {
    let mut config = SandboxConfig::default();
    config.notify.refunds = true;
    config.notify.trade_closed = true;
    let sandbox = spawn_sandbox_with(config).await;
    let app = sandbox
        .app_with(
            "2021000000000207",
            json!({ "notify_url": "http://127.0.0.1:9/notify" }),
        )
        .await;
    paid(&sandbox, &app, "n1", "4.00").await;

    app.ok(&refund("n1", "1.00", Some("part"))).await;
    app.ok(&refund("n1", "3.00", Some("rest"))).await;

    let notes = sandbox.notifications(&app.app_id).await;
    let refunds: Vec<&Value> = notes
        .iter()
        .filter(|n| n["params"].get("out_biz_no").is_some())
        .collect();
    assert_eq!(refunds.len(), 2, "{notes:?}");
    let part = refunds
        .iter()
        .find(|n| n["params"]["out_biz_no"] == "part")
        .unwrap();
    assert_eq!(part["params"]["trade_status"], "TRADE_SUCCESS");
    assert_eq!(part["params"]["refund_fee"], "1.00");
    let rest = refunds
        .iter()
        .find(|n| n["params"]["out_biz_no"] == "rest")
        .unwrap();
    assert_eq!(rest["params"]["trade_status"], "TRADE_CLOSED");
    assert_eq!(rest["params"]["refund_fee"], "4.00");
}

#[tokio::test]
async fn refunds_are_not_notified_by_default() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox
        .app_with(
            "2021000000000208",
            json!({ "notify_url": "http://127.0.0.1:9/notify" }),
        )
        .await;
    paid(&sandbox, &app, "n2", "4.00").await;
    app.ok(&refund("n2", "4.00", None)).await;

    let notes = sandbox.notifications(&app.app_id).await;
    assert_eq!(notes.len(), 1, "only the payment: {notes:?}");
    assert_eq!(notes[0]["params"]["trade_status"], "TRADE_SUCCESS");
}
