//! A bounded soak: plain echo sessions created, carrying media and destroyed round after
//! round, on each backend in turn. Afterwards the process holds exactly the descriptors it
//! held after the first rounds (every leg's sockets closed, every port pair back in the
//! pool), and the heap is back where it was: nothing a session allocates outlives it.
//!
//! One test, the backends in sequence: descriptors and the heap are counted for the whole
//! process (the server runs in it), so nothing else may run beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::json;
use sluice_dataplane::api::IoMode;
use sluice_tests::*;

/// Counts the bytes live on the heap (the server's and the test's: one process).
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Sessions alive at once in a round.
const SESSIONS: usize = 20;
/// Rounds measured after the warm-up.
const ROUNDS: u16 = 30;
/// RTP packets each session echoes per round.
const PACKETS: u16 = 5;
/// What the heap may differ by between two quiet moments: buffers the runtime and the
/// WebSocket keep or drop on their own schedule, far below one round's sessions.
const HEAP_SLACK: i64 = 256 << 10;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("procfs").count()
}

/// One round: every peer gets an echo session, sends media through it and gets it back,
/// then every session is destroyed (each destroy answers once its ports are free).
fn round(c: &mut Client, peers: &[Peer], n: u16) {
    let sessions: Vec<(String, SocketAddr)> = peers
        .iter()
        .map(|p| {
            let r = c
                .session(
                    "create",
                    json!({"type": "echo", "subscribe": false,
                        "offer": {"sdp": phone_sdp(p.port()), "sdp_type": "rtp"}}),
                )
                .expect("create echo");
            (
                str_of(&r, "session_id"),
                server_addr(&sdp_in(&r, "answer"), 0),
            )
        })
        .collect();
    for (p, (_, to)) in peers.iter().zip(&sessions) {
        for k in 0..PACKETS {
            let seq = n.wrapping_mul(PACKETS).wrapping_add(k);
            p.send(
                *to,
                &Rtp::new(0, seq, u32::from(seq) * 160, 0x50a6, &[7; 160]).to_bytes(),
            );
        }
        let back = p.recv_n(usize::from(PACKETS));
        assert!(back.iter().all(|r| r.payload == [7; 160]), "echoed intact");
    }
    for (id, _) in sessions {
        c.session("destroy", json!({"session_id": id}))
            .expect("destroy");
    }
}

fn soak(server: &Server) {
    let mut c = server.client();
    let peers: Vec<Peer> = (0..SESSIONS).map(|_| Peer::new()).collect();
    // Warm-up: tables grow to a round's size, lazily made things are made.
    for n in 0..3 {
        round(&mut c, &peers, n);
    }
    let (fds, heap) = (open_fds(), LIVE.load(Ordering::Relaxed));
    for n in 3..3 + ROUNDS {
        round(&mut c, &peers, n);
    }
    assert_eq!(open_fds(), fds, "descriptors after {ROUNDS} rounds");
    let grown = LIVE.load(Ordering::Relaxed) - heap;
    assert!(
        grown <= HEAP_SLACK,
        "the heap grew by {grown} bytes over {ROUNDS} rounds of {SESSIONS} sessions"
    );
}

#[test]
fn sessions_leave_nothing_behind() {
    for io in [IoMode::Mmsg, IoMode::Uring] {
        if let Some(server) = Server::start(io) {
            soak(&server);
        }
    }
}
