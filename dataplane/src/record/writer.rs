//! The writer thread: drains every recording's ring, encodes `.mjr` frames and writes them.
//!
//! One pass per [`TICK`]: for each recording, pop everything queued, encode it into a reused
//! buffer, and hand the buffer to the kernel with one `write`, so the file on disk is whole up
//! to the last pass even if the process dies (`kill -9`). A recording whose sinks are all gone
//! is drained a last time, synced, renamed from `NAME.mjr.tmp` to `NAME.mjr`, and its handle is
//! signalled. The encoding ([`Encoder`]) takes times as arguments and is tested without a clock.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};

use super::data::{DataQueue, DataSink, data_queue};
use super::mjr::{self, MjrInfo};
use super::spool::Spool;
use super::{DEFAULT_CAPACITY, RecordSink, RecordSpec, RecordState, Recording, RecordingStats};
use crate::api::{Error, MediaKind};

/// How often the writer drains the rings and writes (a flush to the kernel every pass).
pub const TICK: Duration = Duration::from_millis(20);
/// How long the writer waits for work when nothing is being recorded.
const IDLE: Duration = Duration::from_secs(1);

enum WriterMsg {
    Open(Box<Track>),
    Shutdown,
}

/// Handle to the writer thread, owned by the `Dataplane`.
pub(crate) struct Recorder {
    msgs: Sender<WriterMsg>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Recorder {
    pub(crate) fn start() -> io::Result<Recorder> {
        let (tx, rx) = unbounded();
        let thread = std::thread::Builder::new()
            .name("sluice-recorder".into())
            .spawn(move || run(rx))?;
        Ok(Recorder {
            msgs: tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Creates `NAME.mjr.tmp` (refusing to replace `NAME.mjr` or `NAME.mjr.tmp`) and hands it
    /// to the writer thread.
    pub(crate) fn open(&self, spec: RecordSpec) -> Result<(RecordSink, Recording), Error> {
        let stats = Arc::new(RecordingStats::default());
        let capacity = match spec.capacity {
            0 => DEFAULT_CAPACITY,
            n => n,
        };
        let (spool, sink) =
            Spool::new(capacity, spec.tap, spec.pt.map(|p| p.0), Arc::clone(&stats));
        let recording = self.open_track(
            &spec.dir,
            &spec.name,
            Some((spec.kind, spec.codec)),
            Source::Rtp(spool),
            stats,
        )?;
        Ok((sink, recording))
    }

    /// Like [`Recorder::open`], for a data-channel recording: its sink takes whole messages.
    pub(crate) fn open_data(&self, dir: &Path, name: &str) -> Result<(DataSink, Recording), Error> {
        let stats = Arc::new(RecordingStats::default());
        let (queue, sink) = data_queue(Arc::clone(&stats));
        let recording = self.open_track(dir, name, None, Source::Data(queue), stats)?;
        Ok((sink, recording))
    }

    /// Creates `NAME.mjr.tmp` (refusing to replace `NAME.mjr` or `NAME.mjr.tmp`) and hands
    /// the track to the writer thread. `media` is `None` for data.
    fn open_track(
        &self,
        dir: &Path,
        name: &str,
        media: Option<(MediaKind, String)>,
        source: Source,
        stats: Arc<RecordingStats>,
    ) -> Result<Recording, Error> {
        let path = dir.join(format!("{name}.mjr"));
        let tmp = dir.join(format!("{name}.mjr.tmp"));
        if path.exists() {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            )));
        }
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let (closed_tx, closed_rx) = bounded(1);
        let created_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let track = Track {
            encoder: Encoder::with(media, Instant::now(), created_us),
            source,
            stats: Arc::clone(&stats),
            file,
            tmp,
            path: path.clone(),
            buf: Vec::with_capacity(64 * 1024),
            failed: false,
            _closed: closed_tx,
        };
        self.msgs
            .send(WriterMsg::Open(Box::new(track)))
            .map_err(|_| Error::Io(io::Error::other("the recording writer has stopped")))?;
        Ok(Recording {
            path,
            stats,
            closed: closed_rx,
        })
    }

    /// Finishes every open recording and stops the thread.
    pub(crate) fn shutdown(&self) {
        let _ = self.msgs.send(WriterMsg::Shutdown);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the recording writer panicked");
        }
    }
}

