//! What every worker has whatever its I/O backend: the forwarding core, the sockets it owns,
//! the command queue from control and the event queue back.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::api::{Command, Event, LegId, LegStats, MediaKind, Pt, Remote};
use crate::batch::TxBatch;
use crate::forwarder::{Forwarder, SocketRef};
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
    /// Close the leg's sockets, then signal `done`.
    RemoveLeg {
        id: LegId,
        done: Sender<()>,
    },
    Cmd(Command),
    Shutdown,
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
    /// The backend stops watching `socket`, drops it, then sends on `done`.
    Removed {
        token: usize,
        socket: UdpSocket,
        done: Option<Sender<()>>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Shutdown,
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
}

impl WorkerCore {
    pub(crate) fn new(
        index: usize,
        wake: Arc<EventFd>,
        msgs: Receiver<WorkerMsg>,
        events: Sender<Event>,
        lost_events: Arc<AtomicU64>,
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
                        let _ = done.send(());
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
                    // Signal once, with the leg's last socket.
                    match changes[first..].last_mut() {
                        Some(Change::Removed { done: last, .. }) => *last = Some(done),
                        _ => {
                            let _ = done.send(());
                        }
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
                WorkerMsg::Shutdown => return Flow::Shutdown,
            }
        }
        Flow::Continue
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
        while let Some(ev) = self.fwd.poll_event() {
            match self.events.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.lost_events
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}
