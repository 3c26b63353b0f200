//! Unknown and unpaid outcomes are resolved by asking Alipay, never by guessing: an unpaid
//! QR is cancelled when the buyer's time is up and its stock released; a manual refund over
//! the operator API happens once however often it is sent.

use std::time::Duration;

use openvend::domain::order::OrderState;
use openvend::pay::sale::start_qr_sale;
use serde_json::{Value, json};

use crate::sale::{control, sale, start, wait_for_state};

#[tokio::test]
async fn an_unpaid_qr_order_is_closed_when_time_is_up_and_its_stock_released() {
    let r = start().await;
    let started = start_qr_sale(&r.app_services, &sale("A3", 2), r.app_services.now())
        .await
        .unwrap();
    let reserved = || async {
        let row = openvend::store::query("SELECT reserved FROM slots s JOIN machines m ON m.id = s.machine_id WHERE m.code = 'VM-0001' AND s.code = 'A3'")
            .fetch_one(&r.app_services.db.pool)
            .await
            .unwrap();
        row.try_get::<i64, _>(0)
            .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
            .unwrap()
    };
    assert_eq!(reserved().await, 2);

    // Six minutes later (the buyer had five), the resolver queries, then closes the trade.
    r.app_services.clock.advance(6 * 60_000);
    r.app_services.jobs_ready.notify_one();
    let order = wait_for_state(&r, &started.out_trade_no, OrderState::Closed).await;
    assert_eq!(reserved().await, 0);
    let timeline = openvend::store::orders::timeline(&r.app_services.db, order.id)
        .await
        .unwrap();
    assert!(timeline.iter().any(|e| e.2 == "closed"), "{timeline:?}");

    // Alipay's side agrees: the trade is closed, nobody can pay it any more.
    let buyer = control(&r, "/control/buyers", json!({ "balance": "100.00" })).await["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = reqwest::Client::new()
        .post(format!("{}/control/qr/pay", r.sandbox_url))
        .json(&json!({ "qr_code": started.qr_code, "buyer_id": buyer }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
}

/// The resolver's polls of an unpaid order are no failures: each starts the job's count of
/// attempts again, so a failure after many polls backs off from a second, not from the
/// ten-minute cap.
#[tokio::test]
async fn a_poll_that_asks_to_run_again_starts_the_count_of_attempts_again() {
    let r = start().await;
    let started = start_qr_sale(&r.app_services, &sale("A3", 1), r.app_services.now())
        .await
        .unwrap();
    let key = openvend::store::orders::resolve_key(started.order_id);
    let job = || crate::sale::next_look(&r, started.order_id, &key);
    for poll in 1..=3 {
        let before = job().await.1;
        r.app_services
            .clock
            .advance((before - r.app_services.now()).max(0) + 1);
        r.app_services.jobs_ready.notify_one();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut after = job().await;
        while after.1 <= before && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            after = job().await;
        }
        assert!(after.1 > before, "poll {poll} ran: {after:?}");
        assert_eq!(after.0, 0, "poll {poll} left its count at zero");
    }
}

/// A payment notified after the resolver's first poll ends that poll's job with the payment,
/// and the order's watch moves to its dispense: nothing asks Alipay about a paid order's
/// payment again.
#[tokio::test]
async fn a_payment_notified_after_the_first_poll_ends_the_resolver_job() {
    let r = start().await;
    let started = start_qr_sale(&r.app_services, &sale("A1", 1), r.app_services.now())
        .await
        .unwrap();
    let id = started.order_id;
    let key = openvend::store::orders::resolve_key(id);
    let resolver_jobs = || async {
        let row = openvend::store::query("SELECT COUNT(*) AS n FROM jobs WHERE dedup_key = $1")
            .bind(&key)
            .fetch_one(&r.app_services.db.pool)
            .await
            .unwrap();
        openvend::store::get_int(&row, "n").unwrap()
    };
    assert_eq!(resolver_jobs().await, 0, "watched from the order's row");
    let first = crate::sale::next_look(&r, id, &key).await.1;
    r.app_services
        .clock
        .advance((first - r.app_services.now()).max(0) + 1);
    r.app_services.jobs_ready.notify_one();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while crate::sale::next_look(&r, id, &key).await.1 <= first {
        assert!(
            std::time::Instant::now() < deadline,
            "the first poll did not run"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(resolver_jobs().await, 1, "the poll asked to run again");

    let buyer = control(&r, "/control/buyers", json!({ "balance": "100.00" })).await["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before_pay = r.app_services.now();
    crate::sale::pay_by_out_trade_no(&r, &started.out_trade_no, &buyer).await;
    wait_for_state(&r, &started.out_trade_no, OrderState::Paid).await;
    assert_eq!(resolver_jobs().await, 0, "ended with the payment");
    let watch = crate::sale::next_look(&r, id, &openvend::store::orders::dispense_key(id)).await;
    assert!(
        watch.1 >= before_pay + r.app_services.device.command_ttl_ms(),
        "watched from the dispense's deadline: {watch:?}"
    );
}

/// Sends a burst of refund requests at once and checks that each is accepted as the same
/// refund.
async fn accepted_as_one_refund(
    burst: Vec<impl std::future::Future<Output = reqwest::Result<reqwest::Response>>>,
) {
    let mut ids = std::collections::BTreeSet::new();
    for resp in futures_util::future::join_all(burst).await {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 202);
        ids.insert(resp.json::<Value>().await.unwrap()["id"].as_i64());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// A QR sale of one A1 at VM-0001, paid by a sandbox buyer: its start and the paid order.
async fn paid_qr_sale(
    r: &crate::sale::Running,
) -> (
    openvend::pay::sale::SaleStarted,
    openvend::store::orders::Order,
) {
    let started = start_qr_sale(&r.app_services, &sale("A1", 1), r.app_services.now())
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
    let order = wait_for_state(r, &started.out_trade_no, OrderState::Paid).await;
    (started, order)
}

#[tokio::test]
async fn a_manual_refund_sent_twice_with_one_key_refunds_once() {
    let r = start().await;
    let (started, order) = paid_qr_sale(&r).await;

    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    let http = reqwest::Client::new();
    let refund = |amount: i64| {
        http.post(format!("{}/api/v1/orders/{}/refunds", r.http_url, order.id))
            .bearer_auth(token.trim())
            .json(&json!({ "amount_fen": amount, "reason": "customer complaint", "idempotency_key": "ticket-42" }))
            .send()
    };
    // Sent eight times at once (a retrying client), then once more: every answer is the one
    // refund.
    let burst: Vec<_> = (0..8).map(|_| refund(100)).collect();
    accepted_as_one_refund(burst).await;
    let second = refund(100).await.unwrap();
    assert_eq!(second.status(), 202);
    let other_amount = refund(150).await.unwrap();
    assert_eq!(
        other_amount.status(),
        409,
        "a key reused for another amount is refused"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let trades: Value = reqwest::get(format!("{}/control/trades", r.sandbox_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = trades["trades"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["out_trade_no"] == started.out_trade_no.as_str())
            .unwrap()
            .clone();
        if t["refunded_fen"] == 100 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refund not done: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refunds: i64 = openvend::store::query("SELECT COUNT(*) FROM refunds")
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(refunds, 1);
    // On the audit trail: asked for once by the operator API, settled once by Alipay's answer
    // (settling may trail Alipay's side by a moment).
    let subject = format!("order:{}", order.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let actions = loop {
        let actions: Vec<(String, String)> = openvend::store::query(
            "SELECT actor, action FROM audit_log WHERE subject = $1 ORDER BY id",
        )
        .bind(&subject)
        .fetch_all(&r.app_services.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
        if actions.len() >= 3 || tokio::time::Instant::now() >= deadline {
            break actions;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        actions,
        [
            ("alipay".to_owned(), "payment_received".to_owned()),
            ("operator-api".to_owned(), "refund_requested".to_owned()),
            ("alipay".to_owned(), "refunded".to_owned())
        ]
    );
    let too_much = http
        .post(format!("{}/api/v1/orders/{}/refunds", r.http_url, order.id))
        .bearer_auth(token.trim())
        .json(&json!({ "amount_fen": 251, "reason": "x", "idempotency_key": "ticket-43" }))
        .send()
        .await
        .unwrap();
    assert_eq!(too_much.status(), 422, "only 2.50 is left to refund");
}

#[tokio::test]
async fn manual_refunds_asked_at_once_never_add_up_to_more_than_was_paid() {
    let r = start().await;
    let (_, order) = paid_qr_sale(&r).await;
    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    let http = reqwest::Client::new();
    let refund = |amount: i64, key: String| {
        http.post(format!("{}/api/v1/orders/{}/refunds", r.http_url, order.id))
            .bearer_auth(token.trim())
            .json(&json!({ "amount_fen": amount, "reason": "complaint", "idempotency_key": key }))
            .send()
    };
    // One client retrying 2.00 of the 3.50 eight times at once: every answer is the one
    // refund, although a second 2.00 would not fit.
    let burst: Vec<_> = (0..8).map(|_| refund(200, "ticket-7".into())).collect();
    accepted_as_one_refund(burst).await;
    // Eight operators each refund 1.00 of the 1.50 left at the same moment, each under a key
    // of their own: one refund fits, the others are told what is left.
    let burst: Vec<_> = (0..8).map(|i| refund(100, format!("desk-{i}"))).collect();
    let mut statuses = Vec::new();
    for resp in futures_util::future::join_all(burst).await {
        statuses.push(resp.unwrap().status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [202, 422, 422, 422, 422, 422, 422, 422]);
    let asked: i64 = openvend::store::query(
        "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM refunds WHERE order_id = $1",
    )
    .bind(order.id)
    .fetch_one(&r.app_services.db.pool)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    assert_eq!(asked, 300);
}

/// A QR sale of one A1 whose `alipay.trade.precreate` meets the gateway fault `kind`
/// (`unknown_after`: carried out, its answer "unknown"; `unknown_before`: not carried out):
/// its order number.
async fn sale_with_lost_precreate(r: &crate::sale::Running, kind: &str) -> String {
    control(
        r,
        "/control/faults",
        json!({ "method": "alipay.trade.precreate", "fault": { "kind": kind }, "count": 1 }),
    )
    .await;
    let err = start_qr_sale(&r.app_services, &sale("A1", 1), r.app_services.now())
        .await
        .unwrap_err();
    let openvend::pay::sale::SaleError::PaymentUnknown(out_trade_no) = err else {
        panic!("expected an unknown result, got {err}")
    };
    out_trade_no
}

#[tokio::test]
async fn a_precreate_whose_answer_is_lost_is_resolved_by_query_then_cancel() {
    let r = start().await;
    // Alipay creates the trade but answers "unknown" (F: gateway 20000 after performing).
    let out_trade_no = sale_with_lost_precreate(&r, "unknown_after").await;
    // No QR code reached the machine, so nobody can pay: the resolver asks, then cancels.
    let order = wait_for_state(&r, &out_trade_no, OrderState::Closed).await;
    let timeline = openvend::store::orders::timeline(&r.app_services.db, order.id)
        .await
        .unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|e| e.2.as_str()).collect();
    assert!(
        kinds.contains(&"precreate_unknown") && kinds.contains(&"closed"),
        "{kinds:?}"
    );
    let t = crate::faults::sandbox_trade(&r, &out_trade_no).await;
    assert_eq!(
        t["trade_status"], "TRADE_CLOSED",
        "Alipay's side is closed too: {t}"
    );
}

/// A precreate Alipay never carried out, its answer lost; the query finds no trade, and the
/// cancel is answered without an `action` ("the trade was not found", in Alipay's words):
/// no trade and no money exist, so the order is closed unpaid and its stock released.
#[tokio::test]
async fn a_cancel_answered_without_an_action_for_a_trade_never_created_closes_the_order() {
    let r = start().await;
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.cancel", "fault": { "kind": "answer", "fields": { "retry_flag": "N" } }, "count": 1 }),
    )
    .await;
    let out_trade_no = sale_with_lost_precreate(&r, "unknown_before").await;
    let order = wait_for_state(&r, &out_trade_no, OrderState::Closed).await;
    let timeline = openvend::store::orders::timeline(&r.app_services.db, order.id)
        .await
        .unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.2 == "closed" && e.3 == "never created: cancel found no trade"),
        "{timeline:?}"
    );
    // The cancel met its answer.
    crate::sale::wait_for_gateway_rules(&r, 0).await;
    let trades: Value = reqwest::get(format!("{}/control/trades", r.sandbox_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trades["trades"], json!([]), "no trade was ever made");
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// A precreate whose answer was lost, its code never scanned: the query finds no trade, and
/// the cancel's answer (no `action`, "not found") takes 5 s. The trade is paid meanwhile. The
/// notification of that payment is not served, and it keeps the order from being closed as
/// unpaid on the cancel's answer: the next query finds it paid, the cancel sent again refunds
/// it, and the order ends refunded.
#[tokio::test]
async fn a_payment_notified_while_a_not_found_cancel_is_answered_is_refunded_not_lost() {
    let r = start().await;
    let buyer = control(&r, "/control/buyers", json!({ "balance": "100.00" })).await["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.cancel", "fault": { "kind": "answer", "fields": { "retry_flag": "N" }, "ms": 5000 }, "count": 1 }),
    )
    .await;
    let out_trade_no = sale_with_lost_precreate(&r, "unknown_after").await;
    // The cancel is on its way (its rule taken): the trade is paid now.
    crate::sale::wait_for_gateway_rules(&r, 0).await;
    crate::sale::pay_by_out_trade_no(&r, &out_trade_no, &buyer).await;
    let order = wait_for_state(&r, &out_trade_no, OrderState::Refunded).await;
    assert_eq!(order.refunded.0, order.total.0);
    let timeline = openvend::store::orders::timeline(&r.app_services.db, order.id)
        .await
        .unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|e| e.2.as_str()).collect();
    assert!(
        kinds.contains(&"paid_after_cancel") && !kinds.contains(&"closed"),
        "{timeline:?}"
    );
    let trade = crate::faults::sandbox_trade(&r, &out_trade_no).await;
    assert!(
        trade["total_fen"].as_i64().is_some_and(|t| t > 0),
        "{trade}"
    );
    assert_eq!(trade["refunded_fen"], trade["total_fen"], "{trade}");
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// A QR sale of one A2, paid by a sandbox buyer, every notification of it dropped.
async fn paid_with_its_notification_lost(
    r: &crate::sale::Running,
) -> openvend::pay::sale::SaleStarted {
    control(
        r,
        "/control/faults",
        json!({ "notification": { "kind": "drop" } }),
    )
    .await;
    let started = start_qr_sale(&r.app_services, &sale("A2", 1), r.app_services.now())
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
    started
}

#[tokio::test]
async fn a_payment_whose_notification_is_lost_is_found_by_query() {
    let r = start().await;
    let started = paid_with_its_notification_lost(&r).await;

    // The notification never comes; the next poll (10 s later) asks Alipay and finds it paid.
    r.app_services.clock.advance(11_000);
    r.app_services.jobs_ready.notify_one();
    let order = wait_for_state(&r, &started.out_trade_no, OrderState::Paid).await;
    let timeline = openvend::store::orders::timeline(&r.app_services.db, order.id)
        .await
        .unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.2 == "paid" && e.3.contains("query")),
        "{timeline:?}"
    );
    assert_eq!(crate::sale::dispense_watches(&r, order.id).await, 1);
}

/// A trade paid and then refunded in full behind the order's back (a cancel that refunded,
/// whose answer or commit was lost in a crash): the resolver's query finds it `TRADE_CLOSED`
/// with a payment date, and the order ends refunded with the money it paid back on the audit
/// trail, not "closed unpaid" with nothing (which the day's bill would contradict).
#[tokio::test]
async fn a_trade_closed_after_its_payment_is_recorded_as_refunded_not_unpaid() {
    let r = start().await;
    let started = paid_with_its_notification_lost(&r).await;
    // The cancel that refunded it, its answer never recorded.
    let cancel = alipay::api::trade::Cancel::by_out_trade_no(&started.out_trade_no);
    let cancelled = r
        .app_services
        .alipay
        .execute(&cancel, &alipay::CallOptions::default())
        .await
        .success()
        .unwrap();
    assert_eq!(
        cancelled.action,
        Some(alipay::api::trade::CancelAction::Refund)
    );

    r.app_services.clock.advance(11_000);
    r.app_services.jobs_ready.notify_one();
    let order = wait_for_state(&r, &started.out_trade_no, OrderState::Refunded).await;
    assert_eq!(order.refunded.0, order.total.0);
    // The trade the money went through is named on the order, as for a paid one.
    assert_eq!(order.trade_no, cancelled.trade_no);
    assert!(order.trade_no.is_some());
    let acts = crate::sale::audit_acts(&r, &format!("order:{}", order.id)).await;
    assert!(
        acts.iter().any(|a| a == "cancelled_with_refund"),
        "{acts:?}"
    );
    crate::flow::settle(&r, 0).await;
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// The order's resolver gives Alipay's answer up as lost while the machine's `precreate` is
/// still on its way (held 3 s here); the answer that comes afterwards is never shown: the
/// machine is refused, the order stays closed, nobody is handed a code for a cancelled trade.
#[tokio::test]
async fn an_answer_that_comes_after_the_resolver_gave_it_up_is_never_shown() {
    let r = start().await;
    crate::sale::mark_machines_online(&r).await;
    let (sim, mut events) = crate::flow::machine(&r, "VM-0001", |_| {}).await;
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.precreate", "fault": { "kind": "latency", "ms": 3000 }, "count": 1 }),
    )
    .await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let order_id = first_order(&r).await;
    // The resolver's first query is due 10 s after the order: nobody holds a code yet.
    r.app_services.clock.advance(11_000);
    r.app_services.jobs_ready.notify_one();

    match crate::flow::next_business(&mut events).await {
        openvend::sim::SimEvent::SaleRefused { reason, .. } => {
            assert!(reason.contains("too late"), "{reason}")
        }
        other => panic!("expected the sale refused, got {other:?}"),
    }
    let order = openvend::store::orders::by_id(&r.app_services.db, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.state, OrderState::Closed);
    assert_eq!(order.qr_code, None, "the late code was not recorded");
    let timeline = openvend::store::orders::timeline(&r.app_services.db, order_id)
        .await
        .unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|e| e.2.as_str()).collect();
    assert!(
        kinds.contains(&"answer_lost")
            && kinds.contains(&"closed")
            && !kinds.contains(&"precreated"),
        "{kinds:?}"
    );
    assert!(
        crate::flow::commands(&r, &order.out_trade_no, "show_qr")
            .await
            .is_empty(),
        "no show_qr was recorded"
    );
    assert_eq!(
        crate::flow::slot(&r, "VM-0001", "A1").await.1,
        0,
        "stock released"
    );
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// The same race on a sale started without a machine waiting (`start_qr_sale`): the late
/// answer is an error, not a code.
#[tokio::test]
async fn a_qr_sale_answered_after_it_was_given_up_returns_no_code() {
    let r = start().await;
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.precreate", "fault": { "kind": "latency", "ms": 3000 }, "count": 1 }),
    )
    .await;
    let svc = r.app_services.clone();
    let now = svc.now();
    let sale = tokio::spawn(async move { start_qr_sale(&svc, &sale("A2", 1), now).await });
    first_order(&r).await;
    r.app_services.clock.advance(11_000);
    r.app_services.jobs_ready.notify_one();
    let err = sale.await.unwrap().unwrap_err();
    let openvend::pay::sale::SaleError::AnsweredTooLate(out_trade_no) = err else {
        panic!("expected a late answer, got {err}")
    };
    let order = wait_for_state(&r, &out_trade_no, OrderState::Closed).await;
    assert_eq!(order.qr_code, None);
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// The id of the first order written, once there is one (its precreate is then on its way).
async fn first_order(r: &crate::sale::Running) -> i64 {
    crate::flow::id_once_written(
        r,
        || openvend::store::query("SELECT id FROM orders ORDER BY id LIMIT 1"),
        "an order",
    )
    .await
}

/// The buyer's time is up and the last query found the trade unpaid, but the buyer pays while
/// the resolver's close is on its way (held 3 s here). The close fails on the paid trade and
/// the payment is served: the money is neither refunded behind the dispense's back (as a
/// cancel would) nor lost.
#[tokio::test]
async fn a_payment_that_beats_the_close_is_served_not_refunded() {
    let r = start().await;
    let started = start_qr_sale(&r.app_services, &sale("A1", 1), r.app_services.now())
        .await
        .unwrap();
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.close", "fault": { "kind": "latency", "ms": 3000 }, "count": 1 }),
    )
    .await;
    r.app_services.clock.advance(6 * 60_000);
    r.app_services.jobs_ready.notify_one();
    // The rule is used up when the close arrives, before its hold: pay in the hold.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let faults: Value = reqwest::get(format!("{}/control/faults", r.sandbox_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if faults["gateway"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resolver never tried to close the trade"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::flow::pay(&r, &started.qr_code).await;
    let paid = wait_for_state(&r, &started.out_trade_no, OrderState::Paid).await;
    // Let the held close answer and the resolver act on it.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    r.app_services.jobs_ready.notify_one();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let order = openvend::store::orders::by_id(&r.app_services.db, paid.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.state, OrderState::Paid, "served: its dispense is out");
    assert_eq!(order.refunded, openvend::domain::fen::Fen::ZERO);
    let t = crate::faults::sandbox_trade(&r, &started.out_trade_no).await;
    assert_eq!(t["trade_status"], "TRADE_SUCCESS", "not refunded: {t}");
    // The machine vends it; the sale ends like any other.
    let vended = openvend::pay::vend::UnitResult {
        slot: "A1".into(),
        result: openvend::pay::vend::ReportedVend::Dispensed,
        reason: None,
    };
    let outcome = openvend::pay::vend::record_results(
        &r.app_services,
        order.id,
        &[vended],
        openvend::pay::vend::Reporter::Machine,
    )
    .await
    .unwrap();
    assert_eq!(outcome.state, OrderState::Completed);
    crate::invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// Alipay cannot be reached for a day: the resolver keeps asking (never guessing), and the
/// order, not final a day after it was made, is on the operator's list of what needs a person.
#[tokio::test]
async fn an_order_alipay_cannot_settle_for_a_day_is_listed_for_a_person() {
    let r = start().await;
    let started = start_qr_sale(&r.app_services, &sale("A1", 1), r.app_services.now())
        .await
        .unwrap();
    control(
        &r,
        "/control/faults",
        json!({ "method": "*", "fault": { "kind": "unknown_before" } }),
    )
    .await;
    let listed = |list: &Value| {
        list["stuck_orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["out_trade_no"] == started.out_trade_no.as_str())
    };
    assert!(
        !listed(&crate::faults::attention(&r).await),
        "not yet a day old"
    );
    r.app_services.clock.advance(25 * 60 * 60 * 1000);
    r.app_services.jobs_ready.notify_one();
    let list = crate::faults::attention(&r).await;
    assert!(listed(&list), "{list}");
    let order = openvend::store::orders::by_out_trade_no(&r.app_services.db, &started.out_trade_no)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !order.state.is_terminal(),
        "nothing was guessed: {:?}",
        order.state
    );
}
