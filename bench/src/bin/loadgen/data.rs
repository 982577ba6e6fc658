//! `data`: WebRTC data channels through a real sluice, with str0m 0.25 peers
//! ([`datapeer`]) driven in one loadgen thread (pinned like the RTP generator). Scenarios,
//! each with its own sessions:
//!
//! - `echo`: `--sessions` data-only echo sessions, one channel each, each sending `--rate`
//!   messages/s of `--size` bytes; round trip measured.
//! - `relay`: one data-only publisher sending `--rate` messages/s of `--size` bytes, mirrored
//!   to `--listeners` data-only listeners; publisher → listener time measured.
//! - `rtp`: plain RTP echo alone ([`RTP_SESSIONS`] sessions, [`RTP_RATE`] packets/s): the
//!   worker's CPU per RTP packet without data.
//! - `relay-rtp`: `relay` and that RTP load at once: data numbers under RTP load, and the
//!   worker's CPU per RTP packet with the relay running.
//!
//! Each scenario sends for [`WARM_UP`] first (not counted), then `--duration` (counted:
//! messages stamped in that window), then drains `--drain`. CPU: sluice's utime+stime over
//! the counted window (/proc/PID/stat), per thread name too; per message = that over the
//! messages delivered in the window.

use super::*;
use serde_json::Value;

#[path = "datapeer.rs"]
mod datapeer;

use datapeer::{Arrival, DataPeer, Stamp, drive_until, wait};
use sluice_bench::cli::DataScenario;

/// Budget for creating the sessions and bringing every peer up (ICE, DTLS, SCTP, DCEP).
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Sending before the counted window: SCTP's congestion window opens, caches warm.
const WARM_UP: Duration = Duration::from_secs(1);
/// The RTP load of `rtp` and `relay-rtp`: plain echo sessions, packets/s in total, bytes.
pub const RTP_SESSIONS: usize = 100;
pub const RTP_RATE: u64 = 10_000;
const RTP_SIZE: usize = 172;
const LABEL: &str = "bench";
/// Longest wait in the load loop between looks at the clock.
const TICK: Duration = Duration::from_millis(2);

/// What one scenario measured.
struct DataRow {
    name: &'static str,
    /// Peers sending, and how many peers each message should reach.
    senders: usize,
    copies: u64,
    rate: u64,
    size: usize,
    data: Option<DataOutcome>,
    rtp: Option<RtpOutcome>,
    /// sluice's CPU over the window, all threads and per thread name.
    cpu_ns: Option<u64>,
    threads: Vec<(String, u64)>,
    window: Duration,
    /// The data driver thread's own CPU over the window.
    gen_cpu_ns: Option<u64>,
}

#[derive(Default)]
struct DataOutcome {
    /// Messages written in the window, and writes str0m refused (its buffer full).
    sent: u64,
    refused: u64,
    /// Behind schedule by more than [`TICK`] × 5 at some send (the driver, not the server,
    /// may be the limit).
    late_sends: u64,
    received: u64,
    /// Arrivals that were no message of this window (warm-up, or not ours).
    other: u64,
    /// Delivery latency of every message counted, ns.
    latency: Vec<u64>,
    /// Fewest messages any receiving peer got in the window.
    min_per_receiver: u64,
    failed_peers: usize,
}

struct RtpOutcome {
    outcome: traffic::Outcome,
    /// Packets echoed within the data window (estimated from the rate and the loss).
    in_window: f64,
}

impl DataOutcome {
    fn expected(&self, copies: u64) -> u64 {
        self.sent * copies
    }

    fn loss_pct(&self, copies: u64) -> f64 {
        let e = self.expected(copies);
        if e == 0 {
            return 0.0;
        }
        100.0 * e.saturating_sub(self.received) as f64 / e as f64
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        quantile(&self.latency, q) as f64 / 1e6
    }
}

