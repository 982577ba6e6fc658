//! Sluice's control plane: the NkMedia-compatible JSON session API over WebSocket, SDP
//! offer/answer, sessions and rooms.
//!
//! Model: [`spawn`] starts the data plane, then a tokio runtime on its own thread that runs
//! the WebSocket edge ([`ws`]) and one session-manager actor ([`manager`]). The edge parses
//! frames into typed [`request::Request`]s and sends them to the actor; the actor owns every
//! session, room and event subscription, drives the data plane only through
//! `sluice_dataplane::api` (open legs, connect them, read their counters) and pushes events
//! back into the connections' bounded outboxes. Media never passes through this crate.
//!
//! Transports: every leg has a [`manager::session::Transport`]: plain RTP (a port pair per
//! m-line) or WebRTC (one bundled, secure data-plane leg per session, whose ICE-lite agent and
//! DTLS-SRTP endpoint run on the actor's slow path: `Event::SlowPath` in, `Command::Transmit` /
//! `SetRemote` / `SetSrtp` out; see `webrtc::transport`).
//!
//! Operations ([`ops`]): `/health`, `/ready` and `/metrics` on the API listener; admission
//! (`--max-sessions`, refused while draining) in the actor; a drain (SIGTERM with
//! `--drain-timeout`, or the `media/node/drain` command) is supervised by the control thread:
//! it stops the node once the actor reports no session left, or at the deadline.
//!
//! Doors: one constant-time check of the API secret for every door ([`auth`]); per connection,
//! a request rate, a frame size, failed logins and a login deadline ([`limits`], enforced by
//! [`ws`]); `--max-bitrate` beside `--max-sessions` in the actor.

pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod errors;
pub mod limits;
pub mod manager;
pub mod metrics;
pub mod ops;
pub mod recordings;
pub mod request;
pub mod sdp;
pub mod webrtc;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_dataplane::Dataplane;
use sluice_dataplane::api::Backend;
use tokio::sync::{mpsc, oneshot};

pub use config::Config;
use manager::{Manager, Msg};
use ops::{NodeState, Ops};

/// Depth of the manager's inbox.
const MANAGER_INBOX: usize = 4096;
/// How long shutdown waits for connections to flush their last events.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data plane: {0}")]
    Dataplane(#[from] sluice_dataplane::api::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the control runtime: {0}")]
    Runtime(std::io::Error),
}

