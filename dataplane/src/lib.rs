//! Sluice's data plane: pinned worker threads that own their sockets and forwarding tables.
//!
//! Model: `control` opens *legs* (a UDP port pair for one media stream), connects them and reads
//! their counters, all through [`api`] and the [`Dataplane`] handle. Each leg belongs to one
//! worker, chosen from its [`api::GroupId`], so legs that forward to each other share a thread
//! and every forwarding decision is made without locks. A worker runs a sans-IO
//! [`forwarder::Forwarder`] under an I/O driver: io_uring (multishot recvmsg over a provided
//! buffer ring, batched sendmsg) or recvmmsg/sendmmsg over epoll where io_uring is unavailable.
//! Commands reach a worker over a bounded queue plus an eventfd wake-up; events come back over
//! a bounded queue that never blocks the worker.

pub mod api;
pub mod batch;
pub mod egress;
pub mod forwarder;
#[doc(hidden)]
pub mod fuzzing;
pub mod keyframe;
pub mod mirror;
mod mmsg;
pub mod packet;
mod ports;
mod rawsend;
pub mod record;
mod rtcp;
pub mod srtp;
mod steer;
mod sys;
mod uring;
mod worker;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::api::{
    Backend, Command, Config, DataSink, Error, Event, IoMode, LegId, LegInfo, LegSpec, LegStats,
    RecordSink, RecordSpec, Recording, WorkerLoad,
};
use crate::forwarder::PeerMsg;
use crate::ports::PortPool;
use crate::record::Recorder;
use crate::sys::EventFd;
use crate::worker::{LegClosed, PeerLink, WorkerCore, WorkerMsg};

/// Depth of each worker's command queue.
const COMMAND_QUEUE: usize = 4096;
/// Depth of the shared event queue back to control; overflow is counted, never waited for.
const EVENT_QUEUE: usize = 65536;
/// How long `close_leg` waits for the worker to release the sockets.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

struct WorkerLink {
    msgs: Sender<WorkerMsg>,
    wake: Arc<EventFd>,
}

struct Shared {
    workers: Vec<WorkerLink>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Shared with the workers: a leg's ports go back when its worker has closed them.
    ports: Arc<Mutex<PortPool>>,
    /// Per open leg: its port pair, and its counters (a shadow on another worker counts
    /// into them).
    leg_ports: Mutex<HashMap<LegId, (u16, Arc<LegStats>)>>,
    media_ip: IpAddr,
    backend: Backend,
    next_seq: AtomicU64,
    lost_events: Arc<AtomicU64>,
    /// Per worker: its busy time.
    loads: Vec<Arc<WorkerLoad>>,
    /// For the `Event::LegClosed` of closings.
    events: Sender<Event>,
    recorder: Recorder,
    steering: Option<Arc<steer::Steering>>,
    /// One per worker that sends raw (`Config::raw_send`).
    raw_sent: Vec<Arc<rawsend::RawCounter>>,
    /// Per worker: legs open on it (what `spread_group` places by).
    open_legs: Vec<AtomicUsize>,
}

/// Handle to the running data plane. Cheap to clone; all methods are callable from any thread.
#[derive(Clone)]
pub struct Dataplane {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("workers", &self.shared.workers.len())
            .field("backend", &self.shared.backend)
            .finish()
    }
}

