//! `sluice`: the media server binary. Settings come from flags, `SLUICE_*` variables, a TOML
//! file and embedded defaults, in that order of precedence.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use sluice_control::cli::Cli;
use sluice_control::config::Layer;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let file = match &cli.config {
        Some(path) => Layer::from_file(path)?,
        None => Layer::default(),
    };
    let config = cli.layer().over(file).resolve()?;
    let running = sluice_control::spawn(config).context("cannot start sluice")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", running.ready_line())?;
        out.flush()?;
    }
    tracing::info!("{}", running.ready_line());

    wait_for_signal()?;
    tracing::info!("signal received, stopping");
    running.shutdown();
    tracing::info!("stopped");
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}
