//! A blocking client for Janus's own API over its WebSocket transport (subprotocol
//! `janus-protocol`): one session, plugin handles in it, plugin messages with JSEP, trickle
//! and keepalives. Every wait is bounded by [`TIMEOUT`].
//!
//! Janus acknowledges an asynchronous request (`message`, `trickle`, `keepalive`) with
//! `{"janus":"ack"}` and answers a plugin message later with an `event` carrying the same
//! transaction; synchronous requests get `success` or `error`. Other events (`webrtcup`,
//! `media`, `slowlink`, `hangup`) are skipped.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

use crate::wsapi::connect_tcp;

/// Upper bound on connecting and on any one request.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Socket read timeout, so a silent server never blocks past a deadline check.
const POLL: Duration = Duration::from_millis(200);

pub struct Janus {
    ws: WebSocket<TcpStream>,
    session: u64,
    next: u64,
}

/// A plugin's reply: its `plugindata.data` and the JSEP, if any.
#[derive(Clone, Debug)]
pub struct PluginReply {
    pub data: Value,
    pub jsep: Option<String>,
}

impl Janus {
    /// Connects to `url` (`ws://host:port[/path]`) and creates a Janus session.
    pub fn connect(url: &str) -> anyhow::Result<Janus> {
        let stream = connect_tcp(url)?;
        let mut req = url
            .into_client_request()
            .map_err(|e| anyhow!("{url}: {e}"))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let (ws, _) = tungstenite::client(req, stream)
            .map_err(|e| anyhow!("WebSocket handshake with {url}: {e}"))?;
        ws.get_ref().set_read_timeout(Some(POLL))?;
        let mut j = Janus {
            ws,
            session: 0,
            next: 1,
        };
        let created = j.call(json!({"janus": "create"}), false)?;
        j.session = created["data"]["id"]
            .as_u64()
            .with_context(|| format!("create: no session id in {created}"))?;
        Ok(j)
    }

    /// Sends `body` (plus transaction and session) and returns the reply with its
    /// transaction: `success`, or `event` when `wait_event` (after the `ack`).
    fn call(&mut self, mut body: Value, wait_event: bool) -> anyhow::Result<Value> {
        let tx = format!("t{}", self.next);
        self.next += 1;
        body["transaction"] = json!(tx);
        if self.session != 0 {
            body["session_id"] = json!(self.session);
        }
        let what = body["janus"].as_str().unwrap_or("?").to_string();
        self.ws.send(Message::text(body.to_string()))?;
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            let Some(v) = self.read()? else { continue };
            if v["transaction"].as_str() != Some(tx.as_str()) {
                continue;
            }
            match v["janus"].as_str() {
                Some("error") => bail!("janus {what}: {}", v["error"]),
                Some("ack") if wait_event => continue,
                Some("ack" | "success" | "event") => return Ok(v),
                _ => continue,
            }
        }
        bail!("janus {what}: no reply within {TIMEOUT:?}")
    }

    fn read(&mut self) -> anyhow::Result<Option<Value>> {
        let msg = match self.ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e).context("reading from Janus"),
        };
        match msg {
            Message::Text(t) => Ok(Some(
                serde_json::from_str(&t).with_context(|| format!("bad JSON from Janus: {t}"))?,
            )),
            Message::Close(c) => bail!("Janus closed the connection: {c:?}"),
            _ => Ok(None),
        }
    }

    /// Attaches a handle of `plugin` (e.g. `janus.plugin.echotest`); returns its id.
    pub fn attach(&mut self, plugin: &str) -> anyhow::Result<u64> {
        let v = self.call(json!({"janus": "attach", "plugin": plugin}), false)?;
        v["data"]["id"]
            .as_u64()
            .with_context(|| format!("attach: no handle id in {v}"))
    }

    /// A plugin message, with an SDP `offer`/`answer` when `jsep` is given; waits for the
    /// plugin's reply (synchronous `success` or the asynchronous `event`).
    pub fn message(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<(&str, &str)>,
    ) -> anyhow::Result<PluginReply> {
        let mut req = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some((kind, sdp)) = jsep {
            req["jsep"] = json!({"type": kind, "sdp": sdp});
        }
        let v = self.call(req, true)?;
        let data = v["plugindata"]["data"].clone();
        if let Some(e) = data.get("error") {
            bail!("janus plugin: {e} ({})", data["error_code"]);
        }
        Ok(PluginReply {
            data,
            jsep: v["jsep"]["sdp"].as_str().map(str::to_string),
        })
    }

    /// Tells Janus that `handle` has no more candidates (they were all in the SDP).
    pub fn trickle_completed(&mut self, handle: u64) -> anyhow::Result<()> {
        self.call(
            json!({"janus": "trickle", "handle_id": handle, "candidate": {"completed": true}}),
            false,
        )?;
        Ok(())
    }

    /// Keeps the session alive (Janus drops sessions silent for `session_timeout`, 60 s).
    pub fn keepalive(&mut self) -> anyhow::Result<()> {
        self.call(json!({"janus": "keepalive"}), false)?;
        Ok(())
    }

    /// Destroys the session (with its handles and their PeerConnections) and closes.
    pub fn close(mut self) {
        let _ = self.call(json!({"janus": "destroy"}), false);
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}
