//! Pre-authorisation: freeze by voucher QR or app call, pay from the freeze, unfreeze.

use serde_json::{Value, json};

use crate::support::*;

const NOTIFY: &str = "http://127.0.0.1:9/notify";

fn voucher(out_order_no: &str, amount: &str) -> VoucherCreate {
    VoucherCreate(json!({
        "out_order_no": out_order_no, "out_request_no": format!("{out_order_no}_f"),
        "order_title": "开门柜押金", "amount": amount, "product_code": "PRE_AUTH",
    }))
}

/// Freezes `amount` of a new buyer holding 100.00 through a voucher; returns (auth_no, buyer).
async fn frozen(sandbox: &TestSandbox, app: &TestApp, no: &str, amount: &str) -> (String, String) {
    let buyer = sandbox.buyer("100.00").await;
    let v = app.ok(&voucher(no, amount)).await;
    assert!(
        v["code_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http"))
    );
    let f = sandbox
        .post(
            "/control/fund_auth/freeze",
            json!({ "app_id": app.app_id, "out_order_no": no, "buyer_id": buyer }),
        )
        .await;
    assert_eq!(f["order_status"], "AUTHORIZED", "{f}");
    (f["auth_no"].as_str().expect("auth_no").to_owned(), buyer)
}

fn fund_notes(notes: &[Value], kind: &str) -> Vec<Value> {
    notes
        .iter()
        .filter(|n| n["params"]["notify_type"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_voucher_freeze_completed_by_the_buyer_is_notified_and_queryable() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox
        .app_with("2021000000000501", json!({ "notify_url": NOTIFY }))
        .await;

    let (auth_no, buyer) = frozen(&sandbox, &app, "fo1", "50.00").await;

    assert_eq!(sandbox.balance_fen(&buyer).await, 5000);
    let notes = fund_notes(
        &sandbox.notifications(&app.app_id).await,
        "fund_auth_freeze",
    );
    assert_eq!(notes.len(), 1);
    let p = &notes[0]["params"];
    assert_eq!(p["auth_no"], auth_no.as_str());
    assert_eq!(p["operation_type"], "FREEZE");
    assert_eq!(p["status"], "SUCCESS");
    assert_eq!(p["rest_amount"], "50.00");
    assert_eq!(p["payer_user_id"], buyer.as_str());
    let d = app
        .ok(&FundDetailQuery(
            json!({ "out_order_no": "fo1", "out_request_no": "fo1_f" }),
        ))
        .await;
    assert_eq!(d["order_status"], "AUTHORIZED");
    assert_eq!(d["status"], "SUCCESS");
    assert_eq!(d["rest_amount"], "50.00");
    assert_eq!(d["operation_type"], "FREEZE");
}

#[tokio::test]
async fn paying_from_a_freeze_with_complete_releases_the_rest() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000502").await;
    let (auth_no, buyer) = frozen(&sandbox, &app, "fo2", "50.00").await;
    let charge = |no: &str, amount: &str, mode: &str| {
        TradePay(json!({
            "out_trade_no": no, "auth_no": auth_no, "product_code": "PRE_AUTH",
            "buyer_id": buyer, "total_amount": amount, "subject": "开门柜商品",
            "auth_confirm_mode": mode,
        }))
    };

    assert_eq!(
        app.fails(&charge("t0", "50.01", "COMPLETE")).await,
        "ACQ.AUTH_AMOUNT_NOT_ENOUGH"
    );
    let paid = app.ok(&charge("t1", "12.30", "COMPLETE")).await;

    assert_eq!(paid["buyer_user_id"], buyer.as_str());
    assert_eq!(paid["total_amount"], "12.30");
    assert_eq!(sandbox.balance_fen(&buyer).await, 10000 - 1230);
    let d = app
        .ok(&FundDetailQuery(json!({ "auth_no": auth_no })))
        .await;
    assert_eq!(d["order_status"], "FINISH");
    assert_eq!(d["total_pay_amount"], "12.30");
    assert_eq!(d["rest_amount"], "0.00");
    assert_eq!(
        app.fails(&charge("t2", "1.00", "NOT_COMPLETE")).await,
        "ACQ.AUTH_ORDER_HAS_FINISHED"
    );
}

#[tokio::test]
async fn a_pre_auth_payment_must_match_product_and_payer() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000503").await;
    let (auth_no, buyer) = frozen(&sandbox, &app, "fo3", "20.00").await;
    let someone = sandbox.buyer("1.00").await;

    let wrong_product = TradePay(json!({
        "out_trade_no": "t3", "auth_no": auth_no, "product_code": "PRE_AUTH_ONLINE",
        "buyer_id": buyer, "total_amount": "1.00", "subject": "商品",
    }));
    assert_eq!(
        app.fails(&wrong_product).await,
        "ACQ.PRE_AUTH_PROD_CODE_INCONSISTENT"
    );
    let wrong_payer = TradePay(json!({
        "out_trade_no": "t4", "auth_no": auth_no, "buyer_id": someone,
        "total_amount": "1.00", "subject": "商品",
    }));
    assert_eq!(app.fails(&wrong_payer).await, "ACQ.BUYER_NOT_MATCH");
    let unknown = TradePay(json!({
        "out_trade_no": "t5", "auth_no": "2026010110002001000000000000", "buyer_id": buyer,
        "total_amount": "1.00", "subject": "商品",
    }));
    assert_eq!(app.fails(&unknown).await, "ACQ.AUTH_NO_ERROR");
}

