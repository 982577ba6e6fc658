//! What every worker has whatever its I/O backend: the forwarding core, the sockets it owns,
//! the command queue from control and the event queue back.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::api::{Command, DropReason, Event, LegId, LegStats, MediaKind, Pt, Remote, WorkerLoad};
use crate::batch::TxBatch;
use crate::forwarder::{Forwarder, PREFETCH_DEPTH, PeerMsg, SocketRef, Upcoming};
use crate::mirror::Consumer;
use crate::ports::PortPool;
use crate::rawsend::{RawRoute, RawSender, raw_source};
use crate::steer::Steering;
use crate::sys::EventFd;

/// Messages on a worker's bounded command queue (followed by an eventfd wake-up).
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    AddLeg {
        id: LegId,
        kind: MediaKind,
        remote: Remote,
        secure: bool,
        bundle: Vec<(Pt, MediaKind)>,
        stats: Arc<LegStats>,
        rtp: UdpSocket,
        /// None where the remote multiplexes RTCP from the start.
        rtcp: Option<UdpSocket>,
    },
    /// Close the leg's sockets, then drop `done` (which finishes the closing).
    RemoveLeg {
        id: LegId,
        done: LegClosed,
    },
    Cmd(Command),
    /// A `Connect` whose source lives on another worker, with the source's counters.
    ConnectRemote {
        cmd: Command,
        source: Arc<LegStats>,
    },
    /// From another worker's forwarder, or from `Dataplane::send` for one (rooms across
    /// workers).
    Peer(PeerMsg),
    /// Handle nothing more until the sender is dropped (`Dataplane::stall_worker`).
    Stall(Receiver<()>),
    Shutdown,
}

/// A datagram as a driver received it ([`WorkerCore::forward`]).
pub(crate) enum Received<'a> {
    /// Its source and its bytes, in the receive buffer (SRTP decrypts in place).
    Datagram { src: SocketAddr, data: &'a mut [u8] },
    /// Larger than the receive buffer: the kernel cut it.
    Truncated,
    /// No source address, or headers that do not parse.
    Malformed,
}

/// Finishes closing a leg once the driver has dropped its sockets, by being dropped: the
/// port pair goes back to the pool, `Dataplane::close_leg`'s caller (if one waits) is
/// answered, and `Event::LegClosed` tells control the ports are free. Dropped whatever
/// happens (a leg already gone, the worker stopping), so a closing never leaks its ports.
pub(crate) struct LegClosed {
    pub(crate) leg: LegId,
    /// `None` once disarmed: the ports stay taken (their sockets may still be open).
    pub(crate) port: Option<u16>,
    pub(crate) ports: Arc<Mutex<PortPool>>,
    pub(crate) waiter: Option<Sender<()>>,
    pub(crate) events: Sender<Event>,
    pub(crate) lost_events: Arc<AtomicU64>,
}

impl LegClosed {
    /// For a closing that never reached its worker (a full queue): the sockets are still
    /// open, so the ports must not go back to the pool.
    pub(crate) fn disarm(mut self) {
        self.port = None;
    }
}

