//! Buyer pages over HTTP: the QR page, OAuth authorize and consent, the JSAPI bridge and
//! cashier, agreement signing and the face step.

#![allow(clippy::unwrap_used)] // tests may unwrap, helpers included

use alipay::api::trade::{Precreate, Query};
use alipay::notify::Notification;
use alipay::{CallOptions, Outcome, TradeStatus};
use serde_json::json;

use crate::receiver::{Receiver, wait_bodies};
use crate::support::{TestApp, TestSandbox, spawn_sandbox};

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get_page(sandbox: &TestSandbox, path: &str) -> Page {
    let resp = client()
        .get(format!("{}{path}", sandbox.base_url))
        .send()
        .await
        .unwrap();
    read(resp).await
}

async fn post_form(sandbox: &TestSandbox, path: &str, form: &[(&str, &str)]) -> Page {
    let body = alipay::form::encode(form.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    let resp = client()
        .post(format!("{}{path}", sandbox.base_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    read(resp).await
}

async fn read(resp: reqwest::Response) -> Page {
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    Page {
        status,
        location,
        body: resp.text().await.unwrap(),
    }
}

fn enc(s: &str) -> String {
    alipay::form::encode_component(s.as_bytes())
}

/// The query parameters of a URL.
fn query_of(url: &str) -> Vec<(String, String)> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    alipay::form::decode(q.as_bytes())
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

async fn precreated(app: &TestApp, no: &str, subject: &str, amount: &str) -> String {
    app.client
        .execute(
            &Precreate::new(no, amount.parse().unwrap(), subject),
            &CallOptions::default(),
        )
        .await
        .success()
        .expect("precreate")
        .qr_code
}

fn path_of(url: &str) -> String {
    let after = url.find("://").unwrap() + 3;
    url[after..][url[after..].find('/').unwrap()..].to_owned()
}

async fn trade_no_of(sandbox: &TestSandbox, app_id: &str, out_trade_no: &str) -> String {
    let list = sandbox
        .get(&format!("/control/trades?app_id={app_id}"))
        .await;
    list["trades"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["out_trade_no"] == out_trade_no)
        .unwrap()["trade_no"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_qr_page_shows_the_trade_escaped_and_paying_there_pays_it() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000301").await;
    let buyer = sandbox.buyer("50.00").await;
    let qr = precreated(&app, "p_qr", "<i>可乐", "3.50").await;

    let page = get_page(&sandbox, &path_of(&qr)).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("&lt;i&gt;可乐"), "subject escaped");
    assert!(!page.body.contains("<i>可乐"));
    assert!(page.body.contains("¥3.50"));
    assert!(page.body.contains(&app.seller_pid));
    assert!(
        page.body.contains(&buyer),
        "the buyer picker lists the buyer"
    );
    assert!(
        page.body.contains("value=\"new\""),
        "and offers a new buyer"
    );
    assert!(page.body.contains("width=device-width"));

    // Scanning made the trade visible to the merchant.
    let q = app
        .client
        .execute(&Query::by_out_trade_no("p_qr"), &CallOptions::default())
        .await;
    let Outcome::Success(q) = q else {
        panic!("{q:?}")
    };
    assert_eq!(q.trade_status, TradeStatus::WaitBuyerPay);

    let (path, token) = path_of(&qr)
        .split_once("?t=")
        .map(|(p, t)| (p.to_owned(), t.to_owned()))
        .unwrap();
    let paid = post_form(
        &sandbox,
        &format!("{path}/pay"),
        &[("t", &token), ("buyer_id", &buyer)],
    )
    .await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert!(paid.body.contains("支付成功"));
    let q = app
        .client
        .execute(&Query::by_out_trade_no("p_qr"), &CallOptions::default())
        .await
        .success()
        .unwrap();
    assert_eq!(q.trade_status, TradeStatus::TradeSuccess);
    assert_eq!(q.buyer_user_id.as_deref(), Some(buyer.as_str()));

    // Opening it again says it is paid, with no pay button.
    let again = get_page(&sandbox, &path_of(&qr)).await;
    assert!(again.body.contains("已支付"));
    assert!(!again.body.contains("/pay\""));
}

#[tokio::test]
async fn the_qr_page_refuses_a_wrong_token_and_an_unknown_trade() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000302").await;
    let qr = precreated(&app, "p_tok", "水", "1.00").await;
    let (path, _) = path_of(&qr)
        .split_once("?t=")
        .map(|(p, t)| (p.to_owned(), t.to_owned()))
        .unwrap();
    assert_eq!(
        get_page(&sandbox, &format!("{path}?t=forged")).await.status,
        404
    );
    assert_eq!(get_page(&sandbox, &path).await.status, 404);
    let unknown = get_page(&sandbox, "/qr/2099010122001000000000000001?t=x").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("二维码无效"));
    let forged_pay = post_form(
        &sandbox,
        &format!("{path}/pay"),
        &[("t", "forged"), ("buyer_id", "new")],
    )
    .await;
    assert_eq!(forged_pay.status, 404);
}

#[tokio::test]
async fn paying_without_enough_balance_shows_the_reason_and_a_new_buyer_can_pay() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000303").await;
    let poor = sandbox.buyer("1.00").await;
    let qr = precreated(&app, "p_poor", "水", "5.00").await;
    let (path, token) = path_of(&qr)
        .split_once("?t=")
        .map(|(p, t)| (p.to_owned(), t.to_owned()))
        .unwrap();
    let failed = post_form(
        &sandbox,
        &format!("{path}/pay"),
        &[("t", &token), ("buyer_id", &poor)],
    )
    .await;
    assert_eq!(failed.status, 409);
    assert!(failed.body.contains("ACQ.BUYER_BALANCE_NOT_ENOUGH"));
    let ok = post_form(
        &sandbox,
        &format!("{path}/pay"),
        &[("t", &token), ("buyer_id", "new")],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("支付成功"));
}

