//! The WebSocket API edge: `/api/ws`, one JSON object per text frame.
//!
//! Each connection has a reader (this task: parse, authenticate, forward to the manager) and a
//! writer task that owns the socket's sink and merges command replies with events, flushing
//! what is queued together. Every reply is awaited in its own small task, so one slow command
//! never blocks the next; one that waits (`get_answer` on a session still in `wait`) gets an
//! `{ack: tid}` first if it has not finished within `ACK_AFTER`.
//!
//! Frames over [`MAX_FRAME`] (1 MiB) get an `invalid_parameters` error; the socket accepts up
//! to [`SOCKET_LIMIT`] so that such frames can be answered; beyond that the connection is closed
//! by the WebSocket layer (other connections are unaffected).
//!
//! Every reply is counted once, by command and result, for `sluice_api_requests_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::errors::{ApiError, ErrorCode};
use crate::manager::session::ConnId;
use crate::manager::{Msg, Outcome, Outgoing, Reply, new_id};
use crate::metrics::{command_index, request_index};
use crate::ops::Ops;
use crate::request::{Frame, MAX_FRAME, Request, parse_frame};

/// Largest frame the socket reads at all.
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
const ACK_AFTER: std::time::Duration = std::time::Duration::from_millis(20);
/// Frames written behind the first before the writer flushes.
const WRITE_BATCH: usize = 64;

#[derive(Clone)]
pub struct ApiState {
    pub manager: mpsc::Sender<Msg>,
    pub secret: Option<Arc<str>>,
    pub next_conn: Arc<AtomicU64>,
    /// Held by every writer: closes when all have flushed (used at shutdown).
    pub alive: mpsc::Sender<()>,
    /// Node state and the API request counters.
    pub ops: Arc<Ops>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/ws", get(upgrade))
        .with_state(state)
}

async fn upgrade(ws: WebSocketUpgrade, State(state): State<ApiState>) -> Response {
    ws.max_message_size(SOCKET_LIMIT)
        .max_frame_size(SOCKET_LIMIT)
        .read_buffer_size(READ_CHUNK)
        .on_upgrade(move |socket| connection(socket, state))
}

fn reply_frame(tid: &Value, outcome: Outcome) -> String {
    match outcome {
        Ok(data) => json!({ "result": "ok", "data": data, "tid": tid }).to_string(),
        Err(e) => json!({ "result": "error", "data": e.to_data(), "tid": tid }).to_string(),
    }
}

async fn connection(socket: WebSocket, state: ApiState) {
    let conn = ConnId(state.next_conn.fetch_add(1, Ordering::Relaxed));
    let conn_session = new_id();
    let (sink, mut stream) = socket.split();
    let (reply_tx, reply_rx) = mpsc::unbounded_channel::<String>();
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
    let mut authenticated = state.secret.is_none();
    while let Some(msg) = next_frame(&mut stream, &mut hangup_rx).await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => {
                let e = ApiError::syntax("binary frames are not supported; send JSON text");
                state.ops.api.count(None, false);
                let _ = reply_tx.send(reply_frame(&Value::Null, Err(e)));
                continue;
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(conn = conn.0, "api connection error: {e}");
                break;
            }
        };
        if text.len() > MAX_FRAME {
            let tid = serde_json::from_str::<Value>(text.as_str())
                .ok()
                .and_then(|v| v.get("tid").cloned())
                .unwrap_or(Value::Null);
            let e = ApiError::invalid(format!(
                "frame of {} bytes exceeds the 1 MiB limit",
                text.len()
            ));
            state.ops.api.count(None, false);
            let _ = reply_tx.send(reply_frame(&tid, Err(e)));
            continue;
        }
        let (tid, request) = match parse_frame(text.as_str()) {
            Ok(Frame::Ignore) => continue,
            Ok(Frame::Request { tid, request }) => (tid, request),
            Err(fe) => {
                state.ops.api.count(named_command(text.as_str()), false);
                let _ = reply_tx.send(reply_frame(&fe.tid, Err(fe.error)));
                continue;
            }
        };
        let cmd = request_index(&request);
        if let Request::Login { password, .. } = &request {
            let ok = match &state.secret {
                None => true,
                Some(s) => password.as_deref() == Some(&**s),
            };
            let outcome = if ok {
                authenticated = true;
                Ok(json!({ "session_id": conn_session }))
            } else {
                Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "wrong user or password",
                ))
            };
            state.ops.api.count(cmd, outcome.is_ok());
            let _ = reply_tx.send(reply_frame(&tid, outcome));
            continue;
        }
        if !authenticated {
            state.ops.api.count(cmd, false);
            let _ = reply_tx.send(reply_frame(
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
            })
            .await
            .is_err()
        {
            state.ops.api.count(cmd, false);
            let _ = reply_tx.send(reply_frame(
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
                            let _ = replies.send(json!({ "ack": tid }).to_string());
                            later.await.unwrap_or_else(gone)
                        }
                    }
                }
                Err(_) => Err(ApiError::new(ErrorCode::ProcessDown, "server stopping")),
            };
            ops.api.count(cmd, outcome.is_ok());
            let _ = replies.send(reply_frame(&tid, outcome));
        });
    }
    tracing::debug!(conn = conn.0, "api connection closed");
    let _ = state.manager.send(Msg::Closed { conn }).await;
}

/// The client's next frame; `None` once it is gone or the writer hung up (shutdown).
async fn next_frame(
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    hangup: &mut oneshot::Receiver<()>,
) -> Option<Result<Message, axum::Error>> {
    tokio::select! {
        msg = stream.next() => msg,
        _ = hangup => None,
    }
}

/// Owns the socket's sink: writes replies and events (with server tids); when the manager
/// drops the outbox (shutdown), stops the reader, writes every reply still in flight (a
/// `destroy` answered just before the end of a drain) and closes the socket.
async fn writer(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut replies: mpsc::UnboundedReceiver<String>,
    mut events: mpsc::Receiver<Outgoing>,
    hangup: oneshot::Sender<()>,
    _alive: mpsc::Sender<()>,
) {
    let mut tid = FIRST_EVENT_TID;
    loop {
        let text = tokio::select! {
            r = replies.recv() => match r {
                Some(t) => t,
                None => return,
            },
            e = events.recv() => match e {
                Some(Outgoing::Event(data)) => {
                    tid += 1;
                    event_frame(&data, tid)
                }
                None => {
                    // The reader stops; the reply tasks finish at once (the manager is
                    // gone): `recv` ends when they all have.
                    let _ = hangup.send(());
                    while let Some(t) = replies.recv().await {
                        let _ = sink.send(Message::Text(t.into())).await;
                    }
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
            },
        };
        // Whatever else is already queued goes out in the same flush: one write for a
        // reply and the event it caused, or for a pipelining client's replies.
        if sink.feed(Message::Text(text.into())).await.is_err() {
            return;
        }
        for _ in 0..WRITE_BATCH {
            let text = match replies.try_recv() {
                Ok(t) => t,
                Err(_) => match events.try_recv() {
                    Ok(Outgoing::Event(data)) => {
                        tid += 1;
                        event_frame(&data, tid)
                    }
                    Err(_) => break,
                },
            };
            if sink.feed(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
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
