//! Subcommands.

pub mod keygen;
pub mod sandbox;

use clap::{Parser, Subcommand};

/// OpenVend: a backend for Alipay-paid vending machines.
#[derive(Debug, Parser)]
#[command(name = "openvend", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the offline Alipay sandbox on its own.
    Sandbox(sandbox::Args),
    /// Generate an RSA-2048 app key pair in the formats Alipay's key tool writes.
    Keygen(keygen::Args),
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Keygen(args) => keygen::run(args),
    }
}
