//! Trade APIs: the exact `biz_content`, decoding of realistic answers, classification of
//! outcomes, and the checks `validate()` makes before anything is sent.

use alipay::api::royalty::{RoyaltyDetailInfo, RoyaltyInfo};
use alipay::api::trade::{
    AuthConfirmMode, Cancel, CancelAction, Close, Create, Pay, Precreate, Query, Refund,
    RefundQuery,
};
use alipay::{Amount, ApiRequest, Failure, Outcome, TradeStatus, Unknown, UserRef};

use crate::api_support::{biz_content, client, process, refusal, signed_answer, unsigned_answer};

fn yuan(s: &str) -> Amount {
    s.parse().expect("amount")
}

const BUYER: &str = "2088102146225135";
const SELLER: &str = "2088101126765726";
const FTOKEN: &str = "fp0123456789abcdef0123456789abcdef0";

// ---- biz_content goldens -------------------------------------------------------------------

#[test]
fn precreate_with_royalty_info_serialises_the_typed_split() {
    let order = Precreate::new("order-42", yuan("3.5"), "可乐")
        .terminal_id("VM-0001")
        .royalty_info(RoyaltyInfo::new(vec![
            RoyaltyDetailInfo::amount_to(1, "2088101126708402", yuan("0.50")).from_account(SELLER),
            RoyaltyDetailInfo::percentage_to(2, "2088101126708403", 10),
        ]));
    assert_eq!(
        biz_content(&order),
        r#"{"out_trade_no":"order-42","total_amount":"3.50","subject":"可乐","terminal_id":"VM-0001","royalty_info":{"royalty_type":"ROYALTY","royalty_detail_infos":[{"serial_no":1,"trans_out":"2088101126765726","trans_in":"2088101126708402","amount":"0.50"},{"serial_no":2,"trans_in":"2088101126708403","amount_percentage":"10"}]}}"#
    );
}

#[test]
fn create_takes_the_buyer_as_user_id_or_open_id() {
    let by_id = Create::new(
        "order-43",
        yuan("12.5"),
        "饮料",
        UserRef::UserId(BUYER.into()),
    )
    .terminal_id("VM-0001");
    assert_eq!(
        biz_content(&by_id),
        r#"{"out_trade_no":"order-43","total_amount":"12.50","subject":"饮料","buyer_id":"2088102146225135","terminal_id":"VM-0001"}"#
    );
    let by_open_id = Create::new(
        "order-44",
        yuan("1"),
        "水",
        UserRef::OpenId("074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5".into()),
    );
    assert_eq!(
        biz_content(&by_open_id),
        r#"{"out_trade_no":"order-44","total_amount":"1.00","subject":"水","buyer_open_id":"074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"}"#
    );
}

#[test]
fn pay_by_bar_code() {
    let pay = Pay::bar_code("order-45", yuan("0.01"), "可乐", "283745920139457320")
        .terminal_id("VM-0001");
    assert_eq!(
        biz_content(&pay),
        r#"{"out_trade_no":"order-45","total_amount":"0.01","subject":"可乐","scene":"bar_code","auth_code":"283745920139457320","terminal_id":"VM-0001"}"#
    );
}

