//! What the data plane holds per call: resident memory (and heap bytes, reserved capacity
//! included), measured on a real `Dataplane` (real sockets, real worker thread) with every
//! allocation of the process counted. A call is what a plain proxy session sets up: two
//! legs, each connected to the other. The budget is the performance issue's: under 4 KiB of
//! data-plane memory per session. The kernel's socket memory is not counted here.
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

/// The system allocator, counting the bytes of every live block the way glibc's malloc
/// lays it out: the request plus an 8-byte header, in 16-byte steps, 32 at the least.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

fn footprint(size: usize) -> isize {
    ((size + 8).div_ceil(16) * 16).max(32) as isize
}

// SAFETY: every call is passed straight to `System`; the counter is only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(footprint(layout.size()), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(footprint(layout.size()), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(footprint(layout.size()), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            footprint(new_size) - footprint(layout.size()),
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The data plane's budget per call (the performance issue's target).
const BUDGET: usize = 4096;
/// Calls set up before counting: the worker's tables are past their first growth steps.
const WARM: usize = 200;
/// Calls counted.
const CALLS: usize = 2000;

fn resident() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kb * 1024
}

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
/// order, and `close_leg` waits for it).
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

/// Per call: (heap bytes, resident bytes) the data plane grew by.
fn measure(io: IoMode, port_lo: u16) -> (usize, usize) {
    let config = Config {
        media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port_lo,
        port_hi: port_lo + ((WARM + CALLS) * 4 + 64) as u16,
        workers: 1,
        io,
        pin: false,
        batch_wait: Duration::from_micros(500),
        // As `sluice` runs by default; each falls back where the kernel refuses.
        steer: true,
        raw_send: true,
    };
    let (dp, _events) = Dataplane::start(config).expect("the data plane starts");
    let mut calls = Vec::with_capacity(WARM + CALLS);
    for n in 0..WARM {
        calls.push(call(&dp, n));
    }
    barrier(&dp);
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), resident());
    for n in WARM..WARM + CALLS {
        calls.push(call(&dp, n));
    }
    barrier(&dp);
    let (heap1, rss1) = (LIVE.load(Ordering::Relaxed), resident());
    // What the test itself keeps per call: the two `LegInfo`s in `calls` (allocated once).
    let heap = (heap1 - heap0).max(0) as usize / CALLS;
    let rss = rss1.saturating_sub(rss0) / CALLS;
    for (a, b) in calls {
        dp.close_leg(a.id).expect("open");
        dp.close_leg(b.id).expect("open");
    }
    dp.shutdown();
    (heap, rss)
}

#[test]
fn a_call_costs_the_data_plane_under_4_kib() {
    // Two sockets per call (rtcp-mux), plus the test's own few.
    if !raise_open_file_limit(((WARM + CALLS) * 2 + 256) as u64) {
        eprintln!(
            "skipping: the open-file limit is below {} sockets",
            (WARM + CALLS) * 2
        );
        return;
    }
    for (io, port_lo) in [(IoMode::Mmsg, 30000), (IoMode::Uring, 40000)] {
        let (heap, rss) = measure(io, port_lo);
        eprintln!("{io:?}: {heap} B of heap and {rss} B resident per call");
        // The heap count includes what the worker's tables reserved by doubling and have
        // not touched yet (not resident, not yet memory): the budget is for what is.
        assert!(
            rss < BUDGET,
            "{io:?}: {rss} B resident per call, budget {BUDGET}"
        );
        assert!(heap > 0, "{io:?}: the calls were counted");
    }
}
