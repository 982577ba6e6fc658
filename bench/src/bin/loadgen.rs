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

#[path = "loadgen/proxy.rs"]
mod proxy;

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

fn echo_sluice(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
    sockets: usize,
) -> anyhow::Result<Row> {
    echo_sluice_with(args, api_url, cpu, gen_cpu, sockets, false)
}

/// Plain echo sessions; with `record`, every session records (recorder_action start) while
/// the load runs, so the row shows what spooling to disk costs per forwarded packet.
fn echo_sluice_with(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
    sockets: usize,
    record: bool,
) -> anyhow::Result<Row> {
    let socks = bind_sockets(sockets.min(args.sessions))?;
    let mut api = Api::connect(api_url)?;
    eprintln!("loadgen: creating {} echo sessions", args.sessions);
    let mut ids = Vec::with_capacity(args.sessions);
    let opened = open_echo(&mut api, &socks, args.sessions, &mut ids).and_then(|targets| {
        if record {
            for id in &ids {
                api.request(
                    "session",
                    "recorder_action",
                    json!({"session_id": id, "action": "start"}),
                )?;
            }
        }
        Ok(targets)
    });
    let target = if record { "sluice+rec" } else { "sluice" };
    let result = opened.and_then(|targets| {
        measure(
            target,
            args,
            args.sessions,
            1,
            &socks,
            &socks,
            &targets,
            cpu,
            gen_cpu,
            None,
        )
    });
    let failed = api.destroy_all(&ids);
    api.close();
    if failed > 0 {
        eprintln!("loadgen: {failed} sessions could not be destroyed");
    }
    result
}

/// One connected WebRTC echo session.
struct SrtpSession {
    creds: IceCredentials,
    tie_breaker: u64,
    server: ServerTransport,
    profile: Profile,
    keys: SessionKeys,
    ice: Duration,
    dtls: Duration,
}

/// How the WebRTC sessions came up.
#[derive(Debug)]
struct SrtpInfo {
    profiles: Vec<Profile>,
    /// Per-session ICE and DTLS handshake times.
    ice: Vec<Duration>,
    dtls: Vec<Duration>,
    /// Creating, connecting and keying every session, one after the other.
    setup: Duration,
}

impl SrtpInfo {
    fn new(sessions: &[SrtpSession], setup: Duration) -> SrtpInfo {
        let mut profiles: Vec<Profile> = sessions.iter().map(|s| s.profile).collect();
        profiles.dedup();
        let sorted = |f: fn(&SrtpSession) -> Duration| {
            let mut v: Vec<Duration> = sessions.iter().map(f).collect();
            v.sort_unstable();
            v
        };
        SrtpInfo {
            profiles,
            ice: sorted(|s| s.ice),
            dtls: sorted(|s| s.dtls),
            setup,
        }
    }

    fn ms(v: &[Duration], q: f64) -> f64 {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }

    fn profiles(&self) -> String {
        let names: Vec<String> = self.profiles.iter().map(|p| format!("{p:?}")).collect();
        names.join(",")
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "profiles": self.profiles(),
            "sessions": self.ice.len(),
            "ice_ms_p50": Self::ms(&self.ice, 0.5), "ice_ms_max": Self::ms(&self.ice, 1.0),
            "dtls_ms_p50": Self::ms(&self.dtls, 0.5), "dtls_ms_max": Self::ms(&self.dtls, 1.0),
            "setup_seconds": self.setup.as_secs_f64(),
        })
    }

    fn line(&self) -> String {
        format!(
            "srtp:    {} sessions, profile {}, ICE p50 {:.2} ms (max {:.2}), DTLS p50 {:.2} ms (max {:.2}), {:.1} s to set all up",
            self.ice.len(),
            self.profiles(),
            Self::ms(&self.ice, 0.5),
            Self::ms(&self.ice, 1.0),
            Self::ms(&self.dtls, 0.5),
            Self::ms(&self.dtls, 1.0),
            self.setup.as_secs_f64()
        )
    }
}

