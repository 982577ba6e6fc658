//! `cluster`: a cluster of its own, then what the cluster adds. loadgen starts a
//! `redis-server` on a unix socket in a temporary folder and `--nodes` sluice processes on it
//! (`--workers 1 --io mmsg --steer off --raw-send off`, one port range each, node ids n1, n2,
//! ...), waits until every node lists every other, and runs `--scenarios`:
//!
//! - `requests`: `media/session/get_info` of an echo session on n1, asked `--requests` times
//!   through n1 and as often through n2 (alternating, one WebSocket client per node): p50/p99
//!   of each path and what carrying it through Redis adds;
//! - `relay`: `--publishers` plain-RTP PCMU publishers on n1 at 50 pkt/s each, every one with
//!   `--listeners` listeners on n1 (local) and, for a second set of publishers, on n2 (served
//!   from one relay stream per publisher). The two sets take turns (local, relayed, relayed,
//!   local; `--duration` in all per set); the receiving node's CPU time (/proc/PID/stat
//!   utime + stime) per packet it sends (`sluice_packets_sent_total`), gross and net of its idle
//!   CPU, and loss at the listeners;
//! - `room`: one publisher on n1 at 50 pkt/s, `--room-listeners` listeners spread round robin
//!   over every node (each its own UDP socket here), for `--duration`: egress packets/s, CPU
//!   and loss per node.
//!
//! Every process it starts is stopped by PID (SIGTERM, then SIGKILL) when the run ends, also
//! on error; the folder is removed.

use std::io::{Read, Write};
use std::ops::RangeInclusive;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64};

use sluice_bench::cli::{ClusterArgs, Scenario};
use sluice_bench::hist::Histogram;
use sluice_bench::sys::MmsgBatch;
use sluice_bench::traffic::{Probe, read_probe, write_probe};

use super::scrape::get_metrics;
use super::*;

/// The media ports the nodes share out (above the usual ephemeral range's busiest part).
const PORTS: RangeInclusive<u16> = 61000..=65499;
/// Upper bound of any wait for the cluster (Redis up, nodes listing each other).
const WAIT: Duration = Duration::from_secs(20);
/// A PCMU publisher: one packet per 20 ms.
const PUBLISHER_PPS: u64 = 50;
/// 12-byte RTP header + 160 bytes of PCMU.
const PACKET: usize = 172;
/// A short flow before each measurement: proves the path and lets the relays open.
const WARM_UP: Duration = Duration::from_millis(400);
/// How long to keep receiving after the last send.
const DRAIN: Duration = Duration::from_millis(500);
/// Idle time over which each node's background CPU is read.
const IDLE: Duration = Duration::from_secs(2);
/// get_info requests per path before the measured ones.
const REQUEST_WARM_UP: usize = 200;
/// Listener sockets of the relay scenario, per set (listeners share them round robin).
const RELAY_SOCKETS: usize = 16;
/// Kernel buffer of a room listener's socket: 50 pkt/s needs little.
const ROOM_BUFFER: usize = 1 << 18;
/// Descriptors kept free beyond the sockets loadgen binds.
const FD_HEADROOM: u64 = 64;

/// Probe run ids of this mode, apart from those of `traffic`.
static NEXT_FLOW: AtomicU32 = AtomicU32::new(0x4c00_0000);

/// A sluice node loadgen started.
struct Node {
    id: String,
    server: Server,
    api: String,
    /// `host:port` of its API listener (for /metrics).
    host: String,
    ports: RangeInclusive<u16>,
}

impl Node {
    fn cpu_ns(&self) -> anyhow::Result<u64> {
        CpuSource::Process(self.server.pid()).cpu_ns()
    }

    /// The value of metric `name` (without labels) on its /metrics.
    fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let body = get_metrics(&self.host)?;
        metric_value(&body, name).with_context(|| format!("{}: no {name} in /metrics", self.id))
    }
}

/// The value of the unlabelled sample `name` in Prometheus text.
fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// Redis and the nodes; every process is stopped (by PID) when dropped.
struct Cluster {
    dir: PathBuf,
    redis: Option<Server>,
    nodes: Vec<Node>,
}

