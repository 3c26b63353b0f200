//! Answers are verified over the exact raw bytes of `<method>_response`, through
//! `Client::process`, whatever the envelope's layout, and any change to them is caught.

use alipay::api::trade::PrecreateResponse;
use alipay::outcome::{Failure, Unknown};
use alipay::{AppPrivateKey, Charset, Outcome};
use serde_json::Value;

use crate::support::{alipay_private_key, block_on, client, stranger_key};

const METHOD: &str = "alipay.trade.precreate";
const KEY: &str = "alipay_trade_precreate_response";

/// A precreate answer as Alipay writes it: escaped slashes, Chinese, compact.
const PRECREATE_RAW: &str = r#"{"code":"10000","msg":"Success","out_trade_no":"VM-0001_20240513174920_42","qr_code":"https:\/\/qr.alipay.com\/bax03431ljhokirwl38f00a7","store_name":"上海静安店"}"#;

fn sign_of(key: &AppPrivateKey, raw: &[u8]) -> String {
    key.sign(raw)
}

/// `{"<KEY>":<raw>,"sign":"…"}` signed by Alipay's key.
fn answer(raw: &str) -> Vec<u8> {
    let sign = sign_of(alipay_private_key(), raw.as_bytes());
    format!(r#"{{"{KEY}":{raw},"sign":"{sign}"}}"#).into_bytes()
}

fn process(charset: Charset, body: &[u8]) -> Outcome<Value> {
    let client = client(charset);
    block_on(client.process::<Value>(METHOD, body))
}

fn expect_success(what: &str, outcome: Outcome<Value>) -> Value {
    match outcome {
        Outcome::Success(v) => v,
        other => panic!("{what}: expected success, got {other:?}"),
    }
}

#[test]
fn answers_verify_on_their_raw_bytes_whatever_the_envelope_layout() {
    let raws = [
        ("escaped slashes", PRECREATE_RAW.to_owned()),
        (
            "nested objects and arrays",
            r#"{"code":"10000","msg":"Success","out_trade_no":"o1","qr_code":"https:\/\/qr.alipay.com\/x","fund_bill_list":[{"fund_channel":"ALIPAYACCOUNT","amount":"0.80"},{"fund_channel":"MDISCOUNT","amount":"0.20"}],"ext":{"a":{"b":[1,2,{"c":"}]{["}]},"d":null,"e":true,"f":-1.5e3}}"#.to_owned(),
        ),
        (
            "Chinese and escapes",
            r#"{"code":"10000","msg":"Success","out_trade_no":"o2","qr_code":"q","subject":"可口可乐 \"冰\" \\ \u4e2d\u6587 \n"}"#.to_owned(),
        ),
        (
            "whitespace everywhere",
            "{\n  \"code\" : \"10000\" ,\r\n\t\"msg\":\"Success\",  \"out_trade_no\" :\"o3\",\"qr_code\":\"q\"\n}".to_owned(),
        ),
    ];
    for (what, raw) in raws {
        let sign = sign_of(alipay_private_key(), raw.as_bytes());
        let layouts = [
            format!(r#"{{"{KEY}":{raw},"sign":"{sign}"}}"#),
            format!(r#"{{"sign":"{sign}","{KEY}":{raw}}}"#),
            format!(
                r#"{{"{KEY}":{raw},"alipay_cert_sn":"28a4b3c5d9a9e4f0b1c2d3e4f5a6b7c8","sign":"{sign}"}}"#
            ),
            format!("  {{ \"sign\" : \"{sign}\" ,\n \"{KEY}\" :\t{raw} \n}}\n"),
        ];
        for (i, body) in layouts.iter().enumerate() {
            let value = expect_success(
                &format!("{what}, layout {i}"),
                process(Charset::Utf8, body.as_bytes()),
            );
            assert_eq!(value["code"], "10000", "{what}, layout {i}");
            let expected: Value = serde_json::from_str(&raw).expect("raw is JSON");
            assert_eq!(value, expected, "{what}, layout {i}: decoded object");
        }
    }
}

#[test]
fn a_typed_precreate_answer_decodes_after_verification() {
    let client = client(Charset::Utf8);
    let outcome = block_on(client.process::<PrecreateResponse>(METHOD, &answer(PRECREATE_RAW)));
    let r = outcome.success().expect("success");
    assert_eq!(r.qr_code, "https://qr.alipay.com/bax03431ljhokirwl38f00a7");
    assert_eq!(r.out_trade_no, "VM-0001_20240513174920_42");
}

#[test]
fn a_signature_over_the_re_serialised_object_does_not_verify_the_raw_one() {
    // Alipay signs what it sends, `\/` included; a signer (or verifier) that re-serialises
    // gets `/` and a different string.
    let reserialised =
        serde_json::to_string(&serde_json::from_str::<Value>(PRECREATE_RAW).expect("JSON"))
            .expect("JSON");
    assert_ne!(reserialised, PRECREATE_RAW);
    let sign = sign_of(alipay_private_key(), reserialised.as_bytes());
    let body = format!(r#"{{"{KEY}":{PRECREATE_RAW},"sign":"{sign}"}}"#);
    assert_eq!(
        process(Charset::Utf8, body.as_bytes()),
        Outcome::Unknown(Unknown::BadSignature)
    );
}

#[test]
fn an_answer_signed_by_another_key_is_unknown_not_success() {
    let sign = sign_of(stranger_key(), PRECREATE_RAW.as_bytes());
    let body = format!(r#"{{"{KEY}":{PRECREATE_RAW},"sign":"{sign}"}}"#);
    assert_eq!(
        process(Charset::Utf8, body.as_bytes()),
        Outcome::Unknown(Unknown::BadSignature)
    );
}

#[test]
fn an_unsigned_success_is_refused_and_an_unsigned_error_is_a_failure() {
    let body = format!(r#"{{"{KEY}":{PRECREATE_RAW}}}"#);
    assert_eq!(
        process(Charset::Utf8, body.as_bytes()),
        Outcome::Unknown(Unknown::UnsignedSuccess)
    );
    let body = r#"{"alipay_trade_precreate_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id","sub_msg":"无效的AppID参数"}}"#;
    match process(Charset::Utf8, body.as_bytes()) {
        Outcome::Failure(Failure::Alipay(e)) => assert_eq!(e.sub_code(), "isv.invalid-app-id"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_signed_error_response_is_verified_and_becomes_a_failure() {
    let raw = r#"{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.code-invalid","sub_msg":"授权码code无效"}"#;
    let sign = sign_of(alipay_private_key(), raw.as_bytes());
    let body = format!(r#"{{"error_response":{raw},"sign":"{sign}"}}"#);
    match process(Charset::Utf8, body.as_bytes()) {
        Outcome::Failure(Failure::Alipay(e)) => {
            assert_eq!(e.code, "40002");
            assert_eq!(e.sub_code(), "isv.code-invalid");
            assert_eq!(e.sub_msg.as_deref(), Some("授权码code无效"));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let forged = body.replace("isv.code-invalid", "isv.code-invalie");
    assert_eq!(
        process(Charset::Utf8, forged.as_bytes()),
        Outcome::Unknown(Unknown::BadSignature)
    );
}

#[test]
fn changing_any_single_byte_of_a_signed_answer_makes_it_not_success() {
    let body = answer(PRECREATE_RAW);
    let client = client(Charset::Utf8);
    // The untouched answer succeeds, so every refusal below is the change's doing.
    assert!(block_on(client.process::<Value>(METHOD, &body)).is_success());
    let accepted = block_on(async {
        let mut accepted = Vec::new();
        for i in 0..body.len() {
            for mask in [0x01u8, 0x20, 0x80] {
                let mut changed = body.clone();
                changed[i] ^= mask;
                if client.process::<Value>(METHOD, &changed).await.is_success() {
                    accepted.push((i, mask));
                }
            }
        }
        accepted
    });
    assert!(
        accepted.is_empty(),
        "changed answers accepted at (byte, xor mask): {accepted:?}"
    );
}

/// A CJK character whose GBK encoding has `\` (0x5C) as its trail byte.
fn gbk_char_with_backslash_trail() -> char {
    ('\u{4e00}'..='\u{9fa5}')
        .find(|c| {
            let mut buf = [0; 4];
            let (bytes, _, bad) = encoding_rs::GBK.encode(c.encode_utf8(&mut buf));
            !bad && bytes.len() == 2 && bytes[1] == b'\\'
        })
        .expect("GBK has such characters")
}

#[test]
fn a_gbk_answer_verifies_on_its_raw_gbk_bytes_and_decodes_chinese() {
    let tricky = gbk_char_with_backslash_trail();
    let text = format!(
        r#"{{"code":"10000","msg":"Success","out_trade_no":"o1","qr_code":"https:\/\/qr.alipay.com\/x","store_name":"静安{tricky}店"}}"#
    );
    let (raw, _, bad) = encoding_rs::GBK.encode(&text);
    assert!(!bad);
    assert!(raw.windows(2).any(|w| w[1] == b'\\' && w[0] >= 0x81));
    let sign = sign_of(alipay_private_key(), &raw);
    let mut body = format!(r#"{{"{KEY}":"#).into_bytes();
    body.extend_from_slice(&raw);
    body.extend_from_slice(format!(r#","sign":"{sign}"}}"#).as_bytes());

    let value = expect_success("GBK", process(Charset::Gbk, &body));
    assert_eq!(value["store_name"], format!("静安{tricky}店"));

    // The same answer signed over its UTF-8 text does not verify as GBK.
    let utf8_sign = sign_of(alipay_private_key(), text.as_bytes());
    let mut wrong = format!(r#"{{"{KEY}":"#).into_bytes();
    wrong.extend_from_slice(&raw);
    wrong.extend_from_slice(format!(r#","sign":"{utf8_sign}"}}"#).as_bytes());
    assert_eq!(
        process(Charset::Gbk, &wrong),
        Outcome::Unknown(Unknown::BadSignature)
    );
}