/// A running server. Dropping it shuts it down like [`Running::shutdown`].
pub struct Running {
    /// The bound API address (the real port when the config asked for port 0).
    pub api_addr: SocketAddr,
    pub backend: Backend,
    pub workers: usize,
    config: Config,
    dp: Dataplane,
    ops: Arc<Ops>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the data plane and the API; returns once the API listener is bound.
pub fn spawn(config: Config) -> Result<Running, StartError> {
    let (dp, dp_events) = Dataplane::start(sluice_dataplane::api::Config {
        media_ip: config.media_ip,
        port_lo: config.rtp_ports.0,
        port_hi: config.rtp_ports.1,
        workers: config.workers,
        io: config.io,
        pin: config.pin_workers,
        batch_wait: config.batch_wait,
        steer: config.steer,
        raw_send: config.raw_send,
    })?;
    let ops = Arc::new(Ops::new(config.drain_timeout));
    let started = start_api(&config, dp.clone(), dp_events, Arc::clone(&ops));
    let (api_addr, stop, thread) = match started {
        Ok(v) => v,
        Err(e) => {
            dp.shutdown();
            return Err(e);
        }
    };
    Ok(Running {
        api_addr,
        backend: dp.backend(),
        workers: dp.workers(),
        config,
        dp,
        ops,
        stop: Some(stop),
        thread: Some(thread),
    })
}

type Started = (SocketAddr, oneshot::Sender<()>, JoinHandle<()>);

fn start_api(
    config: &Config,
    dp: Dataplane,
    dp_events: crossbeam_channel::Receiver<sluice_dataplane::api::Event>,
    ops: Arc<Ops>,
) -> Result<Started, StartError> {
    let bind_err = |source| StartError::Bind {
        addr: config.api,
        source,
    };
    let listener = std::net::TcpListener::bind(config.api).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let api_addr = listener.local_addr().map_err(bind_err)?;
    // One worker: the session manager is one actor, so a second thread mostly added a
    // cross-thread wake-up to every hop between a connection and the actor (churn: 4.7k →
    // 5.3k create+destroy/s, 211 → 182 µs CPU per pair). Multi-threaded all the same, for
    // the blocking pool (recordings' file work).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sluice-control")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;

    let (inbox_tx, inbox_rx) = mpsc::channel(MANAGER_INBOX);
    let forward = inbox_tx.clone();
    std::thread::Builder::new()
        .name("sluice-dp-events".into())
        .spawn(move || {
            // Ends when the workers are gone (all senders dropped) or the manager stopped.
            for ev in dp_events.iter() {
                if forward.blocking_send(Msg::Dataplane(ev)).is_err() {
                    break;
                }
            }
        })
        .map_err(StartError::Runtime)?;

    let index = Arc::new(recordings::RecordIndex::new(config.record_dir.clone()));
    let (link, cluster) = match &config.cluster {
        Some(url) => {
            let (link, pending) = cluster::channel(cluster::ClusterConfig {
                url: url.clone(),
                node_id: config.node_id.clone(),
                ttl: config.cluster_ttl,
                relay_srtp: config.cluster_relay_srtp,
            });
            let announce = (
                format!("ws://{api_addr}/api/ws"),
                config.announced_ip().to_string(),
            );
            (Some(link), Some((pending, announce)))
        }
        None => (None, None),
    };
    let manager = Manager::new(dp, config.announced_ip(), config.disconnect_grace)
        .with_recordings(Arc::clone(&index))
        .with_operations(Arc::clone(&ops), config.max_sessions)
        .with_max_bitrate(config.max_bitrate)
        .with_data_limits(config.data_limits)
        .with_cluster(link);
    let secret: Option<Arc<str>> = config.api_secret.as_deref().map(Arc::from);
    let http = recordings::HttpState {
        index,
        secret: secret.clone(),
    };
    let ops_http = ops::OpsHttp {
        ops: Arc::clone(&ops),
        manager: inbox_tx.clone(),
        secret: secret.clone(),
    };
    let (alive_tx, alive_rx) = mpsc::channel::<()>(1);
    let actor = Actor {
        manager,
        inbox_rx,
        inbox: inbox_tx.clone(),
        cluster,
    };
    let state = ws::ApiState {
        manager: inbox_tx,
        secret,
        next_conn: Arc::new(AtomicU64::new(1)),
        alive: alive_tx,
        ops: Arc::clone(&ops),
        limits: ws::Limits::from_config(config),
    };
    let app = ws::router(state)
        .merge(recordings::router(http))
        .merge(ops::router(ops_http))
        .merge(demo::router());
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("sluice-control".into())
        .spawn(move || {
            runtime.block_on(serve(listener, app, actor, ops, alive_rx, stop_rx));
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(StartError::Runtime)?;
    Ok((api_addr, stop_tx, thread))
}

/// The session manager, its inbox, and a way to reach it; the cluster engine to start beside
/// it (`--cluster`) with the addresses the node announces.
struct Actor {
    manager: Manager,
    inbox_rx: mpsc::Receiver<Msg>,
    inbox: mpsc::Sender<Msg>,
    cluster: Option<(cluster::Pending, (String, String))>,
}

async fn serve(
    listener: std::net::TcpListener,
    app: axum::Router,
    actor: Actor,
    ops: Arc<Ops>,
    mut alive_rx: mpsc::Receiver<()>,
    mut stop_rx: oneshot::Receiver<()>,
) {
    let inbox = actor.inbox;
    let manager_task = tokio::spawn(actor.manager.run(actor.inbox_rx));
    if let Some((pending, (api, media))) = actor.cluster {
        pending.spawn(inbox.clone(), Arc::clone(&ops), api, media);
    }
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("api listener: {e}");
            return;
        }
    };
    let (halt_tx, halt_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async {
            let _ = halt_rx.await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("api server: {e}");
        }
    });
    // Running::shutdown (or its drop) fires `stop_rx`; a drain ends on its own.
    let why = until_stop(&inbox, &ops, &mut stop_rx).await;
    tracing::info!("shutting down ({why}): destroying sessions");
    let (done_tx, done_rx) = oneshot::channel();
    if inbox.send(Msg::Shutdown { done: done_tx }).await.is_ok() {
        let _ = done_rx.await;
    }
    let _ = manager_task.await;
    // Stop accepting; the router (and its copy of the state) goes away with the server.
    let _ = halt_tx.send(());
    let _ = tokio::time::timeout(FLUSH_WAIT, server).await;
    // Connections hold `alive` senders; recv returns None once every one has flushed its last
    // events and closed.
    let _ = tokio::time::timeout(FLUSH_WAIT, alive_rx.recv()).await;
    ops.set_stopped();
    tracing::debug!("api stopped");
}

