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
    let outcome = record_results(&r.app_services, order.id, &report)
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
    let again = record_results(&r.app_services, order.id, &report)
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
    let outcome = record_results(&r.app_services, order.id, &[])
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
    let err = record_results(&r.app_services, started.order_id, &[])
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
    let outcome = record_results(&r.app_services, order.id, &[failed.clone(), failed])
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