/// Whether `args` sets `flag` (`--flag VALUE` or `--flag=VALUE`).
fn given(args: &[String], flag: &str) -> bool {
    args.iter()
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

/// Node `i`'s share of [`PORTS`] (even bounds, as RTP/RTCP pairs want).
fn node_ports(i: usize, nodes: usize) -> RangeInclusive<u16> {
    let span = ((PORTS.end() - PORTS.start() + 1) as usize / nodes) & !1;
    let lo = *PORTS.start() as usize + i * span;
    lo as u16..=(lo + span - 1) as u16
}

impl Cluster {
    fn start(c: &ClusterArgs, extra: &[String]) -> anyhow::Result<Cluster> {
        let dir =
            std::env::temp_dir().join(format!("sluice-loadgen-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cluster = Cluster {
            dir,
            redis: None,
            nodes: Vec::new(),
        };
        let sock = cluster.dir.join("redis.sock");
        let mut cmd = Command::new(&c.redis);
        cmd.args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(&cluster.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let redis = cluster.redis.insert(Server::spawn_command(cmd, &c.redis)?);
        let deadline = Instant::now() + WAIT;
        while !ping(&sock) {
            if redis.exited() || Instant::now() >= deadline {
                bail!("{} did not start:\n{}", c.redis, redis.output());
            }
            thread::sleep(Duration::from_millis(20));
        }
        let url = format!("redis+unix://{}", sock.display());
        for i in 0..c.nodes {
            let id = format!("n{}", i + 1);
            let ports = node_ports(i, c.nodes);
            let defaults = [
                ("--api", "127.0.0.1:0".to_string()),
                ("--media-ip", "127.0.0.1".into()),
                ("--rtp-ports", format!("{}-{}", ports.start(), ports.end())),
                ("--workers", "1".into()),
                ("--io", "mmsg".into()),
                ("--steer", "off".into()),
                ("--raw-send", "off".into()),
                ("--api-rate", "0".into()),
                ("--disconnect-grace", "0".into()),
                (
                    "--record-dir",
                    cluster.dir.join(format!("rec-{id}")).display().to_string(),
                ),
            ];
            let mut argv: Vec<String> = defaults
                .into_iter()
                .filter(|(flag, _)| !given(extra, flag))
                .flat_map(|(flag, value)| [flag.to_string(), value])
                .collect();
            argv.extend(extra.iter().cloned());
            argv.extend([
                "--cluster".into(),
                url.clone(),
                "--node-id".into(),
                id.clone(),
                "--cluster-ttl".into(),
                c.ttl.clone(),
            ]);
            let server =
                Server::spawn(&c.sluice, &argv).with_context(|| format!("starting node {id}"))?;
            let api = server.ready.api.clone();
            let host = sluice_bench::wsapi::authority(&api)?.to_string();
            eprintln!(
                "loadgen: cluster: node {id} pid {} api {api} ports {}-{}",
                server.pid(),
                ports.start(),
                ports.end()
            );
            cluster.nodes.push(Node {
                id,
                server,
                api,
                host,
                ports,
            });
        }
        Ok(cluster)
    }

    /// An API client on every node, once every node lists all of them.
    fn clients(&self) -> anyhow::Result<Vec<Api>> {
        let mut apis = Vec::new();
        for node in &self.nodes {
            let mut api = Api::connect(&node.api)?;
            let deadline = Instant::now() + WAIT;
            loop {
                let list = api.request("node", "get_list", json!({}))?;
                let n = list.as_array().map_or(0, Vec::len);
                if n == self.nodes.len() {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "node {} lists {n} of {} nodes after {WAIT:?}: {list}",
                        node.id,
                        self.nodes.len()
                    );
                }
                thread::sleep(Duration::from_millis(50));
            }
            apis.push(api);
        }
        Ok(apis)
    }

    /// Every node's CPU time so far.
    fn cpu(&self) -> anyhow::Result<Vec<u64>> {
        self.nodes.iter().map(Node::cpu_ns).collect()
    }

    /// Every node's `sluice_packets_sent_total`.
    fn egress(&self) -> anyhow::Result<Vec<f64>> {
        self.nodes
            .iter()
            .map(|n| n.metric("sluice_packets_sent_total"))
            .collect()
    }

    /// The nodes' last output lines.
    fn output(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("--- {} ---\n{}\n", n.id, n.server.output()));
        }
        out
    }

    /// Stops the nodes, then Redis; whether all exited cleanly.
    fn stop(&mut self) -> bool {
        let mut clean = true;
        for mut n in self.nodes.drain(..) {
            clean &= n.server.stop();
        }
        if let Some(mut r) = self.redis.take() {
            r.stop();
        }
        clean
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether Redis answers PING on `sock`.
fn ping(sock: &std::path::Path) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// Sessions to destroy at the end, each through the node (index) that created it, and rooms.
#[derive(Default)]
struct Created {
    sessions: Vec<(usize, String)>,
    rooms: Vec<(usize, String)>,
}

impl Created {
    /// Destroys everything (listeners first: they were created last); says what failed. A
    /// room usually ends with its last member, so a room already gone is no failure.
    fn destroy(mut self, apis: &mut [Api]) {
        self.sessions.reverse();
        let failed = self
            .sessions
            .iter()
            .filter(|(i, id)| apis[*i].destroy(id).is_err())
            .count();
        for (i, room) in &self.rooms {
            let _ = apis[*i].destroy_room(room);
        }
        if failed > 0 {
            eprintln!("loadgen: cluster: {failed} sessions could not be destroyed");
        }
    }
}

/// A publisher created through `apis[node]`, sending from `sock`; where its RTP goes.
fn publish(
    apis: &mut [Api],
    node: usize,
    sock: &UdpSocket,
    created: &mut Created,
) -> anyhow::Result<(String, SocketAddr)> {
    let p = apis[node]
        .create_publish(&sdp::offer(sock.local_addr()?, 1))
        .context("creating a publisher")?;
    created.sessions.push((node, p.session_id.clone()));
    if let Some(room) = p.room_id {
        created.rooms.push((node, room));
    }
    Ok((p.session_id, sdp::audio_addr(&p.sdp)?))
}

/// A listener of `publisher` created through (and so served by) `nodes[node]`, receiving on
/// `sock`; checks that its media comes from that node's ports.
fn listen(
    apis: &mut [Api],
    nodes: &[Node],
    node: usize,
    publisher: &str,
    sock: &UdpSocket,
    created: &mut Created,
) -> anyhow::Result<()> {
    let api = &mut apis[node];
    let l = api
        .create_listen(publisher)
        .with_context(|| format!("creating a listener on {}", nodes[node].id))?;
    created.sessions.push((node, l.session_id.clone()));
    let from = sdp::audio_addr(&l.sdp)?;
    if !nodes[node].ports.contains(&from.port()) {
        bail!(
            "a listener created through {} is served from port {}, not from its ports {:?}",
            nodes[node].id,
            from.port(),
            nodes[node].ports
        );
    }
    let answer = sdp::answer(&l.sdp, sock.local_addr()?, 2)?;
    api.set_answer(&l.session_id, &answer)
}

/// What one flow delivered.
struct Flowed {
    sent: u64,
    send_failed: u64,
    send_time: Duration,
    /// Probes received per group of receiving sockets.
    received: Vec<u64>,
    latency: Vec<Histogram>,
    stray: u64,
}

/// Sends PCMU-sized probes from every `senders[i]` to `dests[i]` at [`PUBLISHER_PPS`] each
/// for `duration`, and counts what comes back on `receivers` (socket `k` in group
/// `groups[k]`) until `copies` per packet are in or [`DRAIN`] after the last send. A sending
/// and a receiving thread, both pinned to `cpu`.
fn flow(
    senders: &[UdpSocket],
    dests: &[SocketAddr],
    receivers: &[UdpSocket],
    groups: &[usize],
    copies: u64,
    duration: Duration,
    cpu: Option<usize>,
) -> Flowed {
    let id = NEXT_FLOW.fetch_add(1, Ordering::Relaxed);
    let n_groups = groups.iter().max().map_or(1, |g| g + 1);
    let sent = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let pin = || {
        if let Some(cpu) = cpu
            && let Err(e) = sys::pin_current_thread(cpu)
        {
            eprintln!("loadgen: could not pin to cpu {cpu}: {e}");
        }
    };
    thread::scope(|s| {
        let tx = s.spawn(|| {
            pin();
            let rate = PUBLISHER_PPS * senders.len() as u64;
            let total = (rate as f64 * duration.as_secs_f64()) as u64;
            let mut buf = [0u8; PACKET];
            let mut seq = vec![0u16; senders.len()];
            let (mut i, mut failed) = (0u64, 0u64);
            while i < total {
                let due = ((rate as f64 * start.elapsed().as_secs_f64()) as u64).min(total);
                while i < due {
                    let p = (i % senders.len() as u64) as usize;
                    let probe = Probe {
                        run: id,
                        stream: p as u32,
                        seq: i,
                        sent_ns: start.elapsed().as_nanos() as u64,
                    };
                    write_probe(&mut buf, seq[p], 0x5200_0000 + p as u32, probe);
                    seq[p] = seq[p].wrapping_add(1);
                    match senders[p].send_to(&buf, dests[p]) {
                        Ok(_) => {
                            sent.fetch_add(1, Ordering::Release);
                        }
                        Err(_) => failed += 1,
                    }
                    i += 1;
                }
                thread::sleep(Duration::from_millis(1));
            }
            let send_time = start.elapsed();
            done.store(true, Ordering::Release);
            (failed, send_time)
        });
        let rx = s.spawn(|| {
            pin();
            let socks: Vec<&UdpSocket> = receivers.iter().collect();
            let mut batch = MmsgBatch::new();
            let mut ready = Vec::new();
            let mut received = vec![0u64; n_groups];
            let mut latency = vec![Histogram::new(); n_groups];
            let (mut total, mut stray) = (0u64, 0u64);
            let mut done_at: Option<Instant> = None;
            let hard_stop = duration * 2 + Duration::from_secs(10);
            loop {
                if done_at.is_none() && done.load(Ordering::Acquire) {
                    done_at = Some(Instant::now());
                }
                if let Some(d) = done_at
                    && (total >= sent.load(Ordering::Acquire) * copies || d.elapsed() >= DRAIN)
                {
                    break;
                }
                if start.elapsed() >= hard_stop
                    || sys::poll_readable(&socks, Duration::from_millis(10), &mut ready).is_err()
                {
                    break;
                }
                for (k, _) in ready.iter().enumerate().filter(|(_, r)| **r) {
                    loop {
                        let n = batch.recv(socks[k], false).unwrap_or(0);
                        let now = start.elapsed().as_nanos() as u64;
                        for j in 0..n {
                            match read_probe(batch.get(j).1) {
                                Some(p) if p.run == id => {
                                    let g = groups[k];
                                    received[g] += 1;
                                    total += 1;
                                    latency[g].record(now.saturating_sub(p.sent_ns));
                                }
                                _ => stray += 1,
                            }
                        }
                        if n < sys::BATCH {
                            break;
                        }
                    }
                }
            }
            (received, latency, stray)
        });
        let (send_failed, send_time) = tx.join().unwrap_or_default();
        let (received, latency, stray) = rx
            .join()
            .unwrap_or_else(|_| (vec![0; n_groups], vec![Histogram::new(); n_groups], 0));
        Flowed {
            sent: sent.load(Ordering::Acquire),
            send_failed,
            send_time,
            received,
            latency,
            stray,
        }
    })
}

/// A short flow that must deliver something to every group.
fn warm_up(
    what: &str,
    senders: &[UdpSocket],
    dests: &[SocketAddr],
    receivers: &[UdpSocket],
    groups: &[usize],
    copies: u64,
    cpu: Option<usize>,
) -> anyhow::Result<()> {
    let f = flow(senders, dests, receivers, groups, copies, WARM_UP, cpu);
    if let Some(g) = f.received.iter().position(|&r| r == 0) {
        bail!(
            "{what}: warm-up: nothing reached group {g} ({} sent, {:?} received, {} stray): \
             is the media path up?",
            f.sent,
            f.received,
            f.stray
        );
    }
    Ok(())
}

/// CPU and egress counters of every node around one flow.
struct Measured {
    flow: Flowed,
    /// CPU per node over `cpu_window`.
    cpu_ns: Vec<u64>,
    cpu_window: Duration,
    /// `sluice_packets_sent_total` delta per node.
    egress: Vec<f64>,
}

/// Runs `f` between two readings of every node's CPU and egress counter. The scrapes of
/// /metrics are outside the CPU window.
fn measured(cluster: &Cluster, f: impl FnOnce() -> Flowed) -> anyhow::Result<Measured> {
    let e0 = cluster.egress()?;
    let c0 = cluster.cpu()?;
    let t0 = Instant::now();
    let flow = f();
    let c1 = cluster.cpu()?;
    let cpu_window = t0.elapsed();
    let e1 = cluster.egress()?;
    Ok(Measured {
        flow,
        cpu_ns: c1
            .iter()
            .zip(&c0)
            .map(|(b, a)| b.saturating_sub(*a))
            .collect(),
        cpu_window,
        egress: e1.iter().zip(&e0).map(|(b, a)| (b - a).max(0.0)).collect(),
    })
}

/// Each node's CPU rate (ns per second) while nothing is sent.
fn idle_rates(cluster: &Cluster) -> anyhow::Result<Vec<f64>> {
    let c0 = cluster.cpu()?;
    let t0 = Instant::now();
    thread::sleep(IDLE);
    let c1 = cluster.cpu()?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(c1
        .iter()
        .zip(&c0)
        .map(|(b, a)| b.saturating_sub(*a) as f64 / secs)
        .collect())
}

fn us(ns: u64) -> String {
    format!("{:.0}", ns as f64 / 1000.0)
}

fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

fn pct(lost: u64, expected: u64) -> f64 {
    if expected == 0 {
        return 0.0;
    }
    100.0 * lost as f64 / expected as f64
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// get_info of a session on n1 through n1 and through n2.
fn requests(cluster: &Cluster, apis: &mut [Api], n: usize) -> anyhow::Result<()> {
    let phone = bind_sockets(1)?;
    let echo = apis[0].create_echo(&sdp::offer(phone[0].local_addr()?, 1))?;
    let data = json!({"session_id": echo.session_id});
    let result = (|| -> anyhow::Result<[Histogram; 2]> {
        let info = apis[1].request("session", "get_info", data.clone())?;
        if info["node"] != json!(cluster.nodes[0].id) {
            bail!(
                "get_info through {} places the session on {}, not {}",
                cluster.nodes[1].id,
                info["node"],
                cluster.nodes[0].id
            );
        }
        for _ in 0..REQUEST_WARM_UP {
            apis[0].request("session", "get_info", data.clone())?;
            apis[1].request("session", "get_info", data.clone())?;
        }
        eprintln!("loadgen: cluster: requests: {n} get_info per path");
        let mut h = [Histogram::new(), Histogram::new()];
        for i in 0..n {
            // Alternating which goes first: neither path always follows the other.
            for k in [i % 2, 1 - i % 2] {
                let t = Instant::now();
                apis[k].request("session", "get_info", data.clone())?;
                h[k].record(t.elapsed().as_nanos() as u64);
            }
        }
        Ok(h)
    })();
    let _ = apis[0].destroy(&echo.session_id);
    let [local, remote] = result?;
    let (a, b) = (&cluster.nodes[0].id, &cluster.nodes[1].id);
    println!();
    println!(
        "1. cross-node request: media/session/get_info of a session on {a}, {n} requests per path, one WebSocket client per node, sequential"
    );
    println!(
        "   {:<22} {:>8} {:>8} {:>8} {:>8}",
        "path", "p50 µs", "p90 µs", "p99 µs", "max µs"
    );
    for (name, h) in [
        (format!("through {a} (local)"), &local),
        (format!("through {b} (remote)"), &remote),
    ] {
        println!(
            "   {:<22} {:>8} {:>8} {:>8} {:>8}",
            name,
            us(h.quantile(0.5)),
            us(h.quantile(0.9)),
            us(h.quantile(0.99)),
            us(h.max())
        );
    }
    let added = |q| remote.quantile(q) as i64 - local.quantile(q) as i64;
    let p99 = remote.quantile(0.99);
    println!(
        "   added by the hop through Redis: p50 {:+.0} µs, p99 {:+.0} µs; remote p99 {} ms (target ≤ 5 ms: {})",
        added(0.5) as f64 / 1000.0,
        added(0.99) as f64 / 1000.0,
        ms(p99),
        verdict(p99 <= 5_000_000)
    );
    Ok(())
}

/// One configuration of the relay scenario: its publishers on n1, its listeners on `node`.
struct RelaySet {
    name: &'static str,
    /// Where the listeners live (and so the receiving node).
    node: usize,
    senders: Vec<UdpSocket>,
    dests: Vec<SocketAddr>,
    receivers: Vec<UdpSocket>,
    runs: Vec<Measured>,
}

impl RelaySet {
    fn open(
        name: &'static str,
        node: usize,
        publishers: usize,
        listeners: usize,
        cluster: &Cluster,
        apis: &mut [Api],
        created: &mut Created,
    ) -> anyhow::Result<RelaySet> {
        let senders = bind_sockets(publishers)?;
        let receivers = bind_sockets(RELAY_SOCKETS.min(publishers * listeners))?;
        let mut dests = Vec::with_capacity(publishers);
        eprintln!(
            "loadgen: cluster: relay: {publishers} publishers on {}, {listeners} listeners each on {}",
            cluster.nodes[0].id, cluster.nodes[node].id
        );
        for (p, sock) in senders.iter().enumerate() {
            let (id, dest) = publish(apis, 0, sock, created)?;
            dests.push(dest);
            for l in 0..listeners {
                let r = &receivers[(p * listeners + l) % receivers.len()];
                listen(apis, &cluster.nodes, node, &id, r, created)?;
            }
        }
        Ok(RelaySet {
            name,
            node,
            senders,
            dests,
            receivers,
            runs: Vec::new(),
        })
    }
}

/// Relayed listeners on n2 against local listeners on n1, for publishers on n1.
fn relay(
    cluster: &Cluster,
    apis: &mut [Api],
    args: &Args,
    cpu: Option<usize>,
) -> anyhow::Result<()> {
    let (publishers, k) = (args.cluster.publishers, args.listeners);
    let mut created = Created::default();
    let result = (|| -> anyhow::Result<(Vec<RelaySet>, Vec<f64>)> {
        let mut sets = vec![
            RelaySet::open("local", 0, publishers, k, cluster, apis, &mut created)?,
            RelaySet::open("relayed", 1, publishers, k, cluster, apis, &mut created)?,
        ];
        let groups = [0; RELAY_SOCKETS];
        for s in &sets {
            let g = &groups[..s.receivers.len()];
            warm_up(s.name, &s.senders, &s.dests, &s.receivers, g, k as u64, cpu)?;
        }
        let relays = cluster.nodes[1]
            .metric("sluice_cluster_relay_streams")
            .unwrap_or(f64::NAN);
        eprintln!(
            "loadgen: cluster: relay: {} reports {relays} relay streams; idle CPU for {IDLE:?}",
            cluster.nodes[1].id
        );
        let idle = idle_rates(cluster)?;
        let half = args.duration / 2;
        // local, relayed, relayed, local: each set's windows are spread alike over the run.
        for i in [0, 1, 1, 0] {
            let s = &mut sets[i];
            eprintln!(
                "loadgen: cluster: relay: {} for {:.1} s",
                s.name,
                half.as_secs_f64()
            );
            let g = &groups[..s.receivers.len()];
            let m = measured(cluster, || {
                flow(&s.senders, &s.dests, &s.receivers, g, k as u64, half, cpu)
            })?;
            s.runs.push(m);
        }
        Ok((sets, idle))
    })();
    created.destroy(apis);
    let (sets, idle) = result?;
    let (a, b) = (&cluster.nodes[0].id, &cluster.nodes[1].id);
    println!();
    println!(
        "2. relayed vs local listener: {publishers} PCMU publishers on {a} at {PUBLISHER_PPS} pkt/s, {k} listeners each; {:.1} s per set in two windows",
        args.duration.as_secs_f64()
    );
    println!(
        "   idle CPU: {}",
        cluster
            .nodes
            .iter()
            .zip(&idle)
            .map(|(n, r)| format!("{} {:.2}%", n.id, r / 1e7))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "   {:<8} {:<5} {:>10} {:>8} {:>9} {:>8} {:>9} {:>10} {:>9} {:>9}",
        "set",
        "recv",
        "egress/s",
        "loss %",
        "recv cpu%",
        "ns/pkt",
        "net ns/pkt",
        "cluster ns",
        "p50 µs",
        "p99 µs"
    );
    let mut per_pkt = Vec::new();
    for s in &sets {
        let node = s.node;
        let sum = |f: &dyn Fn(&Measured) -> f64| s.runs.iter().map(f).sum::<f64>();
        let send_secs = sum(&|m| m.flow.send_time.as_secs_f64());
        let window = sum(&|m| m.cpu_window.as_secs_f64());
        let egress = sum(&|m| m.egress[node]);
        let cpu = sum(&|m| m.cpu_ns[node] as f64);
        let net = cpu - idle[node] * window;
        // Every node's CPU, less its idle, per packet delivered to a listener.
        let all_cpu = sum(&|m| m.cpu_ns.iter().sum::<u64>() as f64);
        let all_net = all_cpu - idle.iter().sum::<f64>() * window;
        let sent = sum(&|m| m.flow.sent as f64) as u64;
        let got = sum(&|m| m.flow.received[0] as f64) as u64;
        let expected = sent * k as u64;
        let mut lat = Histogram::new();
        for m in &s.runs {
            lat.merge(&m.flow.latency[0]);
        }
        let failed: u64 = s.runs.iter().map(|m| m.flow.send_failed).sum();
        if failed > 0 {
            println!("   {}: {failed} sends refused by the kernel", s.name);
        }
        println!(
            "   {:<8} {:<5} {:>10.0} {:>8.3} {:>9.1} {:>8.0} {:>10.0} {:>10.0} {:>9} {:>9}",
            s.name,
            cluster.nodes[node].id,
            egress / send_secs,
            pct(expected.saturating_sub(got), expected),
            100.0 * cpu / 1e9 / window,
            cpu / egress.max(1.0),
            net / egress.max(1.0),
            all_net / (got.max(1) as f64),
            us(lat.quantile(0.5)),
            us(lat.quantile(0.99)),
        );
        per_pkt.push((
            cpu / egress.max(1.0),
            net / egress.max(1.0),
            all_net / got.max(1) as f64,
        ));
    }
    let (local, relayed) = (per_pkt[0], per_pkt[1]);
    let ratio = relayed.1 / local.1;
    println!(
        "   receiving node per egress packet, relayed ({b}) / local ({a}): {:.2}x gross, {ratio:.2}x net of idle (target ≤ 1.2x: {}); whole cluster per delivered packet: {:.2}x",
        relayed.0 / local.0,
        verdict(ratio <= 1.2),
        relayed.2 / local.2
    );
    Ok(())
}

/// One publisher on n1, `listeners` listeners spread round robin over every node.
fn room(
    cluster: &Cluster,
    apis: &mut [Api],
    args: &Args,
    fd_limit: u64,
    cpu: Option<usize>,
) -> anyhow::Result<()> {
    let listeners = args.cluster.room_listeners;
    let nodes = cluster.nodes.len();
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as u64;
    if open + listeners as u64 + FD_HEADROOM > fd_limit {
        bail!(
            "room: {listeners} listener sockets do not fit the open-file limit {fd_limit} \
             ({open} open already): lower --room-listeners or raise `ulimit -Hn`"
        );
    }
    let publisher = bind_sockets(1)?;
    let receivers = (0..listeners)
        .map(|_| sys::bind_udp(SocketAddr::new(LOOPBACK, 0), ROOM_BUFFER))
        .collect::<Result<Vec<_>, _>>()
        .context("binding the listeners' sockets")?;
    let groups: Vec<usize> = (0..listeners).map(|i| i % nodes).collect();
    let mut on_node = vec![0u64; nodes];
    for &g in &groups {
        on_node[g] += 1;
    }
    let mut created = Created::default();
    let result = (|| -> anyhow::Result<(Measured, Vec<f64>)> {
        let (id, dest) = publish(apis, 0, &publisher[0], &mut created)?;
        eprintln!("loadgen: cluster: room: subscribing {listeners} listeners over {nodes} nodes");
        let t = Instant::now();
        for (i, sock) in receivers.iter().enumerate() {
            listen(apis, &cluster.nodes, groups[i], &id, sock, &mut created)?;
        }
        eprintln!(
            "loadgen: cluster: room: {listeners} listeners in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let dests = [dest];
        warm_up(
            "room",
            &publisher,
            &dests,
            &receivers,
            &groups,
            listeners as u64,
            cpu,
        )?;
        let relays = cluster
            .nodes
            .iter()
            .map(|n| n.metric("sluice_cluster_relay_streams").unwrap_or(f64::NAN))
            .collect();
        eprintln!(
            "loadgen: cluster: room: 1 publisher -> {listeners} listeners for {:.1} s",
            args.duration.as_secs_f64()
        );
        let m = measured(cluster, || {
            flow(
                &publisher,
                &dests,
                &receivers,
                &groups,
                listeners as u64,
                args.duration,
                cpu,
            )
        })?;
        Ok((m, relays))
    })();
    created.destroy(apis);
    let (m, relays) = result?;
    let secs = m.flow.send_time.as_secs_f64();
    println!();
    println!(
        "3. room: 1 PCMU publisher on {} at {PUBLISHER_PPS} pkt/s -> {listeners} plain-RTP listeners over {nodes} nodes, {:.1} s",
        cluster.nodes[0].id, secs
    );
    println!(
        "   {:<5} {:>9} {:>7} {:>10} {:>12} {:>8} {:>7} {:>8} {:>8} {:>8}",
        "node",
        "listeners",
        "relays",
        "egress/s",
        "delivered/s",
        "loss %",
        "cpu %",
        "ns/pkt",
        "p50 µs",
        "p99 µs"
    );
    let window = m.cpu_window.as_secs_f64();
    for (i, n) in cluster.nodes.iter().enumerate() {
        let expected = m.flow.sent * on_node[i];
        let got = m.flow.received[i];
        println!(
            "   {:<5} {:>9} {:>7} {:>10.0} {:>12.0} {:>8.3} {:>7.1} {:>8.0} {:>8} {:>8}",
            n.id,
            on_node[i],
            relays[i],
            m.egress[i] / secs,
            got as f64 / secs,
            pct(expected.saturating_sub(got), expected),
            100.0 * m.cpu_ns[i] as f64 / 1e9 / window,
            m.cpu_ns[i] as f64 / m.egress[i].max(1.0),
            us(m.flow.latency[i].quantile(0.5)),
            us(m.flow.latency[i].quantile(0.99)),
        );
    }
    let expected = m.flow.sent * listeners as u64;
    let got: u64 = m.flow.received.iter().sum();
    println!(
        "   total: {:.0} egress pkt/s, {:.0} delivered pkt/s, loss {:.3} % ({} sent, {} stray)",
        m.egress.iter().sum::<f64>() / secs,
        got as f64 / secs,
        pct(expected.saturating_sub(got), expected),
        m.flow.sent,
        m.flow.stray
    );
    Ok(())
}

pub(super) fn run(args: &Args, machine: &Machine, gen_cpu: Option<usize>) -> anyhow::Result<()> {
    let c = &args.cluster;
    let fd_limit = sys::raise_fd_limit().context("raising the open-file limit")?;
    let mut cluster = Cluster::start(c, &args.server_args)?;
    println!(
        "machine: {} ({} cores), kernel {}, load average {:.2} before the run",
        machine.cpu_model, machine.cores, machine.kernel, machine.loadavg
    );
    println!(
        "cluster: {} nodes ({}), each --workers 1 io={}; redis-server on a unix socket; --cluster-ttl {}; loadgen on cpu {}; open files {fd_limit}",
        c.nodes,
        cluster
            .nodes
            .iter()
            .map(|n| format!("{} pid {}", n.id, n.server.pid()))
            .collect::<Vec<_>>()
            .join(", "),
        cluster.nodes[0].server.ready.io,
        c.ttl,
        gen_cpu.map_or("any".into(), |c| c.to_string()),
    );
    let result = (|| -> anyhow::Result<()> {
        let mut apis = cluster.clients()?;
        for s in &c.scenarios {
            let t = Instant::now();
            match s {
                Scenario::Requests => requests(&cluster, &mut apis, c.requests)?,
                Scenario::Relay => relay(&cluster, &mut apis, args, gen_cpu)?,
                Scenario::Room => room(&cluster, &mut apis, args, fd_limit, gen_cpu)?,
            }
            eprintln!(
                "loadgen: cluster: {s:?} took {:.1} s",
                t.elapsed().as_secs_f64()
            );
            for n in &mut cluster.nodes {
                if n.server.exited() {
                    bail!("node {} exited:\n{}", n.id, n.server.output());
                }
            }
        }
        for api in apis {
            api.close();
        }
        Ok(())
    })();
    if result.is_err() {
        eprintln!("loadgen: the nodes' last output:\n{}", cluster.output());
    }
    if !cluster.stop() {
        eprintln!("loadgen: a node did not exit cleanly on SIGTERM");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_are_disjoint_even_and_inside() {
        for nodes in 2..=sluice_bench::cli::MAX_CLUSTER_NODES {
            let r: Vec<_> = (0..nodes).map(|i| node_ports(i, nodes)).collect();
            for w in r.windows(2) {
                assert!(w[0].end() < w[1].start());
            }
            for p in &r {
                assert!(p.start() % 2 == 0 && PORTS.contains(p.start()) && PORTS.contains(p.end()));
                assert!(p.end() - p.start() >= 399);
            }
        }
    }

    #[test]
    fn metric_values_are_read_by_exact_name() {
        let body = "# TYPE x counter\nsluice_packets_sent_total 1234\nsluice_packets_sent_totals 9\n\
                    sluice_cluster_relay_streams 2\n";
        assert_eq!(
            metric_value(body, "sluice_packets_sent_total"),
            Some(1234.0)
        );
        assert_eq!(
            metric_value(body, "sluice_cluster_relay_streams"),
            Some(2.0)
        );
        assert_eq!(metric_value(body, "sluice_sessions"), None);
    }
}
