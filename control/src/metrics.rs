//! What `GET /metrics` reports, in the Prometheus text format (`prometheus-client`).
//!
//! Nothing here counts packets. The data plane's per-leg counters ([`LegStats`]: one writer,
//! the leg's worker) are read at scrape time: the session manager hands the scrape a
//! [`Snapshot`] holding the live legs' `Arc<LegStats>` and the [`Traffic`] of the legs
//! already closed (added up when each leg's `Event::LegClosed` arrived, after which its
//! worker no longer writes it), so the sums only grow. The summing happens in the HTTP
//! handler, not in the actor. API requests, and the limits that refused requests or closed
//! connections ([`Door`]), are counted by the WebSocket edge in [`ApiCounters`] (control
//! plane only).
//!
//! No label names a session, a leg or a stream: the label values are the four session types,
//! the drop reasons, the commands of `request::COMMANDS`, `ok`/`error` and the limits.
//!
//! `sluice_worker_busy_ratio{worker}` is each worker's busy share of the time since the
//! previous scrape (its own single-writer idle clock, [`BusyWindow`]).
//! `sluice_data_messages_total{direction}` sums the sessions' SCTP message counts, sessions
//! gone included.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sluice_dataplane::api::{DropReason, LegStats, StatsSnapshot};

use crate::request::{COMMANDS, Request, SessionType};

/// The session types, in the order of [`Snapshot::sessions`].
pub const SESSION_TYPES: [SessionType; 4] = [
    SessionType::Echo,
    SessionType::Proxy,
    SessionType::Publish,
    SessionType::Listen,
];

/// Index of `t` in [`SESSION_TYPES`].
pub fn session_type_index(t: SessionType) -> usize {
    match t {
        SessionType::Echo => 0,
        SessionType::Proxy => 1,
        SessionType::Publish => 2,
        SessionType::Listen => 3,
    }
}

/// Traffic counters summed over legs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rtcp_rx_packets: u64,
    pub rtcp_tx_packets: u64,
    pub slow_path_packets: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl Traffic {
    pub fn add(&mut self, s: &StatsSnapshot) {
        self.rx_packets += s.rx_packets;
        self.rx_bytes += s.rx_bytes;
        self.tx_packets += s.tx_packets;
        self.tx_bytes += s.tx_bytes;
        self.rtcp_rx_packets += s.rtcp_rx_packets;
        self.rtcp_tx_packets += s.rtcp_tx_packets;
        self.slow_path_packets += s.slow_path_packets;
        for (sum, n) in self.drops.iter_mut().zip(s.drops) {
            *sum += n;
        }
    }
}

/// What the session manager hands a scrape (`Msg::Snapshot`).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Live sessions per type, indexed like [`SESSION_TYPES`].
    pub sessions: [u64; 4],
    pub rooms: u64,
    /// Sessions whose recorder is running.
    pub recordings_active: u64,
    /// The counters of every open leg (a bundled leg once).
    pub live_legs: Vec<Arc<LegStats>>,
    /// What the legs closed so far had counted when they closed.
    pub closed: Traffic,
    pub draining: bool,
    /// Estimated ingress of every session, bits/s (what `--max-bitrate` weighs).
    pub ingress_bps: u64,
    /// Per worker: (time busy, time alive) since it started.
    pub workers: Vec<(Duration, Duration)>,
    /// Data-channel messages received from peers and sent to them, sessions gone included.
    pub data_messages: [u64; 2],
}

/// The workers' busy and alive times at the previous scrape: each scrape reports the busy
/// ratio over the time since (since the start, the first time).
#[derive(Debug, Default)]
pub struct BusyWindow(Mutex<Vec<(Duration, Duration)>>);

impl BusyWindow {
    /// Each worker's busy share of the window ending `now`, which starts the next window.
    pub fn ratios(&self, now: &[(Duration, Duration)]) -> Vec<f64> {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let ratios = now
            .iter()
            .enumerate()
            .map(|(i, &(busy, alive))| {
                let (b0, a0) = last.get(i).copied().unwrap_or_default();
                let window = alive.saturating_sub(a0);
                if window.is_zero() {
                    return 0.0;
                }
                (busy.saturating_sub(b0).as_secs_f64() / window.as_secs_f64()).clamp(0.0, 1.0)
            })
            .collect();
        *last = now.to_vec();
        ratios
    }
}

impl Snapshot {
    /// Closed legs plus the live legs' counters as of now.
    pub fn traffic(&self) -> Traffic {
        let mut t = self.closed;
        for leg in &self.live_legs {
            t.add(&leg.snapshot());
        }
        t
    }
}

