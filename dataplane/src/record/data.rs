//! Data-channel recordings: control hands each message (a copy) to a bounded queue, never
//! waiting; the writer thread writes them to a Janus data `.mjr` (`"t":"d"`, codec `text`)
//! with the rest of the recordings. A full queue (a slow disk) is a counted drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use super::RecordingStats;

/// Messages queued per data recording at most.
pub const DATA_QUEUE_MESSAGES: usize = 4096;
/// Bytes queued per data recording at most.
pub const DATA_QUEUE_BYTES: usize = 8 << 20;

/// One message waiting for the writer.
pub(crate) struct DataMsg {
    pub(crate) at: Instant,
    pub(crate) bytes: Vec<u8>,
}

/// The producer end of a data-channel recording. Dropping it finishes the file.
#[derive(Debug)]
pub struct DataSink {
    tx: Sender<DataMsg>,
    queued: Arc<AtomicUsize>,
    stats: Arc<RecordingStats>,
}

/// The writer's end.
pub(crate) struct DataQueue {
    rx: Receiver<DataMsg>,
    queued: Arc<AtomicUsize>,
}

pub(crate) fn data_queue(stats: Arc<RecordingStats>) -> (DataQueue, DataSink) {
    let (tx, rx) = crossbeam_channel::bounded(DATA_QUEUE_MESSAGES);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        DataQueue {
            rx,
            queued: Arc::clone(&queued),
        },
        DataSink { tx, queued, stats },
    )
}

impl DataSink {
    /// Queues a copy of one message received (or sent) at `at`; never waits. Returns false if
    /// it was dropped (and counted): the queue is full. An empty message has nothing to
    /// record and is skipped, as Janus does.
    pub fn push(&self, at: Instant, msg: &[u8]) -> bool {
        if msg.is_empty() {
            return true;
        }
        if self.queued.load(Ordering::Relaxed) + msg.len() > DATA_QUEUE_BYTES {
            self.stats.count_dropped(1);
            return false;
        }
        self.queued.fetch_add(msg.len(), Ordering::Relaxed);
        let m = DataMsg {
            at,
            bytes: msg.to_vec(),
        };
        match self.tx.try_send(m) {
            Ok(()) => true,
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => {
                self.queued.fetch_sub(m.bytes.len(), Ordering::Relaxed);
                self.stats.count_dropped(1);
                false
            }
        }
    }
}

impl DataQueue {
    /// Hands every queued message, oldest first, to `f`. Returns how many, and whether the
    /// sink is gone and everything it queued has been handed over.
    pub(crate) fn drain(&self, mut f: impl FnMut(&DataMsg)) -> (usize, bool) {
        let mut n = 0;
        loop {
            match self.rx.try_recv() {
                Ok(m) => {
                    self.queued.fetch_sub(m.bytes.len(), Ordering::Relaxed);
                    f(&m);
                    n += 1;
                }
                Err(TryRecvError::Empty) => return (n, false),
                Err(TryRecvError::Disconnected) => return (n, true),
            }
        }
    }
}
