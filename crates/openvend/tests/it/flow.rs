//! The QR sale end to end over real HTTP and MQTT: the embedded broker, the embedded sandbox
//! and simulated machines (`openvend::sim`) that speak the device protocol. Each test names
//! the fault scenario of reliability.md §3.2 it covers and ends with the invariants check.

use std::collections::HashMap;
use std::time::Duration;

use openvend::domain::order::OrderState;
use openvend::sim::{MachineSim, SimEvent, SimSettings};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::invariants::{self, VendLog};
use crate::sale::{
    Running, control, machine_secret, operator_acts, start, strings, wait_for_state,
};

const WAIT: Duration = Duration::from_secs(20);

/// A simulated machine connected to the running server's broker.
pub async fn machine(
    r: &Running,
    code: &str,
    tweak: impl FnOnce(&mut SimSettings),
) -> (MachineSim, UnboundedReceiver<SimEvent>) {
    let secret = machine_secret(r, code).await;
    let (host, port) = mqtt_addr(&r.app_services.mqtt_url);
    let mut settings = SimSettings::new(code, &secret, &host, port);
    settings.persistent_session = false;
    settings.clock = Some(r.app_services.clock.clone());
    tweak(&mut settings);
    let (sim, mut events) = MachineSim::start(settings).await.unwrap();
    assert_eq!(next(&mut events).await, SimEvent::Online);
    (sim, events)
}

pub fn mqtt_addr(url: &str) -> (String, u16) {
    let (host, port) = url
        .strip_prefix("mqtt://")
        .unwrap()
        .rsplit_once(':')
        .unwrap();
    (host.to_owned(), port.parse().unwrap())
}

pub async fn next(events: &mut UnboundedReceiver<SimEvent>) -> SimEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("the machine saw nothing in time")
        .expect("the machine stopped")
}

/// The next event that is neither a stray `Online` nor a clock correction. The tests jump
/// the server's clock, and a message on its way at a jump arrives more than 10 s off, which
/// the server answers with the time; only the clock tests look at that
/// ([`next_with_clock`]).
pub async fn next_business(events: &mut UnboundedReceiver<SimEvent>) -> SimEvent {
    loop {
        match next(events).await {
            SimEvent::Online | SimEvent::ClockSet { .. } => continue,
            other => return other,
        }
    }
}

/// The next event that is not a stray `Online`, clock corrections included.
pub async fn next_with_clock(events: &mut UnboundedReceiver<SimEvent>) -> SimEvent {
    loop {
        match next(events).await {
            SimEvent::Online => continue,
            other => return other,
        }
    }
}

pub async fn expect_qr(events: &mut UnboundedReceiver<SimEvent>) -> (String, String, i64) {
    match next_business(events).await {
        SimEvent::ShowQr {
            order_id,
            qr_code,
            amount_fen,
        } => (order_id, qr_code, amount_fen),
        other => panic!("expected a QR code, got {other:?}"),
    }
}

/// Pays a QR code as a new sandbox buyer; answers the sandbox's record of the payment.
pub async fn pay(r: &Running, qr_code: &str) -> Value {
    let buyer = control(r, "/control/buyers", json!({ "balance": "500.00" })).await["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid = control(
        r,
        "/control/qr/pay",
        json!({ "qr_code": qr_code, "buyer_id": buyer }),
    )
    .await;
    assert!(paid["trade_no"].is_string(), "{paid}");
    paid
}

/// Waits until the order's dispense command is recorded.
pub async fn dispense_recorded(r: &Running, out_trade_no: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while commands(r, out_trade_no, "dispense").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dispense command"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts what physically left the machine, per order.
pub fn log_vend(log: &mut VendLog, ev: &SimEvent) {
    if let SimEvent::Dispensed { order_id, items } = ev {
        let out = items
            .iter()
            .filter(|i| i.result == openvend::device::protocol::VendOutcome::Dispensed)
            .count() as u32;
        *log.entry(order_id.clone()).or_default() += out;
    }
}

pub async fn slot(r: &Running, machine: &str, code: &str) -> (i64, i64, bool) {
    let row = openvend::store::query(
        "SELECT s.stock, s.reserved, CAST(CASE WHEN s.enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled FROM slots s JOIN machines m ON m.id = s.machine_id WHERE m.code = $1 AND s.code = $2",
    )
    .bind(machine)
    .bind(code)
    .fetch_one(&r.app_services.db.pool)
    .await
    .unwrap();
    let int = |c: &str| openvend::store::get_int(&row, c).unwrap();
    (int("stock"), int("reserved"), int("enabled") != 0)
}

pub async fn commands(r: &Running, out_trade_no: &str, kind: &str) -> Vec<String> {
    strings(
        r,
        openvend::store::query(
            "SELECT state FROM device_commands WHERE order_id = $1 AND kind = $2 ORDER BY id",
        )
        .bind(out_trade_no)
        .bind(kind),
    )
    .await
}

/// The `id` of the first row `query` finds, once there is one (`what` names it in the
/// failure message).
pub async fn id_once_written<'q>(
    r: &Running,
    query: impl Fn() -> openvend::store::Query<'q>,
    what: &str,
) -> i64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let row = query()
            .fetch_optional(&r.app_services.db.pool)
            .await
            .unwrap();
        if let Some(row) = row {
            return openvend::store::get_int(&row, "id").unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: none written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no job or order watch is due within `horizon_ms` of the server clock and the
/// acks the ledger holds in memory are written (the flow has settled).
pub async fn settle(r: &Running, horizon_ms: i64) {
    r.app_services.device.write_held_acks().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let due: i64 = openvend::store::query(
            "SELECT (SELECT COUNT(*) FROM jobs WHERE run_at <= $1) + (SELECT COUNT(*) FROM orders \
             WHERE state IN ('awaiting_payment', 'payment_unknown', 'paid', 'dispensing') AND watch_at <= $1) AS n",
        )
            .bind(r.app_services.now() + horizon_ms)
            .fetch_one(&r.app_services.db.pool)
            .await
            .map(|row| openvend::store::get_int(&row, "n").unwrap())
            .unwrap();
        if due == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{due} job(s) still due"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn check(r: &Running, log: Option<&VendLog>) {
    invariants::check(&r.app_services.db, &r.sandbox_url, log).await;
}

#[tokio::test]
async fn a_machine_asks_to_buy_the_buyer_pays_and_the_goods_come_out() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |_| {}).await;
    sim.buy(&[("A1", 2), ("A2", 1)]).await.unwrap();
    let (order, qr, amount) = expect_qr(&mut events).await;
    assert_eq!(amount, 2 * 350 + 200);
    let (_, reserved, _) = slot(&r, "VM-0001", "A1").await;
    assert_eq!(reserved, 2, "stock is reserved while the buyer pays");
    pay(&r, &qr).await;
    let mut log = VendLog::new();
    let ev = next_business(&mut events).await;
    log_vend(&mut log, &ev);
    assert!(
        matches!(ev, SimEvent::Dispensed { ref order_id, ref items } if *order_id == order && items.len() == 3),
        "{ev:?}"
    );
    wait_for_state(&r, &order, OrderState::Completed).await;
    assert_eq!(slot(&r, "VM-0001", "A1").await, (6, 0, true));
    assert_eq!(slot(&r, "VM-0001", "A2").await, (7, 0, true));
    assert_eq!(commands(&r, &order, "dispense").await, ["done"]);
    settle(&r, 0).await;
    // The timeline joins Alipay's and the machine's side.
    let o = openvend::store::orders::by_out_trade_no(&r.app_services.db, &order)
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<String> = openvend::store::orders::timeline(&r.app_services.db, o.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, kind, _)| kind)
        .collect();
    for want in [
        "precreated",
        "show_qr_sent",
        "paid",
        "dispense_sent",
        "dispense_acknowledged",
        "vend_finished",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} missing from {kinds:?}"
        );
    }
    settle(&r, 0).await;
    // A finished sale leaves nothing waiting: the payment poll ended with the payment and the
    // dispense watch with the result, instead of waking later to find nothing to do.
    let waiting: Vec<String> = openvend::store::query("SELECT dedup_key FROM jobs")
        .fetch_all(&r.app_services.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get(0).unwrap())
        .collect();
    assert_eq!(waiting, Vec::<String>::new());
    check(&r, Some(&log)).await;
}