/// The `q` quantile of sorted `v` (0 when empty).
fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Runs `--data-scenarios` against the spawned or given sluice and prints the table.
pub(super) fn run(args: &Args, machine: &Machine, gen_cpu: Option<usize>) -> anyhow::Result<()> {
    let mut server = match &args.spawn {
        Some(path) => Some(Server::spawn(path, &args.spawn_args())?),
        None => None,
    };
    let api_url = server
        .as_ref()
        .map_or_else(|| args.api.clone(), |s| s.ready.api.clone());
    let pid = args.pid.or(server.as_ref().map(Server::pid)).or_else(|| {
        match find_pids("sluice").as_slice() {
            [pid] => Some(*pid),
            _ => {
                eprintln!("loadgen: no single process named sluice; pass --pid for CPU accounting");
                None
            }
        }
    });
    let mut rows = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for &scenario in &args.data_scenarios {
            rows.push(scenario_row(args, &api_url, pid, gen_cpu, scenario)?);
        }
        Ok(())
    })();
    let io = server
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
    print(args, machine, pid, io, gen_cpu, &rows);
    Ok(())
}

fn scenario_row(
    args: &Args,
    api_url: &str,
    pid: Option<u32>,
    gen_cpu: Option<usize>,
    scenario: DataScenario,
) -> anyhow::Result<DataRow> {
    let mut api = Api::connect(api_url)?;
    let mut ids = Vec::new();
    let epoch = Instant::now();
    let result = (|| -> anyhow::Result<DataRow> {
        let (name, peers, senders, copies) = match scenario {
            DataScenario::Echo => {
                let peers = open_echoes(&mut api, args.sessions, epoch, &mut ids)?;
                ("echo", peers, args.sessions, 1)
            }
            DataScenario::Relay | DataScenario::RelayRtp => {
                let peers = open_relay(&mut api, args.listeners, epoch, &mut ids)?;
                let name = if scenario == DataScenario::Relay {
                    "relay"
                } else {
                    "relay+rtp"
                };
                (name, peers, 1, args.listeners as u64)
            }
            DataScenario::Rtp => ("rtp", Vec::new(), 0, 0),
        };
        let rtp = matches!(scenario, DataScenario::Rtp | DataScenario::RelayRtp);
        let rtp = if rtp {
            let socks = bind_sockets(4)?;
            eprintln!("loadgen: creating {RTP_SESSIONS} plain RTP echo sessions");
            let targets = echo::open_echo(&mut api, &socks, RTP_SESSIONS, &mut ids)?;
            let rtp_load = Load {
                rate: RTP_RATE,
                size: RTP_SIZE,
                duration: Duration::from_millis(300),
                drain: Duration::from_millis(300),
                copies: 1,
                cpu: gen_cpu,
            };
            let warm = traffic::run(&socks, &socks, &targets, &rtp_load);
            if warm.received == 0 {
                bail!("RTP warm-up: none of {} packets came back", warm.sent);
            }
            Some((socks, targets))
        } else {
            None
        };
        eprintln!(
            "loadgen: {name}: {senders} sender(s) x {} msg/s of {} B, {copies} cop(y/ies) each, \
             {:.1} s after {:.1} s warm-up",
            args.rate,
            args.size,
            args.duration.as_secs_f64(),
            WARM_UP.as_secs_f64()
        );
        let plan = Plan {
            senders,
            copies,
            rate: args.rate,
            size: args.size,
            duration: args.duration,
            drain: args.drain,
            gen_cpu,
            pid,
            epoch,
        };
        let (mut measured, rtp_outcome) = thread::scope(|s| {
            let rtp_thread = rtp.as_ref().map(|(socks, targets)| {
                s.spawn(move || {
                    let load = Load {
                        rate: RTP_RATE,
                        size: RTP_SIZE,
                        duration: WARM_UP + args.duration,
                        drain: args.drain,
                        copies: 1,
                        cpu: gen_cpu,
                    };
                    traffic::run(socks, socks, targets, &load)
                })
            });
            let measured = s.spawn(|| drive_load(peers, &plan)).join();
            let rtp = rtp_thread.map(|t| t.join());
            (measured, rtp)
        });
        let measured = measured
            .as_mut()
            .map_err(|_| anyhow::anyhow!("the data driver panicked"))?;
        let rtp = match rtp_outcome {
            Some(Ok(outcome)) => {
                let ratio = outcome.received as f64 / outcome.sent.max(1) as f64;
                Some(RtpOutcome {
                    in_window: RTP_RATE as f64 * measured.window.as_secs_f64() * ratio,
                    outcome,
                })
            }
            Some(Err(_)) => bail!("the RTP generator panicked"),
            None => None,
        };
        Ok(DataRow {
            name,
            senders,
            copies,
            rate: args.rate,
            size: args.size,
            data: (senders > 0).then(|| std::mem::take(&mut measured.data)),
            rtp,
            cpu_ns: measured.cpu_ns,
            threads: std::mem::take(&mut measured.threads),
            window: measured.window,
            gen_cpu_ns: measured.gen_cpu_ns,
        })
    })();
    // Listeners go with their publisher; the rest one by one.
    let failed = api.destroy_all(&ids);
    api.close();
    if failed > 0 {
        eprintln!("loadgen: {failed} sessions could not be destroyed");
    }
    result
}

