//! `churn`: control-plane throughput. N WebSocket connections each create a plain-RTP echo
//! session and destroy it again, as fast as the server answers, with up to `pipeline` such
//! pairs in flight per connection (distinct tids). Reports create+destroy pairs per second,
//! the latency of each request (send → reply, client side) and the server's CPU per pair.
//!
//! No media flows: what is measured is the API edge, the session manager, SDP and the data
//! plane's leg bookkeeping (binding and closing a port pair per session). Every session a
//! connection creates it destroys before it stops, so a run leaves the server as it found it.

use std::collections::HashMap;
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::cli::Args;
use crate::procstat::{CpuSource, Machine, thread_delta, thread_times};
use crate::report::machine_json;
use crate::sdp;
use crate::wsapi::{TIMEOUT, open_socket, read_reply};

/// Socket read timeout: how often a connection re-checks its deadlines while waiting.
const POLL: Duration = Duration::from_millis(100);

/// What one churn run does.
#[derive(Clone, Debug)]
pub struct Options {
    pub url: String,
    pub connections: usize,
    /// Create+destroy pairs in flight per connection.
    pub pipeline: usize,
    /// Stop starting pairs after this many in total (`None`: only the duration bounds it).
    pub pairs: Option<u64>,
    /// Stop starting pairs after this long.
    pub duration: Duration,
}

impl Options {
    pub fn from_args(args: &Args, url: &str) -> Options {
        Options {
            url: url.to_string(),
            connections: args.connections,
            pipeline: args.pipeline,
            pairs: args.pairs,
            duration: args.duration,
        }
    }
}

/// Latency samples and counts of one connection (or of all, merged).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Pairs whose create and destroy both succeeded.
    pub pairs: u64,
    pub failed_creates: u64,
    pub failed_destroys: u64,
    pub create: Vec<Duration>,
    pub destroy: Vec<Duration>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.pairs += other.pairs;
        self.failed_creates += other.failed_creates;
        self.failed_destroys += other.failed_destroys;
        self.create.extend(other.create);
        self.destroy.extend(other.destroy);
    }
}

/// The `q` quantile (0..=1, nearest rank) of `samples`, which must be sorted; zero when empty.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50 and p99 of a set of samples, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of(samples: &mut [Duration]) -> Latency {
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        Latency {
            p50_us: us(quantile(samples, 0.5)),
            p99_us: us(quantile(samples, 0.99)),
            max_us: us(samples.last().copied().unwrap_or_default()),
        }
    }

    fn to_json(self) -> Value {
        json!({"p50_us": self.p50_us, "p99_us": self.p99_us, "max_us": self.max_us})
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    pub connections: usize,
    pub pipeline: usize,
    pub pairs: u64,
    pub failed_creates: u64,
    pub failed_destroys: u64,
    /// From the moment every connection was open until the last reply.
    pub window: Duration,
    pub create: Latency,
    pub destroy: Latency,
    /// Server CPU over the window, when it could be read.
    pub cpu_ns: Option<u64>,
    /// Server CPU per thread name over the window, busiest first.
    pub threads: Vec<(String, u64)>,
}

impl Report {
    pub fn new(
        opts: &Options,
        mut tally: Tally,
        window: Duration,
        cpu_ns: Option<u64>,
        threads: Vec<(String, u64)>,
    ) -> Report {
        Report {
            connections: opts.connections,
            pipeline: opts.pipeline,
            pairs: tally.pairs,
            failed_creates: tally.failed_creates,
            failed_destroys: tally.failed_destroys,
            window,
            create: Latency::of(&mut tally.create),
            destroy: Latency::of(&mut tally.destroy),
            cpu_ns,
            threads,
        }
    }

    pub fn pairs_per_sec(&self) -> f64 {
        self.pairs as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Server CPU per create+destroy pair, in microseconds.
    pub fn cpu_us_per_pair(&self) -> Option<f64> {
        let ns = self.cpu_ns?;
        (self.pairs > 0).then(|| ns as f64 / 1e3 / self.pairs as f64)
    }

    /// Server CPU over the window, in % of one core.
    pub fn cpu_pct(&self) -> Option<f64> {
        Some(100.0 * self.cpu_ns? as f64 / self.window.as_nanos().max(1) as f64)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "connections": self.connections,
            "pipeline": self.pipeline,
            "pairs": self.pairs,
            "failed_creates": self.failed_creates,
            "failed_destroys": self.failed_destroys,
            "window_s": self.window.as_secs_f64(),
            "pairs_per_s": self.pairs_per_sec(),
            "create": self.create.to_json(),
            "destroy": self.destroy.to_json(),
            "server_cpu_ns": self.cpu_ns,
            "server_cpu_pct": self.cpu_pct(),
            "server_cpu_us_per_pair": self.cpu_us_per_pair(),
            "threads": self.threads.iter().map(|(n, ns)| json!({"name": n, "cpu_ns": ns})).collect::<Vec<_>>(),
        })
    }

    pub fn text(&self) -> String {
        let opt = |v: Option<f64>, prec: usize| v.map_or("?".into(), |v| format!("{v:.prec$}"));
        let mut out = format!(
            "churn:   {} connections x {} in flight, {} create+destroy pairs in {:.2} s\n\n\
             | pairs/s | create p50/p99 µs | destroy p50/p99 µs | server cpu% | cpu µs/pair |\n\
             |---|---|---|---|---|\n\
             | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {} | {} |\n",
            self.connections,
            self.pipeline,
            self.pairs,
            self.window.as_secs_f64(),
            self.pairs_per_sec(),
            self.create.p50_us,
            self.create.p99_us,
            self.destroy.p50_us,
            self.destroy.p99_us,
            opt(self.cpu_pct(), 0),
            opt(self.cpu_us_per_pair(), 1),
        );
        if self.failed_creates + self.failed_destroys > 0 {
            out += &format!(
                "failures: {} creates, {} destroys\n",
                self.failed_creates, self.failed_destroys
            );
        }
        if !self.threads.is_empty() && self.pairs > 0 {
            let parts: Vec<String> = self
                .threads
                .iter()
                .map(|(name, ns)| format!("{name} {:.1}", *ns as f64 / 1e3 / self.pairs as f64))
                .collect();
            out += &format!("server µs/pair by thread: {}\n", parts.join(", "));
        }
        out
    }
}

