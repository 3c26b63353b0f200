//! Start-up: the embedded defaults come up on port 0 and a restart keeps the data.

use openvend::app::App;
use openvend::config::Settings;

fn settings(dir: &std::path::Path) -> Settings {
    Settings {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        sandbox_listen: "127.0.0.1:0".into(),
        mqtt: openvend::config::MqttSettings {
            embedded_listen: "127.0.0.1:0".into(),
            ..Default::default()
        },
        ..Settings::default()
    }
}

#[tokio::test]
async fn the_embedded_defaults_start_and_a_restart_keeps_the_demo_fleet_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::build(settings(dir.path())).await.unwrap();
    let addr = app.http_addr();
    let sandbox = app.sandbox_url().unwrap().to_owned();
    let token = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());

    let health = reqwest::get(format!("http://{addr}/health"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(health, "ok");
    let apps: serde_json::Value = reqwest::get(format!("{sandbox}/control/apps"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(apps["apps"][0]["app_id"], openvend::app::SANDBOX_APP_ID);
    token.cancel();
    running.await.unwrap().unwrap();

    // Build again on the same folder: same data, no second demo fleet.
    let app = App::build(settings(dir.path())).await.unwrap();
    let machines: i64 = openvend::store::query("SELECT COUNT(*) FROM machines")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(machines, 3);
}

/// `base` with real Alipay settings (app 2021000000000042 receiving under 2088000000000042,
/// keys written to `dir`, a gateway nothing answers at) and the SMS carrier they require.
pub fn real_alipay(dir: &std::path::Path, base: Settings) -> Settings {
    let key = alipay::AppPrivateKey::generate().unwrap();
    std::fs::write(dir.join("app.pem"), key.to_pkcs8_pem().unwrap()).unwrap();
    let alipay_key = alipay::AppPrivateKey::generate().unwrap().public_key();
    std::fs::write(dir.join("alipay.pem"), alipay_key.to_spki_pem()).unwrap();
    Settings {
        alipay: Some(openvend::config::AlipaySettings {
            app_id: "2021000000000042".into(),
            private_key_file: dir.join("app.pem"),
            alipay_public_key_file: dir.join("alipay.pem"),
            gateway_url: "http://127.0.0.1:9/gateway.do".into(),
            authorize_url: None,
            seller_id: "2088000000000042".into(),
        }),
        sms: openvend::h5::settings::SmsSettings {
            provider: Some(openvend::h5::settings::SmsProviderKind::Log),
            ..Default::default()
        },
        ..base
    }
}

/// Builds and stops a server on `settings`, so its database is left as a restart finds it.
async fn build_and_stop(settings: Settings) {
    let app = App::build(settings).await.unwrap();
    let token = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    token.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_database_made_for_another_receiving_account_stops_start_up_with_real_alipay() {
    let dir = tempfile::tempdir().unwrap();
    // The quick start's database: the embedded sandbox's demo, receiving under its PID.
    build_and_stop(settings(dir.path())).await;
    let real = real_alipay(dir.path(), settings(dir.path()));
    let err = App::build(real.clone()).await.err().unwrap().to_string();
    assert!(err.starts_with("alipay.seller_id:"), "{err}");
    assert!(err.contains("2088000000000042"), "{err}");

    // A database made for that account starts, and so does a restart of it.
    let own = tempfile::tempdir().unwrap();
    let real_own = Settings {
        data_dir: own.path().to_path_buf(),
        ..real
    };
    build_and_stop(real_own.clone()).await;
    build_and_stop(real_own).await;
}

#[tokio::test]
async fn a_real_operators_database_started_without_alipay_settings_is_not_taken_by_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    // A database a real deployment made and uses.
    build_and_stop(real_alipay(dir.path(), settings(dir.path()))).await;
    // The same database started without the alipay settings (a forgotten --config): the
    // embedded sandbox would come up and move the operator to its own PID.
    let err = match App::build(settings(dir.path())).await {
        Ok(_) => panic!("start-up without alipay settings must stop"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("alipay:"), "{err}");
    assert!(err.contains("2088000000000042"), "{err}");
    assert!(err.contains("alipay.app_id"), "{err}");
    // Nothing moved: the real deployment starts again as it was.
    build_and_stop(real_alipay(dir.path(), settings(dir.path()))).await;
}

#[tokio::test]
async fn an_embedded_sandbox_registered_anew_moves_the_demo_to_its_new_pid_on_the_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    build_and_stop(settings(dir.path())).await;
    // As if the sandbox's data folder had been removed and its app registered under another
    // PID: the database still names the old one.
    let app = App::build(settings(dir.path())).await.unwrap();
    let sandbox_pid = openvend::store::query("SELECT seller_pid FROM operators")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
        .get::<String, _>(0);
    openvend::store::query("UPDATE operators SET seller_pid = '2088999999999999'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    drop(app);
    let app = App::build(settings(dir.path())).await.unwrap();
    let now = openvend::store::query("SELECT seller_pid FROM operators")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
        .get::<String, _>(0);
    assert_eq!(now, sandbox_pid);
    let audit: Vec<String> = openvend::store::query(
        "SELECT detail FROM audit_log WHERE action = 'receiving_account_changed'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].contains("2088999999999999"), "{audit:?}");
}

/// Files of `dir` this process holds open.
fn open_files_under(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.starts_with(dir))
        .map(|target| target.display().to_string())
        .collect()
}

/// A server whose runtime is gone lets go of all it held, even when its tasks never ran
/// their shutdown: no two of its parts keep each other alive (the embedded broker's login
/// check holds the device channel, which publishes through the broker), so its database
/// closes. On PostgreSQL a leak here piles up connections until the server refuses more.
#[test]
fn a_server_whose_runtime_stops_closes_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let services = runtime.block_on(async {
        let app = App::build(settings(dir.path())).await.unwrap();
        let services = app.services.clone();
        tokio::spawn(app.run_until_stopped());
        let mut up = services.device.link_up();
        tokio::time::timeout(std::time::Duration::from_secs(10), up.wait_for(|u| *u))
            .await
            .unwrap()
            .unwrap();
        services
    });
    assert!(
        !open_files_under(dir.path()).is_empty(),
        "the running server should hold its database open"
    );
    drop(runtime);
    drop(services);
    assert_eq!(
        open_files_under(dir.path()),
        Vec::<String>::new(),
        "files still open after the server's runtime and every handle are gone"
    );
}

/// `openvend serve` as a new user meets it: it prints how to buy from the demo machine, and
/// that command, run as printed, buys, pays in the sandbox and vends.
#[test]
fn serve_prints_a_demo_purchase_that_works_as_printed() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_openvend"))
        .arg("serve")
        .env("OPENVEND_DATA_DIR", dir.path())
        .env("OPENVEND_LISTEN", "127.0.0.1:0")
        .env("OPENVEND_SANDBOX_LISTEN", "127.0.0.1:0")
        .env("OPENVEND_MQTT_EMBEDDED_LISTEN", "127.0.0.1:0")
        .env("OPENVEND_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = server.stdout.take().unwrap();
    let _server = Kill(server);
    let mut printed = String::new();
    let mut command = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("machine-sim") {
            command = Some(line);
            break;
        }
    }
    let command = command.unwrap_or_else(|| panic!("no purchase command printed:\n{printed}"));
    assert!(printed.contains("OpenVend is running"), "{printed}");
    let args: Vec<&str> = command
        .split_once("cargo run --release -- ")
        .unwrap_or_else(|| panic!("not a cargo command: {command}"))
        .1
        .split_whitespace()
        .collect();
    let sim = Command::new(env!("CARGO_BIN_EXE_openvend"))
        .args(&args)
        .env("OPENVEND_LOG", "warn")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&sim.stdout);
    assert!(
        sim.status.success(),
        "{command}\n{out}\n{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    assert!(out.contains("paid as sandbox buyer"), "{out}");
    assert!(out.contains("A1 Dispensed"), "{out}");
    // The machine stopped right after its vend: its result reached the server before it did,
    // so the order completes (it used to stay `dispensing` when the process ended with the
    // result still queued in its MQTT client).
    let db = rusqlite::Connection::open(dir.path().join("openvend.db")).unwrap();
    let mut state = String::new();
    for _ in 0..100 {
        state = db
            .query_row(
                "SELECT state FROM orders ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if state == "completed" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(state, "completed", "{out}");
}

/// `machine-sim --secret` without `--mqtt` stops with the reason, instead of ignoring the
/// secret and running with the one the operator API hands out.
#[test]
fn machine_sim_refuses_a_secret_without_its_broker() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openvend"))
        .args(["machine-sim", "--machine", "VM-0001", "--secret", "00ff"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--secret needs --mqtt"), "{err}");
}
