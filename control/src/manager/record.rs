//! `recorder_action`: recording a session's streams into Janus `.mjr` files.
//!
//! `start` opens one recording per accepted stream (audio, video) of the session, named
//! `BASE-audio.mjr` / `BASE-video.mjr` in the record dir, and installs each sink on its leg with
//! `Command::Record`; a session with data channels also gets `BASE-data.mjr` (Janus's data
//! format), to which the manager hands each message ([`SessionRecording::record_data`]). BASE comes from `uri` (`file://NAME`, or `file:///RECORD_DIR/NAME`) or
//! defaults to `SESSION_ID-N`; the reply and the `record` event carry
//! `uri = file:///CANONICAL_RECORD_DIR/BASE`. A session records what its peer sends (echo,
//! proxy legs, publishers), except a listener, which records what it is sent. A proxy call's
//! two directions are its two sessions: record both for both sides.
//!
//! `stop` removes the sinks; its reply waits (bounded) until the files are finished and
//! renamed. Destroying the session closes its legs and so its recordings.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_dataplane::api::{
    Command, DataSink, LegId, MediaKind, Pt, RecordSpec, RecordState, Recording, Tap,
};
use tokio::sync::oneshot;

use super::session::Session;
use super::{Manager, Outcome, Reply, SessionId};
use crate::errors::{ApiError, ErrorCode};
use crate::recordings::{Known, base_from_uri, janus_codec};
use crate::request::RecorderOp;

/// How long a `stop` reply waits for the files to be finished.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Default names tried (`SESSION-1`, `SESSION-2`, ...) before giving up.
const MAX_DEFAULT_NAMES: u32 = 1000;

/// One recorded stream of a session.
#[derive(Debug)]
pub struct RecordedStream {
    pub leg: LegId,
    pub kind: MediaKind,
    /// File name, `BASE-KIND.mjr`.
    pub name: String,
    pub codec: String,
    pub handle: Recording,
}

/// The data channels' recording of a session.
#[derive(Debug)]
pub struct RecordedData {
    /// File name, `BASE-data.mjr`.
    pub name: String,
    /// Gone once the recording stops: the writer then finishes the file.
    pub sink: Option<DataSink>,
    pub handle: Recording,
}

/// A session's current (or last) recording.
#[derive(Debug)]
pub struct SessionRecording {
    pub uri: String,
    pub active: bool,
    pub streams: Vec<RecordedStream>,
    pub data: Option<RecordedData>,
}

impl SessionRecording {
    /// Packets (and messages) lost so far over all files (full queue, failed writes).
    pub fn dropped(&self) -> u64 {
        self.handles().map(|h| h.stats.snapshot().dropped).sum()
    }

    fn handles(&self) -> impl Iterator<Item = &Recording> {
        let data = self.data.as_ref().map(|d| &d.handle);
        self.streams.iter().map(|s| &s.handle).chain(data)
    }

    /// A data-channel message to record (what the session's peer sent, or for a listener
    /// what it was sent), if data is being recorded: queued for the writer, never waited
    /// for; a full queue is a counted drop.
    pub fn record_data(&self, msg: &[u8]) {
        if let Some(sink) = self.data.as_ref().and_then(|d| d.sink.as_ref()) {
            sink.push(Instant::now(), msg);
        }
    }

    /// The `recording` of `get_info`.
    pub fn info(&self) -> Value {
        let files: Vec<Value> = self
            .streams
            .iter()
            .map(|s| {
                let st = s.handle.stats.snapshot();
                json!({
                    "name": s.name, "kind": s.kind.as_str(), "codec": s.codec,
                    "packets": st.packets, "bytes": st.bytes, "dropped": st.dropped,
                    "duration": st.duration_ms as f64 / 1000.0, "state": st.state.as_str(),
                })
            })
            .chain(self.data.iter().map(|d| {
                let st = d.handle.stats.snapshot();
                json!({
                    "name": d.name, "kind": "data", "codec": "text",
                    "packets": st.packets, "bytes": st.bytes, "dropped": st.dropped,
                    "duration": st.duration_ms as f64 / 1000.0, "state": st.state.as_str(),
                })
            }))
            .collect();
        json!({
            "uri": self.uri,
            "state": if self.active { "recording" } else { "stopped" },
            "dropped": self.dropped(),
            "files": files,
        })
    }
}

