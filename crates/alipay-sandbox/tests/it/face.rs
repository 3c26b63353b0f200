//! Face payment: initialize, the face step, and the ftoken query.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn initialize_answers_a_zim_session() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000701").await;

    let init = app
        .ok(&SmilepayInitialize(json!({
            "apdid_token": "x", "app_name": "vm", "app_version": "1.0", "device_type": "android",
            "zim_ver": "1.0", "merchant_info": { "device_num": "VM-0001" },
        })))
        .await;

    assert!(init["zim_id"].as_str().is_some_and(|s| s.len() == 32));
    assert!(init["zim_init_client_data"].is_string());
    assert_eq!(
        app.fails(&SmilepayInitialize(json!({}))).await,
        "isv.missing-parameter"
    );
}

#[tokio::test]
async fn an_ftoken_names_its_buyer_until_it_expires() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000702").await;
    let buyer = sandbox.buyer("10.00").await;
    let ftoken = sandbox
        .post("/control/face/token", json!({ "buyer_id": buyer }))
        .await["ftoken"]
        .as_str()
        .unwrap()
        .to_owned();

    let q = app
        .ok(&FtokenQuery(json!({ "ftoken": ftoken, "biz_type": "2" })))
        .await;
    assert_eq!(q["uid"], buyer.as_str());

    sandbox.advance(6 * 60).await;
    assert_eq!(
        app.fails(&FtokenQuery(json!({ "ftoken": ftoken, "biz_type": "2" })))
            .await,
        "INVALID_FTOKEN"
    );
    let pay = TradePay(json!({
        "out_trade_no": "fx", "scene": "security_code", "auth_code": ftoken,
        "total_amount": "1.00", "subject": "水",
    }));
    assert_eq!(app.fails(&pay).await, "ACQ.PAYMENT_AUTH_CODE_INVALID");
    let (status, _) = sandbox
        .post_status(
            "/control/face/token",
            json!({ "buyer_id": "2088000000000000" }),
        )
        .await;
    assert_eq!(status, 404, "an unknown buyer is not found");
}
