//! Notifications built as Alipay builds them (params, rsaCheckV1 string, RSA2 by the "Alipay"
//! key, form encoding) are verified and typed by `notify::parse`; every bad input of
//! reliability.md §3.3 that this layer can judge is refused.

use alipay::form::FormError;
use alipay::notify::{Notification, NotifyError, parse};
use alipay::{Amount, AppPrivateKey, TradeStatus, UserRef};

use crate::support::{
    alipay_private_key, alipay_public_key, notification_with, openssl_sha1_sign,
    reference_form_encode, signed_notification, stranger_key,
};

const FUND_BILL_LIST: &str = r#"[{"amount":"3.00","fundChannel":"ALIPAYACCOUNT"},{"amount":"0.50","fundChannel":"MDISCOUNT"}]"#;

/// A `trade_status_sync` for a paid 3.50 order, as Alipay sends it.
fn trade_params() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("gmt_create", "2024-05-13 17:49:21"),
        ("charset", "utf-8"),
        ("seller_email", "ops@openvend.example"),
        ("subject", "可口可乐 330ml"),
        ("buyer_id", "2088102177846880"),
        ("invoice_amount", "3.50"),
        ("notify_id", "2024051300222174930046880512345678"),
        ("fund_bill_list", FUND_BILL_LIST),
        ("notify_type", "trade_status_sync"),
        ("trade_status", "TRADE_SUCCESS"),
        ("receipt_amount", "3.50"),
        ("buyer_pay_amount", "3.50"),
        ("app_id", "2021000122671080"),
        ("seller_id", "2088102177649450"),
        ("gmt_payment", "2024-05-13 17:49:30"),
        ("notify_time", "2024-05-13 17:49:31"),
        ("passback_params", r#"{"slot":"A3","note":"a+b = c & d/e"}"#),
        ("version", "1.0"),
        ("out_trade_no", "VM-0001_20240513174920_42"),
        ("total_amount", "3.50"),
        ("trade_no", "2024051322001446880512345678"),
        ("auth_app_id", "2021000122671080"),
        ("buyer_logon_id", "159****5620"),
        ("point_amount", "0.00"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.as_bytes().to_vec()))
    .collect()
}

fn borrowed<'a>(params: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
    params.iter().map(|(k, v)| (*k, v.as_slice())).collect()
}

