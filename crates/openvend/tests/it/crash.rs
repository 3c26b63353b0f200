//! F8 / F9 / kill -9: the real `openvend serve` process is killed with SIGKILL in the middle
//! of sales and started again on the same data folder and ports. Every order in flight must
//! still reach a final state, with exactly one vend per paid unit and the invariants intact.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use openvend::sim::{MachineSim, SimEvent, SimSettings};
use openvend::store::Db;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::flow::{mqtt_addr, next_business};
use crate::invariants::{self, VendLog};

struct Server {
    child: Child,
    dir: std::path::PathBuf,
    http: u16,
    sandbox: u16,
    mqtt: u16,
    database_url: Option<String>,
    /// More `OPENVEND_*` settings, kept for restarts.
    env: Vec<(String, String)>,
}

/// Where the server under test writes its log (appended across restarts).
fn server_log(dir: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// The end of the server's log, for a failure message.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let start = log.len().saturating_sub(2000);
    log.get(start..).unwrap_or(&log).to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn spawn(
        dir: &Path,
        http: u16,
        sandbox: u16,
        mqtt: u16,
        database_url: Option<String>,
        failpoint: Option<&str>,
        env: Vec<(String, String)>,
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openvend"));
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.arg("serve")
            .env("OPENVEND_DATA_DIR", dir)
            .env("OPENVEND_LISTEN", format!("127.0.0.1:{http}"))
            .env("OPENVEND_SANDBOX_LISTEN", format!("127.0.0.1:{sandbox}"))
            .env("OPENVEND_MQTT_EMBEDDED_LISTEN", format!("127.0.0.1:{mqtt}"))
            .env("OPENVEND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(server_log(dir));
        if let Some(url) = &database_url {
            cmd.env("OPENVEND_DATABASE_URL", url);
        }
        if let Some(point) = failpoint {
            cmd.env("OPENVEND_FAILPOINTS", point);
        }
        Server {
            child: cmd.spawn().unwrap(),
            dir: dir.to_path_buf(),
            http,
            sandbox,
            mqtt,
            database_url,
            env,
        }
    }

    fn kill9(&mut self) {
        // SIGKILL: no shutdown code runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts the server again on the same ports and data, with no failpoint armed.
    fn restart(&mut self) {
        *self = Server::spawn(
            &self.dir,
            self.http,
            self.sandbox,
            self.mqtt,
            self.database_url.clone(),
            None,
            self.env.clone(),
        );
    }

    /// Waits for the process to stop at its armed failpoint.
    async fn wait_failpoint(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(86), "{}", log_tail(&self.dir));
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the failpoint was not reached: {}",
                log_tail(&self.dir)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's database, read from outside (also while the server is down).
    async fn db(&self) -> Db {
        match &self.database_url {
            Some(url) => Db::connect(url, false).await.unwrap(),
            None => Db::connect(
                &format!("sqlite://{}", self.dir.join("openvend.db").display()),
                false,
            )
            .await
            .unwrap(),
        }
    }

    async fn start(dir: &Path, database_url: Option<String>) -> Server {
        Server::start_armed(dir, database_url, None, Vec::new()).await
    }

    /// A first start on ports nobody holds: the ports come from `free_port`, and another
    /// test may bind one of them before the server does; then it tries fresh ones. With
    /// `failpoint`, the process stops dead when it reaches that point.
    async fn start_armed(
        dir: &Path,
        database_url: Option<String>,
        failpoint: Option<&str>,
        env: Vec<(String, String)>,
    ) -> Server {
        for _ in 0..3 {
            let mut server = Server::spawn(
                dir,
                free_port(),
                free_port(),
                free_port(),
                database_url.clone(),
                failpoint,
                env.clone(),
            );
            if server.healthy_or_exited().await {
                return server;
            }
        }
        panic!("server did not start: {}", log_tail(dir));
    }

    async fn wait_healthy(&mut self) {
        assert!(
            self.healthy_or_exited().await,
            "server did not start: {}",
            log_tail(&self.dir)
        );
    }

    /// True once `/health` answers; false if the process exits first.
    async fn healthy_or_exited(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{}/health", self.http)).await
                && r.status().is_success()
            {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!("server exited with {status}: {}", log_tail(&self.dir));
                return false;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not start within 30 s: {}",
                log_tail(&self.dir)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("api_token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    async fn api(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/api/v1{path}", self.http))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn sandbox_control(&self, path: &str, body: Value) -> Value {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}{path}", self.sandbox))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn order_state(&self, out_trade_no: &str) -> String {
        let orders = self.api("/orders?limit=500").await;
        orders["orders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["out_trade_no"] == out_trade_no)
            .map(|o| o["state"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    async fn wait_state(&self, out_trade_no: &str, want: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let state = self.order_state(out_trade_no).await;
            if state == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {out_trade_no} stuck in {state}, wanted {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn machine(server: &Server) -> (MachineSim, UnboundedReceiver<SimEvent>) {
    let creds = server.api("/machines/VM-0001/credentials").await;
    let (host, port) = mqtt_addr(creds["device"]["mqtt_url"].as_str().unwrap());
    let mut settings = SimSettings::new("VM-0001", creds["secret"].as_str().unwrap(), &host, port);
    settings.persistent_session = false;
    settings.heartbeat_every = Duration::from_millis(500);
    let (sim, mut events) = MachineSim::start(settings).await.unwrap();
    assert_eq!(next_business_or_online(&mut events).await, SimEvent::Online);
    (sim, events)
}

async fn next_business_or_online(events: &mut UnboundedReceiver<SimEvent>) -> SimEvent {
    tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .unwrap()
        .unwrap()
}

async fn qr(events: &mut UnboundedReceiver<SimEvent>) -> (String, String) {
    match next_business(events).await {
        SimEvent::ShowQr {
            order_id, qr_code, ..
        } => (order_id, qr_code),
        other => panic!("expected a QR code, got {other:?}"),
    }
}

async fn pay(server: &Server, qr_code: &str) {
    let buyer = server
        .sandbox_control("/control/buyers", json!({ "balance": "100.00" }))
        .await;
    let paid = server
        .sandbox_control(
            "/control/qr/pay",
            json!({ "qr_code": qr_code, "buyer_id": buyer["user_id"] }),
        )
        .await;
    assert!(paid["trade_no"].is_string(), "{paid}");
}

/// Waits for the vend of `order`, logging every vend seen on the way.
async fn wait_vend(events: &mut UnboundedReceiver<SimEvent>, log: &mut VendLog, order: &str) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("no vend within 60 s")
            .unwrap();
        crate::flow::log_vend(log, &ev);
        if matches!(&ev, SimEvent::Dispensed { order_id, .. } if order_id == order) {
            return;
        }
    }
}

#[tokio::test]
async fn kill_9_mid_sale_and_restart_drives_every_order_to_a_final_state_once() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = crate::store::postgres_url_if_asked().await;
    let mut server = Server::start(dir.path(), database_url.clone()).await;
    let (sim, mut events) = machine(&server).await;
    let mut log = VendLog::new();

    // 1. Killed while a paid order's dispense waits for an offline machine.
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (first, qr1) = qr(&mut events).await;
    sim.go_offline().await;
    pay(&server, &qr1).await;
    server.wait_state(&first, "paid").await;
    server.kill9();
    // Whatever the kill interrupted, every order waiting on something is still watched.
    assert_eq!(
        invariants::unwatched(&server.db().await).await,
        Vec::<String>::new()
    );
    server.restart();
    server.wait_healthy().await;
    sim.go_online().await.unwrap();
    wait_vend(&mut events, &mut log, &first).await;
    server.wait_state(&first, "completed").await;

    // 2. Killed right after the buyer paid, wherever the server happened to be.
    sim.buy(&[("A2", 2)]).await.unwrap();
    let (second, qr2) = qr(&mut events).await;
    pay(&server, &qr2).await;
    server.kill9();
    assert_eq!(
        invariants::unwatched(&server.db().await).await,
        Vec::<String>::new()
    );
    server.restart();
    server.wait_healthy().await;
    // The machine reconnects by itself; the payment is found by notification or query.
    wait_vend(&mut events, &mut log, &second).await;
    server.wait_state(&second, "completed").await;

    // 3. Killed while the buyer still looks at the code; they pay after the restart.
    sim.buy(&[("A3", 1)]).await.unwrap();
    let (third, qr3) = qr(&mut events).await;
    server.kill9();
    assert_eq!(
        invariants::unwatched(&server.db().await).await,
        Vec::<String>::new()
    );
    server.restart();
    server.wait_healthy().await;
    pay(&server, &qr3).await;
    wait_vend(&mut events, &mut log, &third).await;
    server.wait_state(&third, "completed").await;

    // Nothing left to do, and nothing done twice.
    let db = server.db().await;
    let sandbox_url = format!("http://127.0.0.1:{}", server.sandbox);
    invariants::check(&db, &sandbox_url, Some(&log)).await;
    assert_eq!(log.values().sum::<u32>(), 4);
}

/// The state the database holds for `out_trade_no`.
async fn stored_state(db: &Db, out_trade_no: &str) -> String {
    openvend::store::query("SELECT state FROM orders WHERE out_trade_no = $1")
        .bind(out_trade_no)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0)
}

/// F8: the server stops dead after Alipay said "paid" (the notification passed every check,
/// the order was marked paid and its dispense recorded) but before that was committed.
/// Nothing of it was stored; after the restart the payment is found again (the
/// notification's retry or the query), the goods come out once and the buyer is charged once.
#[tokio::test]
async fn f8_a_crash_between_paid_and_its_commit_loses_nothing_and_vends_once() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = crate::store::postgres_url_if_asked().await;
    let mut server = Server::start_armed(
        dir.path(),
        database_url,
        Some(openvend::failpoint::NOTIFY_PAID_BEFORE_COMMIT),
        Vec::new(),
    )
    .await;
    let (sim, mut events) = machine(&server).await;
    let mut log = VendLog::new();
    sim.buy(&[("A1", 1)]).await.unwrap();
    let (order, qr_code) = qr(&mut events).await;
    // The sandbox stores the payment, answers, then notifies: the server stops there. (Its
    // answer may be cut off with it; the sandbox's ledger says what happened.)
    let _ = pay_unchecked(&server, &qr_code).await;
    server.wait_failpoint().await;
    let db = server.db().await;
    assert_eq!(stored_state(&db, &order).await, "awaiting_payment");
    assert_eq!(invariants::unwatched(&db).await, Vec::<String>::new());
    server.restart();
    server.wait_healthy().await;
    wait_vend(&mut events, &mut log, &order).await;
    server.wait_state(&order, "completed").await;
    let sandbox_url = format!("http://127.0.0.1:{}", server.sandbox);
    invariants::check(&server.db().await, &sandbox_url, Some(&log)).await;
    assert_eq!(log.values().sum::<u32>(), 1);
}

/// F9: the machine vended and reported it; the server stops dead after its broker took the
/// report and before it was stored. The order stays `paid` (the machine's ack was held in
/// memory, and lost with it) or `dispensing`; after the restart the machine re-sends its
/// unconfirmed events (device-protocol.md §2), the report is stored once, the order
/// completes, and nothing vends twice.
#[tokio::test]
async fn f9_a_crash_before_a_dispense_result_is_stored_loses_nothing_and_vends_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sale = PaidSale::armed(
        dir.path(),
        openvend::failpoint::DISPENSE_RESULT_BEFORE_RECORD,
    )
    .await;
    sale.vended_then_stopped_before_its_report_was_stored()
        .await;
    sale.completes_after_restart_and_vends_once().await;
}

/// F9 through an external broker (Mosquitto on 127.0.0.1:1883). The machine's connection is
/// to the broker, and the server's crash does not drop it, so the machine has no reconnect
/// to send its report again after. The report comes back anyway: the broker keeps it in the
/// server's session (`mqtt.client_id`), unacknowledged until stored, and the restarted server
/// re-delivers the dispense, which the machine answers `already_done` with the same result.
/// The order completes and nothing vends twice. (That the broker keeps an unstored event is
/// tested alone in `device::an_event_the_server_has_not_stored_is_left_with_the_external_broker`.)
#[tokio::test]
async fn f9_through_an_external_broker_the_report_is_delivered_again_after_the_crash() {
    let dir = tempfile::tempdir().unwrap();
    let client_id = format!("openvend-crash-test-{}", std::process::id());
    let env = vec![
        (
            "OPENVEND_MQTT_URL".to_owned(),
            "mqtt://127.0.0.1:1883".to_owned(),
        ),
        ("OPENVEND_MQTT_CLIENT_ID".to_owned(), client_id.clone()),
    ];
    let mut sale = PaidSale::armed_with(
        dir.path(),
        openvend::failpoint::DISPENSE_RESULT_BEFORE_RECORD,
        env,
    )
    .await;
    sale.vended_then_stopped_before_its_report_was_stored()
        .await;
    sale.completes_after_restart_and_vends_once().await;
    forget_broker_session(&client_id).await;
}

/// Ends the session Mosquitto keeps for `client_id` (a clean connection replaces it), so the
/// shared broker queues nothing more for a server that is gone.
async fn forget_broker_session(client_id: &str) {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", 1883);
    opts.set_clean_session(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 8);
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(connected.ok(), Some(true), "could not reach Mosquitto");
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
}

/// The machine accepted the dispense; the server held the ack in memory, answered it, and
/// stops dead before writing it. The order is still `paid` in the store; after the restart
/// the machine re-sends its unconfirmed events (device-protocol.md §2): the ack and the
/// result are stored once, the order completes, and nothing vends twice.
#[tokio::test]
async fn a_crash_with_a_dispense_ack_held_in_memory_loses_nothing_and_vends_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sale = PaidSale::armed(dir.path(), openvend::failpoint::DISPENSE_ACK_HELD).await;
    sale.server.wait_failpoint().await;
    let db = sale.server.db().await;
    assert_eq!(stored_state(&db, &sale.order).await, "paid");
    assert_eq!(invariants::unwatched(&db).await, Vec::<String>::new());
    sale.completes_after_restart_and_vends_once().await;
}

/// A sale paid through the sandbox, on a server armed to stop dead at one failpoint.
struct PaidSale {
    server: Server,
    _sim: MachineSim,
    events: UnboundedReceiver<SimEvent>,
    log: VendLog,
    order: String,
}

impl PaidSale {
    async fn armed(dir: &Path, failpoint: &str) -> PaidSale {
        PaidSale::armed_with(dir, failpoint, Vec::new()).await
    }

    /// A sale on a server started with more `OPENVEND_*` settings.
    async fn armed_with(dir: &Path, failpoint: &str, env: Vec<(String, String)>) -> PaidSale {
        let database_url = crate::store::postgres_url_if_asked().await;
        let server = Server::start_armed(dir, database_url, Some(failpoint), env).await;
        let (sim, mut events) = machine(&server).await;
        sim.buy(&[("A1", 1)]).await.unwrap();
        let (order, qr_code) = qr(&mut events).await;
        pay(&server, &qr_code).await;
        PaidSale {
            server,
            _sim: sim,
            events,
            log: VendLog::new(),
            order,
        }
    }

    /// Waits for the machine's vend and the server's stop at its failpoint, the report not
    /// stored: the order is still `paid` or `dispensing`.
    async fn vended_then_stopped_before_its_report_was_stored(&mut self) {
        wait_vend(&mut self.events, &mut self.log, &self.order).await;
        self.server.wait_failpoint().await;
        let db = self.server.db().await;
        assert_eq!(invariants::unwatched(&db).await, Vec::<String>::new());
        let stopped_at = stored_state(&db, &self.order).await;
        assert!(
            matches!(stopped_at.as_str(), "paid" | "dispensing"),
            "{stopped_at}"
        );
    }

    /// Restarts the stopped server: the order completes, and nothing vends twice however
    /// long the machine stays connected.
    async fn completes_after_restart_and_vends_once(mut self) {
        self.server.restart();
        self.server.wait_healthy().await;
        self.server.wait_state(&self.order, "completed").await;
        while let Ok(ev) = self.events.try_recv() {
            crate::flow::log_vend(&mut self.log, &ev);
        }
        let sandbox_url = format!("http://127.0.0.1:{}", self.server.sandbox);
        invariants::check(&self.server.db().await, &sandbox_url, Some(&self.log)).await;
        assert_eq!(self.log.values().sum::<u32>(), 1);
    }
}

/// Pays a code through the sandbox without insisting on its answer.
async fn pay_unchecked(server: &Server, qr_code: &str) -> Result<(), reqwest::Error> {
    let buyer = server
        .sandbox_control("/control/buyers", json!({ "balance": "100.00" }))
        .await;
    reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/control/qr/pay",
            server.sandbox
        ))
        .json(&json!({ "qr_code": qr_code, "buyer_id": buyer["user_id"] }))
        .send()
        .await
        .map(|_| ())
}