impl Dataplane {
    /// Starts the workers. Events from all workers arrive on the returned receiver.
    pub fn start(config: Config) -> Result<(Dataplane, Receiver<Event>), Error> {
        if config.workers == 0 {
            return Err(Error::Config("at least one worker is needed".into()));
        }
        let ports = PortPool::new(config.port_lo, config.port_hi)?;
        if let Err(e) = sys::raise_fd_limit() {
            tracing::warn!("could not raise the open-file limit: {e}");
        }
        let backend = choose_backend(config.io)?;
        let steering = config.steer.then(|| attach_steering(&config)).flatten();
        let recorder = Recorder::start()?;
        let (event_tx, event_rx) = bounded(EVENT_QUEUE);
        let lost_events = Arc::new(AtomicU64::new(0));
        let n = config.workers;
        let mut queues = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        let parked: Vec<Arc<std::sync::atomic::AtomicBool>> =
            (0..n).map(|_| Arc::default()).collect();
        for _ in 0..n {
            let (msg_tx, msg_rx) = bounded(COMMAND_QUEUE);
            let wake = Arc::new(EventFd::new()?);
            workers.push(WorkerLink { msgs: msg_tx, wake });
            queues.push(msg_rx);
        }
        // One ring per ordered pair of workers: a room's publisher on one, listeners on another.
        let mut outbound: Vec<Vec<Option<mirror::Producer>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut inbound: Vec<Vec<mirror::Consumer>> = (0..n).map(|_| Vec::new()).collect();
        for (from, rings) in outbound.iter_mut().enumerate() {
            for (to, ring) in rings.iter_mut().enumerate() {
                if from != to {
                    let (producer, consumer) = mirror::ring(mirror::RING_ENTRIES);
                    *ring = Some(producer);
                    inbound[to].push(consumer);
                }
            }
        }
        let mut threads = Vec::with_capacity(n);
        let mut raw_sent = Vec::new();
        let mut loads = Vec::with_capacity(n);
        for (index, (msg_rx, (out, inb))) in queues
            .into_iter()
            .zip(outbound.into_iter().zip(inbound))
            .enumerate()
        {
            let load = Arc::new(WorkerLoad::new());
            loads.push(Arc::clone(&load));
            let mut core = WorkerCore::new(
                index,
                Arc::clone(&workers[index].wake),
                msg_rx,
                event_tx.clone(),
                Arc::clone(&lost_events),
                load,
            );
            let peers = (0..n)
                .map(|w| {
                    (w != index).then(|| PeerLink {
                        msgs: workers[w].msgs.clone(),
                        wake: Arc::clone(&workers[w].wake),
                        parked: Arc::clone(&parked[w]),
                    })
                })
                .collect();
            core.connect_peers(peers, out, inb, Arc::clone(&parked[index]));
            core.batch_wait = config.batch_wait;
            core.steering = steering.clone();
            if config.raw_send {
                core.raw = open_raw_sender(index);
                raw_sent.extend(core.raw.as_ref().map(rawsend::RawSender::counter));
            }
            let pin = config.pin;
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{index}"))
                .spawn(move || run_worker(core, backend, pin))?;
            threads.push(thread);
        }
        let shared = Shared {
            workers,
            threads: Mutex::new(threads),
            ports: Arc::new(Mutex::new(ports)),
            leg_ports: Mutex::new(HashMap::new()),
            media_ip: config.media_ip,
            backend,
            next_seq: AtomicU64::new(1),
            lost_events,
            loads,
            events: event_tx,
            recorder,
            steering,
            raw_sent,
            open_legs: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        };
        Ok((
            Dataplane {
                shared: Arc::new(shared),
            },
            event_rx,
        ))
    }

    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Datagrams that reached their leg through port steering (`Config::steer`), or `None`
    /// where steering is off or the kernel refused it.
    pub fn steered_datagrams(&self) -> Option<u64> {
        self.shared.steering.as_ref().map(|s| s.steered())
    }

    /// Datagrams the workers' raw sockets were handed (`Config::raw_send`), or `None` where
    /// raw sending is off or the kernel refused it.
    pub fn raw_sent_datagrams(&self) -> Option<u64> {
        let counters = &self.shared.raw_sent;
        (!counters.is_empty()).then(|| counters.iter().map(|c| c.get()).sum())
    }

    /// Per worker, in index order: (time busy, time alive) since it started.
    pub fn worker_busy(&self) -> Vec<(Duration, Duration)> {
        self.shared.loads.iter().map(|l| l.busy()).collect()
    }

