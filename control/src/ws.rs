//! The WebSocket API edge: `/api/ws`, one JSON object per text frame.
//!
//! Each connection has a reader (this task: parse, authenticate, forward to the manager) and a
//! writer task that owns the socket's sink and merges command replies with events, flushing
//! what is queued together. Every reply is awaited in its own small task, so one slow command
//! never blocks the next; one that waits (`get_answer` on a session still in `wait`) gets an
//! `{ack: tid}` first if it has not finished within `ACK_AFTER`.
//!
//! The doors of a connection ([`Limits`], sans-IO state in [`crate::limits`]):
//! - a frame over `--max-frame-bytes` gets an `invalid_parameters` reply, then the connection
//!   closes with 1009 (the socket reads up to [`SOCKET_LIMIT`], or the limit if larger, so
//!   that such frames can be answered; beyond that the WebSocket layer drops the connection);
//! - `--max-login-failures` failed logins in a row: the `unauthorized` reply, then close 1008;
//! - with a secret, no successful login within `--login-timeout`: close 1008;
//! - requests beyond `--api-rate` (after a burst of `--api-burst`) get `too_many_requests`
//!   and reach nothing; the connection stays open.
//!
//! A close is a handshake: after its close frame the server reads (and ignores) what the
//! client still sends until the client's close frame, for at most [`CLOSE_WAIT`].
//!
//! Every reply is counted once, by command and result, for `sluice_api_requests_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseCode, CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::auth::secret_matches;
use crate::config::Config;
use crate::errors::{ApiError, ErrorCode};
use crate::limits::{LoginGuard, TokenBucket, login_deadline};
use crate::manager::session::ConnId;
use crate::manager::{Msg, Outcome, Outgoing, Reply, new_id};
use crate::metrics::{Door, command_index, request_index};
use crate::ops::Ops;
use crate::request::{Frame, Request, parse_frame};

/// Largest frame the socket reads at all (unless `--max-frame-bytes` is larger).
pub const SOCKET_LIMIT: usize = 16 << 20;
/// Bytes asked of the socket per read. tungstenite zero-fills this much before every read
/// (its default, 128 KiB, was 4 % of the control thread's time under session churn); API
/// frames are small, and larger ones are still read, in more steps.
const READ_CHUNK: usize = 8 << 10;
/// Events buffered per connection before they are dropped.
pub const OUTBOX: usize = 1024;
/// Server-initiated transaction ids start here, far from typical client tids.
const FIRST_EVENT_TID: u64 = 1_000_000;
/// A reply that must wait gets an `{ack: tid}` once it has waited this long.
const ACK_AFTER: Duration = Duration::from_millis(20);
/// Frames written behind the first before the writer flushes.
const WRITE_BATCH: usize = 64;
/// How long a closing connection waits for the client's close frame.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What one connection may do (from the settings of the same names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub max_frame_bytes: usize,
    /// 0 = unlimited.
    pub max_login_failures: u32,
    /// Zero = no limit; applies only with a secret.
    pub login_timeout: Duration,
    /// Requests per second; 0 = unlimited.
    pub api_rate: f64,
    pub api_burst: u32,
}

impl Limits {
    pub fn from_config(c: &Config) -> Self {
        Limits {
            max_frame_bytes: c.max_frame_bytes,
            max_login_failures: c.max_login_failures,
            login_timeout: c.login_timeout,
            api_rate: c.api_rate,
            api_burst: c.api_burst,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&Config::default())
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub manager: mpsc::Sender<Msg>,
    pub secret: Option<Arc<str>>,
    pub next_conn: Arc<AtomicU64>,
    /// Held by every writer: closes when all have flushed (used at shutdown).
    pub alive: mpsc::Sender<()>,
    /// Node state and the API request counters.
    pub ops: Arc<Ops>,
    pub limits: Limits,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/ws", get(upgrade))
        .with_state(state)
}

async fn upgrade(ws: WebSocketUpgrade, State(state): State<ApiState>) -> Response {
    let read_limit = SOCKET_LIMIT.max(state.limits.max_frame_bytes.saturating_add(1));
    ws.max_message_size(read_limit)
        .max_frame_size(read_limit)
        .read_buffer_size(READ_CHUNK)
        .on_upgrade(move |socket| connection(socket, state))
}

fn reply_frame(tid: &Value, outcome: Outcome) -> String {
    match outcome {
        Ok(data) => json!({ "result": "ok", "data": data, "tid": tid }).to_string(),
        Err(e) => json!({ "result": "error", "data": e.to_data(), "tid": tid }).to_string(),
    }
}

/// What the reader asks the writer to send.
#[derive(Debug)]
enum Out {
    Text(String),
    /// A close frame: the last thing the connection sends.
    Close(CloseCode, &'static str),
}

/// The reader's side of a connection's doors.
struct Doors {
    authenticated: bool,
    /// Until a login succeeds (with a secret).
    login_by: Option<Instant>,
    logins: LoginGuard,
    rate: TokenBucket,
    /// Set once the server has sent its close frame: the end of the close handshake.
    closing: Option<Instant>,
}

impl Doors {
    fn new(limits: &Limits, secret: bool, now: Instant) -> Self {
        Doors {
            authenticated: !secret,
            login_by: if secret {
                login_deadline(now.into_std(), limits.login_timeout).map(Instant::from_std)
            } else {
                None
            },
            logins: LoginGuard::new(limits.max_login_failures),
            rate: TokenBucket::new(limits.api_rate, limits.api_burst, now.into_std()),
            closing: None,
        }
    }

