//! loadgen's command line: the modes, the options and their defaults.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

use crate::traffic::{self, Load};

/// srtp-echo binds one socket per session and polls them all every tick.
pub const MAX_SRTP_SESSIONS: usize = 1000;
/// cluster: the nodes share ports 61000-65499, at least 400 each.
pub const MAX_CLUSTER_NODES: usize = 11;

/// Settings the spawned server gets unless `--server-arg` overrides them.
pub const SPAWN_DEFAULTS: [(&str, &str); 4] = [
    ("--api", "127.0.0.1:19010"),
    ("--rtp-ports", "40000-49999"),
    ("--workers", "1"),
    // loadgen is the one client: the per-connection API rate limit would measure itself.
    ("--api-rate", "0"),
];

/// What loadgen measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// N echo sessions; RTP to each, echoes counted.
    Echo,
    /// N WebRTC echo sessions (ICE, DTLS-SRTP, one socket each); SRTP to each, echoes
    /// unprotected and counted.
    SrtpEcho,
    /// One publisher, N listeners; RTP to the publisher, egress counted at the listeners.
    Fanout,
    /// Only the in-process recvmmsg/sendmmsg reflector (the kernel baseline).
    Reflector,
    /// Control plane: plain echo sessions created and destroyed over and over by
    /// --connections connections, --pipeline pairs in flight on each.
    Churn,
    /// N plain-RTP proxy calls (caller A -> server -> callee B), one-way RTP from A, counted
    /// at B, on each of --targets: sluice (proxy sessions over its API), rtpengine
    /// (offer/answer over NG; spawned), reflector (echo, the kernel baseline),
    /// reflector-uring (the same echo over io_uring).
    Proxy,
    /// --sessions plain echo sessions, then --scrapes GETs of /metrics: the server's CPU
    /// per scrape.
    Scrape,
    /// WebRTC data channels (str0m peers, data-only sessions): --sessions echo sessions and
    /// 1 publisher -> --listeners listeners, --rate messages/s of --size bytes per sender,
    /// alone or next to plain RTP echo (--data-scenarios).
    Data,
    /// Starts its own redis-server and --nodes sluice nodes (--sluice) in one cluster and
    /// measures a request carried to another node, a relayed listener against a local one,
    /// and a 1 -> --room-listeners room spread over every node.
    Cluster,
    /// --sessions browser-like WebRTC echo sessions (ICE, DTLS-SRTP; Opus 50 pkt/s + VP8 30
    /// pkt/s each, one socket each), on Sluice or, with --janus, Janus's EchoTest;
    /// --saturate searches the most sessions held loss-free.
    WebrtcEcho,
    /// One A/V WebRTC publisher, --listeners WebRTC listeners (Janus: a VideoRoom room);
    /// egress counted at the listeners.
    WebrtcRoom,
}

#[derive(Clone, Debug)]
pub struct Args {
    pub mode: Mode,
    pub api: String,
    pub spawn: Option<String>,
    pub server_args: Vec<String>,
    pub pid: Option<u32>,
    pub sessions: usize,
    pub listeners: usize,
    pub rate: u64,
    pub size: usize,
    pub duration: Duration,
    pub drain: Duration,
    pub sockets: usize,
    pub baseline: bool,
    pub record: bool,
    pub gen_cpu: Option<usize>,
    pub reflector_cpu: Option<usize>,
    pub json: bool,
    pub connections: usize,
    pub pipeline: usize,
    pub pairs: Option<u64>,
    /// scrape: the scrapes measured.
    pub scrapes: usize,
    /// data: the scenarios to run, in order.
    pub data_scenarios: Vec<DataScenario>,
    /// proxy: which forwarders to measure, in order (sluice, rtpengine, the reflectors).
    pub targets: Vec<Target>,
    /// proxy: the rtpengine binary.
    pub rtpengine: String,
    /// proxy: search each target's loss-free maximum, then offer `overload` times it.
    pub saturate: bool,
    /// proxy: callers offer RTCP multiplexing (RFC 5761).
    pub rtcp_mux: bool,
    pub overload: f64,
    /// Loss (%) still counted as loss-free by `--saturate`.
    pub loss_free_pct: f64,
    /// Length of each `--saturate` search step.
    pub step: Duration,
    pub max_rate: u64,
    /// cluster: what it starts and measures.
    pub cluster: ClusterArgs,
    /// webrtc-echo, webrtc-room: drive Janus's API at this WebSocket URL instead of Sluice.
    pub janus: Option<String>,
    /// webrtc-echo, webrtc-room: video packet size (audio packets are --size).
    pub video_size: usize,
    /// webrtc-echo, webrtc-room: the address our sockets bind to (and our candidates name).
    pub local_ip: std::net::IpAddr,
}

