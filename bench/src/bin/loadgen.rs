//! loadgen: drives a running sluice over loopback through its WebSocket API and measures
//! delivered packets/s, loss, latency and the server's CPU time per forwarded packet.
//! See bench/README.md; `loadgen --help` lists the options.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sluice_bench::cli::{Args, Mode, Target as Forwarder};
use sluice_bench::procstat::{CpuSource, Machine, find_pids, thread_delta, thread_times};
use sluice_bench::report::{self, Row};
use sluice_bench::server::Server;
use sluice_bench::traffic::{self, Load, Target, Transform};
use sluice_bench::webrtc::{self, Peer, ServerTransport, SrtpStreams};
use sluice_bench::wsapi::Api;
use sluice_bench::{churn, sdp, sys};
use sluice_control::webrtc::cert::Certificate;
use sluice_control::webrtc::ice::IceCredentials;
use sluice_dataplane::srtp::{Profile, SessionKeys};

#[path = "loadgen/cluster.rs"]
mod cluster;
#[path = "loadgen/data.rs"]
mod data;
#[path = "loadgen/echo.rs"]
mod echo;
#[path = "loadgen/fanout.rs"]
mod fanout;
#[path = "loadgen/proxy.rs"]
mod proxy;
#[path = "loadgen/scrape.rs"]
mod scrape;
#[path = "loadgen/srtp_echo.rs"]
mod srtp_echo;
#[path = "loadgen/webrtc_av.rs"]
mod webrtc_av;

use echo::{echo_sluice, echo_sluice_with};
use fanout::fanout_sluice;
use srtp_echo::{SrtpInfo, srtp_echo_sluice};

/// Kernel buffer per socket: a few thousand queued datagrams.
const SOCKET_BUFFER: usize = 8 << 20;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Budget of one session's ICE + DTLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Consent checks during the load: RFC 7675 expires consent after 30 s without one.
const CONSENT_INTERVAL: Duration = Duration::from_secs(5);

fn bind_sockets(n: usize) -> anyhow::Result<Vec<UdpSocket>> {
    (0..n)
        .map(|_| {
            sys::bind_udp(SocketAddr::new(LOOPBACK, 0), SOCKET_BUFFER)
                .context("binding a UDP socket")
        })
        .collect()
}

/// CPU time so far, or `None` (with a warning) when it cannot be read.
fn cpu_now(src: Option<&CpuSource>) -> Option<u64> {
    let src = src?;
    src.cpu_ns()
        .map_err(|e| eprintln!("loadgen: no CPU accounting: {e:#}"))
        .ok()
}