    /// A group on the worker with the fewest open legs: where a leg that may live apart
    /// from its peers (a room's publisher or listener) goes. Legs of one room on different
    /// workers still forward to each other: the publisher's worker decrypts once and hands
    /// each packet to the listeners' workers through a ring (`mirror`).
    pub fn spread_group(&self) -> api::GroupId {
        let least = (self.shared.open_legs.iter().enumerate())
            .min_by_key(|(_, n)| n.load(Ordering::Relaxed))
            .map_or(0, |(w, _)| w);
        api::GroupId(least as u64)
    }

    /// Events dropped because control did not drain the queue in time.
    pub fn lost_events(&self) -> u64 {
        self.shared.lost_events.load(Ordering::Relaxed)
    }

    /// Binds an RTP/RTCP port pair and hands it to the group's worker. Where the remote
    /// already multiplexes RTCP (`spec.remote.rtcp_mux`: an answer to a muxing offer, every
    /// WebRTC leg) only the RTP socket is bound; the RTCP port stays reserved.
    pub fn open_leg(&self, spec: LegSpec) -> Result<LegInfo, Error> {
        let worker = (spec.group.0 % self.shared.workers.len() as u64) as usize;
        let (port, rtp, rtcp) =
            lock(&self.shared.ports).bind(self.shared.media_ip, !spec.remote.rtcp_mux)?;
        let id = LegId::new(worker, self.shared.next_seq.fetch_add(1, Ordering::Relaxed));
        let stats = Arc::new(LegStats::default());
        let msg = WorkerMsg::AddLeg {
            id,
            kind: spec.kind,
            remote: spec.remote,
            secure: spec.secure,
            bundle: spec.bundle,
            stats: Arc::clone(&stats),
            rtp,
            rtcp,
        };
        if let Err(e) = self.post(worker, msg) {
            lock(&self.shared.ports).release(port);
            return Err(e);
        }
        lock(&self.shared.leg_ports).insert(id, (port, Arc::clone(&stats)));
        self.shared.open_legs[worker].fetch_add(1, Ordering::Relaxed);
        Ok(LegInfo {
            id,
            local_ip: self.shared.media_ip,
            rtp_port: port,
            rtcp_port: port + 1,
            stats,
        })
    }

    /// Sends a command to the worker owning the leg(s) it names.
    pub fn send(&self, cmd: Command) -> Result<(), Error> {
        let worker = match &cmd {
            Command::SetRemote { leg, .. }
            | Command::SetMute { leg, .. }
            | Command::SetSrtp { leg, .. }
            | Command::RequestKeyframe { leg, .. }
            | Command::SetBitrate { leg, .. }
            | Command::SetFeedback { leg, .. }
            | Command::Transmit { leg, .. }
            | Command::Record { leg, .. } => leg.worker(),
            Command::Disconnect { to } | Command::HoldForKeyframe { to, .. } => to.worker(),
            // A source on another worker feeds `to` through a shadow on `to`'s, which
            // counts into the source's counters.
            Command::Connect { from, to, kind, .. } if from.worker() != to.worker() => {
                let source = lock(&self.shared.leg_ports)
                    .get(from)
                    .map(|(_, stats)| Arc::clone(stats))
                    .ok_or(Error::UnknownLeg(*from))?;
                // The source's worker counts the listener first: whatever it receives once
                // this returns is mirrored (the listener's worker takes the count back if the
                // command adds no listener).
                let add = PeerMsg::MirrorAdd {
                    leg: *from,
                    k: kind.index() as u8,
                    worker: to.worker() as u16,
                };
                self.post(from.worker(), WorkerMsg::Peer(add))?;
                let (leg, k, worker) = (*from, kind.index() as u8, to.worker() as u16);
                return self
                    .post(to.worker(), WorkerMsg::ConnectRemote { cmd, source })
                    .inspect_err(|_| {
                        let sub = PeerMsg::MirrorSub { leg, k, worker };
                        let _ = self.post(leg.worker(), WorkerMsg::Peer(sub));
                    });
            }
            Command::Connect { to, .. } => to.worker(),
        };
        self.post(worker, WorkerMsg::Cmd(cmd))
    }

