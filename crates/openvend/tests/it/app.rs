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