#[tokio::test]
async fn f11_f13_a_jammed_unit_is_refunded_once_and_its_slot_disabled() {
    let r = start().await;
    // Every unit fails with a jam.
    let (sim, mut events) = machine(&r, "VM-0001", |s| s.fail_rate = 1.0).await;
    sim.buy(&[("A3", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    let mut log = VendLog::new();
    log_vend(&mut log, &next_business(&mut events).await);
    let o = wait_for_state(&r, &order, OrderState::Refunded).await;
    assert_eq!(
        slot(&r, "VM-0001", "A3").await,
        (8, 0, false),
        "stock kept, slot disabled"
    );
    // The refund reaches Alipay exactly once.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let refunded = openvend::store::orders::by_id(&r.app_services.db, o.id)
            .await
            .unwrap()
            .unwrap()
            .refunded;
        if refunded.0 == 650 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "refund not settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(&r, 0).await;
    let trades: Value = reqwest::get(format!("{}/control/trades", r.sandbox_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let trade = trades["trades"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["out_trade_no"] == order.as_str())
        .unwrap()
        .clone();
    assert_eq!(trade["refunds"].as_array().unwrap().len(), 1, "{trade}");
    check(&r, Some(&log)).await;
    // The disabled slot refuses the next sale at once, with the reason.
    sim.buy(&[("A3", 1)]).await.unwrap();
    match next_business(&mut events).await {
        SimEvent::SaleRefused { reason, .. } => assert!(reason.contains("A3"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn f10_a_machine_offline_at_payment_is_refunded_after_the_ttl_and_never_vends_late() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |_| {}).await;
    // The dispense is recorded and waits for the machine.
    let order = paid_while_away(&r, &sim, &mut events, "A2").await;
    settle(&r, 0).await;
    r.app_services.clock.advance(61_000);
    r.app_services.jobs_ready.notify_one();
    wait_for_state(&r, &order, OrderState::Refunded).await;
    assert_eq!(commands(&r, &order, "dispense").await, ["expired"]);
    // Back online: the expired command is not delivered; nothing comes out.
    sim.go_online().await.unwrap();
    sim.heartbeat(None).await.unwrap();
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (second, _, _) = expect_qr(&mut events).await;
    assert_ne!(
        second, order,
        "the first event after return is the new sale, not a late vend"
    );
    settle(&r, 0).await;
    assert_eq!(slot(&r, "VM-0001", "A2").await, (8, 0, true));
}

#[tokio::test]
async fn f10_a_machine_back_within_the_ttl_gets_the_dispense_and_vends_once() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |_| {}).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    sim.go_offline().await;
    pay(&r, &qr).await;
    wait_for_state(&r, &order, OrderState::Paid).await;
    sim.go_online().await.unwrap();
    // Its heartbeat makes the server re-deliver what is pending (F15: a second copy of the
    // same command id would be answered already_done, never vended twice).
    sim.heartbeat(None).await.unwrap();
    let mut log = VendLog::new();
    let ev = next_business(&mut events).await;
    log_vend(&mut log, &ev);
    assert!(matches!(ev, SimEvent::Dispensed { .. }), "{ev:?}");
    wait_for_state(&r, &order, OrderState::Completed).await;
    sim.heartbeat(None).await.unwrap();
    settle(&r, 0).await;
    assert_eq!(commands(&r, &order, "dispense").await, ["done"]);
    check(&r, Some(&log)).await;
}

#[tokio::test]
async fn f4_an_unpaid_code_is_closed_at_its_timeout_and_the_screen_cleared() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |_| {}).await;
    sim.buy(&[("A1", 3)]).await.unwrap();
    let (order, _, _) = expect_qr(&mut events).await;
    // Let the job that answered the request finish before time jumps past its lease.
    settle(&r, 0).await;
    r.app_services.clock.advance(5 * 60_000 + 1_000);
    r.app_services.jobs_ready.notify_one();
    wait_for_state(&r, &order, OrderState::Closed).await;
    assert_eq!(
        next_business(&mut events).await,
        SimEvent::Cancelled { order_id: order }
    );
    assert_eq!(slot(&r, "VM-0001", "A1").await, (8, 0, true));
    settle(&r, 0).await;
    check(&r, None).await;
}

/// F4 as Alipay may answer it: closing a precreate nobody scanned is `ACQ.TRADE_NOT_EXIST`,
/// which closes nothing, and the code stays valid for up to two hours (its payment time
/// counts from the scan). The code dies with its order anyway: the precreate's
/// `qr_code_timeout_express` is the order's payment time, so a buyer scanning the code (still
/// on a screen, or photographed) after the order closed cannot pay it.
#[tokio::test]
async fn f4_a_code_alipay_did_not_close_cannot_be_paid_after_its_order_closed() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |_| {}).await;
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.close",
                "fault": { "kind": "refuse", "sub_code": "ACQ.TRADE_NOT_EXIST" } }),
    )
    .await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    settle(&r, 0).await;
    r.app_services.clock.advance(5 * 60_000 + 1_000);
    r.app_services.jobs_ready.notify_one();
    wait_for_state(&r, &order, OrderState::Closed).await;
    // Alipay's clock reaches the order's end too; then the buyer scans and pays.
    control(
        &r,
        "/control/clock/advance",
        json!({ "seconds": 5 * 60 + 1 }),
    )
    .await;
    let buyer = control(&r, "/control/buyers", json!({ "balance": "100.00" })).await;
    let paid = reqwest::Client::new()
        .post(format!("{}/control/qr/pay", r.sandbox_url))
        .json(&json!({ "qr_code": qr, "buyer_id": buyer["user_id"] }))
        .send()
        .await
        .unwrap();
    let status = paid.status().as_u16();
    let answer = paid.text().await.unwrap();
    assert_eq!(status, 409, "the closed order's code was paid: {answer}");
    assert!(answer.contains("ACQ.TRADE_HAS_CLOSE"), "{answer}");
    settle(&r, 0).await;
    check(&r, None).await;
}