impl std::fmt::Debug for LegClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegClosed")
            .field("leg", &self.leg)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Drop for LegClosed {
    fn drop(&mut self) {
        let Some(port) = self.port.take() else {
            return;
        };
        // Held for one push; control-side bookkeeping, never on the packet path.
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(port);
        if let Some(w) = self.waiter.take() {
            let _ = w.send(());
        }
        if self
            .events
            .try_send(Event::LegClosed { leg: self.leg })
            .is_err()
        {
            self.lost_events.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A socket appearing or disappearing, for the backend to (un)register.
#[derive(Debug)]
pub(crate) enum Change {
    Added {
        token: usize,
        fd: RawFd,
        /// The port it is bound to (0 if unknown).
        port: u16,
    },
    /// The backend stops watching `socket`, drops it, then drops `done`.
    Removed {
        token: usize,
        socket: UdpSocket,
        done: Option<LegClosed>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Shutdown,
}

/// What [`WorkerCore::forward_mirrored`] left.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Mirrors {
    /// Every ring is empty.
    Done,
    /// `tx` is full: flush it and call again.
    Flush,
    /// Commands are queued: apply them, then call again.
    Commands,
}

/// Another worker, as this one reaches it: its queue and its wake-up.
pub(crate) struct PeerLink {
    pub(crate) msgs: Sender<WorkerMsg>,
    pub(crate) wake: Arc<EventFd>,
    /// Set while that worker waits (or is about to): only then does a packet mirrored to it
    /// need a wake-up.
    pub(crate) parked: Arc<AtomicBool>,
}

/// Everything a worker owns besides its backend.
pub(crate) struct WorkerCore {
    pub(crate) index: usize,
    pub(crate) fwd: Forwarder,
    /// Indexed by `SocketRef::token()`.
    pub(crate) sockets: Vec<Option<UdpSocket>>,
    pub(crate) wake: Arc<EventFd>,
    /// See `Config::batch_wait`.
    pub(crate) batch_wait: std::time::Duration,
    /// Port steering, where `Config::steer` asked for it and the kernel allowed it.
    pub(crate) steering: Option<Arc<Steering>>,
    /// The raw socket that sends for every leg, where `Config::raw_send` asked for it and the
    /// kernel allowed it.
    pub(crate) raw: Option<RawSender>,
    /// Indexed like `sockets`: the address a socket's datagrams are sent raw from, where they
    /// can be (`rawsend::raw_source`).
    sources: Vec<Option<SocketAddr>>,
    msgs: Receiver<WorkerMsg>,
    events: Sender<Event>,
    lost_events: Arc<AtomicU64>,
    /// Time spent waiting for work (`sluice_worker_busy_ratio`).
    pub(crate) load: Arc<WorkerLoad>,
    /// Indexed by worker (`None` for this one): where peer messages and wake-ups go.
    peers: Vec<Option<PeerLink>>,
    /// Rings from the other workers: their publishers' packets for listeners here.
    inbound: Vec<Consumer>,
    /// This worker's side of `PeerLink::parked`.
    parked: Arc<AtomicBool>,
}

impl WorkerCore {
    pub(crate) fn new(
        index: usize,
        wake: Arc<EventFd>,
        msgs: Receiver<WorkerMsg>,
        events: Sender<Event>,
        lost_events: Arc<AtomicU64>,
        load: Arc<WorkerLoad>,
    ) -> Self {
        WorkerCore {
            index,
            fwd: Forwarder::new(),
            sockets: Vec::new(),
            wake,
            batch_wait: std::time::Duration::ZERO,
            steering: None,
            raw: None,
            sources: Vec::new(),
            msgs,
            events,
            lost_events,
            load,
            peers: Vec::new(),
            inbound: Vec::new(),
            parked: Arc::default(),
        }
    }

    /// The other workers (indexed by worker, `None` for this one) and the rings between
    /// them and this one: `outbound` to each, `inbound` from each.
    pub(crate) fn connect_peers(
        &mut self,
        peers: Vec<Option<PeerLink>>,
        outbound: Vec<Option<crate::mirror::Producer>>,
        inbound: Vec<Consumer>,
        parked: Arc<AtomicBool>,
    ) {
        self.fwd.set_peers(self.index, outbound);
        self.peers = peers;
        self.inbound = inbound;
        self.parked = parked;
    }

    /// The driver is about to wait: `true` when it may block (other workers will wake it for
    /// what they mirror here from now on), `false` when mirrored packets are already waiting.
    /// Pairs with the producers' check in `notify_peers`: each side stores, fences, then
    /// loads the other's, so one of them sees the other (no lost wake-up).
    pub(crate) fn park(&mut self) -> bool {
        if self.inbound.is_empty() {
            return true;
        }
        self.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.inbound.iter_mut().all(Consumer::is_empty) {
            return true;
        }
        self.parked.store(false, Ordering::Relaxed);
        false
    }

    /// The wait is over: producers need not wake this worker until it parks again.
    pub(crate) fn unpark(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }

    /// Forwards what other workers' publishers mirrored to listeners here, as far as `tx`
    /// has room for each packet's fanout (see [`Mirrors`]).
    pub(crate) fn forward_mirrored(&mut self, tx: &mut TxBatch) -> Mirrors {
        if self.inbound.iter_mut().all(Consumer::is_empty) {
            return Mirrors::Done;
        }
        // A command posted before a packet was mirrored (a listener connected, held for a
        // keyframe) applies before the packet is fanned out.
        if self.has_msgs() {
            return Mirrors::Commands;
        }
        // This round's clock: the forwarder's may date from before a long wait, and its
        // caches and coalescing keep time with it.
        self.fwd.set_now(std::time::Instant::now());
        for ring in &mut self.inbound {
            while let Some(m) = ring.peek() {
                // A shadow gone since (its last listener here left): the packet goes too.
                if let Some(slot) = self.fwd.shadow_slot(m.leg) {
                    if tx.remaining() < self.fwd.fanout(slot) && !tx.is_empty() {
                        return Mirrors::Flush;
                    }
                    self.fwd.handle_mirrored(slot, m, tx);
                }
                ring.advance();
            }
        }
        Mirrors::Done
    }

    /// Wakes the workers this one mirrored packets to, and hands them the forwarder's
    /// messages; never blocks (a full queue loses the message, logged).
    pub(crate) fn notify_peers(&mut self) {
        while let Some((w, msg)) = self.fwd.poll_peer_msg() {
            let Some(Some(link)) = self.peers.get(w) else {
                continue;
            };
            match link.msgs.try_send(WorkerMsg::Peer(msg)) {
                Ok(()) => link.wake.wake(),
                Err(e) => tracing::warn!(worker = self.index, to = w, "peer message lost: {e}"),
            }
        }
        if self.fwd.mirrored_any() {
            // The packets are in the rings (released); a worker that parked before seeing
            // them needs a wake-up, one that is awake drains them at the end of its round.
            fence(Ordering::SeqCst);
            for (w, link) in self.peers.iter().enumerate() {
                if let Some(link) = link
                    && self.fwd.take_mirrored(w)
                    && link.parked.load(Ordering::Relaxed)
                {
                    link.wake.wake();
                }
            }
            self.fwd.clear_mirrored();
        }
    }

    /// How a datagram of `len` bytes that socket `token` would send to `dest` leaves raw
    /// instead, where it can.
    #[inline]
    pub(crate) fn raw_route(
        &self,
        token: usize,
        dest: &SocketAddr,
        len: usize,
    ) -> Option<RawRoute> {
        let source = self.sources.get(token).copied().flatten();
        self.raw.as_ref()?.route(source, dest, len)
    }

    fn take_socket(&mut self, token: usize) -> Option<UdpSocket> {
        if let Some(source) = self.sources.get_mut(token) {
            *source = None;
        }
        self.sockets.get_mut(token).and_then(Option::take)
    }

    pub(crate) fn fd(&self, token: usize) -> Option<RawFd> {
        self.sockets
            .get(token)
            .and_then(Option::as_ref)
            .map(AsRawFd::as_raw_fd)
    }

    /// Whether control queued commands not applied yet (one atomic load).
    pub(crate) fn has_msgs(&self) -> bool {
        !self.msgs.is_empty()
    }

    /// Applies every queued command; socket changes are appended to `changes`, slow-path
    /// datagrams to `tx`.
    pub(crate) fn apply_msgs(&mut self, changes: &mut Vec<Change>, tx: &mut TxBatch) -> Flow {
        while let Ok(msg) = self.msgs.try_recv() {
            match msg {
                WorkerMsg::AddLeg {
                    id,
                    kind,
                    remote,
                    secure,
                    bundle,
                    stats,
                    rtp,
                    rtcp,
                } => {
                    let slot = self.fwd.add_leg(id, kind, remote, stats);
                    self.fwd.set_transport(slot, secure, &bundle);
                    for (rtcp_flag, socket) in [(false, Some(rtp)), (true, rtcp)] {
                        let Some(socket) = socket else { continue };
                        let token = SocketRef {
                            slot,
                            rtcp: rtcp_flag,
                        }
                        .token();
                        if self.sockets.len() <= token {
                            self.sockets.resize_with(token + 1, || None);
                            self.sources.resize(token + 1, None);
                        }
                        let local = socket.local_addr().ok();
                        changes.push(Change::Added {
                            token,
                            fd: socket.as_raw_fd(),
                            port: local.map_or(0, |a| a.port()),
                        });
                        self.sockets[token] = Some(socket);
                        self.sources[token] = local.and_then(raw_source);
                    }
                }
                WorkerMsg::RemoveLeg { id, done } => {
                    let Some(slot) = self.fwd.remove_leg(id) else {
                        drop(done);
                        continue;
                    };
                    let first = changes.len();
                    for rtcp in [false, true] {
                        let token = SocketRef { slot, rtcp }.token();
                        if let Some(socket) = self.take_socket(token) {
                            changes.push(Change::Removed {
                                token,
                                socket,
                                done: None,
                            });
                        }
                    }
                    // Finish once, with the leg's last socket.
                    match changes[first..].last_mut() {
                        Some(Change::Removed { done: last, .. }) => *last = Some(done),
                        _ => drop(done),
                    }
                }
                WorkerMsg::Cmd(cmd) => {
                    // The peer multiplexes RTCP now (it answered our offer with rtcp-mux):
                    // the leg's RTCP socket goes, and everything travels on the RTP port.
                    if let Command::SetRemote { leg, remote } = &cmd
                        && remote.rtcp_mux
                        && let Some(slot) = self.fwd.slot(*leg)
                    {
                        let token = SocketRef { slot, rtcp: true }.token();
                        if let Some(socket) = self.take_socket(token) {
                            changes.push(Change::Removed {
                                token,
                                socket,
                                done: None,
                            });
                        }
                    }
                    if let Err(e) = self.fwd.handle_command(cmd, tx) {
                        tracing::debug!(worker = self.index, "command ignored: {e}");
                    }
                }
                WorkerMsg::ConnectRemote { cmd, source } => {
                    if let Err(e) = self.fwd.connect_remote(cmd, source, tx) {
                        tracing::debug!(worker = self.index, "command ignored: {e}");
                    }
                }
                WorkerMsg::Peer(msg) => self.fwd.handle_peer(msg, tx),
                WorkerMsg::Stall(until) => {
                    // Err once the guard is dropped: that is the signal.
                    let _ = until.recv();
                }
                WorkerMsg::Shutdown => return Flow::Shutdown,
            }
        }
        Flow::Continue
    }

    /// Starts a round over the datagrams a driver has in hand, in order (`ahead`), which
    /// arrived by `now` (the driver's one clock read for them), with the first stages of the
    /// prefetch pipeline.
    #[inline]
    pub(crate) fn begin_round(&mut self, ahead: &[Upcoming], now: std::time::Instant) {
        self.fwd.set_now(now);
        for i in -(PREFETCH_DEPTH as isize)..0 {
            self.fwd.prefetch_ahead(ahead, i);
        }
    }

    /// Entry `i` of the round is next: the pipeline moves on for those behind it.
    #[inline]
    pub(crate) fn next_in_round(&self, ahead: &[Upcoming], i: usize) {
        self.fwd.prefetch_ahead(ahead, i as isize);
    }

    /// Whether `tx` must be flushed before a datagram for `at` is handled: a datagram's
    /// whole fanout goes into one batch.
    #[inline]
    pub(crate) fn needs_room(&self, at: SocketRef, tx: &TxBatch) -> bool {
        tx.remaining() < self.fwd.fanout(at.slot)
    }

    /// The step both drivers share for one received datagram (after `needs_room`):
    /// forwarded, or counted as the drop it is.
    #[inline]
    pub(crate) fn forward(&mut self, at: SocketRef, rx: Received<'_>, tx: &mut TxBatch) {
        match rx {
            Received::Datagram { src, data } => {
                self.fwd.handle_datagram(at, src, data, tx);
                // Listeners on other workers start on it while this one fans out the rest.
                if self.fwd.mirrored_any() {
                    self.notify_peers();
                }
            }
            Received::Truncated => self.fwd.count_drop(at.slot, DropReason::Truncated),
            Received::Malformed => self.fwd.count_drop(at.slot, DropReason::Malformed),
        }
    }

    /// The forwarder's own work (reports, REMB, the silence and slow-link checks), once a
    /// round after the datagrams: does what is due and returns when the driver should wake
    /// for the next, whether or not anything arrives.
    pub(crate) fn handle_timers(&mut self, tx: &mut TxBatch) -> Option<std::time::Instant> {
        let now = std::time::Instant::now();
        self.fwd.set_now(now);
        if self.fwd.poll_timeout().is_some_and(|t| t <= now) {
            self.fwd
                .handle_timeout(now, std::time::SystemTime::now(), tx);
        }
        self.fwd.poll_timeout()
    }

    /// Hands the forwarder's events to control without ever blocking the worker.
    pub(crate) fn flush_events(&mut self) {
        self.notify_peers();
        while let Some(ev) = self.fwd.poll_event() {
            match self.events.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.lost_events.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