/// API requests per command and result. One slot per [`COMMANDS`] entry, plus one for frames
/// that name no known command.
#[derive(Debug)]
pub struct ApiCounters {
    /// `[ok, error]` per command.
    counts: Vec<[AtomicU64; 2]>,
    /// Per [`Door`].
    doors: [AtomicU64; Door::ALL.len()],
}

impl Default for ApiCounters {
    fn default() -> Self {
        ApiCounters {
            counts: (0..=COMMANDS.len()).map(|_| Default::default()).collect(),
            doors: Default::default(),
        }
    }
}

/// A limit of the API that refused a request or closed a connection
/// (`sluice_api_limited_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// A request beyond `--api-rate` (refused; the connection stays).
    RateLimited,
    /// A frame over `--max-frame-bytes` (connection closed, 1009).
    FrameTooLarge,
    /// `--max-login-failures` failed logins in a row (connection closed, 1008).
    LoginFailures,
    /// No login within `--login-timeout` (connection closed, 1008).
    LoginTimeout,
}

impl Door {
    pub const ALL: [Door; 4] = [
        Door::RateLimited,
        Door::FrameTooLarge,
        Door::LoginFailures,
        Door::LoginTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Door::RateLimited => "rate_limited",
            Door::FrameTooLarge => "frame_too_large",
            Door::LoginFailures => "login_failures",
            Door::LoginTimeout => "login_timeout",
        }
    }
}

/// The cluster's numbers (`--cluster`; exported only with it): live nodes, relay streams,
/// and the latency of requests carried to another node.
#[derive(Debug)]
pub struct ClusterCounters {
    pub enabled: AtomicBool,
    /// Live nodes this node sees, itself included.
    pub nodes: AtomicU64,
    /// Relay streams this node receives from other nodes' publishers.
    pub relays_in: AtomicU64,
    /// Data-channel events of relayed publishers that could not be used or carried
    /// (malformed, too large, beyond the limits, for no relay, queues full).
    data_dropped: AtomicU64,
    /// Cross-node requests, seconds from sending to the reply.
    requests: Histogram,
}

impl Default for ClusterCounters {
    fn default() -> Self {
        ClusterCounters {
            enabled: AtomicBool::new(false),
            nodes: AtomicU64::new(0),
            relays_in: AtomicU64::new(0),
            data_dropped: AtomicU64::new(0),
            // 250 µs .. about 4 s.
            requests: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
        }
    }
}

impl ClusterCounters {
    pub fn request_done(&self, took: Duration) {
        self.requests.observe(took.as_secs_f64());
    }