fn names<'a>(streams: &'a [RecordedStream], data: Option<&'a RecordedData>) -> Vec<&'a str> {
    let data = data.map(|d| d.name.as_str());
    streams
        .iter()
        .map(|s| s.name.as_str())
        .chain(data)
        .collect()
}

impl Manager {
    pub(super) fn recorder_action(
        &mut self,
        id: &SessionId,
        action: RecorderOp,
        uri: Option<String>,
    ) -> Reply {
        match action {
            RecorderOp::GetActions => Reply::Done(self.session(id).map(|_| {
                let all: Vec<&str> = RecorderOp::ALL.iter().map(|a| a.as_str()).collect();
                json!({ "actions": all })
            })),
            RecorderOp::Start => Reply::Done(self.start_recording(id, uri.as_deref())),
            RecorderOp::Stop => self.stop_recording(id),
        }
    }

    fn start_recording(&mut self, id: &SessionId, uri: Option<&str>) -> Outcome {
        let s = self.session(id)?;
        if s.recording.as_ref().is_some_and(|r| r.active) {
            return Err(ApiError::new(
                ErrorCode::InvalidOperation,
                format!("session {id} is already recording"),
            ));
        }
        let tap = if s.is_listener() {
            Tap::Sent
        } else {
            Tap::Received
        };
        let streams: Vec<(LegId, MediaKind, String, Pt)> = s
            .legs
            .iter()
            .filter(|l| l.accepted)
            .map(|l| {
                let codec = janus_codec(&l.codec.name, l.codec.clock_rate);
                (l.info.id, l.kind, codec, l.codec.pt)
            })
            .collect();
        let data = s.webrtc.as_ref().is_some_and(|t| t.has_data());
        if streams.is_empty() && !data {
            return Err(ApiError::new(
                ErrorCode::InvalidOperation,
                format!("session {id} has no negotiated media to record yet"),
            ));
        }
        let dir = self.recordings.ensure_dir().map_err(|e| {
            ApiError::new(
                ErrorCode::InternalError,
                format!("record dir {}: {e}", self.recordings.dir().display()),
            )
        })?;
        let taken = |base: &str| {
            let data = data.then_some("data");
            let mut kinds = streams
                .iter()
                .map(|(_, kind, _, _)| kind.as_str())
                .chain(data);
            kinds.any(|kind| {
                let f = format!("{base}-{kind}.mjr");
                dir.join(&f).exists() || dir.join(format!("{f}.tmp")).exists()
            })
        };
        let base = match uri {
            Some(uri) => {
                let base =
                    base_from_uri(uri, self.recordings.dir(), &dir).map_err(ApiError::invalid)?;
                if taken(&base) {
                    return Err(ApiError::invalid(format!(
                        "recording '{base}' already exists"
                    )));
                }
                base
            }
            None => (1..=MAX_DEFAULT_NAMES)
                .map(|n| format!("{id}-{n}"))
                .find(|b| !taken(b))
                .ok_or_else(|| ApiError::new(ErrorCode::InternalError, "no free recording name"))?,
        };
        let mut opened = Vec::with_capacity(streams.len());
        for (leg, kind, codec, pt) in streams {
            let name = format!("{base}-{}", kind.as_str());
            let spec = RecordSpec {
                dir: dir.clone(),
                name: name.clone(),
                kind,
                codec: codec.clone(),
                tap,
                pt: Some(pt),
                capacity: 0,
            };
            // On failure the streams opened so far are dropped with `opened`: their sinks
            // close them at once (empty files remain, as for any recording without media).
            let (sink, handle) = self.dp.open_recording(spec).map_err(|e| {
                ApiError::new(
                    ErrorCode::InternalError,
                    format!("cannot create recording {name}: {e}"),
                )
            })?;
            opened.push((
                sink,
                RecordedStream {
                    leg,
                    kind,
                    name: format!("{name}.mjr"),
                    codec,
                    handle,
                },
            ));
        }
        let data = match data {
            false => None,
            true => {
                let name = format!("{base}-data");
                let (sink, handle) = self.dp.open_data_recording(&dir, &name).map_err(|e| {
                    ApiError::new(
                        ErrorCode::InternalError,
                        format!("cannot create recording {name}: {e}"),
                    )
                })?;
                let name = format!("{name}.mjr");
                self.recordings.insert(
                    name.clone(),
                    Known {
                        session: id.to_string(),
                        kind: "data",
                        codec: "text".into(),
                        stats: handle.stats.clone(),
                    },
                );
                Some(RecordedData {
                    name,
                    sink: Some(sink),
                    handle,
                })
            }
        };
        let mut streams = Vec::with_capacity(opened.len());
        for (sink, stream) in opened {
            self.recordings.insert(
                stream.name.clone(),
                Known {
                    session: id.to_string(),
                    kind: stream.kind.as_str(),
                    codec: stream.codec.clone(),
                    stats: stream.handle.stats.clone(),
                },
            );
            self.send(Command::Record {
                leg: stream.leg,
                kind: stream.kind,
                sink: Some(sink),
            })?;
            streams.push(stream);
        }
        let uri = format!("file://{}", dir.join(&base).display());
        let reply = json!({ "uri": uri, "files": names(&streams, data.as_ref()) });
        if let Some(s) = self.sessions.get_mut(id) {
            s.recording = Some(SessionRecording {
                uri: uri.clone(),
                active: true,
                streams,
                data,
            });
        }
        tracing::info!(session_id = %id, %uri, "recording started");
        self.emit_session(id, "record", json!({ "uri": uri, "status": "started" }));
        Ok(reply)
    }