/// `n` data-only echo sessions, every peer up with its channel open.
fn open_echoes(
    api: &mut Api,
    n: usize,
    epoch: Instant,
    ids: &mut Vec<String>,
) -> anyhow::Result<Vec<DataPeer>> {
    eprintln!("loadgen: creating {n} data-channel echo sessions");
    let mut peers = Vec::with_capacity(n);
    for i in 0..n {
        let mut p = DataPeer::new(epoch)?;
        let offer = p.offer(LABEL);
        let reply = api
            .request(
                "session",
                "create",
                json!({"type": "echo", "offer": {"sdp": offer}}),
            )
            .with_context(|| format!("creating data echo session {i}"))?;
        ids.push(str_of(&reply, "session_id")?);
        p.accept_answer(sdp_of(&reply, "answer")?)?;
        peers.push(p);
        // Keep the earlier ones moving while the API is busy.
        for p in &mut peers {
            p.poll();
        }
    }
    let t = Instant::now();
    drive_until(
        &mut peers,
        SETUP_TIMEOUT,
        "bringing the echo peers up",
        |ps| ps.iter().all(DataPeer::ready),
    )?;
    eprintln!(
        "loadgen: {n} echo channels open ({:.1} s after the last create)",
        t.elapsed().as_secs_f64()
    );
    Ok(peers)
}

/// A data-only publisher and `n` listeners: the publisher first, every peer up and every
/// listener's mirror open.
fn open_relay(
    api: &mut Api,
    n: usize,
    epoch: Instant,
    ids: &mut Vec<String>,
) -> anyhow::Result<Vec<DataPeer>> {
    eprintln!("loadgen: creating a data-channel publisher and {n} listeners");
    let mut publ = DataPeer::new(epoch)?;
    let offer = publ.offer(LABEL);
    let reply = api.request(
        "session",
        "create",
        json!({"type": "publish", "offer": {"sdp": offer}}),
    )?;
    let pub_id = str_of(&reply, "session_id")?;
    ids.push(pub_id.clone());
    publ.accept_answer(sdp_of(&reply, "answer")?)?;
    let mut peers = vec![publ];
    drive_until(
        &mut peers,
        SETUP_TIMEOUT,
        "bringing the publisher up",
        |ps| ps[0].ready(),
    )?;
    for i in 0..n {
        let reply = api
            .request(
                "session",
                "create",
                json!({"type": "listen", "publisher_id": pub_id}),
            )
            .with_context(|| format!("creating listener {i}"))?;
        let lid = str_of(&reply, "session_id")?;
        let mut l = DataPeer::new(epoch)?;
        let answer = l.answer(sdp_of(&reply, "offer")?)?;
        api.request(
            "session",
            "set_answer",
            json!({"session_id": lid, "answer": {"sdp": answer, "sdp_type": "webrtc"}}),
        )
        .with_context(|| format!("answering for listener {i}"))?;
        peers.push(l);
        for p in &mut peers {
            p.poll();
        }
    }
    let t = Instant::now();
    drive_until(
        &mut peers,
        SETUP_TIMEOUT,
        "bringing the listeners up",
        |ps| ps.iter().all(DataPeer::ready),
    )?;
    eprintln!(
        "loadgen: {n} mirrors open ({:.1} s after the last create)",
        t.elapsed().as_secs_f64()
    );
    Ok(peers)
}

