//! Subcommands.

pub mod keygen;
pub mod machine_sim;
pub mod sandbox;
pub mod serve;

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
    /// Run OpenVend (embedded defaults: SQLite, the Alipay sandbox and a demo fleet).
    Serve(serve::Args),
    /// Run the offline Alipay sandbox on its own.
    Sandbox(sandbox::Args),
    /// Generate an RSA-2048 app key pair in the formats Alipay's key tool writes.
    Keygen(keygen::Args),
    /// Run a simulated vending machine against a running OpenVend.
    MachineSim(machine_sim::Args),
}

/// Runs the chosen subcommand on a runtime built for it: `serve` sizes its own from its
/// settings; the others take one worker per core.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Sandbox(args) => runtime(None)?.block_on(sandbox::run(args)),
        Command::Keygen(args) => keygen::run(args),
        Command::MachineSim(args) => runtime(None)?.block_on(machine_sim::run(args)),
    }
}

/// A runtime of `threads` workers, or one per core. One worker is a current-thread runtime:
/// every task runs on the calling thread, without the multi-threaded scheduler's hand-offs.
fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    Ok(builder.enable_all().build()?)
}

/// Resolves on Ctrl-C or SIGTERM (what service managers and CI send).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