#[tokio::test]
async fn a_machine_that_refuses_the_dispense_gets_its_buyer_refunded() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| s.reject_dispense = true).await;
    sim.buy(&[("A2", 2)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    assert!(matches!(
        next_business(&mut events).await,
        SimEvent::Refused { .. }
    ));
    wait_for_state(&r, &order, OrderState::Refunded).await;
    settle(&r, 0).await;
    check(&r, Some(&VendLog::new())).await;
}

#[tokio::test]
async fn sales_are_refused_at_once_with_the_reason_and_a_repeated_request_makes_one_order() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |_| {}).await;
    // Unknown slot, too many units.
    sim.buy(&[("Z9", 1)]).await.unwrap();
    match next_business(&mut events).await {
        SimEvent::SaleRefused { reason, .. } => assert!(reason.contains("Z9"), "{reason}"),
        other => panic!("{other:?}"),
    }
    sim.buy(&[("A1", 9)]).await.unwrap();
    match next_business(&mut events).await {
        SimEvent::SaleRefused { reason, .. } => assert!(reason.contains("A1"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // The same request id twice: one order, the same code both times.
    sim.buy_with_id("r-same-1", &[("A1", 1)]).await.unwrap();
    let (first, qr1, _) = expect_qr(&mut events).await;
    sim.buy_with_id("r-same-1", &[("A1", 1)]).await.unwrap();
    let (again, qr2, _) = expect_qr(&mut events).await;
    assert_eq!(
        (first.as_str(), qr1.as_str()),
        (again.as_str(), qr2.as_str())
    );
    let n: i64 =
        openvend::store::query("SELECT COUNT(*) AS n FROM orders WHERE request_id = 'r-same-1'")
            .fetch_one(&r.app_services.db.pool)
            .await
            .map(|row| openvend::store::get_int(&row, "n").unwrap())
            .unwrap();
    assert_eq!(n, 1);
    // A faulty machine sells nothing until the operator clears the fault.
    sim.fault("MOTOR_A1", "motor current high").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let fault: Option<String> =
            openvend::store::query("SELECT fault FROM machines WHERE code = 'VM-0001'")
                .fetch_one(&r.app_services.db.pool)
                .await
                .unwrap()
                .get(0);
        if fault.is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "fault not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.buy(&[("A2", 1)]).await.unwrap();
    match next_business(&mut events).await {
        SimEvent::SaleRefused { reason, .. } => assert!(reason.contains("faulty"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // The operator's list of what needs a person shows the machine and its fault.
    let list = crate::faults::attention(&r).await;
    assert!(
        list["faulty_machines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["code"] == "VM-0001"
                && m["fault"].as_str().is_some_and(|f| f.contains("MOTOR_A1"))),
        "{list}"
    );
}

/// A machine that sends its request again before the first answer came (Alipay slow, 3 s
/// here) is shown the code when it comes, not refused: the first copy's answer serves both,
/// and the support timeline says the request came twice. Once the order is paid and vended,
/// the same request id is refused as handled.
#[tokio::test]
async fn a_request_sent_again_while_its_trade_is_being_created_is_answered_with_the_code() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |_| {}).await;
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.precreate", "fault": { "kind": "latency", "ms": 3000 }, "count": 1 }),
    )
    .await;
    sim.buy_with_id("r-again-1", &[("A1", 1)]).await.unwrap();
    let order_id = id_once_written(
        &r,
        || openvend::store::query("SELECT id FROM orders WHERE request_id = 'r-again-1'"),
        "the request's order",
    )
    .await;
    // The order is written and its precreate is on its way: the machine asks again.
    sim.buy_with_id("r-again-1", &[("A1", 1)]).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let timeline = loop {
        let timeline = openvend::store::orders::timeline(&r.app_services.db, order_id)
            .await
            .unwrap();
        if timeline.iter().any(|e| e.2 == "request_repeated") {
            break timeline;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second copy was not taken: {timeline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !timeline.iter().any(|e| e.2 == "precreated"),
        "the second copy came while the trade was being created: {timeline:?}"
    );
    let (order, qr, amount) = expect_qr(&mut events).await;
    assert_eq!(amount, 350);
    let mut log = VendLog::new();
    pay(&r, &qr).await;
    let ev = next_business(&mut events).await;
    log_vend(&mut log, &ev);
    wait_for_state(&r, &order, OrderState::Completed).await;
    // Handled: a third copy is refused with the reason, and sells nothing.
    sim.buy_with_id("r-again-1", &[("A1", 1)]).await.unwrap();
    match next_business(&mut events).await {
        SimEvent::SaleRefused { reason, .. } => {
            assert!(reason.contains("already handled"), "{reason}")
        }
        other => panic!("expected the handled request refused, got {other:?}"),
    }
    settle(&r, 0).await;
    assert_eq!(commands(&r, &order, "show_qr").await, ["acknowledged"]);
    let refusals = strings(
        &r,
        openvend::store::query(
            "SELECT c.state FROM device_commands c JOIN machines m ON m.id = c.machine_id \
             WHERE m.code = 'VM-0001' AND c.kind = 'sale_refused'",
        ),
    )
    .await;
    assert_eq!(
        refusals.len(),
        1,
        "only the third copy is refused: {refusals:?}"
    );
    assert_eq!(orders_of(&r, "VM-0001").await, 1);
    check(&r, Some(&log)).await;
}

/// Two copies of one request taken at once (two instances on PostgreSQL), the first taking a
/// slot's last unit: the second's reservation waits for the first's commit and then finds the
/// slot empty. It is not refused as sold out: it is the same purchase, whose code is coming.
/// (On SQLite the second transaction starts after the first commits: the same answer.)
#[tokio::test]
async fn a_copy_of_a_request_that_waited_for_the_last_unit_is_not_refused_as_sold_out() {
    use openvend::device::protocol::Line;
    use openvend::pay::sale::{BuyRequest, PrecreateJob, Taken, read_ahead, take_request_in};
    let r = start().await;
    let svc = r.app_services.clone();
    openvend::store::query(
        "UPDATE slots SET stock = 1 WHERE code = 'A1' AND machine_id = (SELECT id FROM machines WHERE code = 'VM-0001')",
    )
    .execute(&svc.db.pool)
    .await
    .unwrap();
    let items = vec![Line {
        slot: "A1".into(),
        qty: 1,
    }];
    let request = |msg_id| BuyRequest {
        machine: "VM-0001",
        msg_id,
        request_id: "r-race-1",
        items: &items,
    };
    let mut first = svc.db.begin().await.unwrap();
    let reads = read_ahead(&mut first, &request("m-1")).await.unwrap();
    let taken = take_request_in(
        &mut first,
        &svc.device,
        svc.sale_terms,
        request("m-1"),
        reads,
        svc.now(),
    )
    .await
    .unwrap();
    let Taken::Precreate(claimed) = taken else {
        panic!("the first copy makes the order, got {taken:?}")
    };
    let postgres = svc.db.backend == openvend::store::Backend::Postgres;
    let first_pid = if postgres {
        let row = openvend::store::query("SELECT pg_backend_pid() AS pid")
            .fetch_one(&mut *first)
            .await
            .unwrap();
        openvend::store::get_int(&row, "pid").unwrap()
    } else {
        0
    };
    let second = {
        let svc = svc.clone();
        let items = items.clone();
        tokio::spawn(async move {
            let request = BuyRequest {
                machine: "VM-0001",
                msg_id: "m-2",
                request_id: "r-race-1",
                items: &items,
            };
            let mut tx = svc.db.begin().await.unwrap();
            let reads = read_ahead(&mut tx, &request).await.unwrap();
            let taken = take_request_in(
                &mut tx,
                &svc.device,
                svc.sale_terms,
                request,
                reads,
                svc.now(),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            taken
        })
    };
    if postgres {
        // The second copy's reservation waits for the first transaction's lock.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let waiting = openvend::store::query(
                "SELECT COUNT(*) AS n FROM pg_stat_activity \
                 WHERE CAST($1 AS INTEGER) = ANY (pg_blocking_pids(pid))",
            )
            .bind(first_pid)
            .fetch_one(&svc.db.pool)
            .await
            .map(|row| openvend::store::get_int(&row, "n").unwrap())
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the second copy never waited for the first"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    first.commit().await.unwrap();
    let taken = second.await.unwrap();
    assert!(
        matches!(taken, Taken::BeingCreated),
        "the second copy waits for the first's answer, got {taken:?}"
    );
    assert_eq!(orders_of(&r, "VM-0001").await, 1);
    assert_eq!(slot(&r, "VM-0001", "A1").await, (1, 1, true));
    // The first copy's answer, the code, is the machine's.
    let job = claimed.committed().expect("the precreate job");
    let payload: PrecreateJob = serde_json::from_str(&job.payload).unwrap();
    openvend::pay::sale::run_precreate(&svc, &job, &payload)
        .await
        .unwrap();
    assert_eq!(
        commands(&r, &payload.offer.out_trade_no, "show_qr")
            .await
            .len(),
        1
    );
    let refused = strings(
        &r,
        openvend::store::query("SELECT state FROM device_commands WHERE kind = 'sale_refused'"),
    )
    .await;
    assert!(refused.is_empty(), "nobody was refused: {refused:?}");
    // Unpaid, it closes at its time and gives the unit back.
    settle(&r, 0).await;
    svc.clock.advance(5 * 60_000 + 1_000);
    svc.jobs_ready.notify_one();
    wait_for_state(&r, &payload.offer.out_trade_no, OrderState::Closed).await;
    assert_eq!(slot(&r, "VM-0001", "A1").await, (1, 0, true));
    settle(&r, 0).await;
    check(&r, None).await;
}

/// A `device_event` job queued by an earlier version carries only the event's id: the job
/// reads the stored event back and acts on it.
#[tokio::test]
async fn a_device_event_job_without_its_event_reads_it_back() {
    let r = start().await;
    let (_sim, _events) = machine(&r, "VM-0001", |_| {}).await;
    let db = &r.app_services.db;
    let machine_id: i64 = openvend::store::query("SELECT id FROM machines WHERE code = 'VM-0001'")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0);
    let now = r.app_services.now();
    openvend::store::query(
        "INSERT INTO device_events (machine_id, msg_id, kind, received_at, body) VALUES ($1, 'old-1', 'fault', $2, $3)",
    )
    .bind(machine_id)
    .bind(now)
    .bind(r#"{"code":"DOOR","detail":"door open"}"#)
    .execute(&db.pool)
    .await
    .unwrap();
    let payload = json!({ "machine_id": machine_id, "msg_id": "old-1" }).to_string();
    openvend::store::jobs::enqueue(
        &db.pool,
        "device_event",
        "device_event:old",
        &payload,
        now,
        now,
    )
    .await
    .unwrap();
    r.app_services.jobs_ready.notify_one();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let fault: Option<String> =
            openvend::store::query("SELECT fault FROM machines WHERE code = 'VM-0001'")
                .fetch_one(&db.pool)
                .await
                .unwrap()
                .get(0);
        if let Some(fault) = fault {
            assert_eq!(fault, "DOOR: door open");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "fault not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn f5_f6_a_lost_notification_is_replaced_by_the_query_and_a_burst_dispenses_once() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |_| {}).await;
    let mut log = VendLog::new();
    // F5: every notification attempt lost; the query fallback marks the order paid.
    control(
        &r,
        "/control/faults",
        json!({ "notification": { "kind": "drop" }, "count": 1 }),
    )
    .await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    r.app_services.clock.advance(11_000);
    r.app_services.jobs_ready.notify_one();
    let ev = next_business(&mut events).await;
    log_vend(&mut log, &ev);
    wait_for_state(&r, &order, OrderState::Completed).await;
    // F6: the notification of the next sale arrives 20 times at once.
    control(
        &r,
        "/control/faults",
        json!({ "notification": { "kind": "duplicate", "times": 20 }, "count": 1 }),
    )
    .await;
    sim.buy(&[("A2", 1)]).await.unwrap();
    let (order2, qr2, _) = expect_qr(&mut events).await;
    pay(&r, &qr2).await;
    let ev = next_business(&mut events).await;
    log_vend(&mut log, &ev);
    wait_for_state(&r, &order2, OrderState::Completed).await;
    settle(&r, 0).await;
    assert_eq!(commands(&r, &order2, "dispense").await, ["done"]);
    let mut counts: HashMap<String, u32> = HashMap::new();
    for (k, v) in &log {
        counts.insert(k.clone(), *v);
    }
    assert_eq!(counts.get(&order2), Some(&1));
    // Each payment is on the audit trail once: the one the query found, and the one
    // notified twenty times.
    for (out_trade_no, how) in [(&order, "query"), (&order2, "notification")] {
        let rows = openvend::store::query(
            "SELECT a.detail FROM audit_log a JOIN orders o ON a.subject = 'order:' || CAST(o.id AS TEXT) \
             WHERE o.out_trade_no = $1 AND a.action = 'payment_received'",
        )
        .bind(out_trade_no)
        .fetch_all(&r.app_services.db.pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), 1, "{out_trade_no}");
        let detail: String = rows[0].get(0);
        assert!(detail.contains(how), "{detail}");
    }
    check(&r, Some(&log)).await;
}

/// A machine without MQTT: the same sale over the signed HTTP fallback.
struct HttpMachine {
    base: String,
    code: String,
    secret: String,
    n: std::sync::atomic::AtomicU64,
}

impl HttpMachine {
    fn id(&self, prefix: &str) -> String {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        format!("{prefix}-{n}-{}", openvend::ids::random_hex(6))
    }

    async fn request(&self, method: &str, path_query: &str, body: Vec<u8>) -> Value {
        let (status, answer) = self.send(method, path_query, body).await;
        assert!(status.is_success(), "{path_query}: {status} {answer}");
        answer
    }

    /// A signed request, and the server's answer whatever its status.
    async fn send(
        &self,
        method: &str,
        path_query: &str,
        body: Vec<u8>,
    ) -> (reqwest::StatusCode, Value) {
        let (status, text) = crate::sale::signed_device_request(
            &reqwest::Client::new(),
            &self.base,
            (&self.code, &self.secret),
            openvend::services::now_ms(),
            &self.id("n"),
            method,
            path_query,
            body,
        )
        .await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn event(&self, kind: &str, body: Value) {
        let (status, answer) = self.try_event(kind, body).await;
        assert!(status.is_success(), "{kind}: {status} {answer}");
    }

    /// Sends an event; the server's answer whatever its status.
    async fn try_event(&self, kind: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let env = openvend::device::protocol::Envelope::seal(
            &self.code,
            self.secret.as_bytes(),
            &self.id("e"),
            openvend::services::now_ms(),
            kind,
            body.to_string(),
        );
        self.send("POST", "/device/v1/events", env.to_bytes()).await
    }

    /// Long-polls for the next command and acknowledges it.
    async fn command(&self) -> (String, String, Value) {
        let got = self
            .request("GET", "/device/v1/commands?wait=20", Vec::new())
            .await;
        let env = &got["commands"][0];
        let id = env["msg_id"].as_str().unwrap().to_owned();
        let kind = env["kind"].as_str().unwrap().to_owned();
        let body: Value = serde_json::from_str(env["body"].as_str().unwrap()).unwrap();
        self.event("ack", json!({ "command_id": id, "status": "accepted" }))
            .await;
        (id, kind, body)
    }
}

#[tokio::test]
async fn a_machine_on_the_http_fallback_sells_the_same_way() {
    let r = start().await;
    let secret = machine_secret(&r, "FM-0001").await;
    let m = HttpMachine {
        base: r.http_url.clone(),
        code: "FM-0001".into(),
        secret,
        n: Default::default(),
    };
    openvend::store::query("UPDATE machines SET last_heartbeat_at = NULL WHERE code = 'FM-0001'")
        .execute(&r.app_services.db.pool)
        .await
        .unwrap();
    m.event("heartbeat", json!({})).await;
    // A heartbeat marks the machine alive and is not kept as an event.
    let row = openvend::store::query("SELECT m.last_heartbeat_at, (SELECT COUNT(*) FROM device_events e WHERE e.machine_id = m.id) AS kept FROM machines m WHERE m.code = 'FM-0001'")
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap();
    assert!(row.get::<Option<i64>, _>(0).is_some());
    assert_eq!(openvend::store::get_int(&row, "kept").unwrap(), 0);
    m.event(
        "buy_request",
        json!({ "request_id": "r-http-1", "items": [{ "slot": "A2", "qty": 1 }] }),
    )
    .await;
    let (_, kind, body) = m.command().await;
    assert_eq!(kind, "show_qr", "{body}");
    let order = body["order_id"].as_str().unwrap().to_owned();
    pay(&r, body["qr_code"].as_str().unwrap()).await;
    let (command_id, kind, body) = m.command().await;
    assert_eq!(
        (kind.as_str(), body["order_id"].as_str()),
        ("dispense", Some(order.as_str()))
    );
    m.event(
        "dispense_result",
        json!({ "command_id": command_id, "order_id": order, "items": [{ "slot": "A2", "result": "dispensed" }] }),
    )
    .await;
    wait_for_state(&r, &order, OrderState::Completed).await;
    settle(&r, 0).await;
    let mut log = VendLog::new();
    log.insert(order, 1);
    check(&r, Some(&log)).await;
}

#[tokio::test]
async fn f13_f14_a_partly_dispensed_order_refunds_exactly_the_missing_units() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| {
        s.fail_slots = vec!["A2".into()];
        s.indeterminate_slots = vec!["A3".into()];
    })
    .await;
    sim.buy(&[("A1", 2), ("A2", 1), ("A3", 1)]).await.unwrap();
    let (order, qr, amount) = expect_qr(&mut events).await;
    assert_eq!(amount, 2 * 350 + 200 + 650);
    pay(&r, &qr).await;
    let mut log = VendLog::new();
    log_vend(&mut log, &next_business(&mut events).await);
    assert_eq!(log.get(&order), Some(&2));
    let o = wait_for_state(&r, &order, OrderState::Completed).await;
    settle(&r, 0).await;
    // The jammed unit and the one lost to a power cut are refunded, once, under one number.
    assert_one_refund(&r, o.id, 200 + 650).await;
    // A1 sold 2; A2 jammed: kept, disabled; A3 may have left: counted out, still on sale.
    assert_eq!(slot(&r, "VM-0001", "A1").await, (6, 0, true));
    assert_eq!(slot(&r, "VM-0001", "A2").await, (8, 0, false));
    assert_eq!(slot(&r, "VM-0001", "A3").await, (7, 0, true));
    // The unit lost to the power cut is a ticket: someone checks the machine's stock.
    let unit = the_one_indeterminate_unit(&r).await;
    assert_eq!(
        (&unit["out_trade_no"], &unit["machine"], &unit["slot"]),
        (&json!(order), &json!("VM-0001"), &json!("A3"))
    );
    check(&r, Some(&log)).await;
}

/// F14 with the machine's own reboot: the power goes off while the motor of the second unit
/// runs. Back on, the machine reports from its journal: the first unit out, the second
/// `indeterminate`, the third never started. The server refunds the two it cannot count as
/// sold, lists the unknown one for a person, and nothing is vended again.
#[tokio::test]
async fn f14_a_power_cut_mid_vend_is_reported_after_the_reboot_refunded_and_never_re_vended() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| {
        s.power_cut_at_slot = Some("A2".into());
    })
    .await;
    sim.buy(&[("A1", 1), ("A2", 1), ("A3", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    assert_eq!(
        next_business(&mut events).await,
        SimEvent::PowerLost {
            order_id: order.clone()
        }
    );
    sim.go_offline().await;
    // While it is off, the order waits: the server does not guess what came out.
    wait_for_state(&r, &order, OrderState::Dispensing).await;
    sim.go_online().await.unwrap();
    let mut log = VendLog::new();
    match next_business(&mut events).await {
        ev @ SimEvent::Dispensed { .. } => log_vend(&mut log, &ev),
        other => panic!("expected the report of the interrupted vend, got {other:?}"),
    }
    assert_eq!(log.get(&order), Some(&1));
    let o = wait_for_state(&r, &order, OrderState::Completed).await;
    settle(&r, 0).await;
    assert_one_refund(&r, o.id, 200 + 650).await;
    // A1 sold; A2 may have left: counted out, still on sale, and a ticket; A3 kept.
    assert_eq!(slot(&r, "VM-0001", "A1").await, (7, 0, true));
    assert_eq!(slot(&r, "VM-0001", "A2").await, (7, 0, true));
    assert_eq!(slot(&r, "VM-0001", "A3").await, (8, 0, true));
    assert_eq!(the_one_indeterminate_unit(&r).await["slot"], "A2");
    // Nothing more comes out, whatever else the machine receives.
    sim.heartbeat(None).await.unwrap();
    settle(&r, 0).await;
    while let Ok(ev) = events.try_recv() {
        log_vend(&mut log, &ev);
    }
    check(&r, Some(&log)).await;
}

#[tokio::test]
async fn f7_notifications_delivered_newest_first_settle_each_order_once() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |_| {}).await;
    control(
        &r,
        "/control/faults",
        json!({ "notification": { "kind": "out_of_order", "batch": 2 }, "count": 2 }),
    )
    .await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (first, qr1, _) = expect_qr(&mut events).await;
    sim.buy(&[("A2", 1)]).await.unwrap();
    let (second, qr2, _) = expect_qr(&mut events).await;
    pay(&r, &qr1).await;
    pay(&r, &qr2).await;
    let mut log = VendLog::new();
    for _ in 0..2 {
        log_vend(&mut log, &next_business(&mut events).await);
    }
    wait_for_state(&r, &first, OrderState::Completed).await;
    wait_for_state(&r, &second, OrderState::Completed).await;
    settle(&r, 0).await;
    assert_eq!(commands(&r, &first, "dispense").await, ["done"]);
    assert_eq!(commands(&r, &second, "dispense").await, ["done"]);
    check(&r, Some(&log)).await;
}

/// The operator's command TTL is 20 s, shorter than the 60 s a machine assumes for a command
/// that does not say. A dispense the broker kept for the machine while it was away arrives
/// 30 s late: the machine discards it by the `expires_at` it carries, and the buyer is
/// refunded, instead of the machine vending what the server has given up on.
#[tokio::test]
async fn a_dispense_delivered_after_its_expiry_is_discarded_by_the_machine() {
    let r = crate::sale::start_with(|s| s.device.command_ttl_secs = 20).await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| s.persistent_session = true).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    settle(&r, 0).await;
    sim.go_offline().await;
    pay(&r, &qr).await;
    wait_for_state(&r, &order, OrderState::Paid).await;
    dispense_recorded(&r, &order).await;
    r.app_services.clock.advance(30_000);
    sim.go_online().await.unwrap();
    let mut log = VendLog::new();
    match next_business(&mut events).await {
        SimEvent::Refused { reason, .. } => assert_eq!(reason, "expired"),
        other => {
            log_vend(&mut log, &other);
            panic!("expected the late dispense discarded, got {other:?}")
        }
    }
    r.app_services.clock.advance(10_000);
    r.app_services.jobs_ready.notify_one();
    wait_for_state(&r, &order, OrderState::Refunded).await;
    settle(&r, 0).await;
    check(&r, Some(&log)).await;
}

/// A vend under way when the machine is disabled settles as it happened: the machine's
/// answers to the dispense it already had are still taken, so the buyer who got the goods is
/// not refunded.
#[tokio::test]
async fn a_vend_under_way_when_the_machine_is_disabled_settles_as_it_happened() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| {
        s.vend_time = Duration::from_millis(1_500);
    })
    .await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    // The machine has the dispense and its motor runs.
    wait_for_state(&r, &order, OrderState::Dispensing).await;
    let (status, _) = set_enabled(&r, "VM-0001", false).await;
    assert_eq!(status, 200);
    let mut log = VendLog::new();
    log_vend(&mut log, &next_business(&mut events).await);
    assert_eq!(log.get(&order), Some(&1));
    let o = wait_for_state(&r, &order, OrderState::Completed).await;
    assert_eq!(o.refunded.0, 0, "the buyer got the goods");
    settle(&r, 0).await;
    check(&r, Some(&log)).await;
}

