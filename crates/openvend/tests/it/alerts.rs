//! The alert webhook against a real HTTP receiver: a machine's fault is pushed once, signed;
//! a receiver that fails gets it again; a fault cleared and reported again is pushed again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::sale::{Running, machine_secret, post_device_event, start_with};

const SECRET: &str = "alert-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

/// What the receiver was sent: the timestamp and signature headers, and the body.
struct Delivery {
    timestamp: String,
    signature: String,
    body: String,
}

/// A webhook receiver on port 0 that answers `status` and hands over what it was sent.
async fn receiver(status: Arc<AtomicU16>) -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            let status = status.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let _ = tx.send(Delivery {
                    timestamp: header("x-openvend-timestamp"),
                    signature: header("x-openvend-signature"),
                    body,
                });
                StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// When the sweep job runs next, and how often it has run.
async fn sweep_job(r: &Running) -> (i64, i64) {
    let row =
        openvend::store::query("SELECT run_at, attempts FROM jobs WHERE dedup_key = 'alerts'")
            .fetch_one(&r.app_services.db.pool)
            .await
            .unwrap();
    (
        openvend::store::get_int(&row, "run_at").unwrap(),
        openvend::store::get_int(&row, "attempts").unwrap(),
    )
}

/// Moves the clock past the next sweep and returns once it has run.
async fn sweep(r: &Running) {
    let before = sweep_job(r).await;
    let ahead = (before.0 - r.app_services.now()).max(0) + 1;
    r.app_services.clock.advance(ahead);
    let deadline = tokio::time::Instant::now() + WAIT;
    while sweep_job(r).await == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the alert sweep did not run"
        );
        r.app_services.jobs_ready.notify_one();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The alerts of one delivery, after checking its signature.
fn alerts_of(d: &Delivery) -> Vec<Value> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, format!("{}.{}", d.timestamp, d.body).as_bytes());
    let expected: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(d.signature, expected, "signed with the webhook secret");
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["sent_at"].to_string(), d.timestamp);
    body["alerts"].as_array().unwrap().clone()
}

async fn report_fault(r: &Running, secret: &str, msg_id: &str) {
    let (status, body) = post_device_event(
        r,
        "VM-0001",
        secret,
        r.app_services.now(),
        msg_id,
        "fault",
        r#"{"code":"MOTOR_A1","detail":"motor current high"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_fault_is_pushed_once_signed_again_after_a_failed_delivery_and_again_when_it_recurs() {
    let status = Arc::new(AtomicU16::new(200));
    let (url, mut deliveries) = receiver(status.clone()).await;
    let r = start_with(|s| {
        s.alerts.webhook_url = Some(url);
        s.alerts.webhook_secret = Some(SECRET.into());
        s.alerts.interval_secs = 5;
    })
    .await;
    let secret = machine_secret(&r, "VM-0001").await;
    // Nothing needs a person yet: the first sweep sends nothing.
    sweep(&r).await;
    assert!(
        deliveries.try_recv().is_err(),
        "an empty list is not pushed"
    );

    // The machine reports a fault while the receiver is failing.
    status.store(500, Ordering::SeqCst);
    report_fault(&r, &secret, "f-1").await;
    sweep(&r).await;
    let failed = deliveries.try_recv().expect("the fault was pushed");
    let alerts = alerts_of(&failed);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["list"], "faulty_machines");
    assert_eq!(alerts[0]["entry"]["code"], "VM-0001");
    let key = alerts[0]["key"].clone();
    let recorded = |r: &Running| {
        let pool = r.app_services.db.pool.clone();
        async move {
            openvend::store::query("SELECT COUNT(*) AS n FROM alerts_sent")
                .fetch_one(&pool)
                .await
                .map(|row| openvend::store::get_int(&row, "n").unwrap())
                .unwrap()
        }
    };
    assert_eq!(recorded(&r).await, 0, "a failed delivery records nothing");

    // The receiver recovers: the same alert comes again, and is recorded.
    status.store(200, Ordering::SeqCst);
    sweep(&r).await;
    let delivered = alerts_of(&deliveries.try_recv().expect("sent again"));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["key"], key);
    assert_eq!(recorded(&r).await, 1);

    // Still faulty at the next look: not pushed twice.
    sweep(&r).await;
    assert!(
        deliveries.try_recv().is_err(),
        "a delivered alert is not sent again"
    );

    // Cleared, then the same fault again: pushed again.
    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    let cleared = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/machines/VM-0001/clear-fault",
            r.http_url
        ))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert!(cleared.status().is_success(), "{}", cleared.status());
    sweep(&r).await;
    assert_eq!(recorded(&r).await, 0, "a cleared fault is forgotten");
    assert!(deliveries.try_recv().is_err());
    report_fault(&r, &secret, "f-2").await;
    sweep(&r).await;
    let again = alerts_of(&deliveries.try_recv().expect("the fault came back"));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["key"], key);
}