    /// Closes the leg's sockets and returns its ports to the pool without waiting: the
    /// worker closes them in its next round, then the ports are free and
    /// [`Event::LegClosed`] says so. What a caller that must never block (control's actor)
    /// uses.
    pub fn start_close(&self, leg: LegId) -> Result<(), Error> {
        self.post_close(leg, None)
    }

    /// [`Dataplane::start_close`], then blocks (briefly, at most a couple of seconds) until
    /// the worker has let go of the sockets, so the ports are reusable when this returns.
    pub fn close_leg(&self, leg: LegId) -> Result<(), Error> {
        let (done_tx, done_rx) = bounded(1);
        self.post_close(leg, Some(done_tx))?;
        if done_rx.recv_timeout(CLOSE_WAIT).is_err() {
            tracing::warn!(?leg, "worker did not confirm closing the leg in time");
        }
        Ok(())
    }

    fn post_close(&self, leg: LegId, waiter: Option<Sender<()>>) -> Result<(), Error> {
        let Some((port, _)) = lock(&self.shared.leg_ports).remove(&leg) else {
            return Err(Error::UnknownLeg(leg));
        };
        if let Some(n) = self.shared.open_legs.get(leg.worker()) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
        let done = LegClosed {
            leg,
            port: Some(port),
            ports: Arc::clone(&self.shared.ports),
            waiter,
            events: self.shared.events.clone(),
            lost_events: Arc::clone(&self.shared.lost_events),
        };
        match self.try_post(leg.worker(), WorkerMsg::RemoveLeg { id: leg, done }) {
            Ok(()) => Ok(()),
            Err(failed) => {
                // A worker that is gone dropped its sockets (the closing finishes as the
                // message drops); one whose queue is full still holds them.
                let (e, msg) = *failed;
                if let (Error::QueueFull(_), WorkerMsg::RemoveLeg { done, .. }) = (&e, msg) {
                    done.disarm();
                }
                Err(e)
            }
        }
    }

    /// Makes a worker stop handling anything (commands, datagrams) until the returned guard
    /// is dropped: how tests show what a slow or stuck worker does to its callers.
    #[doc(hidden)]
    pub fn stall_worker(&self, worker: usize) -> Result<StallGuard, Error> {
        let (guard, until) = bounded(0);
        self.post(worker, WorkerMsg::Stall(until))?;
        Ok(StallGuard(guard))
    }

    /// Creates the file of a new recording (`NAME.mjr.tmp` in `spec.dir`) and returns its sink,
    /// for `Command::Record`, and its handle. Fails if the file exists or cannot be created.
    pub fn open_recording(&self, spec: RecordSpec) -> Result<(RecordSink, Recording), Error> {
        self.shared.recorder.open(spec)
    }

    /// Creates the file of a new data-channel recording (`NAME.mjr.tmp` in `dir`, Janus's
    /// data format) and returns its sink, to which control hands each message, and its
    /// handle. Fails if the file exists or cannot be created.
    pub fn open_data_recording(
        &self,
        dir: &std::path::Path,
        name: &str,
    ) -> Result<(DataSink, Recording), Error> {
        self.shared.recorder.open_data(dir, name)
    }

