//! Settings: embedded defaults, overridden by a TOML file, by `SLUICE_*` variables and by flags.
//!
//! Flags and environment are read by `main.rs` (clap gives a flag precedence over its variable);
//! both arrive here as a [`Layer`] of raw values, as does the file, and [`Layer::resolve`] turns
//! the merged layers into a typed [`Config`] with a clear error for every bad value.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sluice_dataplane::api::IoMode;

use crate::webrtc::data_limits::DataLimits;

/// Everything `sluice` needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// WebSocket API listen address (port 0 = any free port).
    pub api: SocketAddr,
    /// Address media sockets bind to.
    pub media_ip: IpAddr,
    /// Address announced in SDP (1:1 NAT); `None` = `media_ip`.
    pub public_ip: Option<IpAddr>,
    /// Inclusive UDP port range for media.
    pub rtp_ports: (u16, u16),
    pub workers: usize,
    pub io: IoMode,
    pub record_dir: PathBuf,
    /// When set, clients must log in with it as password.
    pub api_secret: Option<String>,
    /// How long sessions outlive the connection that created them.
    pub disconnect_grace: Duration,
    /// Pin each data-plane worker to a core.
    pub pin_workers: bool,
    /// io_uring batching bound (see `sluice_dataplane::api::Config::batch_wait`).
    pub batch_wait: Duration,
    /// Port steering (see `sluice_dataplane::api::Config::steer`).
    pub steer: bool,
    /// One raw sending socket per worker (see `sluice_dataplane::api::Config::raw_send`).
    pub raw_send: bool,
    /// Most concurrent sessions; a `create` beyond it gets `no_mediaserver`. 0 = unlimited.
    pub max_sessions: usize,
    /// On SIGTERM, how long live sessions may go on while no new one is accepted; zero =
    /// stop at once.
    pub drain_timeout: Duration,
    /// Total ingress bits/s the node accepts ([`crate::manager::ops`] estimates each
    /// session's); a `create` beyond it gets `no_mediaserver`. 0 = unlimited.
    pub max_bitrate: u64,
    /// Consecutive failed logins after which a connection is closed; 0 = unlimited.
    pub max_login_failures: u32,
    /// Largest API frame processed; a larger one is answered with an error and the
    /// connection closes with 1009.
    pub max_frame_bytes: usize,
    /// With a secret, how long a connection may stay without a successful login; zero = no
    /// limit.
    pub login_timeout: Duration,
    /// API requests per second per connection (0 = unlimited) ...
    pub api_rate: f64,
    /// ... and how many may come at once.
    pub api_burst: u32,
    /// Every session's data-channel limits (`--data-*`).
    pub data_limits: DataLimits,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// `--cluster`: the Redis URL; `None` = one node, no Redis.
    pub cluster: Option<String>,
    /// `--node-id`: unique per node (default: the host name).
    pub node_id: String,
    /// `--cluster-ttl`: lifetime of a node's liveness record, refreshed three times per TTL.
    pub cluster_ttl: Duration,
    /// `--cluster-relay`: relay streams between nodes as SRTP (keys exchanged through the
    /// cluster, in the relay's SDP) or plain RTP (a trusted network).
    pub cluster_relay_srtp: bool,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

pub const DEFAULT_API: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9010);
pub const DEFAULT_RTP_PORTS: (u16, u16) = (20000, 29999);
pub const DEFAULT_DISCONNECT_GRACE: Duration = Duration::from_secs(5);
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_micros(500);
pub const DEFAULT_MAX_LOGIN_FAILURES: u32 = 5;
/// The largest frame processed by default ([`crate::request::MAX_FRAME`]).
pub const DEFAULT_MAX_FRAME_BYTES: usize = crate::request::MAX_FRAME;
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_API_RATE: f64 = 1000.0;
pub const DEFAULT_API_BURST: u32 = 2000;
pub const DEFAULT_CLUSTER_TTL: Duration = Duration::from_secs(3);
/// The largest `data_max_message_size`: sctp-proto's receive window grows to twice it.
pub const MAX_DATA_MESSAGE_SIZE: u32 = 16 << 20;

