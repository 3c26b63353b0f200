//! The `alipay` crate's typed requests against the sandbox over real HTTP: each side was
//! written from the reference on its own, so these round trips check that the client's
//! field names, types and outcome classification match what the gateway answers.

use alipay::api::agreement::AgreementQuery;
use alipay::api::face::{FtokenQuery, SmilepayInitialize};
use alipay::api::fund_auth::{OperationDetailQuery, Unfreeze, VoucherCreate};
use alipay::api::oauth::{OauthToken, UserInfoShare};
use alipay::api::royalty::{
    OnsettleQuery, RelationBatchQuery, RelationBind, RoyaltyEntity, RoyaltyParameter, Settle,
    SettleQuery,
};
use alipay::api::trade::{
    Cancel, CancelAction, Close, Create, ExtendParams, Pay, Precreate, Query, Refund, RefundQuery,
};
use alipay::{Amount, CallOptions, Outcome, TradeStatus, UserRef};
use serde_json::json;

use crate::support::*;

fn yuan(s: &str) -> Amount {
    s.parse().unwrap()
}

async fn run<R: alipay::ApiRequest>(app: &TestApp, request: &R) -> R::Response {
    match app.client.execute(request, &CallOptions::default()).await {
        Outcome::Success(r) => r,
        other => panic!("{} did not succeed: {:?}", R::METHOD, other.map(|_| ())),
    }
}

#[tokio::test]
async fn create_pay_query_refund_cancel_and_close_decode_into_the_typed_answers() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000801").await;
    let buyer = sandbox.buyer("100.00").await;

    let created = run(
        &app,
        &Create::new(
            "tc_1",
            yuan("12.34"),
            "可乐",
            UserRef::UserId(buyer.clone()),
        )
        .terminal_id("VM-9"),
    )
    .await;
    sandbox
        .post(
            "/control/trades/pay",
            json!({ "app_id": app.app_id, "trade_no": created.trade_no, "buyer_id": buyer }),
        )
        .await;
    let q = run(&app, &Query::by_out_trade_no("tc_1")).await;
    assert_eq!(
        (q.trade_status, q.total_amount.fen()),
        (TradeStatus::TradeSuccess, 1234)
    );
    assert_eq!(q.buyer(), Some(UserRef::UserId(buyer.clone())));

    let r = run(
        &app,
        &Refund::new("tc_1", yuan("2.34"), "tc_1_r1").reason("破损"),
    )
    .await;
    assert!(r.funds_moved());
    assert_eq!(r.refund_fee.fen(), 234);
    let again = run(&app, &Refund::new("tc_1", yuan("2.34"), "tc_1_r1")).await;
    assert!(!again.funds_moved(), "a repeat moves nothing");
    let rq = run(&app, &RefundQuery::new("tc_1", "tc_1_r1")).await;
    assert!(rq.is_refunded());
    let other_amount = app
        .client
        .execute(
            &Refund::new("tc_1", yuan("1.00"), "tc_1_r1"),
            &CallOptions::default(),
        )
        .await;
    assert_eq!(
        other_amount.failure_sub_code(),
        Some("ACQ.DISCORDANT_REPEAT_REQUEST")
    );

    run(
        &app,
        &Create::new("tc_2", yuan("1.00"), "水", UserRef::UserId(buyer.clone())),
    )
    .await;
    let c = run(&app, &Cancel::by_out_trade_no("tc_2")).await;
    assert_eq!(c.action, Some(CancelAction::Close));
    run(
        &app,
        &Create::new("tc_3", yuan("1.00"), "水", UserRef::UserId(buyer.clone())),
    )
    .await;
    run(&app, &Close::by_out_trade_no("tc_3")).await;
    let closed = run(&app, &Query::by_out_trade_no("tc_3")).await;
    assert_eq!(closed.trade_status, TradeStatus::TradeClosed);
}

