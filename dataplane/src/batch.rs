//! Caller-owned transmit batch: fixed slots allocated once per worker, reused every round.

use std::net::SocketAddr;

/// Index of a leg in the worker's table; the driver maps sockets to `(Slot, is_rtcp_socket)`.
pub type Slot = u32;

/// A socket owned by a driver: the leg's slot and whether it is the RTCP (port + 1) socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketRef {
    pub slot: Slot,
    pub rtcp: bool,
}

impl SocketRef {
    /// Dense token for driver tables: `slot * 2 + rtcp`.
    pub fn token(self) -> usize {
        self.slot as usize * 2 + usize::from(self.rtcp)
    }

    pub fn from_token(token: usize) -> Self {
        SocketRef {
            slot: (token / 2) as Slot,
            rtcp: token % 2 == 1,
        }
    }
}

/// Largest datagram the data plane forwards (receive buffers are sized to match).
pub const MAX_DATAGRAM: usize = 1500;
/// Room per transmit slot: a forwarded datagram plus what SRTP protection appends (tag, and
/// the SRTCP index).
pub const TX_SLOT: usize = MAX_DATAGRAM + 32;
/// Room kept before every slot's datagram for the IP (IPv6 at most) and UDP headers of a raw
/// send (`rawsend`): the frame is then contiguous, with no copy.
pub const HEADROOM: usize = 48;
/// A slot in the buffer: headroom, then the datagram.
const STRIDE: usize = HEADROOM + TX_SLOT;
/// Largest datagram sent with UDP GSO: every segment must fit the path MTU, and 1,200 bytes
/// plus IPv6 and UDP headers fits the smallest IPv6 MTU (1,280). Larger ones leave singly.
pub const GSO_MAX_SEGMENT: usize = 1200;
/// Most datagrams in one UDP GSO send (the kernel accepts 64 at least).
pub const GSO_MAX_SEGMENTS: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Meta {
    via: SocketRef,
    dest: SocketAddr,
    len: usize,
}

/// Datagrams waiting to be sent: a flat buffer of `capacity` slots of `TX_SLOT` bytes, each
/// after `HEADROOM` bytes of its own.
#[derive(Debug)]
pub struct TxBatch {
    buf: Box<[u8]>,
    meta: Vec<Meta>,
    capacity: usize,
}

impl TxBatch {
    pub fn new(capacity: usize) -> Self {
        TxBatch {
            buf: vec![0u8; capacity * STRIDE].into_boxed_slice(),
            meta: Vec::with_capacity(capacity),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.meta.len() == self.capacity
    }

    /// Room left; drivers flush when a received batch could overflow it.
    pub fn remaining(&self) -> usize {
        self.capacity - self.meta.len()
    }

    pub fn clear(&mut self) {
        self.meta.clear();
    }

    /// Copies `data` into the next slot and lets `edit` rewrite it in place: it gets the
    /// whole slot (`TX_SLOT` bytes, `data` at the start) and the length, and returns the final
    /// length, or `None` to give the slot back. `false` when full, too large or refused.
    #[inline]
    pub fn push(
        &mut self,
        via: SocketRef,
        dest: SocketAddr,
        data: &[u8],
        edit: impl FnOnce(&mut [u8], usize) -> Option<usize>,
    ) -> bool {
        if self.is_full() || data.len() > MAX_DATAGRAM {
            return false;
        }
        let start = self.meta.len() * STRIDE + HEADROOM;
        let slot = &mut self.buf[start..start + TX_SLOT];
        slot[..data.len()].copy_from_slice(data);
        match edit(slot, data.len()) {
            Some(len) if len <= TX_SLOT => {
                self.meta.push(Meta { via, dest, len });
                true
            }
            _ => false,
        }
    }

    /// The queued datagrams in order: socket, destination, bytes.
    pub fn iter(&self) -> impl Iterator<Item = (SocketRef, SocketAddr, &[u8])> + '_ {
        self.meta.iter().enumerate().map(|(i, m)| {
            let start = i * STRIDE + HEADROOM;
            (m.via, m.dest, &self.buf[start..start + m.len])
        })
    }

    /// How many datagrams from slot `first` on can leave as one UDP GSO send: those after it
    /// go through the same socket to the same destination with the same length, except that
    /// the last may be shorter (the kernel cuts the payload at every `len` bytes). 1 when
    /// `first` is larger than `GSO_MAX_SEGMENT`.
    #[inline]
    pub fn gso_run(&self, first: usize) -> usize {
        let head = self.meta[first];
        if head.len > GSO_MAX_SEGMENT {
            return 1;
        }
        let mut n = 1;
        for next in &self.meta[first + 1..] {
            if n == GSO_MAX_SEGMENTS
                || next.via != head.via
                || next.dest != head.dest
                || next.len > head.len
                || next.len == 0
            {
                break;
            }
            n += 1;
            if next.len < head.len {
                break;
            }
        }
        n
    }