    fn stop_recording(&mut self, id: &SessionId) -> Reply {
        let rec = match self.session_mut(id) {
            Err(e) => return Reply::Done(Err(e)),
            Ok(s) => match s.recording.as_mut() {
                Some(r) if r.active => r,
                _ => {
                    return Reply::Done(Err(ApiError::new(
                        ErrorCode::NoActiveRecorder,
                        format!("session {id} is not recording"),
                    )));
                }
            },
        };
        rec.active = false;
        let uri = rec.uri.clone();
        let stops: Vec<Command> = rec
            .streams
            .iter()
            .map(|st| Command::Record {
                leg: st.leg,
                kind: st.kind,
                sink: None,
            })
            .collect();
        // Without its sink the data file is finished by the writer.
        if let Some(d) = rec.data.as_mut() {
            d.sink = None;
        }
        let handles: Vec<Recording> = rec.handles().cloned().collect();
        let files: Vec<String> = names(&rec.streams, rec.data.as_ref())
            .into_iter()
            .map(str::to_owned)
            .collect();
        for cmd in stops {
            // A worker that is gone has dropped the sink already.
            let _ = self.send(cmd);
        }
        self.emit_record_stopped(id);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let waited = tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + CLOSE_WAIT;
                for h in &handles {
                    h.wait_closed(deadline.saturating_duration_since(Instant::now()));
                }
                handles
            })
            .await;
            let reply = match waited {
                Ok(handles) => {
                    let done = handles
                        .iter()
                        .all(|h| h.stats.state() != RecordState::Recording);
                    let dropped: u64 = handles.iter().map(|h| h.stats.snapshot().dropped).sum();
                    Ok(json!({ "uri": uri, "files": files, "dropped": dropped, "closed": done }))
                }
                Err(_) => Err(ApiError::new(ErrorCode::InternalError, "stop failed")),
            };
            let _ = tx.send(reply);
        });
        Reply::Wait(rx)
    }

    fn emit_record_stopped(&mut self, id: &SessionId) {
        let Some(rec) = self.sessions.get(id).and_then(|s| s.recording.as_ref()) else {
            return;
        };
        let body = json!({ "uri": rec.uri, "status": "stopped", "dropped": rec.dropped() });
        tracing::info!(session_id = %id, uri = %rec.uri, "recording stopped");
        self.emit_session(id, "record", body);
    }

    /// The session is being destroyed (already out of the table): its legs close, which
    /// closes the files; subscribers hear `record stopped` before `destroyed`.
    pub(super) fn recording_ended(&mut self, id: &SessionId, s: &mut Session) {
        let Some(rec) = s.recording.as_mut().filter(|r| r.active) else {
            return;
        };
        rec.active = false;
        if let Some(d) = rec.data.as_mut() {
            d.sink = None;
        }
        let body = json!({ "uri": rec.uri, "status": "stopped", "dropped": rec.dropped() });
        self.emit_session(id, "record", body);
    }
}
