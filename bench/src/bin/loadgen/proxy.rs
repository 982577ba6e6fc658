//! `loadgen proxy`: the side-by-side comparison. N plain-RTP calls, caller A → forwarder →
//! callee B, one-way RTP from A counted at B, on each of `--targets`:
//!
//! - `sluice`: `create {type:"proxy", sdp_type:"rtp"}` + `get_proxy_offer` + `set_answer`;
//! - `rtpengine`: `offer` + `answer` over its NG protocol (spawned, userspace, one thread);
//! - `reflector`: the recvmmsg/sendmmsg echo (the same one receive and one send per packet);
//! - `reflector-uring`: the same echo over io_uring (multishot recvmsg, send to the source).
//!
//! With `--saturate`, each target's loss-free maximum is searched (doubling, then bisecting),
//! measured for `--duration`, then `--overload` times that rate is offered and every stream is
//! checked to still deliver afterwards.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::Context;
use sluice_bench::cli::{Args, Target as Forwarder};
use sluice_bench::ng::NgClient;
use sluice_bench::procstat::{CpuSource, rss_bytes};
use sluice_bench::reflector::Reflector;
use sluice_bench::reflector_uring::ReflectorUring;
use sluice_bench::report::Row;
use sluice_bench::rtpengine::{self, Settings};
use sluice_bench::sdp;
use sluice_bench::traffic::Target;
use sluice_bench::wsapi::Api;

use super::{LOOPBACK, SOCKET_BUFFER, bind_sockets, measure};

/// Where the spawned rtpengine listens for NG and which media ports it hands out: room for
/// 12,500 calls (4 ports each), as many as file descriptors allow.
const RTPENGINE_NG_PORT: u16 = 22_999;
const RTPENGINE_PORTS: (u16, u16) = (10_000, 59_999);
/// Bisection stops when the bracket is this close (relative).
const SEARCH_PRECISION: f64 = 0.05;
const SEARCH_STEPS: usize = 10;

/// A measurement at one rate and duration of an already set-up target. With `fresh`, a
/// target whose previous measurement was lossy measures on new calls (rtpengine stops
/// reading a flooded socket for good); without it (the survival check after an overload), on
/// the same calls.
type MeasureAt<'a> = dyn FnMut(&Args, bool) -> anyhow::Result<Row> + 'a;

/// Runs every target in `args.targets`; `sluice` is the API URL and CPU source of a running
/// (or spawned) sluice.
pub(super) fn run(
    args: &Args,
    sluice: Option<(&str, Option<&CpuSource>)>,
    gen_cpu: Option<usize>,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for &t in &args.targets {
        let once = || match t {
            Forwarder::Sluice => {
                let (api, cpu) = sluice.context("no server (--spawn or --api)")?;
                with_sluice(args, api, cpu, gen_cpu)
            }
            Forwarder::Rtpengine => with_rtpengine(args, gen_cpu),
            Forwarder::Reflector => with_reflector(args, gen_cpu),
            Forwarder::ReflectorUring => with_reflector_uring(args, gen_cpu),
        };
        // One retry: a target that fails (say, a warm-up that got nothing back) is set up
        // again from scratch; if it fails twice, the other targets are still measured.
        match once().or_else(|e| {
            eprintln!("loadgen: target {}: {e:#}; setting it up again", t.name());
            once()
        }) {
            Ok(got) => rows.extend(got),
            Err(e) => {
                eprintln!("loadgen: target {} left out: {e:#}", t.name());
                failures.push(format!("{}: {e:#}", t.name()));
            }
        }
    }
    if rows.is_empty() {
        anyhow::bail!("every target failed: {}", failures.join("; "));
    }
    Ok(rows)
}

fn memory_per_stream(pid: Option<u32>, before: Option<u64>, streams: usize) -> Option<f64> {
    let after = rss_bytes(pid?)?;
    Some(after.saturating_sub(before?) as f64 / streams as f64)
}

