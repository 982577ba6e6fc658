//! WebRTC data channels (RFC 8831) over one SCTP association, sans-IO: the SCTP packets are
//! the DTLS application data of the session's transport.
//!
//! [`SctpAssociation`] drives one `sctp-proto` association (str0m's engine) the way the ICE and
//! DTLS cores are driven: packets in with [`handle_input`](SctpAssociation::handle_input),
//! packets out with [`poll_transmit`](SctpAssociation::poll_transmit), timers with
//! [`poll_timeout`](SctpAssociation::poll_timeout) / [`handle_timeout`](SctpAssociation::handle_timeout),
//! and what the application sees with [`poll_event`](SctpAssociation::poll_event). Channels
//! open in-band with our own DCEP ([`super::dcep`]): a peer's `DATA_CHANNEL_OPEN` is
//! acknowledged at once and reported as [`SctpEvent::ChannelOpen`].
//!
//! Facts this relies on:
//! - Role: the side that sends INIT is the SCTP client. The transport makes the DTLS client
//!   the SCTP client, as str0m 0.25 does (`try_init_sctp(dtls.is_active())`); answering a
//!   browser's offer we are the DTLS server, so the peer sends INIT and we are
//!   [`SctpRole::Server`]. A client connects at construction.
//! - Message kinds (RFC 8831 §8): text is PPID 51, binary 53; an empty message goes out as PPID
//!   56 (text) or 57 (binary) with one zero byte, and those PPIDs always read as empty.
//! - Size: every SCTP packet is at most [`MAX_SCTP_PACKET`] bytes, so that with DTLS record
//!   overhead the UDP payload stays under 1,200 bytes. Retransmission never gives up:
//!   liveness belongs to ICE consent (as in str0m).
//! - Nothing a peer sends can panic this module; what cannot be used is counted
//!   ([`SctpStats`]), as is what the session's [`DataLimits`] drop: a message too large or
//!   beyond the rates (from the peer), or beyond the bytes queued (to it).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use sctp_proto::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event,
    Payload, PayloadProtocolIdentifier as Ppid, ReliabilityType, ServerConfig, StreamEvent,
    TransportConfig,
};

use super::data_limits::{DataLimits, DataRate, RateDrop};
use super::dcep::{ChannelSpec, Dcep, Reliability};

/// Largest SCTP packet we send: dimpl's records (≤ 1150 bytes with its default MTU) carry it
/// with ≤ 50 bytes of DTLS overhead, under a 1,200-byte UDP payload.
pub const MAX_SCTP_PACKET: usize = 1100;
/// SCTP common header (12) + DATA chunk header (16), which sctp-proto adds to its payload size.
const SCTP_HEADERS: usize = 28;
/// sctp-proto ends the association on a message beyond its own receive limit, so that
/// limit (and the receive window) is at least this and twice what we accept: a message
/// larger than we accept, within reason, is dropped and counted by us instead.
const RECEIVE_CEILING: u32 = 1 << 20;
/// RFC 8841 §6: a peer that does not say accepts 64 KiB.
pub const DEFAULT_REMOTE_MAX_MESSAGE_SIZE: u32 = 65_536;
/// The SCTP port in `a=sctp-port` (RFC 8841 §5), ours and, by default, the peer's.
pub const SCTP_PORT: u16 = 5000;

/// Which side sends INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SctpRole {
    Client,
    Server,
}

/// The kind of a data-channel message (RFC 8831 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Text,
    Binary,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Binary => "binary",
        }
    }

    fn ppid(self, empty: bool) -> Ppid {
        match (self, empty) {
            (MessageKind::Text, false) => Ppid::String,
            (MessageKind::Text, true) => Ppid::StringEmpty,
            (MessageKind::Binary, false) => Ppid::Binary,
            (MessageKind::Binary, true) => Ppid::BinaryEmpty,
        }
    }
}

