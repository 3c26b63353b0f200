//! The `openvend` command: a thin `main` that parses the command line, sets up logging and
//! hands over to the subcommand.

#![forbid(unsafe_code)]

use openvend::cli;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPENVEND_LOG")
        // The embedded broker logs every connection at info; its warnings are enough.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("openvend: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