fn authorize_path(
    app_id: &str,
    scope: &str,
    redirect_uri: &str,
    state: &str,
    user: Option<&str>,
) -> String {
    let mut p = format!(
        "/oauth2/publicAppAuthorize.htm?app_id={app_id}&scope={}&redirect_uri={}&state={}",
        enc(scope),
        enc(redirect_uri),
        enc(state)
    );
    if let Some(u) = user {
        p.push_str(&format!("&user_id={u}"));
    }
    p
}

#[tokio::test]
async fn auth_base_redirects_at_once_with_a_code_and_the_state() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000304").await;
    let buyer = sandbox.buyer("1.00").await;
    let cb = "https://m.example.com/oauth/cb?from=vm1";

    let picker = get_page(
        &sandbox,
        &authorize_path(&app.app_id, "auth_base", cb, "s<1>", None),
    )
    .await;
    assert_eq!(picker.status, 200);
    assert!(picker.body.contains(&buyer));
    assert!(
        picker.body.contains("value=\"s&lt;1&gt;\""),
        "state carried, escaped"
    );

    let page = get_page(
        &sandbox,
        &authorize_path(&app.app_id, "auth_base", cb, "s<1>", Some(&buyer)),
    )
    .await;
    assert_eq!(page.status, 302);
    let location = page.location.unwrap();
    assert!(location.starts_with("https://m.example.com/oauth/cb?from=vm1&"));
    let q = query_of(&location);
    let code = param(&q, "auth_code").unwrap();
    assert_eq!(code.len(), 32);
    assert_eq!(param(&q, "state"), Some("s<1>"));
    assert_eq!(param(&q, "app_id"), Some(app.app_id.as_str()));
    assert_eq!(param(&q, "source"), Some("alipay_wallet"));
    assert_eq!(param(&q, "scope"), Some("auth_base"));
    let grant = sandbox.ctx.store().data.grants.get(code).cloned().unwrap();
    assert_eq!(grant.user_id, buyer);
    assert!(!grant.code_used);
}

