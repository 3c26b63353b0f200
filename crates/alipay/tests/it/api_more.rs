//! Profit sharing, OAuth, fund authorisation, agreements, face and bill-URL APIs.

use alipay::api::agreement::{AgreementQuery, PageSign, PeriodRuleParams};
use alipay::api::bill::{BillDownloadUrlQuery, BillType};
use alipay::api::face::{FtokenQuery, MerchantInfo, SmilepayInitialize};
use alipay::api::fund_auth::{AppFreeze, OperationDetailQuery, Unfreeze, VoucherCreate};
use alipay::api::oauth::{OauthToken, UserInfoShare};
use alipay::api::royalty::{
    OnsettleQuery, RelationBatchQuery, RelationBind, RelationUnbind, RoyaltyAccountType,
    RoyaltyEntity, RoyaltyMode, RoyaltyParameter, Settle, SettleQuery,
};
use alipay::sign::{SignScope, string_to_sign};
use alipay::{Amount, ApiRequest, CallOptions, UserRef};
use time::OffsetDateTime;

use crate::api_support::{app_key, biz_content, client, process, refusal};

fn yuan(s: &str) -> Amount {
    s.parse().expect("amount")
}

const TRADE_NO: &str = "2023060122001462650500142964";

// ---- profit sharing ------------------------------------------------------------------------

#[test]
fn settle_body_follows_the_royalty_parameters_pojo() {
    let mut p = RoyaltyParameter::transfer("2088101126708402", yuan("0.3"));
    p.trans_out = Some("2088101126765726".into());
    p.desc = Some("分账给运营商".into());
    p.royalty_scene = Some("平台服务费".into());
    let mut percent = RoyaltyParameter::transfer("2088101126708403", yuan("1"));
    percent.amount = None;
    percent.amount_percentage = Some(20);
    let mut settle = Settle::new("settle_42", TRADE_NO, vec![p, percent]).and_finish();
    settle.royalty_mode = Some(RoyaltyMode::Sync);
    assert_eq!(
        biz_content(&settle),
        r#"{"out_request_no":"settle_42","trade_no":"2023060122001462650500142964","royalty_parameters":[{"royalty_type":"transfer","trans_out":"2088101126765726","trans_in":"2088101126708402","trans_in_type":"userId","amount":"0.30","desc":"分账给运营商","royalty_scene":"平台服务费"},{"royalty_type":"transfer","trans_in":"2088101126708403","trans_in_type":"userId","amount_percentage":20}],"royalty_mode":"sync","extend_params":{"royalty_finish":"true"}}"#
    );
    assert_eq!(
        biz_content(&Settle::finish("settle_43", TRADE_NO)),
        r#"{"out_request_no":"settle_43","trade_no":"2023060122001462650500142964","extend_params":{"royalty_finish":"true"}}"#
    );
}

#[test]
fn settle_refuses_bad_requests() {
    let ok = || {
        Settle::new(
            "settle_1",
            TRADE_NO,
            vec![RoyaltyParameter::transfer("2088101126708402", yuan("1"))],
        )
    };
    assert!(ok().validate().is_ok());
    let mut no_split = ok();
    no_split.royalty_parameters = None;
    assert!(refusal(&no_split).contains("royalty_parameters is required unless"));
    let mut dash = ok();
    dash.out_request_no = "settle-1".into();
    assert!(refusal(&dash).contains("out_request_no must be 1 to 32"));
    let mut bad_percent = ok();
    if let Some(list) = bad_percent.royalty_parameters.as_mut() {
        list[0].amount_percentage = Some(0);
        list[0].amount = None;
    }
    assert!(
        refusal(&bad_percent).contains("royalty_parameters[0].amount_percentage must be 1 to 100")
    );
    let mut scene = ok();
    if let Some(list) = scene.royalty_parameters.as_mut() {
        list[0].royalty_scene = Some("佣金".into());
    }
    assert!(refusal(&scene).contains("royalty_scene"));
    let mut finish_amount = ok();
    finish_amount.extend_params = Some(alipay::api::royalty::SettleExtendParams {
        royalty_finish: None,
        royalty_finish_amount: Some(yuan("1")),
    });
    assert!(refusal(&finish_amount).contains("royalty_finish=true"));
    assert!(refusal(&SettleQuery::default()).contains("settle_no"));
    assert!(
        SettleQuery::by_request("settle_1", TRADE_NO)
            .validate()
            .is_ok()
    );
}