/// What the association reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SctpEvent {
    /// The association is up (INIT/COOKIE exchange done).
    Connected,
    /// A channel is open: the peer's `DATA_CHANNEL_OPEN` (acknowledged), or the ACK of ours.
    ChannelOpen { sid: u16, spec: ChannelSpec },
    /// One whole message; `data` is empty for an empty message.
    Message {
        sid: u16,
        kind: MessageKind,
        data: Vec<u8>,
    },
    /// The peer reset the stream (RFC 8831 §6.7).
    ChannelClosed { sid: u16 },
    /// The association is gone (ABORT, SHUTDOWN, protocol error): final.
    Lost(String),
}

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no open data channel with stream id {0}")]
    NoChannel(u16),
    #[error("message of {size} bytes exceeds the peer's max-message-size {max}")]
    TooLarge { size: usize, max: u32 },
    #[error("send buffer full ({0} bytes unacknowledged)")]
    Full(usize),
    #[error("SCTP: {0}")]
    Sctp(String),
}

/// What was received and could not be used, and what went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SctpStats {
    pub messages_in: u64,
    pub bytes_in: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
    /// DCEP messages that did not parse, or came in the wrong state.
    pub bad_dcep: u64,
    /// User messages with a PPID that is not WebRTC's (RFC 8831 §8).
    pub unknown_ppid: u64,
    /// User messages on a stream no channel was opened on.
    pub no_channel: u64,
    /// Channels beyond [`DataLimits::max_channels`]: the peer's OPENs, and ours.
    pub refused_channels: u64,
    /// Messages from the peer larger than [`DataLimits::max_message_size`].
    pub too_large: u64,
    /// Messages from the peer beyond [`DataLimits::rate`] and its burst.
    pub rate_limited: u64,
    /// Messages from the peer beyond [`DataLimits::bytes_rate`].
    pub bytes_limited: u64,
    /// Messages to the peer dropped with [`DataLimits::max_buffered`] bytes waiting.
    pub buffer_full: u64,
    /// INITs that reached us as SCTP client (see [`SctpRole`]).
    pub ignored_inits: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    /// We sent `DATA_CHANNEL_OPEN` and wait for the ACK.
    AwaitAck,
    Open,
}

#[derive(Debug)]
struct Channel {
    spec: ChannelSpec,
    state: ChannelState,
}

/// One SCTP association carrying WebRTC data channels.
pub struct SctpAssociation {
    endpoint: Endpoint,
    handle: Option<AssociationHandle>,
    assoc: Option<Association>,
    role: SctpRole,
    connected: bool,
    lost: bool,
    remote_max_message_size: u32,
    channels: BTreeMap<u16, Channel>,
    events: VecDeque<SctpEvent>,
    transmit: VecDeque<Vec<u8>>,
    stats: SctpStats,
    limits: DataLimits,
    rate: DataRate,
    /// See [`SctpAssociation::buffered`].
    buffered: usize,
}

impl std::fmt::Debug for SctpAssociation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SctpAssociation")
            .field("role", &self.role)
            .field("connected", &self.connected)
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

/// sctp-proto addresses associations by socket address; ours is the DTLS association, so one
/// fixed placeholder stands for the peer.
fn peer_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 1], SCTP_PORT))
}

fn transport_config(limits: &DataLimits) -> Arc<TransportConfig> {
    let ceiling = limits
        .max_message_size
        .saturating_mul(2)
        .max(RECEIVE_CEILING);
    Arc::new(
        TransportConfig::default()
            .with_max_init_retransmits(None)
            .with_max_data_retransmits(None)
            .with_max_receive_buffer_size(ceiling)
            .with_max_receive_message_size(ceiling),
    )
}

