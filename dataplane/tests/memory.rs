//! What the data plane allocates per call, counted by this test binary's global allocator (the
//! system allocator, counting the bytes of every live block), on a real `Dataplane` (real
//! sockets, real worker thread). A call is what a plain proxy session sets up: two legs, each
//! connected to the other. The budget is the performance issue's: under 4 KiB of data-plane
//! memory per call. The kernel's socket memory and the allocator's own headers are not
//! counted, and nothing here depends on the machine (no RSS, no page sizes).
//!
//! The worker's tables grow by doubling, so right after they grow they hold as much spare
//! capacity again as they use: reserved, not yet touched, not what the calls hold. The test
//! therefore adds calls one at a time over a doubling of their number and takes the fewest bytes
//! per call it sees: the point where the tables are fullest. (The most it sees, right after the
//! tables grew, is printed too.)
//!
//! One test in this binary, so nothing else allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use sluice_dataplane::Dataplane;
use sluice_dataplane::api::{
    Command, Config, GroupId, IoMode, LegInfo, LegSpec, MediaKind, Remote, Rewrite,
};

/// The system allocator, counting the bytes of the live blocks (as requested) and the blocks.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed straight to `System`; the counters are only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        // On failure the old block stays as it was.
        if !p.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live (bytes, blocks) of the whole process.
fn live() -> (isize, isize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_BLOCKS.load(Ordering::Relaxed),
    )
}

/// The data plane's budget per call (the performance issue's target).
const BUDGET: usize = 4096;
/// Calls are counted from `FROM` to `2 * FROM`: every table that grows by doubling is full at
/// one point of that range, whatever its first capacity.
const FROM: usize = 1024;
const MOST: usize = 2 * FROM;

fn open(dp: &Dataplane, group: u64, port: u16) -> LegInfo {
    let remote = Remote {
        rtp: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        rtcp: None,
        rtcp_mux: true,
    };
    dp.open_leg(LegSpec::plain(GroupId(group), MediaKind::Audio, remote))
        .expect("a free port")
}

/// A proxy call: two legs, what each one's peer sends going to the other's.
fn call(dp: &Dataplane, n: usize) -> (LegInfo, LegInfo) {
    let a = open(dp, n as u64, 9);
    let b = open(dp, n as u64, 9);
    for (from, to) in [(&a, &b), (&b, &a)] {
        dp.send(Command::Connect {
            from: from.id,
            to: to.id,
            kind: MediaKind::Audio,
            rewrite: Rewrite::default(),
        })
        .expect("the worker runs");
    }
    (a, b)
}

/// Returns once the worker has applied every command sent before (it handles its queue in
/// order, and `close_leg` waits for it). The leg's slot is free again afterwards, for the next
/// call's first leg.
fn barrier(dp: &Dataplane) {
    let leg = open(dp, 0, 9);
    dp.close_leg(leg.id).expect("just opened");
}

fn raise_open_file_limit(want: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return false;
        }
        if lim.rlim_cur < want && lim.rlim_max >= want {
            lim.rlim_cur = want;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur >= want
    }
}

/// What the calls hold, per call, over `FROM..=MOST` calls.
struct PerCall {
    /// Bytes where the tables are fullest: what the calls hold.
    fewest: usize,
    /// Bytes right after the tables grew: spare capacity included.
    most: usize,
    /// Live blocks where the bytes were fewest.
    blocks: f64,
}

fn measure(io: IoMode, port_lo: u16) -> PerCall {
    let config = Config {
        media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port_lo,
        port_hi: port_lo + (MOST * 4 + 64) as u16,
        workers: 1,
        io,
        pin: false,
        batch_wait: Duration::from_micros(500),
        // As `sluice` runs by default; each falls back where the kernel refuses.
        steer: true,
        raw_send: true,
    };
    let (dp, _events) = Dataplane::start(config).expect("the data plane starts");
    // Allocated once here, so the test's own bookkeeping is not counted per call.
    let mut calls = Vec::with_capacity(MOST);
    barrier(&dp);
    let (bytes0, blocks0) = live();
    let mut per_call = PerCall {
        fewest: usize::MAX,
        most: 0,
        blocks: 0.0,
    };
    for n in 0..MOST {
        calls.push(call(&dp, n));
        barrier(&dp);
        let count = calls.len();
        if count < FROM {
            continue;
        }
        let (bytes, blocks) = live();
        let bytes = (bytes - bytes0).max(0) as usize / count;
        if bytes < per_call.fewest {
            per_call.fewest = bytes;
            per_call.blocks = (blocks - blocks0) as f64 / count as f64;
        }
        per_call.most = per_call.most.max(bytes);
    }
    for (a, b) in calls {
        dp.close_leg(a.id).expect("open");
        dp.close_leg(b.id).expect("open");
    }
    dp.shutdown();
    per_call
}

#[test]
fn a_call_costs_the_data_plane_under_4_kib() {
    // Two sockets per call (rtcp-mux), plus the test's own few.
    let sockets = (MOST * 2 + 256) as u64;
    if !raise_open_file_limit(sockets) {
        eprintln!("SKIPPED: the open-file limit is below {sockets} sockets");
        return;
    }
    for (io, port_lo) in [(IoMode::Mmsg, 30000), (IoMode::Uring, 40000)] {
        let PerCall {
            fewest,
            most,
            blocks,
        } = measure(io, port_lo);
        eprintln!(
            "{io:?}: a call holds {fewest} B in {blocks:.1} allocations; \
             {most} B right after the tables doubled"
        );
        assert!(
            fewest < BUDGET,
            "{io:?}: {fewest} B allocated per call, budget {BUDGET}"
        );
        assert!(fewest > 0, "{io:?}: the calls were counted");
    }
}