#[test]
fn pay_by_face_sends_security_code_and_terminal_params() {
    let pay = Pay::face("order-46", yuan("5"), "刷脸购物", FTOKEN)
        .store_id("TEST_ZOLOZ_STORE")
        .terminal_id("TEST_ZOLOZ_DEV1")
        .terminal_params(r#"{"terminalType":"IOT"}"#);
    assert_eq!(
        biz_content(&pay),
        r#"{"out_trade_no":"order-46","total_amount":"5.00","subject":"刷脸购物","scene":"security_code","auth_code":"fp0123456789abcdef0123456789abcdef0","product_code":"FACE_TO_FACE_PAYMENT","terminal_params":"{\"terminalType\":\"IOT\"}","store_id":"TEST_ZOLOZ_STORE","terminal_id":"TEST_ZOLOZ_DEV1"}"#
    );
}

#[test]
fn pay_against_a_freeze_sends_auth_no_and_confirm_mode_without_scene() {
    let pay = Pay::pre_auth(
        "order-47",
        yuan("8.8"),
        "开门柜购物",
        "2019061210002001660228733426",
        "PRE_AUTH",
        UserRef::UserId(BUYER.into()),
        SELLER,
    )
    .auth_confirm_mode(AuthConfirmMode::Complete);
    assert_eq!(
        biz_content(&pay),
        r#"{"out_trade_no":"order-47","total_amount":"8.80","subject":"开门柜购物","product_code":"PRE_AUTH","auth_no":"2019061210002001660228733426","auth_confirm_mode":"COMPLETE","buyer_id":"2088102146225135","seller_id":"2088101126765726"}"#
    );
}

#[test]
fn pay_under_an_agreement_sends_agreement_params() {
    let pay = Pay::agreement("order-48", yuan("3"), "开门柜购物", "20215919764488921116");
    assert_eq!(
        biz_content(&pay),
        r#"{"out_trade_no":"order-48","total_amount":"3.00","subject":"开门柜购物","product_code":"GENERAL_WITHHOLDING","agreement_params":{"agreement_no":"20215919764488921116"}}"#
    );
}

#[test]
fn query_cancel_close_refund_and_refund_query_bodies() {
    assert_eq!(
        biz_content(&Query::by_out_trade_no("order-42")),
        r#"{"out_trade_no":"order-42"}"#
    );
    assert_eq!(
        biz_content(&Cancel::by_out_trade_no("order-45")),
        r#"{"out_trade_no":"order-45"}"#
    );
    let close = Close {
        trade_no: Some("2023060122001462650500142964".into()),
        operator_id: Some("op1".into()),
        ..Default::default()
    };
    assert_eq!(
        biz_content(&close),
        r#"{"trade_no":"2023060122001462650500142964","operator_id":"op1"}"#
    );
    let refund = Refund::new("order-42", yuan("1.5"), "refund-42-1").reason("出货失败");
    assert_eq!(
        biz_content(&refund),
        r#"{"out_trade_no":"order-42","refund_amount":"1.50","out_request_no":"refund-42-1","refund_reason":"出货失败"}"#
    );
    assert_eq!(
        biz_content(&RefundQuery::new("order-42", "refund-42-1")),
        r#"{"out_trade_no":"order-42","out_request_no":"refund-42-1"}"#
    );
}

#[test]
fn read_only_flags_match_the_side_effects() {
    const { assert!(Query::READ_ONLY) };
    const { assert!(RefundQuery::READ_ONLY) };
    const { assert!(!Pay::READ_ONLY) };
    const { assert!(!Refund::READ_ONLY) };
    const { assert!(!Cancel::READ_ONLY) };
    const { assert!(!Close::READ_ONLY) };
    const { assert!(!Create::READ_ONLY) };
}

// ---- validation ----------------------------------------------------------------------------

#[test]
fn pay_refuses_bad_codes_and_mixed_modes_with_clear_messages() {
    let base = || Pay::bar_code("order-1", yuan("1"), "可乐", "283745920139457320");
    assert!(base().validate().is_ok());
    let cases: Vec<(Pay, &str)> = vec![
        (
            Pay::bar_code("o1", yuan("1"), "s", "123456789012345678"),
            "16 to 24 digits starting with 25 to 30",
        ),
        (
            Pay::bar_code("o1", yuan("1"), "s", "28374592013945"),
            "16 to 24 digits",
        ),
        (
            Pay::bar_code("o1", yuan("1"), "s", "28374592013945732a"),
            "16 to 24 digits",
        ),
        (Pay::face("o1", yuan("1"), "s", "fp123"), "face token"),
        (
            Pay::face("o1", yuan("1"), "s", "xx0123456789abcdef0123456789abcdef0"),
            "face token",
        ),
        (
            Pay {
                auth_no: Some("2019061210002001660228733426".into()),
                ..base()
            },
            "mutually exclusive",
        ),
        (
            Pay {
                auth_code: None,
                ..base()
            },
            "scene is only used with auth_code",
        ),
        (
            Pay {
                auth_code: None,
                scene: None,
                ..base()
            },
            "one of auth_code, auth_no or agreement_params is required",
        ),
        (
            base().auth_confirm_mode(AuthConfirmMode::Complete),
            "auth_confirm_mode is only used with auth_no",
        ),
        (
            Pay::pre_auth(
                "o1",
                yuan("1"),
                "s",
                "2019061210002001660228733426",
                "FACE_TO_FACE_PAYMENT",
                UserRef::UserId(BUYER.into()),
                SELLER,
            ),
            "product_code",
        ),
        (
            Pay {
                seller_id: None,
                ..Pay::pre_auth(
                    "o1",
                    yuan("1"),
                    "s",
                    "2019061210002001660228733426",
                    "PRE_AUTH",
                    UserRef::OpenId("074a1Cc".into()),
                    SELLER,
                )
            },
            "seller_id",
        ),
        (
            Pay {
                buyer_id: Some(BUYER.into()),
                buyer_open_id: Some("074a1Cc".into()),
                ..base()
            },
            "buyer_id or buyer_open_id, not both",
        ),
        (
            Pay::bar_code("o/1", yuan("1"), "s", "283745920139457320"),
            "out_trade_no",
        ),
        (
            Pay::bar_code("o1", Amount::ZERO, "s", "283745920139457320"),
            "total_amount must be at least 0.01",
        ),
        (
            Pay::bar_code("o1", yuan("1"), "a/b", "283745920139457320"),
            "subject must not contain",
        ),
    ];
    for (pay, expected) in cases {
        let msg = refusal(&pay);
        assert!(
            msg.contains(expected),
            "{msg:?} should mention {expected:?}"
        );
    }
}

#[test]
fn royalty_info_is_checked_against_the_trade() {
    let line =
        |serial, to: &str, amount: &str| RoyaltyDetailInfo::amount_to(serial, to, yuan(amount));
    let order = |lines| {
        Precreate::new("order-1", yuan("1.00"), "可乐").royalty_info(RoyaltyInfo::new(lines))
    };
    let cases: Vec<(Vec<RoyaltyDetailInfo>, &str)> = vec![
        (vec![], "must not be empty"),
        (
            vec![line(0, "2088101126708402", "0.10")],
            "positive integer",
        ),
        (
            vec![
                line(1, "2088101126708402", "0.10"),
                line(1, "2088101126708403", "0.10"),
            ],
            "unique",
        ),
        (
            vec![line(1, "2088101126708402", "0.00")],
            "amount must be at least 0.01",
        ),
        (
            vec![
                line(1, "2088101126708402", "0.60"),
                line(2, "2088101126708403", "0.50"),
            ],
            "more than the trade amount 1.00",
        ),
        (
            vec![line(1, "2088101126708402", "0.10").from_account("2088101126708402")],
            "trans_in must differ from trans_out",
        ),
        (
            vec![line(1, "208810112670840", "0.10")],
            "16-digit Alipay user id",
        ),
        (
            vec![line(1, "1088101126708402", "0.10")],
            "16-digit Alipay user id",
        ),
        (
            vec![RoyaltyDetailInfo {
                amount_percentage: Some(10),
                ..line(1, "2088101126708402", "0.10")
            }],
            "either amount or amount_percentage",
        ),
        (
            vec![RoyaltyDetailInfo {
                amount: None,
                ..line(1, "2088101126708402", "0.10")
            }],
            "one of amount or amount_percentage is required",
        ),
        (
            vec![RoyaltyDetailInfo::percentage_to(1, "2088101126708402", 101)],
            "1 to 100",
        ),
    ];
    for (lines, expected) in cases {
        let msg = refusal(&order(lines));
        assert!(
            msg.contains(expected),
            "{msg:?} should mention {expected:?}"
        );
    }
    let ok = order(vec![
        line(1, "2088101126708402", "0.60"),
        line(2, "2088101126708403", "0.40"),
    ]);
    assert!(ok.validate().is_ok());
}

#[test]
fn create_needs_a_buyer_that_is_not_the_seller() {
    let mut c = Create::new("order-1", yuan("1"), "水", UserRef::UserId(BUYER.into()));
    c.buyer_id = None;
    assert!(refusal(&c).contains("one of buyer_id or buyer_open_id is required"));
    let mut c = Create::new("order-1", yuan("1"), "水", UserRef::UserId(BUYER.into()));
    c.seller_id = Some(BUYER.into());
    assert!(refusal(&c).contains("must differ"));
    let mut c = Create::new("order-1", yuan("1"), "水", UserRef::UserId(BUYER.into()));
    c.disable_pay_channels = Some("pcredit".into());
    c.enable_pay_channels = Some("balance".into());
    assert!(refusal(&c).contains("mutually exclusive"));
}

#[test]
fn trade_id_pairs_and_refund_fields_are_checked() {
    assert!(refusal(&Query::default()).contains("one of out_trade_no or trade_no"));
    assert!(refusal(&Cancel::default()).contains("one of out_trade_no or trade_no"));
    assert!(refusal(&Close::default()).contains("one of out_trade_no or trade_no"));
    let no_id = Refund {
        refund_amount: yuan("1"),
        ..Default::default()
    };
    assert!(refusal(&no_id).contains("one of out_trade_no or trade_no"));
    assert!(refusal(&Refund::new("order-1", Amount::ZERO, "r1")).contains("refund_amount"));
    assert!(refusal(&Refund::new("order-1", yuan("1"), "r 1")).contains("out_request_no"));
    let long_reason = Refund::new("order-1", yuan("1"), "r1").reason("退".repeat(257));
    assert!(refusal(&long_reason).contains("refund_reason must be at most 256"));
    let bad_trade_no = Query::by_trade_no("2023-06");
    assert!(refusal(&bad_trade_no).contains("trade_no"));
    assert!(refusal(&RefundQuery::new("order-1", "")).contains("out_request_no"));
}

// ---- decoding --------------------------------------------------------------------------------

#[tokio::test]
async fn precreate_answer_unescapes_slashes() {
    let out = process::<Precreate>(
        r#"{"code":"10000","msg":"Success","out_trade_no":"6823789339978248","qr_code":"https:\/\/qr.alipay.com\/bavh4wjlxf12tper3a"}"#,
    )
    .await;
    let r = out.success().expect("success");
    assert_eq!(r.qr_code, "https://qr.alipay.com/bavh4wjlxf12tper3a");
}

#[tokio::test]
async fn pay_answer_decodes_amounts_buyer_and_fund_bills() {
    let r = process::<Pay>(
        r#"{"code":"10000","msg":"Success","buyer_logon_id":"159****5620","buyer_pay_amount":"8.88","buyer_user_id":"2088101117955611","fund_bill_list":[{"amount":"8.88","fund_channel":"ALIPAYACCOUNT"}],"gmt_payment":"2014-11-27 15:45:57","invoice_amount":"12.50","out_trade_no":"6823789339978248","point_amount":"0.00","receipt_amount":"8.88","store_name":"证大五道口店","total_amount":"8.88","trade_no":"2013112011001004330000121536","voucher_detail_list":[{"id":"2015102600073002039000002D5O","name":"XX超市5折优惠","type":"ALIPAY_FIX_VOUCHER","amount":"10.00","merchant_contribute":"9.00","other_contribute":"1.00"}]}"#,
    )
    .await
    .success()
    .expect("success");
    assert_eq!(r.total_amount.fen(), 888);
    assert_eq!(r.buyer(), Some(UserRef::UserId("2088101117955611".into())));
    assert_eq!(r.fund_bill_list[0].fund_channel, "ALIPAYACCOUNT");
    assert_eq!(r.store_name.as_deref(), Some("证大五道口店"));
    assert_eq!(
        r.voucher_detail_list[0].merchant_contribute,
        Some(yuan("9"))
    );
    assert_eq!(r.buyer_open_id, None);
}

#[tokio::test]
async fn query_answer_decodes_settle_info_and_open_id_buyers() {
    let r = process::<Query>(
        r#"{"code":"10000","msg":"Success","trade_no":"2013112011001004330000121536","out_trade_no":"6823789339978248","buyer_open_id":"074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5","buyer_logon_id":"159****5620","trade_status":"TRADE_SUCCESS","total_amount":"88.88","receipt_amount":"88.88","send_pay_date":"2014-11-27 15:45:57","store_name":"证大五道口店","subject":"可乐 330ml","trade_settle_info":{"trade_settle_detail_list":[{"operation_type":"replenish","operation_serial_no":"321","operation_dt":"2019-05-16 09:59:17","trans_out":"2088111111111111","trans_in":"2088111111111112","amount":"10.00"}],"trade_unsettled_amount":"78.88"}}"#,
    )
    .await
    .success()
    .expect("success");
    assert_eq!(r.trade_status, TradeStatus::TradeSuccess);
    assert_eq!(
        r.buyer(),
        Some(UserRef::OpenId(
            "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5".into()
        ))
    );
    let settle = r.trade_settle_info.expect("settle info");
    assert_eq!(settle.trade_unsettled_amount, Some(yuan("78.88")));
    assert_eq!(settle.trade_settle_detail_list[0].amount, Some(yuan("10")));
}

#[tokio::test]
async fn cancel_answer_decodes_action_and_retry_flag() {
    let r = process::<Cancel>(
        r#"{"code":"10000","msg":"Success","action":"refund","out_trade_no":"6823789339978248","retry_flag":"N","trade_no":"2013112011001004330000121536","gmt_refund_pay":"2014-11-27 15:45:57"}"#,
    )
    .await
    .success()
    .expect("success");
    assert_eq!(r.action, Some(CancelAction::Refund));
    assert!(!r.should_retry());
    let r =
        process::<Cancel>(r#"{"code":"10000","msg":"Success","action":"close","retry_flag":"Y"}"#)
            .await
            .success()
            .expect("success");
    assert_eq!(r.action, Some(CancelAction::Close));
    assert!(r.should_retry());
    let r = process::<Cancel>(r#"{"code":"10000","msg":"Success","action":"unfreeze"}"#)
        .await
        .success()
        .expect("an unknown action is tolerated");
    assert_eq!(r.action, Some(CancelAction::Other("unfreeze".into())));
    let r = process::<Close>(r#"{"code":"10000","msg":"Success","trade_no":"2013112111001004500000675971","out_trade_no":"YX_001"}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(r.out_trade_no.as_deref(), Some("YX_001"));
}

#[tokio::test]
async fn refund_answer_reads_fund_change_and_cumulative_refund_fee() {
    let r = process::<Refund>(
        r#"{"code":"10000","msg":"Success","buyer_logon_id":"159****5620","buyer_user_id":"2088101117955611","fund_change":"Y","gmt_refund_pay":"2014-11-27 15:45:57","out_trade_no":"6823789339978248","refund_fee":"88.88","send_back_fee":"1.8","store_name":"望湘园联洋店","trade_no":"2014112611001004680073956707","refund_detail_item_list":[{"amount":"88.88","fund_channel":"ALIPAYACCOUNT"}]}"#,
    )
    .await
    .success()
    .expect("success");
    assert!(r.funds_moved());
    assert_eq!(r.refund_fee.fen(), 8888);
    assert_eq!(r.send_back_fee, Some(yuan("1.80")));
    let r = process::<Refund>(
        r#"{"code":"10000","msg":"Success","buyer_open_id":"074a1Cc","fund_change":"N","out_trade_no":"o1","refund_fee":"1.00","trade_no":"2014112611001004680073956707"}"#,
    )
    .await
    .success()
    .expect("success");
    assert!(!r.funds_moved());
    assert_eq!(r.buyer(), Some(UserRef::OpenId("074a1Cc".into())));
    let r = process::<Refund>(
        r#"{"code":"10000","msg":"Success","out_trade_no":"o1","refund_fee":"1.00","trade_no":"2014112611001004680073956707"}"#,
    )
    .await
    .success()
    .expect("success");
    assert_eq!(r.fund_change, None);
    assert!(!r.funds_moved());
}

#[tokio::test]
async fn refund_query_without_status_means_not_refunded() {
    let empty = process::<RefundQuery>(r#"{"code":"10000","msg":"Success"}"#)
        .await
        .success()
        .expect("an empty answer is a success, not a failure");
    assert!(!empty.is_refunded());
    let done = process::<RefundQuery>(
        r#"{"code":"10000","msg":"Success","trade_no":"2014112611001004680073956707","out_trade_no":"20171120","out_request_no":"20171120","refund_reason":"用户退款请求","total_amount":"100.20","refund_amount":"12.33","refund_status":"REFUND_SUCCESS","gmt_refund_pay":"2014-11-27 15:45:57","deposit_back_info":{"has_deposit_back":"true","dback_status":"S","dback_amount":"1.01","bank_ack_time":"2020-06-02 14:03:48","est_bank_receipt_time":"2020-06-02 14:03:48"}}"#,
    )
    .await
    .success()
    .expect("success");
    assert!(done.is_refunded());
    assert_eq!(done.refund_amount, Some(yuan("12.33")));
    assert_eq!(
        done.deposit_back_info
            .and_then(|d| d.dback_status)
            .as_deref(),
        Some("S")
    );
}

// ---- classification ------------------------------------------------------------------------

#[tokio::test]
async fn business_failure_is_a_definite_failure() {
    let out = process::<Query>(
        r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"交易不存在"}"#,
    )
    .await;
    assert_eq!(out.failure_sub_code(), Some("ACQ.TRADE_NOT_EXIST"));
}

#[tokio::test]
async fn system_error_and_20000_leave_the_result_unknown() {
    let out = process::<Pay>(
        r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","sub_msg":"系统错误"}"#,
    )
    .await;
    assert!(
        matches!(out, Outcome::Unknown(Unknown::Gateway(ref e)) if e.sub_code() == "ACQ.SYSTEM_ERROR")
    );
    let out = process::<Pay>(
        r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error","sub_msg":"系统繁忙"}"#,
    )
    .await;
    assert!(matches!(out, Outcome::Unknown(Unknown::Gateway(ref e)) if e.code == "20000"));
}

#[tokio::test]
async fn pay_10003_is_in_process_with_the_trade_number() {
    let out = process::<Pay>(
        r#"{"code":"10003","msg":"order success pay inprocess","trade_no":"2013112011001004330000121536","out_trade_no":"6823789339978248","total_amount":"2100.00"}"#,
    )
    .await;
    assert_eq!(
        out,
        Outcome::Unknown(Unknown::InProcess {
            trade_no: Some("2013112011001004330000121536".into())
        })
    );
}

#[tokio::test]
async fn an_unsigned_success_is_never_accepted() {
    let body = unsigned_answer(
        "alipay.trade.pay",
        r#"{"code":"10000","msg":"Success","trade_no":"2013112011001004330000121536","out_trade_no":"o1","total_amount":"1.00"}"#,
    );
    let out = client()
        .process::<alipay::api::trade::PayResponse>("alipay.trade.pay", &body)
        .await;
    assert_eq!(out, Outcome::Unknown(Unknown::UnsignedSuccess));
}

#[tokio::test]
async fn one_tampered_byte_breaks_the_signature() {
    let body = signed_answer(
        "alipay.trade.pay",
        r#"{"code":"10000","msg":"Success","trade_no":"2013112011001004330000121536","out_trade_no":"o1","total_amount":"1.00"}"#,
    );
    let text = String::from_utf8(body).expect("utf-8");
    let tampered = text.replacen(r#""total_amount":"1.00""#, r#""total_amount":"9.00""#, 1);
    assert_ne!(text, tampered);
    let out = client()
        .process::<alipay::api::trade::PayResponse>("alipay.trade.pay", tampered.as_bytes())
        .await;
    assert_eq!(out, Outcome::Unknown(Unknown::BadSignature));
}

#[tokio::test]
async fn error_response_is_a_failure_signed_or_not() {
    let inner = r#"{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.code-invalid","sub_msg":"授权码code无效"}"#;
    let sign = crate::api_support::alipay_key().sign(inner.as_bytes());
    let signed = format!(r#"{{"error_response":{inner},"sign":"{sign}"}}"#);
    let unsigned = format!(r#"{{"error_response":{inner}}}"#);
    for body in [signed, unsigned] {
        let out = client()
            .process::<alipay::api::oauth::OauthTokenResponse>(
                "alipay.system.oauth.token",
                body.as_bytes(),
            )
            .await;
        match out {
            Outcome::Failure(Failure::Alipay(e)) => {
                assert_eq!(e.sub_code(), "isv.code-invalid");
                assert_eq!(e.sub_msg.as_deref(), Some("授权码code无效"));
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_wrong_typed_field_is_malformed_and_named() {
    let out = process::<Query>(
        r#"{"code":"10000","msg":"Success","trade_no":"2013112011001004330000121536","out_trade_no":"o1","trade_status":"TRADE_SUCCESS","total_amount":8.88}"#,
    )
    .await;
    match out {
        Outcome::Unknown(Unknown::Malformed(msg)) => {
            assert!(msg.contains("total_amount"), "{msg}")
        }
        other => panic!("expected malformed, got {other:?}"),
    }
    let out = process::<Refund>(
        r#"{"code":"10000","msg":"Success","out_trade_no":"o1","refund_fee":"1.00","trade_no":"2014112611001004680073956707","fund_change":"maybe"}"#,
    )
    .await;
    assert!(
        matches!(out, Outcome::Unknown(Unknown::Malformed(ref m)) if m.contains("fund_change"))
    );
}

#[test]
fn discountable_parts_must_add_up_and_channel_lists_exclude_each_other() {
    let mut p = Precreate::new("order-1", yuan("10"), "可乐");
    p.discountable_amount = Some(yuan("6"));
    p.undiscountable_amount = Some(yuan("4"));
    assert!(p.validate().is_ok());
    assert_eq!(
        biz_content(&p),
        r#"{"out_trade_no":"order-1","total_amount":"10.00","subject":"可乐","discountable_amount":"6.00","undiscountable_amount":"4.00"}"#
    );
    p.undiscountable_amount = Some(yuan("5"));
    assert!(refusal(&p).contains("must equal total_amount 10.00"));
    p.undiscountable_amount = None;
    p.discountable_amount = Some(yuan("11"));
    assert!(refusal(&p).contains("exceeds total_amount"));
    let mut pay = Pay::bar_code("order-2", yuan("1"), "可乐", "283745920139457320");
    pay.disable_pay_channels = Some("pcredit".into());
    assert!(pay.validate().is_ok());
    pay.enable_pay_channels = Some("balance".into());
    assert!(refusal(&pay).contains("mutually exclusive"));
}

#[test]
fn timeouts_follow_the_documented_syntax() {
    let with = |t: &str| Precreate::new("order-1", yuan("1"), "可乐").timeout_express(t);
    for ok in ["1m", "90m", "3h", "15d", "1c", "21600m"] {
        assert!(with(ok).validate().is_ok(), "{ok}");
    }
    for bad in ["1.5h", "0m", "16d", "21601m", "5s", "m", "", "2c", "-1h"] {
        let msg = refusal(&with(bad));
        assert!(
            msg.contains("timeout_express must be an integer"),
            "{bad}: {msg}"
        );
    }
    let mut p = Precreate::new("order-1", yuan("1"), "可乐");
    p.time_expire = Some("2026-11-28T12:00:00".into());
    assert!(refusal(&p).contains("time_expire must be yyyy-MM-dd HH:mm:ss"));
    p.time_expire = Some("2026-11-28 12:00:00".into());
    p.qr_code_timeout_express = Some("3x".into());
    assert!(refusal(&p).contains("qr_code_timeout_express"));
    let mut v = alipay::api::fund_auth::VoucherCreate::new("f1", "f1-1", "押金", yuan("1"));
    v.pay_timeout = Some("1.5h".into());
    assert!(refusal(&v).contains("pay_timeout"));
}