fn srtp_echo_sluice(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
) -> anyhow::Result<(Row, SrtpInfo)> {
    let cert = Certificate::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    // One socket per session: ICE latches one 5-tuple per session.
    let socks = bind_sockets(args.sessions)?;
    let mut api = Api::connect(api_url)?;
    eprintln!(
        "loadgen: creating {} WebRTC echo sessions (ICE + DTLS each)",
        args.sessions
    );
    let mut ids = Vec::with_capacity(args.sessions);
    let start = Instant::now();
    let result = open_srtp_echo(&mut api, &socks, &cert, &mut ids).and_then(|sessions| {
        let info = SrtpInfo::new(&sessions, start.elapsed());
        eprintln!("loadgen: {}", info.line());
        let mut streams = SrtpStreams::new(sessions.iter().map(|s| &s.keys))?;
        let targets: Vec<Target> = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| Target {
                dest: s.server.addr,
                socket: i,
            })
            .collect();
        let peers: Vec<(Peer, &ServerTransport)> = sessions
            .iter()
            .zip(&socks)
            .map(|(s, sock)| {
                let peer = Peer {
                    sock,
                    cert: &cert,
                    creds: &s.creds,
                    tie_breaker: s.tie_breaker,
                };
                (peer, &s.server)
            })
            .collect();
        let row = with_consent(&peers, gen_cpu, || {
            measure(
                "sluice-srtp",
                args,
                args.sessions,
                1,
                &socks,
                &socks,
                &targets,
                cpu,
                gen_cpu,
                Some(&mut streams),
            )
        })?;
        Ok((row, info))
    });
    let failed = api.destroy_all(&ids);
    api.close();
    if failed > 0 {
        eprintln!("loadgen: {failed} sessions could not be destroyed");
    }
    result
}

/// Creates and connects one WebRTC echo session per socket, one after the other.
fn open_srtp_echo(
    api: &mut Api,
    socks: &[UdpSocket],
    cert: &Certificate,
    ids: &mut Vec<String>,
) -> anyhow::Result<Vec<SrtpSession>> {
    let mut sessions = Vec::with_capacity(socks.len());
    for (i, sock) in socks.iter().enumerate() {
        let creds = IceCredentials::random();
        let offer = sdp::webrtc_offer(&sdp::WebrtcOffer {
            addr: sock.local_addr()?,
            id: i as u64 + 1,
            ice_ufrag: &creds.ufrag,
            ice_pwd: &creds.pwd,
            fingerprint: cert.fingerprint_sha256(),
            ssrc: 0x5100_0000 + i as u32,
        });
        let created = api
            .create_echo_webrtc(&offer)
            .with_context(|| format!("creating WebRTC echo session {i}"))?;
        ids.push(created.session_id);
        let server = ServerTransport::from_answer(&created.sdp)
            .with_context(|| format!("the answer of session {i}"))?;
        let peer = Peer {
            sock,
            cert,
            creds: &creds,
            tie_breaker: webrtc::random_u64(),
        };
        let c = peer
            .connect(&server, HANDSHAKE_TIMEOUT)
            .with_context(|| format!("connecting session {i}"))?;
        let tie_breaker = peer.tie_breaker;
        sessions.push(SrtpSession {
            creds,
            tie_breaker,
            server,
            profile: c.profile,
            keys: c.keys,
            ice: c.ice,
            dtls: c.dtls,
        });
    }
    Ok(sessions)
}

/// Runs `f` while a thread (on the generator's core) sends every peer a consent check
/// every `CONSENT_INTERVAL`, so that runs longer than 30 s keep their media flowing.
fn with_consent<T: Send>(
    peers: &[(Peer<'_>, &ServerTransport)],
    cpu: Option<usize>,
    f: impl FnOnce() -> T + Send,
) -> T {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            if let Some(cpu) = cpu {
                let _ = sys::pin_current_thread(cpu);
            }
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
                if last.elapsed() < CONSENT_INTERVAL {
                    continue;
                }
                last = Instant::now();
                for (peer, server) in peers {
                    if let Err(e) = peer.consent_check(server) {
                        eprintln!("loadgen: consent check to {}: {e:#}", server.addr);
                    }
                }
            }
        });
        let out = f();
        stop.store(true, Ordering::Relaxed);
        out
    })
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
            None,
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
    let mut srtp = None;
    let mut churned = None;
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
