//! The `sluice` command line: every setting as a flag and a `SLUICE_*` variable.
//!
//! It lives in the library, not in `main.rs`, so that the settings can be enumerated
//! (`Cli::command().get_arguments()`): the `docs` test checks that docs/api.md names each one.

use std::path::PathBuf;

use clap::Parser;

use crate::config::Layer;

/// Sluice media server: RTP forwarder (echo, proxy, SFU) driven by the NkMedia JSON session API
/// over WebSocket.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// API listen address (port 0 = any free port) [default: 127.0.0.1:9010]
    #[arg(long, env = "SLUICE_API", value_name = "ADDR")]
    pub api: Option<String>,
    /// Address media sockets bind to [default: 127.0.0.1]
    #[arg(long, env = "SLUICE_MEDIA_IP", value_name = "IP")]
    pub media_ip: Option<String>,
    /// Address announced in SDP, for 1:1 NAT [default: the media ip]
    #[arg(long, env = "SLUICE_PUBLIC_IP", value_name = "IP")]
    pub public_ip: Option<String>,
    /// UDP port range for media, inclusive [default: 20000-29999]
    #[arg(long, env = "SLUICE_RTP_PORTS", value_name = "LO-HI")]
    pub rtp_ports: Option<String>,
    /// Data-plane worker threads, each pinned to a core [default: number of cores]
    #[arg(long, env = "SLUICE_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// I/O backend: auto (io_uring, else recvmmsg/sendmmsg), uring or mmsg [default: auto]
    #[arg(long, env = "SLUICE_IO", value_name = "auto|uring|mmsg")]
    pub io: Option<String>,
    /// Recordings folder [default: ./recordings]
    #[arg(long, env = "SLUICE_RECORD_DIR", value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// API secret: when set, clients must log in with it as password [default: none]
    #[arg(
        long,
        env = "SLUICE_API_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub api_secret: Option<String>,
    /// Seconds that sessions outlive the API connection that created them [default: 5]
    #[arg(long, env = "SLUICE_DISCONNECT_GRACE", value_name = "SECONDS")]
    pub disconnect_grace: Option<f64>,
    /// io_uring: microseconds a busy worker may wait to gather more datagrams per round
    /// (0 = never; bounds the added latency) [default: 500]
    #[arg(long, env = "SLUICE_BATCH_WAIT_US", value_name = "MICROSECONDS")]
    pub batch_wait_us: Option<u64>,
    /// Deliver all of a worker's media ports to one socket through BPF sk_lookup
    /// where the kernel allows it (CAP_NET_ADMIN + CAP_BPF), on or off [default: on]
    #[arg(long, env = "SLUICE_STEER", value_name = "on|off")]
    pub steer: Option<String>,
    /// Send every leg's media through raw sockets, one per worker and family, with the leg's own
    /// address and port, where the kernel allows it (CAP_NET_RAW + CAP_NET_ADMIN), on or off
    /// [default: on]
    #[arg(long, env = "SLUICE_RAW_SEND", value_name = "on|off")]
    pub raw_send: Option<String>,
    /// Most concurrent sessions: a `create` beyond it is refused with `no_mediaserver`
    /// (0 = unlimited) [default: 0]
    #[arg(long, env = "SLUICE_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Graceful drain on SIGTERM: /ready turns 503 and `create` is refused while live
    /// sessions go on, for at most this many seconds (0 = stop at once) [default: 0]
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT", value_name = "SECONDS")]
    pub drain_timeout: Option<f64>,
    /// Total ingress bits/s the node accepts, summed over its sessions (each session's cap,
    /// else 64000 per audio and 2000000 per video m-line): a `create` beyond it is refused
    /// with `no_mediaserver` (0 = unlimited) [default: 0]
    #[arg(long, env = "SLUICE_MAX_BITRATE", value_name = "BPS")]
    pub max_bitrate: Option<u64>,
    /// Consecutive failed logins after which an API connection is closed (0 = unlimited)
    /// [default: 5]
    #[arg(long, env = "SLUICE_MAX_LOGIN_FAILURES", value_name = "N")]
    pub max_login_failures: Option<u32>,
    /// Largest API frame: a larger one gets an error reply, then the connection closes with
    /// WebSocket code 1009 [default: 1048576]
    #[arg(long, env = "SLUICE_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// With an API secret, seconds a connection may stay open without logging in (0 = no
    /// limit) [default: 10]
    #[arg(long, env = "SLUICE_LOGIN_TIMEOUT", value_name = "SECONDS")]
    pub login_timeout: Option<f64>,
    /// API requests per second per connection; one beyond it (and the burst) gets
    /// `too_many_requests` (0 = unlimited) [default: 1000]
    #[arg(long, env = "SLUICE_API_RATE", value_name = "PER_SECOND")]
    pub api_rate: Option<f64>,
    /// API requests a connection may send at once before --api-rate applies [default: 2000]
    #[arg(long, env = "SLUICE_API_BURST", value_name = "N")]
    pub api_burst: Option<u32>,
    /// Largest data-channel message accepted, advertised in a=max-message-size; a larger
    /// one is dropped and counted [default: 65536]
    #[arg(long, env = "SLUICE_DATA_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub data_max_message_size: Option<u32>,
    /// Data channels per session; one beyond it is refused and counted [default: 16]
    #[arg(long, env = "SLUICE_DATA_MAX_CHANNELS", value_name = "N")]
    pub data_max_channels: Option<usize>,
    /// Bytes queued towards one peer's data channels; beyond it messages to that peer are
    /// dropped and counted [default: 262144]
    #[arg(long, env = "SLUICE_DATA_MAX_BUFFERED", value_name = "BYTES")]
    pub data_max_buffered: Option<usize>,
    /// Data-channel messages per second a session's peer may send; beyond it and the burst
    /// they are dropped and counted (0 = unlimited) [default: 1000]
    #[arg(long, env = "SLUICE_DATA_RATE", value_name = "PER_SECOND")]
    pub data_rate: Option<f64>,
    /// Data-channel messages a peer may send at once before --data-rate applies
    /// [default: 2000]
    #[arg(long, env = "SLUICE_DATA_BURST", value_name = "N")]
    pub data_burst: Option<u32>,
    /// Data-channel bytes per second a session's peer may send; beyond it messages are
    /// dropped and counted (0 = unlimited) [default: 8000000]
    #[arg(long, env = "SLUICE_DATA_BYTES_RATE", value_name = "BYTES_PER_SECOND")]
    pub data_bytes_rate: Option<u64>,
    /// Log line format: text, or json (one object per line, for log shippers)
    /// [default: text]
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,
    /// Join a cluster of nodes sharing one Redis: redis://HOST:PORT[/DB] or
    /// redis+unix:///PATH [default: none, a single node]
    #[arg(long, env = "SLUICE_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// This node's id in the cluster, unique per node [default: the host name]
    #[arg(long, env = "SLUICE_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// Seconds a node's liveness record lives in Redis; refreshed three times per TTL, and
    /// a node silent for longer is cleaned up after [default: 3]
    #[arg(long, env = "SLUICE_CLUSTER_TTL", value_name = "SECONDS")]
    pub cluster_ttl: Option<f64>,
    /// How relay streams between cluster nodes travel: srtp (keys exchanged through the
    /// cluster) or rtp (plain, for a trusted network) [default: srtp]
    #[arg(long, env = "SLUICE_CLUSTER_RELAY", value_name = "srtp|rtp")]
    pub cluster_relay: Option<String>,
    /// TOML config file with the same keys in snake_case, e.g. rtp_ports = "20000-29999"
    /// [default: none]
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// Flags and variables as a settings layer (clap already let a flag win over its variable).
    pub fn layer(&self) -> Layer {
        Layer {
            api: self.api.clone(),
            media_ip: self.media_ip.clone(),
            public_ip: self.public_ip.clone(),
            rtp_ports: self.rtp_ports.clone(),
            workers: self.workers,
            io: self.io.clone(),
            record_dir: self.record_dir.clone(),
            api_secret: self.api_secret.clone(),
            disconnect_grace: self.disconnect_grace,
            batch_wait_us: self.batch_wait_us,
            pin_workers: None,
            steer: self.steer.clone(),
            raw_send: self.raw_send.clone(),
            max_sessions: self.max_sessions,
            drain_timeout: self.drain_timeout,
            max_bitrate: self.max_bitrate,
            max_login_failures: self.max_login_failures,
            max_frame_bytes: self.max_frame_bytes,
            login_timeout: self.login_timeout,
            api_rate: self.api_rate,
            api_burst: self.api_burst,
            data_max_message_size: self.data_max_message_size,
            data_max_channels: self.data_max_channels,
            data_max_buffered: self.data_max_buffered,
            data_rate: self.data_rate,
            data_burst: self.data_burst,
            data_bytes_rate: self.data_bytes_rate,
            log_format: self.log_format.clone(),
            cluster: self.cluster.clone(),
            node_id: self.node_id.clone(),
            cluster_ttl: self.cluster_ttl,
            cluster_relay: self.cluster_relay.clone(),
        }
    }
}