#[tokio::test]
async fn bar_code_and_face_payments_decode_and_unknown_codes_are_refused() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000802").await;
    let buyer = sandbox.buyer("100.00").await;
    let code = sandbox.payment_code(&buyer).await;
    let paid = run(&app, &Pay::bar_code("tc_bar", yuan("3.00"), "薯片", code)).await;
    assert_eq!(
        (paid.total_amount.fen(), paid.buyer_user_id.as_deref()),
        (300, Some(buyer.as_str()))
    );

    let ftoken = sandbox
        .post("/control/face/token", json!({ "buyer_id": buyer }))
        .await["ftoken"]
        .as_str()
        .unwrap()
        .to_owned();
    let ident = run(
        &app,
        &FtokenQuery {
            ftoken: ftoken.clone(),
            biz_type: "2".into(),
            zim_id: None,
            ext_info: None,
        },
    )
    .await;
    assert_eq!(ident.uid.as_deref(), Some(buyer.as_str()));
    let face = run(
        &app,
        &Pay::face("tc_face", yuan("4.00"), "水", ftoken.clone()).terminal_id("FM-1"),
    )
    .await;
    assert_eq!(face.total_amount.fen(), 400);
    let reused = app
        .client
        .execute(
            &Pay::face("tc_face2", yuan("4.00"), "水", ftoken),
            &CallOptions::default(),
        )
        .await;
    assert_eq!(
        reused.failure_sub_code(),
        Some("ACQ.PAYMENT_AUTH_CODE_INVALID")
    );

    let init = SmilepayInitialize {
        apdid_token: "apdid".into(),
        app_name: "vend".into(),
        app_version: "1.0".into(),
        bio_meta_info: "3.0:0".into(),
        ..Default::default()
    };
    let z = run(&app, &init).await;
    assert!(z.zim_id.is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn deferred_settlement_decodes_and_releases_the_frozen_amount() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000803").await;
    let buyer = sandbox.buyer("100.00").await;
    let partner = sandbox.buyer("0.00").await;
    let bind = RelationBind {
        out_request_no: "bind_1".into(),
        receiver_list: vec![RoyaltyEntity::user_id(partner.clone())],
    };
    assert!(run(&app, &bind).await.is_success());
    let list = run(
        &app,
        &RelationBatchQuery {
            page_num: Some(1),
            page_size: Some(10),
            out_request_no: "bq_1".into(),
        },
    )
    .await;
    assert_eq!(list.receiver_list.len(), 1);

    let mut pre = Precreate::new("tc_roy", yuan("10.00"), "分账");
    pre.extend_params = Some(ExtendParams {
        royalty_freeze: Some("true".into()),
        ..Default::default()
    });
    let qr = run(&app, &pre).await.qr_code;
    sandbox
        .post(
            "/control/qr/pay",
            json!({ "qr_code": qr, "buyer_id": buyer }),
        )
        .await;
    let trade_no = run(&app, &Query::by_out_trade_no("tc_roy")).await.trade_no;
    assert_eq!(
        run(
            &app,
            &OnsettleQuery {
                trade_no: trade_no.clone(),
                royalty_source: None
            }
        )
        .await
        .unsettled_amount
        .fen(),
        1000
    );

    let settled = run(
        &app,
        &Settle::new(
            "st_1",
            trade_no.clone(),
            vec![RoyaltyParameter::transfer(partner.clone(), yuan("1.50"))],
        )
        .and_finish(),
    )
    .await;
    let settle_no = settled.settle_no.expect("settle_no");
    let detail = run(&app, &SettleQuery::by_settle_no(settle_no)).await;
    assert!(!detail.royalty_detail_list.is_empty());
    assert_eq!(
        run(
            &app,
            &OnsettleQuery {
                trade_no,
                royalty_source: None
            }
        )
        .await
        .unsettled_amount
        .fen(),
        0
    );
    assert_eq!(sandbox.balance_fen(&partner).await, 150);
}

