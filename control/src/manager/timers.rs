//! The actor's deadlines: a heap it owns, not a task per timer. The run loop sleeps until the
//! earliest; tests fire them with whatever `now` they like (simulated time).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use super::Timer;

#[derive(Debug, Default)]
pub struct Timers {
    /// (deadline, id), earliest first.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Timer>,
    next_id: u64,
}

impl Timers {
    pub fn schedule(&mut self, at: Instant, timer: Timer) {
        let id = self.next_id;
        self.next_id += 1;
        self.heap.push(Reverse((at, id)));
        self.pending.insert(id, timer);
    }

    /// When the earliest timer is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The earliest timer due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let Reverse((at, id)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.pending.remove(&id)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::session::ConnId;
    use std::time::Duration;

    #[test]
    fn timers_fire_in_deadline_order_once_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for (ms, conn) in [(30, 3), (10, 1), (20, 2), (10, 4)] {
            t.schedule(
                t0 + Duration::from_millis(ms),
                Timer::Grace { conn: ConnId(conn) },
            );
        }
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert!(t.pop_due(t0).is_none(), "nothing due yet");
        let mut fired = Vec::new();
        while let Some(Timer::Grace { conn }) = t.pop_due(t0 + Duration::from_millis(20)) {
            fired.push(conn.0);
        }
        assert_eq!(fired, [1, 4, 2]);
        assert_eq!(t.len(), 1);
        assert!(matches!(
            t.pop_due(t0 + Duration::from_secs(1)),
            Some(Timer::Grace { conn: ConnId(3) })
        ));
        assert_eq!(t.next_deadline(), None);
    }
}