fn with_sluice(
    args: &Args,
    api_url: &str,
    cpu: Option<&CpuSource>,
    gen_cpu: Option<usize>,
) -> anyhow::Result<Vec<Row>> {
    let a = bind_sockets(args.sockets.min(args.sessions))?;
    let b = bind_sockets(args.sockets.min(args.sessions))?;
    let pid = match cpu {
        Some(CpuSource::Process(pid)) => Some(*pid),
        _ => None,
    };
    let rss0 = pid.and_then(rss_bytes);
    let mut api = Api::connect(api_url)?;
    eprintln!("loadgen: creating {} sluice proxy calls", args.sessions);
    let mut masters = Vec::with_capacity(args.sessions);
    let opened = (|| -> anyhow::Result<Vec<Target>> {
        let mut targets = Vec::with_capacity(args.sessions);
        for i in 0..args.sessions {
            let socket = i % a.len();
            let offer = sdp::offer_with(a[socket].local_addr()?, i as u64 + 1, args.rtcp_mux);
            let b_addr = b[socket].local_addr()?;
            let (master, _slave) = api
                .create_proxy(&offer, |o| sdp::answer(o, b_addr, i as u64 + 1))
                .with_context(|| format!("proxy call {i}"))?;
            masters.push(master.session_id);
            let dest = sdp::audio_addr(&master.sdp).context("the master's answer")?;
            targets.push(Target { dest, socket });
        }
        Ok(targets)
    })();
    let mem = memory_per_stream(pid, rss0, args.sessions);
    let result = opened.and_then(|targets| {
        let mut at = |a2: &Args, _fresh: bool| {
            measure(
                "sluice",
                a2,
                a2.sessions,
                1,
                &a,
                &b,
                &targets,
                cpu,
                gen_cpu,
                None,
            )
        };
        rows_for("sluice", args, &mut at)
    });
    // Destroying the master ends its slave too (peer_stopped).
    let failed = api.destroy_all(&masters);
    api.close();
    if failed > 0 {
        eprintln!("loadgen: {failed} proxy calls could not be destroyed");
    }
    let mut rows = result?;
    rows.iter_mut().for_each(|r| r.mem_per_stream = mem);
    Ok(rows)
}

fn with_rtpengine(args: &Args, gen_cpu: Option<usize>) -> anyhow::Result<Vec<Row>> {
    let settings = Settings {
        ip: LOOPBACK,
        ng_port: RTPENGINE_NG_PORT,
        ports: RTPENGINE_PORTS,
        cpu: args.reflector_cpu,
    };
    let (mut server, mut ng) = rtpengine::spawn(&args.rtpengine, &settings)?;
    let pid = server.pid();
    let cpu = CpuSource::Process(pid);
    let a = bind_sockets(args.sockets.min(args.sessions))?;
    let b = bind_sockets(args.sockets.min(args.sessions))?;
    let rss0 = rss_bytes(pid);
    eprintln!(
        "loadgen: creating {} rtpengine calls (NG offer + answer)",
        args.sessions
    );
    let mut calls = Vec::with_capacity(args.sessions);
    let opened = open_rtpengine_calls(&mut ng, &a, &b, args, 0, &mut calls);
    let mem = memory_per_stream(Some(pid), rss0, args.sessions);
    let result = opened.and_then(|targets| {
        let mut targets = targets;
        let mut generation = 0;
        let mut dirty = false;
        let mut at = |a2: &Args, fresh: bool| {
            if fresh && dirty {
                generation += 1;
                eprintln!("loadgen: rtpengine: fresh calls after a lossy step");
                delete_calls(&mut ng, &mut calls);
                targets = open_rtpengine_calls(&mut ng, &a, &b, a2, generation, &mut calls)?;
            }
            let row = measure(
                "rtpengine",
                a2,
                a2.sessions,
                1,
                &a,
                &b,
                &targets,
                Some(&cpu),
                gen_cpu,
                None,
            );
            dirty = row
                .as_ref()
                .map_or(true, |r| r.outcome.loss_pct(r.copies) > a2.loss_free_pct);
            row
        };
        rows_for("rtpengine", args, &mut at)
    });
    delete_calls(&mut ng, &mut calls);
    if result.is_err() {
        eprintln!("loadgen: rtpengine output:\n{}", server.output());
    }
    server.stop();
    let mut rows = result?;
    rows.iter_mut().for_each(|r| r.mem_per_stream = mem);
    Ok(rows)
}

/// `args.sessions` calls through rtpengine, caller on `a`, callee on `b`; their call-ids go
/// to `calls`.
fn open_rtpengine_calls(
    ng: &mut NgClient,
    a: &[UdpSocket],
    b: &[UdpSocket],
    args: &Args,
    generation: usize,
    calls: &mut Vec<String>,
) -> anyhow::Result<Vec<Target>> {
    let n = args.sessions;
    let mut targets = Vec::with_capacity(n);
    for i in 0..n {
        let socket = i % a.len();
        let call = format!("loadgen-{generation}-{i}");
        let offer = sdp::offer_with(a[socket].local_addr()?, i as u64 + 1, args.rtcp_mux);
        let to_b = ng.offer(&call, "caller", &offer)?;
        calls.push(call.clone());
        let answer = sdp::answer(&to_b, b[socket].local_addr()?, i as u64 + 1)?;
        let to_a = ng.answer(&call, "caller", "callee", &answer)?;
        targets.push(Target {
            dest: rtpengine::media_addr(&to_a)?,
            socket,
        });
    }
    Ok(targets)
}

