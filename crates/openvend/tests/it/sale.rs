//! The QR sale over real HTTP with the embedded sandbox: precreate, the buyer pays, the
//! verified notification marks the order paid once; forged and altered notifications change
//! nothing.

use std::time::Duration;

use openvend::app::App;
use openvend::config::Settings;
use openvend::domain::order::OrderState;
use openvend::pay::sale::{SaleError, SaleItem, SaleRequest, SaleStarted, start_qr_sale};
use openvend::services::now_ms;
use openvend::store::orders;
use serde_json::{Value, json};

pub struct Running {
    pub app_services: std::sync::Arc<openvend::services::Services>,
    pub sandbox: std::sync::Arc<alipay_sandbox::Ctx>,
    pub sandbox_url: String,
    pub http_url: String,
    pub data_dir: std::path::PathBuf,
    token: tokio_util::sync::CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub async fn start() -> Running {
    start_with(|_| {}).await
}

/// Starts the app with some settings changed.
pub async fn start_with(change: impl FnOnce(&mut Settings)) -> Running {
    // `OPENVEND_TEST_LOG=warn cargo test …` shows the server's log.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("OPENVEND_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        sandbox_listen: "127.0.0.1:0".into(),
        mqtt: openvend::config::MqttSettings {
            embedded_listen: "127.0.0.1:0".into(),
            ..Default::default()
        },
        ..Settings::default()
    };
    change(&mut settings);
    if settings.database_url.is_none() {
        settings.database_url = crate::store::postgres_url_if_asked().await.map(Into::into);
    }
    let app = App::build(settings).await.unwrap();
    let running = Running {
        app_services: app.services.clone(),
        sandbox: app.sandbox_ctx().unwrap(),
        sandbox_url: app.sandbox_url().unwrap().to_owned(),
        http_url: app.public_url.clone(),
        data_dir: dir.path().to_path_buf(),
        token: app.shutdown_token(),
        _dir: dir,
    };
    tokio::spawn(app.run_until_stopped());
    mark_machines_online(&running).await;
    running
}

/// Sales need a machine that is online: record a heartbeat for every machine now.
pub async fn mark_machines_online(r: &Running) {
    openvend::store::query("UPDATE machines SET online = TRUE, last_heartbeat_at = $1")
        .bind(r.app_services.now())
        .execute(&r.app_services.db.pool)
        .await
        .unwrap();
}

/// The operator API's acts on `subject` in the audit trail, oldest first.
pub async fn operator_acts(r: &Running, subject: &str) -> Vec<String> {
    strings(
        r,
        openvend::store::query(
            "SELECT action FROM audit_log WHERE subject = $1 AND actor = 'operator-api' ORDER BY id",
        )
        .bind(subject),
    )
    .await
}

/// Every audit act on `subject`, whoever did it, oldest first.
pub async fn audit_acts(r: &Running, subject: &str) -> Vec<String> {
    strings(
        r,
        openvend::store::query("SELECT action FROM audit_log WHERE subject = $1 ORDER BY id")
            .bind(subject),
    )
    .await
}

/// The first column of every row `query` finds, as text.
pub async fn strings(r: &Running, query: openvend::store::sql::Query<'_>) -> Vec<String> {
    strings_in(&r.app_services.db, query).await
}

