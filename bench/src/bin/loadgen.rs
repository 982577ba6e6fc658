//! loadgen: drives a running sluice over loopback through its WebSocket API and measures
//! delivered packets/s, loss, latency and the server's CPU time per forwarded packet.
//! See bench/README.md; `loadgen --help` lists the options.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sluice_bench::cli::{Args, Mode};
use sluice_bench::procstat::{CpuSource, Machine, find_pids, thread_delta, thread_times};
use sluice_bench::reflector::Reflector;
use sluice_bench::report::{self, Row};
use sluice_bench::server::Server;
use sluice_bench::traffic::{self, Load, Target};
use sluice_bench::wsapi::Api;
use sluice_bench::{sdp, sys};

/// Kernel buffer per socket: a few thousand queued datagrams.
const SOCKET_BUFFER: usize = 8 << 20;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

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
) -> anyhow::Result<()> {
    let load = Load {
        rate: (targets.len() as u64 * 20).clamp(1_000, 20_000),
        size: traffic::MIN_SIZE,
        duration: Duration::from_millis(200),
        drain: Duration::from_millis(500),
        copies,
        cpu,
    };
    let out = traffic::run(send, recv, targets, &load);
    if out.received == 0 {
        bail!(
            "warm-up: none of {} packets came back; is the media path up?",
            out.sent
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
) -> anyhow::Result<Row> {
    warm_up(send, recv, targets, copies, gen_cpu)?;
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
    let outcome = traffic::run(send, recv, targets, &args.load(copies, gen_cpu));
    let c1 = cpu_now(cpu);
    let t1 = pid.map(thread_times).unwrap_or_default();
    Ok(Row {
        target: target.into(),
        mode: match args.mode {
            Mode::Fanout => "fanout".into(),
            Mode::Echo | Mode::Reflector => "echo".into(),
        },
        streams,
        rate: args.rate,
        copies,
        outcome,
        cpu_ns: c0.zip(c1).map(|(a, b)| b.saturating_sub(a)),
        window: start.elapsed(),
        threads: thread_delta(&t0, &t1),
    })
}

fn echo_sluice(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
) -> anyhow::Result<Row> {
    let socks = bind_sockets(args.sockets.min(args.sessions))?;
    let mut api = Api::connect(api_url)?;
    eprintln!("loadgen: creating {} echo sessions", args.sessions);
    let mut ids = Vec::with_capacity(args.sessions);
    let result = open_echo(&mut api, &socks, args.sessions, &mut ids).and_then(|targets| {
        measure(
            "sluice",
            args,
            args.sessions,
            1,
            &socks,
            &socks,
            &targets,
            cpu,
            gen_cpu,
        )
    });
    let failed = api.destroy_all(&ids);
    api.close();
    if failed > 0 {
        eprintln!("loadgen: {failed} sessions could not be destroyed");
    }
    result
}

fn open_echo(
    api: &mut Api,
    socks: &[UdpSocket],
    n: usize,
    ids: &mut Vec<String>,
) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::with_capacity(n);
    for i in 0..n {
        let socket = i % socks.len();
        let offer = sdp::offer(socks[socket].local_addr()?, i as u64 + 1);
        let created = api
            .create_echo(&offer)
            .with_context(|| format!("creating echo session {i}"))?;
        ids.push(created.session_id);
        let dest = sdp::audio_addr(&created.sdp).context("parsing the echo answer")?;
        targets.push(Target { dest, socket });
    }
    Ok(targets)
}

fn fanout_sluice(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
) -> anyhow::Result<Row> {
    let publisher = bind_sockets(1)?;
    let listeners = bind_sockets(args.sockets.min(args.listeners))?;
    let mut api = Api::connect(api_url)?;
    let mut ids = Vec::with_capacity(args.listeners + 1);
    let mut room = None;
    let result = open_fanout(
        &mut api,
        &publisher[0],
        &listeners,
        args.listeners,
        &mut ids,
        &mut room,
    )
    .and_then(|dest| {
        let targets = [Target { dest, socket: 0 }];
        let copies = args.listeners as u64;
        measure(
            "sluice",
            args,
            args.listeners,
            copies,
            &publisher,
            &listeners,
            &targets,
            cpu,
            gen_cpu,
        )
    });
    // Listeners first, so none is torn down as a side effect of the publisher leaving.
    ids.reverse();
    let failed = api.destroy_all(&ids);
    if let Some(room) = room {
        let _ = api.destroy_room(&room);
    }
    api.close();
    if failed > 0 {
        eprintln!("loadgen: {failed} sessions could not be destroyed");
    }
    result
}

/// Publishes from `publisher`, subscribes `n` listeners spread over `listeners`; returns where
/// to send the publisher's RTP.
fn open_fanout(
    api: &mut Api,
    publisher: &UdpSocket,
    listeners: &[UdpSocket],
    n: usize,
    ids: &mut Vec<String>,
    room: &mut Option<String>,
) -> anyhow::Result<SocketAddr> {
    let offer = sdp::offer(publisher.local_addr()?, 1);
    let published = api
        .create_publish(&offer)
        .context("creating the publisher")?;
    ids.push(published.session_id.clone());
    *room = published.room_id;
    let dest = sdp::audio_addr(&published.sdp).context("parsing the publish answer")?;
    eprintln!("loadgen: subscribing {n} listeners");
    for i in 0..n {
        let listen = api
            .create_listen(&published.session_id)
            .with_context(|| format!("creating listener {i}"))?;
        ids.push(listen.session_id.clone());
        let local = listeners[i % listeners.len()].local_addr()?;
        let answer = sdp::answer(&listen.sdp, local, i as u64 + 2)
            .context("answering the listener offer")?;
        api.set_answer(&listen.session_id, &answer)
            .with_context(|| format!("set_answer of listener {i}"))?;
    }
    Ok(dest)
}

fn reflector_row(args: &Args, gen_cpu: Option<usize>) -> anyhow::Result<Row> {
    let reflector = Reflector::start(LOOPBACK, args.reflector_cpu, SOCKET_BUFFER)?;
    let socks = bind_sockets(args.sockets.min(args.sessions))?;
    let targets: Vec<Target> = (0..args.sessions)
        .map(|i| Target {
            dest: reflector.addr(),
            socket: i % socks.len(),
        })
        .collect();
    let cpu = reflector.cpu();
    let row = measure(
        "reflector",
        args,
        args.sessions,
        1,
        &socks,
        &socks,
        &targets,
        Some(&cpu),
        gen_cpu,
    );
    reflector.stop();
    row
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
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{}", sluice_bench::cli::USAGE);
        return Ok(());
    }
    let args = Args::parse(std::env::args().skip(1))?;
    let machine = Machine::detect();
    // Sluice pins worker 0 to cpu 0; the load runs on the last core, away from it.
    let gen_cpu = args
        .gen_cpu
        .or((machine.cores > 1).then(|| machine.cores - 1));
    let mut server = match &args.spawn {
        Some(path) if args.mode != Mode::Reflector => {
            Some(Server::spawn(path, &args.spawn_args())?)
        }
        _ => None,
    };
    let api_url = server
        .as_ref()
        .map_or_else(|| args.api.clone(), |s| s.ready.api.clone());
    let pid = args.pid.or(server.as_ref().map(Server::pid)).or_else(|| match find_pids("sluice").as_slice() {
        [pid] => Some(*pid),
        [] => None,
        many => {
            eprintln!("loadgen: several processes named sluice ({many:?}); pass --pid for CPU accounting");
            None
        }
    });
    let cpu = pid.map(CpuSource::Process);
    let mut rows = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        match args.mode {
            Mode::Echo => rows.push(echo_sluice(&args, &api_url, cpu.as_ref(), gen_cpu)?),
            Mode::Fanout => rows.push(fanout_sluice(&args, &api_url, cpu.as_ref(), gen_cpu)?),
            Mode::Reflector => {}
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
    print(&args, &machine, pid, server_io, gen_cpu, &rows);
    Ok(())
}

fn print(
    args: &Args,
    m: &Machine,
    pid: Option<u32>,
    io: Option<(String, usize)>,
    gen_cpu: Option<usize>,
    rows: &[Row],
) {
    let ratio = report::cpu_ratio(rows);
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
        });
        println!("{out:#}");
        return;
    }
    println!(
        "machine: {} ({} cores), kernel {}, load average {:.2} before the run",
        m.cpu_model, m.cores, m.kernel, m.loadavg
    );
    if args.mode != Mode::Reflector {
        let pid = pid.map_or("unknown (no CPU accounting)".into(), |p| p.to_string());
        println!("server:  pid {pid}, io={io_name}, workers={workers}");
    }
    let cpu = |c: Option<usize>| c.map_or("any".into(), |c| c.to_string());
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
    if let Some(ratio) = ratio {
        println!("\nsluice / reflector CPU per packet: {ratio:.2}x");
    }
}