    /// The next deadline the reader must wake for.
    fn deadline(&self) -> Option<Instant> {
        self.closing.or(self.login_by)
    }

    /// Sends the close frame (after whatever is queued) and starts waiting for the client's.
    fn close(&mut self, replies: &mpsc::UnboundedSender<Out>, code: CloseCode, why: &'static str) {
        if self.closing.is_none() {
            let _ = replies.send(Out::Close(code, why));
            self.closing = Some(Instant::now() + CLOSE_WAIT);
        }
    }
}

async fn connection(socket: WebSocket, state: ApiState) {
    let conn = ConnId(state.next_conn.fetch_add(1, Ordering::Relaxed));
    let conn_session = new_id();
    let (sink, mut stream) = socket.split();
    let (reply_tx, reply_rx) = mpsc::unbounded_channel::<Out>();
    let (event_tx, event_rx) = mpsc::channel::<Outgoing>(OUTBOX);
    if state
        .manager
        .send(Msg::Open {
            conn,
            outbox: event_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let (hangup_tx, mut hangup_rx) = oneshot::channel();
    tokio::spawn(writer(
        sink,
        reply_rx,
        event_rx,
        hangup_tx,
        state.alive.clone(),
    ));
    tracing::debug!(conn = conn.0, "api connection open");
    let limits = state.limits;
    let mut doors = Doors::new(&limits, state.secret.is_some(), Instant::now());
    let send = |text: String| {
        let _ = reply_tx.send(Out::Text(text));
    };
    loop {
        let msg = match next_frame(&mut stream, &mut hangup_rx, doors.deadline()).await {
            Next::Frame(msg) => msg,
            Next::Gone => break,
            Next::Deadline if doors.closing.is_some() => break,
            Next::Deadline => {
                tracing::debug!(conn = conn.0, "no login within the login timeout: closing");
                doors.login_by = None;
                state.ops.api.limited(Door::LoginTimeout);
                doors.close(&reply_tx, close_code::POLICY, "login timeout");
                continue;
            }
        };
        if doors.closing.is_some() {
            // The close handshake: nothing more is served.
            match msg {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(b)) => {
                state.ops.api.count(None, false);
                if b.len() > limits.max_frame_bytes {
                    send(reply_frame(&Value::Null, Err(too_large(b.len(), &limits))));
                    state.ops.api.limited(Door::FrameTooLarge);
                    doors.close(&reply_tx, close_code::SIZE, "frame too large");
                    continue;
                }
                let e = ApiError::syntax("binary frames are not supported; send JSON text");
                send(reply_frame(&Value::Null, Err(e)));
                continue;
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(conn = conn.0, "api connection error: {e}");
                break;
            }
        };
        if text.len() > limits.max_frame_bytes {
            let tid = serde_json::from_str::<Value>(text.as_str())
                .ok()
                .and_then(|v| v.get("tid").cloned())
                .unwrap_or(Value::Null);
            state.ops.api.count(None, false);
            send(reply_frame(&tid, Err(too_large(text.len(), &limits))));
            state.ops.api.limited(Door::FrameTooLarge);
            doors.close(&reply_tx, close_code::SIZE, "frame too large");
            continue;
        }
        let parsed = parse_frame(text.as_str());
        if matches!(parsed, Ok(Frame::Ignore)) {
            // Acks of our events are not requests: they cost no token.
            continue;
        }
        if !doors.rate.take(Instant::now().into_std()) {
            let (tid, cmd) = match &parsed {
                Ok(Frame::Request { tid, request }) => (tid.clone(), request_index(request)),
                Ok(Frame::Ignore) => (Value::Null, None),
                Err(fe) => (fe.tid.clone(), named_command(text.as_str())),
            };
            state.ops.api.count(cmd, false);
            state.ops.api.limited(Door::RateLimited);
            send(reply_frame(&tid, Err(rate_limited(&limits))));
            continue;
        }
        let (tid, request) = match parsed {
            Ok(Frame::Ignore) => continue,
            Ok(Frame::Request { tid, request }) => (tid, request),
            Err(fe) => {
                state.ops.api.count(named_command(text.as_str()), false);
                send(reply_frame(&fe.tid, Err(fe.error)));
                continue;
            }
        };
        let cmd = request_index(&request);
        if let Request::Login { password, .. } = &request {
            let ok = match &state.secret {
                None => true,
                Some(s) => password
                    .as_deref()
                    .is_some_and(|p| secret_matches(s, p.as_bytes())),
            };
            state.ops.api.count(cmd, ok);
            if ok {
                doors.authenticated = true;
                doors.login_by = None;
                doors.logins.succeeded();
                send(reply_frame(&tid, Ok(json!({ "session_id": conn_session }))));
                continue;
            }
            send(reply_frame(
                &tid,
                Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "wrong user or password",
                )),
            ));
            if doors.logins.failed() {
                tracing::info!(conn = conn.0, "too many failed logins: closing");
                state.ops.api.limited(Door::LoginFailures);
                doors.close(&reply_tx, close_code::POLICY, "too many failed logins");
            }
            continue;
        }
        if !doors.authenticated {
            state.ops.api.count(cmd, false);
            send(reply_frame(
                &tid,
                Err(ApiError::plain(ErrorCode::NotAuthenticated)),
            ));
            continue;
        }
        let (tx, rx) = oneshot::channel();
        if state
            .manager
            .send(Msg::Request {
                conn,
                request,
                reply: tx,
                frame: Arc::from(text.as_str()),
            })
            .await
            .is_err()
        {
            state.ops.api.count(cmd, false);
            send(reply_frame(
                &tid,
                Err(ApiError::new(ErrorCode::ProcessDown, "server stopping")),
            ));
            break;
        }
        let replies = reply_tx.clone();
        let ops = Arc::clone(&state.ops);
        tokio::spawn(async move {
            let outcome = match rx.await {
                Ok(Reply::Done(outcome)) => outcome,
                Ok(Reply::Wait(mut later)) => {
                    let gone = |_| Err(ApiError::plain(ErrorCode::SessionStop));
                    // Most waits end at once (a destroy waiting for its ports): only a
                    // slow one is worth an `{ack}` frame.
                    match tokio::time::timeout(ACK_AFTER, &mut later).await {
                        Ok(outcome) => outcome.unwrap_or_else(gone),
                        Err(_) => {
                            let _ = replies.send(Out::Text(json!({ "ack": tid }).to_string()));
                            later.await.unwrap_or_else(gone)
                        }
                    }
                }
                Err(_) => Err(ApiError::new(ErrorCode::ProcessDown, "server stopping")),
            };
            ops.api.count(cmd, outcome.is_ok());
            let _ = replies.send(Out::Text(reply_frame(&tid, outcome)));
        });
    }
    tracing::debug!(conn = conn.0, "api connection closed");
    let _ = state.manager.send(Msg::Closed { conn }).await;
}

fn too_large(len: usize, limits: &Limits) -> ApiError {
    ApiError::invalid(format!(
        "frame of {len} bytes exceeds the limit of {} bytes (--max-frame-bytes); closing",
        limits.max_frame_bytes
    ))
}

fn rate_limited(limits: &Limits) -> ApiError {
    ApiError::new(
        ErrorCode::TooManyRequests,
        format!(
            "more than {} requests/s on this connection (--api-rate, burst {}); not processed",
            limits.api_rate, limits.api_burst
        ),
    )
}

/// What the reader waits for.
enum Next {
    Frame(Result<Message, axum::Error>),
    /// The client is gone, or the writer hung up (shutdown).
    Gone,
    /// The deadline passed (login timeout, or the end of a close handshake).
    Deadline,
}

async fn next_frame(
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    hangup: &mut oneshot::Receiver<()>,
    deadline: Option<Instant>,
) -> Next {
    let timer = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        msg = stream.next() => match msg {
            Some(msg) => Next::Frame(msg),
            None => Next::Gone,
        },
        _ = hangup => Next::Gone,
        () = timer => Next::Deadline,
    }
}

fn close_frame(code: CloseCode, why: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: why.into(),
    }))
}

