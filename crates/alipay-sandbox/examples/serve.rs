//! Runs the sandbox from the command line until Ctrl-C or SIGTERM: a stand-in for
//! `openvend sandbox` while that command is being written.
//!
//! ```text
//! cargo run -p alipay-sandbox --example serve -- --listen 127.0.0.1:8090 --data ./sandbox-data \
//!     [--config sandbox.toml] [--app-id 2021000000000001 --app-public-key-file app_pub.pem] \
//!     [--notify-url http://127.0.0.1:3000/alipay/notify] [--time-factor 60] [--seed 7]
//! ```
//!
//! It prints `key=value` lines (`gateway_url`, `base_url`, `alipay_public_key_file`,
//! `alipay_public_key`, `app_id`) and then `ready`, so scripts can wait for it.

use std::path::PathBuf;

use alipay_sandbox::config::SandboxConfig;
use alipay_sandbox::{AppConfig, Sandbox, control};

#[derive(Debug, Default)]
struct Args {
    listen: Option<String>,
    data: Option<PathBuf>,
    config: Option<PathBuf>,
    app_id: Option<String>,
    app_public_key_file: Option<PathBuf>,
    notify_url: Option<String>,
    time_factor: Option<f64>,
    seed: Option<u64>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => args.listen = Some(value()?),
            "--data" => args.data = Some(value()?.into()),
            "--config" => args.config = Some(value()?.into()),
            "--app-id" => args.app_id = Some(value()?),
            "--app-public-key-file" => args.app_public_key_file = Some(value()?.into()),
            "--notify-url" => args.notify_url = Some(value()?),
            "--time-factor" => args.time_factor = Some(value()?.parse()?),
            "--seed" => args.seed = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "usage: serve [--listen ADDR] [--data DIR] [--config FILE] [--app-id ID --app-public-key-file FILE] [--notify-url URL] [--time-factor F] [--seed N]"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.app_id.is_some() != args.app_public_key_file.is_some() {
        anyhow::bail!("--app-id and --app-public-key-file go together");
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut config = match &args.config {
        Some(path) => SandboxConfig::from_toml_file(path)?,
        None => SandboxConfig::default(),
    };
    if let Some(dir) = &args.data {
        config.data_dir = Some(dir.clone());
    }
    if let Some(f) = args.time_factor {
        config.time_factor = f;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    let listen = args.listen.as_deref().unwrap_or("127.0.0.1:8090");
    let sandbox = Sandbox::build(config.clone(), listen).await?;
    let ctx = sandbox.ctx();
    if let (Some(app_id), Some(path)) = (&args.app_id, &args.app_public_key_file) {
        let public_key = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let app = control::register_app_config(
            &ctx,
            AppConfig {
                app_id: app_id.clone(),
                public_key,
                seller_pid: None,
                allowed_seller_ids: Vec::new(),
                notify_url: args.notify_url.clone(),
                gateway_notify_url: None,
                redirect_uris: Vec::new(),
                id_mode: Default::default(),
            },
        )?;
        println!("app_id={}", app.app_id);
        println!("seller_pid={}", app.seller_pid);
    }
    println!("gateway_url={}", sandbox.gateway_url());
    println!("base_url={}", ctx.base_url);
    if let Some(dir) = &config.data_dir {
        println!(
            "alipay_public_key_file={}",
            dir.join("alipay_public_key.txt").display()
        );
    }
    println!("alipay_public_key={}", ctx.public_key.to_spki_base64());
    println!("ready");
    let stop = sandbox.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    sandbox.run_until_stopped().await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
