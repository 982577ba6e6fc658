//! `scrape`: what a Prometheus scrape of `/metrics` costs the server with N sessions up.
//! The sessions are plain echo sessions (no media needed: the scrape's work is per leg and
//! per session, whatever flows); the server's CPU time over `--scrapes` scrapes, per scrape.

use std::io::{Read, Write};
use std::net::TcpStream;

use sluice_bench::wsapi::{self, Api};

use super::*;

/// What `scrape` measured.
pub(super) struct Scraped {
    sessions: usize,
    scrapes: usize,
    bytes: usize,
    cpu_ns: Option<u64>,
    wall: Duration,
}

impl Scraped {
    pub(super) fn print(&self, m: &Machine, json: bool) {
        let per = |ns: u64| ns as f64 / self.scrapes as f64 / 1000.0;
        let cpu_us = self.cpu_ns.map(per);
        let wall_us = per(self.wall.as_nanos() as u64);
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "mode": "scrape", "sessions": self.sessions, "scrapes": self.scrapes,
                    "bytes": self.bytes, "server_cpu_us_per_scrape": cpu_us,
                    "wall_us_per_scrape": wall_us, "cpu": m.cpu_model, "cores": m.cores,
                    "kernel": m.kernel, "loadavg": m.loadavg,
                })
            );
            return;
        }
        println!(
            "machine: {} ({} cores), kernel {}, load {:.2}",
            m.cpu_model, m.cores, m.kernel, m.loadavg
        );
        println!(
            "scrape: {} sessions, {} scrapes of {} bytes: server CPU {} per scrape, {:.0} µs wall",
            self.sessions,
            self.scrapes,
            self.bytes,
            cpu_us.map_or("n/a".to_string(), |us| format!("{us:.0} µs")),
            wall_us,
        );
    }
}

/// One `GET /metrics` over a fresh connection; the body.
pub(super) fn get_metrics(host: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(wsapi::TIMEOUT))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .context("no end of headers in the reply")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("/metrics: {}", head.lines().next().unwrap_or_default());
    }
    if !body.contains("sluice_sessions") {
        bail!("/metrics has no sluice_sessions family");
    }
    Ok(body.to_string())
}

pub(super) fn run(args: &Args, api_url: &str, cpu: Option<&CpuSource>) -> anyhow::Result<Scraped> {
    let host = wsapi::authority(api_url)?.to_string();
    let mut api = Api::connect(api_url)?;
    eprintln!("loadgen: scrape: creating {} echo sessions", args.sessions);
    let mut ids = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        // Nobody sends to these addresses: the sessions only have to exist. RTCP muxed: one
        // socket a session, so 10,000 fit a 20,000-descriptor limit.
        let peer = SocketAddr::new(LOOPBACK, 2 * (1000 + (i % 30_000)) as u16);
        ids.push(
            api.create_echo(&sdp::offer_with(peer, i as u64, true))?
                .session_id,
        );
    }
    let bytes = get_metrics(&host)?.len();
    let scrapes = args.scrapes;
    let c0 = cpu_now(cpu);
    let start = Instant::now();
    for _ in 0..scrapes {
        get_metrics(&host)?;
    }
    let wall = start.elapsed();
    let c1 = cpu_now(cpu);
    let failed = api.destroy_all(&ids);
    if failed > 0 {
        eprintln!("loadgen: scrape: {failed} sessions could not be destroyed");
    }
    api.close();
    Ok(Scraped {
        sessions: args.sessions,
        scrapes,
        bytes,
        cpu_ns: c0.zip(c1).map(|(a, b)| b.saturating_sub(a)),
        wall,
    })
}