fn str_of(v: &Value, key: &str) -> anyhow::Result<String> {
    match &v[key] {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => bail!("reply has no {key}: {v}"),
    }
}

fn sdp_of<'a>(v: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    v[key]["sdp"]
        .as_str()
        .with_context(|| format!("reply has no {key}.sdp: {v}"))
}

/// What the load loop does: the first `senders` peers send.
struct Plan {
    senders: usize,
    copies: u64,
    rate: u64,
    size: usize,
    duration: Duration,
    drain: Duration,
    gen_cpu: Option<usize>,
    pid: Option<u32>,
    epoch: Instant,
}

#[derive(Default)]
struct Measured {
    data: DataOutcome,
    cpu_ns: Option<u64>,
    threads: Vec<(String, u64)>,
    window: Duration,
    gen_cpu_ns: Option<u64>,
}

/// Snapshots of the server's and our own CPU.
struct Clocks {
    cpu: Option<u64>,
    threads: Vec<(String, u64)>,
    own: Option<u64>,
    at: Instant,
}

fn clocks(pid: Option<u32>, own: &CpuSource) -> Clocks {
    Clocks {
        cpu: pid.and_then(|p| CpuSource::Process(p).cpu_ns().ok()),
        threads: pid.map(thread_times).unwrap_or_default(),
        own: own.cpu_ns().ok(),
        at: Instant::now(),
    }
}