/// The options of `cluster` mode.
#[derive(Clone, Debug)]
pub struct ClusterArgs {
    /// The sluice binary each node runs.
    pub sluice: String,
    /// The redis-server binary.
    pub redis: String,
    pub nodes: usize,
    /// `--cluster-ttl` of every node, seconds.
    pub ttl: String,
    /// get_info requests per path (local, through another node).
    pub requests: usize,
    /// Relay scenario: publishers on the first node, 50 pkt/s each.
    pub publishers: usize,
    /// Room scenario: listeners spread over the nodes.
    pub room_listeners: usize,
    /// Which scenarios to run, in order.
    pub scenarios: Vec<Scenario>,
}

/// A measurement of `cluster` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// p50/p99 of get_info of a session on node 1, through node 1 and through node 2.
    Requests,
    /// The receiving node's CPU per egress packet: listeners on node 2 (served by a relay)
    /// against listeners on node 1 (local), for the same publishers on node 1.
    Relay,
    /// One publisher on node 1, --room-listeners listeners spread over every node.
    Room,
}

/// A measurement of `data` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DataScenario {
    /// --sessions data-only echo sessions, one channel each, each peer sending.
    Echo,
    /// One data-only publisher, --listeners data-only listeners (mirrored channel).
    Relay,
    /// Plain RTP echo alone (100 sessions, 10,000 pkt/s): the workers' CPU per RTP packet.
    Rtp,
    /// relay and that RTP load at once.
    RelayRtp,
}

/// A forwarder `proxy` mode measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Sluice,
    Rtpengine,
    Reflector,
    ReflectorUring,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Sluice => "sluice",
            Target::Rtpengine => "rtpengine",
            Target::Reflector => "reflector",
            Target::ReflectorUring => "reflector-uring",
        }
    }
}