fn run(rx: Receiver<WriterMsg>) {
    let mut tracks: Vec<Track> = Vec::new();
    loop {
        let wait = if tracks.is_empty() { IDLE } else { TICK };
        let mut stop = false;
        match rx.recv_timeout(wait) {
            Ok(WriterMsg::Open(t)) => tracks.push(*t),
            Ok(WriterMsg::Shutdown) | Err(RecvTimeoutError::Disconnected) => stop = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        while let Ok(msg) = rx.try_recv() {
            match msg {
                WriterMsg::Open(t) => tracks.push(*t),
                WriterMsg::Shutdown => stop = true,
            }
        }
        let now = Instant::now();
        if stop {
            for mut t in tracks.drain(..) {
                t.pass(now);
                t.finish();
            }
            return;
        }
        let mut i = 0;
        while i < tracks.len() {
            if tracks[i].pass(now) {
                tracks.swap_remove(i).finish();
            } else {
                i += 1;
            }
        }
    }
}

/// Where a track's packets come from.
enum Source {
    /// Packets a worker copied into a ring.
    Rtp(Arc<Spool>),
    /// Data-channel messages control queued.
    Data(DataQueue),
}

/// One open recording on the writer thread.
struct Track {
    encoder: Encoder,
    source: Source,
    stats: Arc<RecordingStats>,
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    /// Frames of the current pass, reused.
    buf: Vec<u8>,
    /// A write failed: later packets are counted as dropped, not written.
    failed: bool,
    /// Dropped when the file is finished: wakes `Recording::wait_closed`.
    _closed: Sender<()>,
}

impl Track {
    /// Drains the source and writes what it held; true if the source is closed and was
    /// drained for the last time.
    fn pass(&mut self, now: Instant) -> bool {
        let (encoder, buf) = (&mut self.encoder, &mut self.buf);
        let (packets, closed) = match &self.source {
            Source::Rtp(spool) => {
                // Closed is read before the last drain: every packet pushed before is seen.
                let closed = spool.is_closed();
                let n = spool.drain(|slot| encoder.push(slot.at.unwrap_or(now), slot.bytes(), buf));
                (n, closed)
            }
            Source::Data(queue) => queue.drain(|m| encoder.push_data(m.at, &m.bytes, buf)),
        };
        self.write_out(packets as u64);
        closed
    }

    fn write_out(&mut self, packets: u64) {
        if self.buf.is_empty() {
            return;
        }
        let stats = &self.stats;
        if self.failed {
            stats.count_dropped(packets);
        } else if let Err(e) = self.file.write_all(&self.buf) {
            tracing::error!(path = %self.tmp.display(), "recording write failed: {e}");
            self.failed = true;
            stats.set_state(RecordState::Failed);
            stats.count_dropped(packets);
        } else {
            stats.wrote(
                packets,
                self.buf.len() as u64,
                u64::from(self.encoder.last_offset_ms),
            );
        }
        self.buf.clear();
    }

    /// Writes the header if no packet ever came, syncs, renames, signals.
    fn finish(mut self) {
        self.encoder.finish(&mut self.buf);
        self.write_out(0);
        if let Err(e) = self.file.sync_data() {
            tracing::warn!(path = %self.tmp.display(), "recording sync failed: {e}");
        }
        if let Err(e) = std::fs::rename(&self.tmp, &self.path) {
            tracing::error!(path = %self.tmp.display(), "cannot rename the recording: {e}");
            self.stats.set_state(RecordState::Failed);
        } else if !self.failed {
            self.stats.set_state(RecordState::Done);
        }
        tracing::debug!(path = %self.path.display(), stats = ?self.stats.snapshot(), "recording closed");
    }
}

/// Turns packets with arrival times into `.mjr` bytes: the header on the first packet (Janus's
/// `u` is that packet's time), then one frame each with its offset from the first packet.
pub(crate) struct Encoder {
    /// The media and its codec; `None` for data channels.
    media: Option<(MediaKind, String)>,
    created_at: Instant,
    created_us: u64,
    first: Option<Instant>,
    pub(crate) last_offset_ms: u32,
}

impl Encoder {
    #[cfg(test)]
    pub(crate) fn new(
        kind: MediaKind,
        codec: String,
        created_at: Instant,
        created_us: u64,
    ) -> Self {
        Encoder::with(Some((kind, codec)), created_at, created_us)
    }

    pub(crate) fn with(
        media: Option<(MediaKind, String)>,
        created_at: Instant,
        created_us: u64,
    ) -> Self {
        Encoder {
            media,
            created_at,
            created_us,
            first: None,
            last_offset_ms: 0,
        }
    }

    /// Wall-clock µs of `at`, from the creation time.
    fn wall_us(&self, at: Instant) -> u64 {
        self.created_us + at.saturating_duration_since(self.created_at).as_micros() as u64
    }

    fn header(&self, first: Instant, out: &mut Vec<u8>) {
        let first_us = self.wall_us(first);
        match &self.media {
            Some((kind, codec)) => {
                let info = MjrInfo {
                    kind: *kind,
                    codec: codec.clone(),
                    created_us: self.created_us,
                    first_us,
                };
                mjr::write_header(&info, out);
            }
            None => mjr::write_data_header(self.created_us, first_us, out),
        }
    }

    /// The offset of `at` from the first packet (writing the header before the first one).
    /// Offsets never go backwards, even if arrival times do (several sinks).
    fn offset(&mut self, at: Instant, out: &mut Vec<u8>) -> u32 {
        let first = match self.first {
            Some(f) => f,
            None => {
                self.header(at, out);
                self.first = Some(at);
                at
            }
        };
        let offset = at.saturating_duration_since(first).as_millis();
        let offset = u32::try_from(offset)
            .unwrap_or(u32::MAX)
            .max(self.last_offset_ms);
        self.last_offset_ms = offset;
        offset
    }

    /// Appends one packet (and the header before the first one).
    pub(crate) fn push(&mut self, at: Instant, rtp: &[u8], out: &mut Vec<u8>) {
        let offset = self.offset(at, out);
        mjr::write_frame(offset, &rtp[..rtp.len().min(mjr::MAX_FRAME)], out);
    }

    /// Appends one data-channel message as Janus's data frames: a message longer than
    /// [`mjr::MAX_DATA_FRAME`] takes several, with the same time.
    pub(crate) fn push_data(&mut self, at: Instant, msg: &[u8], out: &mut Vec<u8>) {
        let offset = self.offset(at, out);
        let at_us = self.wall_us(at);
        for chunk in msg.chunks(mjr::MAX_DATA_FRAME) {
            mjr::write_data_frame(offset, at_us, chunk, out);
        }
    }

    /// Makes an empty recording a valid file: the header alone, `u` = `s`.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.first.is_none() {
            self.header(self.created_at, out);
            self.first = Some(self.created_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Pt;
    use crate::record::Tap;
    use crate::record::mjr::{MjrFrame, parse};

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(format!("payload-{seq}").as_bytes());
        p
    }

    #[test]
    fn mjr_round_trip_with_a_fake_clock() {
        let t0 = Instant::now();
        let mut enc = Encoder::new(MediaKind::Audio, "pcmu".into(), t0, 1_000_000);
        let mut out = Vec::new();
        // Arrivals 5 ms after creation, then every 20 ms with some jitter.
        let arrivals: Vec<u64> = (0..50u64).map(|i| 5 + i * 20 + (i * 7) % 3).collect();
        for (i, ms) in arrivals.iter().enumerate() {
            enc.push(t0 + Duration::from_millis(*ms), &rtp(i as u16), &mut out);
        }
        enc.finish(&mut out);
        let file = parse(&out).expect("parses");
        assert_eq!(
            file.info_json,
            r#"{"t":"a","c":"pcmu","s":1000000,"u":1005000}"#
        );
        assert_eq!(file.trailing, 0);
        assert_eq!(file.frames.len(), 50);
        for (i, f) in file.frames.iter().enumerate() {
            assert_eq!(f.rtp, rtp(i as u16));
            assert_eq!(u64::from(f.offset_ms), arrivals[i] - arrivals[0]);
        }
    }

    #[test]
    fn empty_recording_is_a_valid_file() {
        let t0 = Instant::now();
        let mut enc = Encoder::new(MediaKind::Video, "vp8".into(), t0, 42);
        let mut out = Vec::new();
        enc.finish(&mut out);
        let file = parse(&out).expect("parses");
        assert_eq!(file.info_json, r#"{"t":"v","c":"vp8","s":42,"u":42}"#);
        assert!(file.frames.is_empty());
    }

    #[test]
    fn offsets_never_go_backwards() {
        let t0 = Instant::now();
        let mut enc = Encoder::new(MediaKind::Audio, "opus".into(), t0, 0);
        let mut out = Vec::new();
        for ms in [10, 50, 30, 70] {
            enc.push(t0 + Duration::from_millis(ms), &rtp(1), &mut out);
        }
        let offsets: Vec<u32> = parse(&out)
            .expect("parses")
            .frames
            .iter()
            .map(|f| f.offset_ms)
            .collect();
        assert_eq!(offsets, vec![0, 40, 40, 60]);
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-dp-record-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn writer_thread_spools_closes_and_renames() {
        let dir = temp_dir("writer");
        let rec = Recorder::start().expect("writer thread");
        let spec = RecordSpec {
            dir: dir.clone(),
            name: "call-audio".into(),
            kind: MediaKind::Audio,
            codec: "pcmu".into(),
            tap: Tap::Received,
            pt: Some(Pt(0)),
            capacity: 64,
        };
        let (mut sink, handle) = rec.open(spec.clone()).expect("open");
        assert!(dir.join("call-audio.mjr.tmp").exists());
        let t0 = Instant::now();
        for i in 0..40u16 {
            // The ring holds 64: no drop even if the writer has not run yet.
            assert!(sink.push(Some(t0 + Duration::from_millis(u64::from(i) * 20)), &rtp(i)));
        }
        // A second recording with the same name is refused while the first is open.
        assert!(rec.open(spec).is_err());
        drop(sink);
        assert!(
            handle.wait_closed(Duration::from_secs(10)),
            "closed in time"
        );
        let snap = handle.stats.snapshot();
        assert_eq!(
            (snap.packets, snap.dropped, snap.state),
            (40, 0, RecordState::Done)
        );
        assert_eq!(snap.duration_ms, 780);
        assert!(!dir.join("call-audio.mjr.tmp").exists());
        let bytes = std::fs::read(&handle.path).expect("renamed file");
        assert_eq!(bytes.len() as u64, snap.bytes);
        let file = parse(&bytes).expect("parses");
        assert_eq!(file.frames.len(), 40);
        assert_eq!(file.frames[39].offset_ms, 780);
        rec.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn data_recording_writes_janus_data_frames() {
        let dir = temp_dir("data");
        let rec = Recorder::start().expect("writer thread");
        let (sink, handle) = rec.open_data(&dir, "chat-data").expect("open");
        assert!(dir.join("chat-data.mjr.tmp").exists());
        let t0 = Instant::now();
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        assert!(sink.push(t0, b"hello"));
        assert!(
            sink.push(t0 + Duration::from_millis(30), b""),
            "empty: skipped"
        );
        assert!(sink.push(t0 + Duration::from_millis(40), &big));
        drop(sink);
        assert!(handle.wait_closed(Duration::from_secs(10)));
        let snap = handle.stats.snapshot();
        assert_eq!(
            (snap.packets, snap.dropped, snap.state),
            (2, 0, RecordState::Done)
        );
        let file = parse(&std::fs::read(&handle.path).expect("renamed")).expect("parses");
        assert!(
            file.info_json.starts_with(r#"{"t":"d","c":"text","s":"#),
            "{}",
            file.info_json
        );
        let frames: Vec<(u32, &[u8])> = file
            .frames
            .iter()
            .map(|f| (f.offset_ms, &f.rtp[8..]))
            .collect();
        // The long message takes two frames, both at its time.
        assert_eq!(
            frames,
            vec![
                (0, &b"hello"[..]),
                (40, &big[..mjr::MAX_DATA_FRAME]),
                (40, &big[mjr::MAX_DATA_FRAME..])
            ]
        );
        let time = |f: &MjrFrame| u64::from_be_bytes(f.rtp[..8].try_into().expect("8 bytes"));
        assert_eq!(time(&file.frames[1]) - time(&file.frames[0]), 40_000);
        assert_eq!(time(&file.frames[1]), time(&file.frames[2]));
        rec.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_data_queue_drops_and_counts() {
        let stats = Arc::new(RecordingStats::default());
        let (_queue, sink) = data_queue(Arc::clone(&stats));
        let msg = vec![7u8; 60_000];
        let fits = super::super::DATA_QUEUE_BYTES / msg.len();
        let now = Instant::now();
        for _ in 0..fits {
            assert!(sink.push(now, &msg));
        }
        assert!(!sink.push(now, &msg), "over the byte bound");
        assert!(sink.push(now, b"small"), "what still fits goes on");
        assert_eq!(stats.snapshot().dropped, 1);
    }

    #[test]
    fn shutdown_finishes_open_recordings() {
        let dir = temp_dir("shutdown");
        let rec = Recorder::start().expect("writer thread");
        let spec = RecordSpec {
            dir: dir.clone(),
            name: "v".into(),
            kind: MediaKind::Video,
            codec: "vp8".into(),
            tap: Tap::Sent,
            pt: None,
            capacity: 0,
        };
        let (mut sink, handle) = rec.open(spec).expect("open");
        assert!(sink.push(None, &rtp(1)));
        rec.shutdown();
        assert!(handle.wait_closed(Duration::from_secs(1)));
        let file = parse(&std::fs::read(dir.join("v.mjr")).expect("renamed")).expect("parses");
        assert_eq!(file.frames.len(), 1);
        drop(sink);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