/// Sends on schedule (sender `k`'s phase shifted by k/senders of an interval) and receives,
/// all peers in this one thread; counts what was stamped in the window.
fn drive_load(mut peers: Vec<DataPeer>, plan: &Plan) -> Measured {
    if let Some(cpu) = plan.gen_cpu
        && let Err(e) = sys::pin_current_thread(cpu)
    {
        eprintln!("loadgen: could not pin to cpu {cpu}: {e}");
    }
    let _ = sys::set_timer_slack(1_000);
    let own = CpuSource::OwnThread(sys::gettid());
    let ns = |t: Instant| t.duration_since(plan.epoch).as_nanos() as u64;
    let interval = Duration::from_secs(1) / plan.rate.max(1) as u32;
    let start = Instant::now();
    let from = start + WARM_UP;
    let until = from + plan.duration;
    let (from_ns, until_ns) = (ns(from), ns(until));
    let receivers = if plan.senders == 1 && peers.len() > 1 {
        1..peers.len() // relay: the listeners
    } else {
        0..plan.senders // echo: each sender gets its own back
    };
    let mut next: Vec<Instant> = (0..plan.senders)
        .map(|k| start + interval * k as u32 / plan.senders.max(1) as u32)
        .collect();
    let mut seq = vec![0u64; plan.senders];
    let mut per_receiver = vec![0u64; peers.len()];
    let mut out = DataOutcome::default();
    let mut arrivals: Vec<Arrival> = Vec::new();
    let mut ready = Vec::new();
    let (mut c0, mut c1) = (None, None);
    let late = TICK * 5;
    loop {
        let now = Instant::now();
        if c0.is_none() && now >= from {
            c0 = Some(clocks(plan.pid, &own));
        }
        if c1.is_none() && now >= until {
            c1 = Some(clocks(plan.pid, &own));
        }
        let drained = c1.is_some() && out.received >= out.expected(plan.copies);
        if now >= until + plan.drain || (drained && now >= until + TICK) {
            break;
        }
        if now < until {
            for k in 0..plan.senders {
                while next[k] <= now {
                    if now - next[k] > late {
                        out.late_sends += 1;
                    }
                    let at = Instant::now();
                    let stamp = Stamp {
                        sender: k as u32,
                        seq: seq[k],
                        sent_ns: ns(at),
                    };
                    let counted = at >= from && at < until;
                    if peers[k].write(&stamp.message(plan.size)) {
                        out.sent += u64::from(counted);
                    } else {
                        out.refused += u64::from(counted);
                    }
                    seq[k] += 1;
                    next[k] += interval;
                }
            }
        }
        let due = if now < until {
            next.iter().min().copied().unwrap_or(until)
        } else {
            now + TICK
        };
        let max = due.saturating_duration_since(Instant::now()).min(TICK);
        if let Err(e) = wait(&peers, Instant::now(), max, &mut ready) {
            eprintln!("loadgen: {e:#}");
            break;
        }
        for (i, p) in peers.iter_mut().enumerate() {
            if ready.get(i).copied().unwrap_or(false) {
                p.poll();
            } else {
                p.timeout(Instant::now());
            }
            p.take_arrivals(&mut arrivals);
            for a in arrivals.drain(..) {
                match a.stamp {
                    Some(s) if (from_ns..until_ns).contains(&s.sent_ns) => {
                        out.received += 1;
                        per_receiver[i] += 1;
                        out.latency.push(a.at_ns.saturating_sub(s.sent_ns));
                    }
                    _ => out.other += 1,
                }
            }
        }
    }
    let c1 = c1.unwrap_or_else(|| clocks(plan.pid, &own));
    let c0 = c0.unwrap_or_else(|| clocks(plan.pid, &own));
    out.latency.sort_unstable();
    out.min_per_receiver = receivers.map(|i| per_receiver[i]).min().unwrap_or(0);
    out.failed_peers = peers.iter().filter(|p| p.failure().is_some()).count();
    Measured {
        data: out,
        cpu_ns: c0.cpu.zip(c1.cpu).map(|(a, b)| b.saturating_sub(a)),
        threads: thread_delta(&c0.threads, &c1.threads),
        window: c1.at.duration_since(c0.at),
        gen_cpu_ns: c0.own.zip(c1.own).map(|(a, b)| b.saturating_sub(a)),
    }
}

impl DataRow {
    fn secs(&self) -> f64 {
        self.window.as_secs_f64().max(1e-9)
    }

    fn cpu_pct(&self) -> Option<f64> {
        Some(100.0 * self.cpu_ns? as f64 / 1e9 / self.secs())
    }

    /// sluice's CPU per delivered message (all threads).
    fn us_per_message(&self) -> Option<f64> {
        let (d, cpu) = (self.data.as_ref()?, self.cpu_ns?);
        (d.received > 0).then(|| cpu as f64 / 1e3 / d.received as f64)
    }

    /// The data-plane workers' CPU per second of the window, ns.
    fn worker_ns_per_s(&self) -> f64 {
        let worker: u64 = self
            .threads
            .iter()
            .filter(|(n, _)| is_worker(n))
            .map(|(_, ns)| ns)
            .sum();
        worker as f64 / self.secs()
    }

    /// The data-plane workers' CPU per RTP packet echoed (data included, if any).
    fn worker_ns_per_rtp(&self) -> Option<f64> {
        let rtp = self.rtp.as_ref()?;
        let worker = self.worker_ns_per_s() * self.secs();
        (rtp.in_window > 0.0 && worker > 0.0).then(|| worker / rtp.in_window)
    }

