//! A blocking client for Sluice's NkMedia-style session API (one WebSocket, one request at a
//! time). Every wait is bounded by `TIMEOUT`.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// Upper bound on connecting and on any one request.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Socket read timeout, so a silent server never blocks past a deadline check.
const POLL: Duration = Duration::from_millis(200);

pub struct Api {
    ws: WebSocket<TcpStream>,
    next_tid: u64,
}

/// What `create` returned for the session types loadgen uses.
#[derive(Clone, Debug)]
pub struct Created {
    pub session_id: String,
    /// The server's answer (echo, publish) or offer (listen).
    pub sdp: String,
    pub room_id: Option<String>,
}

/// `host:port` of a `ws://host:port/path` URL.
pub fn authority(url: &str) -> anyhow::Result<&str> {
    let rest = url
        .strip_prefix("ws://")
        .context("only ws:// URLs are supported")?;
    let host = rest.split('/').next().unwrap_or(rest);
    if host.is_empty() {
        bail!("no host in {url:?}");
    }
    Ok(host)
}

fn str_field(v: &Value, key: &str) -> anyhow::Result<String> {
    match &v[key] {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => bail!("reply has no {key:?}: {v}"),
    }
}

fn sdp_field(v: &Value, key: &str) -> anyhow::Result<String> {
    v[key]["sdp"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("reply has no {key}.sdp: {v}"))
}

/// Reads one frame: `Some` of a reply (a frame without `cmd`, `{ack}` included), `None` when
/// the read timed out or the frame was something else. Events and other server requests are
/// acknowledged here, as a client must.
pub fn read_reply(ws: &mut WebSocket<TcpStream>) -> anyhow::Result<Option<Value>> {
    let msg = match ws.read() {
        Ok(m) => m,
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).context("reading from the API"),
    };
    let text = match msg {
        Message::Text(t) => t,
        Message::Close(c) => bail!("the server closed the API connection: {c:?}"),
        _ => return Ok(None),
    };
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("bad JSON from server: {text}"))?;
    if v.get("cmd").is_some() {
        if let Some(t) = v.get("tid") {
            ws.send(Message::text(json!({"result": "ok", "tid": t}).to_string()))?;
        }
        return Ok(None);
    }
    Ok(Some(v))
}