/// Waits until the node must stop: a stop request ([`Running::shutdown`], its drop), or the
/// end of a drain (no session left, or its deadline). Says which.
async fn until_stop(
    inbox: &mpsc::Sender<Msg>,
    ops: &Ops,
    stop_rx: &mut oneshot::Receiver<()>,
) -> &'static str {
    let mut state_rx = ops.subscribe();
    let deadline = tokio::select! {
        _ = &mut *stop_rx => return "stop requested",
        d = drain_begins(&mut state_rx) => d,
    };
    tracing::info!(
        timeout_s = deadline.map(|d| d.as_secs_f64()),
        "draining: /ready is 503, new sessions are refused, live ones go on"
    );
    let (idle_tx, idle_rx) = oneshot::channel();
    if inbox.send(Msg::WhenIdle { reply: idle_tx }).await.is_err() {
        return "session manager gone";
    }
    let timeout = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = idle_rx => "drained: the last session ended",
        _ = timeout => "drain timeout",
        _ = stop_rx => "stop requested while draining",
    }
}

/// Resolves with the deadline of a drain once one begins.
async fn drain_begins(state_rx: &mut tokio::sync::watch::Receiver<NodeState>) -> Option<Duration> {
    loop {
        if let NodeState::Draining { deadline } = *state_rx.borrow_and_update() {
            return deadline;
        }
        if state_rx.changed().await.is_err() {
            // The sender lives in `Ops`, which the caller holds: never happens.
            return std::future::pending().await;
        }
    }
}

impl Running {
    /// `sluice ready api=ws://ADDR/api/ws media=IP:LO-HI io=uring|mmsg workers=N`
    /// (plus ` node=ID` in a cluster).
    pub fn ready_line(&self) -> String {
        let mut line = format!(
            "sluice ready api=ws://{}/api/ws media={}:{}-{} io={} workers={}",
            self.api_addr,
            self.config.media_ip,
            self.config.rtp_ports.0,
            self.config.rtp_ports.1,
            self.backend.as_str(),
            self.workers
        );
        if self.config.cluster.is_some() {
            line.push_str(" node=");
            line.push_str(&self.config.node_id);
        }
        line
    }

    /// Starts a graceful drain with the configured `--drain-timeout` (as SIGTERM does): `/ready`
    /// turns 503, `create` is refused, and the node stops by itself once its last session
    /// ends or the timeout passes ([`Running::stopped`]). False when it was already draining.
    pub fn drain(&self) -> bool {
        self.ops.start_drain(None)
    }

    /// True once a drain has begun (by [`Running::drain`] or the `media/node/drain` command).
    pub fn is_draining(&self) -> bool {
        self.ops.is_draining()
    }

    /// Resolves once the node has stopped by itself (the end of a drain). Any runtime.
    pub async fn stopped(&self) {
        self.ops.stopped().await;
    }

    /// Destroys every session (`destroyed` events with reason `process_down`), closes the API
    /// connections, stops the data-plane workers and joins every thread.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("control thread panicked");
            }
            self.dp.shutdown();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_all();
    }
}