/// Prints the report (the machine and server first, as the other modes do).
pub fn print(r: &Report, m: &Machine, pid: Option<u32>, io: Option<(String, usize)>, json: bool) {
    let (io_name, workers) = io.unwrap_or_else(|| ("?".into(), 0));
    if json {
        let out = json!({
            "machine": machine_json(m),
            "server": {"pid": pid, "io": io_name, "workers": workers},
            "churn": r.to_json(),
        });
        println!("{out:#}");
        return;
    }
    println!(
        "machine: {} ({} cores), kernel {}, load average {:.2} before the run",
        m.cpu_model, m.cores, m.kernel, m.loadavg
    );
    let pid = pid.map_or("unknown (no CPU accounting)".into(), |p| p.to_string());
    println!("server:  pid {pid}, io={io_name}, workers={workers}");
    print!("{}", r.text());
}

/// Runs the churn against `opts.url`; `cpu` is the server's process, when known.
pub fn run(opts: &Options, cpu: Option<&CpuSource>) -> anyhow::Result<Report> {
    if opts.connections == 0 || opts.pipeline == 0 {
        bail!("churn needs at least one connection and one request in flight");
    }
    let started = Arc::new(AtomicU64::new(0));
    let go = Arc::new(Barrier::new(opts.connections + 1));
    let mut handles = Vec::with_capacity(opts.connections);
    for index in 0..opts.connections {
        let opts = opts.clone();
        let started = Arc::clone(&started);
        let go = Arc::clone(&go);
        let handle = thread::Builder::new()
            .name(format!("churn-{index}"))
            .spawn(move || -> anyhow::Result<Tally> {
                // Connect before the barrier, and always reach it, so nobody waits forever.
                let conn = Conn::open(&opts.url);
                go.wait();
                let mut conn = conn?;
                let deadline = Instant::now() + opts.duration;
                let out = conn.churn(&opts, deadline, &started);
                conn.close();
                out
            })
            .context("starting a churn thread")?;
        handles.push(handle);
    }
    go.wait();
    let pid = match cpu {
        Some(CpuSource::Process(pid)) => Some(*pid),
        _ => None,
    };
    let start = Instant::now();
    let c0 = cpu.and_then(|c| c.cpu_ns().ok());
    let t0 = pid.map(thread_times).unwrap_or_default();
    let mut tally = Tally::default();
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => tally.merge(t),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow!("a churn thread panicked"));
            }
        }
    }
    let window = start.elapsed();
    let c1 = cpu.and_then(|c| c.cpu_ns().ok());
    let t1 = pid.map(thread_times).unwrap_or_default();
    if let Some(e) = first_error {
        return Err(e);
    }
    let cpu_ns = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
    Ok(Report::new(
        opts,
        tally,
        window,
        cpu_ns,
        thread_delta(&t0, &t1),
    ))
}

/// What a request in flight was.
enum Pending {
    Create { sent: Instant },
    Destroy { sent: Instant },
}

/// One API connection doing create → destroy over and over.
struct Conn {
    ws: WebSocket<TcpStream>,
    next_tid: u64,
    /// Where the offers say our (silent) media is: a bound socket nobody reads.
    media: UdpSocket,
    in_flight: HashMap<u64, Pending>,
}

impl Conn {
    fn open(url: &str) -> anyhow::Result<Conn> {
        let ws = open_socket(url, POLL)?;
        let media = UdpSocket::bind("127.0.0.1:0").context("binding the offer's media socket")?;
        Ok(Conn {
            ws,
            next_tid: 1,
            media,
            in_flight: HashMap::new(),
        })
    }

