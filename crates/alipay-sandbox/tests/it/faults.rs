//! Gateway faults end to end with the `alipay` client: latency, no answer after performing,
//! unknown before and after, counted and seeded probabilistic rules.

#![allow(clippy::unwrap_used)] // tests may unwrap, helpers included

use std::time::Duration;

use alipay::api::trade::{Precreate, Query};
use alipay::{CallOptions, Client, Outcome, Unknown, Verification};
use alipay_sandbox::config::SandboxConfig;
use serde_json::{Value, json};

use crate::support::{TestApp, TestSandbox, spawn_sandbox, spawn_sandbox_with};

async fn fault(sandbox: &TestSandbox, rule: Value) {
    let (status, body) = sandbox.post_status("/control/faults", rule).await;
    assert_eq!(status, 200, "{body}");
}

async fn trade_exists(sandbox: &TestSandbox, app_id: &str, out_trade_no: &str) -> bool {
    let list = sandbox
        .get(&format!("/control/trades?app_id={app_id}"))
        .await;
    list["trades"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["out_trade_no"] == out_trade_no)
}

fn precreate(no: &str) -> Precreate {
    Precreate::new(no, "4.00".parse().unwrap(), "咖啡")
}

fn gateway_unknown<T: std::fmt::Debug>(outcome: Outcome<T>) -> alipay::AlipayError {
    match outcome {
        Outcome::Unknown(Unknown::Gateway(e)) => e,
        other => panic!("expected an unknown gateway answer, got {other:?}"),
    }
}

/// The same app with a client that gives up after `timeout`.
fn impatient(sandbox: &TestSandbox, app: &TestApp, timeout: Duration) -> Client {
    let mut config = app.client.config().clone();
    config.timeout = timeout;
    let key = alipay::AppPrivateKey::from_text(&app.key_text).unwrap();
    Client::new(
        config,
        key,
        Verification::PublicKey(sandbox.ctx.public_key.clone()),
    )
    .unwrap()
}

#[tokio::test]
async fn no_answer_performs_the_call_and_leaves_the_client_with_an_unknown_outcome() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000201").await;
    fault(
        &sandbox,
        json!({ "app_id": app.app_id, "method": "alipay.trade.precreate",
                "fault": { "kind": "no_answer", "ms": 10_000 }, "count": 1 }),
    )
    .await;
    let client = impatient(&sandbox, &app, Duration::from_millis(300));
    let outcome = client
        .execute(&precreate("f_noanswer"), &CallOptions::default())
        .await;
    assert!(
        matches!(outcome, Outcome::Unknown(Unknown::Timeout)),
        "{outcome:?}"
    );
    assert!(
        trade_exists(&sandbox, &app.app_id, "f_noanswer").await,
        "the sandbox performed the call it did not answer"
    );
    // The rule was for one call: the retry is answered, with the same QR code.
    let again = app
        .client
        .execute(&precreate("f_noanswer"), &CallOptions::default())
        .await
        .success()
        .expect("retry answered");
    assert!(again.qr_code.contains("/qr/"));
}

#[tokio::test]
async fn unknown_before_answers_20000_without_performing_the_call() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000202").await;
    fault(
        &sandbox,
        json!({ "app_id": app.app_id, "method": "alipay.trade.precreate",
                "fault": { "kind": "unknown_before" }, "count": 1 }),
    )
    .await;
    let e = gateway_unknown(
        app.client
            .execute(&precreate("f_before"), &CallOptions::default())
            .await,
    );
    assert_eq!(e.code, "20000");
    assert!(!trade_exists(&sandbox, &app.app_id, "f_before").await);
}

#[tokio::test]
async fn unknown_after_answers_system_error_after_performing_the_call() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000203").await;
    fault(
        &sandbox,
        json!({ "app_id": app.app_id, "method": "alipay.trade.precreate",
                "fault": { "kind": "unknown_after", "answer": "system_error" }, "count": 1 }),
    )
    .await;
    let e = gateway_unknown(
        app.client
            .execute(&precreate("f_after"), &CallOptions::default())
            .await,
    );
    assert_eq!(e.sub_code(), "ACQ.SYSTEM_ERROR");
    assert!(trade_exists(&sandbox, &app.app_id, "f_after").await);
}

#[tokio::test]
async fn unknown_after_with_20000_also_performs_the_call() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000204").await;
    fault(
        &sandbox,
        json!({ "method": "alipay.trade.precreate", "fault": { "kind": "unknown_after", "answer": "20000" } }),
    )
    .await;
    let e = gateway_unknown(
        app.client
            .execute(&precreate("f_after2"), &CallOptions::default())
            .await,
    );
    assert_eq!(e.code, "20000");
    assert!(trade_exists(&sandbox, &app.app_id, "f_after2").await);
}

