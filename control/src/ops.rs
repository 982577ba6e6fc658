//! Operations on the API listener: `GET /health`, `GET /ready`, `GET /metrics`, and the node
//! state they report (serving, draining, stopped).
//!
//! - `/health`: 200 while the process serves HTTP at all. Never behind the secret.
//! - `/ready`: 200 while new sessions are accepted; 503 once a drain has begun. Never behind
//!   the secret (load balancers probe it).
//! - `/metrics`: Prometheus text (version 0.0.4). With an API secret it needs
//!   `Authorization: Bearer SECRET`, like `/recordings`. Its values come from one snapshot
//!   message to the session manager (see [`crate::metrics`]): the scrape never locks anything
//!   the actor or the data plane uses.
//!
//! [`Ops`] is the node's state, shared by the session manager (admission: draining refuses
//! `create`; the `media/node/drain` command starts a drain), the HTTP handlers, the drain
//! supervisor in `lib.rs` and [`crate::Running`] (SIGTERM).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth::bearer_ok;
use crate::manager::Msg;
use crate::metrics::ApiCounters;

/// What the node is doing, as `/ready` and the drain supervisor see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Serving,
    /// No new session is accepted; live ones go on until they end or `deadline` passes
    /// (`None`: no deadline).
    Draining {
        deadline: Option<Duration>,
    },
    /// The manager has stopped (after a drain, or a shutdown).
    Stopped,
}

/// The node's state and its API counters, shared (one `Arc`) by everything that serves.
#[derive(Debug)]
pub struct Ops {
    state: watch::Sender<NodeState>,
    /// The configured `--drain-timeout` (what SIGTERM and a `drain` without `timeout` use).
    drain_timeout: Duration,
    pub api: ApiCounters,
    /// The workers' busy times at the previous scrape.
    pub busy: crate::metrics::BusyWindow,
    /// The cluster's numbers (`--cluster`).
    pub cluster: crate::metrics::ClusterCounters,
}

impl Ops {
    pub fn new(drain_timeout: Duration) -> Self {
        Ops {
            state: watch::Sender::new(NodeState::Serving),
            drain_timeout,
            api: ApiCounters::default(),
            busy: Default::default(),
            cluster: Default::default(),
        }
    }

    pub fn state(&self) -> NodeState {
        *self.state.borrow()
    }

    /// True from the start of a drain on: `create` is refused and `/ready` is 503.
    pub fn is_draining(&self) -> bool {
        self.state() != NodeState::Serving
    }

    /// Starts a drain that lasts at most `timeout` (`None`: the configured `--drain-timeout`;
    /// zero there too: no deadline, the node stops when its last session ends). False when
    /// the node was already draining or stopped.
    pub fn start_drain(&self, timeout: Option<Duration>) -> bool {
        let limit = timeout.unwrap_or(self.drain_timeout);
        let deadline = (!limit.is_zero()).then_some(limit);
        self.state.send_if_modified(|s| {
            if *s != NodeState::Serving {
                return false;
            }
            *s = NodeState::Draining { deadline };
            true
        })
    }

    pub(crate) fn set_stopped(&self) {
        self.state.send_replace(NodeState::Stopped);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<NodeState> {
        self.state.subscribe()
    }

    /// Resolves once the node has stopped.
    pub async fn stopped(&self) {
        let mut rx = self.subscribe();
        // The sender lives in `self`, which outlives this future: `wait_for` only returns
        // an error once it is dropped.
        let _ = rx.wait_for(|s| *s == NodeState::Stopped).await;
    }
}

/// What the HTTP handlers need.
#[derive(Clone)]
pub struct OpsHttp {
    pub ops: Arc<Ops>,
    pub manager: mpsc::Sender<Msg>,
    pub secret: Option<Arc<str>>,
}

pub fn router(state: OpsHttp) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

async fn health() -> Response {
    text(StatusCode::OK, "ok\n")
}

async fn ready(State(state): State<OpsHttp>) -> Response {
    match state.ops.state() {
        NodeState::Serving => text(StatusCode::OK, "ready\n"),
        NodeState::Draining { .. } => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        NodeState::Stopped => text(StatusCode::SERVICE_UNAVAILABLE, "stopped\n"),
    }
}

async fn metrics(State(state): State<OpsHttp>, headers: HeaderMap) -> Response {
    if !bearer_ok(state.secret.as_deref(), &headers) {
        let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let (tx, rx) = oneshot::channel();
    if state
        .manager
        .send(Msg::Snapshot { reply: tx })
        .await
        .is_err()
    {
        return text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n");
    }
    let Ok(snapshot) = rx.await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n");
    };
    match crate::metrics::render(
        &snapshot,
        &state.ops.api,
        &state.ops.busy,
        &state.ops.cluster,
    ) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("metrics encoding failed: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_starts_once_and_takes_the_configured_timeout() {
        let ops = Ops::new(Duration::from_secs(30));
        assert_eq!(ops.state(), NodeState::Serving);
        assert!(!ops.is_draining());
        assert!(ops.start_drain(None));
        assert_eq!(
            ops.state(),
            NodeState::Draining {
                deadline: Some(Duration::from_secs(30))
            }
        );
        assert!(ops.is_draining());
        assert!(
            !ops.start_drain(Some(Duration::from_secs(1))),
            "second drain"
        );
        ops.set_stopped();
        assert!(ops.is_draining(), "a stopped node accepts nothing either");
    }

    #[test]
    fn a_drain_without_any_timeout_has_no_deadline() {
        let ops = Ops::new(Duration::ZERO);
        assert!(ops.start_drain(None));
        assert_eq!(ops.state(), NodeState::Draining { deadline: None });
        let ops = Ops::new(Duration::ZERO);
        assert!(ops.start_drain(Some(Duration::from_secs(5))));
        assert_eq!(
            ops.state(),
            NodeState::Draining {
                deadline: Some(Duration::from_secs(5))
            }
        );
    }
}
