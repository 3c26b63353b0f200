//! Notifications: Alipay's retry schedule, the same notify_id, verification with the `alipay`
//! crate, the control API, and the notification faults.

#![allow(clippy::unwrap_used)] // tests may unwrap, helpers included

use alipay::api::trade::Precreate;
use alipay::notify::Notification;
use alipay::{CallOptions, TradeStatus};
use alipay_sandbox::config::{DEFAULT_NOTIFY_SCHEDULE, SandboxConfig};
use serde_json::{Value, json};

use crate::receiver::{Receiver, down_url, notifications, wait_bodies, wait_notification};
use crate::support::{TestApp, TestSandbox, spawn_sandbox, spawn_sandbox_with};

/// Precreates a trade and pays it as `buyer` through the control API; returns its trade_no.
pub async fn pay_new_trade(sandbox: &TestSandbox, app: &TestApp, out_trade_no: &str) -> String {
    let buyer = sandbox.buyer("100.00").await;
    let pre = app
        .client
        .execute(
            &Precreate::new(out_trade_no, "2.50".parse().unwrap(), "矿泉水"),
            &CallOptions::default(),
        )
        .await
        .success()
        .expect("precreate succeeds");
    let paid = sandbox
        .post(
            "/control/qr/pay",
            json!({ "qr_code": pre.qr_code, "buyer_id": buyer }),
        )
        .await;
    assert_eq!(paid["trade_status"], "TRADE_SUCCESS", "{paid}");
    paid["trade_no"].as_str().unwrap().to_owned()
}

fn fast(schedule: &[u64]) -> SandboxConfig {
    SandboxConfig {
        notify_schedule_secs: schedule.to_vec(),
        time_factor: 600.0,
        ..SandboxConfig::default()
    }
}

async fn app_notifying(sandbox: &TestSandbox, app_id: &str, url: &str) -> TestApp {
    sandbox.app_with(app_id, json!({ "notify_url": url })).await
}

fn verify(sandbox: &TestSandbox, body: &str) -> alipay::notify::TradeNotification {
    match alipay::notify::parse(body.as_bytes(), &sandbox.ctx.public_key) {
        Ok(Notification::Trade(t)) => t,
        other => panic!("not a verified trade notification: {other:?}"),
    }
}