    /// Slot `i`'s buffer, for drivers that hand pointers to the kernel.
    pub fn get(&self, i: usize) -> (SocketRef, SocketAddr, &[u8]) {
        let m = self.meta[i];
        let start = i * STRIDE + HEADROOM;
        (m.via, m.dest, &self.buf[start..start + m.len])
    }

    /// Slot `i`'s headroom and datagram, for `frame` to write headers into; returns what it
    /// returns (the part of the slot to send).
    pub fn frame<'a>(
        &'a mut self,
        i: usize,
        frame: impl FnOnce(&'a mut [u8]) -> &'a [u8],
    ) -> &'a [u8] {
        let start = i * STRIDE;
        let len = self.meta[i].len;
        frame(&mut self.buf[start..start + HEADROOM + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_batch_refuses_more() {
        let mut b = TxBatch::new(2);
        let via = SocketRef {
            slot: 0,
            rtcp: false,
        };
        let dest = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(b.push(via, dest, b"a", |_, len| Some(len)));
        assert!(b.push(via, dest, b"bb", |d, len| {
            d[0] = b'c';
            Some(len)
        }));
        assert!(!b.push(via, dest, b"c", |_, len| Some(len)));
        let got: Vec<_> = b.iter().map(|(_, _, d)| d.to_vec()).collect();
        assert_eq!(got, vec![b"a".to_vec(), b"cb".to_vec()]);
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn gso_runs_group_one_socket_destination_and_size() {
        let a = SocketRef {
            slot: 0,
            rtcp: false,
        };
        let b = SocketRef { slot: 1, ..a };
        let x = SocketAddr::from(([127, 0, 0, 1], 1));
        let y = SocketAddr::from(([127, 0, 0, 1], 2));
        let mut t = TxBatch::new(200);
        let push = |t: &mut TxBatch, via, dest, len: usize| {
            assert!(t.push(via, dest, &vec![0; len], |_, l| Some(l)))
        };
        // 0..3: a→x 100 B, the third shorter (ends the run); 3: a→x again; 4: b→x; 5: a→y;
        // 6..8: a→y 100 then 120 (longer: a new run); 8: a→y 1300 (too large for GSO).
        for (via, dest, len) in [
            (a, x, 100),
            (a, x, 100),
            (a, x, 40),
            (a, x, 100),
            (b, x, 100),
            (a, y, 100),
            (a, y, 120),
            (a, y, 120),
            (a, y, 1300),
        ] {
            push(&mut t, via, dest, len);
        }
        let runs: Vec<usize> = (0..t.len()).map(|i| t.gso_run(i)).collect();
        assert_eq!(runs, vec![3, 2, 1, 1, 1, 1, 2, 1, 1]);
        t.clear();
        for _ in 0..GSO_MAX_SEGMENTS + 5 {
            push(&mut t, a, x, 100);
        }
        assert_eq!(t.gso_run(0), GSO_MAX_SEGMENTS);
        assert_eq!(t.gso_run(GSO_MAX_SEGMENTS), 5);
    }

    #[test]
    fn every_slot_keeps_its_headroom() {
        let mut b = TxBatch::new(3);
        let via = SocketRef {
            slot: 0,
            rtcp: false,
        };
        let dest = SocketAddr::from(([127, 0, 0, 1], 1));
        for d in [&b"one"[..], b"two!", b"3"] {
            assert!(b.push(via, dest, d, |_, len| Some(len)));
        }
        let framed = b
            .frame(1, |f| {
                assert_eq!(f.len(), HEADROOM + 4);
                f[..HEADROOM].fill(b'h');
                f
            })
            .to_vec();
        assert_eq!(&framed[..HEADROOM], &[b'h'; HEADROOM]);
        assert_eq!(&framed[HEADROOM..], b"two!");
        let got: Vec<_> = b.iter().map(|(_, _, d)| d.to_vec()).collect();
        assert_eq!(got, vec![b"one".to_vec(), b"two!".to_vec(), b"3".to_vec()]);
    }

    #[test]
    fn oversized_datagram_is_refused() {
        let mut b = TxBatch::new(1);
        let via = SocketRef {
            slot: 0,
            rtcp: false,
        };
        let dest = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(!b.push(via, dest, &[0; MAX_DATAGRAM + 1], |_, len| Some(len)));
        assert!(
            !b.push(via, dest, b"x", |_, _| None),
            "refused by the editor"
        );
        assert!(b.is_empty());
    }
}
