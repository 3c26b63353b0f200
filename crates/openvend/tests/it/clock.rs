//! F21 of reliability.md §3.2, clock skew: a machine whose clock is more than 300 s off is
//! refused, told the server's time (`sync_time` on MQTT, `server_ts` on HTTP), and its sale
//! then goes through; a server 5 s ahead of or behind Alipay still sells and still closes
//! unpaid orders at their timeout.

use openvend::domain::order::OrderState;
use openvend::sim::SimEvent;
use serde_json::{Value, json};

use crate::flow::{expect_qr, log_vend, machine, next_with_clock, pay, settle, slot};
use crate::invariants::{self, VendLog};
use crate::sale::{Running, control, machine_secret, start, wait_for_state};

/// Buys one A1 on VM-0001, pays and waits for the goods; returns what came out.
async fn sell_one(r: &Running, skew_ms: i64) -> VendLog {
    let (sim, mut events) = machine(r, "VM-0001", |s| s.clock_skew_ms = skew_ms).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    if skew_ms.abs() > 300_000 {
        // The request was refused for its clock and answered with the time; the machine
        // set its clock and sent the request again.
        match next_with_clock(&mut events).await {
            SimEvent::ClockSet { skew_ms: now_skew } => assert!(
                now_skew.abs() < 5_000,
                "the machine's clock is now the server's (off by {now_skew} ms)"
            ),
            other => panic!("expected the clock to be set, got {other:?}"),
        }
    } else if skew_ms.abs() > openvend::device::ledger::DRIFT_SYNC_MS {
        // Accepted, and answered with the time as well (a sync_time may also have answered
        // the machine's first heartbeat already).
        let set = match next_with_clock(&mut events).await {
            SimEvent::ClockSet { skew_ms: now_skew } => now_skew,
            other => panic!("expected the clock to be set, got {other:?}"),
        };
        assert!(set.abs() < 5_000, "clock now off by {set} ms");
    }
    let (order, qr, _) = loop {
        match next_with_clock(&mut events).await {
            // A second correction (one answered the heartbeat, one the request) is harmless.
            SimEvent::ClockSet { .. } => continue,
            SimEvent::ShowQr {
                order_id,
                qr_code,
                amount_fen,
            } => break (order_id, qr_code, amount_fen),
            other => panic!("expected a QR code, got {other:?}"),
        }
    };
    pay(r, &qr).await;
    let mut log = VendLog::new();
    let ev = next_with_clock(&mut events).await;
    log_vend(&mut log, &ev);
    assert!(
        matches!(ev, SimEvent::Dispensed { ref order_id, .. } if *order_id == order),
        "{ev:?}"
    );
    wait_for_state(r, &order, OrderState::Completed).await;
    log
}

#[tokio::test]
async fn f21_a_machine_clock_400_s_ahead_is_told_the_time_and_sells() {
    let r = start().await;
    let log = sell_one(&r, 400_000).await;
    // The refused request left nothing behind: one order, one event per message accepted.
    let orders: i64 = openvend::store::query("SELECT COUNT(*) FROM orders")
        .fetch_one(&r.app_services.db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 1);
    settle(&r, 0).await;
    invariants::check(&r.app_services.db, &r.sandbox_url, Some(&log)).await;
}

#[tokio::test]
async fn f21_a_machine_clock_400_s_behind_is_told_the_time_and_sells() {
    let r = start().await;
    let log = sell_one(&r, -400_000).await;
    settle(&r, 0).await;
    invariants::check(&r.app_services.db, &r.sandbox_url, Some(&log)).await;
}

/// Inside the ±300 s window the request is accepted, and the machine is told the time all
/// the same: it measures a command's age by its own clock, so 250 s behind it would run a
/// dispense the server had already expired.
#[tokio::test]
async fn f21_a_machine_clock_250_s_behind_sells_and_is_told_the_time() {
    let r = start().await;
    let log = sell_one(&r, -250_000).await;
    settle(&r, 0).await;
    invariants::check(&r.app_services.db, &r.sandbox_url, Some(&log)).await;
}