/// [`strings`] in any store.
pub async fn strings_in(
    db: &openvend::store::Db,
    query: openvend::store::sql::Query<'_>,
) -> Vec<String> {
    query
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The secret of machine `code`, as the store has it.
pub async fn machine_secret(r: &Running, code: &str) -> String {
    openvend::store::query("SELECT secret FROM machines WHERE code = $1")
        .bind(code)
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap()
        .get(0)
}

/// A request to the device HTTP fallback at `base`, signed as `machine` at `ts` with `nonce`
/// (section 7 of the device protocol): the status and the body as text, whatever they are.
#[allow(clippy::too_many_arguments)]
pub async fn signed_device_request(
    client: &reqwest::Client,
    base: &str,
    (machine, secret): (&str, &str),
    ts: i64,
    nonce: &str,
    method: &str,
    path_query: &str,
    body: Vec<u8>,
) -> (reqwest::StatusCode, String) {
    use openvend::device::signing;
    let path = path_query.split('?').next().unwrap();
    let sig = signing::sign(
        secret.as_bytes(),
        signing::http_string(method, path, ts, nonce, &body).as_bytes(),
    );
    let req = if method == "POST" {
        client.post(format!("{base}{path_query}"))
    } else {
        client.get(format!("{base}{path_query}"))
    };
    let resp = req
        .header("X-Machine", machine)
        .header("X-Timestamp", ts.to_string())
        .header("X-Nonce", nonce)
        .header("X-Signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

/// One signed event envelope POSTed over the device HTTP fallback as `machine` at `ts` (its
/// envelope and its request both): status and body.
pub async fn post_device_event(
    r: &Running,
    machine: &str,
    secret: &str,
    ts: i64,
    msg_id: &str,
    kind: &str,
    body: &str,
) -> (u16, Value) {
    let envelope = openvend::device::protocol::Envelope::seal(
        machine,
        secret.as_bytes(),
        msg_id,
        ts,
        kind,
        body.to_owned(),
    )
    .to_bytes();
    let nonce = format!("n-{}", openvend::ids::random_hex(8));
    let (status, text) = signed_device_request(
        &reqwest::Client::new(),
        &r.http_url,
        (machine, secret),
        ts,
        &nonce,
        "POST",
        "/device/v1/events",
        envelope,
    )
    .await;
    (status.as_u16(), serde_json::from_str(&text).unwrap())
}

pub fn sale(slot: &str, qty: u32) -> SaleRequest {
    SaleRequest {
        machine: "VM-0001".into(),
        items: vec![SaleItem {
            slot: slot.into(),
            qty,
        }],
    }
}

pub async fn wait_for_state(r: &Running, out_trade_no: &str, want: OrderState) -> orders::Order {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let o = orders::by_out_trade_no(&r.app_services.db, out_trade_no)
            .await
            .unwrap()
            .unwrap();
        if o.state == want {
            return o;
        }
        if tokio::time::Instant::now() >= deadline {
            let jobs: Vec<String> =
                openvend::store::query("SELECT kind, run_at, last_error FROM jobs")
                    .fetch_all(&r.app_services.db.pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|j| {
                        format!(
                            "{} at {:?}: {:?}",
                            j.get::<String, _>(0),
                            j.try_get::<i64, _>(1).ok(),
                            j.try_get::<Option<String>, _>(2).ok()
                        )
                    })
                    .collect();
            panic!(
                "order stuck in {:?}, wanted {want:?}; now {}; jobs: {jobs:?}",
                o.state,
                r.app_services.now()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// When the job under `key` next looks at order `order_id`, with that job's attempts: its
/// row once queued, else the order's own watch (no attempts yet).
pub async fn next_look(r: &Running, order_id: i64, key: &str) -> (i64, i64) {
    let row = openvend::store::query(
        "SELECT 0 AS src, attempts, run_at AS at FROM jobs WHERE dedup_key = $1 \
         UNION ALL SELECT 1 AS src, 0 AS attempts, watch_at AS at FROM orders WHERE id = $2 AND watch_at IS NOT NULL \
         ORDER BY src LIMIT 1",
    )
    .bind(key)
    .bind(order_id)
    .fetch_optional(&r.app_services.db.pool)
    .await
    .unwrap()
    .unwrap_or_else(|| panic!("nothing watches order {order_id} ({key})"));
    (
        openvend::store::get_int(&row, "attempts").unwrap(),
        openvend::store::get_int(&row, "at").unwrap(),
    )
}

/// How many watch paid order `order_id`'s dispense: its job's row, and the order's own watch
/// until that job is queued. One, for a paid order the machine has not finished.
pub async fn dispense_watches(r: &Running, order_id: i64) -> i64 {
    let row = openvend::store::query(
        "SELECT (SELECT COUNT(*) FROM jobs WHERE dedup_key = $1) \
         + (SELECT COUNT(*) FROM orders WHERE id = $2 AND state IN ('paid', 'dispensing') AND watch_at IS NOT NULL) AS n",
    )
    .bind(orders::dispense_key(order_id))
    .bind(order_id)
    .fetch_one(&r.app_services.db.pool)
    .await
    .unwrap();
    openvend::store::get_int(&row, "n").unwrap()
}

/// Pays the sandbox trade of order `out_trade_no` as `buyer`, as if the buyer had it in hand;
/// the payment must go through.
pub async fn pay_by_out_trade_no(r: &Running, out_trade_no: &str, buyer: &str) {
    let paid = control(
        r,
        "/control/trades/pay",
        json!({ "app_id": openvend::app::SANDBOX_APP_ID, "out_trade_no": out_trade_no, "buyer_id": buyer }),
    )
    .await;
    assert_eq!(paid["trade_status"], "TRADE_SUCCESS", "{paid}");
}

/// Waits until the sandbox holds `left` gateway fault rules: the others were taken by the
/// calls they were counted for.
pub async fn wait_for_gateway_rules(r: &Running, left: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rules: Value = reqwest::get(format!("{}/control/faults", r.sandbox_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if rules["gateway"].as_array().map(Vec::len) == Some(left) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the calls the fault rules wait for were never made: {rules}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn control(r: &Running, path: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}{path}", r.sandbox_url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_paid_qr_sale_is_marked_paid_once_by_the_verified_notification() {
    let r = start().await;
    let started = start_qr_sale(&r.app_services, &sale("A1", 2), now_ms())
        .await
        .unwrap();
    assert_eq!(
        started.amount_fen, 700,
        "priced from the catalogue: 2 × 3.50"
    );

    let buyer = control(&r, "/control/buyers", json!({ "balance": "100.00" })).await["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before_pay = r.app_services.now();
    let paid = control(
        &r,
        "/control/qr/pay",
        json!({ "qr_code": started.qr_code, "buyer_id": buyer }),
    )
    .await;
    assert_eq!(paid["trade_status"], "TRADE_SUCCESS");

    let order = wait_for_state(&r, &started.out_trade_no, OrderState::Paid).await;
    assert!(order.trade_no.is_some());
    let db = &r.app_services.db;
    assert_eq!(dispense_watches(&r, order.id).await, 1);
    // Watched from the dispense's deadline, no longer from the payment's first poll.
    let watch = next_look(&r, order.id, &orders::dispense_key(order.id)).await;
    assert!(
        watch.1 >= before_pay + r.app_services.device.command_ttl_ms(),
        "{watch:?}"
    );

    // The sandbox saw `success` and stopped.
    let notes = reqwest::get(format!("{}/control/notifications", r.sandbox_url))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let note = &notes["notifications"][0];
    assert_eq!(note["acknowledged"], true);

    // A replay of the same notification answers success and changes nothing.
    let params: Vec<(String, String)> = note["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let body = alipay_sandbox::notify::signed_body(&r.sandbox, &params);
    let resp = post_notify(&r, body).await;
    assert_eq!(resp, (200, "success".to_owned()));
    let processed: i64 = openvend::store::query("SELECT COUNT(*) FROM processed_notifications")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(processed, 1);
    let timeline = orders::timeline(db, order.id).await.unwrap();
    assert_eq!(
        timeline.iter().filter(|e| e.2 == "notified").count(),
        1,
        "{timeline:?}"
    );
}

/// A trade notification's parameters as Alipay sends them, before signing. `trade` is
/// (trade_no, out_trade_no).
pub fn notice(
    notify_id: &str,
    (trade_no, out_trade_no): (&str, &str),
    status: &str,
    total: &str,
    seller: &str,
    app_id: &str,
) -> Vec<(String, String)> {
    [
        ("notify_type", "trade_status_sync"),
        ("notify_id", notify_id),
        ("notify_time", "2026-11-28 10:00:00"),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("sign_type", "RSA2"),
        ("app_id", app_id),
        ("trade_no", trade_no),
        ("out_trade_no", out_trade_no),
        ("trade_status", status),
        ("total_amount", total),
        ("seller_id", seller),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The operator's receiving PID, which every genuine notification names as `seller_id`.
pub async fn seller_pid(r: &Running) -> String {
    openvend::store::query("SELECT seller_pid FROM operators")
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

pub async fn post_notify(r: &Running, body: String) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/alipay/notify", r.http_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn forged_or_altered_notifications_are_refused_and_change_nothing() {
    let r = start().await;
    let started = start_qr_sale(&r.app_services, &sale("A2", 1), now_ms())
        .await
        .unwrap();
    let order = orders::by_out_trade_no(&r.app_services.db, &started.out_trade_no)
        .await
        .unwrap()
        .unwrap();
    let base = |total: &str, seller: &str, app: &str| {
        let trade = (
            "2026112822001000000000000001",
            started.out_trade_no.as_str(),
        );
        notice("n-forged-1", trade, "TRADE_SUCCESS", total, seller, app)
    };
    let seller = seller_pid(&r).await;
    let app_id = openvend::app::SANDBOX_APP_ID;

    // Signed by the real key but with the amount off by 0.01, another seller, another app.
    for (params, why) in [
        (base("1.99", &seller, app_id), "total_amount"),
        (base("2.00", "2088999999999999", app_id), "seller_id"),
        (base("2.00", &seller, "2021000000000999"), "app_id"),
    ] {
        let (status, text) =
            post_notify(&r, alipay_sandbox::notify::signed_body(&r.sandbox, &params)).await;
        assert_eq!(status, 400, "{why}: {text}");
        assert!(text.contains(why), "{why}: {text}");
    }
    // Signed by another key.
    let other = alipay::AppPrivateKey::generate().unwrap();
    let params = base("2.00", &seller, app_id);
    let to_sign = alipay::sign::string_to_sign(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        alipay::sign::SignScope::Notification,
    );
    let mut body = alipay::form::encode(params.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    body.push_str(&format!(
        "&sign={}",
        alipay::form::encode_component(other.sign(to_sign.as_bytes()).as_bytes())
    ));
    let (status, text) = post_notify(&r, body).await;
    assert_eq!(status, 400, "{text}");
    // Oversize bodies are refused before they are read.
    let (status, _) = post_notify(&r, "a=".to_owned() + &"x".repeat(70 * 1024)).await;
    assert_eq!(status, 413);
    // Signed, but for an order we never made.
    let mut unknown = base("2.00", &seller, app_id);
    for (k, v) in unknown.iter_mut() {
        if k == "out_trade_no" {
            *v = "OV20261128100000M1Rnosuchorder".into();
        }
    }
    let (status, text) = post_notify(
        &r,
        alipay_sandbox::notify::signed_body(&r.sandbox, &unknown),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unknown out_trade_no"), "{text}");
    // Genuine and for this order, but "waiting for payment" says nothing new: success, and
    // nothing changes.
    let mut waiting = base("2.00", &seller, app_id);
    for (k, v) in waiting.iter_mut() {
        match k.as_str() {
            "trade_status" => *v = "WAIT_BUYER_PAY".into(),
            "notify_id" => *v = "n-waiting-1".into(),
            _ => {}
        }
    }
    let resp = post_notify(
        &r,
        alipay_sandbox::notify::signed_body(&r.sandbox, &waiting),
    )
    .await;
    assert_eq!(resp, (200, "success".to_owned()));

    let after = orders::by_out_trade_no(&r.app_services.db, &started.out_trade_no)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, order, "nothing changed");
    // Nor is a refused notification remembered: the genuine one with its id still counts.
    let remembered: i64 = openvend::store::query(
        "SELECT COUNT(*) FROM processed_notifications WHERE notify_id = 'n-forged-1'",
    )
    .fetch_one(&r.app_services.db.pool)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    assert_eq!(remembered, 0, "a refused notification left its id behind");
}

#[tokio::test]
async fn a_sale_of_an_empty_or_unknown_slot_is_refused_at_once_with_the_reason() {
    let r = start().await;
    let err = start_qr_sale(&r.app_services, &sale("A1", 9), now_ms())
        .await
        .unwrap_err();
    assert!(
        matches!(err, SaleError::Slot(ref s, _) if s == "A1"),
        "{err}"
    );
    let err = start_qr_sale(&r.app_services, &sale("Z9", 1), now_ms())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such slot"), "{err}");
    let err = start_qr_sale(
        &r.app_services,
        &SaleRequest {
            machine: "nope".into(),
            items: vec![],
        },
        now_ms(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SaleError::BadItems), "{err}");
    let orders: i64 = openvend::store::query("SELECT COUNT(*) FROM orders")
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(orders, 0);
}

/// A QR sale of one A2 and a `TRADE_CLOSED` notification of it under `notify_id` and
/// `trade_no`, not yet sent: the sale, its amount in yuan, the notification's fields.
async fn sale_closed_by_notice(
    r: &Running,
    notify_id: &str,
    trade_no: &str,
) -> (SaleStarted, String, Vec<(String, String)>) {
    let started = start_qr_sale(&r.app_services, &sale("A2", 1), now_ms())
        .await
        .unwrap();
    let seller = seller_pid(r).await;
    let yuan = format!(
        "{}.{:02}",
        started.amount_fen / 100,
        started.amount_fen % 100
    );
    let closed = notice(
        notify_id,
        (trade_no, &started.out_trade_no),
        "TRADE_CLOSED",
        &yuan,
        &seller,
        openvend::app::SANDBOX_APP_ID,
    );
    (started, yuan, closed)
}

/// Alipay notifies `TRADE_CLOSED` for a trade that was paid and refunded in full (a cancel
/// that refunded, its answer lost): the order ends refunded with its money on the audit trail,
/// as the resolver's query would record it, not closed unpaid.
#[tokio::test]
async fn a_closed_notification_for_a_paid_trade_records_the_refund_in_full() {
    let r = start().await;
    let (started, yuan, mut closed) =
        sale_closed_by_notice(&r, "n-closed-paid-1", "2026112822001000000000000003").await;
    closed.push(("buyer_pay_amount".into(), yuan.clone()));
    closed.push(("refund_fee".into(), yuan.clone()));
    let resp = post_notify(&r, alipay_sandbox::notify::signed_body(&r.sandbox, &closed)).await;
    assert_eq!(resp, (200, "success".to_owned()));
    let order = wait_for_state(&r, &started.out_trade_no, OrderState::Refunded).await;
    assert_eq!(order.refunded.0, started.amount_fen);
    // The trade the money went through is named on the order and the audit trail.
    assert_eq!(
        order.trade_no.as_deref(),
        Some("2026112822001000000000000003")
    );
    let acts = audit_acts(&r, &format!("order:{}", order.id)).await;
    assert!(
        acts.iter().any(|a| a == "cancelled_with_refund"),
        "{acts:?}"
    );
    let details = strings(
        &r,
        openvend::store::query(
            "SELECT detail FROM audit_log WHERE subject = $1 AND action = 'cancelled_with_refund'",
        )
        .bind(format!("order:{}", order.id)),
    )
    .await;
    assert!(
        details[0].ends_with("trade 2026112822001000000000000003"),
        "{details:?}"
    );
}

/// Alipay reports a payment for an order already closed unpaid (in production: a code scanned
/// after its close found no trade to close). Nothing is served for it and all of it goes back,
/// once, however often Alipay repeats itself.
#[tokio::test]
async fn a_payment_for_a_closed_order_is_refunded_in_full() {
    let r = start().await;
    // Alipay says the trade closed; the sandbox's trade stays payable.
    let (started, _, closed) =
        sale_closed_by_notice(&r, "n-closed-1", "2026112822001000000000000002").await;
    let resp = post_notify(&r, alipay_sandbox::notify::signed_body(&r.sandbox, &closed)).await;
    assert_eq!(resp, (200, "success".to_owned()));
    let order = wait_for_state(&r, &started.out_trade_no, OrderState::Closed).await;

    let paid = crate::flow::pay(&r, &started.qr_code).await;
    assert_eq!(paid["trade_status"], "TRADE_SUCCESS");

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let refunded = loop {
        let o = orders::by_id(&r.app_services.db, order.id)
            .await
            .unwrap()
            .unwrap();
        if o.refunded.0 == started.amount_fen {
            break o;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not refunded: {o:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(refunded.state, OrderState::Closed, "nothing was served");
    let timeline = orders::timeline(&r.app_services.db, order.id)
        .await
        .unwrap();
    assert!(
        timeline.iter().any(|e| e.2 == "paid_after_close"),
        "{timeline:?}"
    );
    // Alipay tells it again under another notify_id: still one refund.
    let mut again = closed.clone();
    for (k, v) in again.iter_mut() {
        match k.as_str() {
            "notify_id" => *v = "n-late-2".into(),
            "trade_status" => *v = "TRADE_SUCCESS".into(),
            _ => {}
        }
    }
    let resp = post_notify(&r, alipay_sandbox::notify::signed_body(&r.sandbox, &again)).await;
    assert_eq!(resp, (200, "success".to_owned()));
    for (sql, want) in [
        ("SELECT COUNT(*) AS n FROM refunds", 1),
        (
            "SELECT COUNT(*) AS n FROM device_commands WHERE kind = 'dispense'",
            0,
        ),
        // The money came in (and goes back): one payment on the audit trail, however often
        // Alipay tells it.
        (
            "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'payment_received'",
            1,
        ),
    ] {
        let row = openvend::store::query(sql)
            .fetch_one(&r.app_services.db.pool)
            .await
            .unwrap();
        assert_eq!(openvend::store::get_int(&row, "n").unwrap(), want, "{sql}");
    }
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// A client that sends its request slowly (slowloris) holds a connection for the read
/// timeout, not forever: headers that never end get the connection closed, a body that
/// trickles in gets 408. Both take the server's 10 s, so they run side by side.
#[tokio::test]
async fn slow_requests_are_cut_off_after_the_read_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let r = start().await;
    let addr = r.http_url.trim_start_matches("http://").to_owned();
    let slow_headers = {
        let addr = addr.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"POST /alipay/notify HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            // Ends when the server closes the connection (whatever it says first).
            let _ = s.read_to_end(&mut buf).await;
        }
    };
    let slow_body = async move {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            b"POST /alipay/notify HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nnotify_id=",
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    };
    let limit = std::time::Duration::from_secs(60);
    let (headers, body) = tokio::join!(
        tokio::time::timeout(limit, slow_headers),
        tokio::time::timeout(limit, slow_body)
    );
    assert!(
        headers.is_ok(),
        "a request whose headers never end kept its connection"
    );
    let answer = body.expect("a request whose body never ends kept its connection");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// F7 on one trade: after the sale ended (sold, one unit refunded), Alipay's older or later
/// news of it arrives: a stale `TRADE_SUCCESS` under a new notify_id, `TRADE_FINISHED`, and a
/// `TRADE_CLOSED`. Each is answered `success` and none moves the order or dispenses again.
#[tokio::test]
async fn f7_late_and_stale_notifications_of_a_finished_sale_change_nothing() {
    let r = start().await;
    let started = start_qr_sale(&r.app_services, &sale("A1", 2), now_ms())
        .await
        .unwrap();
    let paid = crate::flow::pay(&r, &started.qr_code).await;
    let order = wait_for_state(&r, &started.out_trade_no, OrderState::Paid).await;
    let units = [
        openvend::pay::vend::ReportedVend::Dispensed,
        openvend::pay::vend::ReportedVend::Failed,
    ]
    .map(|result| openvend::pay::vend::UnitResult {
        slot: "A1".into(),
        result,
        reason: Some("jam".into()).filter(|_| result == openvend::pay::vend::ReportedVend::Failed),
    });
    let outcome = openvend::pay::vend::record_results(
        &r.app_services,
        order.id,
        &units,
        openvend::pay::vend::Reporter::Machine,
    )
    .await
    .unwrap();
    assert_eq!(outcome.state, OrderState::Completed);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while orders::by_id(&r.app_services.db, order.id)
        .await
        .unwrap()
        .unwrap()
        .refunded
        .0
        != 350
    {
        assert!(tokio::time::Instant::now() < deadline, "refund not done");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let before = orders::by_id(&r.app_services.db, order.id)
        .await
        .unwrap()
        .unwrap();

    let seller = seller_pid(&r).await;
    let trade_no = paid["trade_no"].as_str().unwrap().to_owned();
    for (notify_id, status) in [
        ("n-stale-success", "TRADE_SUCCESS"),
        ("n-finished", "TRADE_FINISHED"),
        ("n-closed", "TRADE_CLOSED"),
    ] {
        let params = notice(
            notify_id,
            (&trade_no, &started.out_trade_no),
            status,
            "7.00",
            &seller,
            openvend::app::SANDBOX_APP_ID,
        );
        let resp = post_notify(&r, alipay_sandbox::notify::signed_body(&r.sandbox, &params)).await;
        assert_eq!(resp, (200, "success".to_owned()), "{status}");
    }
    let after = orders::by_id(&r.app_services.db, order.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, before, "nothing moved");
    let row = openvend::store::query(
        "SELECT COUNT(*) AS n FROM device_commands WHERE order_id = $1 AND kind = 'dispense'",
    )
    .bind(&started.out_trade_no)
    .fetch_one(&r.app_services.db.pool)
    .await
    .unwrap();
    assert_eq!(
        openvend::store::get_int(&row, "n").unwrap(),
        1,
        "dispensed once"
    );
    let row = openvend::store::query("SELECT COUNT(*) AS n FROM refunds WHERE order_id = $1")
        .bind(order.id)
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap();
    assert_eq!(
        openvend::store::get_int(&row, "n").unwrap(),
        1,
        "refunded once"
    );
}

/// The operator's acts on the fleet are on the audit trail, each in the transaction of what
/// it records: a machine added, its secret read, its fault cleared.
#[tokio::test]
async fn operator_acts_on_the_fleet_are_on_the_audit_trail() {
    let r = start().await;
    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{}{path}", r.http_url))
            .bearer_auth(token.trim());
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };
    let added = call(
        reqwest::Method::POST,
        "/api/v1/machines",
        Some(json!({ "code": "AU-0001", "kind": "vending", "terminal_id": "AU0001" })),
    )
    .await
    .unwrap();
    assert_eq!(added.status(), 201);
    let read = call(
        reqwest::Method::GET,
        "/api/v1/machines/AU-0001/credentials",
        None,
    )
    .await
    .unwrap();
    assert_eq!(read.status(), 200);
    let cleared = call(
        reqwest::Method::POST,
        "/api/v1/machines/AU-0001/clear-fault",
        None,
    )
    .await
    .unwrap();
    assert_eq!(cleared.status(), 200);
    let missing = call(
        reqwest::Method::GET,
        "/api/v1/machines/AU-0404/credentials",
        None,
    )
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        operator_acts(&r, "machine:AU-0001").await,
        ["machine_created", "credentials_read", "fault_cleared"]
    );
    let row = openvend::store::query(
        "SELECT COUNT(*) AS n FROM audit_log WHERE subject = 'machine:AU-0404'",
    )
    .fetch_one(&r.app_services.db.pool)
    .await
    .unwrap();
    assert_eq!(
        openvend::store::get_int(&row, "n").unwrap(),
        0,
        "nothing read, nothing recorded"
    );
}

/// A buy request an earlier version queued as a `device_event` job (the ledger now takes one
/// in the transaction that records it) is still taken when that job runs: one order, its code
/// recorded, and the machine's `show_qr` answer.
#[tokio::test]
async fn a_buy_request_queued_as_a_device_event_job_is_still_taken() {
    let r = start().await;
    let machine_id = crate::h5::count(&r, "SELECT id FROM machines WHERE code = 'VM-0001'").await;
    let stored = openvend::jobs::device_event::Stored {
        machine: "VM-0001",
        kind: "buy_request",
        body: r#"{"request_id":"queued-1","items":[{"slot":"A1","qty":1}]}"#,
    };
    openvend::jobs::device_event::run(&r.app_services, machine_id, "queued-msg-1", Some(stored))
        .await
        .unwrap();
    let rows = openvend::store::query(
        "SELECT out_trade_no, state, qr_code FROM orders WHERE request_id = 'queued-1'",
    )
    .fetch_all(&r.app_services.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "one order for the request");
    let out_trade_no: String = rows[0].try_get(0).unwrap();
    let state: String = rows[0].try_get(1).unwrap();
    let qr_code: Option<String> = rows[0].try_get(2).unwrap();
    assert_eq!(state, "awaiting_payment");
    assert!(qr_code.is_some(), "Alipay's code is recorded");
    assert_eq!(
        crate::flow::commands(&r, &out_trade_no, "show_qr")
            .await
            .len(),
        1,
        "the machine is answered with its code"
    );
}