#[tokio::test]
async fn unfreeze_is_idempotent_and_bounded_by_the_rest() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox
        .app_with("2021000000000504", json!({ "notify_url": NOTIFY }))
        .await;
    let (auth_no, buyer) = frozen(&sandbox, &app, "fo4", "30.00").await;
    let unfreeze = |no: &str, amount: &str| {
        Unfreeze(json!({
            "auth_no": auth_no, "out_request_no": no, "amount": amount, "remark": "未取货",
        }))
    };

    let u = app.ok(&unfreeze("u1", "10.00")).await;
    assert_eq!(u["status"], "SUCCESS");
    assert_eq!(u["amount"], "10.00");
    assert_eq!(sandbox.balance_fen(&buyer).await, 8000);
    let again = app.ok(&unfreeze("u1", "10.00")).await;
    assert_eq!(again["operation_id"], u["operation_id"]);
    assert_eq!(
        sandbox.balance_fen(&buyer).await,
        8000,
        "a repeat moves nothing"
    );
    assert_eq!(
        app.fails(&unfreeze("u1", "11.00")).await,
        "DISCORDANT_REPEAT_REQUEST"
    );
    assert_eq!(
        app.fails(&unfreeze("u2", "20.01")).await,
        "REQUEST_AMOUNT_EXCEED"
    );
    assert_eq!(
        app.fails(&Unfreeze(
            json!({ "auth_no": auth_no, "out_request_no": "u3", "amount": "1.00" })
        ))
        .await,
        "INVALID_PARAMETER",
        "remark is required"
    );
    app.ok(&unfreeze("u2", "20.00")).await;
    let d = app
        .ok(&FundDetailQuery(json!({ "auth_no": auth_no })))
        .await;
    assert_eq!(d["order_status"], "FINISH");
    assert_eq!(sandbox.balance_fen(&buyer).await, 10000);
    let notes = fund_notes(
        &sandbox.notifications(&app.app_id).await,
        "fund_auth_unfreeze",
    );
    assert_eq!(notes.len(), 2);
}

#[tokio::test]
async fn an_app_freeze_waits_for_the_buyer_and_closes_when_not_agreed_in_time() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000505").await;
    let buyer = sandbox.buyer("100.00").await;
    let req = |no: &str| {
        AppFreeze(json!({
            "out_order_no": no, "out_request_no": format!("{no}_r"), "order_title": "押金",
            "amount": "20.00", "product_code": "PRE_AUTH_ONLINE",
        }))
    };

    let created = app.ok(&req("af1")).await;
    assert_eq!(created["status"], "INIT");
    let auth_no = created["auth_no"].as_str().unwrap().to_owned();
    assert_eq!(
        app.ok(&req("af1")).await["auth_no"],
        auth_no.as_str(),
        "identical repeat"
    );
    let done = sandbox
        .post(
            "/control/fund_auth/freeze",
            json!({ "app_id": app.app_id, "auth_no": auth_no, "buyer_id": buyer }),
        )
        .await;
    assert_eq!(done["order_status"], "AUTHORIZED");

    app.ok(&req("af2")).await;
    sandbox.advance(16 * 60).await;
    let (status, body) = sandbox
        .post_status(
            "/control/fund_auth/freeze",
            json!({ "app_id": app.app_id, "out_order_no": "af2", "buyer_id": buyer }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let d = app
        .ok(&FundDetailQuery(json!({ "out_order_no": "af2" })))
        .await;
    assert_eq!(d["order_status"], "CLOSED");
}
