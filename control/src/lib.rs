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

pub mod cli;
pub mod config;
pub mod demo;
pub mod errors;
pub mod manager;
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
    let started = start_api(&config, dp.clone(), dp_events);
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
        stop: Some(stop),
        thread: Some(thread),
    })
}

type Started = (SocketAddr, oneshot::Sender<()>, JoinHandle<()>);

fn start_api(
    config: &Config,
    dp: Dataplane,
    dp_events: crossbeam_channel::Receiver<sluice_dataplane::api::Event>,
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
    // `block_in_place` and the blocking pool.
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
    let manager = Manager::new(dp, config.announced_ip(), config.disconnect_grace)
        .with_recordings(Arc::clone(&index));
    let http = recordings::HttpState {
        index,
        secret: config.api_secret.as_deref().map(Arc::from),
    };
    let (alive_tx, alive_rx) = mpsc::channel::<()>(1);
    let state = ws::ApiState {
        manager: inbox_tx,
        secret: config.api_secret.as_deref().map(Arc::from),
        next_conn: Arc::new(AtomicU64::new(1)),
        alive: alive_tx,
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("sluice-control".into())
        .spawn(move || {
            runtime.block_on(serve(
                listener, manager, inbox_rx, state, http, alive_rx, stop_rx,
            ));
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(StartError::Runtime)?;
    Ok((api_addr, stop_tx, thread))
}

async fn serve(
    listener: std::net::TcpListener,
    manager: Manager,
    inbox_rx: mpsc::Receiver<Msg>,
    state: ws::ApiState,
    http: recordings::HttpState,
    mut alive_rx: mpsc::Receiver<()>,
    stop_rx: oneshot::Receiver<()>,
) {
    let inbox = state.manager.clone();
    let manager_task = tokio::spawn(manager.run(inbox_rx));
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("api listener: {e}");
            return;
        }
    };
    let app = ws::router(state)
        .merge(recordings::router(http))
        .merge(demo::router());
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
    // Running::shutdown (or its drop) fires this.
    let _ = stop_rx.await;
    tracing::info!("shutting down: destroying sessions");
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
    tracing::debug!("api stopped");
}

impl Running {
    /// `sluice ready api=ws://ADDR/api/ws media=IP:LO-HI io=uring|mmsg workers=N`
    pub fn ready_line(&self) -> String {
        format!(
            "sluice ready api=ws://{}/api/ws media={}:{}-{} io={} workers={}",
            self.api_addr,
            self.config.media_ip,
            self.config.rtp_ports.0,
            self.config.rtp_ports.1,
            self.backend.as_str(),
            self.workers
        )
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
