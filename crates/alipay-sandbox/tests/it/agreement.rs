//! Withholding agreements: signing through the control API, the query, and charging one.

use serde_json::json;

use crate::support::*;

async fn sign(sandbox: &TestSandbox, app: &TestApp, buyer: &str) -> String {
    let a = sandbox
        .post(
            "/control/agreements/sign",
            json!({
                "app_id": app.app_id, "buyer_id": buyer, "external_agreement_no": "EXT1",
                "personal_product_code": "GENERAL_WITHHOLDING_P", "sign_scene": "INDUSTRY|ALIPAYGO",
            }),
        )
        .await;
    assert_eq!(a["status"], "NORMAL", "{a}");
    a["agreement_no"].as_str().expect("agreement_no").to_owned()
}

#[tokio::test]
async fn signing_notifies_and_the_agreement_can_be_queried_both_ways() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox
        .app_with(
            "2021000000000601",
            json!({ "notify_url": "http://127.0.0.1:9/notify" }),
        )
        .await;
    let buyer = sandbox.buyer("10.00").await;

    let agreement_no = sign(&sandbox, &app, &buyer).await;

    assert_eq!(
        sign(&sandbox, &app, &buyer).await,
        agreement_no,
        "signing again is a no-op"
    );
    let notes = sandbox.notifications(&app.app_id).await;
    let signed: Vec<_> = notes
        .iter()
        .filter(|n| n["params"]["notify_type"] == "dut_user_sign")
        .collect();
    assert_eq!(signed.len(), 1);
    assert_eq!(signed[0]["params"]["agreement_no"], agreement_no.as_str());
    assert_eq!(signed[0]["params"]["alipay_user_id"], buyer.as_str());
    assert_eq!(signed[0]["params"]["status"], "NORMAL");
    assert_eq!(signed[0]["params"]["external_agreement_no"], "EXT1");

    let by_no = app
        .ok(&AgreementQuery(json!({ "agreement_no": agreement_no })))
        .await;
    assert_eq!(by_no["status"], "NORMAL");
    assert_eq!(by_no["principal_id"], buyer.as_str());
    assert_eq!(by_no["external_agreement_no"], "EXT1");
    let by_user = app
        .ok(&AgreementQuery(json!({
            "alipay_user_id": buyer, "personal_product_code": "GENERAL_WITHHOLDING_P",
            "sign_scene": "INDUSTRY|ALIPAYGO",
        })))
        .await;
    assert_eq!(by_user["agreement_no"], agreement_no.as_str());
    assert_eq!(
        app.fails(&AgreementQuery(
            json!({ "agreement_no": "20260101000000000000" })
        ))
        .await,
        "USER_AGREEMENT_NOT_EXIST"
    );
}

#[tokio::test]
async fn an_agreement_pays_without_the_buyer_until_the_balance_runs_out() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000602").await;
    let buyer = sandbox.buyer("10.00").await;
    let agreement_no = sign(&sandbox, &app, &buyer).await;
    let charge = |no: &str, amount: &str| {
        TradePay(json!({
            "out_trade_no": no, "product_code": "GENERAL_WITHHOLDING", "total_amount": amount,
            "subject": "开门柜商品", "agreement_params": { "agreement_no": agreement_no },
        }))
    };

    let paid = app.ok(&charge("ag1", "6.00")).await;

    assert_eq!(paid["buyer_user_id"], buyer.as_str());
    assert_eq!(sandbox.balance_fen(&buyer).await, 400);
    assert_eq!(
        app.fails(&charge("ag2", "6.00")).await,
        "ACQ.BUYER_BALANCE_NOT_ENOUGH"
    );
    let unknown = TradePay(json!({
        "out_trade_no": "ag3", "total_amount": "1.00", "subject": "商品",
        "agreement_params": { "agreement_no": "20260101000000000000" },
    }));
    assert_eq!(app.fails(&unknown).await, "ACQ.AGREEMENT_NOT_EXIST");
}