    fn queue(&mut self, cmd: &str, data: Value, pending: Pending) -> anyhow::Result<()> {
        let tid = self.next_tid;
        self.next_tid += 1;
        let req =
            json!({"class": "media", "subclass": "session", "cmd": cmd, "data": data, "tid": tid});
        self.ws.write(Message::text(req.to_string()))?;
        self.in_flight.insert(tid, pending);
        Ok(())
    }

    fn queue_create(&mut self) -> anyhow::Result<()> {
        let offer = sdp::offer(self.media.local_addr()?, self.next_tid);
        let data = json!({"type": "echo", "sdp_type": "rtp",
                          "offer": {"sdp": offer, "sdp_type": "rtp"}});
        let sent = Instant::now();
        self.queue("create", data, Pending::Create { sent })
    }

    /// Keeps `pipeline` pairs in flight until the deadline or the shared pair budget is
    /// reached, then finishes what is in flight (every created session is destroyed).
    fn churn(
        &mut self,
        opts: &Options,
        deadline: Instant,
        started: &AtomicU64,
    ) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        let mut pairs_in_flight = 0usize;
        let mut last_progress = Instant::now();
        loop {
            let mut wrote = false;
            while pairs_in_flight < opts.pipeline && Instant::now() < deadline {
                let n = started.fetch_add(1, Ordering::Relaxed);
                if opts.pairs.is_some_and(|max| n >= max) {
                    break;
                }
                self.queue_create()?;
                pairs_in_flight += 1;
                wrote = true;
            }
            if wrote {
                self.ws.flush()?;
            }
            if pairs_in_flight == 0 {
                return Ok(tally);
            }
            // Events (created, destroyed) are acknowledged inside, like any client should.
            let Some(v) = read_reply(&mut self.ws)? else {
                if last_progress.elapsed() > TIMEOUT {
                    bail!("no reply within {TIMEOUT:?} ({pairs_in_flight} pairs in flight)");
                }
                continue;
            };
            let Some(pending) = v
                .get("tid")
                .and_then(Value::as_u64)
                .and_then(|tid| self.in_flight.remove(&tid))
            else {
                continue; // `{ack}` or a reply to someone else's tid
            };
            last_progress = Instant::now();
            let ok = v["result"].as_str() == Some("ok");
            match pending {
                Pending::Create { sent } => {
                    let id = v["data"]["session_id"].as_str();
                    match (ok, id) {
                        (true, Some(id)) => {
                            tally.create.push(sent.elapsed());
                            let sent = Instant::now();
                            let data = json!({ "session_id": id });
                            self.queue("destroy", data, Pending::Destroy { sent })?;
                            self.ws.flush()?;
                        }
                        _ => {
                            tally.failed_creates += 1;
                            pairs_in_flight -= 1;
                            if tally.failed_creates == 1 {
                                eprintln!("loadgen: churn: create failed: {}", v["data"]);
                            }
                        }
                    }
                }
                Pending::Destroy { sent } => {
                    pairs_in_flight -= 1;
                    if ok {
                        tally.destroy.push(sent.elapsed());
                        tally.pairs += 1;
                    } else {
                        tally.failed_destroys += 1;
                    }
                }
            }
        }
    }

    fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let sorted = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(quantile(&sorted, 0.5), Duration::from_millis(5));
        assert_eq!(quantile(&sorted, 0.99), Duration::from_millis(10));
        assert_eq!(quantile(&sorted, 0.0), Duration::from_millis(1));
        assert_eq!(quantile(&sorted, 1.0), Duration::from_millis(10));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn latency_sorts_its_samples() {
        let mut samples = ms(&[9, 1, 5, 3, 7]);
        let l = Latency::of(&mut samples);
        assert_eq!(l.p50_us, 5_000.0);
        assert_eq!(l.p99_us, 9_000.0);
        assert_eq!(l.max_us, 9_000.0);
    }

    #[test]
    fn tallies_merge_and_report_rates() {
        let mut a = Tally {
            pairs: 3,
            failed_creates: 1,
            create: ms(&[1, 2, 3]),
            destroy: ms(&[4, 5, 6]),
            ..Tally::default()
        };
        a.merge(Tally {
            pairs: 1,
            failed_destroys: 2,
            create: ms(&[10]),
            destroy: ms(&[20]),
            ..Tally::default()
        });
        assert_eq!((a.pairs, a.failed_creates, a.failed_destroys), (4, 1, 2));
        let opts = Options {
            url: String::new(),
            connections: 2,
            pipeline: 1,
            pairs: None,
            duration: Duration::from_secs(1),
        };
        let r = Report::new(&opts, a, Duration::from_secs(2), Some(8_000_000), vec![]);
        assert_eq!(r.pairs_per_sec(), 2.0);
        assert_eq!(r.cpu_us_per_pair(), Some(2_000.0));
        assert_eq!(r.cpu_pct(), Some(0.4));
        assert_eq!(r.create.p50_us, 2_000.0);
        assert_eq!(r.destroy.max_us, 20_000.0);
        assert!(r.text().contains("| 2 |"), "{}", r.text());
    }
}