#[test]
fn relation_bodies_and_checks() {
    let bind = RelationBind {
        out_request_no: "bind-001".into(),
        receiver_list: vec![
            RoyaltyEntity::user_id("2088101126708402"),
            RoyaltyEntity {
                kind: RoyaltyAccountType::LoginName,
                account: "operator@example.com".into(),
                name: Some("张三".into()),
                memo: Some("运营商".into()),
            },
        ],
    };
    assert_eq!(
        biz_content(&bind),
        r#"{"out_request_no":"bind-001","receiver_list":[{"type":"userId","account":"2088101126708402"},{"type":"loginName","account":"operator@example.com","name":"张三","memo":"运营商"}]}"#
    );
    let unbind = RelationUnbind {
        out_request_no: "unbind-001".into(),
        receiver_list: vec![RoyaltyEntity {
            kind: RoyaltyAccountType::LoginName,
            account: "operator@example.com".into(),
            name: None,
            memo: None,
        }],
    };
    assert!(refusal(&unbind).contains("name is required for a loginName receiver"));
    let empty = RelationBind {
        out_request_no: "b".into(),
        receiver_list: vec![],
    };
    assert!(refusal(&empty).contains("receiver_list must not be empty"));
    let q = RelationBatchQuery {
        page_num: Some(1),
        page_size: Some(20),
        out_request_no: "q-001".into(),
    };
    assert_eq!(
        biz_content(&q),
        r#"{"page_num":1,"page_size":20,"out_request_no":"q-001"}"#
    );
    assert_eq!(
        biz_content(&OnsettleQuery {
            trade_no: TRADE_NO.into(),
            royalty_source: Some("unsettled".into())
        }),
        r#"{"trade_no":"2023060122001462650500142964","royalty_source":"unsettled"}"#
    );
}

