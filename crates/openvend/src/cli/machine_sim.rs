//! `openvend machine-sim`: simulated vending machines on the device channel. One machine
//! fetches its credentials from the operator API (or takes them as flags), connects over
//! MQTT, and either runs one scripted purchase (`--buy A1 --pay`) or reads commands from the
//! terminal. With `--count N`, N machines (the code given and the next ones: VM-0001,
//! VM-0002, …) connect at once and each runs the scripted purchase, or just stays online.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use crate::sim::{MachineSim, SimEvent, SimSettings};

/// Arguments of `machine-sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The machine code.
    #[arg(long, default_value = "VM-0001")]
    machine: String,
    /// OpenVend's base URL, to fetch the machine's credentials from the operator API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// File with the operator API token.
    #[arg(long, default_value = "./openvend-data/api_token")]
    token_file: PathBuf,
    /// The machine secret (skips the operator API; then `--mqtt` is needed too).
    #[arg(long, env = "OPENVEND_SIM_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The broker, `mqtt://host:port` (default: what the server says).
    #[arg(long)]
    mqtt: Option<String>,
    /// The Alipay sandbox, for `--pay` and the `pay` command.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    sandbox: String,
    /// Buy at once: slot or slot:qty, repeatable (`--buy A1 --buy A2:2`); exits when done.
    #[arg(long)]
    buy: Vec<String>,
    /// With `--buy`: pay the QR code as a sandbox buyer.
    #[arg(long)]
    pay: bool,
    /// With `--buy --pay`: go offline for this many seconds right after paying.
    #[arg(long)]
    offline_for: Option<u64>,
    /// Share of units that fail to drop (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Milliseconds the motor takes per unit.
    #[arg(long, default_value_t = 800)]
    vend_ms: u64,
    /// Start with the machine clock this many seconds off (the server corrects it beyond
    /// ±300 s with `sync_time`).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_skew: i64,
    /// Run this many machines: `--machine` and the codes after it (VM-0001, VM-0002, …).
    /// With `--buy`, each buys once and a summary is printed; without, they stay online and
    /// heartbeat until Ctrl-C.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    count: u32,
}

/// Runs the simulator.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        anyhow::bail!("--fail-rate must be between 0 and 1");
    }
    let items = parse_items(&args.buy)?;
    if args.secret.is_some() && args.mqtt.is_none() {
        // Ignoring it would ask the operator API instead, and run with another secret.
        anyhow::bail!("--secret needs --mqtt mqtt://host:port (the broker to connect to)");
    }
    if args.count > 1 && args.secret.is_some() {
        anyhow::bail!("--count takes each machine's secret from the operator API; drop --secret");
    }
    if args.count > 1 {
        return fleet(&args, &items).await;
    }
    let (secret, mqtt, page) = credentials(&args, &args.machine).await?;
    let (host, port) = parse_mqtt(&mqtt)?;
    let mut settings = SimSettings::new(&args.machine, &secret, &host, port);
    settings.fail_rate = args.fail_rate;
    settings.vend_time = Duration::from_millis(args.vend_ms);
    settings.seed = crate::services::now_ms().unsigned_abs();
    settings.clock_skew_ms = args.clock_skew.saturating_mul(1000);
    let (sim, mut events) = MachineSim::start(settings).await?;
    println!("machine {} online at {mqtt}", args.machine);
    if items.is_empty() {
        if let Some(page) = page {
            // What is printed on the machine: buyers scan it with the Alipay app.
            println!("the machine's own QR code (its H5 page, {page}):");
            draw_qr(&page);
        }
        return interactive(&args, &sim, &mut events).await;
    }
    let borrowed: Vec<(&str, u32)> = items.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    sim.buy(&borrowed).await?;
    loop {
        let Some(ev) = tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .context("no answer from the server in 120 s")?
        else {
            anyhow::bail!("the machine stopped");
        };
        match ev {
            SimEvent::ShowQr {
                qr_code,
                amount_fen,
                order_id,
            } => {
                show_qr(&order_id, &qr_code, amount_fen);
                if args.pay {
                    let paid = pay(&args.sandbox, &qr_code).await?;
                    println!("paid as sandbox buyer: {paid}");
                    if let Some(secs) = args.offline_for {
                        println!("going offline for {secs} s");
                        sim.go_offline().await;
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                        sim.go_online().await?;
                        println!("back online");
                    }
                } else {
                    println!("scan it with the sandbox (open the URL) or pay with --pay");
                }
            }
            SimEvent::SaleRefused { reason, .. } => anyhow::bail!("sale refused: {reason}"),
            SimEvent::Dispensed { items, order_id } => {
                print_dispensed(&order_id, &items);
                return settle(&sim).await;
            }
            SimEvent::Cancelled { order_id } => {
                println!("order {order_id} cancelled (not paid in time)");
                return settle(&sim).await;
            }
            SimEvent::Refused { reason, .. } => println!("command refused: {reason}"),
            SimEvent::ClockSet { skew_ms } => println!("clock set by the server ({skew_ms} ms)"),
            SimEvent::PowerLost { order_id } => {
                println!("power lost while vending order {order_id}");
                return settle(&sim).await;
            }
            SimEvent::Online => {}
        }
    }
}

