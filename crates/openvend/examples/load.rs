//! Load benchmark of the QR sale: the real `openvend serve` (release build) against the
//! Alipay sandbox in its own process, with simulated machines over MQTT.
//!
//! ```text
//! cargo build --release -p openvend --examples --bins
//! target/release/examples/load --machines 200 --rate 200 --seconds 30
//! target/release/examples/load --machines 200 --rate 200 --seconds 30 \
//!     --database-url postgres://postgres@127.0.0.1:5432/test
//! target/release/examples/load --machines 0 --idle-machines 10000
//! target/release/examples/load --machines 0 --idle-machines 10000 --mqtt-url mqtt://127.0.0.1:1883
//! target/release/examples/load --machines 100 --rate 100 --seconds 20 --server-cpus 0
//! target/release/examples/load --machines 50 --rate 50 --seconds 20 \
//!     --database-url 'sqlite:///tmp/kept/openvend.db?mode=rwc'
//! ```
//!
//! A PostgreSQL URL gets a fresh schema per run, dropped at the end; a SQLite URL is used as
//! it is and kept (to look at what a run wrote); without one, a SQLite file in a temporary
//! directory.
//!
//! Phase 1 (orders): every machine buys at its share of `--rate`, a sandbox buyer pays the QR
//! code, the machine vends. Measured: orders/s completed, request → QR code at the machine,
//! payment → vend reported by the machine, and, from the server's own records, notification
//! received (the timeline's `notified` entry) → dispense command handed to the MQTT link (the
//! command ledger's `sent_at`); the server's CPU seconds per order and peak
//! RSS (from /proc). Phase 2 (idle fleet): `--idle-machines` more machines connect and
//! heartbeat every 30 s; the server's RSS is sampled once all are connected and after two
//! heartbeat rounds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openvend::sim::{MachineSim, SimEvent, SimSettings};
use openvend::store::Db;
use serde_json::{Value, json};
use tokio::sync::Mutex;

struct Args {
    machines: usize,
    rate: f64,
    seconds: u64,
    idle_machines: usize,
    database_url: Option<String>,
    mqtt_url: Option<String>,
    bin: PathBuf,
    server_cpus: Option<String>,
    server_log: Option<PathBuf>,
    pause_after_orders: u64,
}

const USAGE: &str = "usage: load [--machines N] [--rate ORDERS_PER_S] [--seconds S] \
[--idle-machines N] [--database-url postgres://…|sqlite://…] [--mqtt-url mqtt://…] \
[--bin path/to/openvend] [--server-cpus LIST] [--server-log FILE] [--pause-after-orders S]";

