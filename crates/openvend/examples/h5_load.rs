//! The machine page's latency under load: a signed-in buyer's `GET /m/<machine>` at a fixed
//! rate against the real server (the production `App`, its HTTP listener on 127.0.0.1, SQLite
//! in a temporary folder, the embedded sandbox), with the load generator on the same cores.
//!
//! Open loop: requests are started on a fixed schedule whatever the answers do, and each
//! latency is counted from its scheduled start, so a stall is not hidden by fewer requests
//! (no coordinated omission). Run in release mode:
//!
//! ```sh
//! cargo run --release -p openvend --example h5_load -- [rate per s] [seconds]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use openvend::app::App;
use openvend::config::Settings;
use openvend::h5::session::{self, AlipayUser};
use openvend::h5::{SESSION_COOKIE, accounts, phone::Phone};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);

    let dir = tempfile::tempdir()?;
    let app = App::build(Settings {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        sandbox_listen: "127.0.0.1:0".into(),
        ..Settings::default()
    })
    .await?;
    let url = format!("http://{}/m/VM-0001", app.http_addr());

    // A buyer who signed up before: an account with a phone, an Alipay user, a session.
    let ctx = app
        .sandbox_ctx()
        .ok_or_else(|| anyhow::anyhow!("no sandbox"))?;
    let buyer = alipay_sandbox::control::new_buyer(&ctx, 10_000, None, None);
    let user = AlipayUser::new(
        &app.services.app_id,
        &alipay::UserRef::UserId(buyer.user_id.clone()),
    );
    let now = app.services.now();
    let mut tx = app.db.pool.begin().await?;
    let phone = Phone::parse("13800138000").map_err(|e| anyhow::anyhow!("{e}"))?;
    let (account, _) =
        accounts::bind(&mut tx, &app.h5.keys, &phone, &user, None, None, now).await?;
    tx.commit().await?;
    let token = session::open(&app.db, &user, Some(account), None, None, "VM-0001", now).await?;
    let cookie = format!("{SESSION_COOKIE}={token}");

    let stop = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()?;
    let get = {
        let http = http.clone();
        let url = url.clone();
        let cookie = cookie.clone();
        move || {
            let req = http.get(&url).header("cookie", &cookie);
            async move {
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let body = resp.text().await?;
                anyhow::Ok(status == 200 && body.contains("name=\"qty.A1\""))
            }
        }
    };
    // Warm up: connections, page caches, the SQLite pool.
    for _ in 0..200 {
        anyhow::ensure!(
            get().await?,
            "the machine page did not answer 200 with products"
        );
    }

    let total = rate * seconds;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval * u32::try_from(i)?;
        tokio::time::sleep_until(due.into()).await;
        let (get, latencies, failures) = (get.clone(), latencies.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let ok = matches!(get().await, Ok(true));
            let took = due.elapsed();
            if ok {
                if let Ok(mut l) = latencies.lock() {
                    l.push(took);
                }
            } else {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let wall = start.elapsed();
    stop.cancel();

    let mut l = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    l.sort();
    let pct = |p: f64| l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("h5 machine page (signed in): GET {url}");
    println!(
        "requests {} in {:.1} s ({:.1}/s offered {rate}/s), failures {}",
        l.len(),
        wall.as_secs_f64(),
        l.len() as f64 / wall.as_secs_f64(),
        failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    anyhow::ensure!(!l.is_empty(), "no request succeeded");
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(pct(0.999)),
        ms(pct(1.0))
    );
    let p99 = ms(pct(0.99));
    println!(
        "budget: p99 ≤ 5 ms at 200/s: {}",
        if p99 <= 5.0 && rate >= 200 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