    /// Stops every worker and waits for them, then finishes every recording.
    pub fn shutdown(&self) {
        for link in &self.shared.workers {
            // Stopping may wait (briefly) for room in a busy worker's queue.
            if link
                .msgs
                .send_timeout(WorkerMsg::Shutdown, CLOSE_WAIT)
                .is_ok()
            {
                link.wake.wake();
            }
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
        // The workers, and the sinks on their legs, are gone: the writer finishes the files.
        self.shared.recorder.shutdown();
    }

    /// Queues a message for a worker without ever blocking: a full queue (a worker stalled
    /// for thousands of commands) is an error the caller reports, not a wait.
    fn post(&self, worker: usize, msg: WorkerMsg) -> Result<(), Error> {
        self.try_post(worker, msg).map_err(|failed| failed.0)
    }

    /// `post`, giving back the message it could not queue.
    fn try_post(&self, worker: usize, msg: WorkerMsg) -> Result<(), Box<(Error, WorkerMsg)>> {
        let Some(link) = self.shared.workers.get(worker) else {
            return Err(Box::new((Error::WorkerGone(worker), msg)));
        };
        match link.msgs.try_send(msg) {
            Ok(()) => {
                link.wake.wake();
                Ok(())
            }
            Err(TrySendError::Full(msg)) => Err(Box::new((Error::QueueFull(worker), msg))),
            Err(TrySendError::Disconnected(msg)) => Err(Box::new((Error::WorkerGone(worker), msg))),
        }
    }
}

/// While it lives, a worker stalls (`Dataplane::stall_worker`).
#[doc(hidden)]
#[derive(Debug)]
pub struct StallGuard(#[allow(dead_code)] Sender<()>);

/// Control-side bookkeeping locks are never held across a blocking call; a poisoned one
/// still holds consistent data (every critical section is a single insert or pop).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Probes io_uring on a short-lived thread, so that no task work or signal from the probe ring
/// can ever reach the caller's thread.
fn probe_uring() -> Result<(), String> {
    std::thread::Builder::new()
        .name("sluice-uring-probe".into())
        .spawn(uring::probe)
        .map_err(|e| format!("cannot start the probe thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
}

fn choose_backend(io: IoMode) -> Result<Backend, Error> {
    match io {
        IoMode::Mmsg => Ok(Backend::Mmsg),
        IoMode::Uring => probe_uring()
            .map(|()| Backend::Uring)
            .map_err(|why| Error::Config(format!("io_uring unavailable: {why}"))),
        IoMode::Auto => match probe_uring() {
            Ok(()) => Ok(Backend::Uring),
            Err(why) => {
                tracing::warn!("io_uring unavailable ({why}); using recvmmsg/sendmmsg");
                Ok(Backend::Mmsg)
            }
        },
    }
}

/// Worker `index`'s raw sending socket where the kernel allows it; `None`, and a log line
/// saying why, where not.
fn open_raw_sender(index: usize) -> Option<rawsend::RawSender> {
    match rawsend::RawSender::open() {
        Ok(raw) => {
            if index == 0 {
                tracing::info!("raw sending on: one sending socket per worker and address family");
            }
            Some(raw)
        }
        Err(e) => {
            if index == 0 {
                tracing::info!("raw sending unavailable ({e}): legs send from their own sockets");
            }
            None
        }
    }
}

/// Port steering where the kernel allows it; `None`, and a log line saying why, where not.
fn attach_steering(config: &Config) -> Option<Arc<steer::Steering>> {
    let range = (config.port_lo, config.port_hi);
    match steer::Steering::attach(config.media_ip, range, config.workers) {
        Ok(s) => {
            tracing::info!("port steering on: one receive socket per worker");
            Some(Arc::new(s))
        }
        Err(e) => {
            tracing::info!("port steering unavailable ({e}): one receive per leg socket");
            None
        }
    }
}

fn run_worker(core: WorkerCore, backend: Backend, pin: bool) {
    if pin && let Err(e) = sys::pin_to_cpu(core.index) {
        tracing::warn!(worker = core.index, "could not pin worker: {e}");
    }
    let index = core.index;
    let result = match backend {
        Backend::Uring => uring::run(core),
        Backend::Mmsg => mmsg::run(core),
    };
    if let Err(e) = result {
        tracing::error!(worker = index, "worker stopped: {e}");
    }
}