    /// `n` relayed data-channel events dropped (written by the engine and the manager alike).
    pub fn data_dropped(&self, n: u64) {
        self.data_dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn data_dropped_count(&self) -> u64 {
        self.data_dropped.load(Ordering::Relaxed)
    }
}

/// The `cmd` label of frames that name no known command.
const UNKNOWN_COMMAND: &str = "unknown";

impl ApiCounters {
    /// Counts one reply to command `cmd` (an index into [`COMMANDS`]; `None`: unknown).
    pub fn count(&self, cmd: Option<usize>, ok: bool) {
        let slot = cmd
            .filter(|&i| i < COMMANDS.len())
            .unwrap_or(COMMANDS.len());
        self.counts[slot][usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, cmd: Option<usize>, ok: bool) -> u64 {
        let slot = cmd
            .filter(|&i| i < COMMANDS.len())
            .unwrap_or(COMMANDS.len());
        self.counts[slot][usize::from(!ok)].load(Ordering::Relaxed)
    }

    /// Counts one refusal or close by a limit.
    pub fn limited(&self, door: Door) {
        self.doors[door as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn limited_count(&self, door: Door) -> u64 {
        self.doors[door as usize].load(Ordering::Relaxed)
    }

    /// `(cmd label, result label, count)` for every slot.
    fn series(&self) -> impl Iterator<Item = (String, &'static str, u64)> + '_ {
        self.counts.iter().enumerate().flat_map(|(i, c)| {
            let name = match COMMANDS.get(i) {
                Some((class, subclass, cmd)) => format!("{class}/{subclass}/{cmd}"),
                None => UNKNOWN_COMMAND.to_owned(),
            };
            [
                (name.clone(), "ok", c[0].load(Ordering::Relaxed)),
                (name, "error", c[1].load(Ordering::Relaxed)),
            ]
        })
    }
}

/// The [`COMMANDS`] index of `(class, subclass, cmd)` as a frame names it (a missing
/// subclass means the class's default, as in the parser).
pub fn command_index(class: &str, subclass: Option<&str>, cmd: &str) -> Option<usize> {
    let subclass = match subclass.filter(|s| !s.is_empty()) {
        Some(s) => s,
        None if class == "core" => "user",
        None if class == "media" => "session",
        None => return None,
    };
    COMMANDS
        .iter()
        .position(|&(c, s, m)| c == class && s == subclass && m == cmd)
}

/// The [`COMMANDS`] index of a parsed request.
pub fn request_index(r: &Request) -> Option<usize> {
    let (class, subclass, cmd) = match r {
        Request::Login { .. } => ("core", "user", "login"),
        Request::Subscribe(_) => ("core", "event", "subscribe"),
        Request::Unsubscribe(_) => ("core", "event", "unsubscribe"),
        Request::Create(_) => ("media", "session", "create"),
        Request::Destroy { .. } => ("media", "session", "destroy"),
        Request::SetAnswer { .. } => ("media", "session", "set_answer"),
        Request::GetOffer { .. } => ("media", "session", "get_offer"),
        Request::GetAnswer { .. } => ("media", "session", "get_answer"),
        Request::GetProxyOffer { .. } => ("media", "session", "get_proxy_offer"),
        Request::GetInfo { .. } => ("media", "session", "get_info"),
        Request::GetList => ("media", "session", "get_list"),
        Request::UpdateMedia { .. } => ("media", "session", "update_media"),
        Request::SetType { .. } => ("media", "session", "set_type"),
        Request::RecorderAction { .. } => ("media", "session", "recorder_action"),
        Request::SetCandidate { .. } => ("media", "session", "set_candidate"),
        Request::SetCandidateEnd { .. } => ("media", "session", "set_candidate_end"),
        Request::RoomCreate(_) => ("media", "room", "create"),
        Request::RoomDestroy { .. } => ("media", "room", "destroy"),
        Request::RoomGetInfo { .. } => ("media", "room", "get_info"),
        Request::RoomGetList => ("media", "room", "get_list"),
        Request::NodeDrain { .. } => ("media", "node", "drain"),
        Request::NodeGetList => ("media", "node", "get_list"),
    };
    command_index(class, Some(subclass), cmd)
}

/// The Prometheus text of a scrape.
pub fn render(
    snapshot: &Snapshot,
    api: &ApiCounters,
    busy: &BusyWindow,
    cluster: &ClusterCounters,
) -> Result<String, fmt::Error> {
    let scrape = Scrape {
        busy: busy.ratios(&snapshot.workers),
        data_messages: snapshot.data_messages,
        sessions: snapshot.sessions,
        rooms: snapshot.rooms,
        recordings_active: snapshot.recordings_active,
        legs: snapshot.live_legs.len() as u64,
        draining: snapshot.draining,
        ingress_bps: snapshot.ingress_bps,
        traffic: snapshot.traffic(),
        api: api.series().collect(),
        limited: Door::ALL.map(|d| (d.as_str(), api.limited_count(d))),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    if cluster.enabled.load(Ordering::Relaxed) {
        registry.register_collector(Box::new(ClusterScrape {
            nodes: cluster.nodes.load(Ordering::Relaxed),
            relays_in: cluster.relays_in.load(Ordering::Relaxed),
            data_dropped: cluster.data_dropped_count(),
            requests: cluster.requests.clone(),
        }));
    }
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// One scrape's values, encoded by `prometheus-client` (counter names get their `_total`
/// there).
#[derive(Debug)]
struct Scrape {
    /// Per worker, its busy share since the previous scrape.
    busy: Vec<f64>,
    data_messages: [u64; 2],
    sessions: [u64; 4],
    rooms: u64,
    recordings_active: u64,
    legs: u64,
    draining: bool,
    ingress_bps: u64,
    traffic: Traffic,
    api: Vec<(String, &'static str, u64)>,
    limited: [(&'static str, u64); Door::ALL.len()],
}

/// The cluster's families, read at scrape time.
#[derive(Debug)]
struct ClusterScrape {
    nodes: u64,
    relays_in: u64,
    data_dropped: u64,
    /// A handle on the live histogram (it is shared, not copied).
    requests: Histogram,
}

impl Collector for ClusterScrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let c = self;
        gauge(
            &mut e,
            "sluice_cluster_nodes",
            "Live cluster nodes this node sees, itself included.",
            c.nodes,
        )?;
        gauge(
            &mut e,
            "sluice_cluster_relay_streams",
            "Relay streams this node receives from publishers on other nodes.",
            c.relays_in,
        )?;
        counter(
            &mut e,
            "sluice_cluster_data_dropped",
            "Relayed data-channel events dropped: malformed, too large, beyond the limits, \
             for no relay, or with a queue full.",
            c.data_dropped,
        )?;
        c.requests.encode(e.encode_descriptor(
            "sluice_cluster_request_seconds",
            "Requests carried to another node: seconds until its reply.",
            None,
            c.requests.metric_type(),
        )?)
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let mut sessions = e.encode_descriptor(
            "sluice_sessions",
            "Live sessions by type.",
            None,
            MetricType::Gauge,
        )?;
        for (t, n) in SESSION_TYPES.iter().zip(self.sessions) {
            let g = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            g.encode(sessions.encode_family(&[("type", t.as_str())])?)?;
        }
        gauge(&mut e, "sluice_rooms", "Live SFU rooms.", self.rooms)?;
        gauge(
            &mut e,
            "sluice_recordings_active",
            "Sessions whose recorder is running.",
            self.recordings_active,
        )?;
        gauge(&mut e, "sluice_media_legs", "Open media legs.", self.legs)?;
        gauge(
            &mut e,
            "sluice_draining",
            "1 while the node drains (refuses new sessions), else 0.",
            u64::from(self.draining),
        )?;
        gauge(
            &mut e,
            "sluice_ingress_estimate_bits_per_second",
            "Ingress the live sessions may bring, as --max-bitrate estimates it.",
            self.ingress_bps,
        )?;
        let mut busy = e.encode_descriptor(
            "sluice_worker_busy_ratio",
            "Share of the time since the previous scrape each data-plane worker spent working.",
            None,
            MetricType::Gauge,
        )?;
        for (worker, ratio) in self.busy.iter().enumerate() {
            let g = ConstGauge::new(*ratio);
            g.encode(busy.encode_family(&[("worker", worker.to_string().as_str())])?)?;
        }
        let t = &self.traffic;
        counter(
            &mut e,
            "sluice_packets_received",
            "RTP packets received from peers and accepted for forwarding.",
            t.rx_packets,
        )?;
        counter(
            &mut e,
            "sluice_bytes_received",
            "Bytes of the RTP packets counted by sluice_packets_received_total.",
            t.rx_bytes,
        )?;
        counter(
            &mut e,
            "sluice_packets_sent",
            "RTP packets sent to peers.",
            t.tx_packets,
        )?;
        counter(
            &mut e,
            "sluice_bytes_sent",
            "Bytes of the RTP packets counted by sluice_packets_sent_total.",
            t.tx_bytes,
        )?;
        counter(
            &mut e,
            "sluice_rtcp_packets_received",
            "RTCP packets received from peers.",
            t.rtcp_rx_packets,
        )?;
        counter(
            &mut e,
            "sluice_rtcp_packets_sent",
            "RTCP packets sent to peers.",
            t.rtcp_tx_packets,
        )?;
        counter(
            &mut e,
            "sluice_slow_path_packets",
            "STUN and DTLS datagrams handed to the control plane.",
            t.slow_path_packets,
        )?;
        let mut drops = e.encode_descriptor(
            "sluice_packets_dropped",
            "Datagrams not forwarded, by reason.",
            None,
            MetricType::Counter,
        )?;
        for reason in DropReason::ALL {
            let c = ConstCounter::new(t.drops[reason as usize]);
            c.encode(drops.encode_family(&[("reason", reason.as_str())])?)?;
        }
        let mut data = e.encode_descriptor(
            "sluice_data_messages",
            "Data-channel messages received from peers (in) and sent to them (out).",
            None,
            MetricType::Counter,
        )?;
        for (direction, n) in ["in", "out"].into_iter().zip(self.data_messages) {
            let c = ConstCounter::new(n);
            c.encode(data.encode_family(&[("direction", direction)])?)?;
        }
        let mut api = e.encode_descriptor(
            "sluice_api_requests",
            "API requests answered, by command and result.",
            None,
            MetricType::Counter,
        )?;
        for (cmd, result, n) in &self.api {
            let c = ConstCounter::new(*n);
            c.encode(api.encode_family(&[("cmd", cmd.as_str()), ("result", result)])?)?;
        }
        let mut limited = e.encode_descriptor(
            "sluice_api_limited",
            "API requests refused and connections closed by a limit, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in &self.limited {
            let c = ConstCounter::new(*n);
            c.encode(limited.encode_family(&[("reason", *reason)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.split_once(' ').is_some_and(|(name, _)| name == series))
    }

    /// Each scrape reports the busy share of the time since the previous one.
    #[test]
    fn busy_ratio_covers_the_window_since_the_last_scrape() {
        let s = |busy: u64, alive: u64| (Duration::from_millis(busy), Duration::from_millis(alive));
        let w = BusyWindow::default();
        assert_eq!(
            w.ratios(&[s(250, 1000), s(0, 1000)]),
            [0.25, 0.0],
            "since the start"
        );
        assert_eq!(
            w.ratios(&[s(1250, 2000), s(500, 2000)]),
            [1.0, 0.5],
            "the last second"
        );
        assert_eq!(
            w.ratios(&[s(1250, 2000), s(500, 2000)]),
            [0.0, 0.0],
            "an empty window"
        );
    }

    #[test]
    fn limits_are_counted_by_reason() {
        let api = ApiCounters::default();
        api.limited(Door::RateLimited);
        api.limited(Door::RateLimited);
        api.limited(Door::LoginTimeout);
        let text = render(
            &Snapshot::default(),
            &api,
            &BusyWindow::default(),
            &ClusterCounters::default(),
        )
        .expect("renders");
        for (series, value) in [
            ("sluice_api_limited_total{reason=\"rate_limited\"}", "2"),
            ("sluice_api_limited_total{reason=\"frame_too_large\"}", "0"),
            ("sluice_api_limited_total{reason=\"login_failures\"}", "0"),
            ("sluice_api_limited_total{reason=\"login_timeout\"}", "1"),
        ] {
            let l = line(&text, series).unwrap_or_else(|| panic!("{series} in {text}"));
            assert_eq!(l.split_once(' ').map(|(_, v)| v), Some(value), "{l}");
        }
    }

    #[test]
    fn closed_and_live_legs_add_up() {
        let live = Arc::new(LegStats::default());
        live.rx_packets.store(5, Ordering::Relaxed);
        live.rx_bytes.store(500, Ordering::Relaxed);
        live.drops[DropReason::Malformed as usize].store(2, Ordering::Relaxed);
        let mut closed = Traffic::default();
        closed.add(&StatsSnapshot {
            rx_packets: 10,
            tx_packets: 7,
            ..StatsSnapshot::default()
        });
        let s = Snapshot {
            live_legs: vec![live],
            closed,
            ..Snapshot::default()
        };
        let t = s.traffic();
        assert_eq!(t.rx_packets, 15);
        assert_eq!(t.rx_bytes, 500);
        assert_eq!(t.tx_packets, 7);
        assert_eq!(t.drops[DropReason::Malformed as usize], 2);
    }

    #[test]
    fn every_family_is_rendered_with_its_exact_name() {
        let api = ApiCounters::default();
        let create = command_index("media", None, "create");
        api.count(create, true);
        api.count(create, false);
        api.count(None, false);
        let s = Snapshot {
            sessions: [1, 2, 0, 0],
            rooms: 3,
            ..Snapshot::default()
        };
        let text = render(
            &s,
            &api,
            &BusyWindow::default(),
            &ClusterCounters::default(),
        )
        .expect("renders");
        for (series, value) in [
            ("sluice_sessions{type=\"echo\"}", "1"),
            ("sluice_sessions{type=\"proxy\"}", "2"),
            ("sluice_sessions{type=\"listen\"}", "0"),
            ("sluice_rooms", "3"),
            ("sluice_recordings_active", "0"),
            ("sluice_packets_received_total", "0"),
            ("sluice_packets_sent_total", "0"),
            ("sluice_bytes_received_total", "0"),
            ("sluice_bytes_sent_total", "0"),
            ("sluice_packets_dropped_total{reason=\"malformed\"}", "0"),
            (
                "sluice_api_requests_total{cmd=\"media/session/create\",result=\"ok\"}",
                "1",
            ),
            (
                "sluice_api_requests_total{cmd=\"media/session/create\",result=\"error\"}",
                "1",
            ),
            (
                "sluice_api_requests_total{cmd=\"unknown\",result=\"error\"}",
                "1",
            ),
        ] {
            let l = line(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
            assert_eq!(l.rsplit(' ').next(), Some(value), "{l}");
        }
        assert!(text.contains("# TYPE sluice_packets_dropped_total counter"));
        assert!(text.contains("# TYPE sluice_sessions gauge"));
    }

    #[test]
    fn every_request_has_a_command_slot() {
        assert_eq!(
            request_index(&Request::GetList),
            command_index("media", Some("session"), "get_list")
        );
        assert!(request_index(&Request::RoomGetList).is_some());
        assert!(request_index(&Request::NodeDrain { timeout: None }).is_some());
        assert_eq!(command_index("media", Some("session"), "nope"), None);
        assert_eq!(command_index("core", None, "login"), Some(0));
    }
}