impl Default for Config {
    fn default() -> Self {
        Config {
            api: DEFAULT_API,
            media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_ip: None,
            rtp_ports: DEFAULT_RTP_PORTS,
            workers: default_workers(),
            io: IoMode::Auto,
            record_dir: PathBuf::from("./recordings"),
            api_secret: None,
            disconnect_grace: DEFAULT_DISCONNECT_GRACE,
            pin_workers: true,
            batch_wait: DEFAULT_BATCH_WAIT,
            steer: true,
            raw_send: true,
            max_sessions: 0,
            drain_timeout: Duration::ZERO,
            max_bitrate: 0,
            max_login_failures: DEFAULT_MAX_LOGIN_FAILURES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            api_rate: DEFAULT_API_RATE,
            api_burst: DEFAULT_API_BURST,
            data_limits: DataLimits::default(),
            log_format: LogFormat::Text,
            cluster: None,
            node_id: host_name(),
            cluster_ttl: DEFAULT_CLUSTER_TTL,
            cluster_relay_srtp: true,
        }
    }
}

/// This machine's host name (the default `--node-id`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".to_string())
}

impl Config {
    /// The address written into SDP.
    pub fn announced_ip(&self) -> IpAddr {
        self.public_ip.unwrap_or(self.media_ip)
    }
}

/// Number of cores available to this process.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {key} '{value}': {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: String,
    },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

/// One source of settings, every value optional. Keys are the snake_case flag names.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Layer {
    pub api: Option<String>,
    pub media_ip: Option<String>,
    pub public_ip: Option<String>,
    pub rtp_ports: Option<String>,
    pub workers: Option<usize>,
    pub io: Option<String>,
    pub record_dir: Option<PathBuf>,
    pub api_secret: Option<String>,
    /// Seconds, fractional allowed.
    pub disconnect_grace: Option<f64>,
    pub batch_wait_us: Option<u64>,
    pub pin_workers: Option<bool>,
    /// "on" or "off".
    pub steer: Option<String>,
    /// "on" or "off".
    pub raw_send: Option<String>,
    /// 0 = unlimited.
    pub max_sessions: Option<usize>,
    /// Seconds, fractional allowed; 0 = no drain.
    pub drain_timeout: Option<f64>,
    /// Bits per second; 0 = unlimited.
    pub max_bitrate: Option<u64>,
    /// 0 = unlimited.
    pub max_login_failures: Option<u32>,
    pub max_frame_bytes: Option<usize>,
    /// Seconds, fractional allowed; 0 = no limit.
    pub login_timeout: Option<f64>,
    /// Requests per second, fractional allowed; 0 = unlimited.
    pub api_rate: Option<f64>,
    pub api_burst: Option<u32>,
    /// Bytes, at least 1.
    pub data_max_message_size: Option<u32>,
    /// At least 1.
    pub data_max_channels: Option<usize>,
    /// Bytes, at least 1.
    pub data_max_buffered: Option<usize>,
    /// Messages per second, fractional allowed; 0 = unlimited.
    pub data_rate: Option<f64>,
    pub data_burst: Option<u32>,
    /// Bytes per second; 0 = unlimited.
    pub data_bytes_rate: Option<u64>,
    /// "text" or "json".
    pub log_format: Option<String>,
    /// Redis URL; empty = no cluster.
    pub cluster: Option<String>,
    pub node_id: Option<String>,
    /// Seconds, fractional allowed.
    pub cluster_ttl: Option<f64>,
    /// "srtp" or "rtp".
    pub cluster_relay: Option<String>,
}