#[tokio::test]
async fn a_notification_is_retried_until_the_answer_is_success_with_the_same_notify_id() {
    let sandbox = spawn_sandbox_with(fast(&DEFAULT_NOTIFY_SCHEDULE)).await;
    let receiver = Receiver::start(&["fail", "fail"], "success").await;
    let app = app_notifying(&sandbox, "2021000000000101", &receiver.url).await;
    let trade_no = pay_new_trade(&sandbox, &app, "n_retry").await;

    let n = wait_notification(&sandbox, &app.app_id, "acknowledgement", |n| {
        n["acknowledged"] == true
    })
    .await;

    assert_eq!(n["attempts"], 3);
    assert_eq!(n["next_attempt_at"], Value::Null);
    let deliveries = n["deliveries"].as_array().unwrap();
    let answers: Vec<&str> = deliveries
        .iter()
        .map(|d| d["answer"].as_str().unwrap())
        .collect();
    assert_eq!(answers, ["fail", "fail", "success"]);
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 3, "exactly three attempts reach the merchant");
    let parsed: Vec<_> = bodies.iter().map(|b| verify(&sandbox, b)).collect();
    for t in &parsed {
        assert_eq!(
            t.notify_id, parsed[0].notify_id,
            "same notify_id on every retry"
        );
        assert_eq!(t.trade_no, trade_no);
        assert_eq!(t.out_trade_no, "n_retry");
        assert_eq!(t.trade_status, TradeStatus::TradeSuccess);
        assert_eq!(t.total_amount.fen(), 250);
        assert_eq!(t.app_id, app.app_id);
    }
    assert_eq!(n["notify_id"], parsed[0].notify_id.as_str());
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_every_attempt_of_the_schedule_on_the_sandbox_clock() {
    // Real-time factor 1: only advancing the clock makes retries due.
    let sandbox = spawn_sandbox_with(SandboxConfig::default()).await;
    let url = down_url().await;
    let app = app_notifying(&sandbox, "2021000000000102", &url).await;
    pay_new_trade(&sandbox, &app, "n_down").await;

    let schedule = DEFAULT_NOTIFY_SCHEDULE;
    for k in 1..schedule.len() {
        let n = wait_notification(&sandbox, &app.app_id, "the next attempt", |n| {
            n["attempts"] == k
        })
        .await;
        let deliveries = n["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), k);
        let last = &deliveries[k - 1];
        assert_eq!(last["status"], Value::Null, "nobody answered");
        assert_eq!(last["attempt"], k - 1);
        let gap = n["next_attempt_at"].as_i64().unwrap() - last["at"].as_i64().unwrap();
        assert!(
            gap >= schedule[k] as i64 * 1000,
            "attempt {k} is due {}s after the previous one, not before",
            schedule[k]
        );
        sandbox
            .post(
                "/control/clock/advance",
                json!({ "seconds": schedule[k] + 1 }),
            )
            .await;
    }
    let n = wait_notification(&sandbox, &app.app_id, "the last attempt", |n| {
        n["attempts"] == schedule.len()
    })
    .await;
    assert_eq!(
        n["next_attempt_at"],
        Value::Null,
        "no attempt after the 8th"
    );
    assert_eq!(n["acknowledged"], false);
    assert_eq!(n["max_attempts"], schedule.len());
    let at: Vec<i64> = n["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["at"].as_i64().unwrap())
        .collect();
    for k in 1..at.len() {
        assert!(at[k] - at[k - 1] >= schedule[k] as i64 * 1000);
    }
}

#[tokio::test]
async fn with_a_time_factor_a_short_schedule_runs_out_by_itself() {
    let sandbox = spawn_sandbox_with(fast(&[0, 60, 120, 60])).await;
    let url = down_url().await;
    let app = app_notifying(&sandbox, "2021000000000103", &url).await;
    pay_new_trade(&sandbox, &app, "n_fast").await;
    let n = wait_notification(&sandbox, &app.app_id, "four attempts", |n| {
        n["attempts"] == 4 && n["next_attempt_at"].is_null()
    })
    .await;
    assert_eq!(n["deliveries"].as_array().unwrap().len(), 4);
    assert_eq!(n["acknowledged"], false);
}

#[tokio::test]
async fn a_duplicate_fault_delivers_each_attempt_several_times() {
    let sandbox = spawn_sandbox_with(SandboxConfig::default()).await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&sandbox, "2021000000000104", &receiver.url).await;
    sandbox
        .post(
            "/control/faults",
            json!({ "app_id": app.app_id, "notification": { "kind": "duplicate", "times": 20 } }),
        )
        .await;
    pay_new_trade(&sandbox, &app, "n_dup").await;
    let n = wait_notification(&sandbox, &app.app_id, "acknowledgement", |n| {
        n["acknowledged"] == true
    })
    .await;
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 20);
    let ids: std::collections::HashSet<String> = bodies
        .iter()
        .map(|b| verify(&sandbox, b).notify_id)
        .collect();
    assert_eq!(ids.len(), 1, "all copies carry the same notify_id");
    assert_eq!(n["attempts"], 1, "the copies are one attempt");
    let deliveries = n["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 20);
    assert!(deliveries.iter().all(|d| d["fault"] == "duplicate"));
}

#[tokio::test]
async fn a_drop_fault_loses_the_first_attempts_then_the_schedule_delivers() {
    let sandbox = spawn_sandbox_with(fast(&DEFAULT_NOTIFY_SCHEDULE)).await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&sandbox, "2021000000000105", &receiver.url).await;
    sandbox
        .post(
            "/control/faults",
            json!({ "app_id": app.app_id, "notification": { "kind": "drop", "first": 2 } }),
        )
        .await;
    pay_new_trade(&sandbox, &app, "n_drop2").await;
    let n = wait_notification(&sandbox, &app.app_id, "acknowledgement", |n| {
        n["acknowledged"] == true
    })
    .await;
    assert_eq!(n["attempts"], 3);
    let faults: Vec<Value> = n["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["fault"].clone())
        .collect();
    assert_eq!(faults, [json!("drop"), json!("drop"), Value::Null]);
    assert_eq!(
        receiver.bodies().len(),
        1,
        "dropped attempts are never sent"
    );
}

#[tokio::test]
async fn a_drop_everything_fault_never_delivers_and_stops_with_the_schedule() {
    let sandbox = spawn_sandbox_with(fast(&[0, 60, 60])).await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&sandbox, "2021000000000106", &receiver.url).await;
    sandbox
        .post(
            "/control/faults",
            json!({ "app_id": app.app_id, "notification": { "kind": "drop" } }),
        )
        .await;
    pay_new_trade(&sandbox, &app, "n_dropall").await;
    let n = wait_notification(&sandbox, &app.app_id, "the schedule to run out", |n| {
        n["attempts"] == 3 && n["next_attempt_at"].is_null()
    })
    .await;
    assert_eq!(n["acknowledged"], false);
    assert!(receiver.bodies().is_empty());
}

