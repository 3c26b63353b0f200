//! Gateway throughput: how many signed calls per second the sandbox serves on this machine,
//! with the load generator on the same cores.
//!
//! Every call is real: the client signs (RSA-2048), the sandbox verifies the signature,
//! runs the API and signs its answer, the client verifies that. Run in release mode:
//!
//! ```sh
//! cargo run --release -p alipay-sandbox --example gateway_load -- [seconds] [concurrency]
//! ```

use std::time::{Duration, Instant};

use alipay::api::trade::{Precreate, Query};
use alipay::{AppPrivateKey, CallOptions, Client, Config, Outcome, Verification};
use alipay_sandbox::config::SandboxConfig;
use alipay_sandbox::{AppConfig, Sandbox};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let concurrency: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);

    let sandbox = Sandbox::build(
        SandboxConfig {
            demo_buyers: 1,
            ..SandboxConfig::default()
        },
        "127.0.0.1:0",
    )
    .await?;
    let ctx = sandbox.ctx();
    let key = AppPrivateKey::generate()?;
    alipay_sandbox::control::register_app_config(
        &ctx,
        AppConfig {
            app_id: "2021000000000777".into(),
            public_key: key.public_key().to_spki_base64(),
            seller_pid: None,
            allowed_seller_ids: Vec::new(),
            notify_url: None,
            gateway_notify_url: None,
            redirect_uris: Vec::new(),
            id_mode: Default::default(),
        },
    )?;
    let mut config = Config::new("2021000000000777");
    config.gateway_url = sandbox.gateway_url();
    config.retry = alipay::retry::RetryPolicy::NONE;
    let client = Client::new(config, key, Verification::PublicKey(ctx.public_key.clone()))?;
    let stop = sandbox.shutdown_token();
    tokio::spawn(sandbox.run_until_stopped());

    // One trade to query; precreates make new ones as the load runs.
    let seed = Precreate::new("load_seed", "1.00".parse()?, "load");
    if !client
        .execute(&seed, &CallOptions::default())
        .await
        .is_success()
    {
        anyhow::bail!("seed precreate failed");
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                // Four queries for every precreate, roughly a vending workload's mix.
                let ok = if n.is_multiple_of(5) {
                    let p = Precreate::new(
                        format!("load_{worker}_{n}"),
                        "3.50".parse().unwrap_or_default(),
                        "load",
                    );
                    client
                        .execute(&p, &CallOptions::default())
                        .await
                        .is_success()
                } else {
                    // Not scanned yet: a definite, signed ACQ.TRADE_NOT_EXIST answer.
                    !matches!(
                        client
                            .execute(
                                &Query::by_out_trade_no("load_seed"),
                                &CallOptions::default()
                            )
                            .await,
                        Outcome::Unknown(_)
                    )
                };
                latencies.push(t.elapsed());
                if !ok {
                    failures += 1;
                }
                n += 1;
            }
            (latencies, failures)
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await?;
        all.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
    stop.cancel();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "gateway load: {seconds}s, {concurrency} concurrent clients, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("  calls          {}", all.len());
    println!("  failures       {failures}");
    println!("  calls/s        {:.0}", all.len() as f64 / elapsed);
    println!(
        "  latency p50    {:.2} ms",
        pct(0.50).as_secs_f64() * 1000.0
    );
    println!(
        "  latency p99    {:.2} ms",
        pct(0.99).as_secs_f64() * 1000.0
    );
    if let Some(cpu) = cpu {
        println!(
            "  CPU            {cpu:.1} s for client and sandbox together ({:.3} ms per call)",
            cpu * 1000.0 / all.len().max(1) as f64
        );
    }
    Ok(())
}

/// User + system CPU seconds of this process, from /proc (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
