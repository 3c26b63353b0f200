//! The buyer's H5 pages over real HTTP, against the embedded sandbox's OAuth pages, gateway
//! and cashier: sign-up with an SMS code, 免登 on the next visit, binding a second Alipay user
//! to an existing phone, open_id mode, the order and its payment. Then every bad input: forged
//! and replayed `state`, expired and reused `auth_code`, unknown machine, out-of-stock
//! product, tampered price and total, cross-site posts, and the SMS limits (60 s resend, daily
//! caps per phone and per IP, 5 tries, expiry, reuse), each a clear 4xx that changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use openvend::domain::order::OrderState;
use openvend::store::orders;
use serde_json::{Value, json};

use crate::sale::{Running, start, start_with, wait_for_state};

/// A browser: keeps cookies, follows no redirects (the tests look at each hop).
pub struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    lang: &'static str,
}

/// One answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub location: String,
    pub body: String,
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            lang: "zh-CN,zh;q=0.9",
        }
    }

    pub fn english(mut self) -> Browser {
        self.lang = "en-US,en;q=0.9";
        self
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, resp: reqwest::Response) -> Resp {
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = v.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (k, v) = pair.split_once('=').unwrap();
            assert!(
                attrs.contains("HttpOnly") && attrs.contains("SameSite=Lax"),
                "{text}"
            );
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Resp {
            status,
            location,
            body: resp.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, url: &str) -> Resp {
        let resp = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .header("accept-language", self.lang)
            .send()
            .await
            .unwrap();
        self.finish(resp).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Resp {
        self.post_from(url, form, None).await
    }

    pub async fn post_from(
        &mut self,
        url: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Resp {
        let mut req = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .header("accept-language", self.lang)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let resp = req.send().await.unwrap();
        self.finish(resp).await
    }
}

/// `k=v&…`, form-encoded.
pub fn form_body(form: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").unwrap();
    url.query_pairs_mut().extend_pairs(form);
    url.query().unwrap_or("").to_owned()
}

fn at(r: &Running, path: &str) -> String {
    if path.starts_with("http") {
        path.to_owned()
    } else {
        format!("{}{path}", r.http_url)
    }
}

pub async fn count(r: &Running, sql: &str) -> i64 {
    let row = openvend::store::query(sql)
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap();
    row.try_get::<i64, _>(0)
        .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
        .unwrap()
}

pub fn new_buyer(r: &Running, nick: &str) -> String {
    alipay_sandbox::control::new_buyer(&r.sandbox, 1_000_000, None, Some(nick.into())).user_id
}

/// The machine page without a session: the redirect to Alipay's authorize page.
async fn start_sign_in(r: &Running, b: &mut Browser, machine: &str) -> String {
    let resp = b.get(&at(r, &format!("/m/{machine}"))).await;
    assert_eq!(resp.status, 302, "{resp:?}");
    assert!(
        resp.location.contains("/oauth2/publicAppAuthorize.htm"),
        "{resp:?}"
    );
    assert!(resp.location.contains("scope=auth_base"), "{resp:?}");
    resp.location
}

/// The buyer signs in at the sandbox's authorize page (and consents, for `auth_user`);
/// returns the callback URL Alipay redirects to.
async fn authorize(r: &Running, b: &mut Browser, authorize_url: &str, user_id: &str) -> String {
    let resp = b.get(&format!("{authorize_url}&user_id={user_id}")).await;
    if resp.status == 302 {
        return resp.location;
    }
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.body.contains("/oauth2/consent"),
        "consent page expected: {}",
        resp.body
    );
    let url = reqwest::Url::parse(authorize_url).unwrap();
    let mut form: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form.push(("user_id".into(), user_id.into()));
    form.push(("decision".into(), "allow".into()));
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let resp = b
        .post(&format!("{}/oauth2/consent", r.sandbox_url), &pairs)
        .await;
    assert_eq!(resp.status, 303, "{resp:?}");
    resp.location
}

/// The newest code the log provider wrote for this phone.
pub fn last_code(r: &Running, phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let masked = format!("{}****{}", &digits[..3], &digits[7..]);
    let text = std::fs::read_to_string(r.data_dir.join("sms-outbox.log")).unwrap();
    text.lines()
        .rfind(|l| l.starts_with(&masked))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_owned()
}

/// A new buyer, from the machine page to a pending session on the phone page.
async fn to_phone_page(r: &Running, b: &mut Browser, user_id: &str) {
    let auth = start_sign_in(r, b, "VM-0001").await;
    let callback = authorize(r, b, &auth, user_id).await;
    let resp = b.get(&callback).await;
    assert_eq!(
        resp.status, 302,
        "an unknown buyer is asked for auth_user: {resp:?}"
    );
    assert!(resp.location.contains("scope=auth_user"), "{resp:?}");
    let callback = authorize(r, b, &resp.location, user_id).await;
    let resp = b.get(&callback).await;
    assert_eq!(
        (resp.status, resp.location.as_str()),
        (303, "/m/phone"),
        "{resp:?}"
    );
    let page = b.get(&at(r, "/m/phone")).await;
    assert_eq!(page.status, 200);
}

/// A new buyer signs up with `phone`; ends on the machine page, signed in.
pub async fn sign_up(r: &Running, b: &mut Browser, user_id: &str, phone: &str) {
    to_phone_page(r, b, user_id).await;
    let resp = b.post(&at(r, "/m/phone/send"), &[("phone", phone)]).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let code = last_code(r, phone);
    let resp = b
        .post(
            &at(r, "/m/phone/verify"),
            &[("phone", phone), ("code", &code)],
        )
        .await;
    assert_eq!(
        (resp.status, resp.location.as_str()),
        (303, "/m/VM-0001"),
        "{}",
        resp.body
    );
    let page = b.get(&at(r, "/m/VM-0001")).await;
    assert_eq!(page.status, 200, "{}", page.body);
}

async fn price_of(r: &Running, slot: &str) -> i64 {
    count(
        r,
        &format!("SELECT s.price_fen FROM slots s JOIN machines m ON m.id = s.machine_id WHERE m.code = 'VM-0001' AND s.code = '{slot}'"),
    )
    .await
}

async fn reserved(r: &Running, slot: &str) -> i64 {
    count(
        r,
        &format!("SELECT s.reserved FROM slots s JOIN machines m ON m.id = s.machine_id WHERE m.code = 'VM-0001' AND s.code = '{slot}'"),
    )
    .await
}

/// Posts the order form as the page would (every slot's shown price, the shown total).
async fn order(r: &Running, b: &mut Browser, items: &[(&str, u32)]) -> Resp {
    let mut form: Vec<(String, String)> = Vec::new();
    let mut total = 0;
    for slot in ["A1", "A2", "A3"] {
        let price = price_of(r, slot).await;
        let qty = items
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, q)| *q)
            .unwrap_or(0);
        total += price * i64::from(qty);
        form.push((format!("qty.{slot}"), qty.to_string()));
        form.push((format!("price.{slot}"), price.to_string()));
    }
    form.push(("total".into(), total.to_string()));
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    b.post(&at(r, "/m/VM-0001/order"), &pairs).await
}

