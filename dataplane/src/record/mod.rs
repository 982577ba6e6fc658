//! Recording: legs copy packets into bounded per-recording rings; one writer thread spools them
//! to Janus-compatible `.mjr` files.
//!
//! - [`Dataplane::open_recording`](crate::Dataplane::open_recording) creates `NAME.mjr.tmp`
//!   and returns a [`RecordSink`] (the producer end) and a [`Recording`] handle (counters and a
//!   "closed" signal). Control installs the sink on a leg with `Command::Record`.
//! - The worker owning the leg pushes each packet with its arrival time into the sink: a copy
//!   into a pre-allocated slot, never a lock, an allocation or a wait. A full ring (a slow disk)
//!   is a counted drop; forwarding is never held up.
//! - The writer thread drains every ring about every [`writer::TICK`] and writes what it got with
//!   one `write` per recording, so after a crash (even `kill -9`) the file is complete up to the
//!   last pass. When the last sink is dropped (`Command::Record { sink: None }`, the leg closed,
//!   the data plane stopped) it writes the rest, syncs, renames the file to `NAME.mjr` and
//!   signals the handle.
//! - [`Dataplane::open_data_recording`](crate::Dataplane::open_data_recording) is the same for
//!   data-channel messages, which control (not a worker) hands to a bounded queue through a
//!   [`DataSink`]; the writer writes them as Janus data frames.

mod data;
pub mod mjr;
mod spool;
#[cfg(test)]
mod tap_tests;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

pub use data::{DATA_QUEUE_BYTES, DATA_QUEUE_MESSAGES, DataSink};
pub use spool::{RecordSink, SLOT_BYTES};
pub(crate) use writer::Recorder;

use crate::api::{MediaKind, Pt};

/// Ring slots per recording when the spec asks for 0: about 10 s of 50 packet/s audio, or 2.5 s
/// of 2 Mbit/s video, i.e. far more than the writer's pace (and ~770 KB of memory).
pub const DEFAULT_CAPACITY: usize = 512;

/// Which packets of a leg a recording takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tap {
    /// What the leg's peer sends (echo, proxy and publisher legs).
    Received,
    /// What the leg sends to its peer, after rewriting (listener legs, which receive nothing).
    Sent,
}

/// What to record and where.
#[derive(Clone, Debug)]
pub struct RecordSpec {
    /// Folder of the file; must exist.
    pub dir: PathBuf,
    /// File name without extension: the file is `NAME.mjr.tmp`, then `NAME.mjr`.
    pub name: String,
    pub kind: MediaKind,
    /// Janus's codec name for the info header (`opus`, `pcmu`, `vp8`, ...).
    pub codec: String,
    pub tap: Tap,
    /// Record only this payload type (the negotiated codec), when set.
    pub pt: Option<Pt>,
    /// Ring slots; 0 = [`DEFAULT_CAPACITY`].
    pub capacity: usize,
}

/// Where a recording stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Packets are being written to `NAME.mjr.tmp`.
    Recording,
    /// Closed and renamed to `NAME.mjr`.
    Done,
    /// A write failed: the file holds what was written before (and is still renamed on close).
    Failed,
}

impl RecordState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Recording => "recording",
            RecordState::Done => "done",
            RecordState::Failed => "failed",
        }
    }
}

/// Live counters of one recording. `dropped` is bumped by sinks (ring full) and by the writer
/// (failed writes); the rest only by the writer.
#[derive(Debug, Default)]
pub struct RecordingStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    duration_ms: AtomicU64,
    state: AtomicU8,
}

/// A point-in-time copy of [`RecordingStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordingSnapshot {
    /// Packets written to the file.
    pub packets: u64,
    /// Bytes written to the file (header included).
    pub bytes: u64,
    /// Packets lost: ring full (slow disk) or a failed write.
    pub dropped: u64,
    /// Offset of the last packet written, in ms.
    pub duration_ms: u64,
    pub state: RecordState,
}

impl RecordingStats {
    pub fn snapshot(&self) -> RecordingSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RecordingSnapshot {
            packets: l(&self.packets),
            bytes: l(&self.bytes),
            dropped: l(&self.dropped),
            duration_ms: l(&self.duration_ms),
            state: self.state(),
        }
    }

    pub fn state(&self) -> RecordState {
        match self.state.load(Ordering::Acquire) {
            0 => RecordState::Recording,
            1 => RecordState::Done,
            _ => RecordState::Failed,
        }
    }

    /// Several sinks may count at once: a locked add, only ever on the drop path.
    pub(crate) fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn set_state(&self, s: RecordState) {
        let v = match s {
            RecordState::Recording => 0,
            RecordState::Done => 1,
            RecordState::Failed => 2,
        };
        self.state.store(v, Ordering::Release);
    }

    /// Writer-only counters (single writer: load + store).
    fn wrote(&self, packets: u64, bytes: u64, duration_ms: u64) {
        let add = |c: &AtomicU64, n: u64| c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        add(&self.packets, packets);
        add(&self.bytes, bytes);
        self.duration_ms.store(duration_ms, Ordering::Relaxed);
    }
}

/// Control's handle on a recording: where it is, its counters, and when it is closed.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The final path (`NAME.mjr`); `NAME.mjr.tmp` while recording.
    pub path: PathBuf,
    pub stats: Arc<RecordingStats>,
    /// Disconnected once the writer has finished the file.
    closed: Receiver<()>,
}

impl Recording {
    /// Waits (at most `timeout`) until the file is finished and renamed; true if it is.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        if self.stats.state() != RecordState::Recording {
            return true;
        }
        match self.closed.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }
}