/// A dispense the broker already held for the machine (away, persistent session) when it was
/// disabled still arrives when it reconnects: its acknowledgement and result, sent while
/// disabled, are taken, and the order settles as vended, not refunded.
#[tokio::test]
async fn a_dispense_handed_over_before_the_disable_is_answered_and_settles_as_vended() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| s.persistent_session = true).await;
    let order = paid_while_away(&r, &sim, &mut events, "A1").await;
    let (status, _) = set_enabled(&r, "VM-0001", false).await;
    assert_eq!(status, 200);
    sim.go_online().await.unwrap();
    let mut log = VendLog::new();
    log_vend(&mut log, &next_business(&mut events).await);
    assert_eq!(log.get(&order), Some(&1));
    let o = wait_for_state(&r, &order, OrderState::Completed).await;
    assert_eq!(o.refunded.0, 0, "the buyer got the goods");
    settle(&r, 0).await;
    check(&r, Some(&log)).await;
}

/// A sale of one unit of `slot`, paid while the machine is away: its dispense is recorded
/// and waits for the machine. Answers the order.
async fn paid_while_away(
    r: &Running,
    sim: &MachineSim,
    events: &mut UnboundedReceiver<SimEvent>,
    slot: &str,
) -> String {
    sim.buy(&[(slot, 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(events).await;
    sim.go_offline().await;
    pay(r, &qr).await;
    wait_for_state(r, &order, OrderState::Paid).await;
    dispense_recorded(r, &order).await;
    order
}

/// Takes machine `code` out of service (`false`) or back through the operator API.
async fn set_enabled(r: &Running, code: &str, enabled: bool) -> (u16, Value) {
    let path = format!("/api/v1/machines/{code}");
    operator_call(
        r,
        reqwest::Method::PATCH,
        &path,
        json!({ "enabled": enabled }),
    )
    .await
}

/// The operator API as the operator calls it: the status and the JSON answer.
async fn operator_call(
    r: &Running,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    let resp = reqwest::Client::new()
        .request(method, format!("{}{path}", r.http_url))
        .bearer_auth(token.trim())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The order's one refund, of `fen`, succeeded.
async fn assert_one_refund(r: &Running, order_id: i64, fen: i64) {
    let refunds =
        openvend::store::query("SELECT amount_fen, state FROM refunds WHERE order_id = $1")
            .bind(order_id)
            .fetch_all(&r.app_services.db.pool)
            .await
            .unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        openvend::store::get_int(&refunds[0], "amount_fen").unwrap(),
        fen
    );
    assert_eq!(refunds[0].get::<String, _>("state"), "succeeded");
}

/// The one unit of unknown outcome the operator's attention list shows.
async fn the_one_indeterminate_unit(r: &Running) -> Value {
    let list = crate::faults::attention(r).await;
    let units = list["indeterminate_vends"].as_array().unwrap();
    assert_eq!(units.len(), 1, "{units:?}");
    units[0].clone()
}

/// The machine's orders, by number.
async fn orders_of(r: &Running, code: &str) -> i64 {
    let row = openvend::store::query(
        "SELECT COUNT(*) AS n FROM orders o JOIN machines m ON m.id = o.machine_id WHERE m.code = $1",
    )
    .bind(code)
    .fetch_one(&r.app_services.db.pool)
    .await
    .unwrap();
    openvend::store::get_int(&row, "n").unwrap()
}

/// When the machine was last heard from, as stored.
async fn last_heartbeat(r: &Running, code: &str) -> Option<i64> {
    openvend::store::query("SELECT last_heartbeat_at FROM machines WHERE code = $1")
        .bind(code)
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap()
        .get(0)
}

/// How many buy requests and HTTP nonces the server keeps for a machine.
async fn kept_for(r: &Running, code: &str) -> (i64, i64) {
    let row = openvend::store::query(
        "SELECT (SELECT COUNT(*) FROM device_events e WHERE e.machine_id = m.id AND e.kind = 'buy_request') AS events, \
         (SELECT COUNT(*) FROM device_nonces n WHERE n.machine_id = m.id) AS nonces \
         FROM machines m WHERE m.code = $1",
    )
    .bind(code)
    .fetch_one(&r.app_services.db.pool)
    .await
    .unwrap();
    (
        openvend::store::get_int(&row, "events").unwrap(),
        openvend::store::get_int(&row, "nonces").unwrap(),
    )
}

/// reliability.md §3.3, "disabled machine": a machine the operator takes out of service
/// starts nothing (its buy requests are refused and change nothing), its code still awaiting
/// payment is closed and cleared from its screen, and no dispense reaches it, over MQTT or
/// HTTP: its paid order is refunded as for a machine that never came back. Back in service it
/// sells again; a new secret shuts the old one out at once.
#[tokio::test]
async fn a_disabled_machine_is_refused_everywhere_and_a_new_secret_shuts_the_old_one_out() {
    use reqwest::Method;
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |_| {}).await;
    // A code on the screen, and a paid order whose dispense waits for the machine (away).
    sim.buy(&[("A2", 1)]).await.unwrap();
    let (shown, shown_qr, _) = expect_qr(&mut events).await;
    let paid = paid_while_away(&r, &sim, &mut events, "A1").await;
    let (status, answer) = set_enabled(&r, "VM-0001", false).await;
    assert_eq!(
        (status, &answer["enabled"]),
        (200, &json!(false)),
        "{answer}"
    );
    // Disabling twice is one act.
    let (status, _) = set_enabled(&r, "VM-0001", false).await;
    assert_eq!(status, 200);
    // The code on the screen is closed at once: nobody can pay it any more.
    wait_for_state(&r, &shown, OrderState::Closed).await;
    let late = control(&r, "/control/buyers", json!({ "balance": "100.00" })).await;
    let refused = reqwest::Client::new()
        .post(format!("{}/control/qr/pay", r.sandbox_url))
        .json(&json!({ "qr_code": shown_qr, "buyer_id": late["user_id"] }))
        .send()
        .await
        .unwrap();
    assert!(!refused.status().is_success());
    // Polling over HTTP, it is handed the `cancel` that clears that code, and no dispense.
    let old_secret = machine_secret(&r, "VM-0001").await;
    let http = HttpMachine {
        base: r.http_url.clone(),
        code: "VM-0001".into(),
        secret: old_secret.clone(),
        n: Default::default(),
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while commands(&r, &shown, "cancel").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no cancel recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, polled) = http
        .send("GET", "/device/v1/commands?wait=1", Vec::new())
        .await;
    assert_eq!(status, 200, "{polled}");
    let kinds: Vec<&str> = polled["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["cancel"], "{polled}");
    // Back on MQTT, its screen is cleared; a buy request it sends is refused and leaves
    // nothing (its heartbeat after it is taken: once that is stored, the request was judged).
    sim.go_online().await.unwrap();
    sim.heartbeat(None).await.unwrap();
    let orders_before = orders_of(&r, "VM-0001").await;
    let before = kept_for(&r, "VM-0001").await.0;
    let beat_before = last_heartbeat(&r, "VM-0001").await;
    sim.buy(&[("A3", 1)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    sim.heartbeat(None).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while last_heartbeat(&r, "VM-0001").await == beat_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "heartbeat not taken"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(orders_of(&r, "VM-0001").await, orders_before);
    assert_eq!(kept_for(&r, "VM-0001").await.0, before);
    // The paid order's dispense never reaches it; it is refunded when the command expires.
    settle(&r, 0).await;
    r.app_services.clock.advance(61_000);
    r.app_services.jobs_ready.notify_one();
    wait_for_state(&r, &paid, OrderState::Refunded).await;
    assert_eq!(commands(&r, &paid, "dispense").await, ["expired"]);
    let mut cleared = false;
    while let Ok(ev) = events.try_recv() {
        assert!(
            !matches!(ev, SimEvent::Dispensed { .. } | SimEvent::ShowQr { .. }),
            "a disabled machine was handed business: {ev:?}"
        );
        cleared |= ev
            == SimEvent::Cancelled {
                order_id: shown.clone(),
            };
    }
    assert!(cleared, "the closed code was not cleared from the screen");
    drop(sim);
    // Over HTTP, what it starts is refused with the reason; nothing of it is kept but its
    // nonce, so the refused request cannot be replayed once the machine is back in service.
    let (host, port) = mqtt_addr(&r.app_services.mqtt_url);
    let settings = |secret: &str| {
        let mut s = SimSettings::new("VM-0001", secret, &host, port);
        s.persistent_session = false;
        s.clock = Some(r.app_services.clock.clone());
        s
    };
    let before = kept_for(&r, "VM-0001").await;
    let (status, answer) = http
        .try_event(
            "buy_request",
            json!({ "request_id": "r-off-1", "items": [{ "slot": "A1", "qty": 1 }] }),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("disabled"),
        "{answer}"
    );
    assert_eq!(kept_for(&r, "VM-0001").await, (before.0, before.1 + 1));
    // The H5 page sells nothing on it.
    match openvend::pay::checkout::machine(&r.app_services, "VM-0001").await {
        Err(openvend::pay::checkout::SaleError::MachineDisabled(code)) => {
            assert_eq!(code, "VM-0001")
        }
        other => panic!("{other:?}"),
    }
    let (status, listed) = operator_call(&r, Method::GET, "/api/v1/machines", Value::Null).await;
    assert_eq!(status, 200);
    assert!(
        listed["machines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["code"] == "VM-0001" && m["enabled"] == false),
        "{listed}"
    );
    // Back in service, it connects and sells.
    let (status, _) = set_enabled(&r, "VM-0001", true).await;
    assert_eq!(status, 200);
    let (sim, mut events) = MachineSim::start(settings(&old_secret)).await.unwrap();
    assert_eq!(next(&mut events).await, SimEvent::Online);
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (unpaid_before, _, _) = expect_qr(&mut events).await;
    // A new secret: the old one no longer connects or signs; the new one does.
    let (status, rotated) = operator_call(
        &r,
        Method::POST,
        "/api/v1/machines/VM-0001/secret",
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    drop(sim);
    assert!(MachineSim::start(settings(&old_secret)).await.is_err());
    let (status, answer) = http.try_event("heartbeat", json!({})).await;
    assert_eq!(status, 401, "{answer}");
    let (sim, mut events) = MachineSim::start(settings(&new_secret)).await.unwrap();
    assert_eq!(next(&mut events).await, SimEvent::Online);
    sim.buy(&[("A1", 1)]).await.unwrap();
    // A command still pending from before (signed with the old secret) may be re-delivered
    // first: the machine refuses it, as the protocol says.
    let unpaid_after = loop {
        match next_business(&mut events).await {
            SimEvent::ShowQr { order_id, .. } => break order_id,
            SimEvent::Refused { reason, .. } if reason == "bad signature" => {}
            other => panic!("expected a QR code, got {other:?}"),
        }
    };
    // Unknown machines and bad changes are refused with the reason.
    let (status, _) = set_enabled(&r, "VM-0404", false).await;
    assert_eq!(status, 404);
    let (status, _) = operator_call(
        &r,
        Method::POST,
        "/api/v1/machines/VM-0404/secret",
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);
    let (status, answer) = operator_call(
        &r,
        Method::PATCH,
        "/api/v1/machines/VM-0001",
        json!({ "enabled": "no" }),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    // Each act once on the audit trail.
    assert_eq!(
        operator_acts(&r, "machine:VM-0001").await,
        ["machine_disabled", "machine_enabled", "secret_rotated"]
    );
    // The two codes nobody paid close at their timeout, as any.
    settle(&r, 0).await;
    r.app_services.clock.advance(5 * 60_000 + 1_000);
    r.app_services.jobs_ready.notify_one();
    wait_for_state(&r, &unpaid_before, OrderState::Closed).await;
    wait_for_state(&r, &unpaid_after, OrderState::Closed).await;
    drop(sim);
    settle(&r, 0).await;
    check(&r, None).await;
}