impl Layer {
    /// Reads a TOML file with the same keys.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Layer::from_toml(&text).map_err(|source| ConfigError::Toml {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    pub fn from_toml(text: &str) -> Result<Layer, toml::de::Error> {
        toml::from_str(text)
    }

    /// `self` wins over `lower` key by key.
    pub fn over(self, lower: Layer) -> Layer {
        Layer {
            api: self.api.or(lower.api),
            media_ip: self.media_ip.or(lower.media_ip),
            public_ip: self.public_ip.or(lower.public_ip),
            rtp_ports: self.rtp_ports.or(lower.rtp_ports),
            workers: self.workers.or(lower.workers),
            io: self.io.or(lower.io),
            record_dir: self.record_dir.or(lower.record_dir),
            api_secret: self.api_secret.or(lower.api_secret),
            disconnect_grace: self.disconnect_grace.or(lower.disconnect_grace),
            batch_wait_us: self.batch_wait_us.or(lower.batch_wait_us),
            pin_workers: self.pin_workers.or(lower.pin_workers),
            steer: self.steer.or(lower.steer),
            raw_send: self.raw_send.or(lower.raw_send),
            max_sessions: self.max_sessions.or(lower.max_sessions),
            drain_timeout: self.drain_timeout.or(lower.drain_timeout),
            max_bitrate: self.max_bitrate.or(lower.max_bitrate),
            max_login_failures: self.max_login_failures.or(lower.max_login_failures),
            max_frame_bytes: self.max_frame_bytes.or(lower.max_frame_bytes),
            login_timeout: self.login_timeout.or(lower.login_timeout),
            api_rate: self.api_rate.or(lower.api_rate),
            api_burst: self.api_burst.or(lower.api_burst),
            data_max_message_size: self.data_max_message_size.or(lower.data_max_message_size),
            data_max_channels: self.data_max_channels.or(lower.data_max_channels),
            data_max_buffered: self.data_max_buffered.or(lower.data_max_buffered),
            data_rate: self.data_rate.or(lower.data_rate),
            data_burst: self.data_burst.or(lower.data_burst),
            data_bytes_rate: self.data_bytes_rate.or(lower.data_bytes_rate),
            log_format: self.log_format.or(lower.log_format),
            cluster: self.cluster.or(lower.cluster),
            node_id: self.node_id.or(lower.node_id),
            cluster_ttl: self.cluster_ttl.or(lower.cluster_ttl),
            cluster_relay: self.cluster_relay.or(lower.cluster_relay),
        }
    }

    /// Fills what is missing with the defaults and checks every value.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let d = Config::default();
        let data_limits = self.data_limits(&d.data_limits)?;
        let api = match self.api {
            Some(v) => parse_socket_addr(&v)?,
            None => d.api,
        };
        let media_ip = match self.media_ip {
            Some(v) => parse_ip("media_ip", &v)?,
            None => d.media_ip,
        };
        let public_ip = self
            .public_ip
            .filter(|v| !v.is_empty())
            .map(|v| parse_ip("public_ip", &v))
            .transpose()?;
        let rtp_ports = match self.rtp_ports {
            Some(v) => parse_port_range(&v)?,
            None => d.rtp_ports,
        };
        let workers = self.workers.unwrap_or(d.workers);
        if workers == 0 {
            return Err(invalid("workers", "0", "at least one worker is needed"));
        }
        let io = match self.io {
            Some(v) => parse_io(&v)?,
            None => d.io,
        };
        let steer = parse_switch("steer", self.steer.as_deref(), d.steer)?;
        let raw_send = parse_switch("raw_send", self.raw_send.as_deref(), d.raw_send)?;
        let disconnect_grace = match self.disconnect_grace {
            Some(s) => parse_seconds("disconnect_grace", s)?,
            None => d.disconnect_grace,
        };
        let drain_timeout = match self.drain_timeout {
            Some(s) => parse_seconds("drain_timeout", s)?,
            None => d.drain_timeout,
        };
        let login_timeout = match self.login_timeout {
            Some(s) => parse_seconds("login_timeout", s)?,
            None => d.login_timeout,
        };
        let max_frame_bytes = self.max_frame_bytes.unwrap_or(d.max_frame_bytes);
        if max_frame_bytes == 0 {
            return Err(invalid("max_frame_bytes", "0", "at least one byte"));
        }
        let api_rate = self.api_rate.unwrap_or(d.api_rate);
        if !api_rate.is_finite() || api_rate < 0.0 {
            return Err(invalid(
                "api_rate",
                &api_rate.to_string(),
                "a number of requests per second, 0 = unlimited",
            ));
        }
        let log_format = match self.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(v) => return Err(invalid("log_format", v, "expected text or json")),
        };
        let cluster = self.cluster.filter(|u| !u.is_empty());
        if let Some(url) = &cluster
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+unix://")
                || url.starts_with("unix://"))
        {
            return Err(invalid(
                "cluster",
                url,
                "expected redis://HOST:PORT[/DB] or redis+unix:///PATH",
            ));
        }
        let node_id = self.node_id.unwrap_or(d.node_id);
        if node_id.is_empty() || node_id.contains(char::is_whitespace) {
            return Err(invalid(
                "node_id",
                &node_id,
                "a non-empty name without spaces",
            ));
        }
        let cluster_ttl = match self.cluster_ttl {
            Some(s) => parse_seconds("cluster_ttl", s)?,
            None => d.cluster_ttl,
        };
        if cluster_ttl < Duration::from_millis(300) {
            return Err(invalid(
                "cluster_ttl",
                &format!("{}", cluster_ttl.as_secs_f64()),
                "at least 0.3 seconds",
            ));
        }
        let cluster_relay_srtp = match self.cluster_relay.as_deref() {
            None | Some("srtp") => true,
            Some("rtp") => false,
            Some(v) => return Err(invalid("cluster_relay", v, "expected srtp or rtp")),
        };
        Ok(Config {
            api,
            media_ip,
            public_ip,
            rtp_ports,
            workers,
            io,
            record_dir: self.record_dir.unwrap_or(d.record_dir),
            api_secret: self.api_secret.filter(|s| !s.is_empty()),
            disconnect_grace,
            pin_workers: self.pin_workers.unwrap_or(d.pin_workers),
            batch_wait: self
                .batch_wait_us
                .map_or(d.batch_wait, Duration::from_micros),
            steer,
            raw_send,
            max_sessions: self.max_sessions.unwrap_or(d.max_sessions),
            drain_timeout,
            max_bitrate: self.max_bitrate.unwrap_or(d.max_bitrate),
            max_login_failures: self.max_login_failures.unwrap_or(d.max_login_failures),
            max_frame_bytes,
            login_timeout,
            api_rate,
            // At least one request at a time, or none would pass.
            api_burst: self.api_burst.unwrap_or(d.api_burst).max(1),
            data_limits,
            log_format,
            cluster,
            node_id,
            cluster_ttl,
            cluster_relay_srtp,
        })
    }

    /// The `data_*` settings over the defaults `d`.
    fn data_limits(&self, d: &DataLimits) -> Result<DataLimits, ConfigError> {
        let max_message_size = self.data_max_message_size.unwrap_or(d.max_message_size);
        if !(1..=MAX_DATA_MESSAGE_SIZE).contains(&max_message_size) {
            return Err(invalid(
                "data_max_message_size",
                &max_message_size.to_string(),
                format!("from 1 to {MAX_DATA_MESSAGE_SIZE} bytes"),
            ));
        }
        let max_channels = self.data_max_channels.unwrap_or(d.max_channels);
        if max_channels == 0 {
            return Err(invalid("data_max_channels", "0", "at least one channel"));
        }
        let max_buffered = self.data_max_buffered.unwrap_or(d.max_buffered);
        if max_buffered == 0 {
            return Err(invalid("data_max_buffered", "0", "at least one byte"));
        }
        let rate = self.data_rate.unwrap_or(d.rate);
        if !rate.is_finite() || rate < 0.0 {
            return Err(invalid(
                "data_rate",
                &rate.to_string(),
                "a number of messages per second, 0 = unlimited",
            ));
        }
        Ok(DataLimits {
            max_message_size,
            max_channels,
            max_buffered,
            rate,
            // At least one message at a time, or none would pass.
            burst: self.data_burst.unwrap_or(d.burst).max(1),
            bytes_rate: self.data_bytes_rate.unwrap_or(d.bytes_rate),
        })
    }
}

