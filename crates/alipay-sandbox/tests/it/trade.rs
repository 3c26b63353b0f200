//! Precreate → scan and pay → query, and the trade rules around it.

use alipay::api::trade::{Precreate, Query};
use alipay::{CallOptions, Outcome, TradeStatus};
use serde_json::json;

use crate::support::spawn_sandbox;

#[tokio::test]
async fn a_precreated_trade_paid_by_qr_is_reported_paid_by_query() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000001").await;
    let buyer = sandbox.buyer("100.00").await;

    let pre = Precreate::new("order_1", "3.50".parse().unwrap(), "可乐").terminal_id("VM-0001");
    let answer = app
        .client
        .execute(&pre, &CallOptions::default())
        .await
        .success()
        .expect("precreate succeeds");
    assert_eq!(answer.out_trade_no, "order_1");

    // Before anyone scans, Alipay does not know the trade.
    let q = app
        .client
        .execute(&Query::by_out_trade_no("order_1"), &CallOptions::default())
        .await;
    assert_eq!(q.failure_sub_code(), Some("ACQ.TRADE_NOT_EXIST"));

    let paid = sandbox
        .post(
            "/control/qr/pay",
            json!({ "qr_code": answer.qr_code, "buyer_id": buyer }),
        )
        .await;
    assert_eq!(paid["trade_status"], "TRADE_SUCCESS");

    let q = app
        .client
        .execute(&Query::by_out_trade_no("order_1"), &CallOptions::default())
        .await;
    let Outcome::Success(q) = q else {
        panic!("query failed: {q:?}")
    };
    assert_eq!(q.trade_status, TradeStatus::TradeSuccess);
    assert_eq!(q.total_amount.fen(), 350);
    assert_eq!(q.terminal_id.as_deref(), Some("VM-0001"));
    assert_eq!(q.buyer_user_id.as_deref(), Some(buyer.as_str()));

    let b = sandbox.get(&format!("/control/buyers/{buyer}")).await;
    assert_eq!(b["balance_fen"], 10000 - 350);
}

#[tokio::test]
async fn repeating_a_precreate_with_other_key_fields_is_context_inconsistent() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000002").await;
    let first = app
        .client
        .execute(
            &Precreate::new("o2", "1.00".parse().unwrap(), "水"),
            &CallOptions::default(),
        )
        .await
        .success()
        .unwrap();
    let same = app
        .client
        .execute(
            &Precreate::new("o2", "1.00".parse().unwrap(), "水"),
            &CallOptions::default(),
        )
        .await
        .success()
        .unwrap();
    assert_eq!(
        first.qr_code, same.qr_code,
        "an identical retry gets the same code"
    );
    let changed = app
        .client
        .execute(
            &Precreate::new("o2", "2.00".parse().unwrap(), "水"),
            &CallOptions::default(),
        )
        .await;
    assert_eq!(changed.failure_sub_code(), Some("ACQ.CONTEXT_INCONSISTENT"));
}

#[tokio::test]
async fn a_seller_id_outside_the_collection_restriction_is_refused() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox
        .app_with(
            "2021000000000003",
            json!({ "allowed_seller_ids": ["2088000000000777"] }),
        )
        .await;
    let ok = Precreate::new("o3", "1.00".parse().unwrap(), "水").seller_id("2088000000000777");
    assert!(
        app.client
            .execute(&ok, &CallOptions::default())
            .await
            .is_success()
    );
    let bad = Precreate::new("o4", "1.00".parse().unwrap(), "水").seller_id("2088000000000888");
    assert_eq!(
        app.client
            .execute(&bad, &CallOptions::default())
            .await
            .failure_sub_code(),
        Some("ACQ.INVALID_RECEIVE_ACCOUNT")
    );
}

#[tokio::test]
async fn an_unknown_app_gets_an_unsigned_invalid_app_id_answer() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000004").await;
    // Same key, but an app id the sandbox does not know.
    let mut config = app.client.config().clone();
    config.app_id = "2021999999999999".into();
    let key = alipay::AppPrivateKey::from_text(&app.key_text).unwrap();
    let client = alipay::Client::new(
        config,
        key,
        alipay::Verification::PublicKey(sandbox.ctx.public_key.clone()),
    )
    .unwrap();
    let r = client
        .execute(&Query::by_out_trade_no("x"), &CallOptions::default())
        .await;
    match r {
        Outcome::Failure(alipay::Failure::Alipay(e)) => {
            assert_eq!(e.sub_code(), "isv.invalid-app-id")
        }
        other => panic!("expected invalid app id, got {other:?}"),
    }
}