#[tokio::test]
async fn refuse_answers_the_business_error_without_performing_the_call() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000209").await;
    fault(
        &sandbox,
        json!({ "app_id": app.app_id, "method": "alipay.trade.precreate",
                "fault": { "kind": "refuse", "sub_code": "ACQ.TRADE_HAS_CLOSE" }, "count": 1 }),
    )
    .await;
    match app
        .client
        .execute(&precreate("f_refused"), &CallOptions::default())
        .await
    {
        Outcome::Failure(alipay::Failure::Alipay(e)) => {
            assert_eq!(
                (e.code.as_str(), e.sub_code()),
                ("40004", "ACQ.TRADE_HAS_CLOSE")
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!trade_exists(&sandbox, &app.app_id, "f_refused").await);
    // Counted: the next call goes through.
    assert!(matches!(
        app.client
            .execute(&precreate("f_refused"), &CallOptions::default())
            .await,
        Outcome::Success(_)
    ));
    let (status, body) = sandbox
        .post_status(
            "/control/faults",
            json!({ "fault": { "kind": "refuse", "sub_code": "" } }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn answer_gives_its_fields_without_performing_the_call() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000211").await;
    assert!(matches!(
        app.client
            .execute(&precreate("f_answered"), &CallOptions::default())
            .await,
        Outcome::Success(_)
    ));
    fault(
        &sandbox,
        json!({ "app_id": app.app_id, "method": "alipay.trade.cancel",
                "fault": { "kind": "answer", "fields": { "retry_flag": "N" } }, "count": 1 }),
    )
    .await;
    let cancel = alipay::api::trade::Cancel::by_out_trade_no("f_answered");
    match app.client.execute(&cancel, &CallOptions::default()).await {
        Outcome::Success(c) => {
            assert_eq!(c.retry_flag, Some(false));
            assert_eq!(c.action, None, "no action named");
        }
        other => panic!("expected the scripted answer, got {other:?}"),
    }
    // Not performed: the trade is still open, and the next cancel closes it.
    let trades = sandbox.get("/control/trades").await;
    let trade = trades["trades"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["out_trade_no"] == "f_answered")
        .unwrap()
        .clone();
    assert_eq!(trade["state"], "PRECREATED", "{trade}");
    match app.client.execute(&cancel, &CallOptions::default()).await {
        Outcome::Success(c) => {
            assert_eq!(c.action, Some(alipay::api::trade::CancelAction::Close))
        }
        other => panic!("expected a close, got {other:?}"),
    }
    let (status, body) = sandbox
        .post_status(
            "/control/faults",
            json!({ "fault": { "kind": "answer", "fields": { "code": "40004" } } }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn latency_delays_a_normal_answer() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000205").await;
    fault(
        &sandbox,
        json!({ "app_id": app.app_id, "fault": { "kind": "latency", "ms": 100 } }),
    )
    .await;
    let r = app
        .client
        .execute(&precreate("f_latency"), &CallOptions::default())
        .await;
    assert!(r.is_success(), "{r:?}");
    let rules = sandbox.get("/control/faults").await;
    assert_eq!(
        rules["gateway"][0]["count"],
        Value::Null,
        "an uncounted rule stays"
    );
}

#[tokio::test]
async fn a_counted_rule_applies_to_its_count_of_calls_and_only_its_method() {
    let sandbox = spawn_sandbox().await;
    let app = sandbox.app("2021000000000206").await;
    fault(
        &sandbox,
        json!({ "method": "alipay.trade.query", "fault": { "kind": "unknown_before" }, "count": 2 }),
    )
    .await;
    let q = Query::by_out_trade_no("none");
    for _ in 0..2 {
        let r = app.client.execute(&q, &CallOptions::default()).await;
        assert!(r.is_unknown(), "{r:?}");
    }
    let r = app.client.execute(&q, &CallOptions::default()).await;
    assert_eq!(r.failure_sub_code(), Some("ACQ.TRADE_NOT_EXIST"));
    // Precreate was never affected.
    assert!(
        app.client
            .execute(&precreate("f_count"), &CallOptions::default())
            .await
            .is_success()
    );
}

async fn chaos_run(seed: u64) -> Vec<bool> {
    let sandbox = spawn_sandbox_with(SandboxConfig {
        seed,
        ..SandboxConfig::default()
    })
    .await;
    let app = sandbox.app("2021000000000207").await;
    fault(
        &sandbox,
        json!({ "method": "alipay.trade.query", "fault": { "kind": "unknown_before" }, "probability": 0.5 }),
    )
    .await;
    let q = Query::by_out_trade_no("none");
    let mut seen = Vec::new();
    for _ in 0..24 {
        seen.push(
            app.client
                .execute(&q, &CallOptions::default())
                .await
                .is_unknown(),
        );
    }
    seen
}

#[tokio::test]
async fn probabilistic_rules_are_the_same_for_the_same_seed() {
    let a = chaos_run(20_240_601).await;
    let b = chaos_run(20_240_601).await;
    assert_eq!(a, b, "same seed, same faults");
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
    let c = chaos_run(7).await;
    assert_ne!(a, c, "another seed gives another sequence");
}