/// One signed HTTP fallback request with the given timestamp; returns status and body.
async fn http_heartbeat(r: &Running, secret: &str, ts: i64) -> (u16, Value) {
    let msg_id = format!("e-{}", openvend::ids::random_hex(8));
    crate::sale::post_device_event(r, "FM-0001", secret, ts, &msg_id, "heartbeat", "{}").await
}

#[tokio::test]
async fn f21_an_http_machine_400_s_off_gets_the_server_time_and_its_retry_passes() {
    let r = start().await;
    let secret = machine_secret(&r, "FM-0001").await;
    let machine_clock = r.app_services.now() - 400_000;
    let (status, body) = http_heartbeat(&r, &secret, machine_clock).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("server clock"),
        "{body}"
    );
    let server_ts = body["server_ts"]
        .as_i64()
        .expect("the refusal carries server_ts");
    assert!((server_ts - r.app_services.now()).abs() < 5_000);
    let (status, body) = http_heartbeat(&r, &secret, server_ts).await;
    assert_eq!((status, &body["status"]), (200, &json!("accepted")));
    // An accepted answer carries the clock too, for a machine drifting inside the window.
    let again = body["server_ts"]
        .as_i64()
        .expect("the answer carries server_ts");
    assert!((again - r.app_services.now()).abs() < 5_000);
}

#[tokio::test]
async fn f21_a_machine_takes_the_time_only_in_answer_to_its_own_message() {
    // On the machine's Mosquitto (no ACLs), so this test can play the server, a replayer
    // and the listener on the event topic at once.
    let code = format!("SYNC-{}", openvend::ids::random_hex(6));
    let secret = "sync-secret";
    let (spy, mut seen, sim, mut events) = MosquittoMachine::start(&code, secret).await;
    sim.fault("T1", "a message to answer").await.unwrap();
    let sent = seen.next_of_kind("fault").await["msg_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sync = |in_reply_to: &str, id: &str| {
        let command = openvend::device::protocol::Command::SyncTime {
            server_ts: openvend::services::now_ms() + 3_600_000,
            in_reply_to: in_reply_to.into(),
        };
        openvend::device::protocol::Envelope::seal(
            &code,
            secret.as_bytes(),
            id,
            openvend::services::now_ms(),
            command.kind(),
            command.body_json(),
        )
        .to_bytes()
    };
    // A sync_time naming nothing the machine sent (a replay) is refused.
    spy.command(sync("e-never-sent", "c-replayed")).await;
    assert_eq!(
        next_with_clock(&mut events).await,
        SimEvent::Refused {
            command_id: "e-never-sent".into(),
            reason: "sync_time for no message of ours".into()
        }
    );
    // One answering its fault sets the clock, and the fault is sent again, same msg_id.
    spy.command(sync(&sent, "c-answer")).await;
    match next_with_clock(&mut events).await {
        SimEvent::ClockSet { skew_ms } => assert!(
            (skew_ms - 3_600_000).abs() < 5_000,
            "clock moved by {skew_ms} ms"
        ),
        other => panic!("expected the clock to be set, got {other:?}"),
    }
    let again = seen.next_of_kind("fault").await;
    assert_eq!(again["msg_id"], sent.as_str());
    assert!(again["ts"].as_i64().unwrap() > openvend::services::now_ms() + 3_500_000);
    // The machine still keeps it: the re-sent copy can be lost with the server like the
    // first, so after a reconnect it is sent once more.
    sim.go_offline().await;
    sim.go_online().await.unwrap();
    let once_more = seen.next_of_kind("fault").await;
    assert_eq!(once_more["msg_id"], sent.as_str());
}