fn delete_calls(ng: &mut NgClient, calls: &mut Vec<String>) {
    let failed = calls.drain(..).filter(|c| ng.delete(c).is_err()).count();
    if failed > 0 {
        eprintln!("loadgen: {failed} rtpengine calls could not be deleted");
    }
}

pub(super) fn with_reflector(args: &Args, gen_cpu: Option<usize>) -> anyhow::Result<Vec<Row>> {
    let reflector = Reflector::start(LOOPBACK, args.reflector_cpu, SOCKET_BUFFER)?;
    let rows = reflected(
        "reflector",
        args,
        gen_cpu,
        reflector.addr(),
        &reflector.cpu(),
    );
    reflector.stop();
    rows
}

fn with_reflector_uring(args: &Args, gen_cpu: Option<usize>) -> anyhow::Result<Vec<Row>> {
    let reflector = ReflectorUring::start(LOOPBACK, args.reflector_cpu, SOCKET_BUFFER)
        .context("starting the io_uring reflector")?;
    let rows = reflected(
        "reflector-uring",
        args,
        gen_cpu,
        reflector.addr(),
        &reflector.cpu(),
    );
    reflector.stop();
    rows
}

/// Every stream sent to a reflector at `addr` and counted on the socket it came from.
fn reflected(
    name: &str,
    args: &Args,
    gen_cpu: Option<usize>,
    addr: SocketAddr,
    cpu: &CpuSource,
) -> anyhow::Result<Vec<Row>> {
    let socks = bind_sockets(args.sockets.min(args.sessions))?;
    let targets: Vec<Target> = (0..args.sessions)
        .map(|i| Target {
            dest: addr,
            socket: i % socks.len(),
        })
        .collect();
    let mut at = |a2: &Args, _fresh: bool| {
        measure(
            name,
            a2,
            a2.sessions,
            1,
            &socks,
            &socks,
            &targets,
            Some(cpu),
            gen_cpu,
            None,
        )
    };
    rows_for(name, args, &mut at)
}

/// One row at `--rate`, or with `--saturate` the loss-free maximum and the overload rows.
fn rows_for(name: &str, args: &Args, at: &mut MeasureAt<'_>) -> anyhow::Result<Vec<Row>> {
    if !args.saturate {
        return Ok(vec![at(args, true)?]);
    }
    let max = search_max(name, args, at)?;
    let mut full = args.clone();
    full.rate = max;
    let mut sat = at(&full, true)?;
    sat.target = format!("{name}@max");
    full.rate = ((max as f64) * args.overload) as u64;
    let mut over = at(&full, true)?;
    over.target = format!("{name}@{}x", args.overload);
    // Afterwards, a gentle pass that visits every stream a few times.
    let mut check = args.clone();
    check.rate = (args.sessions as u64 * 4).clamp(2_000, 100_000);
    check.duration =
        Duration::from_secs_f64((3.0 * args.sessions as f64 / check.rate as f64).max(1.0));
    // A target that lost every stream fails the warm-up of this pass: none alive.
    over.alive = Some(at(&check, false).map_or(0, |after| after.outcome.streams_seen));
    Ok(vec![sat, over])
}

/// Whether a search step counts as loss-free: little enough loss, and the generator kept up
/// (if it did not, the generator, not the target, is the limit).
fn loss_free(row: &Row, limit_pct: f64) -> bool {
    row.outcome.loss_pct(row.copies) <= limit_pct
}