impl SctpAssociation {
    /// A new association; a client has its INIT ready in
    /// [`SctpAssociation::poll_transmit`]. `remote_max_message_size` is the peer's
    /// `a=max-message-size` (`None`: absent, 64 KiB; 0: unlimited); `limits` are ours.
    pub fn new(
        role: SctpRole,
        now: Instant,
        remote_max_message_size: Option<u32>,
        limits: DataLimits,
    ) -> Self {
        let mut config = EndpointConfig::default();
        config.max_payload_size((MAX_SCTP_PACKET - SCTP_HEADERS) as u32);
        let server = (role == SctpRole::Server).then(|| {
            let mut s = ServerConfig::default();
            s.transport = transport_config(&limits);
            Arc::new(s)
        });
        let remote_max = match remote_max_message_size {
            None => DEFAULT_REMOTE_MAX_MESSAGE_SIZE,
            Some(0) => u32::MAX,
            Some(n) => n,
        };
        let mut a = SctpAssociation {
            endpoint: Endpoint::new(Arc::new(config), server),
            handle: None,
            assoc: None,
            role,
            connected: false,
            lost: false,
            remote_max_message_size: remote_max,
            channels: BTreeMap::new(),
            events: VecDeque::new(),
            transmit: VecDeque::new(),
            stats: SctpStats::default(),
            limits,
            rate: DataRate::new(&limits, now),
            buffered: 0,
        };
        if role == SctpRole::Client {
            let mut config = ClientConfig::new();
            config.transport = transport_config(&limits);
            match a.endpoint.connect(config, peer_addr()) {
                Ok((handle, assoc)) => {
                    a.handle = Some(handle);
                    a.assoc = Some(assoc);
                }
                Err(e) => a.lose(format!("connect: {e}")),
            }
        }
        a.drive(now);
        a
    }

    pub fn role(&self) -> SctpRole {
        self.role
    }

    pub fn is_connected(&self) -> bool {
        self.connected && !self.lost
    }

    pub fn stats(&self) -> SctpStats {
        self.stats
    }

    /// Bytes written to the peer and not acknowledged yet, over every channel, as of the
    /// last packet, timer or send.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Open channels: stream id and what was negotiated.
    pub fn channels(&self) -> impl Iterator<Item = (u16, &ChannelSpec)> {
        self.channels
            .iter()
            .filter(|(_, c)| c.state == ChannelState::Open)
            .map(|(sid, c)| (*sid, &c.spec))
    }

    /// One SCTP packet (the plaintext of a DTLS application-data record).
    pub fn handle_input(&mut self, now: Instant, packet: &[u8]) {
        self.guarded(|a| a.input(now, packet));
    }

    fn input(&mut self, now: Instant, packet: &[u8]) {
        if self.lost {
            return;
        }
        // A client accepts no association: sctp-proto 0.10.8 panics on an INIT reaching an
        // endpoint without a server configuration. A peer that also sends INIT (collision)
        // answers ours (RFC 9260 §5.2.1), so ours completes.
        if self.role == SctpRole::Client && is_init(packet) {
            self.stats.ignored_inits += 1;
            return;
        }
        let Some((handle, event)) =
            self.endpoint
                .handle(now, peer_addr(), None, None, packet.to_vec().into())
        else {
            return;
        };
        match event {
            // A repeated INIT (the peer's retransmission) must not replace the association.
            DatagramEvent::NewAssociation(a) if self.assoc.is_none() => {
                self.handle = Some(handle);
                self.assoc = Some(a);
            }
            DatagramEvent::NewAssociation(_) => {}
            DatagramEvent::AssociationEvent(e) => {
                if let Some(a) = self.assoc.as_mut().filter(|_| self.handle == Some(handle)) {
                    a.handle_event(e);
                }
            }
        }
        self.drive(now);
    }