/// A short load first: proves the path works and lets latching settle before measuring.
fn warm_up(
    send: &[UdpSocket],
    recv: &[UdpSocket],
    targets: &[Target],
    copies: u64,
    cpu: Option<usize>,
    transform: Option<&mut dyn Transform>,
) -> anyhow::Result<()> {
    let load = Load {
        rate: (targets.len() as u64 * 20).clamp(1_000, 20_000),
        size: traffic::MIN_SIZE,
        duration: Duration::from_millis(200),
        drain: Duration::from_millis(500),
        copies,
        cpu,
    };
    let out = traffic::run_with(send, recv, targets, &load, transform);
    if out.received == 0 {
        bail!(
            "warm-up: none of {} packets came back ({} stray datagrams, {} failed to unprotect); \
             is the media path up?",
            out.sent,
            out.stray,
            out.unprotect_failed
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure(
    target: &str,
    args: &Args,
    streams: usize,
    copies: u64,
    send: &[UdpSocket],
    recv: &[UdpSocket],
    targets: &[Target],
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
    mut transform: Option<&mut dyn Transform>,
) -> anyhow::Result<Row> {
    warm_up(
        send,
        recv,
        targets,
        copies,
        gen_cpu,
        match &mut transform {
            Some(t) => Some(&mut **t),
            None => None,
        },
    )?;
    eprintln!(
        "loadgen: {target}: {} pkt/s for {:.1} s over {streams} streams",
        args.rate,
        args.duration.as_secs_f64()
    );
    let pid = match cpu {
        Some(CpuSource::Process(pid)) => Some(*pid),
        _ => None,
    };
    let start = Instant::now();
    let t0 = pid.map(thread_times).unwrap_or_default();
    let c0 = cpu_now(cpu);
    let srtp = transform.is_some();
    let load = args.load(copies, gen_cpu);
    let outcome = traffic::run_with(send, recv, targets, &load, transform);
    let c1 = cpu_now(cpu);
    let t1 = pid.map(thread_times).unwrap_or_default();
    Ok(Row {
        target: target.into(),
        mode: match args.mode {
            _ if srtp => "srtp-echo".into(),
            Mode::Fanout => "fanout".into(),
            Mode::Echo | Mode::SrtpEcho | Mode::Reflector => "echo".into(),
            Mode::Churn => "churn".into(),
            Mode::Proxy => "proxy".into(),
            Mode::Scrape => "scrape".into(),
            Mode::Data => "data".into(),
            Mode::Cluster => "cluster".into(),
            Mode::WebrtcEcho => "webrtc-echo".into(),
            Mode::WebrtcRoom => "webrtc-room".into(),
        },
        streams,
        rate: args.rate,
        copies,
        outcome,
        cpu_ns: c0.zip(c1).map(|(a, b)| b.saturating_sub(a)),
        window: start.elapsed(),
        threads: thread_delta(&t0, &t1),
        mem_per_stream: None,
        alive: None,
    })
}

/// The reflector under `args`' load: one row (the proxy mode's reflector target, which is
/// the same echo).
fn reflector_row(args: &Args, gen_cpu: Option<usize>) -> anyhow::Result<Row> {
    let mut plain = args.clone();
    plain.saturate = false;
    proxy::with_reflector(&plain, gen_cpu)?
        .pop()
        .context("the reflector measured nothing")
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        // `--help` prints the help and succeeds; anything else is an error.
        Err(e) if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") => {
            println!("{e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let machine = Machine::detect();
    // Sluice pins worker 0 to cpu 0; the load runs on the last core, away from it.
    let gen_cpu = args
        .gen_cpu
        .or((machine.cores > 1).then(|| machine.cores - 1));
    if args.mode == Mode::Cluster {
        // It starts its own Redis and nodes, and prints its own tables.
        return cluster::run(&args, &machine, gen_cpu);
    }
    if args.mode == Mode::Data {
        // Its own sessions, peers and table; it spawns the server itself.
        return data::run(&args, &machine, gen_cpu);
    }
    let mut server = match &args.spawn {
        Some(path)
            if args.mode != Mode::Reflector
                && (args.mode != Mode::Proxy || args.targets.contains(&Forwarder::Sluice)) =>
        {
            Some(Server::spawn(path, &args.spawn_args())?)
        }
        _ => None,
    };
    let api_url = server
        .as_ref()
        .map_or_else(|| args.api.clone(), |s| s.ready.api.clone());
    // webrtc-echo/-room --janus: the server measured is Janus.
    let name = if args.janus.is_some() {
        "janus"
    } else {
        "sluice"
    };
    let pid = args.pid.or(server.as_ref().map(Server::pid)).or_else(|| match find_pids(name).as_slice() {
        [pid] => Some(*pid),
        [] => None,
        many => {
            eprintln!("loadgen: several processes named {name} ({many:?}); pass --pid for CPU accounting");
            None
        }
    });
    let cpu = pid.map(CpuSource::Process);
    let mut rows = Vec::new();
    let mut srtp = None;
    let mut churned = None;
    let mut scraped = None;
    let result = (|| -> anyhow::Result<()> {
        match args.mode {
            Mode::Echo => {
                rows.push(echo_sluice(
                    &args,
                    &api_url,
                    cpu.as_ref(),
                    gen_cpu,
                    args.sockets,
                )?);
                if args.record {
                    rows.push(echo_sluice_with(
                        &args,
                        &api_url,
                        cpu.as_ref(),
                        gen_cpu,
                        args.sockets,
                        true,
                    )?);
                }
            }
            Mode::SrtpEcho => {
                let (row, info) = srtp_echo_sluice(&args, &api_url, cpu.as_ref(), gen_cpu)?;
                rows.push(row);
                srtp = Some(info);
                if args.baseline {
                    // Plain RTP under the same load, with as many sockets as sessions.
                    rows.push(echo_sluice(
                        &args,
                        &api_url,
                        cpu.as_ref(),
                        gen_cpu,
                        args.sessions,
                    )?);
                }
            }
            Mode::Fanout => rows.push(fanout_sluice(&args, &api_url, cpu.as_ref(), gen_cpu)?),
            Mode::Reflector => {}
            Mode::Data => bail!("data runs on its own"),
            Mode::Proxy => {
                let sluice = args
                    .targets
                    .contains(&Forwarder::Sluice)
                    .then_some((api_url.as_str(), cpu.as_ref()));
                rows.extend(proxy::run(&args, sluice, gen_cpu)?);
            }
            Mode::Churn => {
                let opts = churn::Options::from_args(&args, &api_url);
                churned = Some(churn::run(&opts, cpu.as_ref())?);
            }
            Mode::Scrape => scraped = Some(scrape::run(&args, &api_url, cpu.as_ref())?),
            Mode::Cluster => bail!("cluster runs on its own"),
            Mode::WebrtcEcho => {
                rows.extend(webrtc_av::echo(&args, &api_url, cpu.as_ref(), gen_cpu)?)
            }
            Mode::WebrtcRoom => rows.push(webrtc_av::room(&args, &api_url, cpu.as_ref(), gen_cpu)?),
        }
        if args.mode == Mode::Reflector || args.baseline {
            rows.push(reflector_row(&args, gen_cpu)?);
        }
        Ok(())
    })();
    let server_io = server
        .as_ref()
        .map(|s| (s.ready.io.clone(), s.ready.workers));
    if let Some(s) = server.as_mut() {
        if result.is_err() {
            eprintln!("loadgen: server output:\n{}", s.output());
        }
        if !s.stop() {
            eprintln!("loadgen: the server did not exit cleanly on SIGTERM");
        }
    }
    result?;
    if let Some(report) = scraped {
        report.print(&machine, args.json);
        return Ok(());
    }
    if let Some(report) = churned {
        churn::print(&report, &machine, pid, server_io, args.json);
        return Ok(());
    }
    print(
        &args,
        &machine,
        pid,
        server_io,
        gen_cpu,
        &rows,
        srtp.as_ref(),
    );
    Ok(())
}

fn print(
    args: &Args,
    m: &Machine,
    pid: Option<u32>,
    io: Option<(String, usize)>,
    gen_cpu: Option<usize>,
    rows: &[Row],
    srtp: Option<&SrtpInfo>,
) {
    let ratio = report::cpu_ratio(rows);
    let srtp_ratio = report::ratio_of(rows, "sluice-srtp", "reflector");
    let srtp_extra = report::extra_ns(rows, "sluice-srtp", "sluice");
    let record_ratio = report::ratio_of(rows, "sluice+rec", "sluice");
    let (io_name, workers) = io.unwrap_or_else(|| ("?".into(), 0));
    if args.json {
        let out = json!({
            "machine": report::machine_json(m),
            "server": {"pid": pid, "io": io_name, "workers": workers, "spawned": args.spawn},
            "load": {"mode": format!("{:?}", args.mode).to_lowercase(), "rate": args.rate, "size": args.size,
                     "duration_s": args.duration.as_secs_f64(), "sessions": args.sessions,
                     "listeners": args.listeners, "sockets": args.sockets, "gen_cpu": gen_cpu,
                     "reflector_cpu": args.reflector_cpu},
            "runs": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "cpu_ratio_sluice_over_reflector": ratio,
            "cpu_ratio_sluice_srtp_over_reflector": srtp_ratio,
            "srtp_extra_ns_per_packet": srtp_extra,
            "cpu_ratio_recording_on_over_off": record_ratio,
            "srtp": srtp.map(SrtpInfo::to_json),
            "comparisons": report::proxy_lines(rows),
        });
        println!("{out:#}");
        return;
    }
    println!(
        "machine: {} ({} cores), kernel {}, load average {:.2} before the run",
        m.cpu_model, m.cores, m.kernel, m.loadavg
    );
    let sluice_measured = match args.mode {
        Mode::Reflector => false,
        Mode::Proxy => args.targets.contains(&Forwarder::Sluice),
        _ => true,
    };
    if sluice_measured {
        let pid = pid.map_or("unknown (no CPU accounting)".into(), |p| p.to_string());
        println!("server:  pid {pid}, io={io_name}, workers={workers}");
    }
    let cpu = |c: Option<usize>| c.map_or("any".into(), |c| c.to_string());
    if let Some(info) = srtp {
        println!("{}", info.line());
    }
    println!(
        "load:    {} B RTP, {} pkt/s for {:.1} s, generator on cpu {}, reflector on cpu {}",
        args.size,
        args.rate,
        args.duration.as_secs_f64(),
        cpu(gen_cpu),
        cpu(args.reflector_cpu)
    );
    println!();
    println!("{}", report::table(rows));
    if let Some(r) = record_ratio {
        println!("recording on / off CPU per packet: {r:.2}x");
    }
    for r in rows {
        if let Some(line) = report::threads_line(r) {
            println!("{line}");
        }
        let o = &r.outcome;
        if o.send_failed > 0 || o.stray > 0 {
            println!(
                "{}: {} sends refused by the kernel, {} stray datagrams",
                r.target, o.send_failed, o.stray
            );
        }
        if o.protect_failed > 0 || o.unprotect_failed > 0 {
            println!(
                "{}: {} packets failed to protect, {} echoes failed to unprotect",
                r.target, o.protect_failed, o.unprotect_failed
            );
        }
        if o.generator_limited(r.rate) {
            let busy = o.own_cpu_ns.map_or("?".into(), |ns| {
                format!(
                    "{:.0}",
                    100.0 * ns as f64 / o.send_time.as_nanos().max(1) as f64
                )
            });
            println!(
                "{}: the generator fell behind ({:.0} of {} pkt/s, its cpu {busy}%): it, not the target, was the limit",
                r.target,
                o.offered_pps(),
                r.rate
            );
        }
    }
    if ratio.or(srtp_ratio).or(srtp_extra).is_some() {
        println!();
    }
    if let Some(ratio) = ratio {
        println!("sluice / reflector CPU per packet: {ratio:.2}x");
    }
    for line in report::proxy_lines(rows) {
        println!("{line}");
    }
    if let Some(ratio) = srtp_ratio {
        println!("sluice-srtp / reflector CPU per packet: {ratio:.2}x");
    }
    if let Some(extra) = srtp_extra {
        println!(
            "sluice-srtp - sluice: {extra:.0} ns/pkt (the server's SRTP unprotect + protect per echo)"
        );
    }
}