#[tokio::test]
async fn auth_user_asks_for_consent_once() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000305").await;
    let buyer = sandbox.buyer("1.00").await;
    let cb = "https://m.example.com/cb";
    let consent = get_page(
        &sandbox,
        &authorize_path(&app.app_id, "auth_user", cb, "st", Some(&buyer)),
    )
    .await;
    assert_eq!(consent.status, 200);
    assert!(consent.body.contains("同意授权"));
    assert!(consent.body.contains("action=\"/oauth2/consent\""));

    let form = [
        ("app_id", app.app_id.as_str()),
        ("scope", "auth_user"),
        ("redirect_uri", cb),
        ("state", "st"),
        ("user_id", buyer.as_str()),
    ];
    let mut deny = form.to_vec();
    deny.push(("decision", "deny"));
    let denied = post_form(&sandbox, "/oauth2/consent", &deny).await;
    assert_eq!(denied.status, 200);
    assert!(denied.location.is_none());
    assert!(sandbox.ctx.store().data.grants.is_empty());

    let mut allow = form.to_vec();
    allow.push(("decision", "allow"));
    let allowed = post_form(&sandbox, "/oauth2/consent", &allow).await;
    assert_eq!(allowed.status, 303);
    let q = query_of(allowed.location.as_deref().unwrap());
    assert_eq!(param(&q, "scope"), Some("auth_user"));
    assert_eq!(param(&q, "state"), Some("st"));
    assert_eq!(param(&q, "auth_code").unwrap().len(), 32);

    // Already consented: straight back with a new code.
    let again = get_page(
        &sandbox,
        &authorize_path(&app.app_id, "auth_user", cb, "st2", Some(&buyer)),
    )
    .await;
    assert_eq!(again.status, 302);
    let q2 = query_of(again.location.as_deref().unwrap());
    assert_ne!(param(&q2, "auth_code"), param(&q, "auth_code"));
}

#[tokio::test]
async fn a_redirect_uri_must_match_a_registered_one_exactly() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox
        .app_with(
            "2021000000000306",
            json!({ "redirect_uris": ["https://m.example.com/cb"] }),
        )
        .await;
    let buyer = sandbox.buyer("1.00").await;
    for bad in [
        "https://m.example.com/cb/",
        "http://m.example.com/cb",
        "https://m.example.com/cb?x=1",
        "https://evil.example.com/cb",
    ] {
        let page = get_page(
            &sandbox,
            &authorize_path(&app.app_id, "auth_base", bad, "s", Some(&buyer)),
        )
        .await;
        assert_eq!(page.status, 400, "{bad}");
        assert!(page.body.contains("redirect_uri"), "{bad}");
        assert!(page.location.is_none());
    }
    let ok = get_page(
        &sandbox,
        &authorize_path(
            &app.app_id,
            "auth_base",
            "https://m.example.com/cb",
            "s",
            Some(&buyer),
        ),
    )
    .await;
    assert_eq!(ok.status, 302);
    // Unknown app, bad scope, not a URL.
    assert_eq!(
        get_page(
            &sandbox,
            &authorize_path(
                "2021999999999999",
                "auth_base",
                "https://m.example.com/cb",
                "s",
                None
            )
        )
        .await
        .status,
        400
    );
    assert_eq!(
        get_page(
            &sandbox,
            &authorize_path(
                &app.app_id,
                "auth_all",
                "https://m.example.com/cb",
                "s",
                None
            )
        )
        .await
        .status,
        400
    );
    let other = sandbox.app("2021000000000307").await;
    assert_eq!(
        get_page(
            &sandbox,
            &authorize_path(&other.app_id, "auth_base", "javascript:alert(1)", "s", None)
        )
        .await
        .status,
        400
    );
}