    /// When [`SctpAssociation::handle_timeout`] must run next (retransmission, SACK delay).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.lost {
            return None;
        }
        self.assoc.as_ref().and_then(Association::poll_timeout)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.guarded(|a| a.timeout(now));
    }

    fn timeout(&mut self, now: Instant) {
        if self.lost {
            return;
        }
        if let Some(a) = self.assoc.as_mut() {
            a.handle_timeout(now);
        }
        self.drive(now);
    }

    /// The next SCTP packet to send as DTLS application data.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SctpEvent> {
        self.events.pop_front()
    }

    /// Sends one message on an open channel, with the channel's ordering and reliability.
    /// An empty `data` is an empty message (PPID 56/57 with one zero byte, RFC 8831 §6.6).
    pub fn send(
        &mut self,
        now: Instant,
        sid: u16,
        kind: MessageKind,
        data: &[u8],
    ) -> Result<(), SendError> {
        self.guarded(|a| a.write(now, sid, kind, data))
            .unwrap_or(Err(SendError::NoChannel(sid)))
    }

    fn write(
        &mut self,
        now: Instant,
        sid: u16,
        kind: MessageKind,
        data: &[u8],
    ) -> Result<(), SendError> {
        if !self.channels.contains_key(&sid) || self.lost {
            return Err(SendError::NoChannel(sid));
        }
        if data.len() as u64 > u64::from(self.remote_max_message_size) {
            return Err(SendError::TooLarge {
                size: data.len(),
                max: self.remote_max_message_size,
            });
        }
        let buffered = self.buffered;
        let assoc = self.assoc.as_mut().ok_or(SendError::NoChannel(sid))?;
        if buffered + data.len() > self.limits.max_buffered {
            self.stats.buffer_full += 1;
            return Err(SendError::Full(buffered));
        }
        let mut stream = assoc
            .stream(sid)
            .map_err(|e| SendError::Sctp(e.to_string()))?;
        let (bytes, ppid) = match data {
            [] => (&[0u8][..], kind.ppid(true)),
            d => (d, kind.ppid(false)),
        };
        stream
            .write_with_ppi(bytes, ppid)
            .map_err(|e| SendError::Sctp(e.to_string()))?;
        self.stats.messages_out += 1;
        self.stats.bytes_out += data.len() as u64;
        self.drive(now);
        Ok(())
    }

    /// Opens a channel of our own on `sid` with `DATA_CHANNEL_OPEN` (RFC 8832 §6); it is
    /// reported open when the peer's ACK arrives. RFC 8832 §6: a DTLS client uses even ids, a
    /// server odd ones.
    pub fn open_channel(
        &mut self,
        now: Instant,
        sid: u16,
        spec: ChannelSpec,
    ) -> Result<(), SendError> {
        self.guarded(|a| a.open(now, sid, spec))
            .unwrap_or(Err(SendError::NoChannel(sid)))
    }

    fn open(&mut self, now: Instant, sid: u16, spec: ChannelSpec) -> Result<(), SendError> {
        if !self.is_connected() || self.channels.contains_key(&sid) {
            return Err(SendError::NoChannel(sid));
        }
        if self.channels.len() >= self.limits.max_channels {
            self.stats.refused_channels += 1;
            return Err(SendError::NoChannel(sid));
        }
        let assoc = self.assoc.as_mut().ok_or(SendError::NoChannel(sid))?;
        let mut stream = assoc
            .open_stream(sid, Ppid::Unknown)
            .map_err(|e| SendError::Sctp(e.to_string()))?;
        // RFC 8832 §6: the OPEN goes reliably and in order; later messages follow the
        // channel's settings (sctp-proto keeps each message's policy as written).
        stream
            .write_with_ppi(&Dcep::Open(spec.clone()).to_bytes(), Ppid::Dcep)
            .map_err(|e| SendError::Sctp(e.to_string()))?;
        configure(&mut stream, &spec);
        self.channels.insert(
            sid,
            Channel {
                spec,
                state: ChannelState::AwaitAck,
            },
        );
        self.drive(now);
        Ok(())
    }

    /// Closes a channel: its outgoing stream is reset (RFC 8831 §6.7), the peer resets its own.
    pub fn close_channel(&mut self, now: Instant, sid: u16) {
        self.guarded(|a| a.close(now, sid));
    }

    fn close(&mut self, now: Instant, sid: u16) {
        if self.channels.remove(&sid).is_none() {
            return;
        }
        if let Some(mut s) = self.assoc.as_mut().and_then(|a| a.stream(sid).ok()) {
            let _ = s.close();
        }
        self.drive(now);
    }

    /// A free stream id of our parity for [`SctpAssociation::open_channel`] (RFC 8832 §6:
    /// even for the DTLS client, odd for the server), the lowest one not in use.
    pub fn free_stream_id(&self, dtls_client: bool) -> Option<u16> {
        let first = if dtls_client { 0 } else { 1 };
        (first..u16::MAX)
            .step_by(2)
            .find(|sid| !self.channels.contains_key(sid))
    }

    /// Moves everything sctp-proto has to say into our queues.
    fn drive(&mut self, now: Instant) {
        while let Some(t) = self.endpoint.poll_transmit() {
            push_packets(&mut self.transmit, t.payload);
        }
        let Some(assoc) = self.assoc.as_mut() else {
            return;
        };
        loop {
            while let Some(e) = assoc.poll_endpoint_event() {
                if let (Some(h), false) = (self.handle, self.lost)
                    && let Some(ae) = self.endpoint.handle_event(h, e)
                {
                    assoc.handle_event(ae);
                }
            }
            // Streams the peer created are reached by id; the accept queue only grows.
            while assoc.accept_stream().is_some() {}
            let Some(event) = assoc.poll() else {
                break;
            };
            match event {
                Event::Connected => {
                    self.connected = true;
                    assoc.set_max_send_message_size(self.remote_max_message_size);
                    self.events.push_back(SctpEvent::Connected);
                }
                Event::HandshakeFailed { reason } | Event::AssociationLost { reason } => {
                    self.lost = true;
                    self.events.push_back(SctpEvent::Lost(reason.to_string()));
                }
                Event::Stream(StreamEvent::Readable { id }) => read_stream(
                    assoc,
                    id,
                    Reader {
                        now,
                        limits: &self.limits,
                        rate: &mut self.rate,
                        channels: &mut self.channels,
                        events: &mut self.events,
                        stats: &mut self.stats,
                    },
                ),
                Event::Stream(StreamEvent::Finished { id } | StreamEvent::Stopped { id, .. }) => {
                    // RFC 8831 §6.7: the peer reset its outgoing stream; reset ours too.
                    if let Ok(mut s) = assoc.stream(id) {
                        let _ = s.close();
                    }
                    if self.channels.remove(&id).is_some() {
                        self.events.push_back(SctpEvent::ChannelClosed { sid: id });
                    }
                }
                _ => {}
            }
        }
        while let Some(t) = assoc.poll_transmit(now) {
            push_packets(&mut self.transmit, t.payload);
        }
        self.buffered = self
            .channels
            .keys()
            .filter_map(|id| assoc.stream(*id).ok()?.buffered_amount().ok())
            .sum();
    }

    /// Runs `f` on the association; should sctp-proto panic (a bug a peer's bytes could
    /// reach), the association is dropped and reported lost instead of taking the control
    /// plane down with it.
    fn guarded<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> Option<R> {
        if self.lost {
            // Still answer: `f` sees `lost` and does nothing.
            return Some(f(self));
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(r) => Some(r),
            Err(_) => {
                self.assoc = None;
                self.handle = None;
                self.transmit.clear();
                self.lose("sctp-proto panicked".to_owned());
                None
            }
        }
    }

    fn lose(&mut self, reason: String) {
        if !self.lost {
            self.lost = true;
            self.events.push_back(SctpEvent::Lost(reason));
        }
    }
}