#[tokio::test]
async fn a_drop_rule_for_another_app_does_not_touch_this_one() {
    let sandbox = spawn_sandbox_with(SandboxConfig::default()).await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&sandbox, "2021000000000107", &receiver.url).await;
    sandbox
        .post(
            "/control/faults",
            json!({ "app_id": "2021000000009999", "notification": { "kind": "drop" } }),
        )
        .await;
    pay_new_trade(&sandbox, &app, "n_other").await;
    wait_notification(&sandbox, &app.app_id, "acknowledgement", |n| {
        n["acknowledged"] == true
    })
    .await;
    assert_eq!(receiver.bodies().len(), 1);
}

#[tokio::test]
async fn an_out_of_order_fault_delivers_a_batch_newest_first() {
    let sandbox = spawn_sandbox_with(SandboxConfig::default()).await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&sandbox, "2021000000000108", &receiver.url).await;
    sandbox
        .post(
            "/control/faults",
            json!({ "app_id": app.app_id, "notification": { "kind": "out_of_order", "batch": 3 } }),
        )
        .await;
    for no in ["n_ooo_1", "n_ooo_2", "n_ooo_3"] {
        pay_new_trade(&sandbox, &app, no).await;
    }
    let bodies = wait_bodies(&receiver, 3).await;
    let order: Vec<String> = bodies
        .iter()
        .map(|b| verify(&sandbox, b).out_trade_no)
        .collect();
    assert_eq!(order, ["n_ooo_3", "n_ooo_2", "n_ooo_1"]);
}

#[tokio::test]
async fn a_bad_signature_fault_sends_notifications_that_do_not_verify() {
    let sandbox = spawn_sandbox_with(fast(&[0, 60])).await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&sandbox, "2021000000000109", &receiver.url).await;
    sandbox
        .post(
            "/control/faults",
            json!({ "app_id": app.app_id, "notification": { "kind": "bad_signature" }, "count": 1 }),
        )
        .await;
    pay_new_trade(&sandbox, &app, "n_badsig").await;
    let bodies = wait_bodies(&receiver, 1).await;
    assert!(bodies[0].contains("sign="));
    assert!(
        alipay::notify::parse(bodies[0].as_bytes(), &sandbox.ctx.public_key).is_err(),
        "a tampered signature must not verify"
    );
    // The rule was for one notification: the next one is signed properly.
    pay_new_trade(&sandbox, &app, "n_goodsig").await;
    let bodies = wait_bodies(&receiver, 2).await;
    assert_eq!(verify(&sandbox, &bodies[1]).out_trade_no, "n_goodsig");
}

#[tokio::test]
async fn a_delay_fault_holds_the_attempt_and_marks_it() {
    let sandbox = spawn_sandbox_with(SandboxConfig::default()).await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&sandbox, "2021000000000110", &receiver.url).await;
    sandbox
        .post(
            "/control/faults",
            json!({ "app_id": app.app_id, "notification": { "kind": "delay", "ms": 200 } }),
        )
        .await;
    pay_new_trade(&sandbox, &app, "n_delay").await;
    let n = wait_notification(&sandbox, &app.app_id, "acknowledgement", |n| {
        n["acknowledged"] == true
    })
    .await;
    assert_eq!(n["attempts"], 1, "a held attempt is not started twice");
    assert_eq!(n["deliveries"][0]["fault"], "delay");
    assert_eq!(receiver.bodies().len(), 1);
}