/// loadgen's command line as clap reads it; [`Args`] is what the modes use.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Measures Sluice (and the baselines) with real packets"
)]
struct Cli {
    mode: Mode,
    /// Sluice API.
    #[arg(long, default_value = "ws://127.0.0.1:9010/api/ws")]
    api: String,
    /// Start this sluice binary (--api 127.0.0.1:19010 --rtp-ports 40000-49999 --workers 1),
    /// measure, stop it.
    #[arg(long)]
    spawn: Option<String>,
    /// Extra argument for --spawn, repeatable (e.g. --server-arg=--io --server-arg=mmsg).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Server process for CPU accounting (default: the spawned one, else the process named
    /// sluice).
    #[arg(long)]
    pid: Option<u32>,
    /// Echo sessions / reflector streams.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// Fanout listeners; cluster relay: listeners per publisher.
    #[arg(long, default_value_t = 8)]
    listeners: usize,
    /// Packets/s sent in total (default 50000; fanout: 5000 into the publisher).
    #[arg(long)]
    rate: Option<u64>,
    /// RTP packet size in bytes.
    #[arg(long, default_value_t = 172)]
    size: usize,
    /// Sending time in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Receive time after the last send, in milliseconds.
    #[arg(long, default_value_t = 500)]
    drain: u64,
    /// Local UDP sockets the streams are spread over (srtp-echo: always one per session).
    #[arg(long, default_value_t = 4)]
    sockets: usize,
    /// echo: then run the reflector under the same load; print both and the ratio.
    #[arg(long)]
    baseline: bool,
    /// echo: then the same load with recording started on every session.
    #[arg(long)]
    record: bool,
    /// Pin generator + receiver threads (default: the last core).
    #[arg(long = "gen-cpu")]
    gen_cpu: Option<usize>,
    /// Pin the reflectors (where sluice pins its first worker).
    #[arg(long = "reflector-cpu", default_value_t = 0)]
    reflector_cpu: usize,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// churn: parallel API connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// churn: create+destroy pairs in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// churn: stop after N pairs in total (default: run for --duration).
    #[arg(long)]
    pairs: Option<u64>,
    /// scrape: how many scrapes of /metrics are measured.
    #[arg(long, default_value_t = 100)]
    scrapes: usize,
    /// data: the scenarios to run, in order.
    #[arg(
        long = "data-scenarios",
        value_delimiter = ',',
        default_value = "echo,relay,rtp,relay-rtp"
    )]
    data_scenarios: Vec<DataScenario>,
    /// proxy: the forwarders to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "sluice")]
    targets: Vec<Target>,
    /// proxy: rtpengine binary, started with --table=-1 --num-threads=1, pinned to
    /// --reflector-cpu.
    #[arg(long, default_value = "rtpengine")]
    rtpengine: String,
    /// proxy: per target, search the highest rate with loss <= --loss-free (steps of --step
    /// s), measure it for --duration, then offer --overload times it and check that every
    /// stream still delivers afterwards.
    #[arg(long)]
    saturate: bool,
    /// proxy: callers offer a=rtcp-mux (callees always accept it when offered).
    #[arg(long = "rtcp-mux")]
    rtcp_mux: bool,
    /// proxy --saturate: the overload factor.
    #[arg(long, default_value_t = 2.0)]
    overload: f64,
    /// proxy --saturate: loss (%) still counted as loss-free.
    #[arg(long = "loss-free", default_value_t = 0.1)]
    loss_free: f64,
    /// proxy --saturate: length of each search step, in seconds.
    #[arg(long, default_value_t = 2.0)]
    step: f64,
    /// proxy --saturate: the search's upper bound (packets/s).
    #[arg(long = "max-rate", default_value_t = 2_000_000)]
    max_rate: u64,
    /// cluster: the sluice binary every node runs.
    #[arg(long, default_value = "target/release/sluice")]
    sluice: String,
    /// cluster: the redis-server binary (started on a unix socket in a temporary folder).
    #[arg(long = "redis-server", default_value = "redis-server")]
    redis_server: String,
    /// cluster: sluice nodes started (each --workers 1).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// cluster: --cluster-ttl of every node, in seconds.
    #[arg(long = "cluster-ttl", default_value = "0.6")]
    cluster_ttl: String,
    /// cluster: get_info requests per path.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// cluster relay: publishers on node 1 (50 pkt/s each), each with --listeners listeners.
    #[arg(long, default_value_t = 40)]
    publishers: usize,
    /// cluster room: listeners of the one publisher, spread over every node.
    #[arg(long = "room-listeners", default_value_t = 1000)]
    room_listeners: usize,
    /// cluster: the scenarios to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "requests,relay,room")]
    scenarios: Vec<Scenario>,
    /// webrtc-echo, webrtc-room: drive Janus (its WebSocket API, e.g. ws://127.0.0.1:8188)
    /// instead of Sluice; CPU of --pid or of the process named janus.
    #[arg(long)]
    janus: Option<String>,
    /// webrtc-echo, webrtc-room: RTP size of the video packets (audio: --size).
    #[arg(long = "video-size", default_value_t = 1100)]
    video_size: usize,
    /// webrtc-echo, webrtc-room: our sockets' address (Janus gathers no loopback candidates:
    /// give it the host's own address, which the kernel still delivers over loopback).
    #[arg(long = "local-ip", default_value = "127.0.0.1")]
    local_ip: std::net::IpAddr,
}