/// An on/off setting; `default` where unset.
fn parse_switch(
    key: &'static str,
    value: Option<&str>,
    default: bool,
) -> Result<bool, ConfigError> {
    match value {
        None => Ok(default),
        Some("on" | "true") => Ok(true),
        Some("off" | "false") => Ok(false),
        Some(v) => Err(invalid(key, v, "expected on or off")),
    }
}

fn invalid(key: &'static str, value: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        why: why.into(),
    }
}

fn parse_socket_addr(v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|e: std::net::AddrParseError| invalid("api", v, e.to_string()))
}

fn parse_ip(key: &'static str, v: &str) -> Result<IpAddr, ConfigError> {
    v.parse()
        .map_err(|e: std::net::AddrParseError| invalid(key, v, e.to_string()))
}

/// `LO-HI`, inclusive; RTP takes even ports and RTCP the odd one above, so at least two ports.
pub fn parse_port_range(v: &str) -> Result<(u16, u16), ConfigError> {
    let (lo, hi) = v
        .split_once('-')
        .ok_or_else(|| invalid("rtp_ports", v, "expected LO-HI"))?;
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|e| invalid("rtp_ports", v, e.to_string()))
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo == 0 || hi <= lo {
        return Err(invalid("rtp_ports", v, "need 0 < LO < HI"));
    }
    Ok((lo, hi))
}