/// Before the machine stops: its last events (the dispense result) must reach the broker,
/// or the process would end with them still queued and the order would wait for a result.
async fn settle(sim: &MachineSim) -> anyhow::Result<()> {
    if !sim.settle(Duration::from_secs(10)).await {
        eprintln!(
            "the broker has not acknowledged the machine's last events in 10 s; a real machine \
             sends them again when it is back"
        );
    }
    Ok(())
}

async fn interactive(
    args: &Args,
    sim: &MachineSim,
    events: &mut mpsc::UnboundedReceiver<SimEvent>,
) -> anyhow::Result<()> {
    println!("commands: buy SLOT [QTY] | pay | offline | online | fault CODE TEXT | quit");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut last_qr: Option<String> = None;
    // Without a terminal (stdin closed) the machine keeps serving until Ctrl-C or SIGTERM.
    let mut stdin_open = true;
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            ev = events.recv() => match ev {
                Some(SimEvent::ShowQr { order_id, qr_code, amount_fen }) => {
                    show_qr(&order_id, &qr_code, amount_fen);
                    last_qr = Some(qr_code);
                }
                Some(SimEvent::Dispensed { order_id, items }) => print_dispensed(&order_id, &items),
                Some(SimEvent::SaleRefused { reason, .. }) => println!("sale refused: {reason}"),
                Some(SimEvent::Cancelled { order_id }) => println!("order {order_id} cancelled"),
                Some(SimEvent::Refused { reason, command_id }) => println!("command {command_id} refused: {reason}"),
                Some(SimEvent::PowerLost { order_id }) => println!("power lost while vending order {order_id}"),
                Some(SimEvent::Online) => println!("online"),
                Some(SimEvent::ClockSet { skew_ms }) => println!("clock set by the server ({skew_ms} ms)"),
                None => return Ok(()),
            },
            line = lines.next_line(), if stdin_open => {
                let Some(line) = line? else {
                    stdin_open = false;
                    continue;
                };
                let words: Vec<&str> = line.split_whitespace().collect();
                let result = match words.as_slice() {
                    ["buy", slot] => sim.buy(&[(slot, 1)]).await.map(|_| ()),
                    ["buy", slot, qty] => match qty.parse() {
                        Ok(q) => sim.buy(&[(slot, q)]).await.map(|_| ()),
                        Err(_) => Err(anyhow::anyhow!("quantity must be a number")),
                    },
                    ["pay"] => match &last_qr {
                        Some(qr) => pay(&args.sandbox, qr).await.map(|p| println!("paid: {p}")),
                        None => Err(anyhow::anyhow!("no QR code shown yet")),
                    },
                    ["offline"] => {
                        sim.go_offline().await;
                        println!("offline");
                        Ok(())
                    }
                    ["online"] => sim.go_online().await,
                    ["fault", code, rest @ ..] => sim.fault(code, &rest.join(" ")).await,
                    ["quit"] | ["exit"] => return Ok(()),
                    [] => Ok(()),
                    _ => Err(anyhow::anyhow!("unknown command")),
                };
                if let Err(e) = result {
                    println!("error: {e}");
                }
            }
        }
    }
}