#[tokio::test]
async fn the_bridge_defines_alipay_jsbridge_with_trade_pay() {
    let sandbox = spawn_sandbox().await;
    let resp = client()
        .get(format!("{}/bridge.js", sandbox.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/javascript")
    );
    let js = resp.text().await.unwrap();
    for needle in [
        "window.AlipayJSBridge",
        "tradePay",
        "AlipayJSBridgeReady",
        "/cashier?embed=1&trade_no=",
    ] {
        assert!(js.contains(needle), "{needle}");
    }
    assert!(js.contains(&format!("\"{}\"", sandbox.base_url)));
}

#[tokio::test]
async fn the_cashier_pays_or_cancels_and_reports_the_result_code() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000308").await;
    let buyer = sandbox.buyer("20.00").await;
    precreated(&app, "p_cash", "薯片", "6.00").await;
    let trade_no = trade_no_of(&sandbox, &app.app_id, "p_cash").await;

    let page = get_page(&sandbox, &format!("/cashier?trade_no={trade_no}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("薯片") && page.body.contains("¥6.00"));

    let ret = "https://m.example.com/paid";
    let cancelled = post_form(
        &sandbox,
        "/cashier/pay",
        &[
            ("trade_no", &trade_no),
            ("return", ret),
            ("buyer_id", &buyer),
            ("decision", "cancel"),
        ],
    )
    .await;
    assert_eq!(cancelled.status, 303);
    let q = query_of(cancelled.location.as_deref().unwrap());
    assert_eq!(param(&q, "resultCode"), Some("6001"));

    let embedded = post_form(
        &sandbox,
        "/cashier/pay",
        &[
            ("trade_no", &trade_no),
            ("embed", "1"),
            ("buyer_id", &buyer),
            ("decision", "pay"),
        ],
    )
    .await;
    assert_eq!(embedded.status, 200);
    assert!(embedded.body.contains("data-result-code=\"9000\""));
    assert!(embedded.body.contains("parent.postMessage"));
    assert!(embedded.body.contains("\"resultCode\":\"9000\""));

    // Paying again is reported as paid.
    let again = post_form(
        &sandbox,
        "/cashier/pay",
        &[
            ("trade_no", &trade_no),
            ("return", ret),
            ("buyer_id", &buyer),
            ("decision", "pay"),
        ],
    )
    .await;
    let location = again.location.unwrap();
    assert!(location.starts_with("https://m.example.com/paid?resultCode=9000"));
    let b = sandbox.get(&format!("/control/buyers/{buyer}")).await;
    assert_eq!(b["balance_fen"], 2000 - 600, "charged once");
}

#[tokio::test]
async fn the_cashier_reports_4000_for_a_failed_payment_and_refuses_unknown_trades() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000309").await;
    let poor = sandbox.buyer("0.50").await;
    precreated(&app, "p_cash4000", "薯片", "6.00").await;
    let trade_no = trade_no_of(&sandbox, &app.app_id, "p_cash4000").await;
    let failed = post_form(
        &sandbox,
        "/cashier/pay",
        &[
            ("trade_no", &trade_no),
            ("embed", "1"),
            ("buyer_id", &poor),
            ("decision", "pay"),
        ],
    )
    .await;
    assert!(failed.body.contains("data-result-code=\"4000\""));
    assert!(failed.body.contains("ACQ.BUYER_BALANCE_NOT_ENOUGH"));
    assert_eq!(
        get_page(&sandbox, "/cashier?trade_no=nope").await.status,
        404
    );
    assert_eq!(
        get_page(
            &sandbox,
            &format!("/cashier?trade_no={trade_no}&return=javascript:x")
        )
        .await
        .status,
        400
    );
}

#[tokio::test]
async fn signing_an_agreement_stores_it_and_sends_a_verifiable_dut_user_sign() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000310").await;
    let buyer = sandbox.buyer("1.00").await;
    let receiver = Receiver::ok().await;
    let page = get_page(
        &sandbox,
        &format!(
            "/agreement/sign?app_id={}&sign_scene={}&external_agreement_no=EXT1&notify_url={}",
            app.app_id,
            enc("INDUSTRY|ALIPAYGO"),
            enc(&receiver.url)
        ),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("GENERAL_WITHHOLDING_P"));
    assert!(page.body.contains("INDUSTRY|ALIPAYGO"));

    let signed = post_form(
        &sandbox,
        "/agreement/sign",
        &[
            ("app_id", &app.app_id),
            ("sign_scene", "INDUSTRY|ALIPAYGO"),
            ("external_agreement_no", "EXT1"),
            ("notify_url", &receiver.url),
            ("user_id", &buyer),
        ],
    )
    .await;
    assert_eq!(signed.status, 200, "{}", signed.body);
    assert!(signed.body.contains("签约成功"));
    let agreement = sandbox
        .ctx
        .store()
        .data
        .agreements
        .values()
        .next()
        .cloned()
        .unwrap();
    assert_eq!(agreement.status, "NORMAL");
    assert_eq!(agreement.user_id, buyer);
    assert!(signed.body.contains(&agreement.agreement_no));

    let bodies = wait_bodies(&receiver, 1).await;
    match alipay::notify::parse(bodies[0].as_bytes(), &sandbox.ctx.public_key).unwrap() {
        Notification::Agreement(a) => {
            assert_eq!(a.notify_type, "dut_user_sign");
            assert_eq!(a.agreement_no, agreement.agreement_no);
            assert_eq!(a.external_agreement_no.as_deref(), Some("EXT1"));
            assert_eq!(a.alipay_user_id.as_deref(), Some(buyer.as_str()));
            assert_eq!(a.status, "NORMAL");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        get_page(&sandbox, "/agreement/sign?app_id=1").await.status,
        400
    );
}

#[tokio::test]
async fn the_face_step_issues_an_ftoken_unless_the_light_is_weak() {
    let sandbox = spawn_sandbox().await;
    let buyer = sandbox.buyer("1.00").await;
    let page = get_page(&sandbox, "/face?app_id=2021000000000311").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("刷脸"));

    let (status, t) = sandbox
        .post_status("/control/face/token", json!({ "user_id": buyer }))
        .await;
    assert_eq!(status, 200);
    let ftoken = t["ftoken"].as_str().unwrap();
    assert!(ftoken.starts_with("fp") && ftoken.len() == 35, "{ftoken}");
    assert!(sandbox.ctx.store().data.face_tokens.contains_key(ftoken));

    let (status, _) = sandbox
        .post_status(
            "/control/faults",
            json!({ "app_id": "2021000000000311", "face": { "kind": "weak_light" }, "count": 2 }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, err) = sandbox
        .post_status(
            "/control/face/token",
            json!({ "app_id": "2021000000000311", "user_id": buyer }),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(err["code"], "Z1008");
    let failed = post_form(
        &sandbox,
        "/face",
        &[("app_id", "2021000000000311"), ("user_id", &buyer)],
    )
    .await;
    assert_eq!(failed.status, 422);
    assert!(failed.body.contains("光线"));
    // Count used up: the next capture works, through the page.
    let ok = post_form(
        &sandbox,
        "/face",
        &[("app_id", "2021000000000311"), ("user_id", &buyer)],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("id=\"ftoken\">fp"));
    let (status, _) = sandbox
        .post_status(
            "/control/face/token",
            json!({ "user_id": "2088000000000000" }),
        )
        .await;
    assert_eq!(status, 404);
}

/// `alipay.trade.create` (the `alipay` crate does not type it yet).
#[derive(serde::Serialize)]
struct Create {
    out_trade_no: String,
    total_amount: String,
    subject: String,
    buyer_id: String,
}

impl alipay::ApiRequest for Create {
    const METHOD: &'static str = "alipay.trade.create";
    type Response = serde_json::Value;
}

#[tokio::test]
async fn the_jsapi_flow_authorises_creates_and_pays_in_the_cashier_as_the_trades_buyer() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000312").await;
    let buyer = sandbox.buyer("30.00").await;
    let other = sandbox.buyer("30.00").await;

    // 1. Silent login gives the page an auth_code for this buyer.
    let page = get_page(
        &sandbox,
        &authorize_path(
            &app.app_id,
            "auth_base",
            "https://m.example.com/h5",
            "vm9",
            Some(&buyer),
        ),
    )
    .await;
    let q = query_of(page.location.as_deref().unwrap());
    let code = param(&q, "auth_code").unwrap().to_owned();
    let user_id = sandbox.ctx.store().data.grants[&code].user_id.clone();
    assert_eq!(user_id, buyer);

    // 2. The merchant creates the trade for that buyer.
    let created = app
        .client
        .execute(
            &Create {
                out_trade_no: "p_jsapi".into(),
                total_amount: "7.00".into(),
                subject: "果汁".into(),
                buyer_id: user_id,
            },
            &CallOptions::default(),
        )
        .await
        .success()
        .expect("trade.create");
    let trade_no = created["trade_no"].as_str().unwrap().to_owned();

    // 3. tradePay opens the cashier: it shows the trade's buyer, no picker.
    let cashier = get_page(&sandbox, &format!("/cashier?embed=1&trade_no={trade_no}")).await;
    assert_eq!(cashier.status, 200);
    assert!(cashier.body.contains(&format!("value=\"{buyer}\"")));
    assert!(!cashier.body.contains("value=\"new\""));

    // A forged buyer_id in the form does not change who pays.
    let paid = post_form(
        &sandbox,
        "/cashier/pay",
        &[
            ("trade_no", &trade_no),
            ("embed", "1"),
            ("buyer_id", &other),
            ("decision", "pay"),
        ],
    )
    .await;
    assert!(
        paid.body.contains("data-result-code=\"9000\""),
        "{}",
        paid.body
    );
    let q = app
        .client
        .execute(&Query::by_out_trade_no("p_jsapi"), &CallOptions::default())
        .await
        .success()
        .unwrap();
    assert_eq!(q.trade_status, TradeStatus::TradeSuccess);
    assert_eq!(q.buyer_user_id.as_deref(), Some(buyer.as_str()));
    assert_eq!(
        sandbox.get(&format!("/control/buyers/{other}")).await["balance_fen"],
        3000
    );
}