/// The TCP connection under a WebSocket to `url` (`ws://host:port[/path]`): TCP_NODELAY,
/// connecting, reads and writes bounded by `TIMEOUT`.
pub fn connect_tcp(url: &str) -> anyhow::Result<TcpStream> {
    let host = authority(url)?;
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to nothing"))?;
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A WebSocket to the API at `url` (`connect_tcp`); after the handshake, reads return after
/// `poll` at most, so callers can check their deadlines.
pub fn open_socket(url: &str, poll: Duration) -> anyhow::Result<WebSocket<TcpStream>> {
    let stream = connect_tcp(url)?;
    let (ws, _) = tungstenite::client(url, stream)
        .map_err(|e| anyhow!("WebSocket handshake with {url}: {e}"))?;
    ws.get_ref().set_read_timeout(Some(poll))?;
    Ok(ws)
}

impl Api {
    pub fn connect(url: &str) -> anyhow::Result<Api> {
        Ok(Api {
            ws: open_socket(url, POLL)?,
            next_tid: 1,
        })
    }

    /// Sends one request and waits for its reply; returns `data` of an ok reply. Server
    /// requests (events) arriving meanwhile are acknowledged, `{ack}` frames skipped.
    pub fn request(&mut self, subclass: &str, cmd: &str, data: Value) -> anyhow::Result<Value> {
        let tid = self.next_tid;
        self.next_tid += 1;
        let req =
            json!({"class": "media", "subclass": subclass, "cmd": cmd, "data": data, "tid": tid});
        self.ws.send(Message::text(req.to_string()))?;
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            let Some(v) = read_reply(&mut self.ws)? else {
                continue;
            };
            if v.get("tid").and_then(Value::as_u64) != Some(tid) {
                continue;
            }
            match v["result"].as_str() {
                Some("ok") => return Ok(v.get("data").cloned().unwrap_or(Value::Null)),
                Some(_) => bail!("{subclass}/{cmd} failed: {}", v["data"]),
                None => continue,
            }
        }
        bail!("no reply to {subclass}/{cmd} within {TIMEOUT:?}")
    }

    pub fn create_echo(&mut self, offer: &str) -> anyhow::Result<Created> {
        let d = self.request(
            "session",
            "create",
            json!({"type": "echo", "sdp_type": "rtp", "offer": {"sdp": offer, "sdp_type": "rtp"}}),
        )?;
        Ok(Created {
            session_id: str_field(&d, "session_id")?,
            sdp: sdp_field(&d, "answer")?,
            room_id: None,
        })
    }

    /// An echo session for a WebRTC offer; the answer is WebRTC too (ICE-lite, DTLS passive).
    pub fn create_echo_webrtc(&mut self, offer: &str) -> anyhow::Result<Created> {
        let d = self.request(
            "session",
            "create",
            json!({"type": "echo", "sdp_type": "webrtc",
                   "offer": {"sdp": offer, "sdp_type": "webrtc"}}),
        )?;
        Ok(Created {
            session_id: str_field(&d, "session_id")?,
            sdp: sdp_field(&d, "answer")?,
            room_id: None,
        })
    }

    pub fn create_publish(&mut self, offer: &str) -> anyhow::Result<Created> {
        let d = self.request(
            "session",
            "create",
            json!({"type": "publish", "sdp_type": "rtp", "offer": {"sdp": offer, "sdp_type": "rtp"},
                   "room_audio_codec": "pcmu"}),
        )?;
        Ok(Created {
            session_id: str_field(&d, "session_id")?,
            sdp: sdp_field(&d, "answer")?,
            room_id: str_field(&d, "room_id").ok(),
        })
    }

    pub fn create_listen(&mut self, publisher_id: &str) -> anyhow::Result<Created> {
        let d = self.request(
            "session",
            "create",
            json!({"type": "listen", "publisher_id": publisher_id, "sdp_type": "rtp"}),
        )?;
        Ok(Created {
            session_id: str_field(&d, "session_id")?,
            sdp: sdp_field(&d, "offer")?,
            room_id: None,
        })
    }

    /// A plain-RTP proxy call: the master leg for `offer` (caller A), the slave leg's offer
    /// (for callee B) answered with `answer_for(slave_offer)`; returns the master and slave
    /// ids, the master's answer (where A sends) and the slave's offer (where B sends).
    pub fn create_proxy(
        &mut self,
        offer: &str,
        answer_for: impl FnOnce(&str) -> anyhow::Result<String>,
    ) -> anyhow::Result<(Created, Created)> {
        let m = self.request(
            "session",
            "create",
            json!({"type": "proxy", "sdp_type": "rtp", "offer": {"sdp": offer, "sdp_type": "rtp"}}),
        )?;
        let master = str_field(&m, "session_id")?;
        let p = self.request("session", "get_proxy_offer", json!({"session_id": master}))?;
        let slave = str_field(&p, "session_id")?;
        let slave_offer = sdp_field(&p, "offer")?;
        self.set_answer(&slave, &answer_for(&slave_offer)?)?;
        let a = self.request("session", "get_answer", json!({"session_id": master}))?;
        Ok((
            Created {
                session_id: master,
                sdp: sdp_field(&a, "answer")?,
                room_id: None,
            },
            Created {
                session_id: slave,
                sdp: slave_offer,
                room_id: None,
            },
        ))
    }

    pub fn set_answer(&mut self, session_id: &str, sdp: &str) -> anyhow::Result<()> {
        self.request(
            "session",
            "set_answer",
            json!({"session_id": session_id, "answer": {"sdp": sdp, "sdp_type": "rtp"}}),
        )?;
        Ok(())
    }

    pub fn destroy(&mut self, session_id: &str) -> anyhow::Result<()> {
        self.request("session", "destroy", json!({"session_id": session_id}))?;
        Ok(())
    }

    pub fn destroy_room(&mut self, room_id: &str) -> anyhow::Result<()> {
        self.request("room", "destroy", json!({"room_id": room_id}))?;
        Ok(())
    }

    /// Destroys every session (best effort); returns how many could not be destroyed.
    pub fn destroy_all(&mut self, ids: &[String]) -> usize {
        ids.iter().filter(|id| self.destroy(id).is_err()).count()
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_host_and_port() {
        assert_eq!(
            authority("ws://127.0.0.1:9010/api/ws").unwrap(),
            "127.0.0.1:9010"
        );
        assert_eq!(authority("ws://localhost:1").unwrap(), "localhost:1");
        assert!(authority("http://x/").is_err());
        assert!(authority("ws:///api").is_err());
    }

    #[test]
    fn ids_may_be_strings_or_numbers() {
        let v = json!({"session_id": "abc", "room_id": 12, "answer": {"sdp": "v=0"}});
        assert_eq!(str_field(&v, "session_id").unwrap(), "abc");
        assert_eq!(str_field(&v, "room_id").unwrap(), "12");
        assert_eq!(sdp_field(&v, "answer").unwrap(), "v=0");
        assert!(str_field(&v, "missing").is_err());
        assert!(sdp_field(&v, "offer").is_err());
    }
}
