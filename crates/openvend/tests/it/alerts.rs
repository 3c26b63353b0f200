//! The alert webhook against a real HTTP receiver: a machine's fault is pushed once, signed;
//! a receiver that fails gets it again; a fault cleared and reported again is pushed again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
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
    scripted_receiver(status, Arc::default()).await
}

/// A receiver that first gives the answers of `script`, in order, then `status`.
async fn scripted_receiver(
    status: Arc<AtomicU16>,
    script: Arc<Mutex<VecDeque<u16>>>,
) -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            let status = status.clone();
            let script = script.clone();
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
                let scripted = script.lock().unwrap().pop_front();
                StatusCode::from_u16(scripted.unwrap_or_else(|| status.load(Ordering::SeqCst)))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// Polls `probe` every 10 ms until it gives a value; fails with `what` after [`WAIT`].
async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When the sweep job runs next, once no instance is running it.
async fn next_sweep(r: &Running) -> i64 {
    until("the alert sweep is stuck", async || {
        openvend::store::query(
            "SELECT run_at FROM jobs WHERE dedup_key = 'alerts' AND locked_until IS NULL",
        )
        .fetch_optional(&r.app_services.db.pool)
        .await
        .unwrap()
        .map(|row| openvend::store::get_int(&row, "run_at").unwrap())
    })
    .await
}

/// Moves the clock past the next sweep and returns once it has run to its end.
async fn sweep(r: &Running) {
    let before = next_sweep(r).await;
    r.app_services
        .clock
        .advance((before - r.app_services.now()).max(0) + 1);
    until("the alert sweep did not run", async || {
        r.app_services.jobs_ready.notify_one();
        (next_sweep(r).await != before).then_some(())
    })
    .await;
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
    // A fault is applied by a job after the event is stored: wait until the machine shows it.
    until("the fault was never applied", async || {
        let faulty = openvend::store::query(
            "SELECT COUNT(*) AS n FROM machines WHERE code = 'VM-0001' AND fault IS NOT NULL",
        )
        .fetch_one(&r.app_services.db.pool)
        .await
        .map(|row| openvend::store::get_int(&row, "n").unwrap())
        .unwrap();
        r.app_services.jobs_ready.notify_one();
        (faulty == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_fault_is_pushed_once_signed_again_after_a_failed_delivery_and_again_when_it_recurs() {
    let status = Arc::new(AtomicU16::new(200));
    let (url, mut deliveries) = receiver(status.clone()).await;
    let r = start_with(|s| {
        s.alerts.webhook_url = Some(url.into());
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

#[tokio::test]
async fn many_alerts_go_in_posts_of_fifty_each_recorded_when_it_is_delivered() {
    let script = Arc::new(Mutex::new(VecDeque::new()));
    let (url, mut deliveries) =
        scripted_receiver(Arc::new(AtomicU16::new(200)), script.clone()).await;
    let r = start_with(|s| {
        s.alerts.webhook_url = Some(url.into());
        s.alerts.webhook_secret = Some(SECRET.into());
    })
    .await;
    sweep(&r).await;
    while deliveries.try_recv().is_ok() {}
    // 60 machines at fault, added through the operator API.
    let token = std::fs::read_to_string(r.data_dir.join("api_token")).unwrap();
    let http = reqwest::Client::new();
    for n in 0..60 {
        let added = http
            .post(format!("{}/api/v1/machines", r.http_url))
            .bearer_auth(token.trim())
            .json(&serde_json::json!({
                "code": format!("AL-{n:03}"), "kind": "vending", "terminal_id": format!("T{n}"),
            }))
            .send()
            .await
            .unwrap();
        assert!(added.status().is_success(), "{}", added.status());
    }
    openvend::store::query("UPDATE machines SET fault = 'JAM: test' WHERE code LIKE 'AL-%'")
        .execute(&r.app_services.db.pool)
        .await
        .unwrap();
    let recorded = || async {
        openvend::store::query(
            "SELECT COUNT(*) AS n FROM alerts_sent WHERE list = 'faulty_machines'",
        )
        .fetch_one(&r.app_services.db.pool)
        .await
        .map(|row| openvend::store::get_int(&row, "n").unwrap())
        .unwrap()
    };
    let keys = |alerts: &[Value]| {
        let mut k: Vec<String> = alerts.iter().map(|a| a["key"].to_string()).collect();
        k.sort();
        k
    };

    // The receiver refuses the first POST of 50 as such (413): the other 10 still go.
    script.lock().unwrap().push_back(413);
    sweep(&r).await;
    let refused = alerts_of(&deliveries.try_recv().expect("a first POST"));
    let taken = alerts_of(&deliveries.try_recv().expect("a second POST"));
    assert!(deliveries.try_recv().is_err(), "two POSTs");
    assert_eq!((refused.len(), taken.len()), (50, 10));
    assert_eq!(recorded().await, 10);

    // The receiver is down (503): the look stops at the first POST, and records nothing.
    script.lock().unwrap().push_back(503);
    sweep(&r).await;
    let down = alerts_of(&deliveries.try_recv().expect("the 50 again"));
    assert!(
        deliveries.try_recv().is_err(),
        "no POST after the receiver failed"
    );
    assert_eq!(keys(&down), keys(&refused));
    assert_eq!(recorded().await, 10);

    // Back: the 50 go, and only they.
    sweep(&r).await;
    let again = alerts_of(&deliveries.try_recv().expect("the rest again"));
    assert!(deliveries.try_recv().is_err());
    assert_eq!(keys(&again), keys(&refused));
    assert_eq!(recorded().await, 60);
}

/// An instance without a webhook (a deployment part-way through a change of settings) that
/// takes the shared job sends nothing, keeps the job at its interval and keeps the record
/// current: what left the lists is forgotten, what is on them stays recorded.
#[tokio::test]
async fn an_instance_without_the_webhook_keeps_the_job_and_forgets_what_left() {
    let r = start_with(|s| s.alerts.interval_secs = 7).await;
    let secret = machine_secret(&r, "VM-0001").await;
    report_fault(&r, &secret, "nw-1").await;
    let pool = &r.app_services.db.pool;
    let fault_key: String =
        openvend::store::query("SELECT code || ':' || fault FROM machines WHERE code = 'VM-0001'")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
    for (list, key) in [
        ("faulty_machines", fault_key.as_str()),
        ("disputes", "order:999"),
    ] {
        openvend::store::query(
            "INSERT INTO alerts_sent (list, entry_key, sent_at) VALUES ($1, $2, 1)",
        )
        .bind(list)
        .bind(key)
        .execute(pool)
        .await
        .unwrap();
    }
    // Queued by an instance with the webhook.
    openvend::alerts::schedule(&r.app_services.db, r.app_services.now())
        .await
        .unwrap();
    sweep(&r).await;
    let kept: Vec<String> = crate::sale::strings(
        &r,
        openvend::store::query("SELECT list || ' ' || entry_key FROM alerts_sent"),
    )
    .await;
    assert_eq!(kept, vec![format!("faulty_machines {fault_key}")]);
    // Due one interval after the look (not the minute an earlier version waited).
    let (due, now) = (next_sweep(&r).await, r.app_services.now());
    assert!(
        due > now && due <= now + 7_000,
        "due {} ms after now",
        due - now
    );
}