#[tokio::test]
async fn oauth_tokens_and_user_info_decode_for_user_id_and_open_id_apps() {
    let sandbox = spawn_sandbox().await;
    for (app_id, mode) in [
        ("2021000000000804", "user_id"),
        ("2021000000000805", "open_id"),
    ] {
        let app = sandbox.app_with(app_id, json!({ "id_mode": mode })).await;
        let buyer = sandbox.buyer("1.00").await;
        let code = sandbox
            .post("/control/oauth/authorize", json!({ "app_id": app_id, "buyer_id": buyer, "scope": "auth_user", "redirect_uri": "https://example.com/cb" }))
            .await["auth_code"]
            .as_str()
            .unwrap()
            .to_owned();
        let token = run(&app, &OauthToken::authorization_code(code.clone())).await;
        let info = app
            .client
            .execute(
                &UserInfoShare,
                &CallOptions::with_user_token(token.access_token.clone()),
            )
            .await
            .success()
            .expect("user info");
        match mode {
            "user_id" => {
                assert_eq!(token.user(), Some(UserRef::UserId(buyer.clone())));
                assert_eq!(info.user(), Some(UserRef::UserId(buyer.clone())));
            }
            _ => {
                assert!(token.user_id.is_none(), "an open_id app never sees user_id");
                assert!(matches!(token.user(), Some(UserRef::OpenId(_))));
                assert_eq!(token.user(), info.user());
            }
        }
        let reused = app
            .client
            .execute(
                &OauthToken::authorization_code(code),
                &CallOptions::default(),
            )
            .await;
        assert_eq!(
            reused.failure_sub_code(),
            Some("isv.code-invalid"),
            "a code works once"
        );
    }
}

#[tokio::test]
async fn pre_auth_voucher_freeze_query_and_unfreeze_decode() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000806").await;
    let buyer = sandbox.buyer("100.00").await;
    let v = run(
        &app,
        &VoucherCreate::new("cab_1", "cab_1_f", "开门柜押金", yuan("50.00")),
    )
    .await;
    assert!(v.code_url.is_some_and(|u| u.starts_with("http")));
    let f = sandbox
        .post(
            "/control/fund_auth/freeze",
            json!({ "app_id": app.app_id, "out_order_no": "cab_1", "buyer_id": buyer }),
        )
        .await;
    let auth_no = f["auth_no"].as_str().unwrap().to_owned();
    let d = run(
        &app,
        &OperationDetailQuery::by_out_numbers("cab_1", "cab_1_f"),
    )
    .await;
    assert_eq!(
        (d.order_status.as_deref(), d.rest_amount.map(Amount::fen)),
        (Some("AUTHORIZED"), Some(5000))
    );
    let u = run(
        &app,
        &Unfreeze {
            auth_no,
            out_request_no: "cab_1_u".into(),
            amount: yuan("50.00"),
            remark: "未取货".into(),
            extra_param: None,
        },
    )
    .await;
    assert_eq!(u.amount.map(Amount::fen), Some(5000));
    assert_eq!(
        sandbox.balance_fen(&buyer).await,
        10000,
        "everything released"
    );
}

#[tokio::test]
async fn a_signed_agreement_is_found_by_the_typed_query() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000807").await;
    let buyer = sandbox.buyer("100.00").await;
    let signed = sandbox
        .post("/control/agreements/sign", json!({ "app_id": app.app_id, "buyer_id": buyer, "external_agreement_no": "ext1", "personal_product_code": "GENERAL_WITHHOLDING_P", "sign_scene": "INDUSTRY|ALIPAYGO" }))
        .await;
    let no = signed["agreement_no"].as_str().unwrap().to_owned();
    let q = run(&app, &AgreementQuery::by_agreement_no(no.clone())).await;
    assert!(q.is_active(), "{q:?}");
    let charged = run(&app, &Pay::agreement("tc_agr", yuan("6.50"), "开门柜", no)).await;
    assert_eq!(charged.total_amount.fen(), 650);
}