pub fn parse_io(v: &str) -> Result<IoMode, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "auto" => Ok(IoMode::Auto),
        "uring" | "io_uring" => Ok(IoMode::Uring),
        "mmsg" => Ok(IoMode::Mmsg),
        _ => Err(invalid("io", v, "expected auto, uring or mmsg")),
    }
}

fn parse_seconds(key: &'static str, s: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(s).map_err(|e| invalid(key, &s.to_string(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Layer::default().resolve().expect("defaults are valid");
        assert_eq!(c.api, "127.0.0.1:9010".parse().expect("valid"));
        assert_eq!(c.media_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.rtp_ports, (20000, 29999));
        assert_eq!(c.io, IoMode::Auto);
        assert_eq!(c.record_dir, PathBuf::from("./recordings"));
        assert_eq!(c.api_secret, None);
        assert_eq!(c.disconnect_grace, Duration::from_secs(5));
        assert!(c.workers >= 1);
        assert!(c.pin_workers);
        assert!(c.steer);
        assert!(c.raw_send);
        assert_eq!(c.max_sessions, 0, "unlimited");
        assert_eq!(c.drain_timeout, Duration::ZERO, "stop at once");
        assert_eq!(c.max_bitrate, 0, "unlimited");
        assert_eq!(c.max_login_failures, 5);
        assert_eq!(c.max_frame_bytes, 1 << 20);
        assert_eq!(c.login_timeout, Duration::from_secs(10));
        assert_eq!(c.api_rate, 1000.0);
        assert_eq!(c.api_burst, 2000);
        assert_eq!(c.data_limits.max_message_size, 65536);
        assert_eq!(c.data_limits.max_channels, 16);
        assert_eq!(c.data_limits.max_buffered, 262_144);
        assert_eq!(c.data_limits.rate, 1000.0);
        assert_eq!(c.data_limits.burst, 2000);
        assert_eq!(c.data_limits.bytes_rate, 8_000_000);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn toml_file_uses_snake_case_keys() {
        let layer = Layer::from_toml(
            "api = \"127.0.0.1:0\"\nrtp_ports = \"30000-30099\"\nworkers = 2\nio = \"mmsg\"\n\
             disconnect_grace = 0.5\napi_secret = \"s3\"\nsteer = \"off\"\n\
             raw_send = \"off\"\nmax_sessions = 3\ndrain_timeout = 30\n\
             max_bitrate = 5000000\nmax_login_failures = 2\nmax_frame_bytes = 4096\n\
             login_timeout = 2.5\napi_rate = 0.5\napi_burst = 3\nlog_format = \"json\"\n\
             data_max_message_size = 1024\ndata_max_channels = 2\ndata_max_buffered = 4096\n\
             data_rate = 0\ndata_burst = 7\ndata_bytes_rate = 100\n",
        )
        .expect("valid toml");
        let c = layer.resolve().expect("valid values");
        assert_eq!(c.api.port(), 0);
        assert_eq!(c.rtp_ports, (30000, 30099));
        assert_eq!(c.workers, 2);
        assert_eq!(c.io, IoMode::Mmsg);
        assert_eq!(c.disconnect_grace, Duration::from_millis(500));
        assert_eq!(c.api_secret.as_deref(), Some("s3"));
        assert!(!c.steer);
        assert!(!c.raw_send);
        assert_eq!(c.max_sessions, 3);
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.max_bitrate, 5_000_000);
        assert_eq!(c.max_login_failures, 2);
        assert_eq!(c.max_frame_bytes, 4096);
        assert_eq!(c.login_timeout, Duration::from_millis(2500));
        assert_eq!(c.api_rate, 0.5);
        assert_eq!(c.api_burst, 3);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.data_limits,
            DataLimits {
                max_message_size: 1024,
                max_channels: 2,
                max_buffered: 4096,
                rate: 0.0,
                burst: 7,
                bytes_rate: 100,
            }
        );
    }

    #[test]
    fn upper_layer_wins_key_by_key() {
        let flags = Layer {
            workers: Some(3),
            ..Layer::default()
        };
        let file = Layer {
            workers: Some(1),
            io: Some("mmsg".into()),
            ..Layer::default()
        };
        let c = flags.over(file).resolve().expect("valid");
        assert_eq!(c.workers, 3);
        assert_eq!(c.io, IoMode::Mmsg);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (layer, key) in [
            (
                Layer {
                    rtp_ports: Some("2000".into()),
                    ..Layer::default()
                },
                "rtp_ports",
            ),
            (
                Layer {
                    rtp_ports: Some("3000-2000".into()),
                    ..Layer::default()
                },
                "rtp_ports",
            ),
            (
                Layer {
                    io: Some("epoll".into()),
                    ..Layer::default()
                },
                "io",
            ),
            (
                Layer {
                    api: Some("localhost".into()),
                    ..Layer::default()
                },
                "api",
            ),
            (
                Layer {
                    workers: Some(0),
                    ..Layer::default()
                },
                "workers",
            ),
            (
                Layer {
                    disconnect_grace: Some(-1.0),
                    ..Layer::default()
                },
                "disconnect_grace",
            ),
            (
                Layer {
                    steer: Some("auto".into()),
                    ..Layer::default()
                },
                "steer",
            ),
            (
                Layer {
                    raw_send: Some("maybe".into()),
                    ..Layer::default()
                },
                "raw_send",
            ),
            (
                Layer {
                    drain_timeout: Some(f64::NAN),
                    ..Layer::default()
                },
                "drain_timeout",
            ),
            (
                Layer {
                    api_rate: Some(-1.0),
                    ..Layer::default()
                },
                "api_rate",
            ),
            (
                Layer {
                    max_frame_bytes: Some(0),
                    ..Layer::default()
                },
                "max_frame_bytes",
            ),
            (
                Layer {
                    data_max_message_size: Some(0),
                    ..Layer::default()
                },
                "data_max_message_size",
            ),
            (
                Layer {
                    data_max_channels: Some(0),
                    ..Layer::default()
                },
                "data_max_channels",
            ),
            (
                Layer {
                    data_max_buffered: Some(0),
                    ..Layer::default()
                },
                "data_max_buffered",
            ),
            (
                Layer {
                    data_rate: Some(f64::INFINITY),
                    ..Layer::default()
                },
                "data_rate",
            ),
            (
                Layer {
                    log_format: Some("xml".into()),
                    ..Layer::default()
                },
                "log_format",
            ),
        ] {
            let err = layer.resolve().expect_err("invalid value");
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
