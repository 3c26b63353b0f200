//! `openvend serve`: the main job.

use std::path::PathBuf;

use crate::app::App;
use crate::config::Settings;

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A TOML settings file; `OPENVEND_*` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Builds the app from defaults, the file and the environment, prints where things are, and
/// serves until Ctrl-C or SIGTERM, on a runtime of `worker_threads` threads.
pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref(), std::env::vars())?;
    super::runtime(Some(settings.worker_threads))?.block_on(serve(settings))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let data_dir = settings.data_dir.clone();
    // The token is in a file only when it was not configured.
    let token_file = settings
        .api_token
        .is_none()
        .then(|| data_dir.join("api_token"));
    let app = App::build(settings).await?;
    println!("OpenVend is running");
    println!("  HTTP              {}", app.public_url);
    println!("  data folder       {}", data_dir.display());
    match &token_file {
        Some(file) => println!(
            "  operator API      {}/api/v1 (token in {})",
            app.public_url,
            file.display()
        ),
        None => println!(
            "  operator API      {}/api/v1 (token: the configured api_token)",
            app.public_url
        ),
    }
    match app.sandbox_url() {
        Some(url) => {
            println!("  Alipay            embedded sandbox at {url} (gateway {url}/gateway.do)");
            println!("  sandbox control   {url}/control/info");
        }
        None => println!("  Alipay            {}", app.alipay.config().gateway_url),
    }
    println!(
        "  machines (MQTT)   {}{}",
        app.services.mqtt_url,
        if app.mqtt_embedded {
            " (embedded broker; a machine logs in with its code and secret)"
        } else {
            ""
        }
    );
    println!(
        "  machines (HTTP)   {}{}",
        app.public_url,
        crate::device::http::EVENTS_PATH
    );
    if let (Some(sandbox), Some(file)) = (app.sandbox_url(), &token_file) {
        println!();
        println!("Buy something from the demo machine, in another terminal:");
        println!(
            "  cargo run --release -- machine-sim --server {} --sandbox {sandbox} --token-file {} --machine VM-0001 --buy A1 --pay",
            app.public_url,
            file.display()
        );
    }
    let token = app.shutdown_token();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        token.cancel();
    });
    app.run_until_stopped().await
}