#[tokio::test]
async fn royalty_answers_decode() {
    let r = process::<Settle>(r#"{"code":"10000","msg":"Success","trade_no":"2023060122001462650500142964","settle_no":"20230601002530020065620300064709"}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(
        r.settle_no.as_deref(),
        Some("20230601002530020065620300064709")
    );
    let r = process::<SettleQuery>(r#"{"code":"10000","msg":"Success","out_request_no":"settle_42","operation_dt":"2023-06-01 17:35:26","royalty_detail_list":[{"operation_type":"transfer","execute_dt":"2023-06-01 17:35:26","trans_out":"2088101126765726","trans_out_type":"userId","trans_in":"2088101126708402","trans_in_type":"userId","amount":"0.30","state":"SUCCESS","detail_id":"20230601002530020065620300064710"},{"operation_type":"transfer","trans_in":"2088101126708403","amount":"0.20","state":"FAIL","error_code":"TXN_RESULT_ACCOUNT_STATUS_NOT_VALID","error_desc":"分账收入方账户状态异常"}]}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(r.royalty_detail_list.len(), 2);
    assert_eq!(
        r.royalty_detail_list[1].error_desc.as_deref(),
        Some("分账收入方账户状态异常")
    );
    let r =
        process::<OnsettleQuery>(r#"{"code":"10000","msg":"Success","unsettled_amount":"0.70"}"#)
            .await
            .success()
            .expect("success");
    assert_eq!(r.unsettled_amount, yuan("0.7"));
    let r = process::<RelationBind>(r#"{"code":"10000","msg":"Success","result_code":"SUCCESS"}"#)
        .await
        .success()
        .expect("success");
    assert!(r.is_success());
    let r = process::<RelationBatchQuery>(r#"{"code":"10000","msg":"Success","result_code":"SUCCESS","receiver_list":[{"type":"userId","account":"2088101126708402","memo":"运营商","login_name":"ope***@example.com"}],"total_page_num":1,"total_record_num":"1","current_page_num":1,"current_page_size":20}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(r.total_record_num, Some(1));
    assert_eq!(r.receiver_list[0].kind.as_deref(), Some("userId"));
}

// ---- OAuth -----------------------------------------------------------------------------------

#[test]
fn oauth_token_sends_top_level_params_and_no_biz_content() {
    let req = OauthToken::authorization_code("4b203fe6c11548bcabd8da5bb087a83b");
    let signed = client()
        .sign_request(&req, &CallOptions::default(), OffsetDateTime::UNIX_EPOCH)
        .expect("signed");
    assert_eq!(
        signed.body,
        vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            (
                "code".to_owned(),
                "4b203fe6c11548bcabd8da5bb087a83b".to_owned()
            ),
        ]
    );
    assert!(signed.all().all(|(k, _)| k != "biz_content"));
    let refresh = OauthToken::refresh_token("201208134b203fe6c11548bcabd8da5bb087a83b");
    let signed = client()
        .sign_request(
            &refresh,
            &CallOptions::default(),
            OffsetDateTime::UNIX_EPOCH,
        )
        .expect("signed");
    assert!(
        signed
            .all()
            .any(|(k, v)| k == "grant_type" && v == "refresh_token")
    );
    assert!(refusal(&OauthToken::authorization_code("")).contains("code"));
}

#[test]
fn user_info_share_carries_the_user_token_as_auth_token() {
    let signed = client()
        .sign_request(
            &UserInfoShare,
            &CallOptions::with_user_token("authusrB2d7c6b8e3f9a4c1d8e7f6a5b4c3d2e1"),
            OffsetDateTime::UNIX_EPOCH,
        )
        .expect("signed");
    assert!(signed.body.is_empty());
    assert!(
        signed
            .query
            .iter()
            .any(|(k, v)| k == "auth_token" && v == "authusrB2d7c6b8e3f9a4c1d8e7f6a5b4c3d2e1")
    );
}

#[tokio::test]
async fn oauth_answers_accept_numbers_or_strings_and_both_ids() {
    let r = process::<OauthToken>(r#"{"code":"10000","msg":"Success","user_id":"2088102150477652","access_token":"20120823ac6ffaa4d2d84e7384bf983531473993","expires_in":"3600","refresh_token":"20120823ac6ffdsdf2d84e7384bf983531473993","re_expires_in":2592000,"auth_start":"2010-11-11 11:11:11"}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(r.expires_in, Some(3600));
    assert_eq!(r.re_expires_in, Some(2592000));
    assert_eq!(r.user(), Some(UserRef::UserId("2088102150477652".into())));
    let r = process::<OauthToken>(r#"{"code":"10000","msg":"Success","open_id":"074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5","access_token":"authusrB","expires_in":1296000}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(r.expires_in, Some(1296000));
    assert!(matches!(r.user(), Some(UserRef::OpenId(_))));
    let r = process::<UserInfoShare>(r#"{"code":"10000","msg":"Success","user_id":"2088102104794936","avatar":"http:\/\/tfsimg.alipay.com\/images\/partner\/T1uIxXXbpXXXXXXXX","province":"安徽省","city":"安庆","nick_name":"支付宝小二","gender":"F","age":30}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(
        r.avatar.as_deref(),
        Some("http://tfsimg.alipay.com/images/partner/T1uIxXXbpXXXXXXXX")
    );
    assert_eq!(r.age.as_deref(), Some("30"));
    assert_eq!(r.nick_name.as_deref(), Some("支付宝小二"));
}

#[test]
fn authorize_url_encodes_the_redirect() {
    let url = client().authorize_url("auth_user", "https://vend.example.com/cb?m=VM-0001", "s1");
    assert_eq!(
        url,
        "https://openauth.alipay.com/oauth2/publicAppAuthorize.htm?app_id=2021000122671080&scope=auth_user&redirect_uri=https%3A%2F%2Fvend.example.com%2Fcb%3Fm%3DVM-0001&state=s1"
    );
}

// ---- fund authorisation --------------------------------------------------------------------

#[test]
fn app_freeze_is_signed_locally_with_sdk_execute() {
    let freeze = AppFreeze {
        out_order_no: "freeze-001".into(),
        out_request_no: "freeze-001-1".into(),
        order_title: "开门柜预授权".into(),
        amount: yuan("50"),
        product_code: "PRE_AUTH_ONLINE".into(),
        payee_user_id: Some("2088101126765726".into()),
        scene_code: Some("ONLINE_AUTH_COMMON_SCENE".into()),
        ..Default::default()
    };
    assert_eq!(
        biz_content(&freeze),
        r#"{"out_order_no":"freeze-001","out_request_no":"freeze-001-1","order_title":"开门柜预授权","amount":"50.00","product_code":"PRE_AUTH_ONLINE","payee_user_id":"2088101126765726","scene_code":"ONLINE_AUTH_COMMON_SCENE"}"#
    );
    let order_str = client()
        .sdk_execute(
            &freeze,
            &CallOptions::default().notify_url("https://vend.example.com/notify"),
        )
        .expect("orderStr");
    let pairs: Vec<(String, String)> = alipay::form::decode(order_str.as_bytes())
        .expect("form")
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k).expect("k"),
                String::from_utf8(v).expect("v"),
            )
        })
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("method"), Some("alipay.fund.auth.order.app.freeze"));
    assert_eq!(get("notify_url"), Some("https://vend.example.com/notify"));
    let sign = get("sign").expect("sign");
    let to_sign = string_to_sign(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignScope::Request,
    );
    assert!(
        app_key()
            .public_key()
            .verify(alipay::SignType::Rsa2, to_sign.as_bytes(), sign)
    );
    let mut bad = freeze.clone();
    bad.product_code = "PRE_AUTH".into();
    assert!(refusal(&bad).contains("PRE_AUTH_ONLINE"));
}