/// A duration in seconds from the command line, within what `Duration` holds.
fn seconds(flag: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{flag}: not a duration: {s}"))
}

impl Args {
    /// Parses loadgen's arguments (without the program name). `--help` is an error whose
    /// text is the help.
    pub fn parse(argv: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
        let cli = Cli::try_parse_from(std::iter::once("loadgen".to_string()).chain(argv))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if cli.targets.is_empty() {
            bail!("--targets: empty list");
        }
        let a = Args {
            mode: cli.mode,
            api: cli.api,
            spawn: cli.spawn,
            server_args: cli.server_args,
            pid: cli.pid,
            sessions: cli.sessions,
            listeners: cli.listeners,
            rate: cli.rate.unwrap_or(match cli.mode {
                Mode::Fanout => 5_000,
                Mode::Data => 50,
                // 50 audio + 30 video packets/s per sender.
                Mode::WebrtcEcho => 80 * cli.sessions as u64,
                Mode::WebrtcRoom => 80,
                _ => 50_000,
            }),
            size: cli.size,
            duration: seconds("duration", cli.duration)?,
            drain: Duration::from_millis(cli.drain),
            sockets: cli.sockets,
            baseline: cli.baseline,
            record: cli.record,
            gen_cpu: cli.gen_cpu,
            reflector_cpu: Some(cli.reflector_cpu),
            json: cli.json,
            connections: cli.connections,
            pipeline: cli.pipeline,
            pairs: cli.pairs,
            scrapes: cli.scrapes,
            data_scenarios: cli.data_scenarios,
            targets: cli.targets,
            rtpengine: cli.rtpengine,
            saturate: cli.saturate,
            rtcp_mux: cli.rtcp_mux,
            overload: cli.overload,
            loss_free_pct: cli.loss_free,
            step: seconds("step", cli.step)?,
            max_rate: cli.max_rate,
            cluster: ClusterArgs {
                sluice: cli.sluice,
                redis: cli.redis_server,
                nodes: cli.nodes,
                ttl: cli.cluster_ttl,
                requests: cli.requests,
                publishers: cli.publishers,
                room_listeners: cli.room_listeners,
                scenarios: cli.scenarios,
            },
            janus: cli.janus,
            video_size: cli.video_size,
            local_ip: cli.local_ip,
        };
        a.validate()?;
        Ok(a)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let size = traffic::MIN_SIZE..=traffic::MAX_SIZE;
        if !size.contains(&self.size) {
            bail!("--size must be within {size:?}");
        }
        if !(1..=10_000_000).contains(&self.rate) {
            bail!("--rate must be 1..=10000000");
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(3600) {
            bail!("--duration must be within (0, 3600] seconds");
        }
        if self.drain > Duration::from_secs(60) {
            bail!("--drain must be at most 60000 ms");
        }
        if !(1..=10_000).contains(&self.sessions) || !(1..=10_000).contains(&self.listeners) {
            bail!("--sessions and --listeners must be 1..=10000");
        }
        if !(1..=256).contains(&self.connections) || !(1..=64).contains(&self.pipeline) {
            bail!("--connections must be 1..=256 and --pipeline 1..=64");
        }
        if !(1..=64).contains(&self.sockets) {
            bail!("--sockets must be 1..=64");
        }
        if self.record && self.mode != Mode::Echo {
            bail!("--record applies to echo");
        }
        if self.baseline && !matches!(self.mode, Mode::Echo | Mode::SrtpEcho) {
            bail!("--baseline applies to echo and srtp-echo");
        }
        if self.saturate && !matches!(self.mode, Mode::Proxy | Mode::WebrtcEcho) {
            bail!("--saturate applies to proxy and webrtc-echo");
        }
        if !(1.0..=10.0).contains(&self.overload) || !(0.0..=10.0).contains(&self.loss_free_pct) {
            bail!("--overload must be 1..=10 and --loss-free 0..=10 (%)");
        }
        if self.step < Duration::from_millis(200) || self.step > Duration::from_secs(60) {
            bail!("--step must be 0.2..=60 seconds");
        }
        if self.mode == Mode::Cluster {
            let c = &self.cluster;
            if !(2..=MAX_CLUSTER_NODES).contains(&c.nodes) {
                bail!("cluster: --nodes must be 2..={MAX_CLUSTER_NODES}");
            }
            if !(1..=1_000_000).contains(&c.requests)
                || !(1..=1000).contains(&c.publishers)
                || !(1..=20_000).contains(&c.room_listeners)
            {
                bail!(
                    "cluster: --requests must be 1..=1000000, --publishers 1..=1000 and \
                     --room-listeners 1..=20000"
                );
            }
            if c.ttl
                .parse::<f64>()
                .map_or(true, |t| !(t > 0.0 && t <= 60.0))
            {
                bail!("cluster: --cluster-ttl must be a number of seconds in (0, 60]");
            }
            if c.scenarios.is_empty() {
                bail!("cluster: --scenarios: empty list");
            }
            if self.json || self.spawn.is_some() || self.pid.is_some() {
                bail!("cluster: --json, --spawn and --pid do not apply (it starts its own nodes)");
            }
        }
        if self.mode == Mode::Data {
            if self.data_scenarios.is_empty() {
                bail!("data: --data-scenarios: empty list");
            }
            if self.sessions > MAX_SRTP_SESSIONS || self.listeners > MAX_SRTP_SESSIONS {
                bail!(
                    "data: --sessions and --listeners must be at most {MAX_SRTP_SESSIONS} \
                     (one socket each)"
                );
            }
        }
        if self.mode == Mode::SrtpEcho && self.sessions > MAX_SRTP_SESSIONS {
            bail!("srtp-echo: --sessions must be at most {MAX_SRTP_SESSIONS} (one socket each)");
        }
        if matches!(self.mode, Mode::WebrtcEcho | Mode::WebrtcRoom) {
            if self.mode == Mode::WebrtcEcho && self.sessions > MAX_SRTP_SESSIONS {
                bail!(
                    "webrtc-echo: --sessions must be at most {MAX_SRTP_SESSIONS} (one socket each)"
                );
            }
            if !(self.size..=traffic::MAX_SIZE).contains(&self.video_size) {
                bail!("--video-size must be within --size..={}", traffic::MAX_SIZE);
            }
        } else if self.janus.is_some() {
            bail!("--janus applies to webrtc-echo and webrtc-room");
        }
        Ok(())
    }

    pub fn load(&self, copies: u64, cpu: Option<usize>) -> Load {
        Load {
            rate: self.rate,
            size: self.size,
            duration: self.duration,
            drain: self.drain,
            copies,
            cpu,
        }
    }

    /// The spawned server's command line: our defaults unless overridden, then `--server-arg`s.
    pub fn spawn_args(&self) -> Vec<String> {
        let given = |flag: &str| {
            self.server_args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        let mut out: Vec<String> = SPAWN_DEFAULTS
            .iter()
            .filter(|(flag, _)| !given(flag))
            .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
            .collect();
        out.extend(self.server_args.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn parse(s: &str) -> anyhow::Result<Args> {
        Args::parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn proxy_targets_and_saturation_options() {
        let a =
            parse("proxy --targets sluice,rtpengine,reflector --saturate --overload 3 --step 0.5")
                .unwrap();
        assert_eq!(a.mode, Mode::Proxy);
        assert_eq!(
            a.targets,
            vec![Target::Sluice, Target::Rtpengine, Target::Reflector]
        );
        assert_eq!(
            parse("proxy --targets reflector,reflector-uring")
                .unwrap()
                .targets,
            vec![Target::Reflector, Target::ReflectorUring]
        );
        assert_eq!(Target::ReflectorUring.name(), "reflector-uring");
        assert!(a.saturate);
        assert_eq!((a.overload, a.step), (3.0, Duration::from_millis(500)));
        assert_eq!(parse("proxy").unwrap().targets, vec![Target::Sluice]);
        assert!(parse("proxy --targets janus").is_err());
        assert!(parse("echo --saturate").is_err());
        assert!(parse("proxy --overload 0.5").is_err());
        assert!(parse("proxy --step 0.01").is_err());
    }

    #[test]
    fn options_and_defaults() {
        let a = parse("echo --sessions 3 --rate=1000 --baseline --json").unwrap();
        assert_eq!(
            (a.mode, a.sessions, a.rate, a.baseline, a.json),
            (Mode::Echo, 3, 1000, true, true)
        );
        assert_eq!(parse("fanout").unwrap().rate, 5_000);
        assert!(parse("fanout --baseline").is_err());
        assert!(parse("echo --record").unwrap().record);
        assert!(parse("fanout --record").is_err());
        let a = parse("srtp-echo --baseline --sessions 50").unwrap();
        assert_eq!((a.mode, a.sessions, a.baseline), (Mode::SrtpEcho, 50, true));
        assert!(parse("srtp-echo --sessions 1001").is_err());
        assert!(parse("echo --size 20").is_err());
        assert!(parse("echo --rate").is_err());
        assert!(parse("echo --bogus 1").is_err());
        assert!(parse("nonsense").is_err());
    }

    #[test]
    fn churn_options() {
        let a = parse("churn").unwrap();
        assert_eq!(
            (a.mode, a.connections, a.pipeline, a.pairs),
            (Mode::Churn, 4, 1, None)
        );
        let a = parse("churn --connections 8 --pipeline=4 --pairs 1000").unwrap();
        assert_eq!((a.connections, a.pipeline, a.pairs), (8, 4, Some(1000)));
        assert!(parse("churn --connections 0").is_err());
        assert!(parse("churn --pipeline 65").is_err());
    }

    #[test]
    fn cluster_options() {
        let a = parse("cluster").unwrap();
        assert_eq!(a.mode, Mode::Cluster);
        let c = &a.cluster;
        assert_eq!((c.nodes, c.requests, c.publishers), (3, 5000, 40));
        assert_eq!(
            (c.sluice.as_str(), c.ttl.as_str()),
            ("target/release/sluice", "0.6")
        );
        assert_eq!(
            c.scenarios,
            vec![Scenario::Requests, Scenario::Relay, Scenario::Room]
        );
        let a = parse("cluster --nodes 2 --scenarios room,requests --sluice /x/sluice").unwrap();
        assert_eq!(a.cluster.nodes, 2);
        assert_eq!(
            a.cluster.scenarios,
            vec![Scenario::Room, Scenario::Requests]
        );
        assert_eq!(a.cluster.sluice, "/x/sluice");
        assert!(parse("cluster --nodes 1").is_err());
        assert!(parse("cluster --cluster-ttl 0").is_err());
        assert!(parse("cluster --json").is_err());
        assert!(parse("cluster --scenarios nope").is_err());
    }

    #[test]
    fn server_args_override_spawn_defaults() {
        let a = parse("echo --server-arg --workers --server-arg 2 --server-arg=--io=mmsg").unwrap();
        assert_eq!(
            a.spawn_args(),
            [
                "--api",
                "127.0.0.1:19010",
                "--rtp-ports",
                "40000-49999",
                "--api-rate",
                "0",
                "--workers",
                "2",
                "--io=mmsg"
            ]
        );
    }
}
