//! `openvend sandbox`: the offline Alipay gateway on its own, for developing against Alipay.

use std::path::PathBuf;

use alipay_sandbox::Sandbox;
use alipay_sandbox::config::SandboxConfig;

/// Arguments of `sandbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(
        long,
        default_value = "127.0.0.1:9090",
        env = "OPENVEND_SANDBOX_LISTEN"
    )]
    listen: String,
    /// Data folder (state, the sandbox's key pair). Created if missing.
    #[arg(long, default_value = "./sandbox-data", env = "OPENVEND_SANDBOX_DATA")]
    data: PathBuf,
    /// A TOML file with sandbox settings (apps, notification schedule, time factor, …).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Register an app with this id at start (needs --app-public-key).
    #[arg(long, requires = "app_public_key")]
    app_id: Option<String>,
    /// File holding the app's public key (SPKI PEM or bare base64).
    #[arg(long)]
    app_public_key: Option<PathBuf>,
    /// Default notify URL of the app given with --app-id.
    #[arg(long)]
    notify_url: Option<String>,
    /// The URL the sandbox is reached at, if not http://<listen>.
    #[arg(long)]
    public_url: Option<String>,
}

/// Builds and runs the sandbox until Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => SandboxConfig::from_toml_file(path)?,
        None => SandboxConfig::default(),
    };
    config.data_dir = Some(args.data.clone());
    if args.public_url.is_some() {
        config.public_url = args.public_url.clone();
    }
    if let Some(app_id) = &args.app_id {
        let key_path = args
            .app_public_key
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--app-id needs --app-public-key"))?;
        let public_key = std::fs::read_to_string(key_path).map_err(|e| {
            anyhow::anyhow!("cannot read --app-public-key {}: {e}", key_path.display())
        })?;
        config.apps.push(alipay_sandbox::AppConfig {
            app_id: app_id.clone(),
            public_key,
            seller_pid: None,
            allowed_seller_ids: Vec::new(),
            notify_url: args.notify_url.clone(),
            gateway_notify_url: None,
            redirect_uris: Vec::new(),
            id_mode: Default::default(),
        });
    }
    let sandbox = Sandbox::build(config, &args.listen).await?;
    let ctx = sandbox.ctx();
    println!("OpenVend Alipay sandbox");
    println!("  gateway URL        {}", sandbox.gateway_url());
    println!("  control API        {}/control/info", ctx.base_url);
    println!(
        "  Alipay public key  {}",
        args.data.join("alipay_public_key.txt").display()
    );
    println!("  data folder        {}", args.data.display());
    let apps: Vec<(String, String)> = ctx
        .store()
        .data
        .apps
        .values()
        .map(|a| (a.app_id.clone(), a.seller_pid.clone()))
        .collect();
    if apps.is_empty() {
        println!(
            "  no apps yet: register one with POST /control/apps {{\"app_id\":…,\"public_key\":…}} or --app-id/--app-public-key"
        );
    }
    for (app_id, pid) in apps {
        println!("  app {app_id}  seller PID {pid}");
    }
    let token = sandbox.shutdown_token();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        token.cancel();
    });
    sandbox.run_until_stopped().await
}
