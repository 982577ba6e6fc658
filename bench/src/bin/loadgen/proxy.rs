//! `loadgen proxy`: the side-by-side comparison. N plain-RTP calls, caller A → forwarder →
//! callee B, one-way RTP from A counted at B, on each of `--targets`:
//!
//! - `sluice`: `create {type:"proxy", sdp_type:"rtp"}` + `get_proxy_offer` + `set_answer`;
//! - `rtpengine`: `offer` + `answer` over its NG protocol (spawned, userspace, one thread);
//! - `reflector`: the recvmmsg/sendmmsg echo (the same one receive and one send per packet).
//!
//! With `--saturate`, each target's loss-free maximum is searched (doubling, then bisecting),
//! measured for `--duration`, then `--overload` times that rate is offered and every stream is
//! checked to still deliver afterwards.

use std::time::Duration;

use anyhow::Context;
use sluice_bench::cli::{Args, Target as Forwarder};
use sluice_bench::procstat::{CpuSource, rss_bytes};
use sluice_bench::reflector::Reflector;
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
const SEARCH_STEPS: usize = 12;

/// A measurement at one rate and duration of an already set-up target.
type MeasureAt<'a> = dyn FnMut(&Args) -> anyhow::Result<Row> + 'a;

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
            let offer = sdp::offer(a[socket].local_addr()?, i as u64 + 1);
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
        let mut at = |a2: &Args| {
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
    let opened = (|| -> anyhow::Result<Vec<Target>> {
        let mut targets = Vec::with_capacity(args.sessions);
        for i in 0..args.sessions {
            let socket = i % a.len();
            let call = format!("loadgen-{i}");
            let offer = sdp::offer(a[socket].local_addr()?, i as u64 + 1);
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
    })();
    let mem = memory_per_stream(Some(pid), rss0, args.sessions);
    let result = opened.and_then(|targets| {
        let mut at = |a2: &Args| {
            measure(
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
            )
        };
        rows_for("rtpengine", args, &mut at)
    });
    let failed = calls.iter().filter(|c| ng.delete(c).is_err()).count();
    if failed > 0 {
        eprintln!("loadgen: {failed} rtpengine calls could not be deleted");
    }
    if result.is_err() {
        eprintln!("loadgen: rtpengine output:\n{}", server.output());
    }
    server.stop();
    let mut rows = result?;
    rows.iter_mut().for_each(|r| r.mem_per_stream = mem);
    Ok(rows)
}

fn with_reflector(args: &Args, gen_cpu: Option<usize>) -> anyhow::Result<Vec<Row>> {
    let reflector = Reflector::start(LOOPBACK, args.reflector_cpu, SOCKET_BUFFER)?;
    let socks = bind_sockets(args.sockets.min(args.sessions))?;
    let targets: Vec<Target> = (0..args.sessions)
        .map(|i| Target {
            dest: reflector.addr(),
            socket: i % socks.len(),
        })
        .collect();
    let cpu = reflector.cpu();
    let mut at = |a2: &Args| {
        measure(
            "reflector",
            a2,
            a2.sessions,
            1,
            &socks,
            &socks,
            &targets,
            Some(&cpu),
            gen_cpu,
            None,
        )
    };
    let rows = rows_for("reflector", args, &mut at);
    reflector.stop();
    rows
}

/// One row at `--rate`, or with `--saturate` the loss-free maximum and the overload rows.
fn rows_for(name: &str, args: &Args, at: &mut MeasureAt<'_>) -> anyhow::Result<Vec<Row>> {
    if !args.saturate {
        return Ok(vec![at(args)?]);
    }
    let max = search_max(name, args, at)?;
    let mut full = args.clone();
    full.rate = max;
    let mut sat = at(&full)?;
    sat.target = format!("{name}@max");
    full.rate = ((max as f64) * args.overload) as u64;
    let mut over = at(&full)?;
    over.target = format!("{name}@{}x", args.overload);
    // Afterwards, a gentle pass that visits every stream a few times.
    let mut check = args.clone();
    check.rate = (args.sessions as u64 * 4).clamp(2_000, 100_000);
    check.duration =
        Duration::from_secs_f64((3.0 * args.sessions as f64 / check.rate as f64).max(1.0));
    let after = at(&check)?;
    over.alive = Some(after.outcome.streams_seen);
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
        let row = at(&step)?;
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
    ) -> impl FnMut(&Args) -> anyhow::Result<Row> + '_ {
        move |a: &Args| {
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
        assert!(rates.len() <= SEARCH_STEPS);
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