fn number<T: std::str::FromStr>(flag: &str, raw: String) -> anyhow::Result<T> {
    raw.parse()
        .map_err(|_| anyhow::anyhow!("{flag} needs a number, not {raw:?}"))
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        machines: 200,
        rate: 200.0,
        seconds: 30,
        idle_machines: 0,
        database_url: None,
        mqtt_url: None,
        server_cpus: None,
        server_log: None,
        pause_after_orders: 0,
        bin: std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|p| p.join("openvend"))
            .unwrap_or_else(|| PathBuf::from("target/release/openvend")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--machines" => a.machines = number(&flag, value()?)?,
            "--rate" => a.rate = number(&flag, value()?)?,
            "--seconds" => a.seconds = number(&flag, value()?)?,
            "--idle-machines" => a.idle_machines = number(&flag, value()?)?,
            "--database-url" => a.database_url = Some(value()?),
            "--mqtt-url" => a.mqtt_url = Some(value()?),
            "--bin" => a.bin = PathBuf::from(value()?),
            "--server-cpus" => a.server_cpus = Some(value()?),
            "--server-log" => a.server_log = Some(PathBuf::from(value()?)),
            "--pause-after-orders" => a.pause_after_orders = number(&flag, value()?)?,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    Ok(a)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the stat line (11 and 12 after the name).
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds (user + system + irq) the whole machine spent busy, from /proc/stat: every
/// process, the database and the load generator included.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or("");
    let ticks: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq: busy = all but idle and iowait (steal,
    // time the hypervisor gave to other guests, is not ours).
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(5)
        .map(|(_, t)| t)
        .sum();
    busy / 100.0
}

/// A memory figure (kB) from /proc/<pid>/status, e.g. VmRSS or VmHWM.
fn mem_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| {
            v.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn wait_http(url: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{url} did not come up")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "  {name:<44} n={:<6} p50={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    );
}

#[derive(Default)]
struct Samples {
    to_qr: Vec<f64>,
    pay_to_dispense: Vec<f64>,
    completed: usize,
    failed: usize,
}

/// CPU time of one RSA-2048 SHA-256 signature with aws-lc-rs, as the server signs each
/// precreate: the median of 5 rounds of 50.
fn rsa2048_sign_ms() -> Option<f64> {
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::RSA_PKCS1_SHA256;
    let key = KeyPair::generate(KeySize::Rsa2048).ok()?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut sig = vec![0u8; key.public_modulus_len()];
    let message = [7u8; 512];
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..50 {
                key.sign(&RSA_PKCS1_SHA256, &rng, &message, &mut sig).ok()?;
            }
            Some(t.elapsed().as_secs_f64() * 1000.0 / 50.0)
        })
        .collect::<Option<_>>()?;
    rounds.sort_by(f64::total_cmp);
    rounds.get(2).copied()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match parse_args() {
        Ok(args) => args,
        // A mistyped flag is a message, not a backtrace.
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(2);
        }
    };
    anyhow::ensure!(
        args.bin.exists(),
        "{} not found: build it with `cargo build --release -p openvend --bins`",
        args.bin.display()
    );
    let dir = tempfile::tempdir()?;
    let (http_port, sandbox_port, mqtt_port) = (free_port()?, free_port()?, free_port()?);
    let sandbox_url = format!("http://127.0.0.1:{sandbox_port}");
    let http_url = format!("http://127.0.0.1:{http_port}");

    // The sandbox in its own process, so the server's CPU figure is the server's alone.
    let sandbox = Proc(
        Command::new(&args.bin)
            .args(["sandbox", "--listen", &format!("127.0.0.1:{sandbox_port}")])
            .arg("--data")
            .arg(dir.path().join("sandbox"))
            .env("OPENVEND_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    wait_http(&format!("{sandbox_url}/control/info")).await?;
    let key = alipay::AppPrivateKey::generate()?;
    let key_file = dir.path().join("app_private_key.pem");
    std::fs::write(&key_file, key.to_pkcs8_pem()?)?;
    let http = reqwest::Client::new();
    let app_id = "2021000000000042";
    let registered: Value = http
        .post(format!("{sandbox_url}/control/apps"))
        .json(&json!({ "app_id": app_id, "public_key": key.public_key().to_spki_base64(), "notify_url": format!("{http_url}/alipay/notify") }))
        .send()
        .await?
        .json()
        .await?;
    let alipay_key_file = dir.path().join("alipay_public_key.txt");
    std::fs::write(
        &alipay_key_file,
        registered["alipay_public_key"].as_str().unwrap_or(""),
    )?;
    let token = openvend::ids::random_hex(32);
    // `--server-cpus 0` runs the server on those CPUs only (`taskset -c`, which execs it, so
    // the pid is the server's).
    let mut serve = match &args.server_cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(&args.bin);
            c
        }
        None => Command::new(&args.bin),
    };
    serve
        .arg("serve")
        .env("OPENVEND_DATA_DIR", dir.path().join("server"))
        .env("OPENVEND_LISTEN", format!("127.0.0.1:{http_port}"))
        .env("OPENVEND_PUBLIC_URL", &http_url)
        .env(
            "OPENVEND_MQTT_EMBEDDED_LISTEN",
            format!("127.0.0.1:{mqtt_port}"),
        )
        .env("OPENVEND_API_TOKEN", &token)
        .env("OPENVEND_ALIPAY_APP_ID", app_id)
        .env("OPENVEND_ALIPAY_PRIVATE_KEY_FILE", &key_file)
        .env("OPENVEND_ALIPAY_PUBLIC_KEY_FILE", &alipay_key_file)
        .env(
            "OPENVEND_ALIPAY_GATEWAY_URL",
            format!("{sandbox_url}/gateway.do"),
        )
        .env(
            "OPENVEND_ALIPAY_SELLER_ID",
            registered["seller_pid"].as_str().unwrap_or(""),
        )
        // Settings as for real Alipay, which needs the SMS carrier named; no sale sends one.
        .env("OPENVEND_SMS_PROVIDER", "log")
        // `--server-log FILE` keeps the server's output, at the level `OPENVEND_LOG` names
        // (for example `openvend::sql=trace` to see every statement of a sale).
        .env(
            "OPENVEND_LOG",
            std::env::var("OPENVEND_LOG").unwrap_or_else(|_| "warn".into()),
        );
    match &args.server_log {
        Some(path) => {
            let log = std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("--server-log {}: {e}", path.display()))?;
            serve.stdout(log.try_clone()?).stderr(log);
        }
        None => {
            serve.stdout(Stdio::null());
        }
    }
    // A fresh PostgreSQL schema per run, dropped when the run ends.
    let mut pg_schema = None;
    let database_url = match &args.database_url {
        Some(kept) if kept.starts_with("sqlite:") => kept.clone(),
        Some(base) => {
            let schema = format!("load{}", openvend::ids::random_hex(8));
            pg_schema = Some((base.clone(), schema.clone()));
            let admin = Db::connect(base, false).await?;
            openvend::store::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin.pool)
                .await?;
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-c%20search_path%3D{schema}")
        }
        None => format!(
            "sqlite://{}",
            dir.path().join("server/openvend.db").display()
        ),
    };
    if args.database_url.is_some() {
        serve.env("OPENVEND_DATABASE_URL", &database_url);
    }
    // An external broker (e.g. Mosquitto) instead of the embedded one.
    let (mqtt_host, mqtt_port) = match &args.mqtt_url {
        Some(url) => {
            serve.env("OPENVEND_MQTT_URL", url);
            let rest = url.trim_start_matches("mqtt://");
            let (h, p) = rest
                .rsplit_once(':')
                .ok_or_else(|| anyhow::anyhow!("--mqtt-url mqtt://host:port"))?;
            (h.to_owned(), p.parse::<u16>()?)
        }
        None => ("127.0.0.1".to_owned(), mqtt_port),
    };
    let server = Proc(serve.spawn()?);
    let pid = server.0.id();
    wait_http(&format!("{http_url}/health")).await?;
    println!(
        "server pid {pid} on {} ({}), sandbox pid {}",
        http_url,
        if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        sandbox.0.id()
    );

    // The three products the slots sell: those the server has (a build that seeds a demo
    // catalogue), else added (with real Alipay settings nothing is seeded).
    let listed: Value = http
        .get(format!("{http_url}/api/v1/products"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let mut products: Vec<i64> = listed["products"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_i64()).take(3).collect())
        .unwrap_or_default();
    for name in ["Cola", "Water", "Chips"].into_iter().skip(products.len()) {
        let created: Value = http
            .post(format!("{http_url}/api/v1/products"))
            .bearer_auth(&token)
            .json(&json!({ "name": name }))
            .send()
            .await?
            .json()
            .await?;
        products.push(
            created["id"]
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("product not added: {created}"))?,
        );
    }
    let provision = |n: usize, prefix: &'static str, stock: i64| {
        let http = http.clone();
        let url = http_url.clone();
        let token = token.clone();
        let products = products.clone();
        async move {
            let mut machines = Vec::with_capacity(n);
            for i in 0..n {
                let code = format!("{prefix}{i:05}");
                let slots: Vec<Value> = products
                    .iter()
                    .zip(1..)
                    .map(|(id, s)| json!({ "code": format!("A{s}"), "product_id": id, "price_fen": 100 + s, "capacity": 1000, "stock": stock }))
                    .collect();
                let created: Value = http
                    .post(format!("{url}/api/v1/machines"))
                    .bearer_auth(&token)
                    .json(&json!({ "code": code, "kind": "vending", "terminal_id": code, "slots": slots }))
                    .send()
                    .await?
                    .json()
                    .await?;
                let secret = created["secret"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("{created}"))?
                    .to_owned();
                machines.push((code, secret));
            }
            anyhow::Ok(machines)
        }
    };

    // Phase 1: orders.
    if args.machines > 0 {
        let machines = provision(args.machines, "LD", 1000).await?;
        let samples = Arc::new(Mutex::new(Samples::default()));
        let interval = Duration::from_secs_f64(args.machines as f64 / args.rate);
        let run_for = Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        let mut sims = Vec::new();
        for (code, secret) in &machines {
            let mut s = SimSettings::new(code, secret, &mqtt_host, mqtt_port);
            s.persistent_session = false;
            let (sim, events) = MachineSim::start(s).await?;
            let buyer: Value = http
                .post(format!("{sandbox_url}/control/buyers"))
                .json(&json!({ "balance": "1000000.00" }))
                .send()
                .await?
                .json()
                .await?;
            sims.push((
                Arc::new(sim),
                events,
                buyer["user_id"].as_str().unwrap_or("").to_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu0 = cpu_seconds(pid);
        let others0 = (
            cpu_seconds(sandbox.0.id()),
            cpu_seconds(std::process::id()),
            machine_busy_seconds(),
        );
        let started = Instant::now();
        // Markers for tools that watch the run (`count_instructions.sh`).
        println!("orders: under way");
        for (i, (sim, mut events, buyer)) in sims.into_iter().enumerate() {
            let samples = samples.clone();
            let http = http.clone();
            let pay_url = format!("{sandbox_url}/control/qr/pay");
            let offset = interval.mul_f64(i as f64 / args.machines as f64);
            tasks.push(tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if started.elapsed() >= run_for {
                        return;
                    }
                    let t0 = Instant::now();
                    if sim.buy(&[("A1", 1)]).await.is_err() {
                        samples.lock().await.failed += 1;
                        continue;
                    }
                    let qr = loop {
                        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                            Ok(Some(SimEvent::ShowQr { qr_code, .. })) => break Some(qr_code),
                            Ok(Some(SimEvent::SaleRefused { .. })) | Ok(None) | Err(_) => {
                                break None;
                            }
                            Ok(Some(_)) => {}
                        }
                    };
                    let Some(qr) = qr else {
                        samples.lock().await.failed += 1;
                        continue;
                    };
                    let t_qr = t0.elapsed();
                    let paid = http
                        .post(&pay_url)
                        .json(&json!({ "qr_code": qr, "buyer_id": buyer }))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    let t_paid = Instant::now();
                    let dispensed = paid
                        && loop {
                            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await
                            {
                                Ok(Some(SimEvent::Dispensed { .. })) => break true,
                                Ok(Some(_)) => {}
                                Ok(None) | Err(_) => break false,
                            }
                        };
                    let mut s = samples.lock().await;
                    if dispensed {
                        s.completed += 1;
                        s.to_qr.push(t_qr.as_secs_f64() * 1000.0);
                        s.pay_to_dispense
                            .push(t_paid.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        s.failed += 1;
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu0;
        let others = (
            cpu_seconds(sandbox.0.id()) - others0.0,
            cpu_seconds(std::process::id()) - others0.1,
            machine_busy_seconds() - others0.2,
        );
        // `--pause-after-orders S`: every sale has ended; the server idles S seconds before
        // the summary (and before it is stopped), for a tool to read it in that state.
        if args.pause_after_orders > 0 {
            println!("orders: done; pausing {} s", args.pause_after_orders);
            tokio::time::sleep(Duration::from_secs(args.pause_after_orders)).await;
        }
        let s = std::mem::take(&mut *samples.lock().await);
        let db = Db::connect(&database_url, false).await?;
        let rows = openvend::store::query(
            "SELECT (SELECT MIN(at) FROM order_events e WHERE e.order_id = o.id AND e.kind = 'notified') AS notified, \
             (SELECT MIN(c.sent_at) FROM device_commands c WHERE c.order_id = o.out_trade_no AND c.kind = 'dispense') AS sent FROM orders o",
        )
        .fetch_all(&db.pool)
        .await?;
        let server_side: Vec<f64> = rows
            .iter()
            .filter_map(|r| {
                let n: Option<i64> = r.try_get("notified").ok()?;
                let d: Option<i64> = r.try_get("sent").ok()?;
                Some((d? - n?) as f64)
            })
            .collect();
        println!(
            "orders: {} machines at {:.0}/s offered for {:.1} s",
            args.machines, args.rate, elapsed
        );
        println!(
            "  completed {} ({:.1} orders/s), failed {}",
            s.completed,
            s.completed as f64 / elapsed,
            s.failed
        );
        summary("request -> QR code at the machine", s.to_qr);
        summary("payment -> vend reported by the machine", s.pay_to_dispense);
        summary(
            "notification -> dispense command (server, ms res.)",
            server_side,
        );
        println!(
            "  server CPU {:.2} s = {:.3} ms per completed order; peak RSS {} MB",
            cpu,
            cpu * 1000.0 / s.completed.max(1) as f64,
            mem_kb(pid, "VmHWM") / 1024
        );
        // The budget is one signature + 1 ms; this machine's speed varies from hour to hour,
        // so its signature cost is measured now, beside the figures it judges.
        match rsa2048_sign_ms() {
            Some(sign) => println!(
                "  one RSA-2048 signature on this machine now: {sign:.3} ms (budget: signature + 1 ms = {:.3} ms)",
                sign + 1.0
            ),
            None => println!("  one RSA-2048 signature: could not be measured"),
        }
        let per_order = |secs: f64| secs * 1000.0 / s.completed.max(1) as f64;
        println!(
            "  CPU per order elsewhere: sandbox {:.3} ms, load generator {:.3} ms; whole machine {:.3} ms \
             (every process, the database included; {} cores)",
            per_order(others.0),
            per_order(others.1),
            per_order(others.2),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
    }

    // Phase 2: an idle fleet heartbeating every 30 s.
    if args.idle_machines > 0 {
        let before = mem_kb(pid, "VmRSS");
        let machines = provision(args.idle_machines, "ID", 10).await?;
        let mut fleet = Vec::with_capacity(machines.len());
        let t = Instant::now();
        for (code, secret) in &machines {
            let mut s = SimSettings::new(code, secret, &mqtt_host, mqtt_port);
            s.persistent_session = false;
            s.heartbeat_every = Duration::from_secs(30);
            fleet.push(MachineSim::start(s).await?);
        }
        println!(
            "idle fleet: {} machines connected in {:.1} s; server RSS {} MB (was {} MB)",
            fleet.len(),
            t.elapsed().as_secs_f64(),
            mem_kb(pid, "VmRSS") / 1024,
            before / 1024
        );
        let cpu0 = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(65)).await;
        let db = Db::connect(&database_url, false).await?;
        let online: i64 = openvend::store::query("SELECT COUNT(*) AS n FROM machines WHERE last_heartbeat_at IS NOT NULL AND code LIKE 'ID%'")
            .fetch_one(&db.pool)
            .await
            .map(|r| openvend::store::get_int(&r, "n").unwrap_or(0))?;
        println!(
            "  after two heartbeat rounds: {online} machines seen; server RSS {} MB, peak {} MB; CPU {:.1}% of one core",
            mem_kb(pid, "VmRSS") / 1024,
            mem_kb(pid, "VmHWM") / 1024,
            (cpu_seconds(pid) - cpu0) * 100.0 / 65.0
        );
    }
    drop(server);
    drop(sandbox);
    if let Some((base, schema)) = pg_schema {
        let admin = Db::connect(&base, false).await?;
        openvend::store::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin.pool)
            .await?;
    }
    Ok(())
}