/// An SCTP packet starting an association: verification tag 0 and an INIT chunk first
/// (RFC 9260 §8.5.1).
fn is_init(packet: &[u8]) -> bool {
    const CHUNK_INIT: u8 = 1;
    packet.len() > 12 && packet[4..8] == [0; 4] && packet[12] == CHUNK_INIT
}

fn push_packets(out: &mut VecDeque<Vec<u8>>, payload: Payload) {
    if let Payload::RawEncode(packets) = payload {
        out.extend(packets.into_iter().map(|b| b.to_vec()));
    }
}

/// The channel's ordering and partial reliability on its stream (RFC 8831 §6.1).
fn configure(stream: &mut sctp_proto::Stream<'_>, spec: &ChannelSpec) {
    let (ty, value) = match spec.reliability {
        Reliability::Reliable => (ReliabilityType::Reliable, 0),
        Reliability::MaxRetransmits(n) => (ReliabilityType::Rexmit, n),
        Reliability::MaxLifetimeMs(ms) => (ReliabilityType::Timed, ms),
    };
    // Fails only for a stream that no longer exists: nothing left to configure.
    let _ = stream.set_reliability_params(!spec.ordered, ty, value);
}

/// What reading a stream decides with: the limits, and where messages and drops go.
struct Reader<'a> {
    now: Instant,
    limits: &'a DataLimits,
    rate: &'a mut DataRate,
    channels: &'a mut BTreeMap<u16, Channel>,
    events: &'a mut VecDeque<SctpEvent>,
    stats: &'a mut SctpStats,
}