/// The `n`-th code after `first`: its trailing number counted up, width kept
/// (`VM-0009` + 1 = `VM-0010`).
fn nth_code(first: &str, n: u32) -> anyhow::Result<String> {
    let digits = first.len() - first.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        anyhow::bail!("--count needs a --machine code ending in a number (VM-0001)");
    }
    let (prefix, number) = first.split_at(first.len() - digits);
    let start: u64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("--machine {first}: number too long"))?;
    Ok(format!("{prefix}{:0digits$}", start + u64::from(n)))
}

/// `--count N`: N machines at once.
async fn fleet(args: &Args, items: &[(String, u32)]) -> anyhow::Result<()> {
    let codes: Vec<String> = (0..args.count)
        .map(|n| nth_code(&args.machine, n))
        .collect::<anyhow::Result<_>>()?;
    let mut sims = Vec::with_capacity(codes.len());
    for code in &codes {
        let (secret, mqtt, _) = credentials(args, code).await?;
        let (host, port) = parse_mqtt(&mqtt)?;
        let mut settings = SimSettings::new(code, &secret, &host, port);
        settings.fail_rate = args.fail_rate;
        settings.vend_time = Duration::from_millis(args.vend_ms);
        settings.seed = crate::services::now_ms().unsigned_abs() ^ u64::from(sims.len() as u32);
        settings.clock_skew_ms = args.clock_skew.saturating_mul(1000);
        sims.push(
            MachineSim::start(settings)
                .await
                .with_context(|| format!("machine {code}"))?,
        );
    }
    println!(
        "{} machines online ({} … {})",
        sims.len(),
        codes[0],
        codes[codes.len() - 1]
    );
    if items.is_empty() {
        super::shutdown_signal().await;
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for (sim, mut events) in sims {
        let items = items.to_vec();
        let (sandbox, pay_it) = (args.sandbox.clone(), args.pay);
        runs.spawn(async move {
            let borrowed: Vec<(&str, u32)> = items.iter().map(|(s, q)| (s.as_str(), *q)).collect();
            sim.buy(&borrowed).await?;
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(120), events.recv())
                    .await
                    .context("no answer in 120 s")?
                    .context("the machine stopped")?;
                match ev {
                    SimEvent::ShowQr { qr_code, .. } if pay_it => {
                        pay(&sandbox, &qr_code).await?;
                    }
                    SimEvent::ShowQr { .. } => return Ok::<_, anyhow::Error>("shown"),
                    SimEvent::Dispensed { items, .. } => {
                        let ok = items
                            .iter()
                            .all(|i| i.result == crate::device::protocol::VendOutcome::Dispensed);
                        return Ok(if ok { "dispensed" } else { "partly failed" });
                    }
                    SimEvent::SaleRefused { .. } => return Ok("refused"),
                    SimEvent::Cancelled { .. } => return Ok("cancelled"),
                    _ => {}
                }
            }
        });
    }
    let mut outcomes: std::collections::BTreeMap<String, u32> = Default::default();
    while let Some(done) = runs.join_next().await {
        let key = match done {
            Ok(Ok(outcome)) => outcome.to_owned(),
            Ok(Err(e)) => format!("error: {e}"),
            Err(e) => format!("error: {e}"),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    println!(
        "{} sales in {:.1} s: {outcomes:?}",
        args.count,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn parse_items(specs: &[String]) -> anyhow::Result<Vec<(String, u32)>> {
    specs
        .iter()
        .map(|s| match s.split_once(':') {
            None => Ok((s.clone(), 1)),
            Some((slot, qty)) => qty
                .parse()
                .map(|q| (slot.to_owned(), q))
                .map_err(|_| anyhow::anyhow!("--buy {s}: use SLOT or SLOT:QTY")),
        })
        .collect()
}

fn parse_mqtt(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| anyhow::anyhow!("--mqtt {url}: use mqtt://host:port"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--mqtt {url}: missing port"))?;
    let port = port
        .parse()
        .map_err(|_| anyhow::anyhow!("--mqtt {url}: bad port"))?;
    Ok((host.to_owned(), port))
}

/// The secret, the broker and (from the operator API) the machine's H5 page: from the
/// flags, or from the operator API.
async fn credentials(
    args: &Args,
    machine: &str,
) -> anyhow::Result<(String, String, Option<String>)> {
    if let (Some(secret), Some(mqtt)) = (&args.secret, &args.mqtt) {
        return Ok((secret.clone(), mqtt.clone(), None));
    }
    let token = std::fs::read_to_string(&args.token_file).with_context(|| {
        format!(
            "reading the operator token from {} (or pass --secret and --mqtt)",
            args.token_file.display()
        )
    })?;
    let url = format!(
        "{}/api/v1/machines/{}/credentials",
        args.server.trim_end_matches('/'),
        machine
    );
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .with_context(|| format!("asking {url}; is `openvend serve` running?"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{url}: {status} {}", body["error"]);
    }
    let secret = body["secret"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("{url}: no secret in the answer"))?
        .to_owned();
    let mqtt = match &args.mqtt {
        Some(m) => m.clone(),
        None => body["device"]["mqtt_url"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("{url}: no mqtt_url in the answer"))?
            .to_owned(),
    };
    let page = body["h5_url"].as_str().map(str::to_owned);
    Ok((secret, mqtt, page))
}

/// Pays a QR code in the sandbox as a new buyer with a balance.
pub async fn pay(sandbox: &str, qr_code: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let base = sandbox.trim_end_matches('/');
    let buyer: serde_json::Value = http
        .post(format!("{base}/control/buyers"))
        .json(&serde_json::json!({ "balance": "100.00" }))
        .send()
        .await
        .with_context(|| format!("reaching the sandbox at {base}"))?
        .json()
        .await?;
    let buyer_id = buyer["user_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the sandbox made no buyer: {buyer}"))?;
    let response = http
        .post(format!("{base}/control/qr/pay"))
        .json(&serde_json::json!({ "qr_code": qr_code, "buyer_id": buyer_id }))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("the sandbox refused the payment: {}", body["error"]);
    }
    Ok(format!("{buyer_id} paid trade {}", body["trade_no"]))
}

fn show_qr(order_id: &str, qr_code: &str, amount_fen: i64) {
    println!(
        "order {order_id}: pay ¥{}.{:02}",
        amount_fen / 100,
        amount_fen % 100
    );
    draw_qr(qr_code);
    println!("{qr_code}");
}

fn draw_qr(content: &str) {
    match qrcode::QrCode::new(content.as_bytes()) {
        Ok(code) => println!(
            "{}",
            code.render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build()
        ),
        Err(e) => println!("(cannot draw the code: {e})"),
    }
}

fn print_dispensed(order_id: &str, items: &[crate::device::protocol::ItemResult]) {
    for i in items {
        match &i.reason {
            Some(r) => println!("order {order_id}: {} {:?} ({r})", i.slot, i.result),
            None => println!("order {order_id}: {} {:?}", i.slot, i.result),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_codes_count_up_from_the_first_keeping_the_width() {
        assert_eq!(nth_code("VM-0001", 0).unwrap(), "VM-0001");
        assert_eq!(nth_code("VM-0009", 1).unwrap(), "VM-0010");
        assert_eq!(nth_code("VM-9999", 1).unwrap(), "VM-10000");
        assert!(nth_code("VM-", 1).is_err());
    }

    #[test]
    fn items_are_slot_or_slot_and_quantity() {
        assert_eq!(
            parse_items(&["A1".into(), "B2:3".into()]).unwrap(),
            [("A1".to_owned(), 1), ("B2".to_owned(), 3)]
        );
        assert!(parse_items(&["A1:x".into()]).is_err());
    }
}