#[test]
fn voucher_unfreeze_and_detail_query_bodies_and_checks() {
    let v = VoucherCreate::new("freeze-002", "freeze-002-1", "开门柜押金", yuan("99.5"));
    assert_eq!(
        biz_content(&v),
        r#"{"out_order_no":"freeze-002","out_request_no":"freeze-002-1","order_title":"开门柜押金","amount":"99.50","product_code":"PRE_AUTH"}"#
    );
    let u = Unfreeze {
        auth_no: "2014070800002001550000014417".into(),
        out_request_no: "unfreeze-002-1".into(),
        amount: yuan("99.5"),
        remark: "未取商品，解冻".into(),
        extra_param: Some(r#"{"unfreezeBizInfo":"{\"bizComplete\":\"true\"}"}"#.into()),
    };
    assert_eq!(
        biz_content(&u),
        r#"{"auth_no":"2014070800002001550000014417","out_request_no":"unfreeze-002-1","amount":"99.50","remark":"未取商品，解冻","extra_param":"{\"unfreezeBizInfo\":\"{\\\"bizComplete\\\":\\\"true\\\"}\"}"}"#
    );
    let mut no_remark = u.clone();
    no_remark.remark.clear();
    assert!(refusal(&no_remark).contains("remark is required"));
    let mut long_remark = u.clone();
    long_remark.remark = "解".repeat(101);
    assert!(refusal(&long_remark).contains("remark must be at most 100"));
    assert_eq!(
        biz_content(&OperationDetailQuery::by_out_numbers(
            "freeze-002",
            "freeze-002-1"
        )),
        r#"{"out_order_no":"freeze-002","out_request_no":"freeze-002-1"}"#
    );
    let half = OperationDetailQuery {
        auth_no: Some("2014070800002001550000014417".into()),
        ..Default::default()
    };
    assert!(refusal(&half).contains("operation_id or out_request_no"));
    let mut zero = v.clone();
    zero.amount = Amount::ZERO;
    assert!(refusal(&zero).contains("amount must be at least 0.01"));
}

#[tokio::test]
async fn fund_auth_answers_decode() {
    let r = process::<VoucherCreate>(r#"{"code":"10000","msg":"Success","out_order_no":"freeze-002","out_request_no":"freeze-002-1","code_type":"QRCODE","code_value":"https:\/\/qr.alipay.com\/bax03431ljhokirwl38f00a7","code_url":"https:\/\/qr.alipay.com\/bax03431ljhokirwl38f00a7"}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(
        r.code_url.as_deref(),
        Some("https://qr.alipay.com/bax03431ljhokirwl38f00a7")
    );
    let r = process::<OperationDetailQuery>(r#"{"code":"10000","msg":"Success","auth_no":"2014070800002001550000014417","out_order_no":"freeze-002","order_status":"AUTHORIZED","total_freeze_amount":"99.50","rest_amount":"99.50","total_pay_amount":"0.00","order_title":"开门柜押金","payer_logon_id":"152****1234","payer_open_id":"074a1Cc","operation_id":"20140216010020004800015","out_request_no":"freeze-002-1","amount":"99.50","operation_type":"FREEZE","status":"SUCCESS","gmt_create":"2014-07-08 15:29:52","gmt_trans":"2014-07-08 15:29:53","pre_auth_type":"CREDIT_AUTH"}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(r.rest_amount, Some(yuan("99.5")));
    assert_eq!(r.payer(), Some(UserRef::OpenId("074a1Cc".into())));
    let r = process::<Unfreeze>(r#"{"code":"10000","msg":"Success","auth_no":"2014070800002001550000014417","out_order_no":"freeze-002","operation_id":"20161012405744018102","out_request_no":"unfreeze-002-1","amount":"99.50","status":"SUCCESS","gmt_trans":"2018-07-06 14:00:00"}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(r.status.as_deref(), Some("SUCCESS"));
}

// ---- agreements --------------------------------------------------------------------------

#[test]
fn page_sign_builds_a_signed_page_url() {
    let sign = PageSign::withholding("VEND0001USER42");
    assert_eq!(
        biz_content(&sign),
        r#"{"product_code":"GENERAL_WITHHOLDING","personal_product_code":"GENERAL_WITHHOLDING_P","sign_scene":"INDUSTRY|ALIPAYGO","access_params":{"channel":"ALIPAYAPP"},"external_agreement_no":"VEND0001USER42"}"#
    );
    let mut options = CallOptions::default().notify_url("https://vend.example.com/agreement");
    options.return_url = Some("https://vend.example.com/signed".into());
    let url = client().page_url(&sign, &options).expect("url");
    assert!(
        url.starts_with("https://openapi.alipay.com/gateway.do?"),
        "{url}"
    );
    assert!(url.contains("method=alipay.user.agreement.page.sign"));
    assert!(url.contains("return_url=https%3A%2F%2Fvend.example.com%2Fsigned"));
    assert!(url.contains("&sign="));
    let mut bad = PageSign::withholding("VEND-0001");
    assert!(refusal(&bad).contains("external_agreement_no must be 1 to 32 letters or digits"));
    bad.external_agreement_no = Some("VEND0001".into());
    bad.sign_scene = None;
    assert!(refusal(&bad).contains("sign_scene"));
    let mut periodic = PageSign::withholding("VEND0002");
    periodic.product_code = Some("CYCLE_PAY_AUTH".into());
    assert!(refusal(&periodic).contains("period_rule_params"));
    periodic.period_rule_params = Some(PeriodRuleParams {
        period_type: "WEEK".into(),
        period: 1,
        execute_time: "2026-12-01".into(),
        single_amount: yuan("10"),
        total_amount: None,
        total_payments: None,
    });
    assert!(refusal(&periodic).contains("DAY or MONTH"));
    let mut validity = PageSign::withholding("VEND0003");
    validity.sign_validity_period = Some("1y".into());
    assert!(refusal(&validity).contains("sign_validity_period"));
}

#[tokio::test]
async fn agreement_query_body_checks_and_answer() {
    assert_eq!(
        biz_content(&AgreementQuery::by_agreement_no("20215919764488921116")),
        r#"{"agreement_no":"20215919764488921116"}"#
    );
    let by_user = AgreementQuery {
        alipay_user_id: Some("2088101122675263".into()),
        ..Default::default()
    };
    assert!(refusal(&by_user).contains("personal_product_code and sign_scene"));
    assert!(refusal(&AgreementQuery::default()).contains("agreement_no"));
    let r = process::<AgreementQuery>(r#"{"code":"10000","msg":"Success","principal_id":"2088101122675263","valid_time":"2017-05-01 00:00:00","alipay_logon_id":"138****1234","invalid_time":"2115-02-01 00:00:00","sign_scene":"INDUSTRY|ALIPAYGO","agreement_no":"20215919764488921116","third_party_type":"PARTNER","status":"NORMAL","sign_time":"2017-05-01 00:00:00","personal_product_code":"GENERAL_WITHHOLDING_P","external_agreement_no":"VEND0001USER42","single_quota":"500.00"}"#)
        .await
        .success()
        .expect("success");
    assert!(r.is_active());
    assert_eq!(r.single_quota, Some(yuan("500")));
}

// ---- face ----------------------------------------------------------------------------------

#[test]
fn face_initialize_and_ftoken_query_bodies() {
    let init = SmilepayInitialize {
        apdid_token: "dZdpW5rJWBBCOXRAYv6I66f3djq2Ss6b".into(),
        app_name: "com.alipay.zoloz.smile".into(),
        app_version: "1.0.0".into(),
        bio_meta_info: "3.46.0:2916352,2".into(),
        device_type: Some("android".into()),
        zim_ver: Some("1.0.0".into()),
        merchant_info: Some(MerchantInfo {
            device_num: Some("TEST_ZOLOZ_DEV1".into()),
            store_code: Some("TEST_ZOLOZ_STORE".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        biz_content(&init),
        r#"{"apdid_token":"dZdpW5rJWBBCOXRAYv6I66f3djq2Ss6b","app_name":"com.alipay.zoloz.smile","app_version":"1.0.0","bio_meta_info":"3.46.0:2916352,2","device_type":"android","zim_ver":"1.0.0","merchant_info":{"device_num":"TEST_ZOLOZ_DEV1","store_code":"TEST_ZOLOZ_STORE"}}"#
    );
    assert!(refusal(&SmilepayInitialize::default()).contains("apdid_token is required"));
    let q = FtokenQuery {
        ftoken: "fp0123456789abcdef0123456789abcdef0".into(),
        biz_type: "1".into(),
        ..Default::default()
    };
    assert_eq!(
        biz_content(&q),
        r#"{"ftoken":"fp0123456789abcdef0123456789abcdef0","biz_type":"1"}"#
    );
    let mut bad = q.clone();
    bad.biz_type = "5".into();
    assert!(refusal(&bad).contains("biz_type"));
    bad.ftoken = "fp0123".into();
    assert!(refusal(&bad).contains("face token"));
}

#[tokio::test]
async fn face_answers_decode() {
    let r = process::<SmilepayInitialize>(r#"{"code":"10000","msg":"Success","zim_id":"5d1b6b4f4b7a4c6b8d3e2f1a0b9c8d7e","zim_init_client_data":"eyJ6aW1JZCI6IjVkMWI2YjRm\/In0=","ret_code_sub":"Z0000","ret_message_sub":"成功"}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(
        r.zim_init_client_data.as_deref(),
        Some("eyJ6aW1JZCI6IjVkMWI2YjRm/In0=")
    );
    let r = process::<FtokenQuery>(r#"{"code":"10000","msg":"Success","uid":"2088102146225135","age_check_result":"true","uid_tel_pair_list":[{"user_id":"2088102146225135"}]}"#)
        .await
        .success()
        .expect("success");
    assert_eq!(
        r.uid_tel_pair_list[0].user_id.as_deref(),
        Some("2088102146225135")
    );
}

// ---- bill URL ------------------------------------------------------------------------------

#[tokio::test]
async fn bill_url_query_body_checks_and_answer() {
    assert_eq!(
        biz_content(&BillDownloadUrlQuery::trade_daily("2019-09-16")),
        r#"{"bill_type":"trade","bill_date":"2019-09-16","secure":"true"}"#
    );
    let monthly = BillDownloadUrlQuery {
        bill_type: BillType::Signcustomer,
        bill_date: "2019-09".into(),
        smid: None,
        secure: None,
    };
    assert_eq!(
        biz_content(&monthly),
        r#"{"bill_type":"signcustomer","bill_date":"2019-09"}"#
    );
    for bad in [
        "2019/09/16",
        "2019-13-01",
        "20190916",
        "2019-09-16 00:00:00",
        "",
    ] {
        let msg = refusal(&BillDownloadUrlQuery::trade_daily(bad));
        assert!(msg.contains("bill_date must be yyyy-MM-dd"), "{msg}");
    }
    let r = process::<BillDownloadUrlQuery>(r#"{"code":"10000","msg":"Success","bill_download_url":"http:\/\/dwbillcenter.alipay.com\/downloadBillFile.resource?bizType=X&userId=X&fileType=X&bizDates=X&downloadFileName=X&fileId=X"}"#)
        .await
        .success()
        .expect("success");
    assert!(
        r.bill_download_url
            .starts_with("http://dwbillcenter.alipay.com/downloadBillFile.resource?")
    );
    let out = process::<BillDownloadUrlQuery>(r#"{"code":"40004","msg":"Business Failed","sub_code":"isp.bill_not_exist","sub_msg":"账单不存在"}"#).await;
    assert_eq!(out.failure_sub_code(), Some("isp.bill_not_exist"));
}
