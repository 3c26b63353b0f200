//! More fault scenarios of reliability.md §3.2, end to end over real HTTP and MQTT with the
//! sandbox: F12 (the drop sensor saw nothing), F15 (a dispense command delivered twice), F16 (the refund call times out), F17 (a refund
//! number Alipay already knows with another amount), F22 (machines cut off from the server
//! for 10 minutes with orders in flight), a result that never comes (dispute) or comes after
//! the dispute, and a dispense watch that loses the race with the machine's ack.

use std::time::Duration;

use openvend::domain::order::OrderState;
use openvend::sim::SimEvent;
use serde_json::{Value, json};

use crate::flow::{
    commands, expect_qr, id_once_written, log_vend, machine, next_business, pay, settle, slot,
};
use crate::invariants::{self, VendLog};
use crate::sale::{Running, control, start, wait_for_state};

/// The sandbox's record of one trade.
pub async fn sandbox_trade(r: &Running, out_trade_no: &str) -> Value {
    let trades: Value = reqwest::get(format!("{}/control/trades", r.sandbox_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    trades["trades"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["out_trade_no"] == out_trade_no)
        .cloned()
        .unwrap()
}

/// The refunds of an order: (out_request_no, amount, state).
async fn refunds(r: &Running, out_trade_no: &str) -> Vec<(String, i64, String)> {
    openvend::store::query(
        "SELECT r.out_request_no, r.amount_fen, r.state FROM refunds r JOIN orders o ON o.id = r.order_id WHERE o.out_trade_no = $1 ORDER BY r.id",
    )
    .bind(out_trade_no)
    .fetch_all(&r.app_services.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|row| {
        (
            row.get(0),
            openvend::store::get_int(row, "amount_fen").unwrap(),
            row.get(2),
        )
    })
    .collect()
}

/// Waits until the machine has acknowledged the order's dispense.
async fn wait_dispense_acknowledged(r: &Running, order: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while commands(r, order, "dispense").await != ["acknowledged"] {
        assert!(tokio::time::Instant::now() < deadline, "dispense not acked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A paid sale whose vend fails, so its refund is due, with Alipay carrying out the next
/// refund call but answering it only after `ms` (504). Returns the machine, its events and
/// the order.
async fn failed_vend_with_slow_refund(
    r: &Running,
    ms: u64,
) -> (
    openvend::sim::MachineSim,
    tokio::sync::mpsc::UnboundedReceiver<SimEvent>,
    String,
) {
    control(
        r,
        "/control/faults",
        json!({ "method": "alipay.trade.refund", "fault": { "kind": "no_answer", "ms": ms }, "count": 1 }),
    )
    .await;
    let (sim, mut events) = machine(r, "VM-0001", |s| s.fail_rate = 1.0).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(r, &qr).await;
    (sim, events, order)
}

/// Moves the server clock on in steps and lets the jobs run, until `done` holds.
async fn drive_until<F, Fut>(r: &Running, step_ms: i64, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached"
        );
        r.app_services.clock.advance(step_ms);
        r.app_services.jobs_ready.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn f12_a_unit_the_drop_sensor_did_not_see_is_refunded_and_its_slot_flagged() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| {
        s.fail_slots = vec!["A2".into()];
        s.fail_reason = "sensor".into();
    })
    .await;
    sim.buy(&[("A2", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    let mut log = VendLog::new();
    log_vend(&mut log, &next_business(&mut events).await);
    wait_for_state(&r, &order, OrderState::Refunded).await;
    assert_eq!(
        slot(&r, "VM-0001", "A2").await,
        (8, 0, false),
        "slot flagged"
    );
    settle(&r, 0).await;
    assert_eq!(refunds(&r, &order).await[0].2, "succeeded");
    invariants::check(&r.app_services.db, &r.sandbox_url, Some(&log)).await;
}

#[tokio::test]
async fn f15_a_dispense_command_delivered_twice_vends_once_and_is_answered_already_done() {
    // The test plays the server (and a broker redelivering) on the machine's Mosquitto.
    let code = format!("DUP-{}", openvend::ids::random_hex(6));
    let secret = "dup-secret";
    let (server, mut seen, _sim, mut events) =
        crate::clock::MosquittoMachine::start(&code, secret).await;
    let dispense = openvend::device::protocol::Command::Dispense {
        order_id: "o-dup".into(),
        items: vec![openvend::device::protocol::Line {
            slot: "A1".into(),
            qty: 1,
        }],
        // As an older server sent it: 60 s from its ts.
        expires_at: None,
    };
    let sealed = openvend::device::protocol::Envelope::seal(
        &code,
        secret.as_bytes(),
        "c-dup-1",
        openvend::services::now_ms(),
        dispense.kind(),
        dispense.body_json(),
    )
    .to_bytes();
    server.command(sealed.clone()).await;
    let first_ack = seen.next_of_kind("ack").await;
    assert!(first_ack["body"].as_str().unwrap().contains("accepted"));
    let first_result = seen.next_of_kind("dispense_result").await;
    server.command(sealed).await;
    let second_ack = seen.next_of_kind("ack").await;
    assert!(
        second_ack["body"]
            .as_str()
            .unwrap()
            .contains("already_done"),
        "{second_ack}"
    );
    let second_result = seen.next_of_kind("dispense_result").await;
    assert_eq!(
        second_result["body"], first_result["body"],
        "the same result, repeated"
    );
    assert_ne!(second_result["msg_id"], first_result["msg_id"]);
    // The motor ran once.
    let mut vends = 0;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        if matches!(ev, SimEvent::Dispensed { .. }) {
            vends += 1;
        }
    }
    assert_eq!(vends, 1);
}

#[tokio::test]
async fn f16_a_refund_call_that_times_out_is_sent_again_with_the_same_number_and_refunds_once() {
    let r = start().await;
    // The first refund call is carried out by Alipay, but its answer never comes back: the
    // client gives up after its 10 s timeout.
    let (_sim, mut events, order) = failed_vend_with_slow_refund(&r, 15_000).await;
    let mut log = VendLog::new();
    log_vend(&mut log, &next_business(&mut events).await);
    wait_for_state(&r, &order, OrderState::Refunded).await;
    // Wait for the timed-out call, then let the retry run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = refunds(&r, &order).await[0].2.clone();
        if state == "succeeded" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refund still {state}"
        );
        r.app_services.clock.advance(30_000);
        r.app_services.jobs_ready.notify_one();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all = refunds(&r, &order).await;
    assert_eq!(all.len(), 1, "one refund number, never a second: {all:?}");
    assert_eq!(all[0].0, format!("{order}V"));
    let trade = sandbox_trade(&r, &order).await;
    assert_eq!(trade["refunds"].as_array().unwrap().len(), 1, "{trade}");
    assert_eq!(trade["refunded_fen"], 350, "{trade}");
    settle(&r, 0).await;
    invariants::check(&r.app_services.db, &r.sandbox_url, Some(&log)).await;
}

#[tokio::test]
async fn f17_a_refund_number_alipay_knows_with_another_amount_is_refused_and_never_renumbered() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| s.fail_rate = 1.0).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    // Before the machine reports, somebody else refunds 0.01 under the number our refund of
    // this vend will use (a mistake elsewhere, a second system on the same app).
    let foreign = alipay::api::trade::Refund::new(
        &order,
        alipay::Amount::from_fen(1).unwrap(),
        format!("{order}V"),
    );
    let outcome = r
        .app_services
        .alipay
        .execute(&foreign, &alipay::CallOptions::default())
        .await;
    assert!(
        matches!(outcome, alipay::Outcome::Success(_)),
        "{outcome:?}"
    );

    let mut log = VendLog::new();
    log_vend(&mut log, &next_business(&mut events).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = refunds(&r, &order).await;
        if all.first().is_some_and(|(_, _, s)| s == "failed") {
            assert_eq!(
                all,
                [(format!("{order}V"), 350, "failed".to_owned())],
                "refused, and no new number was made up"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "refund: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refusal is on the order's timeline for the person who must look at it.
    let o = openvend::store::orders::by_out_trade_no(&r.app_services.db, &order)
        .await
        .unwrap()
        .unwrap();
    let timeline = openvend::store::orders::timeline(&r.app_services.db, o.id)
        .await
        .unwrap();
    assert!(
        timeline
            .iter()
            .any(|(_, _, _, detail)| detail.contains("DISCORDANT_REPEAT_REQUEST")),
        "{timeline:?}"
    );
    // Alipay holds only the foreign 0.01: nothing was refunded twice.
    let trade = sandbox_trade(&r, &order).await;
    assert_eq!(trade["refunded_fen"], 1, "{trade}");
    // And the operator's list of what needs a person names it.
    let list = attention(&r).await;
    assert!(
        list["failed_refunds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["out_request_no"] == format!("{order}V").as_str() && f["amount_fen"] == 350),
        "{list}"
    );
}

/// The operator API's list of what needs a person.
pub async fn attention(r: &crate::sale::Running) -> Value {
    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    reqwest::Client::new()
        .get(format!("{}/api/v1/attention", r.http_url))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn f22_machines_cut_off_for_ten_minutes_settle_every_order_and_never_vend_late() {
    let r = start().await;
    crate::chaos::add_machine(&r, "VM-0002").await;
    crate::sale::mark_machines_online(&r).await;
    let (a, mut a_events) = machine(&r, "VM-0001", |s| s.vend_time = Duration::from_secs(2)).await;
    let (b, mut b_events) = machine(&r, "VM-0002", |_| {}).await;
    let mut log = VendLog::new();

    // Machine A: an order vending when the cut comes (acknowledged, result not yet sent).
    a.buy(&[("A1", 1)]).await.unwrap();
    let (vending, qr, _) = expect_qr(&mut a_events).await;
    pay(&r, &qr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while commands(&r, &vending, "dispense").await != ["acknowledged"] {
        assert!(tokio::time::Instant::now() < deadline, "dispense not acked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Machine A: a second order on its screen, never paid.
    a.buy(&[("A2", 1)]).await.unwrap();
    let (unpaid, _, _) = expect_qr(&mut a_events).await;
    // Machine B: an order whose buyer pays while B is cut off.
    b.buy(&[("A1", 1)]).await.unwrap();
    let (paid_while_cut, qr_b, _) = expect_qr(&mut b_events).await;
    settle(&r, 0).await;

    a.go_offline().await;
    b.go_offline().await;
    pay(&r, &qr_b).await;
    wait_for_state(&r, &paid_while_cut, OrderState::Paid).await;
    // Ten minutes of server time go by.
    for _ in 0..10 {
        r.app_services.clock.advance(61_000);
        r.app_services.jobs_ready.notify_one();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Machine A's motor finishes during the cut; its result waits on the machine.
    loop {
        let ev = next_business(&mut a_events).await;
        log_vend(&mut log, &ev);
        if matches!(ev, SimEvent::Dispensed { ref order_id, .. } if *order_id == vending) {
            break;
        }
    }
    assert_eq!(log.get(&vending), Some(&1), "A vended its paid order");

    a.go_online().await.unwrap();
    b.go_online().await.unwrap();
    a.heartbeat(None).await.unwrap();
    b.heartbeat(None).await.unwrap();
    wait_for_state(&r, &vending, OrderState::Completed).await;
    wait_for_state(&r, &unpaid, OrderState::Closed).await;
    wait_for_state(&r, &paid_while_cut, OrderState::Refunded).await;
    // B never vends the order whose command expired while it was away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(ev) = b_events.try_recv() {
        assert!(
            !matches!(ev, SimEvent::Dispensed { .. }),
            "B vended after the command expired: {ev:?}"
        );
    }
    let states = commands(&r, &paid_while_cut, "dispense").await;
    assert!(
        states.iter().all(|s| s != "acknowledged" && s != "done"),
        "the expired command reached B: {states:?}"
    );
    settle(&r, 0).await;
    drive_until(&r, 61_000, "refunds settled", || async {
        openvend::store::query("SELECT COUNT(*) AS n FROM refunds WHERE state <> 'succeeded'")
            .fetch_one(&r.app_services.db.pool)
            .await
            .map(|row| openvend::store::get_int(&row, "n").unwrap() == 0)
            .unwrap()
    })
    .await;
    invariants::check(&r.app_services.db, &r.sandbox_url, Some(&log)).await;
}

#[tokio::test]
async fn an_acknowledged_dispense_whose_result_never_comes_goes_to_a_person_not_a_guess() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| s.vend_time = Duration::from_secs(30)).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    wait_dispense_acknowledged(&r, &order).await;
    // The machine dies mid-vend and never comes back.
    drop(sim);
    drive_until(&r, 61_000, "dispute", || async {
        openvend::store::orders::by_out_trade_no(&r.app_services.db, &order)
            .await
            .unwrap()
            .unwrap()
            .state
            == OrderState::Dispute
    })
    .await;
    assert!(
        refunds(&r, &order).await.is_empty(),
        "no refund is guessed: a person decides"
    );
    assert_eq!(
        slot(&r, "VM-0001", "A1").await.1,
        1,
        "the unit stays reserved until someone counts the slot"
    );
    // That person finds it on the list of what needs one.
    let list = attention(&r).await;
    assert!(
        list["disputes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["out_trade_no"] == order.as_str() && d["machine"] == "VM-0001"),
        "{list}"
    );
    assert!(list["count"].as_u64().unwrap() >= 1, "{list}");
}

#[tokio::test]
async fn a_result_that_comes_after_the_dispute_settles_the_order_as_it_happened() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| s.vend_time = Duration::from_secs(2)).await;
    let (stock_before, _, _) = slot(&r, "VM-0001", "A1").await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    wait_dispense_acknowledged(&r, &order).await;
    // The machine loses its link mid-vend; the unit comes out, its result waits on the machine.
    sim.go_offline().await;
    drive_until(&r, 61_000, "dispute", || async {
        openvend::store::orders::by_out_trade_no(&r.app_services.db, &order)
            .await
            .unwrap()
            .unwrap()
            .state
            == OrderState::Dispute
    })
    .await;
    loop {
        if let SimEvent::Dispensed { order_id, .. } = next_business(&mut events).await
            && order_id == order
        {
            break;
        }
    }
    // Back online, the machine sends the result it kept: it settles the dispute.
    sim.go_online().await.unwrap();
    sim.heartbeat(None).await.unwrap();
    wait_for_state(&r, &order, OrderState::Completed).await;
    assert!(refunds(&r, &order).await.is_empty(), "the unit came out");
    let (stock, reserved, _) = slot(&r, "VM-0001", "A1").await;
    assert_eq!(
        (stock, reserved),
        (stock_before - 1, 0),
        "the unit is off the stock and no longer reserved"
    );
    assert!(
        !attention(&r).await["disputes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["out_trade_no"] == order.as_str()),
        "a settled dispute leaves the list"
    );
}

#[tokio::test]
async fn the_dispense_watch_leaves_an_order_the_machine_acknowledged_meanwhile() {
    let r = start().await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| s.vend_time = Duration::from_secs(30)).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    wait_dispense_acknowledged(&r, &order).await;
    let vending = openvend::store::orders::by_out_trade_no(&r.app_services.db, &order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(vending.state, OrderState::Dispensing);
    // What the watch does when it read the command before the ack was stored: its verdict
    // "not delivered" comes too late and must change nothing.
    let settled = openvend::jobs::dispense::refund_undelivered(
        &r.app_services,
        &vending,
        "the machine did not acknowledge the dispense in time",
    )
    .await
    .unwrap();
    assert!(!settled);
    let after = openvend::store::orders::by_out_trade_no(&r.app_services.db, &order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.state, OrderState::Dispensing);
    assert!(refunds(&r, &order).await.is_empty(), "nothing refunded");
    assert_eq!(slot(&r, "VM-0001", "A1").await.1, 1, "still reserved");
    let timeline = openvend::store::orders::timeline(&r.app_services.db, after.id)
        .await
        .unwrap();
    assert!(
        !timeline
            .iter()
            .any(|(_, _, kind, _)| kind == "dispense_undelivered"),
        "{timeline:?}"
    );
}

/// The machine's ack of a dispense is held in memory and its write keeps failing: when the
/// watch's time comes, the ack is still an ack. The order is not refunded; it moves on once
/// the ack is written.
#[tokio::test]
async fn the_dispense_watch_waits_for_an_ack_held_in_memory_whose_write_fails() {
    let r = start().await;
    let db = &r.app_services.db;
    let (sim, mut events) = machine(&r, "VM-0001", |s| s.vend_time = Duration::from_secs(30)).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    // The code's ack written first (the machine sends it just after the code arrives): one
    // left held would fail to write below and stop the dispense's ack from being held.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        r.app_services.device.write_held_acks().await.unwrap();
        let acked = openvend::store::query(
            "SELECT 1 FROM device_commands WHERE order_id = $1 AND kind = 'show_qr' AND acked_at IS NOT NULL",
        )
        .bind(&order)
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        if acked.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the code's ack never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From now on the store refuses every ack event, so held acks cannot be written.
    crate::store::refuse_ack_events(db).await;
    pay(&r, &qr).await;
    // The machine acknowledged; the ack is held and its write fails.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let command_id = loop {
        let held = openvend::store::query(
            "SELECT command_id FROM device_commands WHERE order_id = $1 AND kind = 'dispense'",
        )
        .bind(&order)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .map(|row| row.try_get::<String, _>(0).unwrap())
        .filter(|id| r.app_services.device.ack_held(id));
        if let Some(id) = held {
            break id;
        }
        assert!(tokio::time::Instant::now() < deadline, "no held ack");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(r.app_services.device.write_held_acks().await.is_err());
    // Past the dispense's time and the grace for its ack: the watch decides now.
    r.app_services.clock.advance(
        i64::try_from(r.app_services.device_settings.command_ttl_secs).unwrap() * 1000
            + openvend::device::ledger::ACK_GRACE_MS
            + 1_000,
    );
    let paid = openvend::store::orders::by_out_trade_no(db, &order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paid.state, OrderState::Paid);
    let next = openvend::jobs::dispense::run(&r.app_services, paid.id)
        .await
        .unwrap();
    assert!(matches!(next, openvend::jobs::Next::At(_)), "{next:?}");
    assert!(refunds(&r, &order).await.is_empty(), "nothing refunded");
    assert!(r.app_services.device.ack_held(&command_id));
    // The store takes acks again: the order moves on to wait for its result.
    crate::store::take_ack_events(db).await;
    r.app_services.device.write_held_acks().await.unwrap();
    wait_for_state(&r, &order, OrderState::Dispensing).await;
    assert!(refunds(&r, &order).await.is_empty(), "nothing refunded");
    drop(sim);
}

#[tokio::test]
async fn a_refund_run_that_outlived_another_never_writes_over_its_settled_result() {
    let r = start().await;
    // One refund call is carried out but answered only after 3 s, with a gateway error.
    let (_sim, _events, order) = failed_vend_with_slow_refund(&r, 3_000).await;
    wait_for_state(&r, &order, OrderState::Refunded).await;
    let refund_id = openvend::store::query(
        "SELECT r.id FROM refunds r JOIN orders o ON o.id = r.order_id WHERE o.out_trade_no = $1",
    )
    .bind(&order)
    .fetch_one(&r.app_services.db.pool)
    .await
    .map(|row| openvend::store::get_int(&row, "id").unwrap())
    .unwrap();
    // The refund job is under way; a second run of the same refund (another instance whose
    // lease came first, say) overlaps it. Whichever of the two meets the slow answer ends
    // with "unknown" after the other has settled the refund.
    let _ = openvend::pay::refund::run(&r.app_services, refund_id).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = refunds(&r, &order).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].2, "succeeded", "{all:?}");
    let order_row = openvend::store::orders::by_out_trade_no(&r.app_services.db, &order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order_row.refunded.0, 350, "refunded once");
    assert_eq!(sandbox_trade(&r, &order).await["refunded_fen"], 350);
}

/// F16, a refund Alipay carried out but does not confirm. Alipay first answers no send (an
/// hour-long outage), then its query answers nothing useful: the refund is sent again with
/// the same number, 10 s after it was first left unconfirmed (not after it was written),
/// 10 minutes apart an hour later, instead of every 10 s for ever. After a day it is on the
/// attention list; when the query answers, it settles once and leaves the list.
#[tokio::test]
async fn an_unconfirmed_refund_is_sent_again_less_often_as_it_ages() {
    let r = start().await;
    let query_fails = json!({ "method": "alipay.trade.fastpay.refund.query", "fault": { "kind": "unknown_before" } });
    control(&r, "/control/faults", query_fails.clone()).await;
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.refund", "fault": { "kind": "unknown_after" } }),
    )
    .await;
    let (sim, mut events) = machine(&r, "VM-0001", |s| s.fail_rate = 1.0).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(&r, &qr).await;
    let refund_id = id_once_written(
        &r,
        || {
            openvend::store::query(
                "SELECT r.id FROM refunds r JOIN orders o ON o.id = r.order_id \
                 WHERE o.out_trade_no = $1 AND r.state = 'unknown'",
            )
            .bind(&order)
        },
        "the failed vend's refund, sent",
    )
    .await;
    // An hour of sends carried out but never answered; then Alipay answers again, except
    // the query. Faults are swapped while the job waits out its back-off.
    r.app_services.clock.advance(60 * 60_000);
    r.app_services.jobs_ready.notify_one();
    let attempts_before = job_attempts(&r, refund_id).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while job_attempts(&r, refund_id).await <= attempts_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refund was not sent again after the hour"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // At least 1.5 s before its next send: time to swap the faults.
    next_send_in(&r, refund_id, 1_500).await;
    control_clear_faults(&r).await;
    control(&r, "/control/faults", query_fails).await;
    r.app_services.clock.advance(20 * 60_000);
    r.app_services.jobs_ready.notify_one();
    // The send is a repeat, which the query cannot confirm: the next send waits 10 s.
    let pause = next_send_in(&r, refund_id, 5_000).await;
    assert!((9_000..=10_000).contains(&pause), "{pause} ms");
    // An hour later it is still unconfirmed: the next send waits 10 minutes.
    r.app_services.clock.advance(60 * 60_000);
    r.app_services.jobs_ready.notify_one();
    let pause = next_send_in(&r, refund_id, 60_000).await;
    assert!((599_000..=600_000).contains(&pause), "{pause} ms");
    // A day after it was written it needs a person.
    r.app_services.clock.advance(24 * 60 * 60_000);
    let key = format!("refund:{refund_id}");
    let listed = |list: &Value| {
        list["unconfirmed_refunds"]
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["refund_id"] == refund_id))
    };
    let list = crate::faults::attention(&r).await;
    assert!(listed(&list), "{key} not listed: {list}");
    // The query answers again: at its next send (the job may have run meanwhile and be
    // 10 minutes away), settled, once, and off the list.
    control_clear_faults(&r).await;
    r.app_services.clock.advance(11 * 60_000);
    r.app_services.jobs_ready.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let all = loop {
        let all = refunds(&r, &order).await;
        if all.iter().all(|refund| refund.2 != "unknown") {
            break all;
        }
        assert!(tokio::time::Instant::now() < deadline, "{all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].2, "succeeded", "{all:?}");
    assert_eq!(sandbox_trade(&r, &order).await["refunded_fen"], 350);
    let list = crate::faults::attention(&r).await;
    assert!(!listed(&list), "{list}");
    settle(&r, 0).await;
    invariants::check(&r.app_services.db, &r.sandbox_url, None).await;
}

/// An operator asking again (same key) for a refund Alipay has not confirmed sends it again
/// at once, not after the pause its age has reached.
#[tokio::test]
async fn an_operator_asking_again_for_an_unconfirmed_refund_sends_it_at_once() {
    let r = start().await;
    let (order, completed_id) = completed_sale(&r).await;
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.fastpay.refund.query", "fault": { "kind": "unknown_before" } }),
    )
    .await;
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.refund", "fault": { "kind": "unknown_after" }, "count": 1 }),
    )
    .await;
    assert_eq!(ask_refund(&r, completed_id, 100, "ticket-7").await, 202);
    let refund_id = openvend::store::query("SELECT id FROM refunds WHERE order_id = $1")
        .bind(completed_id)
        .fetch_one(&r.app_services.db.pool)
        .await
        .map(|row| openvend::store::get_int(&row, "id").unwrap())
        .unwrap();
    next_send_in(&r, refund_id, 5_000).await;
    // An hour on, still unconfirmed: its next send is 10 minutes away.
    r.app_services.clock.advance(60 * 60_000);
    r.app_services.jobs_ready.notify_one();
    next_send_in(&r, refund_id, 60_000).await;
    control_clear_faults(&r).await;
    assert_eq!(ask_refund(&r, completed_id, 100, "ticket-7").await, 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = refunds(&r, &order).await;
        if all.iter().any(|refund| refund.2 == "succeeded") {
            assert_eq!(all.len(), 1, "{all:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not sent again at once: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Refunded once. (No invariants check: a goodwill refund of a completed order is not a
    // failed unit's, which is what it compares.)
    assert_eq!(sandbox_trade(&r, &order).await["refunded_fen"], 100);
    let order_row = openvend::store::orders::by_out_trade_no(&r.app_services.db, &order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order_row.refunded.0, 100);
    settle(&r, 0).await;
}

/// A refund made by a send whose answer was lost, then refused on its repeat: Alipay may check
/// the trade before it looks for a repeat, and the full refund closed the trade
/// (`ACQ.TRADE_HAS_CLOSE`). The refusal is not taken at its word: the refund query finds the
/// refund made, and it is settled as such, not listed as refused (which would invite a person
/// to refund the buyer a second time).
#[tokio::test]
async fn a_refund_refused_on_its_repeat_after_a_lost_answer_is_found_made_by_its_query() {
    let r = start().await;
    let (order, completed_id) = completed_sale(&r).await;
    // The sandbox matches its newest rule first: the first send is made and its answer lost,
    // the repeat refused, whenever the repeat comes.
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.refund", "fault": { "kind": "refuse", "sub_code": "ACQ.TRADE_HAS_CLOSE" }, "count": 1 }),
    )
    .await;
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.refund", "fault": { "kind": "unknown_after" }, "count": 1 }),
    )
    .await;
    assert_eq!(ask_refund(&r, completed_id, 350, "ticket-9").await, 202);
    // Sent and made, its answer lost (the repeat may already have run).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while refunds(&r, &order).await.first().map(|f| f.2.as_str()) == Some("requested") {
        assert!(tokio::time::Instant::now() < deadline, "refund never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sandbox_trade(&r, &order).await["refunded_fen"], 350);
    // Its repeat is refused.
    r.app_services.clock.advance(10 * 60_000);
    r.app_services.jobs_ready.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let settled = loop {
        let all = refunds(&r, &order).await;
        if let Some(refund) = all.iter().find(|f| f.2 != "unknown") {
            break refund.2.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "repeat never sent: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(settled, "succeeded");
    // It met the refusal: no rule is left.
    let rules: Value = reqwest::get(format!("{}/control/faults", r.sandbox_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules["gateway"], json!([]), "{rules}");
    let order_row = openvend::store::orders::by_out_trade_no(&r.app_services.db, &order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order_row.refunded.0, 350);
    let list = attention(&r).await;
    assert_eq!(list["failed_refunds"], json!([]), "{list}");
    assert_eq!(sandbox_trade(&r, &order).await["refunded_fen"], 350);
    settle(&r, 0).await;
}

/// A refund whose first send had an unknown result and was not made, then refused on every
/// repeat: the query finds nothing, so it is checked again for ten minutes (a query may not
/// yet see a refund made moments before), and then the refusal is final and the refund listed
/// for a person.
#[tokio::test]
async fn a_refund_refused_on_every_repeat_after_an_unknown_send_fails_after_ten_minutes() {
    let r = start().await;
    let (order, completed_id) = completed_sale(&r).await;
    // Newest rule first: the first send's result is unknown (not made), every repeat refused.
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.refund", "fault": { "kind": "refuse", "sub_code": "ACQ.SELLER_BALANCE_NOT_ENOUGH" } }),
    )
    .await;
    control(
        &r,
        "/control/faults",
        json!({ "method": "alipay.trade.refund", "fault": { "kind": "unknown_before" }, "count": 1 }),
    )
    .await;
    assert_eq!(ask_refund(&r, completed_id, 350, "ticket-10").await, 202);
    let refund_id = id_once_written(
        &r,
        || {
            openvend::store::query(
                "SELECT id FROM refunds WHERE order_id = $1 AND state = 'unknown'",
            )
            .bind(completed_id)
        },
        "unknown refund",
    )
    .await;
    // The first refused repeat: not refunded, checked again about 10 s later.
    r.app_services.clock.advance(60_000);
    r.app_services.jobs_ready.notify_one();
    let pause = next_send_in(&r, refund_id, 0).await;
    assert!((9_000..=10_000).contains(&pause), "{pause}");
    assert_eq!(refunds(&r, &order).await[0].2, "unknown");
    // Ten minutes of refused repeats on: failed, and listed for a person.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = refunds(&r, &order).await[0].2.clone();
        if state == "failed" {
            break;
        }
        assert_eq!(state, "unknown");
        assert!(tokio::time::Instant::now() < deadline, "never failed");
        r.app_services.clock.advance(60_000);
        r.app_services.jobs_ready.notify_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = attention(&r).await;
    assert!(
        list["failed_refunds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["amount_fen"] == 350),
        "{list}"
    );
    assert_eq!(sandbox_trade(&r, &order).await["refunded_fen"], 0);
    control_clear_faults(&r).await;
    settle(&r, 0).await;
}

/// A sale of one A1 on VM-0001, paid and vended: its `out_trade_no` and order id.
async fn completed_sale(r: &Running) -> (String, i64) {
    let (sim, mut events) = machine(r, "VM-0001", |_| {}).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr, _) = expect_qr(&mut events).await;
    pay(r, &qr).await;
    next_business(&mut events).await;
    let completed = wait_for_state(r, &order, OrderState::Completed).await;
    (order, completed.id)
}

/// An operator's refund of `amount_fen` with idempotency key `key`: the answer's status.
async fn ask_refund(r: &Running, order_id: i64, amount_fen: i64, key: &str) -> u16 {
    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    reqwest::Client::new()
        .post(format!("{}/api/v1/orders/{order_id}/refunds", r.http_url))
        .bearer_auth(token.trim())
        .json(&json!({ "amount_fen": amount_fen, "reason": "customer complaint", "idempotency_key": key }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// How many times refund `refund_id`'s job has been taken since its last poll.
async fn job_attempts(r: &Running, refund_id: i64) -> i64 {
    let row = openvend::store::query("SELECT attempts FROM jobs WHERE dedup_key = $1")
        .bind(openvend::pay::refund::job_key(refund_id))
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap();
    openvend::store::get_int(&row, "attempts").unwrap()
}

/// How long until refund `refund_id`'s job runs again, once it waits more than `more_than_ms`
/// (not leased, not a failure's back-off).
async fn next_send_in(r: &Running, refund_id: i64, more_than_ms: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let row = openvend::store::query(
            "SELECT run_at FROM jobs WHERE dedup_key = $1 AND locked_until IS NULL",
        )
        .bind(openvend::pay::refund::job_key(refund_id))
        .fetch_optional(&r.app_services.db.pool)
        .await
        .unwrap();
        let now = r.app_services.now();
        if let Some(row) = row {
            let pause = openvend::store::get_int(&row, "run_at").unwrap() - now;
            if pause > more_than_ms {
                return pause;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refund {refund_id} never waited more than {more_than_ms} ms"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn control_clear_faults(r: &Running) {
    let status = reqwest::Client::new()
        .delete(format!("{}/control/faults", r.sandbox_url))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
}