/// Reads every whole message waiting on stream `sid`; those beyond the limits are dropped
/// and counted.
fn read_stream(assoc: &mut Association, sid: u16, r: Reader<'_>) {
    let Reader {
        now,
        limits,
        rate,
        channels,
        events,
        stats,
    } = r;
    loop {
        let Ok(mut stream) = assoc.stream(sid) else {
            return;
        };
        let chunks = match stream.read() {
            Ok(Some(c)) => c,
            Ok(None) | Err(_) => return,
        };
        let mut data = vec![0; chunks.len()];
        if chunks.read(&mut data).is_err() {
            continue;
        }
        let kind = match chunks.ppi {
            Ppid::Dcep => {
                let full = channels.len() >= limits.max_channels;
                dcep(&mut stream, sid, &data, full, channels, events, stats);
                continue;
            }
            Ppid::String | Ppid::StringEmpty => MessageKind::Text,
            Ppid::Binary | Ppid::BinaryEmpty => MessageKind::Binary,
            Ppid::Unknown => {
                stats.unknown_ppid += 1;
                continue;
            }
        };
        if matches!(chunks.ppi, Ppid::StringEmpty | Ppid::BinaryEmpty) {
            data.clear();
        }
        let Some(channel) = channels.get_mut(&sid) else {
            stats.no_channel += 1;
            continue;
        };
        // RFC 8832 §6: user data from the peer implies it got our OPEN.
        if channel.state == ChannelState::AwaitAck {
            channel.state = ChannelState::Open;
            events.push_back(SctpEvent::ChannelOpen {
                sid,
                spec: channel.spec.clone(),
            });
        }
        if data.len() > limits.max_message_size as usize {
            stats.too_large += 1;
            continue;
        }
        match rate.admit(now, data.len()) {
            Ok(()) => {}
            Err(RateDrop::Messages) => {
                stats.rate_limited += 1;
                continue;
            }
            Err(RateDrop::Bytes) => {
                stats.bytes_limited += 1;
                continue;
            }
        }
        stats.messages_in += 1;
        stats.bytes_in += data.len() as u64;
        events.push_back(SctpEvent::Message { sid, kind, data });
    }
}

/// A DCEP message on `sid`: an OPEN is acknowledged and opens the channel, an ACK completes
/// ours; anything else is counted and ignored.
fn dcep(
    stream: &mut sctp_proto::Stream<'_>,
    sid: u16,
    data: &[u8],
    full: bool,
    channels: &mut BTreeMap<u16, Channel>,
    events: &mut VecDeque<SctpEvent>,
    stats: &mut SctpStats,
) {
    match (Dcep::parse(data), channels.get_mut(&sid)) {
        (Ok(Dcep::Open(_)), None) if full => {
            stats.refused_channels += 1;
            let _ = stream.close();
        }
        (Ok(Dcep::Open(spec)), None) => {
            // The ACK goes reliably and in order, before the channel's own settings apply.
            if stream
                .write_with_ppi(&Dcep::Ack.to_bytes(), Ppid::Dcep)
                .is_err()
            {
                stats.bad_dcep += 1;
                return;
            }
            configure(stream, &spec);
            channels.insert(
                sid,
                Channel {
                    spec: spec.clone(),
                    state: ChannelState::Open,
                },
            );
            events.push_back(SctpEvent::ChannelOpen { sid, spec });
        }
        (Ok(Dcep::Ack), Some(c)) if c.state == ChannelState::AwaitAck => {
            c.state = ChannelState::Open;
            events.push_back(SctpEvent::ChannelOpen {
                sid,
                spec: c.spec.clone(),
            });
        }
        // A second OPEN on a stream in use, an ACK nobody waits for, or garbage.
        _ => stats.bad_dcep += 1,
    }
}

#[cfg(test)]
#[path = "sctp_tests.rs"]
mod tests;