/// Owns the socket's sink: writes replies and events (with server tids); when the manager
/// drops the outbox (shutdown), stops the reader, writes every reply still in flight (a
/// `destroy` answered just before the end of a drain) and closes the socket. After a close
/// the reader asked for, discards what comes until the reader is done.
async fn writer(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut replies: mpsc::UnboundedReceiver<Out>,
    mut events: mpsc::Receiver<Outgoing>,
    hangup: oneshot::Sender<()>,
    _alive: mpsc::Sender<()>,
) {
    let mut tid = FIRST_EVENT_TID;
    loop {
        let first = tokio::select! {
            r = replies.recv() => match r {
                Some(out) => out,
                None => return,
            },
            e = events.recv() => match e {
                Some(Outgoing::Event(data)) => {
                    tid += 1;
                    Out::Text(event_frame(&data, tid))
                }
                // Only for another node's relay connection, never a WebSocket.
                Some(Outgoing::Relay { .. }) => continue,
                None => {
                    // The reader stops; the reply tasks finish at once (the manager is
                    // gone): `recv` ends when they all have.
                    let _ = hangup.send(());
                    while let Some(out) = replies.recv().await {
                        if let Out::Text(t) = out {
                            let _ = sink.send(Message::Text(t.into())).await;
                        }
                    }
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
            },
        };
        // Whatever else is already queued goes out in the same flush: one write for a
        // reply and the event it caused, or for a pipelining client's replies.
        let mut next = Some(first);
        let mut written = 0;
        while let Some(out) = next.take() {
            match out {
                Out::Text(t) => {
                    if sink.feed(Message::Text(t.into())).await.is_err() {
                        return;
                    }
                }
                Out::Close(code, why) => {
                    // `send` flushes what was fed before it too.
                    let _ = sink.send(close_frame(code, why)).await;
                    discard(replies, events, hangup).await;
                    return;
                }
            }
            written += 1;
            if written > WRITE_BATCH {
                break;
            }
            next = match replies.try_recv() {
                Ok(out) => Some(out),
                Err(_) => match events.try_recv() {
                    Ok(Outgoing::Event(data)) => {
                        tid += 1;
                        Some(Out::Text(event_frame(&data, tid)))
                    }
                    Ok(Outgoing::Relay { .. }) | Err(_) => None,
                },
            };
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// After the close frame: drops replies and events until the reader and its reply tasks are
/// done (or, at shutdown, stops the reader first).
async fn discard(
    mut replies: mpsc::UnboundedReceiver<Out>,
    mut events: mpsc::Receiver<Outgoing>,
    hangup: oneshot::Sender<()>,
) {
    loop {
        tokio::select! {
            r = replies.recv() => if r.is_none() {
                return;
            },
            e = events.recv() => if e.is_none() {
                let _ = hangup.send(());
                while replies.recv().await.is_some() {}
                return;
            },
        }
    }
}

/// The command a frame that failed to parse names, if it names a known one (only on that
/// error path is the frame read a second time).
fn named_command(text: &str) -> Option<usize> {
    let v: Value = serde_json::from_str(text).ok()?;
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    command_index(field("class")?, field("subclass"), field("cmd")?)
}

fn event_frame(data: &Value, tid: u64) -> String {
    json!({ "class": "core", "cmd": "event", "data": data, "tid": tid }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_echo_the_tid() {
        let ok: Value =
            serde_json::from_str(&reply_frame(&json!(7), Ok(json!({"a": 1})))).expect("json");
        assert_eq!(ok, json!({"result": "ok", "data": {"a": 1}, "tid": 7}));
        let err = reply_frame(
            &json!("x"),
            Err(ApiError::plain(ErrorCode::SessionNotFound)),
        );
        let err: Value = serde_json::from_str(&err).expect("json");
        assert_eq!(err["data"]["code"], json!(100062));
        assert_eq!(err["tid"], json!("x"));
    }

    #[test]
    fn a_bad_frame_is_counted_under_the_command_it_names() {
        let create = command_index("media", Some("session"), "create");
        assert!(create.is_some());
        assert_eq!(
            named_command(r#"{"class":"media","cmd":"create","data":{"type":"nope"}}"#),
            create
        );
        assert_eq!(named_command(r#"{"class":"media","cmd":"fly"}"#), None);
        assert_eq!(named_command("not json"), None);
    }
}
