//! The gateway's transport and checks: GET and multipart requests, GBK apps, Alipay's order of
//! checks with its codes, `/` escaped in answers, and a repeated parameter refused.

use alipay::api::trade::{Precreate, Query};
use alipay::sign::{Charset, SignScope, string_to_sign};
use alipay::{AppPrivateKey, CallOptions, Client, Config, PublicKey, Verification};
use serde_json::Value;

use crate::support::*;

type Params = Vec<(String, String)>;

/// Signed parameters for `method` with `biz`, by the app's key; `tweak` edits them before signing.
fn signed(
    app: &TestApp,
    method: &str,
    biz: &str,
    tweak: impl FnOnce(&mut Vec<(String, String)>),
) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = [
        ("app_id", app.app_id.as_str()),
        ("method", method),
        ("format", "JSON"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("timestamp", "2026-11-28 10:00:00"),
        ("version", "1.0"),
        ("biz_content", biz),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    tweak(&mut p);
    let key = AppPrivateKey::from_text(&app.key_text).unwrap();
    let s = string_to_sign(
        p.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignScope::Request,
    );
    p.push(("sign".into(), key.sign(s.as_bytes())));
    p
}

fn encode(p: &[(String, String)]) -> String {
    alipay::form::encode(p.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
}

async fn answer_of(resp: reqwest::Response, method: &str) -> (String, Value) {
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let key = alipay::envelope::response_key(method);
    let obj = v
        .get(&key)
        .or_else(|| v.get("error_response"))
        .cloned()
        .unwrap_or(Value::Null);
    (text, obj)
}

#[tokio::test]
async fn a_request_sent_whole_in_the_query_string_by_get_is_served() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000601").await;
    let p = signed(
        &app,
        "alipay.trade.precreate",
        r#"{"out_trade_no":"g1","total_amount":"1.00","subject":"水"}"#,
        |_| {},
    );
    let resp = reqwest::get(format!("{}?{}", sandbox.gateway_url, encode(&p)))
        .await
        .unwrap();
    let (text, obj) = answer_of(resp, "alipay.trade.precreate").await;
    assert_eq!(obj["code"], "10000", "{text}");
    assert!(
        text.contains(r"http:\/\/"),
        "Alipay escapes `/` in answers: {text}"
    );
}

#[tokio::test]
async fn a_multipart_body_is_merged_with_the_query_string() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000602").await;
    let biz = r#"{"out_trade_no":"m1","total_amount":"1.00","subject":"水"}"#;
    let p = signed(&app, "alipay.trade.precreate", biz, |_| {});
    let (body_params, query_params): (Vec<_>, Vec<_>) =
        p.into_iter().partition(|(k, _)| k == "biz_content");
    let boundary = "----openvendboundary";
    let mut body = String::new();
    for (k, v) in &body_params {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let resp = reqwest::Client::new()
        .post(format!("{}?{}", sandbox.gateway_url, encode(&query_params)))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let (text, obj) = answer_of(resp, "alipay.trade.precreate").await;
    assert_eq!(obj["code"], "10000", "{text}");
}

#[tokio::test]
async fn a_gbk_app_is_answered_in_gbk_and_the_client_verifies_the_raw_bytes() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000603").await;
    let mut config = Config::new(&app.app_id);
    config.gateway_url = sandbox.gateway_url.clone();
    config.charset = Charset::Gbk;
    let alipay_key = PublicKey::alipay_from_text(&sandbox.ctx.public_key.to_spki_base64()).unwrap();
    let client = Client::new(
        config,
        AppPrivateKey::from_text(&app.key_text).unwrap(),
        Verification::PublicKey(alipay_key),
    )
    .unwrap();
    let pre = client
        .execute(
            &Precreate::new("gbk1", "2.00".parse().unwrap(), "农夫山泉矿泉水"),
            &CallOptions::default(),
        )
        .await;
    assert!(pre.is_success(), "{pre:?}");
    // Not scanned yet: a definite failure, still verified over GBK bytes.
    let q = client
        .execute(&Query::by_out_trade_no("gbk1"), &CallOptions::default())
        .await;
    assert_eq!(q.failure_sub_code(), Some("ACQ.TRADE_NOT_EXIST"));
}

