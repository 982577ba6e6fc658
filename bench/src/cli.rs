//! loadgen's command line: the modes, the options and their defaults.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::traffic::{self, Load};

pub const USAGE: &str = "\
usage: loadgen <echo|srtp-echo|fanout|reflector|churn|proxy> [options]

  echo       N echo sessions; RTP to each, echoes counted
  srtp-echo  N WebRTC echo sessions (ICE, DTLS-SRTP, one socket each); SRTP to each,
             echoes unprotected and counted
  fanout     one publisher, N listeners; RTP to the publisher, egress counted at the listeners
  reflector  only the in-process recvmmsg/sendmmsg reflector (the kernel baseline)
  proxy      N plain-RTP proxy calls (caller A -> server -> callee B), one-way RTP from A,
             counted at B, on each of --targets: sluice (proxy sessions over its API),
             rtpengine (offer/answer over NG; spawned), reflector (echo, the kernel baseline),
             reflector-uring (the same echo over io_uring: multishot recvmsg, send)
  churn      control plane: plain echo sessions created and destroyed over and over
             by --connections connections, --pipeline pairs in flight on each

  --api URL          sluice API (default ws://127.0.0.1:9010/api/ws)
  --spawn PATH       start this sluice binary (--api 127.0.0.1:19010 --rtp-ports 40000-49999
                     --workers 1), measure, stop it
  --server-arg ARG   extra argument for --spawn, repeatable (e.g. --server-arg=--io --server-arg=mmsg)
  --pid PID          server process for CPU accounting (default: the spawned one, else the
                     process named sluice)
  --sessions N       echo sessions / reflector streams (default 10)
  --listeners N      fanout listeners (default 8)
  --rate PPS         packets/s sent in total (default 50000; fanout: 5000 into the publisher)
  --size BYTES       RTP packet size (default 172)
  --duration SECS    sending time (default 5)
  --drain MS         receive time after the last send (default 500)
  --sockets K        local UDP sockets the streams are spread over (default 4; srtp-echo:
                     always one per session)
  --baseline         echo: then run the reflector under the same load; print both and the ratio
  --record           echo: then the same load with recording started on every session
                     (recorder_action start), printed as sluice+rec with the on/off ratio
                     srtp-echo: then plain echo and the reflector under the same load
  --gen-cpu N        pin generator + receiver threads (default: the last core)
  --reflector-cpu N  pin the reflectors (default 0, where sluice pins its first worker)
  --json             print JSON instead of the table
  --targets LIST     proxy: comma list of sluice, rtpengine, reflector, reflector-uring
                     (default sluice)
  --rtpengine PATH   proxy: rtpengine binary (default: rtpengine on PATH), started with
                     --table=-1 --num-threads=1, pinned to --reflector-cpu
  --saturate         proxy: per target, search the highest rate with loss <= --loss-free
                     (steps of --step s), measure it for --duration, then offer --overload
                     times it and check that every stream still delivers afterwards
  --overload X       (default 2)   --loss-free PCT (default 0.1)   --step SECS (default 2)
  --max-rate PPS     --saturate's upper bound (default 2000000)
  --rtcp-mux         proxy: callers offer a=rtcp-mux (callees always accept it when
                     offered); a forwarder then needs no RTCP port per leg
  --connections N    churn: parallel API connections (default 4)
  --pipeline K       churn: create+destroy pairs in flight per connection (default 1)
  --pairs N          churn: stop after N pairs in total (default: run for --duration)";

/// srtp-echo binds one socket per session and polls them all every tick.
pub const MAX_SRTP_SESSIONS: usize = 1000;

/// Settings the spawned server gets unless `--server-arg` overrides them.
pub const SPAWN_DEFAULTS: [(&str, &str); 3] = [
    ("--api", "127.0.0.1:19010"),
    ("--rtp-ports", "40000-49999"),
    ("--workers", "1"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Echo,
    SrtpEcho,
    Fanout,
    Reflector,
    Churn,
    Proxy,
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
}

/// A forwarder `proxy` mode measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> anyhow::Result<T> {
    v.parse()
        .ok()
        .with_context(|| format!("{flag}: not a number: {v:?}"))
}

fn parse_targets(list: &str) -> anyhow::Result<Vec<Target>> {
    let targets = list
        .split(',')
        .map(|t| match t.trim() {
            "sluice" => Ok(Target::Sluice),
            "rtpengine" => Ok(Target::Rtpengine),
            "reflector" => Ok(Target::Reflector),
            "reflector-uring" => Ok(Target::ReflectorUring),
            other => bail!(
                "--targets: unknown target {other:?} (sluice, rtpengine, reflector, reflector-uring)"
            ),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if targets.is_empty() {
        bail!("--targets: empty list");
    }
    Ok(targets)
}

impl Args {
    pub fn parse(argv: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
        let mut it = argv.into_iter();
        let mode = match it.next().as_deref() {
            Some("echo") => Mode::Echo,
            Some("srtp-echo") => Mode::SrtpEcho,
            Some("fanout") => Mode::Fanout,
            Some("reflector") => Mode::Reflector,
            Some("churn") => Mode::Churn,
            Some("proxy") => Mode::Proxy,
            Some("-h" | "--help") | None => bail!("{USAGE}"),
            Some(other) => bail!("unknown mode {other:?}\n{USAGE}"),
        };
        let mut a = Args {
            mode,
            api: "ws://127.0.0.1:9010/api/ws".into(),
            spawn: None,
            server_args: Vec::new(),
            pid: None,
            sessions: 10,
            listeners: 8,
            rate: if mode == Mode::Fanout { 5_000 } else { 50_000 },
            size: 172,
            duration: Duration::from_secs(5),
            drain: Duration::from_millis(500),
            sockets: 4,
            baseline: false,
            record: false,
            gen_cpu: None,
            reflector_cpu: Some(0),
            json: false,
            connections: 4,
            pipeline: 1,
            pairs: None,
            targets: vec![Target::Sluice],
            rtpengine: "rtpengine".into(),
            saturate: false,
            rtcp_mux: false,
            overload: 2.0,
            loss_free_pct: 0.1,
            step: Duration::from_secs(2),
            max_rate: 2_000_000,
        };
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .with_context(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--api" => a.api = value()?,
                "--spawn" => a.spawn = Some(value()?),
                "--server-arg" => a.server_args.push(value()?),
                "--pid" => a.pid = Some(number(&flag, &value()?)?),
                "--sessions" => a.sessions = number(&flag, &value()?)?,
                "--listeners" => a.listeners = number(&flag, &value()?)?,
                "--rate" => a.rate = number(&flag, &value()?)?,
                "--size" => a.size = number(&flag, &value()?)?,
                "--duration" => a.duration = Duration::from_secs_f64(number(&flag, &value()?)?),
                "--drain" => a.drain = Duration::from_millis(number(&flag, &value()?)?),
                "--sockets" => a.sockets = number(&flag, &value()?)?,
                "--gen-cpu" => a.gen_cpu = Some(number(&flag, &value()?)?),
                "--reflector-cpu" => a.reflector_cpu = Some(number(&flag, &value()?)?),
                "--baseline" => a.baseline = true,
                "--record" => a.record = true,
                "--json" => a.json = true,
                "--connections" => a.connections = number(&flag, &value()?)?,
                "--pipeline" => a.pipeline = number(&flag, &value()?)?,
                "--pairs" => a.pairs = Some(number(&flag, &value()?)?),
                "--targets" => a.targets = parse_targets(&value()?)?,
                "--rtpengine" => a.rtpengine = value()?,
                "--saturate" => a.saturate = true,
                "--rtcp-mux" => a.rtcp_mux = true,
                "--overload" => a.overload = number(&flag, &value()?)?,
                "--loss-free" => a.loss_free_pct = number(&flag, &value()?)?,
                "--step" => a.step = Duration::from_secs_f64(number(&flag, &value()?)?),
                "--max-rate" => a.max_rate = number(&flag, &value()?)?,
                "-h" | "--help" => bail!("{USAGE}"),
                _ => bail!("unknown option {arg:?}\n{USAGE}"),
            }
        }
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
        if self.saturate && self.mode != Mode::Proxy {
            bail!("--saturate applies to proxy");
        }
        if !(1.0..=10.0).contains(&self.overload) || !(0.0..=10.0).contains(&self.loss_free_pct) {
            bail!("--overload must be 1..=10 and --loss-free 0..=10 (%)");
        }
        if self.step < Duration::from_millis(200) || self.step > Duration::from_secs(60) {
            bail!("--step must be 0.2..=60 seconds");
        }
        if self.mode == Mode::SrtpEcho && self.sessions > MAX_SRTP_SESSIONS {
            bail!("srtp-echo: --sessions must be at most {MAX_SRTP_SESSIONS} (one socket each)");
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
    fn server_args_override_spawn_defaults() {
        let a = parse("echo --server-arg --workers --server-arg 2 --server-arg=--io=mmsg").unwrap();
        assert_eq!(
            a.spawn_args(),
            [
                "--api",
                "127.0.0.1:19010",
                "--rtp-ports",
                "40000-49999",
                "--workers",
                "2",
                "--io=mmsg"
            ]
        );
    }
}
