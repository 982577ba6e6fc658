//! `sluice`: the media server binary. Settings come from flags, `SLUICE_*` variables, a TOML
//! file and embedded defaults, in that order of precedence.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sluice_control::config::Layer;

/// Sluice media server: RTP forwarder (echo, proxy, SFU) driven by the NkMedia JSON session API
/// over WebSocket.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// API listen address (port 0 = any free port) [default: 127.0.0.1:9010]
    #[arg(long, env = "SLUICE_API", value_name = "ADDR")]
    api: Option<String>,
    /// Address media sockets bind to [default: 127.0.0.1]
    #[arg(long, env = "SLUICE_MEDIA_IP", value_name = "IP")]
    media_ip: Option<String>,
    /// Address announced in SDP, for 1:1 NAT [default: the media ip]
    #[arg(long, env = "SLUICE_PUBLIC_IP", value_name = "IP")]
    public_ip: Option<String>,
    /// UDP port range for media, inclusive [default: 20000-29999]
    #[arg(long, env = "SLUICE_RTP_PORTS", value_name = "LO-HI")]
    rtp_ports: Option<String>,
    /// Data-plane worker threads, each pinned to a core [default: number of cores]
    #[arg(long, env = "SLUICE_WORKERS", value_name = "N")]
    workers: Option<usize>,
    /// I/O backend: auto (io_uring, else recvmmsg/sendmmsg), uring or mmsg [default: auto]
    #[arg(long, env = "SLUICE_IO", value_name = "auto|uring|mmsg")]
    io: Option<String>,
    /// Recordings folder [default: ./recordings]
    #[arg(long, env = "SLUICE_RECORD_DIR", value_name = "DIR")]
    record_dir: Option<PathBuf>,
    /// API secret: when set, clients must log in with it as password [default: none]
    #[arg(
        long,
        env = "SLUICE_API_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    api_secret: Option<String>,
    /// Seconds that sessions outlive the API connection that created them [default: 5]
    #[arg(long, env = "SLUICE_DISCONNECT_GRACE", value_name = "SECONDS")]
    disconnect_grace: Option<f64>,
    /// io_uring: microseconds a busy worker may wait to gather more datagrams per round
    /// (0 = never; bounds the added latency) [default: 500]
    #[arg(long, env = "SLUICE_BATCH_WAIT_US", value_name = "MICROSECONDS")]
    batch_wait_us: Option<u64>,
    /// Deliver all of a worker's media ports to one socket through BPF sk_lookup
    /// where the kernel allows it (CAP_NET_ADMIN + CAP_BPF), on or off [default: on]
    #[arg(long, env = "SLUICE_STEER", value_name = "on|off")]
    steer: Option<String>,
    /// Send every leg's media through raw sockets, one per worker and family, with the leg's own
    /// address and port, where the kernel allows it (CAP_NET_RAW + CAP_NET_ADMIN), on or off
    /// [default: on]
    #[arg(long, env = "SLUICE_RAW_SEND", value_name = "on|off")]
    raw_send: Option<String>,
    /// TOML config file with the same keys in snake_case, e.g. rtp_ports = "20000-29999"
    /// [default: none]
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl Cli {
    fn layer(&self) -> Layer {
        Layer {
            api: self.api.clone(),
            media_ip: self.media_ip.clone(),
            public_ip: self.public_ip.clone(),
            rtp_ports: self.rtp_ports.clone(),
            workers: self.workers,
            io: self.io.clone(),
            record_dir: self.record_dir.clone(),
            api_secret: self.api_secret.clone(),
            disconnect_grace: self.disconnect_grace,
            batch_wait_us: self.batch_wait_us,
            pin_workers: None,
            steer: self.steer.clone(),
            raw_send: self.raw_send.clone(),
        }
    }
}

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