/// `params` with `name` set to `value` (replaced in place, or appended).
fn with(
    mut params: Vec<(&'static str, Vec<u8>)>,
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, Vec<u8>)> {
    match params.iter_mut().find(|(k, _)| *k == name) {
        Some(p) => p.1 = value.as_bytes().to_vec(),
        None => params.push((name, value.as_bytes().to_vec())),
    }
    params
}

fn without(params: Vec<(&'static str, Vec<u8>)>, name: &str) -> Vec<(&'static str, Vec<u8>)> {
    params.into_iter().filter(|(k, _)| *k != name).collect()
}

fn signed(params: &[(&'static str, Vec<u8>)]) -> Vec<u8> {
    signed_notification(&borrowed(params), alipay_private_key())
}

fn replace(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).expect("ASCII body");
    assert!(text.contains(from), "{from} not in {text}");
    text.replacen(from, to, 1).into_bytes()
}

#[test]
fn a_paid_trade_status_sync_is_verified_and_typed() {
    let body = signed(&trade_params());
    let Notification::Trade(t) = parse(&body, &alipay_public_key()).expect("verifies") else {
        panic!("not typed as a trade notification");
    };
    assert_eq!(t.trade_status, TradeStatus::TradeSuccess);
    assert!(t.trade_status.is_paid());
    assert_eq!(t.total_amount, Amount::from_fen(350).expect("fen"));
    assert_eq!(t.point_amount, Some(Amount::ZERO));
    assert_eq!(t.out_trade_no, "VM-0001_20240513174920_42");
    assert_eq!(t.trade_no, "2024051322001446880512345678");
    assert_eq!(t.buyer, Some(UserRef::UserId("2088102177846880".into())));
    assert_eq!(t.seller_id.as_deref(), Some("2088102177649450"));
    assert_eq!(t.subject.as_deref(), Some("可口可乐 330ml"));
    assert_eq!(
        t.passback_params.as_deref(),
        Some(r#"{"slot":"A3","note":"a+b = c & d/e"}"#)
    );
    assert_eq!(t.notify_id, "2024051300222174930046880512345678");
    // fund_bill_list arrives as a JSON string with camelCase keys.
    assert_eq!(t.fund_bill_list.len(), 2);
    assert_eq!(t.fund_bill_list[0].fund_channel, "ALIPAYACCOUNT");
    assert_eq!(
        t.fund_bill_list[0].amount,
        Amount::from_fen(300).expect("fen")
    );
    assert_eq!(t.fund_bill_list[1].fund_channel, "MDISCOUNT");
}

#[test]
fn a_buyer_known_only_by_open_id_is_typed_as_an_open_id() {
    let params = with(
        without(trade_params(), "buyer_id"),
        "buyer_open_id",
        "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5",
    );
    let Notification::Trade(t) = parse(&signed(&params), &alipay_public_key()).expect("verifies")
    else {
        panic!("not a trade notification");
    };
    assert_eq!(
        t.buyer,
        Some(UserRef::OpenId(
            "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5".into()
        ))
    );
}

#[test]
fn an_unpaid_status_is_typed_but_not_paid() {
    for status in ["WAIT_BUYER_PAY", "TRADE_CLOSED"] {
        let params = with(trade_params(), "trade_status", status);
        let Notification::Trade(t) = parse(&signed(&params), &alipay_public_key()).expect(status)
        else {
            panic!("not a trade notification");
        };
        assert!(!t.trade_status.is_paid(), "{status}");
        assert_eq!(t.trade_status.as_str(), status);
    }
}

#[test]
fn a_fund_auth_freeze_is_verified_and_typed() {
    let params: Vec<(&'static str, Vec<u8>)> = [
        ("notify_id", "70fec0c2730b27528665af4517c27b95"),
        ("notify_time", "2024-05-13 17:50:00"),
        ("notify_type", "fund_auth_freeze"),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("app_id", "2021000122671080"),
        ("auth_app_id", "2021000122671080"),
        ("auth_no", "2024051310002001460512345678"),
        ("out_order_no", "door-VM-0007-1"),
        ("operation_id", "20240513123456789012"),
        ("out_request_no", "door-VM-0007-1-f"),
        ("operation_type", "FREEZE"),
        ("amount", "200.00"),
        ("status", "SUCCESS"),
        ("total_freeze_amount", "200.00"),
        ("total_unfreeze_amount", "0.00"),
        ("total_pay_amount", "0.00"),
        ("rest_amount", "200.00"),
        ("payer_user_id", "2088102177846880"),
        ("payer_logon_id", "159****5620"),
        ("gmt_create", "2024-05-13 17:49:58"),
        ("gmt_trans", "2024-05-13 17:50:00"),
        ("trans_currency", "CNY"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.as_bytes().to_vec()))
    .collect();
    let Notification::FundAuth(f) =
        parse(&signed(&params), &alipay_public_key()).expect("verifies")
    else {
        panic!("not typed as fund auth");
    };
    assert_eq!(f.auth_no, "2024051310002001460512345678");
    assert_eq!(f.operation_type, "FREEZE");
    assert_eq!(f.amount, Amount::from_fen(20000).expect("fen"));
    assert_eq!(f.rest_amount, Some(Amount::from_fen(20000).expect("fen")));
    assert_eq!(f.total_pay_amount, Some(Amount::ZERO));
    assert_eq!(f.pre_auth_type, None);
}

#[test]
fn a_dut_user_sign_is_verified_and_typed() {
    let params: Vec<(&'static str, Vec<u8>)> = [
        ("notify_id", "a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3"),
        ("notify_time", "2024-05-13 18:00:00"),
        ("notify_type", "dut_user_sign"),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("app_id", "2021000122671080"),
        ("agreement_no", "20245413000000012345"),
        ("external_agreement_no", "openvend-user-77"),
        ("alipay_user_id", "2088102177846880"),
        ("alipay_logon_id", "159****5620"),
        ("personal_product_code", "GENERAL_WITHHOLDING_P"),
        ("sign_scene", "INDUSTRY|ALIPAYGO"),
        ("status", "NORMAL"),
        ("sign_time", "2024-05-13 17:59:58"),
        ("valid_time", "2024-05-13 17:59:58"),
        ("invalid_time", "2115-02-01 00:00:00"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.as_bytes().to_vec()))
    .collect();
    let Notification::Agreement(a) =
        parse(&signed(&params), &alipay_public_key()).expect("verifies")
    else {
        panic!("not typed as an agreement");
    };
    assert_eq!(a.agreement_no, "20245413000000012345");
    assert_eq!(a.status, "NORMAL");
    assert_eq!(a.sign_scene.as_deref(), Some("INDUSTRY|ALIPAYGO"));
    assert_eq!(a.alipay_user_id.as_deref(), Some("2088102177846880"));
}

fn gateway_message() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("notify_id", "2024051300262175000012345678"),
        ("msg_method", "alipay.trade.order.settle.notify"),
        ("app_id", "2021000122671080"),
        ("charset", "utf-8"),
        ("version", "1.1"),
        ("utc_timestamp", "1715593800000"),
        (
            "biz_content",
            r#"{"out_request_no":"settle-42","trade_no":"2024051322001446880512345678","settle_no":"20240513000000001","operation_type":"settle","settle_amount":"0.35","status":"SUCCESS"}"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.as_bytes().to_vec()))
    .collect()
}

#[test]
fn an_app_gateway_message_signed_with_sign_type_included_is_verified_and_typed() {
    let params = gateway_message();
    let key = alipay_private_key();
    // rsaCheckV2: only `sign` is left out of the string.
    let body = notification_with(&borrowed(&params), |s| key.sign(s), "RSA2", &["sign"]);
    let Notification::Message(m) = parse(&body, &alipay_public_key()).expect("verifies") else {
        panic!("not typed as a message");
    };
    assert_eq!(m.msg_method, "alipay.trade.order.settle.notify");
    let biz: serde_json::Value = serde_json::from_str(&m.biz_content).expect("JSON");
    assert_eq!(biz["settle_amount"], "0.35");
}

#[test]
fn an_unsigned_notification_is_refused() {
    let body = reference_form_encode(
        &borrowed(&with(trade_params(), "sign_type", "RSA2"))
            .iter()
            .map(|(k, v)| (k.as_bytes(), *v))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        parse(&body, &alipay_public_key()),
        Err(NotifyError::MissingSignature)
    );
    let with_empty_sign = [body.as_slice(), b"&sign="].concat();
    assert_eq!(
        parse(&with_empty_sign, &alipay_public_key()),
        Err(NotifyError::MissingSignature)
    );
}

#[test]
fn a_notification_signed_by_another_key_is_refused() {
    let body = signed_notification(&borrowed(&trade_params()), stranger_key());
    assert_eq!(
        parse(&body, &alipay_public_key()),
        Err(NotifyError::BadSignature)
    );
}

#[test]
fn a_parameter_changed_after_signing_is_refused() {
    let body = signed(&trade_params());
    assert!(parse(&body, &alipay_public_key()).is_ok());
    for (from, to) in [
        ("total_amount=3.50", "total_amount=0.01"),
        ("trade_status=TRADE_SUCCESS", "trade_status=TRADE_FINISHED"),
        ("out_trade_no=VM-0001", "out_trade_no=VM-0002"),
        ("seller_id=2088102177649450", "seller_id=2088102177649451"),
    ] {
        assert_eq!(
            parse(&replace(&body, from, to), &alipay_public_key()),
            Err(NotifyError::BadSignature),
            "{to}"
        );
    }
    // A parameter added after signing is caught too.
    let added = [body.as_slice(), b"&refund_fee=3.50"].concat();
    assert_eq!(
        parse(&added, &alipay_public_key()),
        Err(NotifyError::BadSignature)
    );
}

#[test]
fn a_sign_type_that_does_not_match_the_signature_is_refused() {
    let params = trade_params();
    let alipay = alipay_private_key();
    // An RSA2 (SHA-256) signature declared as RSA.
    let rsa2_as_rsa = notification_with(
        &borrowed(&params),
        |s| alipay.sign(s),
        "RSA",
        &["sign", "sign_type"],
    );
    assert_eq!(
        parse(&rsa2_as_rsa, &alipay_public_key()),
        Err(NotifyError::BadSignature)
    );
    // A legacy RSA (SHA-1) signature declared as RSA2.
    let pem = alipay.to_pkcs8_pem().expect("PEM");
    let sha1 = |s: &[u8]| openssl_sha1_sign(&pem, s);
    let rsa_as_rsa2 = notification_with(&borrowed(&params), sha1, "RSA2", &["sign", "sign_type"]);
    assert_eq!(
        parse(&rsa_as_rsa2, &alipay_public_key()),
        Err(NotifyError::BadSignature)
    );
    // The same SHA-1 signature declared honestly as RSA is legacy but valid.
    let rsa = notification_with(&borrowed(&params), sha1, "RSA", &["sign", "sign_type"]);
    assert!(matches!(
        parse(&rsa, &alipay_public_key()),
        Ok(Notification::Trade(_))
    ));
    // Neither RSA nor RSA2.
    let sm2 = notification_with(
        &borrowed(&params),
        |s| alipay.sign(s),
        "SM2",
        &["sign", "sign_type"],
    );
    assert!(matches!(
        parse(&sm2, &alipay_public_key()),
        Err(NotifyError::SignType(_))
    ));
}

#[test]
fn a_trade_notification_signed_with_sign_type_in_the_string_is_refused() {
    let key = alipay_private_key();
    let body = notification_with(
        &borrowed(&trade_params()),
        |s| key.sign(s),
        "RSA2",
        &["sign"],
    );
    assert_eq!(
        parse(&body, &alipay_public_key()),
        Err(NotifyError::BadSignature)
    );
}

#[test]
fn a_duplicated_parameter_is_refused_even_when_one_copy_is_signed() {
    let body = signed(&trade_params());
    for extra in [
        "&total_amount=0.01",
        "&total_amount=3.50",
        "&trade_status=TRADE_SUCCESS",
        "&sign=AAAA",
    ] {
        let polluted = [body.as_slice(), extra.as_bytes()].concat();
        assert!(
            matches!(
                parse(&polluted, &alipay_public_key()),
                Err(NotifyError::Form(FormError::Duplicate(_)))
            ),
            "{extra}"
        );
    }
    let name_first = [b"total_amount=0.01&".as_slice(), body.as_slice()].concat();
    assert_eq!(
        parse(&name_first, &alipay_public_key()),
        Err(NotifyError::Form(FormError::Duplicate(
            "total_amount".into()
        )))
    );
}

#[test]
fn a_gbk_notification_signed_over_gbk_bytes_verifies_and_decodes_chinese() {
    let subject = "可口可乐 冰镇 330ml";
    let (gbk, _, bad) = encoding_rs::GBK.encode(subject);
    assert!(!bad);
    let params = with(trade_params(), "charset", "gbk");
    let params: Vec<(&'static str, Vec<u8>)> = params
        .into_iter()
        .map(|(k, v)| {
            if k == "subject" {
                (k, gbk.to_vec())
            } else {
                (k, v)
            }
        })
        .collect();
    let body = signed(&params);
    let Notification::Trade(t) = parse(&body, &alipay_public_key()).expect("verifies") else {
        panic!("not a trade notification");
    };
    assert_eq!(t.subject.as_deref(), Some(subject));

    // Signed over the UTF-8 text but declared GBK: the bytes differ, so it does not verify.
    let utf8_signed = signed(&with(
        with(trade_params(), "charset", "gbk"),
        "subject",
        subject,
    ));
    let utf8_as_gbk = replace(
        &utf8_signed,
        &String::from_utf8(reference_form_encode(&[(b"subject", subject.as_bytes())]))
            .expect("ASCII"),
        &String::from_utf8(reference_form_encode(&[(b"subject", &gbk)])).expect("ASCII"),
    );
    assert_eq!(
        parse(&utf8_as_gbk, &alipay_public_key()),
        Err(NotifyError::BadSignature)
    );
}

#[test]
fn a_plus_in_the_signature_sent_unescaped_survives() {
    let key = alipay_private_key();
    let base = trade_params();
    // Find a notification whose signature holds a `+` (nearly all of them do).
    let (params, signature) = (0..64)
        .map(|i| {
            let p = with(
                base.clone(),
                "notify_id",
                &format!("2024051300222174930046880512{i:06}"),
            );
            let mut pairs: Vec<(&[u8], &[u8])> = p
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_slice()))
                .collect();
            pairs.push((b"sign_type", b"RSA2"));
            let s = key.sign(&crate::support::reference_string_to_sign(
                &pairs,
                &["sign", "sign_type"],
            ));
            (p, s)
        })
        .find(|(_, s)| s.contains('+'))
        .expect("a signature with a `+`");
    let mut pairs: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_slice()))
        .collect();
    pairs.push((b"sign_type", b"RSA2"));
    let mut body = reference_form_encode(&pairs);
    body.extend_from_slice(b"&sign=");
    body.extend_from_slice(signature.as_bytes()); // `+`, `/` and `=` left as they are
    assert!(matches!(
        parse(&body, &alipay_public_key()),
        Ok(Notification::Trade(_))
    ));
}

#[test]
fn spaces_sent_as_percent_20_instead_of_plus_verify_the_same() {
    let body = signed(&trade_params());
    // Only spaces are written `+` here: the signature's own `+` is escaped as `%2B`.
    let text = String::from_utf8(body).expect("ASCII body");
    assert!(text.contains('+'));
    let with_20 = text.replace('+', "%20");
    assert!(matches!(
        parse(with_20.as_bytes(), &alipay_public_key()),
        Ok(Notification::Trade(t)) if t.subject.as_deref() == Some("可口可乐 330ml")
    ));
}

fn assert_field_error(result: Result<Notification, NotifyError>, field: &str, what: &str) {
    match result {
        Err(NotifyError::Field { field: f, problem }) => {
            assert_eq!(f, field, "{what}: {problem}");
            let message = NotifyError::Field { field: f, problem }.to_string();
            assert!(message.contains(field), "{what}: {message}");
        }
        other => panic!("{what}: expected an error about `{field}`, got {other:?}"),
    }
}

#[test]
fn a_malformed_total_amount_is_refused_naming_total_amount() {
    for bad in [
        "1e2",
        "NaN",
        "-1",
        "1.234",
        "100000000.01",
        "",
        " 3.50",
        "3,50",
        "0x10",
    ] {
        let params = with(trade_params(), "total_amount", bad);
        let result = parse(&signed(&params), &alipay_public_key());
        if bad.is_empty() {
            // Alipay drops empty values from the signed string; a missing amount is refused.
            assert!(result.is_err(), "empty total_amount accepted");
            continue;
        }
        assert_field_error(result, "total_amount", bad);
    }
}

#[test]
fn amounts_written_with_one_or_two_decimals_are_the_same_amount() {
    for text in ["3.5", "3.50"] {
        let params = with(trade_params(), "total_amount", text);
        let Notification::Trade(t) = parse(&signed(&params), &alipay_public_key()).expect(text)
        else {
            panic!("not a trade notification");
        };
        assert_eq!(t.total_amount.fen(), 350, "{text}");
    }
}

#[test]
fn a_lowercase_or_unknown_trade_status_is_refused_naming_trade_status() {
    for bad in ["trade_success", "Trade_Success", "TRADE_PENDING", "SUCCESS"] {
        let params = with(trade_params(), "trade_status", bad);
        assert_field_error(
            parse(&signed(&params), &alipay_public_key()),
            "trade_status",
            bad,
        );
    }
}

#[test]
fn an_empty_body_is_refused() {
    assert_eq!(
        parse(b"", &alipay_public_key()),
        Err(NotifyError::MissingSignature)
    );
    assert_eq!(
        parse(b"&&&", &alipay_public_key()),
        Err(NotifyError::MissingSignature)
    );
}

#[test]
fn bad_percent_escapes_are_refused() {
    let body = signed(&trade_params());
    for bad in ["%zz", "%4", "%", "%G0"] {
        let broken = [body.as_slice(), b"&x=", bad.as_bytes()].concat();
        assert!(
            matches!(
                parse(&broken, &alipay_public_key()),
                Err(NotifyError::Form(FormError::BadEscape(_)))
            ),
            "{bad}"
        );
    }
}

#[test]
fn an_unknown_charset_is_refused() {
    let params = with(trade_params(), "charset", "latin1");
    assert_eq!(
        parse(&signed(&params), &alipay_public_key()),
        Err(NotifyError::Charset("latin1".into()))
    );
}

#[test]
fn a_key_from_the_other_side_never_verifies_alipays_notifications() {
    // The app's own key pair, mistaken for Alipay's, must not verify what Alipay signed.
    let app = AppPrivateKey::generate().expect("generate");
    let body = signed(&trade_params());
    assert_eq!(
        parse(&body, &app.public_key()),
        Err(NotifyError::BadSignature)
    );
}