    /// As [`Self::worker_ns_per_rtp`], less the workers' CPU rate that `relay` (the same
    /// data load without RTP) took: what RTP cost the workers next to the relay.
    fn worker_ns_per_rtp_net(&self, relay: &DataRow) -> Option<f64> {
        let rtp = self.rtp.as_ref()?;
        let net = (self.worker_ns_per_s() - relay.worker_ns_per_s()) * self.secs();
        (rtp.in_window > 0.0).then(|| net / rtp.in_window)
    }

    /// `relay`: the `relay` row of the same run, if any.
    fn to_json(&self, relay: Option<&DataRow>) -> Value {
        let d = self.data.as_ref();
        json!({
            "scenario": self.name,
            "senders": self.senders,
            "copies": self.copies,
            "rate_per_sender": self.rate,
            "size": self.size,
            "window_s": self.secs(),
            "sent": d.map(|d| d.sent),
            "refused": d.map(|d| d.refused),
            "late_sends": d.map(|d| d.late_sends),
            "received": d.map(|d| d.received),
            "delivered_per_s": d.map(|d| d.received as f64 / self.secs()),
            "loss_pct": d.map(|d| d.loss_pct(self.copies)),
            "latency_ms": d.map(|d| json!({"p50": d.quantile_ms(0.5), "p99": d.quantile_ms(0.99),
                                            "max": d.quantile_ms(1.0)})),
            "min_per_receiver": d.map(|d| d.min_per_receiver),
            "failed_peers": d.map(|d| d.failed_peers),
            "cpu_ns": self.cpu_ns,
            "cpu_pct": self.cpu_pct(),
            "us_per_message": self.us_per_message(),
            "threads_cpu_ns": self.threads.iter().map(|(n, ns)| json!({"name": n, "cpu_ns": ns})).collect::<Vec<_>>(),
            "generator_cpu_pct": self.gen_cpu_ns.map(|ns| 100.0 * ns as f64 / 1e9 / self.secs()),
            "rtp": self.rtp.as_ref().map(|r| json!({
                "sessions": RTP_SESSIONS, "rate": RTP_RATE, "size": RTP_SIZE,
                "sent": r.outcome.sent, "received": r.outcome.received,
                "loss_pct": r.outcome.loss_pct(1),
                "p50_us": r.outcome.latency.quantile(0.5) as f64 / 1e3,
                "p99_us": r.outcome.latency.quantile(0.99) as f64 / 1e3,
                "worker_ns_per_packet": self.worker_ns_per_rtp(),
                "worker_ns_per_packet_less_relay": relay.and_then(|r| self.worker_ns_per_rtp_net(r)),
            })),
        })
    }
}

/// A data-plane worker thread of sluice.
fn is_worker(name: &str) -> bool {
    name.starts_with("sluice-w")
}