#[tokio::test]
async fn requests_are_checked_in_alipays_order_with_its_codes() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000604").await;
    let biz = r#"{"out_trade_no":"c1","total_amount":"1.00","subject":"水"}"#;
    let method = "alipay.trade.precreate";
    let post = |p: Vec<(String, String)>| {
        let url = sandbox.gateway_url.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode(&p))
                .send()
                .await
                .unwrap()
        }
    };
    let cases: Vec<(Params, &str, &str, bool)> = vec![
        (
            signed(&app, method, biz, |p| p.retain(|(k, _)| k != "app_id")),
            "40001",
            "isv.missing-app-id",
            false,
        ),
        (
            signed(&app, method, biz, |p| p[0].1 = "2021999999999999".into()),
            "40002",
            "isv.invalid-app-id",
            false,
        ),
        (
            signed(&app, method, biz, |_| {})
                .into_iter()
                .filter(|(k, _)| k != "sign")
                .collect(),
            "40001",
            "isv.missing-signature",
            true,
        ),
        (
            signed(&app, method, biz, |_| {})
                .into_iter()
                .map(|(k, v)| {
                    if k == "biz_content" {
                        (k, v.replace("1.00", "9.00"))
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            "40002",
            "isv.invalid-signature",
            true,
        ),
        (
            signed(&app, method, biz, |p| p[3].1 = "latin1".into()),
            "40002",
            "isv.invalid-charset",
            true,
        ),
        (
            signed(&app, method, biz, |p| p[5].1 = "2026/11/28".into()),
            "40002",
            "isv.invalid-timestamp",
            true,
        ),
        (
            signed(&app, "alipay.trade.nonexistent", biz, |_| {}),
            "40002",
            "isv.invalid-method",
            true,
        ),
        (
            signed(&app, method, "{not json", |_| {}),
            "40002",
            "isv.invalid-parameter",
            true,
        ),
    ];
    for (params, code, sub_code, signed_answer) in cases {
        let m = params
            .iter()
            .find(|(k, _)| k == "method")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let (text, obj) = answer_of(post(params).await, &m).await;
        assert_eq!(
            (obj["code"].as_str(), obj["sub_code"].as_str()),
            (Some(code), Some(sub_code)),
            "{text}"
        );
        assert_eq!(
            text.contains("\"sign\""),
            signed_answer,
            "signed only when the app is known: {text}"
        );
    }
    // The invalid-signature answer prints the string the gateway verified, as Alipay does.
    let p: Vec<_> = signed(&app, method, biz, |_| {})
        .into_iter()
        .map(|(k, v)| {
            if k == "timestamp" {
                (k, "2026-11-28 10:00:01".into())
            } else {
                (k, v)
            }
        })
        .collect();
    let (_, obj) = answer_of(post(p).await, method).await;
    assert!(
        obj["sub_msg"]
            .as_str()
            .unwrap()
            .contains("timestamp=2026-11-28 10:00:01"),
        "{obj}"
    );
}

#[tokio::test]
async fn a_parameter_sent_twice_is_refused() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000605").await;
    let p = signed(
        &app,
        "alipay.trade.precreate",
        r#"{"out_trade_no":"d1","total_amount":"1.00","subject":"水"}"#,
        |_| {},
    );
    let body = format!("{}&biz_content=%7B%7D", encode(&p));
    let resp = reqwest::Client::new()
        .post(&sandbox.gateway_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let (text, obj) = answer_of(resp, "alipay.trade.precreate").await;
    assert_eq!(obj["sub_code"], "isv.invalid-parameter", "{text}");
}