#[tokio::test]
async fn a_resend_delivers_the_same_notification_again() {
    let sandbox = spawn_sandbox_with(SandboxConfig::default()).await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&sandbox, "2021000000000111", &receiver.url).await;
    pay_new_trade(&sandbox, &app, "n_resend").await;
    let n = wait_notification(&sandbox, &app.app_id, "acknowledgement", |n| {
        n["acknowledged"] == true
    })
    .await;
    let id = n["notify_id"].as_str().unwrap().to_owned();
    let (status, _) = sandbox
        .post_status(&format!("/control/notifications/{id}/resend"), json!({}))
        .await;
    assert_eq!(status, 200);
    let bodies = wait_bodies(&receiver, 2).await;
    assert_eq!(verify(&sandbox, &bodies[1]).notify_id, id);
    let n = wait_notification(&sandbox, &app.app_id, "the resend recorded", |n| {
        n["attempts"] == 2
    })
    .await;
    assert_eq!(n["acknowledged"], true);
    let (status, _) = sandbox
        .post_status("/control/notifications/nope/resend", json!({}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn only_the_payment_is_notified_by_default_and_the_list_filters_by_trade() {
    let sandbox = spawn_sandbox_with(SandboxConfig::default()).await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&sandbox, "2021000000000112", &receiver.url).await;
    // An unpaid trade: nothing.
    app.client
        .execute(
            &Precreate::new("n_unpaid", "1.00".parse().unwrap(), "水"),
            &CallOptions::default(),
        )
        .await
        .success()
        .unwrap();
    let trade_no = pay_new_trade(&sandbox, &app, "n_paid").await;
    wait_notification(&sandbox, &app.app_id, "acknowledgement", |n| {
        n["acknowledged"] == true
    })
    .await;
    assert_eq!(notifications(&sandbox, &app.app_id).await.len(), 1);
    let by_trade = sandbox
        .get(&format!("/control/notifications?trade_no={trade_no}"))
        .await;
    assert_eq!(by_trade["notifications"].as_array().unwrap().len(), 1);
    let none = sandbox
        .get("/control/notifications?out_trade_no=n_unpaid")
        .await;
    assert!(none["notifications"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_fault_rule_is_refused_and_gateway_rules_keep_their_shape() {
    let sandbox = spawn_sandbox_with(SandboxConfig::default()).await;
    let (status, body) = sandbox
        .post_status(
            "/control/faults",
            json!({ "notification": { "kind": "explode" } }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = sandbox
        .post_status(
            "/control/faults",
            json!({ "app_id": "1", "method": "alipay.trade.query", "fault": { "kind": "latency", "ms": 1 }, "count": 2 }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["gateway"][0]["fault"]["kind"], "latency");
    assert_eq!(body["gateway"][0]["count"], 2);
    let resp = sandbox
        .http
        .delete(format!("{}/control/faults", sandbox.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let all = sandbox.get("/control/faults").await;
    assert!(all["gateway"].as_array().unwrap().is_empty());
}

/// A precreate's `timeout_express` counts from the scan (see `closed_after_scan`); until then
/// its code stays payable, up to `qr_code_timeout_express` or 2 hours from the call.
#[tokio::test]
async fn a_precreates_code_stays_payable_until_its_own_timeout() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000119").await;
    let buyer = sandbox.buyer("100.00").await;
    let code = |no: &'static str, qr_minutes: Option<u32>| {
        let mut p = Precreate::new(no, "1.00".parse().unwrap(), "水").timeout_express("5m");
        if let Some(m) = qr_minutes {
            p = p.qr_code_timeout_express(format!("{m}m"));
        }
        p
    };
    let open = app
        .client
        .execute(&code("n_qr_open", None), &CallOptions::default())
        .await
        .success()
        .unwrap();
    let limited = app
        .client
        .execute(&code("n_qr_limited", Some(5)), &CallOptions::default())
        .await
        .success()
        .unwrap();
    sandbox
        .post("/control/clock/advance", json!({ "seconds": 360 }))
        .await;
    let pay = |qr: String| {
        sandbox.post_status(
            "/control/qr/pay",
            json!({ "qr_code": qr, "buyer_id": buyer.clone() }),
        )
    };
    let (status, body) = pay(limited.qr_code).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("ACQ.TRADE_HAS_CLOSE"), "{body}");
    let (status, body) = pay(open.qr_code).await;
    assert_eq!(
        (status, body["trade_status"].clone()),
        (200, json!("TRADE_SUCCESS")),
        "{body}"
    );
}

async fn closed_after_scan(sandbox: &TestSandbox, app: &TestApp, no: &str) {
    let pre = app
        .client
        .execute(
            &Precreate::new(no, "1.00".parse().unwrap(), "水").timeout_express("5m"),
            &CallOptions::default(),
        )
        .await
        .success()
        .unwrap();
    // The buyer scans (opens the QR page) but never pays.
    let scan = reqwest::get(&pre.qr_code).await.unwrap();
    assert_eq!(scan.status().as_u16(), 200);
    sandbox
        .post("/control/clock/advance", json!({ "seconds": 360 }))
        .await;
    let q = app
        .client
        .execute(
            &alipay::api::trade::Query::by_out_trade_no(no),
            &CallOptions::default(),
        )
        .await
        .success()
        .unwrap();
    assert_eq!(q.trade_status, TradeStatus::TradeClosed);
}

#[tokio::test]
async fn a_closed_trade_is_notified_only_when_the_policy_says_so() {
    let quiet = spawn_sandbox_with(SandboxConfig::default()).await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&quiet, "2021000000000113", &receiver.url).await;
    closed_after_scan(&quiet, &app, "n_close_quiet").await;
    assert!(
        notifications(&quiet, &app.app_id).await.is_empty(),
        "Alipay's default: no TRADE_CLOSED notification"
    );

    let loud = spawn_sandbox_with(SandboxConfig {
        notify: alipay_sandbox::config::NotifyPolicy {
            trade_closed: true,
            ..Default::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let app = app_notifying(&loud, "2021000000000114", &receiver.url).await;
    closed_after_scan(&loud, &app, "n_close_loud").await;
    let bodies = wait_bodies(&receiver, 1).await;
    let t = verify(&loud, &bodies[0]);
    assert_eq!(t.trade_status, TradeStatus::TradeClosed);
    assert_eq!(t.out_trade_no, "n_close_loud");
    assert!(t.gmt_close.is_some());
}

async fn dropped_with_seed(seed: u64) -> Vec<String> {
    let sandbox = spawn_sandbox_with(SandboxConfig {
        seed,
        ..SandboxConfig::default()
    })
    .await;
    let receiver = Receiver::ok().await;
    let app = app_notifying(&sandbox, "2021000000000115", &receiver.url).await;
    sandbox
        .post(
            "/control/faults",
            json!({ "app_id": app.app_id, "notification": { "kind": "drop" }, "probability": 0.5 }),
        )
        .await;
    let mut dropped = Vec::new();
    for i in 0..12 {
        let no = format!("n_chaos_{i}");
        pay_new_trade(&sandbox, &app, &no).await;
        // Each notification's fate is decided at its first attempt; wait for it.
        let n = crate::receiver::eventually("the first attempt", || async {
            let list = sandbox
                .get(&format!("/control/notifications?out_trade_no={no}"))
                .await;
            let n = list["notifications"][0].clone();
            (n["attempts"].as_u64().unwrap_or(0) >= 1).then_some(n)
        })
        .await;
        if n["deliveries"][0]["fault"] == "drop" {
            dropped.push(no);
        }
    }
    dropped
}

#[tokio::test]
async fn probabilistic_notification_faults_repeat_with_the_seed() {
    let a = dropped_with_seed(99).await;
    let b = dropped_with_seed(99).await;
    assert_eq!(a, b, "same seed, same notifications dropped");
    assert!(!a.is_empty() && a.len() < 12, "{a:?}");
}