fn print(
    args: &Args,
    m: &Machine,
    pid: Option<u32>,
    io: Option<(String, usize)>,
    gen_cpu: Option<usize>,
    rows: &[DataRow],
) {
    let (io_name, workers) = io.unwrap_or_else(|| ("?".into(), 0));
    let relay = rows.iter().find(|r| r.name == "relay");
    if args.json {
        let out = json!({
            "machine": report::machine_json(m),
            "server": {"pid": pid, "io": io_name, "workers": workers, "spawned": args.spawn},
            "load": {"mode": "data", "rate_per_sender": args.rate, "size": args.size,
                     "duration_s": args.duration.as_secs_f64(), "warm_up_s": WARM_UP.as_secs_f64(),
                     "sessions": args.sessions, "listeners": args.listeners, "gen_cpu": gen_cpu},
            "runs": rows.iter().map(|r| r.to_json(relay)).collect::<Vec<_>>(),
        });
        println!("{out:#}");
        return;
    }
    println!(
        "machine: {} ({} cores), kernel {}, load average {:.2} before the run",
        m.cpu_model, m.cores, m.kernel, m.loadavg
    );
    let pid_s = pid.map_or("unknown (no CPU accounting)".into(), |p| p.to_string());
    println!("server:  pid {pid_s}, io={io_name}, workers={workers}");
    let cpu_s = gen_cpu.map_or("any".into(), |c| c.to_string());
    println!(
        "load:    data-only WebRTC sessions (str0m 0.25 peers, one thread on cpu {cpu_s}), {} msg/s \
         per sender of {} B, {:.1} s counted after {:.1} s; RTP: {RTP_SESSIONS} plain echo \
         sessions, {RTP_RATE} pkt/s of {RTP_SIZE} B",
        args.rate,
        args.size,
        args.duration.as_secs_f64(),
        WARM_UP.as_secs_f64()
    );
    println!();
    let headers = [
        "scenario",
        "senders",
        "copies",
        "sent",
        "delivered/s",
        "loss%",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cpu%",
        "µs/msg",
    ];
    let f = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let d = r.data.as_ref();
            vec![
                r.name.to_string(),
                r.senders.to_string(),
                r.copies.to_string(),
                d.map_or("-".into(), |d| d.sent.to_string()),
                f(d.map(|d| d.received as f64 / r.secs()), 0),
                f(d.map(|d| d.loss_pct(r.copies)), 2),
                f(d.map(|d| d.quantile_ms(0.5)), 2),
                f(d.map(|d| d.quantile_ms(0.99)), 2),
                f(d.map(|d| d.quantile_ms(1.0)), 2),
                f(r.cpu_pct(), 1),
                f(r.us_per_message(), 1),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &body {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<String>| {
        let cells: Vec<String> = cols
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in body {
        line(row);
    }
    println!();
    for r in rows {
        let secs = r.secs();
        let threads: Vec<String> = r
            .threads
            .iter()
            .take(5)
            .map(|(n, ns)| format!("{n} {:.1}%", 100.0 * *ns as f64 / 1e9 / secs))
            .collect();
        if !threads.is_empty() {
            println!("{}: sluice threads: {}", r.name, threads.join(", "));
        }
        if let Some(ns) = r.gen_cpu_ns {
            println!(
                "{}: the data driver used {:.1}% of its core",
                r.name,
                100.0 * ns as f64 / 1e9 / secs
            );
        }
        if let Some(d) = &r.data {
            if d.refused > 0 || d.late_sends > 0 || d.failed_peers > 0 {
                println!(
                    "{}: {} writes refused by str0m (buffer full), {} sends late by > {:?}, {} peers failed",
                    r.name,
                    d.refused,
                    d.late_sends,
                    TICK * 5,
                    d.failed_peers
                );
            }
            if r.copies > 1 {
                println!(
                    "{}: the least served listener got {} of {} messages",
                    r.name, d.min_per_receiver, d.sent
                );
            }
        }
        if let Some(rtp) = &r.rtp {
            let o = &rtp.outcome;
            println!(
                "{}: RTP {} of {} echoed ({:.2}% loss), p50/p99 {:.0}/{:.0} µs, workers' CPU per RTP packet {}",
                r.name,
                o.received,
                o.sent,
                o.loss_pct(1),
                o.latency.quantile(0.5) as f64 / 1e3,
                o.latency.quantile(0.99) as f64 / 1e3,
                r.worker_ns_per_rtp()
                    .map_or("unknown (no worker thread seen)".into(), |ns| format!(
                        "{ns:.0} ns"
                    ))
            );
            if let Some(ns) = relay.and_then(|relay| r.worker_ns_per_rtp_net(relay))
                && r.data.is_some()
            {
                println!(
                    "{}: workers' CPU per RTP packet less what they spent on the relay alone: {ns:.0} ns \
                     (compare with the rtp row)",
                    r.name
                );
            }
        }
    }
}