/// Doubles from `--rate` until loss appears (or `--max-rate`), then bisects.
fn search_max(name: &str, args: &Args, at: &mut MeasureAt<'_>) -> anyhow::Result<u64> {
    let mut step = args.clone();
    step.duration = args.step;
    let mut good = 0u64;
    let mut bad: Option<u64> = None;
    let mut rate = args.rate.min(args.max_rate);
    for _ in 0..SEARCH_STEPS {
        step.rate = rate;
        let row = match at(&step, true) {
            Ok(row) => row,
            Err(e) => {
                // Nothing came back at all (a dead target): as lossy as it gets.
                eprintln!("loadgen: {name} search: {rate} pkt/s -> dead ({e:#})");
                bad = Some(bad.map_or(rate, |b| b.min(rate)));
                let next = (good + bad.unwrap_or(rate)) / 2;
                if next == rate || next == 0 {
                    break;
                }
                rate = next;
                continue;
            }
        };
        // One lossy step on a busy machine may be a hiccup: a rate is lossy only if a
        // second try is lossy too.
        let row = if loss_free(&row, args.loss_free_pct) {
            row
        } else {
            eprintln!("loadgen: {name} search: {rate} pkt/s lossy, trying it once more");
            at(&step, true).unwrap_or(row)
        };
        let ok = loss_free(&row, args.loss_free_pct);
        let limited = row.outcome.generator_limited(rate);
        eprintln!(
            "loadgen: {name} search: {rate} pkt/s offered {:.0}, loss {:.3}% -> {}",
            row.outcome.offered_pps(),
            row.outcome.loss_pct(row.copies),
            match (ok, limited) {
                (true, false) => "loss-free",
                (true, true) => "loss-free, generator-limited",
                (false, _) => "lossy",
            }
        );
        if ok {
            // What was actually offered, if the generator could not keep up.
            good = good.max(row.outcome.offered_pps().min(rate as f64) as u64);
            if limited {
                break;
            }
        } else {
            bad = Some(bad.map_or(rate, |b| b.min(rate)));
        }
        let next = match bad {
            None => rate.saturating_mul(2).min(args.max_rate),
            Some(b) => (good + b) / 2,
        };
        let close = bad.is_some_and(|b| (b - good) as f64 <= SEARCH_PRECISION * b as f64);
        if close || next == rate {
            break;
        }
        rate = next;
    }
    if good == 0 {
        anyhow::bail!("{name}: no loss-free rate found down to {rate} pkt/s");
    }
    eprintln!("loadgen: {name}: loss-free maximum {good} pkt/s");
    Ok(good)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_bench::traffic::Outcome;

    /// A fake target that forwards everything up to `capacity` pkt/s and drops the rest;
    /// a generator that manages at most `generator` pkt/s.
    fn fake(
        capacity: u64,
        generator: u64,
        rates: &mut Vec<u64>,
    ) -> impl FnMut(&Args, bool) -> anyhow::Result<Row> + '_ {
        move |a: &Args, _| {
            rates.push(a.rate);
            let offered = a.rate.min(generator);
            let out = Outcome {
                sent: offered,
                received: offered.min(capacity),
                send_time: Duration::from_secs(1),
                ..Outcome::default()
            };
            Ok(Row {
                target: "fake".into(),
                mode: "proxy".into(),
                streams: 1,
                rate: a.rate,
                copies: 1,
                outcome: out,
                cpu_ns: None,
                window: Duration::from_secs(1),
                threads: Vec::new(),
                mem_per_stream: None,
                alive: None,
            })
        }
    }

    fn args(rate: u64) -> Args {
        let mut a = Args::parse(["proxy".to_string()]).unwrap();
        a.rate = rate;
        a
    }

    #[test]
    fn search_brackets_the_capacity() {
        let mut rates = Vec::new();
        let max = search_max(
            "fake",
            &args(50_000),
            &mut fake(230_000, u64::MAX, &mut rates),
        )
        .unwrap();
        assert!((220_000..=230_000).contains(&max), "{max} after {rates:?}");
        assert_eq!(&rates[..3], &[50_000, 100_000, 200_000]);
        assert!(
            rates.len() <= 2 * SEARCH_STEPS,
            "each lossy step is tried twice at most"
        );
    }

    #[test]
    fn a_dead_step_counts_as_lossy() {
        let mut rates = Vec::new();
        let mut inner = fake(60_000, u64::MAX, &mut rates);
        let mut dying = |a: &Args, fresh: bool| {
            if a.rate > 90_000 {
                anyhow::bail!("warm-up: none came back");
            }
            inner(a, fresh)
        };
        let max = search_max("fake", &args(50_000), &mut dying).unwrap();
        assert!((57_000..=60_000).contains(&max), "{max}");
    }

    #[test]
    fn search_goes_down_from_a_lossy_start_and_stops_at_the_generator() {
        let mut rates = Vec::new();
        let max = search_max(
            "fake",
            &args(100_000),
            &mut fake(30_000, u64::MAX, &mut rates),
        )
        .unwrap();
        assert!((28_000..=30_000).contains(&max), "{max} after {rates:?}");
        let mut rates = Vec::new();
        let max = search_max(
            "fake",
            &args(50_000),
            &mut fake(u64::MAX, 150_000, &mut rates),
        )
        .unwrap();
        assert_eq!(max, 150_000, "generator-limited at {rates:?}");
        assert_eq!(rates, vec![50_000, 100_000, 200_000]);
    }
}
