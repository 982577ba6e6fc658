//! What the `sluice` binary runs: settings from flags, `SLUICE_*` variables, a TOML file and
//! embedded defaults (in that order of precedence), logs, the server, and signals. In the
//! library so that tests can build the same program as a binary of their own (a cluster of
//! real processes).
//!
//! Signals: SIGINT stops at once (sessions destroyed with `process_down`, exit 0). SIGTERM does
//! the same with `--drain-timeout 0`; with more, it starts a drain and the process exits 0
//! when the drain ends (last session gone, or the timeout). A signal during a drain (SIGTERM's
//! or the `media/node/drain` command's) stops at once.

use std::io::Write;

use crate::cli::Cli;
use crate::config::{Layer, LogFormat};
use anyhow::Context;
use clap::Parser;

/// Runs `sluice` with the process's arguments until it must stop.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(path) => Layer::from_file(path)?,
        None => Layer::default(),
    };
    let config = cli.layer().over(file).resolve()?;
    init_logs(config.log_format);
    let drain_on_term = !config.drain_timeout.is_zero();
    let running = crate::spawn(config).context("cannot start sluice")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", running.ready_line())?;
        out.flush()?;
    }
    tracing::info!("{}", running.ready_line());

    wait_for_stop(&running, drain_on_term)?;
    running.shutdown();
    tracing::info!("stopped");
    Ok(())
}

/// Log lines on stderr, filtered by `RUST_LOG` (default `info`): text, or one JSON object per
/// line whose `span` holds the `session_id` of a line about a session.
fn init_logs(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Blocks until the server must stop: SIGINT, SIGTERM (unless it starts a drain), a signal
/// during a drain, or the end of a drain.
fn wait_for_stop(running: &crate::Running, drain_on_term: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = term.recv() => {
                    if drain_on_term && running.drain() {
                        tracing::info!("SIGTERM: draining (a second signal stops at once)");
                        continue;
                    }
                    tracing::info!("SIGTERM: stopping");
                }
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
                _ = running.stopped() => tracing::info!("drain finished"),
            }
            return Ok(());
        }
    })
}
