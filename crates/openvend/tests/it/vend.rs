//! After payment: vend results correct the stock, finish the order, and refund what did not
//! come out — once, however often the machine repeats itself.

use std::time::Duration;

use openvend::domain::fen::Fen;
use openvend::domain::order::OrderState;
use openvend::pay::sale::start_qr_sale;
use openvend::pay::vend::{ReportedVend, UnitResult, VendError, record_results};
use openvend::store::orders;
use serde_json::json;

use crate::sale::{Running, control, sale, start, wait_for_state};

async fn paid_order(r: &Running, slot: &str, qty: u32) -> orders::Order {
    let started = start_qr_sale(&r.app_services, &sale(slot, qty), r.app_services.now())
        .await
        .unwrap();
    let buyer = control(r, "/control/buyers", json!({ "balance": "100.00" })).await["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    control(
        r,
        "/control/qr/pay",
        json!({ "qr_code": started.qr_code, "buyer_id": buyer }),
    )
    .await;
    wait_for_state(r, &started.out_trade_no, OrderState::Paid).await
}

async fn slot_row(r: &Running, slot: &str) -> (i64, i64, bool) {
    let row = openvend::store::query(
        "SELECT s.stock, s.reserved, CAST(CASE WHEN s.enabled THEN 1 ELSE 0 END AS BIGINT) FROM slots s JOIN machines m ON m.id = s.machine_id WHERE m.code = 'VM-0001' AND s.code = $1",
    )
    .bind(slot)
    .fetch_one(&r.app_services.db.pool)
    .await
    .unwrap();
    let get = |i: usize| {
        row.try_get::<i64, _>(i)
            .or_else(|_| row.try_get::<i32, _>(i).map(i64::from))
            .unwrap()
    };
    (get(0), get(1), get(2) != 0)
}