/// A simulated machine on the machine's Mosquitto (no ACLs), with the test in the server's
/// place: it publishes signed commands to the machine and reads what the machine sends.
pub struct MosquittoMachine {
    client: rumqttc::AsyncClient,
    code: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MosquittoMachine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the machine published on its event topic.
pub struct Seen(tokio::sync::mpsc::UnboundedReceiver<Value>);

impl Seen {
    /// The next envelope of `kind`.
    pub async fn next_of_kind(&mut self, kind: &str) -> Value {
        loop {
            let env = tokio::time::timeout(std::time::Duration::from_secs(20), self.0.recv())
                .await
                .expect("the machine sent nothing in time")
                .unwrap();
            if env["kind"] == kind {
                return env;
            }
        }
    }
}

impl MosquittoMachine {
    pub async fn start(
        code: &str,
        secret: &str,
    ) -> (
        MosquittoMachine,
        Seen,
        openvend::sim::MachineSim,
        tokio::sync::mpsc::UnboundedReceiver<SimEvent>,
    ) {
        let mut opts = rumqttc::MqttOptions::new(format!("spy-{code}"), "127.0.0.1", 1883);
        opts.set_clean_session(true);
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 16);
        client
            .subscribe(
                openvend::device::mqtt::evt_topic(code),
                rumqttc::QoS::AtLeastOnce,
            )
            .await
            .unwrap();
        let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = seen_tx.send(serde_json::from_slice(&p.payload).unwrap());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(20), ready)
            .await
            .unwrap()
            .unwrap();
        let mut settings = openvend::sim::SimSettings::new(code, secret, "127.0.0.1", 1883);
        settings.persistent_session = false;
        let (sim, mut events) = openvend::sim::MachineSim::start(settings).await.unwrap();
        assert_eq!(crate::flow::next(&mut events).await, SimEvent::Online);
        let spy = MosquittoMachine {
            client,
            code: code.to_owned(),
            task,
        };
        (spy, Seen(seen), sim, events)
    }

    /// Publishes a sealed command on the machine's command topic.
    pub async fn command(&self, sealed: Vec<u8>) {
        self.client
            .publish(
                openvend::device::mqtt::cmd_topic(&self.code),
                rumqttc::QoS::AtLeastOnce,
                false,
                sealed,
            )
            .await
            .unwrap();
    }
}

/// Starts an unpaid sale on VM-0001, then moves the server clock past the payment timeout.
async fn unpaid_sale_closes(r: &Running) {
    let (sim, mut events) = machine(r, "VM-0001", |_| {}).await;
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, _, _) = expect_qr(&mut events).await;
    settle(r, 0).await;
    r.app_services.clock.advance(5 * 60_000 + 1_000);
    r.app_services.jobs_ready.notify_one();
    wait_for_state(r, &order, OrderState::Closed).await;
    // The server's clock jumped five minutes while the machine's did not: a message of the
    // machine still on its way at the jump is stale to the server and answered with the
    // time, which may come before the cancellation.
    let next = loop {
        match next_with_clock(&mut events).await {
            SimEvent::ClockSet { .. } => continue,
            other => break other,
        }
    };
    assert_eq!(next, SimEvent::Cancelled { order_id: order });
    assert_eq!(
        slot(r, "VM-0001", "A1").await.1,
        0,
        "nothing stays reserved"
    );
}

#[tokio::test]
async fn f21_alipay_5_s_ahead_of_the_server_sells_and_closes_unpaid_codes() {
    let r = start().await;
    let moved = control(&r, "/control/clock/advance", json!({ "seconds": 5 })).await;
    assert_eq!(moved["offset_ms"], 5_000, "{moved}");
    let log = sell_one(&r, 0).await;
    unpaid_sale_closes(&r).await;
    settle(&r, 0).await;
    invariants::check(&r.app_services.db, &r.sandbox_url, Some(&log)).await;
}

#[tokio::test]
async fn f21_the_server_5_s_ahead_of_alipay_sells_and_closes_unpaid_codes() {
    let r = start().await;
    r.app_services.clock.advance(5_000);
    crate::sale::mark_machines_online(&r).await;
    let log = sell_one(&r, 0).await;
    unpaid_sale_closes(&r).await;
    settle(&r, 0).await;
    invariants::check(&r.app_services.db, &r.sandbox_url, Some(&log)).await;
}