fn order_id(resp: &Resp) -> i64 {
    assert_eq!(resp.status, 303, "{resp:?}");
    resp.location
        .strip_prefix("/m/o/")
        .and_then(|s| s.strip_suffix("?pay=1"))
        .unwrap()
        .parse()
        .unwrap()
}

async fn status(r: &Running, b: &mut Browser, id: i64) -> Value {
    let resp = b.get(&at(r, &format!("/m/o/{id}/status"))).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    serde_json::from_str(&resp.body).unwrap()
}

async fn pay_at_sandbox(r: &Running, id: i64, buyer: &str) {
    let o = orders::by_id(&r.app_services.db, id)
        .await
        .unwrap()
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/control/trades/pay", r.sandbox_url))
        .json(&json!({ "app_id": openvend::app::SANDBOX_APP_ID, "trade_no": o.trade_no.unwrap(), "buyer_id": buyer }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

fn sandbox_trade(r: &Running, out_trade_no: &str) -> alipay_sandbox::model::Trade {
    r.sandbox
        .store()
        .data
        .trades
        .values()
        .find(|t| t.out_trade_no == out_trade_no)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn a_new_buyer_signs_up_orders_pays_and_comes_back_without_a_prompt() {
    let r = start().await;
    let buyer = new_buyer(&r, "小明");
    let mut b = Browser::new();
    sign_up(&r, &mut b, &buyer, "13800138000").await;
    assert_eq!(count(&r, "SELECT COUNT(*) FROM accounts").await, 1);
    assert_eq!(
        count(&r, &format!("SELECT COUNT(*) FROM alipay_users WHERE id_kind = 'user_id' AND alipay_id = '{buyer}'")).await,
        1
    );
    let stored: String = openvend::store::query("SELECT phone_sealed || phone_index FROM accounts")
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap()
        .get(0);
    assert!(
        !stored.contains("13800138000"),
        "the phone is not stored in clear"
    );

    // The machine page shows the catalogue; an order of 2 × A1 + 1 × A2 is priced by the server.
    let page = b.get(&at(&r, "/m/VM-0001")).await;
    assert!(
        page.body.contains("¥3.50") && page.body.contains("name=\"qty.A1\""),
        "{}",
        page.body
    );
    let id = order_id(&order(&r, &mut b, &[("A1", 2), ("A2", 1)]).await);
    let o = orders::by_id(&r.app_services.db, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((o.state, o.total.0), (OrderState::AwaitingPayment, 900));
    assert_eq!(reserved(&r, "A1").await, 2);
    let channel: String = openvend::store::query("SELECT channel FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(channel, "jsapi");
    let trade = sandbox_trade(&r, &o.out_trade_no);
    assert_eq!(trade.buyer_user_id.as_deref(), Some(buyer.as_str()));
    assert_eq!(trade.terminal_id.as_deref(), Some("VM0001"));
    assert_eq!(trade.total_fen, 900);
    let pid: String = openvend::store::query("SELECT seller_pid FROM operators")
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(trade.seller_id, pid);

    // The payment page hands the trade number to tradePay and loads the sandbox bridge.
    let page = b.get(&at(&r, &format!("/m/o/{id}?pay=1"))).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&trade.trade_no) && page.body.contains("/bridge.js"),
        "{}",
        page.body
    );
    assert_eq!(status(&r, &mut b, id).await["can_pay"], true);

    // The buyer pays; the notification marks the order paid and queues its dispense.
    pay_at_sandbox(&r, id, &buyer).await;
    let resp = b
        .post(&at(&r, &format!("/m/o/{id}/result")), &[("code", "9000")])
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    wait_for_state(&r, &o.out_trade_no, OrderState::Paid).await;
    let s = status(&r, &mut b, id).await;
    assert_eq!(
        (
            s["state"].as_str(),
            s["paid"].as_bool(),
            s["dispense_queued"].as_bool()
        ),
        (Some("paid"), Some(true), Some(true)),
        "{s}"
    );

    // The account page: the order, and the phone in full for its owner.
    let page = b.get(&at(&r, "/m/account")).await;
    assert!(
        page.body.contains("13800138000") && page.body.contains(&format!("/m/o/{id}")),
        "{}",
        page.body
    );

    // Another visit from a fresh browser: silent sign-in, straight to the products (免登).
    let mut again = Browser::new();
    let auth = start_sign_in(&r, &mut again, "VM-0001").await;
    let callback = authorize(&r, &mut again, &auth, &buyer).await;
    let resp = again.get(&callback).await;
    assert_eq!(
        (resp.status, resp.location.as_str()),
        (303, "/m/VM-0001"),
        "{resp:?}"
    );
    let page = again.get(&at(&r, "/m/VM-0001")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=\"qty.A1\""));
    assert_eq!(count(&r, "SELECT COUNT(*) FROM accounts").await, 1);

    // Another buyer cannot see this order.
    let other = new_buyer(&r, "小红");
    let mut ob = Browser::new();
    sign_up(&r, &mut ob, &other, "13900139000").await;
    assert_eq!(ob.get(&at(&r, &format!("/m/o/{id}"))).await.status, 404);
    assert_eq!(
        ob.get(&at(&r, &format!("/m/o/{id}/status"))).await.status,
        404
    );
}

#[tokio::test]
async fn a_phone_that_has_an_account_binds_a_new_alipay_user_to_it() {
    let r = start().await;
    let first = new_buyer(&r, "first");
    let mut b1 = Browser::new();
    sign_up(&r, &mut b1, &first, "13700137000").await;
    let id = order_id(&order(&r, &mut b1, &[("A3", 1)]).await);

    let second = new_buyer(&r, "second");
    let mut b2 = Browser::new();
    r.app_services.clock.advance(61_000); // one code per phone per minute
    sign_up(&r, &mut b2, &second, "137 0013 7000").await;
    assert_eq!(count(&r, "SELECT COUNT(*) FROM accounts").await, 1);
    assert_eq!(
        count(&r, "SELECT COUNT(DISTINCT account_id) FROM alipay_users").await,
        1
    );
    assert_eq!(count(&r, "SELECT COUNT(*) FROM alipay_users").await, 2);
    // Same account: the second Alipay user sees the first one's order.
    let page = b2.get(&at(&r, "/m/account")).await;
    assert!(page.body.contains(&format!("/m/o/{id}")), "{}", page.body);
}

#[tokio::test]
async fn in_open_id_mode_buyers_are_keyed_by_open_id_and_trades_use_buyer_open_id() {
    let r = start_with(|s| s.sandbox_id_mode = alipay_sandbox::model::IdMode::OpenId).await;
    let buyer = new_buyer(&r, "open");
    let mut b = Browser::new().english();
    sign_up(&r, &mut b, &buyer, "15000150000").await;
    let (kind, id): (String, String) =
        openvend::store::query("SELECT id_kind, alipay_id FROM alipay_users")
            .fetch_one(&r.app_services.db.pool)
            .await
            .map(|row| (row.get(0), row.get(1)))
            .unwrap();
    assert_eq!(kind, "open_id");
    assert_ne!(id, buyer, "the app sees an open_id, not the user id");

    let page = b.get(&at(&r, "/m/VM-0001")).await;
    assert!(
        page.body.contains("Pay now"),
        "English by Accept-Language: {}",
        page.body
    );
    let oid = order_id(&order(&r, &mut b, &[("A2", 1)]).await);
    let o = orders::by_id(&r.app_services.db, oid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sandbox_trade(&r, &o.out_trade_no).buyer_user_id.as_deref(),
        Some(buyer.as_str())
    );
    pay_at_sandbox(&r, oid, &buyer).await;
    wait_for_state(&r, &o.out_trade_no, OrderState::Paid).await;

    // 免登 works by open_id too.
    let mut again = Browser::new();
    let auth = start_sign_in(&r, &mut again, "VM-0001").await;
    let callback = authorize(&r, &mut again, &auth, &buyer).await;
    assert_eq!(again.get(&callback).await.location, "/m/VM-0001");
}

async fn sessions_and_accounts(r: &Running) -> (i64, i64) {
    (
        count(r, "SELECT COUNT(*) FROM h5_sessions").await,
        count(r, "SELECT COUNT(*) FROM accounts").await,
    )
}

#[tokio::test]
async fn forged_foreign_and_replayed_states_are_refused_and_change_nothing() {
    let r = start().await;
    let buyer = new_buyer(&r, "s");
    let mut b = Browser::new();
    let auth = start_sign_in(&r, &mut b, "VM-0001").await;
    let callback = authorize(&r, &mut b, &auth, &buyer).await;
    let state = reqwest::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let code = reqwest::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "auth_code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let before = sessions_and_accounts(&r).await;

    // Forged: a made-up state, a state with its MAC changed, no state.
    for forged in ["abc.def", &format!("{}x", state), ""] {
        let resp = b
            .get(&at(
                &r,
                &format!("/m/oauth/callback?auth_code={code}&state={forged}"),
            ))
            .await;
        assert_eq!(resp.status, 400, "{forged}: {resp:?}");
        assert!(
            resp.body.contains("不是在这个浏览器里发起的"),
            "{}",
            resp.body
        );
    }
    // A real state carried to another browser.
    let mut thief = Browser::new();
    let resp = thief.get(&callback).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(sessions_and_accounts(&r).await, before);

    // The real browser uses it once (an unknown buyer goes on to auth_user) …
    let resp = b.get(&callback).await;
    assert_eq!(resp.status, 302, "{resp:?}");
    // … and a replay is refused.
    let resp = b.get(&callback).await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("已经用过"), "{}", resp.body);
    assert_eq!(sessions_and_accounts(&r).await, before);
}

#[tokio::test]
async fn expired_and_reused_auth_codes_are_refused_and_change_nothing() {
    let r = start().await;
    let buyer = new_buyer(&r, "c");
    let mut b = Browser::new().english();
    // Reused: a code already exchanged, presented again with a fresh state.
    let auth = start_sign_in(&r, &mut b, "VM-0001").await;
    let callback = authorize(&r, &mut b, &auth, &buyer).await;
    let used_code = reqwest::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "auth_code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(b.get(&callback).await.status, 302);
    let before = sessions_and_accounts(&r).await;
    let auth = start_sign_in(&r, &mut b, "VM-0001").await;
    let fresh = authorize(&r, &mut b, &auth, &buyer).await;
    let fresh_code = reqwest::Url::parse(&fresh)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "auth_code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let reused = fresh.replace(&fresh_code, &used_code);
    let resp = b.get(&reused).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(resp.body.contains("invalid or expired"), "{}", resp.body);
    assert_eq!(sessions_and_accounts(&r).await, before);

    // Expired: the code outlives Alipay's five minutes before it comes back.
    let auth = start_sign_in(&r, &mut b, "VM-0001").await;
    let late = authorize(&r, &mut b, &auth, &buyer).await;
    crate::sale::control(&r, "/control/clock/advance", json!({ "seconds": 360 })).await;
    let resp = b.get(&late).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(resp.body.contains("invalid or expired"), "{}", resp.body);
    assert_eq!(sessions_and_accounts(&r).await, before);
}

#[tokio::test]
async fn an_unknown_machine_is_a_clear_404_that_starts_nothing() {
    let r = start().await;
    let mut b = Browser::new().english();
    let resp = b.get(&at(&r, "/m/NOPE-404")).await;
    assert_eq!(resp.status, 404);
    assert!(
        resp.body.contains("There is no machine NOPE-404"),
        "{}",
        resp.body
    );
    let resp = b
        .post(
            &at(&r, "/m/NOPE-404/order"),
            &[("qty.A1", "1"), ("price.A1", "350")],
        )
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(count(&r, "SELECT COUNT(*) FROM oauth_states").await, 0);
    assert_eq!(count(&r, "SELECT COUNT(*) FROM orders").await, 0);
}

#[tokio::test]
async fn an_out_of_stock_product_a_tampered_price_or_total_and_a_cross_site_post_are_refused() {
    let r = start().await;
    let buyer = new_buyer(&r, "t");
    let mut b = Browser::new().english();
    sign_up(&r, &mut b, &buyer, "18800188000").await;

    // Out of stock: one left, two asked.
    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    let resp = reqwest::Client::new()
        .patch(format!("{}/api/v1/machines/VM-0001/slots/A2", r.http_url))
        .bearer_auth(token.trim())
        .json(&json!({ "stock": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = order(&r, &mut b, &[("A2", 2)]).await;
    assert_eq!(resp.status, 409, "{resp:?}");
    assert!(resp.body.contains("A2 cannot be sold"), "{}", resp.body);

    // A price lowered in the form.
    let resp = b
        .post(
            &at(&r, "/m/VM-0001/order"),
            &[("qty.A1", "1"), ("price.A1", "1"), ("total", "1")],
        )
        .await;
    assert_eq!(resp.status, 422, "{resp:?}");
    assert!(
        resp.body
            .contains("The price of A1 differs from the page (page ¥0.01, actual ¥3.50)"),
        "{}",
        resp.body
    );
    // A total lowered in the form.
    let resp = b
        .post(
            &at(&r, "/m/VM-0001/order"),
            &[("qty.A1", "1"), ("price.A1", "350"), ("total", "1")],
        )
        .await;
    assert_eq!(resp.status, 422);
    assert!(
        resp.body.contains("The total differs from the page"),
        "{}",
        resp.body
    );
    // A price left out, an extra field, a silly quantity.
    for form in [
        vec![("qty.A1", "1")],
        vec![("qty.A1", "1"), ("price.A1", "350"), ("amount", "1")],
        vec![("qty.A1", "-1"), ("price.A1", "350")],
        vec![("qty.A1", "11"), ("price.A1", "350")],
        vec![("qty.A1", "0"), ("price.A1", "350")],
    ] {
        let resp = b.post(&at(&r, "/m/VM-0001/order"), &form).await;
        assert_eq!(resp.status, 422, "{form:?}: {resp:?}");
    }
    // A form posted from another site.
    let resp = b
        .post_from(
            &at(&r, "/m/VM-0001/order"),
            &[("qty.A1", "1"), ("price.A1", "350")],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(resp.status, 403);

    // Nothing was written, nothing reserved, nothing asked of Alipay.
    assert_eq!(count(&r, "SELECT COUNT(*) FROM orders").await, 0);
    assert_eq!(count(&r, "SELECT SUM(reserved) FROM slots").await, 0);
    assert!(r.sandbox.store().data.trades.is_empty());
}

async fn send(r: &Running, b: &mut Browser, phone: &str) -> Resp {
    b.post(&at(r, "/m/phone/send"), &[("phone", phone)]).await
}

async fn verify(r: &Running, b: &mut Browser, phone: &str, code: &str) -> Resp {
    b.post(
        &at(r, "/m/phone/verify"),
        &[("phone", phone), ("code", code)],
    )
    .await
}

fn wrong(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

#[tokio::test]
async fn sms_codes_resend_after_60_s_allow_5_tries_expire_and_are_used_once() {
    let r = start().await;
    let buyer = new_buyer(&r, "sms");
    let mut b = Browser::new().english();
    to_phone_page(&r, &mut b, &buyer).await;
    let phone = "13600136000";
    let clock = &r.app_services.clock;

    // Not a mainland mobile: refused, nothing sent.
    let resp = send(&r, &mut b, "+1 415 555 0100").await;
    assert_eq!(resp.status, 422);
    assert_eq!(count(&r, "SELECT COUNT(*) FROM sms_codes").await, 0);

    assert_eq!(send(&r, &mut b, phone).await.status, 200);
    let resp = send(&r, &mut b, phone).await;
    assert_eq!(resp.status, 429, "one send per phone per 60 s");
    assert!(
        resp.body
            .contains("A code was just sent to this number; try again in 60 s"),
        "{}",
        resp.body
    );
    assert_eq!(count(&r, "SELECT COUNT(*) FROM sms_codes").await, 1);

    // Five wrong tries use the code up; the right code is refused after that.
    clock.advance(61_000);
    assert_eq!(send(&r, &mut b, phone).await.status, 200);
    let code = last_code(&r, phone);
    for left in (1..5).rev() {
        let resp = verify(&r, &mut b, phone, &wrong(&code)).await;
        assert_eq!(resp.status, 400);
        assert!(
            resp.body
                .contains(&format!("Wrong code; {left} tries left")),
            "{}",
            resp.body
        );
    }
    let resp = verify(&r, &mut b, phone, &wrong(&code)).await;
    assert_eq!(resp.status, 429);
    assert!(resp.body.contains("no tries are left"), "{}", resp.body);
    let resp = verify(&r, &mut b, phone, &code).await;
    assert_eq!(resp.status, 429);
    assert!(resp.body.contains("Too many wrong tries"), "{}", resp.body);

    // An expired code.
    clock.advance(61_000);
    assert_eq!(send(&r, &mut b, phone).await.status, 200);
    let code = last_code(&r, phone);
    clock.advance(5 * 60_000 + 1_000);
    let resp = verify(&r, &mut b, phone, &code).await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("The code has expired"), "{}", resp.body);
    assert_eq!(count(&r, "SELECT COUNT(*) FROM accounts").await, 0);

    // A code for another number than the one it was sent to.
    clock.advance(61_000);
    assert_eq!(send(&r, &mut b, phone).await.status, 200);
    let code = last_code(&r, phone);
    let resp = verify(&r, &mut b, "13600136001", &code).await;
    assert_eq!(resp.status, 400);
    assert!(
        resp.body.contains("No code was sent to this number"),
        "{}",
        resp.body
    );
    assert_eq!(count(&r, "SELECT COUNT(*) FROM accounts").await, 0);

    // The right code binds; the same code again is refused and changes nothing.
    let resp = verify(&r, &mut b, phone, &code).await;
    assert_eq!(resp.status, 303, "{resp:?}");
    assert_eq!(count(&r, "SELECT COUNT(*) FROM accounts").await, 1);
    let resp = verify(&r, &mut b, phone, &code).await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("already used"), "{}", resp.body);
    assert_eq!(count(&r, "SELECT COUNT(*) FROM accounts").await, 1);
    assert_eq!(count(&r, "SELECT COUNT(*) FROM alipay_users").await, 1);
}

#[tokio::test]
async fn sms_sends_stop_at_the_daily_caps_per_phone_and_per_ip() {
    let r = start_with(|s| {
        s.sms.daily_per_phone = 2;
        s.sms.daily_per_ip = 3;
    })
    .await;
    let buyer = new_buyer(&r, "cap");
    let mut b = Browser::new().english();
    to_phone_page(&r, &mut b, &buyer).await;
    let clock = &r.app_services.clock;
    assert_eq!(send(&r, &mut b, "13500135000").await.status, 200);
    clock.advance(61_000);
    assert_eq!(send(&r, &mut b, "13500135000").await.status, 200);
    clock.advance(61_000);
    let resp = send(&r, &mut b, "13500135000").await;
    assert_eq!(resp.status, 429);
    assert!(
        resp.body
            .contains("This number has had all its codes for today"),
        "{}",
        resp.body
    );

    // The same IP cycling through numbers.
    assert_eq!(send(&r, &mut b, "13500135001").await.status, 200);
    let resp = send(&r, &mut b, "13500135002").await;
    assert_eq!(resp.status, 429);
    assert!(
        resp.body
            .contains("Your network has asked for all its codes"),
        "{}",
        resp.body
    );
    assert_eq!(count(&r, "SELECT COUNT(*) FROM sms_codes").await, 3);
}

#[tokio::test]
async fn an_unpaid_h5_order_is_polled_until_its_time_is_up_then_cancelled() {
    let r = start().await;
    let buyer = new_buyer(&r, "late");
    let mut b = Browser::new();
    sign_up(&r, &mut b, &buyer, "13300133000").await;
    let id = order_id(&order(&r, &mut b, &[("A1", 1)]).await);
    let o = orders::by_id(&r.app_services.db, id)
        .await
        .unwrap()
        .unwrap();
    let key = orders::resolve_key(id);
    let run_at = || async { crate::sale::next_look(&r, id, &key).await.1 };
    let first = run_at().await;

    // The first poll comes due: the trade waits for the buyer, so the resolver polls again
    // later instead of cancelling (the buyer holds the trade number and can still pay).
    r.app_services.clock.advance(11_000);
    r.app_services.jobs_ready.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while run_at().await == first {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resolver did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still = orders::by_id(&r.app_services.db, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.state, OrderState::AwaitingPayment);
    assert_eq!(
        sandbox_trade(&r, &o.out_trade_no).state,
        alipay_sandbox::model::TradeState::WaitBuyerPay
    );

    // Time is up: cancelled at Alipay, closed here, stock released.
    r.app_services.clock.advance(6 * 60_000);
    r.app_services.jobs_ready.notify_one();
    wait_for_state(&r, &o.out_trade_no, OrderState::Closed).await;
    assert_eq!(reserved(&r, "A1").await, 0);
    assert_eq!(
        sandbox_trade(&r, &o.out_trade_no).state,
        alipay_sandbox::model::TradeState::TradeClosed
    );
}

#[tokio::test]
async fn a_cancelled_trade_pay_closes_the_order_through_the_resolver() {
    let r = start().await;
    let buyer = new_buyer(&r, "cancel");
    let mut b = Browser::new();
    sign_up(&r, &mut b, &buyer, "13100131000").await;
    let id = order_id(&order(&r, &mut b, &[("A3", 2)]).await);
    let o = orders::by_id(&r.app_services.db, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reserved(&r, "A3").await, 2);

    let resp = b
        .post(&at(&r, &format!("/m/o/{id}/result")), &[("code", "6001")])
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    wait_for_state(&r, &o.out_trade_no, OrderState::Closed).await;
    assert_eq!(reserved(&r, "A3").await, 0);
    assert_eq!(
        sandbox_trade(&r, &o.out_trade_no).state,
        alipay_sandbox::model::TradeState::TradeClosed
    );
    let s = status(&r, &mut b, id).await;
    assert_eq!(
        (s["final"].as_bool(), s["can_pay"].as_bool()),
        (Some(true), Some(false))
    );
    // A bad result code is refused.
    let resp = b
        .post(&at(&r, &format!("/m/o/{id}/result")), &[("code", "<x>")])
        .await;
    assert_eq!(resp.status, 422);
}

/// How many commands were recorded for the machine about order `out_trade_no`.
async fn commands_for(r: &Running, out_trade_no: &str) -> i64 {
    count(
        r,
        &format!("SELECT COUNT(*) FROM device_commands WHERE order_id = '{out_trade_no}'"),
    )
    .await
}

/// A buyer (`nick`, `phone`) signed up and ordering one A1 on the H5 page, whose
/// `alipay.trade.create` Alipay carries out but answers "unknown"; `cancel_faults`, the
/// rules for what follows, are set first (the sandbox matches its newest rule first).
async fn order_with_lost_create(
    r: &Running,
    (nick, phone): (&str, &str),
    cancel_faults: &[Value],
) -> (Browser, String, orders::Order) {
    let buyer = new_buyer(r, nick);
    let mut b = Browser::new();
    sign_up(r, &mut b, &buyer, phone).await;
    for rule in cancel_faults {
        crate::sale::control(r, "/control/faults", rule.clone()).await;
    }
    crate::sale::control(
        r,
        "/control/faults",
        json!({ "method": "alipay.trade.create", "fault": { "kind": "unknown_after" }, "count": 1 }),
    )
    .await;
    order(r, &mut b, &[("A1", 1)]).await;
    let id = count(r, "SELECT MAX(id) FROM orders").await;
    let o = orders::by_id(&r.app_services.db, id)
        .await
        .unwrap()
        .unwrap();
    (b, buyer, o)
}

/// A trade whose create answer was lost exists and waits for the buyer; the resolver's cancel
/// is answered without an `action` ("the call failed", in Alipay's words). Nothing is taken
/// as closed on that answer: the order waits, the next query finds the trade still open, and
/// the cancel after it closes it at Alipay too.
#[tokio::test]
async fn a_cancel_answered_without_an_action_is_settled_by_the_next_query() {
    let r = start().await;
    let (_, _, o) = order_with_lost_create(
        &r,
        ("no action", "13200132000"),
        &[
            json!({ "method": "alipay.trade.cancel", "fault": { "kind": "answer", "fields": { "retry_flag": "N" } }, "count": 1 }),
        ],
    )
    .await;
    let id = o.id;
    // The resolver finds the trade waiting, with nobody holding its number, and cancels:
    // both rules are used up.
    crate::sale::wait_for_gateway_rules(&r, 0).await;
    // The answer named no action: the order is not closed on it, the trade still open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = orders::by_id(&r.app_services.db, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waiting.state, OrderState::PaymentUnknown);
    assert_eq!(reserved(&r, "A1").await, 1);
    assert_eq!(
        sandbox_trade(&r, &o.out_trade_no).state,
        alipay_sandbox::model::TradeState::WaitBuyerPay
    );

    // Three seconds on: queried again, still waiting, cancelled, and this time closed.
    r.app_services.clock.advance(3_000);
    r.app_services.jobs_ready.notify_one();
    wait_for_state(&r, &o.out_trade_no, OrderState::Closed).await;
    assert_eq!(reserved(&r, "A1").await, 0);
    assert_eq!(
        sandbox_trade(&r, &o.out_trade_no).state,
        alipay_sandbox::model::TradeState::TradeClosed
    );
    let timeline = orders::timeline(&r.app_services.db, id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.2 == "closed" && e.3 == "cancelled after the buyer's time ran out"),
        "{timeline:?}"
    );
}

/// The buyer pays a trade whose create answer was lost while the resolver's cancel is on its
/// way (held 8 s). The payment's notification comes first, and nothing is served for it: the
/// cancel refunds the payment, and the order ends refunded in full with the trade's number,
/// its stock released, its money on the audit trail, no dispense ever recorded.
#[tokio::test]
async fn a_payment_made_while_the_cancel_is_on_its_way_is_refunded_by_the_cancel() {
    let r = start().await;
    let (_, buyer, o) = order_with_lost_create(
        &r,
        ("last moment", "13400134000"),
        &[
            json!({ "method": "alipay.trade.cancel", "fault": { "kind": "latency", "ms": 8000 }, "count": 1 }),
        ],
    )
    .await;
    let id = o.id;
    // The cancel has been sent (its rule taken) and is held: the buyer pays meanwhile.
    crate::sale::wait_for_gateway_rules(&r, 0).await;
    crate::sale::pay_by_out_trade_no(&r, &o.out_trade_no, &buyer).await;
    // Its notification arrives while the cancel is held, and is not served.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(7);
    loop {
        let timeline = orders::timeline(&r.app_services.db, id).await.unwrap();
        if timeline.iter().any(|e| e.2 == "paid_after_cancel") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the payment's notification was not taken while the cancel was held: {timeline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unknown = orders::by_id(&r.app_services.db, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unknown.state, OrderState::PaymentUnknown);

    let refunded = wait_for_state(&r, &o.out_trade_no, OrderState::Refunded).await;
    let trade = sandbox_trade(&r, &o.out_trade_no);
    assert_eq!(refunded.refunded.0, refunded.total.0);
    assert_eq!(trade.refunded_fen, trade.total_fen);
    assert_eq!(refunded.trade_no.as_deref(), Some(trade.trade_no.as_str()));
    assert_eq!(reserved(&r, "A1").await, 0);
    let timeline = orders::timeline(&r.app_services.db, id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.2 == "cancelled"
                && e.3 == "paid at the last moment; cancel refunded it in full"),
        "{timeline:?}"
    );
    let acts = crate::sale::audit_acts(&r, &format!("order:{id}")).await;
    assert_eq!(acts, ["cancelled_with_refund"]);
    assert_eq!(
        commands_for(&r, &o.out_trade_no).await,
        0,
        "nothing is dispensed for a payment the cancel refunds"
    );
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// The resolver's cancel of a trade whose create answer was lost is answered "try again"; the
/// buyer pays meanwhile; Alipay then refuses every cancel of the paid trade (its 24 hours
/// over, say). The payment is not served and not lost: the order closes, and all of it is
/// refunded once under the order's fixed refund number.
#[tokio::test]
async fn a_paid_trade_whose_cancel_is_refused_is_refunded_instead() {
    let r = start().await;
    // Newest rule first: the first cancel is answered "retry", every later one refused.
    let (mut b, buyer, o) = order_with_lost_create(
        &r,
        ("refused cancel", "13500135000"),
        &[
            json!({ "method": "alipay.trade.cancel", "fault": { "kind": "refuse", "sub_code": "ACQ.TRADE_CANCEL_TIME_OUT" } }),
            json!({ "method": "alipay.trade.cancel", "fault": { "kind": "answer", "fields": { "retry_flag": "Y" } }, "count": 1 }),
        ],
    )
    .await;
    let id = o.id;
    // The first cancel went out (its answer rule taken); the next comes in 3 s.
    crate::sale::wait_for_gateway_rules(&r, 1).await;
    crate::sale::pay_by_out_trade_no(&r, &o.out_trade_no, &buyer).await;

    // Refunded at Alipay by a refund, the order closed with all of it back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let closed = loop {
        let now = orders::by_id(&r.app_services.db, id)
            .await
            .unwrap()
            .unwrap();
        if now.refunded.0 == now.total.0 {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not refunded: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(closed.state, OrderState::Closed);
    // The buyer's page says where the money went.
    let shown = status(&r, &mut b, id).await;
    assert_eq!(shown["label"], "已关闭，款项原路退回", "{shown}");
    assert_eq!(shown["refunded_fen"], closed.total.0);
    let trade = sandbox_trade(&r, &o.out_trade_no);
    assert_eq!(trade.refunded_fen, trade.total_fen);
    assert_eq!(
        crate::sale::strings(
            &r,
            openvend::store::query("SELECT out_request_no FROM refunds WHERE order_id = $1")
                .bind(id)
        )
        .await,
        [format!("{}L", o.out_trade_no)]
    );
    assert_eq!(reserved(&r, "A1").await, 0);
    // Alipay reports the payment once more (another notification): nothing new is written.
    let seller = crate::sale::seller_pid(&r).await;
    let yuan = format!("{}.{:02}", o.total.0 / 100, o.total.0 % 100);
    let again = crate::sale::notice(
        "n-paid-again-after-refused-cancel",
        (&trade.trade_no, &o.out_trade_no),
        "TRADE_SUCCESS",
        &yuan,
        &seller,
        openvend::app::SANDBOX_APP_ID,
    );
    let resp =
        crate::sale::post_notify(&r, alipay_sandbox::notify::signed_body(&r.sandbox, &again)).await;
    assert_eq!(resp, (200, "success".to_owned()));
    let timeline = orders::timeline(&r.app_services.db, id).await.unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "cancel_refused").count(),
        1,
        "{timeline:?}"
    );
    assert!(!kinds.contains(&"paid_after_close"), "{timeline:?}");
    assert_eq!(
        commands_for(&r, &o.out_trade_no).await,
        0,
        "nothing is dispensed for a payment that goes back"
    );
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// A `TRADE_CLOSED` notification naming no payment, for an order whose cancel is out: that
/// cancel may have refunded a payment the notice does not mention, so the notice closes
/// nothing itself. The resolver's query, due at once, decides: here the trade still waits,
/// the cancel is sent again, and Alipay's side is closed with the order.
#[tokio::test]
async fn a_closed_notice_for_an_order_being_cancelled_is_left_to_the_resolver() {
    let r = start().await;
    let (_, _, o) = order_with_lost_create(
        &r,
        ("closed notice", "13600136000"),
        &[
            json!({ "method": "alipay.trade.cancel", "fault": { "kind": "answer", "fields": { "retry_flag": "Y" } }, "count": 1 }),
        ],
    )
    .await;
    let id = o.id;
    crate::sale::wait_for_gateway_rules(&r, 0).await;
    let trade = sandbox_trade(&r, &o.out_trade_no);
    let yuan = format!("{}.{:02}", o.total.0 / 100, o.total.0 % 100);
    let seller = crate::sale::seller_pid(&r).await;
    let closed = crate::sale::notice(
        "n-closed-while-cancelling",
        (&trade.trade_no, &o.out_trade_no),
        "TRADE_CLOSED",
        &yuan,
        &seller,
        openvend::app::SANDBOX_APP_ID,
    );
    let resp =
        crate::sale::post_notify(&r, alipay_sandbox::notify::signed_body(&r.sandbox, &closed))
            .await;
    assert_eq!(resp, (200, "success".to_owned()));
    wait_for_state(&r, &o.out_trade_no, OrderState::Closed).await;
    assert_eq!(
        sandbox_trade(&r, &o.out_trade_no).state,
        alipay_sandbox::model::TradeState::TradeClosed,
        "closed by the cancel the resolver sent again"
    );
    let timeline = orders::timeline(&r.app_services.db, id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.2 == "closed" && e.3 == "cancelled after the buyer's time ran out"),
        "{timeline:?}"
    );
    assert_eq!(reserved(&r, "A1").await, 0);
}

#[tokio::test]
async fn the_operator_api_gives_each_machine_its_h5_url() {
    let r = start().await;
    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    let machines: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/machines", r.http_url))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vm = machines["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["code"] == "VM-0001")
        .unwrap();
    assert_eq!(vm["h5_url"], format!("{}/m/VM-0001", r.http_url));
}

#[tokio::test]
async fn with_real_alipay_a_page_outside_the_alipay_app_says_to_open_it_in_alipay() {
    // Real Alipay settings (the gateway is never reached by this test): no sandbox, no bridge.
    let dir = tempfile::tempdir().unwrap();
    let settings = crate::app::real_alipay(
        dir.path(),
        openvend::config::Settings {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".into(),
            ..openvend::config::Settings::default()
        },
    );
    let app = openvend::app::App::build(settings).await.unwrap();
    let base = app.public_url.clone();
    let token = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // With real Alipay nothing but the operator is seeded: the machine and its product come
    // from the operator API, as in a real deployment.
    let api_token = std::fs::read_to_string(dir.path().join("data").join("api_token")).unwrap();
    let machines: serde_json::Value = http
        .get(format!("{base}/api/v1/machines"))
        .bearer_auth(api_token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(machines["machines"], serde_json::json!([]), "no demo fleet");
    let product: serde_json::Value = http
        .post(format!("{base}/api/v1/products"))
        .bearer_auth(api_token.trim())
        .json(&serde_json::json!({ "name": "Water" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let added = http
        .post(format!("{base}/api/v1/machines"))
        .bearer_auth(api_token.trim())
        .json(&serde_json::json!({ "code": "VM-0001", "kind": "vending", "terminal_id": "VM0001",
            "slots": [{ "code": "A1", "product_id": product["id"], "price_fen": 200, "capacity": 10, "stock": 5 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);

    let page = http
        .get(format!("{base}/m/VM-0001"))
        .header("user-agent", "Mozilla/5.0 (iPhone) Safari")
        .header("accept-language", "en")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("open this page in Alipay"), "{body}");
    assert!(!body.contains("bridge.js"));

    let inside = http
        .get(format!("{base}/m/VM-0001"))
        .header("user-agent", "Mozilla/5.0 (iPhone) AlipayClient/10.5.0")
        .send()
        .await
        .unwrap();
    assert_eq!(inside.status(), 302);
    let location = inside.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("https://openauth.alipay.com/oauth2/publicAppAuthorize.htm?app_id=2021000000000042&scope=auth_base"),
        "{location}"
    );
    assert!(
        location.contains(&format!(
            "redirect_uri={}",
            form_body(&[("x", &format!("{base}/m/oauth/callback"))])[2..].to_owned()
        )),
        "{location}"
    );
    token.cancel();
}