async fn wait_for_refund_state(r: &Running, order_id: i64, want: &str) -> (String, i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let row =
            openvend::store::query("SELECT state, amount_fen FROM refunds WHERE order_id = $1")
                .bind(order_id)
                .fetch_one(&r.app_services.db.pool)
                .await
                .unwrap();
        let state: String = row.try_get(0).unwrap();
        if state == want {
            return (state, row.try_get(1).unwrap());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refund stuck in {state}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_jammed_unit_is_refunded_once_its_slot_disabled_and_the_rest_sold() {
    let r = start().await;
    let before = slot_row(&r, "A1").await;
    let order = paid_order(&r, "A1", 2).await;
    let report = vec![
        UnitResult {
            slot: "A1".into(),
            result: ReportedVend::Dispensed,
            reason: None,
        },
        UnitResult {
            slot: "A1".into(),
            result: ReportedVend::Failed,
            reason: Some("jam".into()),
        },
    ];
    let outcome = record_results(
        &r.app_services,
        order.id,
        &report,
        openvend::pay::vend::Reporter::Machine,
    )
    .await
    .unwrap();
    assert_eq!(outcome.state, OrderState::Completed);
    assert_eq!(outcome.refund, Fen(350));
    let after = slot_row(&r, "A1").await;
    assert_eq!(
        after,
        (before.0 - 1, 0, false),
        "one sold, reservation released, slot disabled after a jam"
    );

    // The machine repeats its report: nothing changes twice.
    let again = record_results(
        &r.app_services,
        order.id,
        &report,
        openvend::pay::vend::Reporter::Machine,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(again, VendError::NotVending(_, OrderState::Completed)),
        "{again}"
    );

    let (_, amount) = wait_for_refund_state(&r, order.id, "succeeded").await;
    assert_eq!(amount, 350);
    let o = orders::by_id(&r.app_services.db, order.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.refunded, Fen(350));
    let trades: serde_json::Value = reqwest::get(format!("{}/control/trades", r.sandbox_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let trade = trades["trades"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["out_trade_no"] == o.out_trade_no.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        trade["refunded_fen"], 350,
        "Alipay refunded exactly once: {trade}"
    );
}

#[tokio::test]
async fn nothing_dispensed_means_a_full_refund_and_an_unreported_unit_counts_as_not_dispensed() {
    let r = start().await;
    let order = paid_order(&r, "A2", 1).await;
    let outcome = record_results(
        &r.app_services,
        order.id,
        &[],
        openvend::pay::vend::Reporter::Machine,
    )
    .await
    .unwrap();
    assert_eq!(outcome.state, OrderState::Refunded);
    assert_eq!(outcome.refund, Fen(200));
    wait_for_refund_state(&r, order.id, "succeeded").await;
    let (stock, reserved, enabled) = slot_row(&r, "A2").await;
    assert_eq!(
        (stock, reserved, enabled),
        (8, 0, true),
        "an unreported unit stayed in the slot"
    );
}

#[tokio::test]
async fn results_for_an_unpaid_order_are_refused() {
    let r = start().await;
    let started = start_qr_sale(&r.app_services, &sale("A3", 1), r.app_services.now())
        .await
        .unwrap();
    let err = record_results(
        &r.app_services,
        started.order_id,
        &[],
        openvend::pay::vend::Reporter::Machine,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, VendError::NotVending(_, OrderState::AwaitingPayment)),
        "{err}"
    );
}

/// An operator refunds part of an order by hand before the machine reports; then nothing
/// comes out. The automatic refund is capped at what is left, so the order still ends and
/// the buyer gets back exactly what they paid, never more.
#[tokio::test]
async fn a_refund_by_hand_before_the_result_caps_the_automatic_one() {
    let r = start().await;
    let order = paid_order(&r, "A1", 2).await;
    assert_eq!(order.total, Fen(700));
    openvend::pay::refund::request(
        &r.app_services,
        order.id,
        "ticket-1",
        Fen(500),
        "buyer complained",
        "operator",
    )
    .await
    .unwrap();
    let failed = UnitResult {
        slot: "A1".into(),
        result: ReportedVend::Failed,
        reason: Some("jam".into()),
    };
    let outcome = record_results(
        &r.app_services,
        order.id,
        &[failed.clone(), failed],
        openvend::pay::vend::Reporter::Machine,
    )
    .await
    .unwrap();
    assert_eq!(outcome.refund, Fen(200), "700 failed, 500 already refunded");
    assert_ne!(outcome.state, OrderState::Dispensing, "the order ended");

    // Both refunds go through; together they are the whole payment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = openvend::store::query(
            "SELECT amount_fen FROM refunds WHERE order_id = $1 AND state = 'succeeded'",
        )
        .bind(order.id)
        .fetch_all(&r.app_services.db.pool)
        .await
        .unwrap();
        let sum: i64 = rows.iter().map(|row| row.get::<i64, _>(0)).sum();
        if rows.len() == 2 {
            assert_eq!(sum, 700);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "refunds not done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// One signed event from machine VM-0001 over the HTTP fallback: status and body.
async fn post_event(r: &Running, msg_id: &str, kind: &str, body: &str) -> (u16, serde_json::Value) {
    let secret = crate::sale::machine_secret(r, "VM-0001").await;
    let ts = r.app_services.now();
    crate::sale::post_device_event(r, "VM-0001", &secret, ts, msg_id, kind, body).await
}

/// A paid order whose dispense was never acknowledged: past the command's time and the grace
/// after it, the server refunds it in full. Answers the order and its dispense command's id.
async fn refunded_undelivered(r: &Running, slot: &str, qty: u32) -> (orders::Order, String) {
    let order = paid_order(r, slot, qty).await;
    let command = dispense_command(r, &order).await;
    refund_undelivered(r, &order).await;
    (order, command)
}

/// The id of the order's dispense command.
async fn dispense_command(r: &Running, order: &orders::Order) -> String {
    crate::sale::strings(
        r,
        openvend::store::query(
            "SELECT command_id FROM device_commands WHERE order_id = $1 AND kind = 'dispense'",
        )
        .bind(&order.out_trade_no),
    )
    .await
    .remove(0)
}

/// Lets the order's dispense expire unacknowledged, and waits for its refund.
async fn refund_undelivered(r: &Running, order: &orders::Order) {
    let ttl = r.app_services.device.command_ttl_ms();
    r.app_services
        .clock
        .advance(ttl + openvend::device::ledger::ACK_GRACE_MS + 1_000);
    r.app_services.jobs_ready.notify_one();
    wait_for_state(r, &order.out_trade_no, OrderState::Refunded).await;
    wait_for_refund_state(r, order.id, "succeeded").await;
}

/// A machine's result sent again under the same msg_id (its answer was lost) is answered
/// `duplicate` and applied once: the command's update that goes out with the event's row is
/// rolled back with it.
#[tokio::test]
async fn a_result_repeated_under_its_msg_id_is_applied_once() {
    let r = start().await;
    let (stock_before, _, _) = slot_row(&r, "A1").await;
    let order = paid_order(&r, "A1", 2).await;
    let command = dispense_command(&r, &order).await;
    let ack = format!(r#"{{"command_id":"{command}","status":"accepted"}}"#);
    let (status, body) = post_event(&r, "r-ack", "ack", &ack).await;
    assert_eq!(status, 200, "{body}");
    let report = format!(
        r#"{{"command_id":"{command}","order_id":"{}","items":[{{"slot":"A1","result":"dispensed"}},{{"slot":"A1","result":"failed","reason":"jam"}}]}}"#,
        order.out_trade_no
    );
    let (status, body) = post_event(&r, "r-result", "dispense_result", &report).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    wait_for_refund_state(&r, order.id, "succeeded").await;
    let after_first = (
        slot_row(&r, "A1").await,
        orders::by_id(&r.app_services.db, order.id).await.unwrap(),
    );
    assert_eq!(after_first.0.0, stock_before - 1, "one unit came out");
    let (status, body) = post_event(&r, "r-result", "dispense_result", &report).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );
    assert_eq!(
        (
            slot_row(&r, "A1").await,
            orders::by_id(&r.app_services.db, order.id).await.unwrap()
        ),
        after_first
    );
    let counted = |sql: &'static str| {
        let db = r.app_services.db.clone();
        async move {
            let row = openvend::store::query(sql)
                .fetch_one(&db.pool)
                .await
                .unwrap();
            row.try_get::<i64, _>(0).unwrap()
        }
    };
    assert_eq!(counted("SELECT COUNT(*) FROM vend_results").await, 2);
    assert_eq!(
        counted("SELECT COUNT(*) FROM device_events WHERE kind = 'dispense_result'").await,
        1
    );
    assert_eq!(counted("SELECT COUNT(*) FROM refunds").await, 1);
}

/// The machine was cut off after it took the dispense and came back only after the server
/// had refunded the buyer. Its result is still refused and the order keeps its refund, but
/// what it says came out is kept once: the slot's stock is lowered, the timeline says so and
/// the attention list shows it. A repeat changes nothing more.
#[tokio::test]
async fn a_result_after_the_refund_is_refused_but_what_came_out_is_kept_for_a_person() {
    let r = start().await;
    let (stock_before, _, _) = slot_row(&r, "A1").await;
    let (order, command) = refunded_undelivered(&r, "A1", 2).await;
    assert_eq!(slot_row(&r, "A1").await, (stock_before, 0, true));

    // The machine is back: one unit came out, and the power failed during the other.
    let ack = format!(r#"{{"command_id":"{command}","status":"accepted"}}"#);
    let (status, body) = post_event(&r, "late-ack", "ack", &ack).await;
    assert_eq!(status, 409, "{body}");
    let report = format!(
        r#"{{"command_id":"{command}","order_id":"{}","items":[{{"slot":"A1","result":"dispensed"}},{{"slot":"A1","result":"indeterminate"}}]}}"#,
        order.out_trade_no
    );
    let (status, body) = post_event(&r, "late-result", "dispense_result", &report).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // The order and its money are as the refund left them.
    let after = orders::by_id(&r.app_services.db, order.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.state, OrderState::Refunded);
    assert_eq!(after.refunded, order.total);
    // Both units may be gone: both are off the stock.
    assert_eq!(slot_row(&r, "A1").await, (stock_before - 2, 0, true));
    let timeline = orders::timeline(&r.app_services.db, order.id)
        .await
        .unwrap();
    let late: Vec<_> = timeline
        .iter()
        .filter(|e| e.2 == "vended_after_expiry")
        .collect();
    assert_eq!(late.len(), 1, "{timeline:?}");
    assert!(
        late[0].3.contains(&command) && late[0].3.contains("2 of 2"),
        "{late:?}"
    );
    let list = crate::faults::attention(&r).await;
    let listed = list["vended_after_expiry"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(listed[0]["out_trade_no"], order.out_trade_no.as_str());
    assert_eq!(listed[0]["order_state"], "refunded");
    assert_eq!(listed[0]["command_id"], command.as_str());
    assert_eq!(
        (
            &listed[0]["dispensed"],
            &listed[0]["indeterminate"],
            &listed[0]["stock_corrected"]
        ),
        (&json!(1), &json!(1), &json!(2))
    );

    // The same message again is a duplicate; the same report under a new id is refused and
    // lowers nothing twice.
    let (status, body) = post_event(&r, "late-result", "dispense_result", &report).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );
    let (status, body) = post_event(&r, "late-result-2", "dispense_result", &report).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(slot_row(&r, "A1").await, (stock_before - 2, 0, true));
    assert_eq!(
        crate::faults::attention(&r).await["vended_after_expiry"],
        list["vended_after_expiry"]
    );
    let events = crate::sale::strings(
        &r,
        openvend::store::query(
            "SELECT msg_id FROM device_events WHERE msg_id LIKE 'late-%' ORDER BY msg_id",
        ),
    )
    .await;
    assert_eq!(events, ["late-result"], "only the kept report is stored");
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// A late report that nothing came out confirms the refund: kept on the timeline, not listed.
#[tokio::test]
async fn a_late_result_that_nothing_came_out_is_not_listed() {
    let r = start().await;
    let (order, command) = refunded_undelivered(&r, "A2", 1).await;
    let (stock, _, _) = slot_row(&r, "A2").await;
    let rows = |table: &'static str| {
        let r = &r;
        async move {
            crate::sale::strings(
                r,
                openvend::store::query(&format!(
                    "SELECT CAST(COUNT(*) AS TEXT) FROM {table} WHERE order_id = {}",
                    order.id
                )),
            )
            .await
        }
    };
    let (refunds, vends) = (rows("refunds").await, rows("vend_results").await);
    let report = format!(
        r#"{{"command_id":"{command}","order_id":"{}","items":[{{"slot":"A2","result":"failed","reason":"sensor"}}]}}"#,
        order.out_trade_no
    );
    let (status, body) = post_event(&r, "late-result", "dispense_result", &report).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(slot_row(&r, "A2").await.0, stock);
    assert_eq!(
        (rows("refunds").await, rows("vend_results").await),
        (refunds, vends)
    );
    let timeline = orders::timeline(&r.app_services.db, order.id)
        .await
        .unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.2 == "vended_after_expiry" && e.3.contains("0 of 0")),
        "{timeline:?}"
    );
    assert_eq!(
        crate::faults::attention(&r).await["vended_after_expiry"],
        json!([])
    );
}

/// A late report kept before the server settled the order (it was down) finds the slot's last
/// units held by the order's own reservation, so it cannot take them off the stock. The refund
/// that settles the order releases the reservation and takes them off then.
#[tokio::test]
async fn units_reported_before_the_refund_come_off_the_stock_when_it_releases_them() {
    let r = start().await;
    openvend::store::query(
        "UPDATE slots SET stock = 2 WHERE code = 'A3' AND machine_id = (SELECT id FROM machines WHERE code = 'VM-0001')",
    )
    .execute(&r.app_services.db.pool)
    .await
    .unwrap();
    let order = paid_order(&r, "A3", 2).await;
    let command = dispense_command(&r, &order).await;
    assert_eq!(slot_row(&r, "A3").await, (2, 2, true));

    let dispensed = UnitResult {
        slot: "A3".into(),
        result: ReportedVend::Dispensed,
        reason: None,
    };
    let mut tx = r.app_services.db.begin().await.unwrap();
    let kept = openvend::pay::late_vend::keep(
        &mut tx,
        order.machine_id,
        (&command, "late-result"),
        &order.out_trade_no,
        &[dispensed.clone(), dispensed],
        r.app_services.now(),
    )
    .await
    .unwrap()
    .expect("kept");
    tx.commit().await.unwrap();
    assert_eq!((kept.dispensed, kept.stock_corrected), (2, 0));
    assert_eq!(
        slot_row(&r, "A3").await,
        (2, 2, true),
        "the order still holds both"
    );

    refund_undelivered(&r, &order).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while slot_row(&r, "A3").await != (0, 0, true) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stock not corrected after the refund: {:?}",
            slot_row(&r, "A3").await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = crate::faults::attention(&r).await["vended_after_expiry"].clone();
    assert_eq!(listed[0]["stock_corrected"], 2, "{listed}");
    let after = orders::by_id(&r.app_services.db, order.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.state, after.refunded),
        (OrderState::Refunded, order.total)
    );
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}
